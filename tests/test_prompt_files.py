"""Prompts in the user's order: inline references in text and chat-message JSON prompt files."""
import json
from pathlib import Path

import pytest

from x2i_core.errors import InputError
from x2i_core.prompt import MultimodalPrompt, PromptPart, Turn
from x2i_core.prompt_files import as_prompt, load_prompt_file, parse_inline, prompt_from_messages
from x2i_core.templates import chat_messages


def test_inline_references_keep_the_order():
    parts = parse_inline("a cat like <image:dog.png> in the style of <image:art.jpg>", base="/data")
    assert parts == [PromptPart("text", "a cat like"), PromptPart("image", "/data/dog.png"),
                     PromptPart("text", "in the style of"), PromptPart("image", "/data/art.jpg")]
    mixed = parse_inline("<audio:bark.wav>the dog of <video: my clip.mp4>, drawn")
    assert [p.modality for p in mixed] == ["audio", "text", "video", "text"]
    assert mixed[2].value == "my clip.mp4" and mixed[3].value == ", drawn"
    assert parse_inline("/abs <image:/x/y.png>", base="/data")[1].value == "/x/y.png"


def test_text_without_references_is_unchanged():
    assert parse_inline("  a red circle <b>bold</b> ") == [PromptPart("text", "  a red circle <b>bold</b> ")]
    assert parse_inline("") == []
    with pytest.raises(InputError, match="empty path"):
        parse_inline("x <image: > y")


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_prompt_file_json_dialogue(tmp_path):
    (tmp_path / "media").mkdir()
    path = _write(tmp_path / "media" / "dialogue.json", [
        {"role": "system", "content": "Draw what is asked."},
        {"role": "user", "content": [{"type": "text", "text": "a dog like"}, {"type": "image", "image": "dog.png"}]},
        {"role": "assistant", "content": "A brown dog."},
        {"role": "user", "content": [{"type": "audio", "audio": "bark.wav"}, {"type": "text", "text": "now barking"},
                                     {"type": "video", "video": "/abs/clip.mp4"}]},
    ])
    prompt = load_prompt_file(path)
    folder = str(tmp_path / "media")
    assert prompt.parts == (PromptPart("audio", f"{folder}/bark.wav"), PromptPart("text", "now barking"),
                            PromptPart("video", "/abs/clip.mp4"))
    assert [t.role for t in prompt.history] == ["system", "user", "assistant"]
    assert prompt.history[1].parts[1] == PromptPart("image", f"{folder}/dog.png")
    # rendered for a chat template: the same order, every turn
    messages = chat_messages(prompt)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [c["type"] for c in messages[-1]["content"]] == ["audio", "text", "video"]


def test_prompt_file_hf_style_parts_and_wrapper(tmp_path):
    path = _write(tmp_path / "p.json", {"messages": [
        {"role": "user", "content": [{"image": "a.png"}, {"text": "as a poster"}, "plain string part"]}]})
    prompt = load_prompt_file(path)
    assert [p.modality for p in prompt.parts] == ["image", "text", "text"] and not prompt.history


def test_prompt_file_text_with_inline_references(tmp_path):
    (tmp_path / "p.txt").write_text("a cat like <image:dog.png>\n", encoding="utf-8")
    prompt = load_prompt_file(tmp_path / "p.txt")
    assert prompt.parts == (PromptPart("text", "a cat like"), PromptPart("image", str(tmp_path / "dog.png")))


@pytest.mark.parametrize("data, match", [
    ("{not json", "not valid JSON"),
    ([], "non-empty list"),
    ([{"role": "user"}], "\"role\" and \"content\""),
    ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
    ([{"role": "user", "content": [{"type": "smell", "smell": "x"}]}], "unknown part type 'smell'"),
    ([{"role": "user", "content": [{"type": "image"}]}], "needs a 'image' string"),
    ([{"role": "user", "content": 3}], "content must be"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message must be the user's"),
])
def test_bad_prompt_files_are_one_line_naming_the_file(tmp_path, data, match):
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match=match) as err:
        load_prompt_file(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(InputError, match="prompt file not found"):
        load_prompt_file(tmp_path / "nope.json")


def test_as_prompt_takes_every_form(tmp_path):
    prompt = MultimodalPrompt.from_text("x")
    assert as_prompt(prompt) is prompt
    assert as_prompt("a red circle") == MultimodalPrompt.from_text("a red circle")
    assert [p.modality for p in as_prompt("x <image:a.png> y").parts] == ["text", "image", "text"]
    dialogue = as_prompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": [{"type": "text", "text": "draw it"}]}])
    assert dialogue.history == (Turn.text("user", "hi"), Turn.text("assistant", "hello"))
    assert prompt_from_messages([{"role": "user", "content": "<audio:a.wav>"}], base=tmp_path).parts[0].value == str(tmp_path / "a.wav")


def test_cli_prompt_order(tmp_path):
    from x2i_core.prompt_files import cli_prompt

    prompt = cli_prompt("like <image:b.png> but blue", images=["a.png"], audios=["s.wav"])
    assert [(p.modality, p.value) for p in prompt.parts] == [
        ("image", "a.png"), ("audio", "s.wav"), ("text", "like"), ("image", "b.png"), ("text", "but blue")]
    (tmp_path / "p.json").write_text(json.dumps([{"role": "user", "content": "x"}]))
    assert cli_prompt(None, prompt_file=str(tmp_path / "p.json")).parts == (PromptPart("text", "x"),)
    with pytest.raises(InputError, match="either --prompt-file"):
        cli_prompt("text", prompt_file=str(tmp_path / "p.json"))
