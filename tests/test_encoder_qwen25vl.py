"""The built-in `qwen2.5-vl` encoder on a tiny real Qwen2.5-VL folder written by write_tiny_qwen25vl."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from x2i_core.errors import CheckpointError, InputError
from x2i_core.plugins import get_registry, load_component
from x2i_core.prompt import MultimodalPrompt, PromptPart
from x2i_core.testing import check_encoder, write_test_video
from x2i_plugins.encoders.qwen25vl.encoder import IMAGE_TOKEN, Qwen25VLEncoder
from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl
from x2i_plugins.encoders.qwen25vl.video import video_patches

LAYERS, HIDDEN = 3, 64  # the tiny config: 2 decoder layers + the embedding output


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    return write_tiny_qwen25vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen25vl", seed=0)


@pytest.fixture(scope="session")
def encoder(qwen_dir):
    return Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(root / "b.png")
    (root / "corrupt.png").write_bytes(rng.bytes(200))
    (root / "corrupt.mp4").write_bytes(rng.bytes(2000))
    return {
        "root": root, "a": str(root / "a.png"), "b": str(root / "b.png"),
        "video": write_test_video(root / "clip.mp4", num_frames=12, fps=4, size=(64, 48)),  # 3 s -> 3 frames
    }


def _real(out, row):
    return out.hidden_states[row][:, out.attention_mask[row]]


def test_loads_real_layout(encoder, qwen_dir):
    assert (encoder.num_layers, encoder.hidden_size) == (LAYERS, HIDDEN)
    assert encoder.identity == f"qwen2.5-vl({qwen_dir})"
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())
    assert not hasattr(encoder.model, "lm_head")  # the base model: the lm_head is read only when it answers
    assert type(encoder.image_processor).__name__ == "Qwen2VLImageProcessorPil"


def test_one_template_chat_format(encoder):
    text = encoder.render(MultimodalPrompt.build("a cat", images=["x.png"], videos=["v.mp4"]))
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>a cat<|im_end|>\n"
    )
    assert "assistant\n" not in text.split("<|im_start|>user")[1]  # no generation prompt


def test_encode_text(encoder):
    out = encoder.encode(["a red circle"])
    assert out.hidden_states.shape[:2] == (1, LAYERS) and out.hidden_states.shape[3] == HIDDEN
    assert out.attention_mask.dtype == torch.bool and bool(out.attention_mask.all())
    assert out.hidden_states.dtype == torch.float32 and not out.hidden_states.requires_grad
    # a plain string and a text prompt are the same thing
    torch.testing.assert_close(encoder.encode([MultimodalPrompt.from_text("a red circle")]).hidden_states, out.hidden_states)


def test_contract(encoder, media):
    check_encoder(encoder)
    check_encoder(encoder, [MultimodalPrompt.build("a dog", images=[media["b"]]),
                            MultimodalPrompt.build("a much longer caption about a dog in the park", images=[media["a"]])])


def test_image_tokens_and_grid(encoder, media):
    inputs = encoder.prepare([MultimodalPrompt.build("a cat", images=[media["a"], media["b"]])])
    grids = inputs["image_grid_thw"].tolist()
    # 120x90 -> 112x84 (multiples of 28) -> 8x6 patches; 60x60 -> 56x56 -> 4x4 patches
    assert grids == [[1, 6, 8], [1, 4, 4]]
    n_image = int((inputs["mm_token_type_ids"] == 1).sum())
    assert n_image == (48 + 16) // 4 == int((inputs["input_ids"] == encoder.image_token_id).sum())
    assert inputs["pixel_values"].shape == (64, 3 * 2 * 14 * 14)


def test_image_changes_the_encoding(encoder, media):
    plain = encoder.encode(["a cat"])
    one = encoder.encode([MultimodalPrompt.build("a cat", images=[media["a"]])])
    two = encoder.encode([MultimodalPrompt.build("a cat", images=[media["a"], media["b"]])])
    assert one.hidden_states.shape[2] > plain.hidden_states.shape[2]
    assert two.hidden_states.shape[2] > one.hidden_states.shape[2]
    # the final text tokens see the image
    assert not torch.allclose(one.hidden_states[0, -1, -3:], plain.hidden_states[0, -1, -3:])


def test_max_pixels_bounds_image_tokens(qwen_dir, media):
    small = Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu", max_pixels=4 * 28 * 28)
    inputs = small.prepare([MultimodalPrompt.build("x", images=[media["a"]])])
    assert int((inputs["mm_token_type_ids"] == 1).sum()) <= 4


def test_matches_transformers_processor(encoder, media):
    """For images, prepare() gives exactly what Qwen2_5_VLProcessor gives (video needs torchvision there)."""
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, name, argument):  # allow video_processor=None
            return None if argument is None else super().check_argument_for_proper_class(name, argument)

    processor = ImageOnlyProcessor(image_processor=encoder.image_processor, tokenizer=encoder.tokenizer,
                                   video_processor=None, chat_template=encoder.chat_template)
    prompts = [MultimodalPrompt.build("a cat on the mat", images=[media["a"], media["b"]]),
               MultimodalPrompt.build("hi", images=[media["b"]])]
    images = [[Image.open(media["a"]).convert("RGB"), Image.open(media["b"]).convert("RGB")],
              [Image.open(media["b"]).convert("RGB")]]
    ref = processor(text=[encoder.render(p) for p in prompts], images=images, padding=True, return_tensors="pt",
                    images_kwargs={"size": {"shortest_edge": encoder.min_pixels, "longest_edge": encoder.max_pixels}})
    mine = encoder.prepare(prompts)
    assert set(ref) == set(mine)
    for key in ref:
        assert torch.equal(ref[key].to(mine[key].dtype), mine[key]), key


def test_mm_token_types_matter(encoder, media):
    """The platform pitfall: without mm_token_type_ids Qwen2.5-VL silently uses 1-D positions."""
    inputs = encoder.prepare([MultimodalPrompt.build("a cat", images=[media["a"]])])
    with torch.no_grad():
        encoder.model.rope_deltas = None
        without = encoder.model(**{k: v for k, v in inputs.items() if k != "mm_token_type_ids"},
                                output_hidden_states=True, use_cache=False).hidden_states[-1]
    assert not torch.allclose(encoder.encode([MultimodalPrompt.build("a cat", images=[media["a"]])]).hidden_states[0, -1], without[0])


def test_video_patches_layout(encoder):
    """Rows pair frames along the temporal slot, in the image processor's patch order."""
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)) for _ in range(3)]
    size = {"shortest_edge": encoder.min_pixels, "longest_edge": encoder.max_pixels}
    rows, grid = video_patches(frames, encoder.image_processor, size)
    assert grid == [2, 4, 6]  # 3 frames padded to 4 -> 2 temporal patches of 4x6
    per_frame = [np.asarray(encoder.image_processor(images=[f], size=size, return_tensors="np")["pixel_values"])
                 .reshape(24, 3, 2, 14, 14)[:, :, 0] for f in frames]
    rows = rows.reshape(2, 24, 3, 2, 14, 14)
    np.testing.assert_allclose(rows[0, :, :, 0], per_frame[0])
    np.testing.assert_allclose(rows[0, :, :, 1], per_frame[1])
    np.testing.assert_allclose(rows[1, :, :, 0], per_frame[2])
    np.testing.assert_allclose(rows[1, :, :, 1], per_frame[2])  # padded with the last frame
    # a still image is the same as a two-frame video of it
    still = encoder.image_processor(images=[frames[0]], size=size, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(video_patches(frames[:1] * 2, encoder.image_processor, size)[0], still)


def test_encode_video(encoder, media):
    prompt = MultimodalPrompt.build("a clip", videos=[media["video"]])
    inputs = encoder.prepare([prompt])
    # 3 s at 1 fps -> 3 frames -> padded to 4 -> 2 temporal patches; 64x48 -> 56x56 -> 4x4 patches
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert inputs["second_per_grid_ts"].tolist() == [2.0]  # temporal patch 2 / 1 frame per second
    assert int((inputs["mm_token_type_ids"] == 2).sum()) == 2 * 16 // 4
    assert "pixel_values" not in inputs and inputs["pixel_values_videos"].shape == (32, 1176)
    out = encoder.encode([prompt, "a much longer text prompt than the video one, with many more words in it"])
    assert out.hidden_states.shape[:2] == (2, LAYERS)
    # the video prompt alone equals its row in the padded batch
    alone = encoder.encode([prompt])
    torch.testing.assert_close(_real(out, 0), _real(alone, 0), atol=1e-5, rtol=1e-4)


def test_video_frames_given_as_images(encoder, media):
    prompt = MultimodalPrompt.build("frames", videos=[[media["a"], media["a"]]])
    inputs = encoder.prepare([prompt])
    assert inputs["video_grid_thw"].tolist() == [[1, 6, 8]] and inputs["second_per_grid_ts"].tolist() == [2.0]


def test_batch_padding_mixed_media(encoder, media):
    prompts = [MultimodalPrompt.build("short", images=[media["b"]]),
               MultimodalPrompt.build("a longer prompt with two images", images=[media["a"], media["b"]]),
               "text only"]
    batch = encoder.encode(prompts)
    lengths = batch.attention_mask.sum(1).tolist()
    assert len(set(lengths)) == 3
    assert all(bool(m[:n].all()) and not bool(m[n:].any()) for m, n in zip(batch.attention_mask, lengths))  # right padding
    assert float(batch.hidden_states[0][:, lengths[0]:].abs().max()) == 0.0  # padding zeroed
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(_real(batch, row), _real(encoder.encode([prompt]), 0), atol=1e-5, rtol=1e-4)


def test_registry_resolves_names_and_folders(qwen_dir):
    registry = get_registry()
    assert registry.plugins["qwen25vl"].status == "loaded"
    seven = registry.get("encoder", "qwen2.5-vl-7b")
    assert seven.pretrained == "Qwen/Qwen2.5-VL-7B-Instruct" and seven.plugin == "qwen25vl"
    assert registry.get("encoder", "qwen2.5-vl-3b").pretrained == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert registry.get("encoder", "qwen2.5-vl").pretrained == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert set(seven.modalities) == {"text", "image", "video"} and seven.model_types == ("qwen2_5_vl",)
    spec, checkpoint = registry.resolve("encoder", qwen_dir)
    assert spec.plugin == "qwen25vl" and checkpoint == qwen_dir
    assert spec.load_factory() is Qwen25VLEncoder
    loaded = load_component("encoder", "qwen2.5-vl-7b", qwen_dir, device="cpu", max_frames=4)
    assert isinstance(loaded, Qwen25VLEncoder) and loaded.max_frames == 4


def test_plugin_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, x2i_plugins.encoders.qwen25vl; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("make, match", [
    (lambda m: MultimodalPrompt.build("x", images=[m["root"] / "missing.png"]), "image file not found"),
    (lambda m: MultimodalPrompt.build("x", images=[m["root"] / "corrupt.png"]), "cannot read image"),
    (lambda m: MultimodalPrompt.build("x", videos=[m["root"] / "corrupt.mp4"]), "cannot read video"),
    (lambda m: MultimodalPrompt.build("x", audios=[m["a"]]), "does not understand audio"),
    (lambda m: MultimodalPrompt.from_text("look: <|image_pad|>"), "reserved Qwen token"),
])
def test_bad_inputs_are_input_errors(encoder, media, make, match):
    with pytest.raises(InputError, match=match) as err:
        encoder.encode([make(media)])
    assert "\n" not in str(err.value)


def test_empty_prompt_is_the_bare_template(encoder):
    out = encoder.encode([MultimodalPrompt.from_text("")])  # the unconditional prompt of true CFG
    assert out.hidden_states.shape[1] == encoder.num_layers and int(out.attention_mask.sum()) >= 3


def test_bad_checkpoints(tmp_path, qwen_dir):
    with pytest.raises(CheckpointError, match="cannot load Qwen2.5-VL"):
        Qwen25VLEncoder.from_pretrained(str(tmp_path / "nope"), device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="not Qwen2.5-VL"):
        Qwen25VLEncoder.from_pretrained(str(other), device="cpu")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(qwen_dir, corrupt)
    for weights in corrupt.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load Qwen2.5-VL") as err:
        Qwen25VLEncoder.from_pretrained(str(corrupt), device="cpu")
    assert "\n" not in str(err.value)


def test_options_validated(qwen_dir):
    with pytest.raises(InputError, match="max_frames"):
        Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu", max_frames=0)


def test_hub_style_processor_files(encoder, qwen_dir, tmp_path, media):
    """Hub snapshots keep min/max_pixels flat in preprocessor_config.json and the template in chat_template.json."""
    import json
    import shutil

    folder = tmp_path / "hub-style"
    shutil.copytree(qwen_dir, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
    }))
    hub_style = Qwen25VLEncoder.from_pretrained(str(folder), device="cpu")
    assert hub_style.chat_template == template
    prompt = MultimodalPrompt.build("a cat", images=[media["a"]])
    torch.testing.assert_close(hub_style.encode([prompt]).hidden_states,
                               encoder.encode([prompt]).hidden_states)


