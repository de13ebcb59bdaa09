"""The built-in `minicpm-o` encoder (the port of MiniCPM-o-2.6 onto transformers' parts) on a tiny folder of the
released layout written by write_tiny_minicpmo: every modality, both templates, answers, bad inputs and bad
checkpoints, and `x2i generate --encoder minicpm --backbone shuttle --audio` end to end."""
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from x2i_cli.main import cli
from x2i_core import MultimodalPrompt, PromptPart
from x2i_core.alignnet import AlignNet
from x2i_core.errors import CheckpointError, InputError
from x2i_core.generate import read_metadata
from x2i_core.plugins import get_registry, load_component
from x2i_core.testing import check_encoder, write_test_video, write_test_wav
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
from x2i_plugins.encoders.minicpmo import processing as P
from x2i_plugins.encoders.minicpmo.encoder import MiniCPMOEncoder
from x2i_plugins.encoders.minicpmo.tiny import QUERY_NUM, write_tiny_minicpmo

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' own media helpers
from _media_files import write_video_with_sound  # noqa: E402

LAYERS, HIDDEN = 3, 128  # the tiny config: 2 decoder layers + the embedding output


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_minicpmo(tmp_path_factory.mktemp("minicpmo") / "tiny-minicpmo", seed=0)


@pytest.fixture(scope="module")
def encoder(folder):
    return MiniCPMOEncoder.from_pretrained(folder, device="cpu")


def _write_mp3(path, seconds=1.0, hz=330.0, rate=16000):
    import av

    t = np.arange(int(seconds * rate)) / rate
    samples = (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None, :]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("minicpmo-media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "b.png")
    (root / "corrupt.wav").write_bytes(b"RIFF" + rng.bytes(300))
    return types.SimpleNamespace(
        root=root, a=str(root / "a.png"), b=str(root / "b.png"),
        wav=write_test_wav(root / "tone.wav", seconds=1.0, sampling_rate=8000, channels=2, hz=440.0),
        wav_long=write_test_wav(root / "long.wav", seconds=2.5, sampling_rate=16000, channels=1, hz=220.0),
        mp3=_write_mp3(root / "tone.mp3"),
        video=write_test_video(root / "clip.mp4", num_frames=12, fps=4, size=(64, 48)),  # 3 s -> 3 frames at 1 fps
        sound_video=write_video_with_sound(root / "sound.mp4", seconds=3.0, fps=4),
        short_sound_video=write_video_with_sound(root / "short.mp4", seconds=2.0, fps=4, hz=550.0),
    )


def _count(inputs, token_id):
    return int((inputs["input_ids"] == token_id).sum())


# -- loading the released layout -----------------------------------------------------------------
def test_loads_released_layout(encoder, folder):
    assert (encoder.num_layers, encoder.hidden_size) == (LAYERS, HIDDEN)
    assert encoder.identity == f"minicpm-o({folder})"
    assert encoder.modalities == {"text", "image", "video", "audio"} and encoder.supports_reply
    assert len(encoder.model.vpm.encoder.layers) == 2  # 3 in vision_config, the last dropped as the release does
    saved = load_file(f"{folder}/model.safetensors")
    loaded = encoder.model.state_dict()
    assert set(saved) == set(loaded)
    for key in ("llm.model.embed_tokens.weight", "llm.lm_head.weight", "vpm.embeddings.position_embedding.weight",
                "resampler.attn.in_proj_weight", "apm.layers.1.fc2.weight", "audio_projection_layer.linear2.bias"):
        assert torch.equal(saved[key], loaded[key]), key
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())


def test_registered_with_alias_and_audio():
    registry = get_registry()
    for name in ("minicpm-o", "minicpm"):
        spec = registry.get("encoder", name)
        assert spec.pretrained == "openbmb/MiniCPM-o-2_6" and "audio" in spec.modalities


def test_load_component_by_alias(folder):
    assert isinstance(load_component("encoder", "minicpm", folder, device="cpu"), MiniCPMOEncoder)


