"""--reason: the MLLM answers first and its answer's hidden states condition the image; and audio end to end
through `x2i generate` with the tiny Qwen2.5-Omni world."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from x2i_cli.main import cli
from x2i_core.errors import IncompatibleError, InputError
from x2i_core.generate import read_metadata
from x2i_core.prompt import MultimodalPrompt

from _omni_world import SIZE, SIZE_ARGS, build_world, model_args, pipeline


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("reason-world"))


@pytest.fixture(scope="module")
def pipe(world):
    return pipeline(world)


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_reason_conditions_on_the_answer(pipe, world, monkeypatch):
    prompt = MultimodalPrompt.build("what does this sound like", audios=[world.tone])
    expected = pipe.encoder.reply(prompt, max_new_tokens=5)
    plain = pipe(prompt, seed=3, **SIZE)[0]
    reasoned = pipe(prompt, seed=3, reason=True, reason_tokens=5, **SIZE)[0]
    assert reasoned.info["answer"] == expected and expected
    assert "answer" not in plain.info
    assert np.abs(_pixels(plain) - _pixels(reasoned)).max() > 0  # another conditioning, the same noise
    with_prompt = pipe(prompt, seed=3, reason=True, reason_tokens=5, reason_with_prompt=True, **SIZE)[0]
    assert np.abs(_pixels(with_prompt) - _pixels(reasoned)).max() > 0
    # the conditioning is exactly the answer's states through the AlignNet: drawing from them by hand agrees
    encoded = pipe.encoder.encode_reply(prompt, expected)
    monkeypatch.setattr(pipe.encoder, "encode", lambda prompts: encoded)
    assert np.array_equal(_pixels(pipe(prompt, seed=3, **SIZE)[0]), _pixels(reasoned))


def test_reason_needs_an_encoder_that_answers(pipe, monkeypatch):
    monkeypatch.setattr(type(pipe.encoder), "supports_reply", False)
    with pytest.raises(IncompatibleError, match="cannot answer prompts") as err:
        pipe("a cat", reason=True, **SIZE)
    assert "\n" not in str(err.value)


def test_reason_token_cap_must_be_positive(pipe):
    with pytest.raises(InputError, match="at least 1"):
        pipe("a cat", reason=True, reason_tokens=0, **SIZE)


def test_cli_reason_prints_and_stores_the_answer(world, tmp_path):
    out = tmp_path / "r.png"
    result = CliRunner().invoke(cli, ["generate", *model_args(world), *SIZE_ARGS, "--reason", "--reason-tokens", "4",
                                      "-o", str(out), "a red circle"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    answer_lines = [line for line in result.stderr.splitlines() if line.startswith("Answer: ")]
    assert len(answer_lines) == 1
    assert read_metadata(out)["answer"] == answer_lines[0][len("Answer: "):]


def test_cli_audio_end_to_end(world, tmp_path):
    """The issue's example shape: an audio clip through an encoder that hears, into a Flux image."""
    out = tmp_path / "a.png"
    result = CliRunner().invoke(cli, ["generate", *model_args(world), *SIZE_ARGS, "--audio", world.tone,
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["prompt"] == "<audio:tone.wav>" and meta["encoder"].startswith("qwen2.5-omni")


def test_cli_video_sound_and_inline_order(world, tmp_path):
    out = tmp_path / "v.png"
    args = [*model_args(world), *SIZE_ARGS, "--video-sound", "-o", str(out),
            f"a poster of <video:{world.sound_video}> with <image:{world.image}> in the corner"]
    result = CliRunner().invoke(cli, ["generate", *args])
    assert result.exit_code == 0, result.output
    assert read_metadata(out)["prompt"] == "a poster of <video:sound.mp4> with <image:a.png> in the corner"


def test_cli_prompt_file_dialogue(world, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([
        {"role": "user", "content": [{"type": "audio", "audio": world.tone}, {"type": "text", "text": "a bird?"}]},
        {"role": "assistant", "content": "A small bird singing."},
        {"role": "user", "content": [{"type": "text", "text": "draw it"}]},
    ]))
    out = tmp_path / "p.png"
    result = CliRunner().invoke(cli, ["generate", *model_args(world), *SIZE_ARGS, "--prompt-file",
                                      str(tmp_path / "p.json"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_metadata(out)["prompt"] == "[user] <audio:tone.wav> a bird? [assistant] A small bird singing. [user] draw it"


@pytest.mark.parametrize("extra, match", [
    (["--prompt-file", "p.json", "also text"], "either --prompt-file or TEXT"),
    (["--prompt-file", "missing.json"], "prompt file not found"),
    (["--video", "mute.mp4", "--video-sound", "x"], "no sound track"),
])
def test_cli_bad_inputs(world, tmp_path, extra, match):
    from x2i_core.testing import write_test_video

    (tmp_path / "p.json").write_text(json.dumps([{"role": "user", "content": "x"}]))
    write_test_video(tmp_path / "mute.mp4", num_frames=4, fps=4)
    extra = [str(tmp_path / e) if e.endswith((".json", ".mp4")) else e for e in extra]
    result = CliRunner().invoke(cli, ["generate", *model_args(world), *SIZE_ARGS, "-o", str(tmp_path / "x.png"), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and match in lines[-1], result.stderr
    assert not (tmp_path / "x.png").exists()


def test_reason_with_another_encoder_that_answers(pipe, world, tmp_path):
    """--reason is the pipeline's, not one encoder's: the tiny Qwen2.5-VL (same shapes, the same AlignNet) too."""
    from x2i_core.generate import X2IPipeline
    from x2i_core.plugins import load_component
    from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

    qwen = load_component("encoder", "qwen2.5-vl", write_tiny_qwen25vl(tmp_path / "qwen"), device="cpu")
    other = X2IPipeline(qwen, pipe.aligner, pipe.backbone)
    prompt = MultimodalPrompt.build("what is this", images=[world.image])
    image = other(prompt, seed=1, reason=True, reason_tokens=4, **SIZE)[0]
    assert image.info["answer"] == qwen.reply(prompt, max_new_tokens=4)
