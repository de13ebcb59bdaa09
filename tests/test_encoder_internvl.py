"""The built-in `internvl` encoder on tiny real InternVL folders: a native (-hf) one written with save_pretrained and
an original-layout (internvl_chat, InternVL2.5) one that the plugin converts."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from x2i_core.errors import CheckpointError, InputError
from x2i_core.plugins import get_registry, load_component
from x2i_core.prompt import MultimodalPrompt, Turn
from x2i_core.testing import check_encoder, write_test_video
from x2i_plugins.encoders.internvl import convert as conversion
from x2i_plugins.encoders.internvl.encoder import InternVLEncoder, reference_text
from x2i_plugins.encoders.internvl.tiny import write_tiny_internvl, write_tiny_original_internvl

LAYERS, HIDDEN, TOKENS_PER_TILE = 3, 64, 4  # tiny config: 2 decoder layers + embeddings; 56 px tiles -> 4 tokens


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("x2i-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("X2I_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("internvl")
    return {"native": write_tiny_internvl(root / "native", seed=0),
            "original": write_tiny_original_internvl(root / "original", seed=0)}


@pytest.fixture(scope="module")
def encoder(folders):
    return InternVLEncoder.from_pretrained(folders["native"], device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("internvl-media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(root / "b.png")
    (root / "corrupt.png").write_bytes(rng.bytes(200))
    return {"root": root, "a": str(root / "a.png"), "b": str(root / "b.png"),
            "video": write_test_video(root / "clip.mp4", num_frames=12, fps=4, size=(64, 48))}  # 3 s -> 3 frames


def _real(out, row):
    return out.hidden_states[row][:, out.attention_mask[row]]


def test_loads_native_layout(encoder, folders):
    assert (encoder.num_layers, encoder.hidden_size) == (LAYERS, HIDDEN)
    assert encoder.identity == f"internvl({folders['native']})" and encoder.tokens_per_tile == TOKENS_PER_TILE
    assert not hasattr(encoder.model, "lm_head") and not any(p.requires_grad for p in encoder.model.parameters())
    assert type(encoder.image_processor).__name__ == "GotOcr2ImageProcessorPil"


def test_renders_the_dialogue_with_the_chat_template(encoder):
    one = MultimodalPrompt.build("a cat", images=["x.png"], videos=["v.mp4"])
    assert encoder.render(one) == "<|im_start|>user\n<IMG_CONTEXT>\n<video>\na cat<|im_end|>\n"
    dialogue = MultimodalPrompt.build("now in red", images=["y.png"]).__class__(
        one.parts, (Turn.text("system", "be brief"), Turn("user", MultimodalPrompt.build("a dog").parts),
                    Turn.text("assistant", "a dog.")))
    assert encoder.render(dialogue) == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\na dog<|im_end|>\n"
        "<|im_start|>assistant\na dog.<|im_end|>\n<|im_start|>user\n<IMG_CONTEXT>\n<video>\na cat<|im_end|>\n")


def test_contract_and_batch_padding(encoder, media):
    check_encoder(encoder)
    prompts = [MultimodalPrompt.build("short", images=[media["b"]]), "a much longer text prompt with many words in it"]
    check_encoder(encoder, prompts)
    batch = encoder.encode(prompts)
    n = int(batch.attention_mask[0].sum())
    assert not bool(batch.attention_mask[0, n:].any()) and float(batch.hidden_states[0][:, n:].abs().max()) == 0.0
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(_real(batch, row), _real(encoder.encode([prompt]), 0), atol=1e-5, rtol=1e-4)


def test_image_tokens_match_transformers_processor(encoder, media):
    """prepare() gives what InternVLProcessor gives (one tile per image; the video processor needs torchvision)."""
    from transformers import InternVLProcessor

    class ImageOnlyProcessor(InternVLProcessor):
        def check_argument_for_proper_class(self, name, argument):  # allow video_processor=None
            return None if argument is None else super().check_argument_for_proper_class(name, argument)

    processor = ImageOnlyProcessor(image_processor=encoder.image_processor, tokenizer=encoder.tokenizer,
                                   video_processor=None, image_seq_length=TOKENS_PER_TILE,
                                   chat_template=encoder.chat_template)
    prompt = MultimodalPrompt.build("a cat on the mat", images=[media["a"], media["b"]])
    images = [Image.open(media["a"]).convert("RGB"), Image.open(media["b"]).convert("RGB")]
    ref = processor(text=[encoder.render(prompt)], images=images, return_tensors="pt",
                    images_kwargs={"crop_to_patches": False})
    mine = encoder.prepare([prompt])
    assert torch.equal(ref["input_ids"], mine["input_ids"]) and torch.equal(ref["attention_mask"], mine["attention_mask"])
    torch.testing.assert_close(ref["pixel_values"].float(), mine["pixel_values"])
    assert int((mine["input_ids"] == encoder.image_token_id).sum()) == 2 * TOKENS_PER_TILE


def test_tiles_and_video_frames(folders, media, encoder):
    tiled = InternVLEncoder.from_pretrained(folders["native"], device="cpu", max_tiles=4)
    inputs = tiled.prepare([MultimodalPrompt.build("wide", images=[media["a"]])])
    tiles = inputs["pixel_values"].shape[0]
    assert tiles > 1 and int((inputs["input_ids"] == tiled.image_token_id).sum()) == tiles * TOKENS_PER_TILE
    prompt = MultimodalPrompt.build("a clip", videos=[media["video"]])
    text = encoder.tokenizer.decode(encoder.prepare([prompt])["input_ids"][0])
    assert [line.split(":")[0] for line in text.split("\n") if line.startswith("Frame")] == ["Frame1", "Frame2", "Frame3"]
    assert encoder.prepare([prompt])["pixel_values"].shape[0] == 3
    out = encoder.encode([prompt, MultimodalPrompt.build("two frames", videos=[[media["a"], media["b"]]])])
    assert out.hidden_states.shape[:2] == (2, LAYERS)
    plain = encoder.encode(["a clip"])
    assert not torch.allclose(_real(out, 0)[-1, -2:], _real(plain, 0)[-1, -2:])  # the text sees the frames


def test_converted_weights_equal_the_source(folders, cache):
    source = load_file(str(Path(folders["original"]) / "model.safetensors"))
    folder = conversion.converted_folder(Path(folders["original"]))
    assert folder.parent == cache / "converted"
    converted = load_file(str(folder / "model.safetensors"))
    fused = [k for k in source if k.endswith((".attn.qkv.weight", ".attn.qkv.bias"))]
    assert fused and len(converted) == len(source) + 2 * len(fused)
    for key, tensor in source.items():
        names = conversion.native_key(key)
        if len(names) == 1:
            assert torch.equal(converted[names[0]], tensor), key
        else:  # the split parts concatenate back to the fused tensor
            assert torch.equal(torch.cat([converted[n] for n in names]), tensor), key
    # and the native folder written by transformers from the same model holds the same tensors
    native = load_file(str(Path(folders["native"]) / "model.safetensors"))
    assert set(native) == set(converted) and all(torch.equal(native[k], converted[k]) for k in native)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "internvl" and config["text_config"]["model_type"] == "qwen2"
    assert not list(folder.glob("*.py")) and not list(folder.parent.glob(".*"))  # no code copied, no temp folder left


def test_converted_model_encodes_like_the_native_one(folders, cache, encoder, media):
    converted = InternVLEncoder.from_pretrained(folders["original"], device="cpu")
    assert converted.weights_folder.startswith(str(cache)) and converted.identity == f"internvl({folders['original']})"
    prompts = [MultimodalPrompt.build("a cat", images=[media["a"]]), "a red circle"]
    a, b = converted.encode(prompts), encoder.encode(prompts)
    assert torch.equal(a.attention_mask, b.attention_mask)
    torch.testing.assert_close(a.hidden_states, b.hidden_states, atol=0, rtol=0)
    again = conversion.converted_folder(Path(folders["original"]))  # cached: not rewritten
    assert str(again) == converted.weights_folder


def test_convert_encoder_command(folders, tmp_path):
    from x2i_cli.main import _add_plugin_commands, cli

    _add_plugin_commands()
    out = tmp_path / "converted"
    res = CliRunner().invoke(cli, ["convert-encoder", "internvl", folders["original"], "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "config.json").is_file() and InternVLEncoder.from_pretrained(str(out), device="cpu").num_layers == LAYERS
    res = CliRunner().invoke(cli, ["convert-encoder", "internvl", folders["original"], "-o", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output
    res = CliRunner().invoke(cli, ["convert-encoder", "internvl", folders["native"], "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not an original InternVL" in res.output and not (tmp_path / "x").exists()


def test_reference_template(folders, encoder, media):
    ref = InternVLEncoder.from_pretrained(folders["native"], device="cpu", template="reference", reference_length=32)
    prompt = MultimodalPrompt.from_text("a red circle")
    assert ref.render(prompt) == str({"Text input": "a red circle", "Instruction editing description": "no",
                                      "image input": "no"}) == reference_text("a red circle", False)
    inputs = ref.prepare([prompt])
    ids = ref.tokenizer(ref.render(prompt))["input_ids"]  # no chat template: the string tokenised directly
    assert inputs["input_ids"].shape == (1, 32) and inputs["input_ids"][0, :len(ids)].tolist() == ids
    assert ref.reference_padding_side == "right" and int(inputs["attention_mask"].sum()) == len(ids)
    out = ref.encode([prompt])
    assert out.hidden_states.shape[2] == 32 and bool(out.attention_mask.all())
    with torch.no_grad():  # the model's own pad states are kept (not zeroed): exactly the raw forward's output
        raw = torch.stack(ref.model(**inputs, output_hidden_states=True).hidden_states, dim=1)
    torch.testing.assert_close(out.hidden_states, raw, atol=0, rtol=0)
    assert float(out.hidden_states[0, -1, -1].abs().max()) > 0
    with_image = MultimodalPrompt.build("this cat", images=[media["a"]])
    assert ref.render(with_image) == "<IMG_CONTEXT>\n" + str({"Text input": "this cat",
                                                              "Instruction editing description": "no"})
    assert ref.prepare([with_image])["pixel_values"].shape[0] == 1  # resized to 128x128: one tile
    dialogue = prompt.followed_by("A circle.", MultimodalPrompt.build("now blue").parts)
    text = ref.render(dialogue)
    assert text.count("{'Text input': ") == 2 and text.endswith("<|im_start|>assistant\n")
    assert InternVLEncoder.from_pretrained(folders["native"], device="cpu", template="reference").encode(
        [prompt]).hidden_states.shape[2] == 512
    with pytest.raises(InputError, match="template must be one of"):
        InternVLEncoder.from_pretrained(folders["native"], device="cpu", template="nope")


def test_reply_is_greedy_and_encode_reply_takes_the_answer(encoder):
    prompt = MultimodalPrompt.from_text("a red circle")
    answer = encoder.reply(prompt, max_new_tokens=4)
    inputs = encoder.prepare([prompt], answers=[""])
    ids = inputs["input_ids"]
    head = encoder._language_head().lm_head
    with torch.no_grad():
        for _ in range(4):
            nxt = head(encoder.model(input_ids=ids).last_hidden_state[:, -1]).argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
    assert answer == encoder.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert head.weight is encoder.model.get_input_embeddings().weight  # tied: no second copy
    only = encoder.encode_reply(prompt, "a red cat")
    n = len(encoder.tokenizer("a red cat", add_special_tokens=False)["input_ids"])
    assert only.hidden_states.shape[:3] == (1, LAYERS, n) and bool(only.attention_mask.all())
    full = encoder.encode_reply(prompt, "a red cat", with_prompt=True)
    assert full.hidden_states.shape[2] == ids.shape[1] - 4 + n
    torch.testing.assert_close(full.hidden_states[:, :, -n:], only.hidden_states)


def test_registry_names_and_folders(folders):
    registry = get_registry()
    assert registry.plugins["internvl"].status == "loaded"
    assert registry.get("encoder", "internvl-1b").pretrained == "OpenGVLab/InternVL2_5-1B"
    assert registry.get("encoder", "internvl-4b").pretrained == "OpenGVLab/InternVL2_5-4B"
    assert registry.get("encoder", "internvl3-8b").pretrained == "OpenGVLab/InternVL3-8B-hf"
    for folder in folders.values():
        spec, checkpoint = registry.resolve("encoder", folder)
        assert spec.plugin == "internvl" and checkpoint == folder
    assert isinstance(load_component("encoder", "internvl-1b", folders["native"], device="cpu"), InternVLEncoder)


@pytest.mark.parametrize("make, match", [
    (lambda m: MultimodalPrompt.build("x", images=[m["root"] / "corrupt.png"]), "cannot read image"),
    (lambda m: MultimodalPrompt.build("x", audios=[m["a"]]), "does not understand audio"),
    (lambda m: MultimodalPrompt.from_text("look: <IMG_CONTEXT>"), "reserved InternVL token"),
])
def test_bad_inputs_are_input_errors(encoder, media, make, match):
    with pytest.raises(InputError, match=match) as err:
        encoder.encode([make(media)])
    assert "\n" not in str(err.value)


def test_bad_checkpoints(tmp_path, folders):
    with pytest.raises(CheckpointError, match="cannot load InternVL"):
        InternVLEncoder.from_pretrained(str(tmp_path / "nope"), device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="not InternVL"):
        InternVLEncoder.from_pretrained(str(other), device="cpu")
    llama = tmp_path / "llama-lm"
    llama.mkdir()
    config = json.loads((Path(folders["original"]) / "config.json").read_text())
    config["llm_config"].update(model_type="llama", architectures=["LlamaForCausalLM"])
    (llama / "config.json").write_text(json.dumps(config))
    (llama / "model.safetensors").write_bytes((Path(folders["original"]) / "model.safetensors").read_bytes())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (llama / name).write_bytes((Path(folders["original"]) / name).read_bytes())
    with pytest.raises(CheckpointError, match="only Qwen2 language models"):
        conversion.convert_original(llama, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))  # nothing half-written


def test_align_internvl_1b_runs_as_written_with_an_original_folder(folders, cache, tmp_path):
    """`x2i align --encoder internvl-1b --encoder-path ORIGINAL`: converts on load, then aligns (2 steps)."""
    from _align_tiny import tiny_world
    from x2i_cli.main import cli

    world = tiny_world(tmp_path / "world")
    out = tmp_path / "aligned"
    res = CliRunner().invoke(cli, [
        "align", "--encoder", "internvl-1b", "--encoder-path", folders["original"], "--backbone", world["backbone"],
        "--data", world["prompts"], "--steps", "2", "--batch-size", "2", "--lr", "1e-3", "--warmup", "1",
        "--resolution", "16", "--teacher-max-length", "24", "--no-gradient-checkpointing", "--checkpoint-every", "100",
        "--quiet", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert (config["num_layers"], config["hidden_size"]) == (LAYERS, HIDDEN)
    assert len((out / "train_log.csv").read_text().strip().splitlines()) == 3  # header + 2 steps


def test_untied_lm_head_is_read_from_the_converted_checkpoint(tmp_path, cache):
    """An original checkpoint with its own lm_head: converted, read from disk on first answer, and it answers."""
    original = write_tiny_original_internvl(tmp_path / "untied", seed=1, tied=False)
    encoder = InternVLEncoder.from_pretrained(original, device="cpu")
    source = load_file(str(Path(original) / "model.safetensors"))["language_model.lm_head.weight"]
    head = encoder._language_head().lm_head
    assert torch.equal(head.weight, source) and head.weight is not encoder.model.get_input_embeddings().weight
    assert encoder.reply(MultimodalPrompt.from_text("a red circle"), max_new_tokens=4).strip()


def test_generate_cli_with_internvl_1b_images_video_and_reason(tmp_path, cache, media):
    """`x2i generate --encoder internvl-1b --encoder-path ORIGINAL ...`: converts, encodes media, answers first."""
    from x2i_cli.main import cli
    from x2i_core.alignnet import AlignNet
    from x2i_core.generate import read_metadata
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

    original = write_tiny_original_internvl(tmp_path / "untied", seed=1, tied=False)
    flux = write_tiny_flux(tmp_path / "flux", seed=0, with_teacher=False)
    AlignNet(num_layers=LAYERS, hidden_size=HIDDEN, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM).save_pretrained(
        tmp_path / "align")
    models = ["--encoder", "internvl-1b", "--encoder-path", original, "--backbone", "flux", "--backbone-path", flux,
              "--aligner", str(tmp_path / "align"), "--device", "cpu", "--width", "32", "--height", "32", "--steps", "1"]
    out = tmp_path / "media.png"
    res = CliRunner().invoke(cli, ["generate", *models, "--image", media["a"], "--video", media["video"], "a poster",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert read_metadata(out)["encoder"].startswith("internvl-1b")
    out = tmp_path / "reasoned.png"
    res = CliRunner().invoke(cli, ["generate", *models, "--reason", "--reason-tokens", "4", "a red circle", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert read_metadata(out)["answer"].strip()