def test_text_only_tokenizer_template_is_skipped(encoder, qwen_dir, tmp_path):
    """A tokenizer template that cannot place images loses to the processor's chat_template.json."""
    import json
    import shutil

    folder = tmp_path / "two-templates"
    shutil.copytree(qwen_dir, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    assert Qwen25VLEncoder.from_pretrained(str(folder), device="cpu").chat_template == template
    (folder / "chat_template.json").unlink()
    with pytest.raises(CheckpointError, match="no chat template that places images"):
        Qwen25VLEncoder.from_pretrained(str(folder), device="cpu")


def test_one_turn_token_ids_are_those_of_a_single_user_message(encoder, media):
    """The dialogue renderer gives a one-turn prompt exactly the ids of one user message (the shapes world's
    figures were measured with them): parts in order, consecutive text joined by a space, blank text dropped."""
    prompt = MultimodalPrompt((PromptPart("text", "a cat"), PromptPart("text", "on a mat"), PromptPart("image", media["b"]),
                               PromptPart("text", "  "), PromptPart("text", "in blue")))
    content = [{"type": "text", "text": "a cat on a mat"}, {"type": "image"}, {"type": "text", "text": "in blue"}]
    text = encoder.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                 chat_template=encoder.chat_template, add_generation_prompt=False)
    assert encoder.render(prompt) == text
    inputs = encoder.prepare([prompt])
    tokens = int(inputs["image_grid_thw"].prod()) // 4
    expected = encoder.tokenizer(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * tokens), add_special_tokens=False)["input_ids"]
    assert inputs["input_ids"][0].tolist() == expected