# -- the template ------------------------------------------------------------------------------------
def test_template_is_minicpm_chat_format(encoder):
    prompt = MultimodalPrompt((PromptPart("image", "x.png"), PromptPart("text", "a cat"), PromptPart("text", "on a mat"),
                               PromptPart("video", "v.mp4"), PromptPart("audio", "a.wav")))
    text = encoder.render(prompt, frames=[2])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{P.IMAGE_TAG}\na cat on a mat\n{P.IMAGE_TAG}\n{P.IMAGE_TAG}\n{P.AUDIO_TAG}<|im_end|>\n"
    )
    # the reference template: media, then the training dict string, then the generation prompt
    ref = encoder.render(MultimodalPrompt.from_text("a cat"), template="reference")
    assert ref.endswith("user\n{'Text input': 'a cat', 'Instruction editing description': 'no', "
                        "'image input': 'no'}<|im_end|>\n<|im_start|>assistant\n")
    ref = encoder.render(MultimodalPrompt.build("a cat", images=["x.png"]), template="reference")
    assert ref.endswith(f"user\n{P.IMAGE_TAG}\n{{'Text input': 'a cat', 'Instruction editing description': '', "
                        "'image input': 'yes'}<|im_end|>\n<|im_start|>assistant\n")


def test_dialogue_renders_every_turn(encoder):
    prompt = MultimodalPrompt.from_text("a cat").followed_by("A cat sits.", [PromptPart("text", "make it blue")])
    text = encoder.render(prompt)
    assert text.count("<|im_start|>") == 4 and "assistant\nA cat sits.<|im_end|>" in text
    with pytest.raises(InputError, match="dialogue"):
        encoder.render(prompt, template="reference")


def test_image_placeholders_follow_the_slicing_rule(folder, media):
    one_view = MiniCPMOEncoder.from_pretrained(folder, device="cpu")
    inputs = one_view.prepare([MultimodalPrompt.build("a cat", images=[media.a])])
    assert _count(inputs, one_view.ids[P.UNK]) == QUERY_NUM and _count(inputs, one_view.ids[P.ID_START]) == 1
    assert len(inputs["images"][0]) == 1
    sliced = MiniCPMOEncoder.from_pretrained(folder, device="cpu", max_slice_nums=9)
    inputs = sliced.prepare([MultimodalPrompt.build("a cat", images=[media.a])])
    # 120x90 at scale 56: area 3.4 views -> 3..5 crops, the 2x2 grid is closest to 4:3 -> overview + 4 crops
    assert len(inputs["images"][0]) == 5 and _count(inputs, sliced.ids[P.SLICE_START]) == 4
    assert _count(inputs, sliced.ids[P.UNK]) == 5 * QUERY_NUM
    assert all(v.shape[1] % 14 == 0 and v.shape[2] % 14 == 0 for v in inputs["images"][0])
    assert P.slice_grid((40, 40), 9, 56) is None  # smaller than one view: no crops


def test_audio_placeholders_are_25_tokens_a_second(encoder, media):
    inputs = encoder.prepare([MultimodalPrompt.build("a sound", audios=[media.wav_long])])
    # 2.5 s -> 250 mel frames -> 125 Whisper frames -> 62 tokens, in 1 s chunks of 25 + 25 + 12
    assert _count(inputs, encoder.ids[P.UNK]) == 62 and _count(inputs, encoder.ids[P.AUDIO_START]) == 3


# -- encoding every modality -------------------------------------------------------------------------
def test_contract_text(encoder):
    check_encoder(encoder)


def test_contract_images(encoder, media):
    check_encoder(encoder, [MultimodalPrompt.build("a dog", images=[media.b]),
                            MultimodalPrompt.build("a much longer caption about a dog in the park", images=[media.a])])


