"""Multi-turn: x2i_core.chat.ChatSession and `x2i chat` from a piped script, each turn's image drawn from the
dialogue so far (earlier prompts and answers, this prompt and its answer)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from x2i_cli.main import cli
from x2i_core.chat import ChatSession
from x2i_core.errors import IncompatibleError, InputError
from x2i_core.generate import read_metadata
from x2i_core.prompt import MultimodalPrompt, PromptPart
from x2i_core.prompt_files import load_prompt_file

from _omni_world import SIZE, SIZE_ARGS, build_world, model_args, pipeline


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("chat-world"))


@pytest.fixture(scope="module")
def pipe(world):
    return pipeline(world)


def _differ(a, b) -> bool:
    return np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() > 0


def test_session_turns_see_the_dialogue(pipe, world, tmp_path):
    session = ChatSession(pipe, seed=0, answer_tokens=6, **SIZE)
    first, images = session.send("a red circle")
    assert first == pipe.encoder.reply(MultimodalPrompt.from_text("a red circle"), max_new_tokens=6)
    assert images[0].info["answer"] == first and images[0].info["seed"] == "0"
    second, images2 = session.send("now with this sound", media=[world.tone])
    assert images2[0].info["seed"] == "1"
    # the second turn's prompt is the whole dialogue, in order
    assert images2[0].info["prompt"] == f"[user] a red circle [assistant] {first} [user] <audio:tone.wav> now with this sound"
    expected = pipe.encoder.reply(MultimodalPrompt((PromptPart("audio", world.tone), PromptPart("text", "now with this sound")),
                                                   session.history[:2]), max_new_tokens=6)
    assert second == expected
    # the same message with the same seed but no earlier turns draws something else
    fresh = ChatSession(pipe, seed=1, answer_tokens=6, **SIZE).send("now with this sound", media=[world.tone])[1]
    assert _differ(fresh[0], images2[0])

    again_answer, again = session.again()
    assert again_answer == second and again[0].info["seed"] == "2" and _differ(again[0], images2[0])
    assert len(session.turns[-1].images) == 2 and len(session.history) == 4

    paths = session.save(tmp_path / "saved")
    assert sorted(p.name for p in paths) == ["dialogue.json", "turn-1.png", "turn-2-1.png", "turn-2.png"]
    messages = json.loads((tmp_path / "saved" / "dialogue.json").read_text())
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"][0] == {"type": "audio", "audio": world.tone}
    assert read_metadata(tmp_path / "saved" / "turn-2.png")["answer"] == second
    # the saved dialogue continues as a --prompt-file once a user message is added
    messages.append({"role": "user", "content": "and a third"})
    (tmp_path / "next.json").write_text(json.dumps(messages))
    assert len(load_prompt_file(tmp_path / "next.json").history) == 4


def test_session_refuses_what_it_cannot_do(pipe, monkeypatch):
    session = ChatSession(pipe, answer_tokens=4, **SIZE)
    with pytest.raises(InputError, match="empty"):
        session.send("   ")
    with pytest.raises(InputError, match="nothing to draw again"):
        session.again()
    with pytest.raises(InputError, match="cannot tell"):
        session.send("x", media=["notes.txt"])
    assert session.history == ()  # failed turns leave no trace
    monkeypatch.setattr(type(pipe.encoder), "supports_reply", False)
    with pytest.raises(IncompatibleError, match="cannot answer"):
        ChatSession(pipe)


def test_cli_chat_scripted(world, tmp_path):
    script = "\n".join([
        "a red circle",
        f"/image {world.image}",
        f"/audio {world.tone}",
        "the same, with these",
        "/again",
        f"/video {world.sound_video}",
        "and this clip with its sound",
        "/image /no/such/file.png",
        "/bogus",
        f"/save {tmp_path / 'saved'}",
        "/quit",
        "never read",
    ]) + "\n"
    out = tmp_path / "session"
    result = CliRunner().invoke(cli, ["chat", *model_args(world), *SIZE_ARGS, "--answer-tokens", "5", "--video-sound",
                                      "-o", str(out)], input=script)
    assert result.exit_code == 0, result.output
    answers = [line[len("answer: "):] for line in result.stdout.splitlines() if line.startswith("answer: ")]
    images = [line[len("image: "):] for line in result.stdout.splitlines() if line.startswith("image: ")]
    assert len(answers) == 4 and images == [str(out / f"turn-{n}.png") for n in ("1", "2", "2-1", "3")]
    assert read_metadata(out / "turn-3.png")["prompt"].endswith("[user] <video:sound.mp4> and this clip with its sound")
    assert read_metadata(out / "turn-2.png")["prompt"].endswith("[user] <image:a.png> <audio:tone.wav> the same, with these")
    assert read_metadata(out / "turn-2.png")["answer"] == answers[1] == answers[2]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 2 and "image file not found" in errors[0] and "unknown command /bogus" in errors[1]
    assert (tmp_path / "saved" / "dialogue.json").is_file() and "never read" not in result.output


def test_cli_chat_default_world_from_a_pipe(tmp_path):
    """`printf 'a red circle\\n/quit\\n' | x2i chat -o DIR` with no model options: the shapes world answers."""
    out = tmp_path / "chat"
    proc = subprocess.run([sys.executable, "-m", "x2i_cli.main", "chat", "-o", str(out), "--steps", "1"],
                          input="a red circle\n/quit\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "shapes world" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("answer: ") and lines[1] == f"image: {out / 'turn-1.png'}"
    meta = read_metadata(out / "turn-1.png")
    assert meta["answer"] == lines[0][len("answer: "):] and meta["prompt"] == "a red circle"