def test_dialogue_renders_every_turn_with_media_in_order(encoder, media):
    first = MultimodalPrompt.build("a dog", images=[media["a"]])
    prompt = first.followed_by("A brown dog.", MultimodalPrompt.build("the same dog, in snow", images=[media["b"]]).parts)
    text = encoder.render(prompt)
    assert text.count("<|im_start|>user") == 2 and "<|im_start|>assistant\nA brown dog.<|im_end|>" in text
    inputs = encoder.prepare([prompt])
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 8], [1, 4, 4]]  # the earlier turn's image first
    out = encoder.encode([prompt])
    assert out.hidden_states.shape[2] == int(inputs["attention_mask"].sum())


def test_reference_template(qwen_dir, media):
    ref = Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu", template="reference", reference_length=128)
    prompt = MultimodalPrompt.from_text("a red circle")
    wrapped = str({"Text input": "a red circle", "Instruction editing description": "no", "image input": "no"})
    assert ref.render(prompt) == ref.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": wrapped}]}], chat_template=ref.chat_template,
        tokenize=False, add_generation_prompt=True)
    assert ref.render(prompt).endswith(f"{wrapped}<|im_end|>\n<|im_start|>assistant\n")
    inputs = ref.prepare([prompt])
    n = int(inputs["attention_mask"].sum())
    assert inputs["input_ids"].shape == (1, 128) and n < 128 and not bool(inputs["attention_mask"][0, :128 - n].any())  # left padding
    out = ref.encode([prompt])
    assert bool(out.attention_mask.all()) and out.hidden_states.shape[2] == 128
    with torch.no_grad():  # the model's own pad states are kept (not zeroed): exactly the raw forward's output
        ref.model.rope_deltas = None
        raw = torch.stack(ref.model(**inputs, output_hidden_states=True).hidden_states, dim=1)
    torch.testing.assert_close(out.hidden_states, raw, atol=0, rtol=0)
    with_image = ref.prepare([MultimodalPrompt.build("this dog", images=[media["a"]])])
    assert with_image["image_grid_thw"].tolist() == [[1, 10, 10]]  # resized to 128x128 -> 140x140 -> 25 tokens
    assert "'image input': 'yes'" in ref.tokenizer.decode(with_image["input_ids"][0])
    dialogue = prompt.followed_by("A circle.", MultimodalPrompt.build("now blue", images=[media["b"]]).parts)
    text = ref.render(dialogue)
    assert text.count("{'Text input': ") == 2 and "'Text input': 'now blue'" in text  # every user turn wrapped
    assert "<|im_start|>assistant\nA circle.<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    default = Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu", template="reference")
    assert default.encode([prompt]).hidden_states.shape[2] == 512
    with pytest.raises(InputError, match="template must be one of"):
        Qwen25VLEncoder.from_pretrained(qwen_dir, device="cpu", template="nope")