def test_contract_video_frames_and_file(encoder, media):
    frames = [media.a, media.b, media.a]
    check_encoder(encoder, [MultimodalPrompt((PromptPart("video", frames[:2]), PromptPart("text", "a clip"))),
                            MultimodalPrompt.build("a poster of these frames", videos=[frames])])
    inputs = encoder.prepare([MultimodalPrompt.build("x", videos=[media.video])])
    assert len(inputs["images"][0]) == 3 and _count(inputs, encoder.ids[P.UNK]) == 3 * QUERY_NUM


def test_contract_audio_wav_and_mp3(encoder, media):
    check_encoder(encoder, [MultimodalPrompt.build("this sound", audios=[media.wav]),
                            MultimodalPrompt.build("a picture of what this sounds like, at night", audios=[media.mp3])])


def test_media_change_the_encoding(encoder, media):
    plain = encoder.encode(["a sound"]).hidden_states[0, -1, -3:]
    for prompt in (MultimodalPrompt.build("a sound", audios=[media.wav]),
                   MultimodalPrompt.build("a sound", images=[media.a])):
        assert not torch.allclose(encoder.encode([prompt]).hidden_states[0, -1, -3:], plain)
    low = encoder.encode([MultimodalPrompt.build("a sound", audios=[media.wav])]).hidden_states
    high = encoder.encode([MultimodalPrompt.build("a sound", audios=[media.mp3])]).hidden_states
    assert low.shape == high.shape and not torch.allclose(low, high)


def test_everything_at_once_in_order(encoder, media):
    prompt = MultimodalPrompt((PromptPart("text", "this"), PromptPart("image", media.a), PromptPart("text", "sounds like"),
                               PromptPart("audio", media.wav), PromptPart("video", media.video)))
    out = encoder.encode([prompt])
    assert out.hidden_states.shape[:2] == (1, LAYERS) and bool(torch.isfinite(out.hidden_states).all())


# -- a video's own sound track (use_audio_in_video) ---------------------------------------------------------
@pytest.fixture(scope="module")
def sound_encoder(folder):
    return MiniCPMOEncoder.from_pretrained(folder, device="cpu", use_audio_in_video=True)


def test_sounding_video_is_one_unit_per_second(sound_encoder, encoder, media):
    prompt = MultimodalPrompt.build("a poster of this", videos=[media.sound_video])
    text = sound_encoder.render(prompt, frames=[3])
    assert f"user\n{(P.UNIT + P.IMAGE_TAG + P.AUDIO_TAG) * 3}a poster of this<|im_end|>" in text  # omni: no separators
    inputs = sound_encoder.prepare([prompt])
    ids = sound_encoder.ids
    assert _count(inputs, ids[P.UNIT]) == 3 and len(inputs["images"][0]) == 3
    (features, tokens), = inputs["audio"][0]  # the whole track as one clip, its tokens spread over the 3 units
    assert _count(inputs, ids[P.UNK]) == 3 * QUERY_NUM + tokens and _count(inputs, ids[P.AUDIO_START]) >= 3
    check_encoder(sound_encoder, [MultimodalPrompt.build("this", videos=[media.short_sound_video]),
                                  MultimodalPrompt.build("a much longer caption for this clip", videos=[media.sound_video])])
    # without the option the same video is its frames only
    frames_only = encoder.prepare([prompt])
    assert _count(frames_only, ids[P.UNK]) == 3 * QUERY_NUM and not frames_only["audio"][0]


def test_sound_parts_add_up_to_the_whole_track():
    rng = np.random.default_rng(0)
    for _ in range(50):
        length, units = int(rng.integers(16000, 30 * 16000)), int(rng.integers(1, 30))
        parts = P.sound_parts(np.zeros(length, np.float32), units, 16000)
        if not parts:
            continue
        assert len(parts) == units and sum(len(p) for p in parts) == length
        assert sum(P.audio_token_count(len(p), 160, 2) for p in parts) == P.audio_token_count(length, 160, 2)
    assert [len(p) for p in P.sound_parts(np.zeros(49152), 3, 16000)] == [16000, 16000, 17152]  # whole seconds


def test_sounding_video_refusals(sound_encoder, media):
    for prompt, words in (
        (MultimodalPrompt.build("x", videos=[media.video]), "clip.mp4"),  # no sound track
        (MultimodalPrompt((PromptPart("video", [media.a, media.b]),)), "no sound track"),
    ):
        with pytest.raises(InputError, match=words):
            sound_encoder.encode([prompt])


# -- the reference template --------------------------------------------------------------------------
def test_reference_template_pads_to_512_keeping_pad_states(folder):
    ref = MiniCPMOEncoder.from_pretrained(folder, device="cpu", template="reference")
    out = ref.encode(["a red circle", "a blue square on a green field"])
    assert out.hidden_states.shape[2] == 512 and bool(out.attention_mask.all())
    inputs = ref.prepare(["a red circle"])
    pad = ref.tokenizer.pad_token_id
    assert int(inputs["input_ids"][0, -1]) == pad and _count(inputs, pad) > 400
    assert out.hidden_states[0, :, -1].abs().sum() > 0  # the pad tokens' own states, not zeros
    plain = MiniCPMOEncoder.from_pretrained(folder, device="cpu")
    for answer in ("", "a circle"):  # answers use the chat template with the generation prompt in both templates
        assert torch.equal(ref.prepare(["a red circle"], answers=[answer])["input_ids"],
                           plain.prepare(["a red circle"], answers=[answer])["input_ids"])


# -- answering ---------------------------------------------------------------------------------------
def test_reply_is_greedy_and_encode_reply_takes_the_answer(encoder, media):
    prompt = MultimodalPrompt.build("what is this", audios=[media.wav])
    # greedy: the answer is the argmax continuation of the prompt with the generation prompt, token by token
    inputs = encoder.prepare([prompt], answers=[""])
    embeds, mask, tokens = encoder._embeddings(inputs), inputs["attention_mask"], []
    with torch.no_grad():
        for _ in range(5):
            token = int(encoder.model.llm(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].argmax())
            tokens.append(token)
            embeds = torch.cat([embeds, encoder.model.llm.get_input_embeddings()(torch.tensor([[token]]))], 1)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    stops = {encoder.ids["<|im_end|>"], encoder.ids["<|endoftext|>"]}
    expected = tokens[: next((i for i, t in enumerate(tokens) if t in stops), len(tokens))]
    answer = encoder.reply(prompt, max_new_tokens=5)
    assert answer == encoder.tokenizer.decode(expected, skip_special_tokens=True).strip()
    out = encoder.encode_reply(prompt, "a red circle")
    n = len(encoder.tokenizer("a red circle", add_special_tokens=False)["input_ids"])
    assert out.hidden_states.shape == (1, LAYERS, n, HIDDEN) and bool(out.attention_mask.all())
    full = encoder.encode_reply(prompt, "a red circle", with_prompt=True)
    torch.testing.assert_close(full.hidden_states[:, :, -n:], out.hidden_states)
    with pytest.raises(InputError, match="empty"):
        encoder.encode_reply(prompt, "")


# -- bad inputs --------------------------------------------------------------------------------------
def test_bad_inputs_are_one_line(encoder, media):
    cases = [
        (MultimodalPrompt.build("x", audios=[str(media.root / "missing.wav")]), "not found"),
        (MultimodalPrompt.build("x", audios=[str(media.root / "corrupt.wav")]), "corrupt.wav"),
        (MultimodalPrompt.build("x", images=[str(media.root / "missing.png")]), "not found"),
        (MultimodalPrompt.from_text("look at <image> here"), "reserved"),
        (MultimodalPrompt.from_text("an (<audio>./</audio>) tag"), "reserved"),
    ]
    for prompt, words in cases:
        with pytest.raises(InputError) as info:
            encoder.encode([prompt])
        assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_options_fail_before_loading(tmp_path):
    for options in ({"template": "other"}, {"max_slice_nums": 0}, {"video_fps": 0}, {"reference_length": 0}):
        with pytest.raises(InputError):
            MiniCPMOEncoder.from_pretrained(str(tmp_path / "nowhere"), device="cpu", **options)