def test_reply_is_greedy_with_the_checkpoints_lm_head(encoder, qwen_dir):
    from safetensors import safe_open

    prompt = MultimodalPrompt.from_text("a red circle")
    answer = encoder.reply(prompt, max_new_tokens=4)
    inputs = encoder.prepare([prompt], answers=[""])
    ids = inputs["input_ids"]
    head = encoder._language_head().lm_head
    with safe_open(f"{qwen_dir}/model.safetensors", framework="pt") as f:
        assert torch.equal(head.weight, f.get_tensor("lm_head.weight"))  # untied in the tiny config: read from disk
    assert not hasattr(encoder.model, "lm_head")
    with torch.no_grad():
        for _ in range(4):
            encoder.model.rope_deltas = None
            hidden = encoder.model(input_ids=ids, mm_token_type_ids=torch.zeros_like(ids)).last_hidden_state
            ids = torch.cat([ids, head(hidden[:, -1]).argmax(-1)[:, None]], 1)
    assert answer == encoder.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    only = encoder.encode_reply(prompt, "a red cat")
    n = len(encoder.tokenizer("a red cat", add_special_tokens=False)["input_ids"])
    assert only.hidden_states.shape[:3] == (1, LAYERS, n) and bool(only.attention_mask.all())
    full = encoder.encode_reply(prompt, "a red cat", with_prompt=True)
    assert full.hidden_states.shape[2] == inputs["input_ids"].shape[1] + n
    torch.testing.assert_close(full.hidden_states[:, :, -n:], only.hidden_states)