# -- bad checkpoints ---------------------------------------------------------------------------------
def _copy(folder, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _load_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        MiniCPMOEncoder.from_pretrained(str(path), device="cpu")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_checkpoint_errors(folder, tmp_path):
    assert "not found" in _load_error(tmp_path / "no-such-folder")
    assert "cannot load MiniCPM-o from openbmb/MiniCPM-o-2_6" in _load_error("openbmb/MiniCPM-o-2_6")  # offline, not cached
    no_weights = _copy(folder, tmp_path, "no-weights")
    (no_weights / "model.safetensors").unlink()
    assert "has no MiniCPM-o weights" in _load_error(no_weights)
    other = _copy(folder, tmp_path, "other-type")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    assert "not MiniCPM-o" in _load_error(other)
    newer = _copy(folder, tmp_path, "version-4.5")
    (newer / "config.json").write_text(json.dumps({**config, "version": 4.5}))
    assert "MiniCPM-o-2.6 only" in _load_error(newer)
    no_template = _copy(folder, tmp_path, "no-template")
    tok_config = json.loads((no_template / "tokenizer_config.json").read_text())
    (no_template / "tokenizer_config.json").write_text(json.dumps({**tok_config, "chat_template": None}))
    assert "no chat template" in _load_error(no_template)
    disagree = _copy(folder, tmp_path, "disagree")
    pre = json.loads((disagree / "preprocessor_config.json").read_text())
    (disagree / "preprocessor_config.json").write_text(json.dumps({**pre, "image_feature_size": QUERY_NUM + 1}))
    assert "disagrees with config.json" in _load_error(disagree)
    corrupt = _copy(folder, tmp_path, "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    assert "cannot read MiniCPM-o weights" in _load_error(corrupt)


def test_key_mapping_refuses_missing_mismatched_and_unknown_weights(folder, tmp_path):
    state = load_file(f"{folder}/model.safetensors")
    variants = {
        "missing": ({k: v for k, v in state.items() if k != "resampler.proj"}, "lacks 1 MiniCPM-o weights (first: resampler.proj)"),
        "mismatched": ({**state, "apm.conv1.weight": torch.zeros(3, 3)}, "apm.conv1.weight"),
        "unknown": ({**state, "vpm.encoder.layers.2.mlp.fc1.weight": torch.zeros(2)}, "does not describe"),
    }
    for name, (weights, words) in variants.items():
        path = _copy(folder, tmp_path, name)
        save_file(weights, str(path / "model.safetensors"))
        assert words in _load_error(path), name
    # speech-output weights are not built and not needed: they load as skipped
    tts = _copy(folder, tmp_path, "with-tts")
    save_file({**state, "tts.emb_text.weight": torch.zeros(4, 4)}, str(tts / "model.safetensors"))
    assert MiniCPMOEncoder.from_pretrained(str(tts), device="cpu").num_layers == LAYERS


# -- end to end: x2i generate --encoder minicpm --backbone shuttle --audio ---------------------------
@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "flux", seed=0, with_teacher=True)  # align needs T5 + CLIP


def test_cli_generates_from_audio(folder, encoder, flux, media, tmp_path):
    torch.manual_seed(0)
    AlignNet(num_layers=encoder.num_layers, hidden_size=encoder.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             encoder="minicpm", encoder_checkpoint=folder).save_pretrained(tmp_path / "align")
    out = tmp_path / "out.png"
    # the command: x2i generate --encoder minicpm --backbone shuttle --audio x.wav (tiny folders)
    args = ["generate", "--encoder", "minicpm", "--encoder-path", folder, "--backbone", "shuttle", "--backbone-path", flux,
            "--aligner", str(tmp_path / "align"), "--device", "cpu", "--width", "32", "--height", "32", "--steps", "2",
            "--audio", media.wav, "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (32, 32)
    meta = read_metadata(out)
    assert meta["prompt"] == "<audio:tone.wav>" and meta["encoder"] == f"minicpm ({folder})"
    # --reason: the MLLM answers the audio prompt first (greedy) and the answer conditions the image
    reasoned = tmp_path / "reasoned.png"
    result = CliRunner().invoke(cli, [*args[:-2], "--reason", "--reason-tokens", "4", "-o", str(reasoned), "what is this"])
    assert result.exit_code == 0, result.output
    expected = encoder.reply(MultimodalPrompt.build("what is this", audios=[media.wav]), max_new_tokens=4)
    assert read_metadata(reasoned)["answer"] == expected
    # --video-sound: the video's own sound track too (MiniCPM-o's omni units)
    sounding = tmp_path / "sounding.png"
    result = CliRunner().invoke(cli, [*args[:-4], "--video", media.sound_video, "--video-sound", "-o", str(sounding)])
    assert result.exit_code == 0, result.output
    assert read_metadata(sounding)["prompt"] == "<video:sound.mp4>"


def test_converted_reference_alignnet_gets_the_reference_template(folder, encoder, flux, tmp_path):
    from x2i_core.generate import X2IPipeline

    AlignNet(num_layers=encoder.num_layers, hidden_size=encoder.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             encoder="minicpm", prompt_template="reference").save_pretrained(tmp_path / "align-ref")
    pipe = X2IPipeline.from_names(encoder="minicpm", encoder_path=folder, backbone="flux", backbone_path=flux,
                                  aligner=str(tmp_path / "align-ref"), device="cpu")
    assert pipe.encoder.template == "reference"
    assert pipe.encoder.encode(["a cat"]).hidden_states.shape[2] == 512


def test_cli_aligns_on_text(folder, flux, tmp_path):
    """`x2i align --encoder minicpm`: text-only alignment runs through the same encode()."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square on green grass\nzwei Katzen\n", encoding="utf-8")
    out = tmp_path / "aligned"
    result = CliRunner().invoke(cli, [
        "align", "--encoder", "minicpm", "--encoder-path", folder, "--backbone", "flux", "--backbone-path", flux,
        "--data", str(prompts), "-o", str(out), "--steps", "2", "--batch-size", "2", "--resolution", "16",
        "--teacher-max-length", "24", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    aligned = AlignNet.from_pretrained(str(out))
    assert (aligned.config.num_layers, aligned.config.hidden_size) == (LAYERS, HIDDEN)


def test_cli_chat_with_audio_turns(folder, encoder, flux, media, tmp_path):
    """A scripted `x2i chat` through minicpm: an audio turn, then a follow-up conditioned on the dialogue."""
    torch.manual_seed(0)
    AlignNet(num_layers=encoder.num_layers, hidden_size=encoder.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             encoder="minicpm").save_pretrained(tmp_path / "align")
    script = f"/audio {media.wav}\nwhat is this\nmake it blue\n/quit\n"
    out = tmp_path / "session"
    result = CliRunner().invoke(cli, [
        "chat", "--encoder", "minicpm", "--encoder-path", folder, "--backbone", "flux", "--backbone-path", flux,
        "--aligner", str(tmp_path / "align"), "--device", "cpu", "--width", "32", "--height", "32", "--steps", "1",
        "--answer-tokens", "3", "-o", str(out)], input=script)
    assert result.exit_code == 0, result.output
    answers = [line[len("answer: "):] for line in result.stdout.splitlines() if line.startswith("answer: ")]
    first = MultimodalPrompt.build("what is this", audios=[media.wav])
    assert answers[0] == encoder.reply(first, max_new_tokens=3)
    second = first.followed_by(answers[0], [PromptPart("text", "make it blue")])
    assert answers[1] == encoder.reply(second, max_new_tokens=3)
    assert read_metadata(out / "turn-2.png")["prompt"].endswith("[user] make it blue")