def test_converted_reference_alignnet_gets_the_reference_template(qwen_dir, tmp_path):
    """`x2i convert` records prompt_template="reference"; X2IPipeline (and `x2i align --init`) hand it to the
    encoder, so a converted reference AlignNet sees its training inputs; an AlignNet x2i trains keeps x2i's."""
    from x2i_core.align import AlignConfig
    from x2i_core.align.components import load_encoder
    from x2i_core.alignnet import AlignNet
    from x2i_core.convert import convert_reference
    from x2i_core.generate import X2IPipeline
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

    g = torch.Generator().manual_seed(0)
    reference = {  # the reference's state-dict layout (method.md), sized for the tiny models
        "conv.weight": torch.randn(1, LAYERS, 5, 5, generator=g), "conv.bias": torch.randn(1, generator=g),
        "mlp.layernorm.weight": torch.rand(HIDDEN, generator=g), "mlp.layernorm.bias": torch.rand(HIDDEN, generator=g),
        "mlp.projector.0.weight": torch.randn(PROMPT_DIM, HIDDEN, generator=g) * 0.1,
        "mlp.projector.2.weight": torch.randn(PROMPT_DIM, PROMPT_DIM, generator=g) * 0.1,
        "mlp.fc.1.weight": torch.randn(POOLED_DIM, PROMPT_DIM, generator=g) * 0.1,
        "mlp.fc.1.bias": torch.randn(POOLED_DIM, generator=g),
    }
    torch.save(reference, tmp_path / "diffusion_pytorch_model.bin")
    converted = convert_reference(tmp_path / "diffusion_pytorch_model.bin", tmp_path / "aligner", encoder="qwen2.5-vl")
    assert AlignNet.from_pretrained(converted).prompt_template == "reference"
    flux = write_tiny_flux(tmp_path / "flux", seed=0, with_teacher=False)
    pipe = X2IPipeline.from_names(encoder="qwen2.5-vl", backbone="flux", aligner=str(converted),
                                  encoder_path=qwen_dir, backbone_path=flux, device="cpu")
    assert pipe.encoder.template == "reference"
    prompt = MultimodalPrompt.from_text("a red circle")
    wrapped = str({"Text input": "a red circle", "Instruction editing description": "no", "image input": "no"})
    assert pipe.encoder.render(prompt).endswith(f"<|im_start|>user\n{wrapped}<|im_end|>\n<|im_start|>assistant\n")
    encoded = pipe.encoder.encode([prompt])
    assert encoded.hidden_states.shape[2] == 512 and bool(encoded.attention_mask.all())  # left-padded, unmasked
    assert pipe(prompt, steps=1, seed=0, width=32, height=32)[0].size == (32, 32)
    AlignNet(num_layers=LAYERS, hidden_size=HIDDEN, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM).save_pretrained(
        tmp_path / "own")
    own = X2IPipeline.from_names(encoder="qwen2.5-vl", backbone="flux", aligner=str(tmp_path / "own"),
                                 encoder_path=qwen_dir, backbone_path=flux, device="cpu")
    assert own.aligner.prompt_template is None and own.encoder.template == "x2i"
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    cfg = AlignConfig(data=[str(tmp_path / "prompts.txt")], output_dir=str(tmp_path / "run"), encoder=qwen_dir,
                      backbone=flux, init=str(converted), device="cpu")
    assert load_encoder(cfg, "cpu").template == "reference"  # --init of a reference AlignNet aligns on its inputs
