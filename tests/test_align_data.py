"""Prompt streams: formats, UTF-8, deterministic order, rank sharding, resume position, one-line errors."""
import io
import json
import tarfile

import pytest

from x2i_core.align.data import PromptStream, expand_braces, read_prompts, resolve_files
from x2i_core.errors import InputError


def _tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            raw = data.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_text_jsonl_and_tar_read_multilingual(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_bytes("\ufeffone\r\n\n  二つ目  \nthird\u2028same line\n".encode("utf-8"))
    assert list(read_prompts(txt)) == ["one", "二つ目", "third\u2028same line"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"caption": "ein Hund"}\n\n{"caption": "un chien", "x": 1}\n', encoding="utf-8")
    assert list(read_prompts(jsonl, "caption")) == ["ein Hund", "un chien"]
    shard = _tar(tmp_path / "c.tar", [
        ("000.json", json.dumps({"text": "猫"})), ("000.jpg", "x"),
        ("001.txt", "a plain caption"), ("002.json", json.dumps({"text": "json wins"})), ("002.txt", "ignored"),
    ])
    assert list(read_prompts(shard, "text")) == ["猫", "a plain caption", "json wins"]


def test_globs_braces_and_folders(tmp_path):
    for i in range(3):
        (tmp_path / f"s-{i:03d}.txt").write_text(f"p{i}\n")
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert len(resolve_files([str(tmp_path / "s-{000..002}.txt")])) == 3
    assert len(resolve_files([str(tmp_path / "s-*.txt")])) == 3
    assert len(resolve_files([str(tmp_path)])) == 3
    with pytest.raises(InputError, match="no file matches"):
        resolve_files([str(tmp_path / "nothing-*.txt")])
    with pytest.raises(InputError, match="no such file"):
        resolve_files([str(tmp_path / "missing.txt")])


def _stream(tmp_path, n=23, **kw):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(f"prompt {i}" for i in range(n)) + "\n")
    return PromptStream.from_specs([str(path)], buffer_size=8, **kw)


def test_order_is_seeded_and_ranks_split_the_global_order(tmp_path):
    one = _stream(tmp_path, seed=3)
    first = [b for _, b in zip(range(12), one.batches(2))]
    again = [b for _, b in zip(range(12), _stream(tmp_path, seed=3).batches(2))]
    other = [b for _, b in zip(range(10), _stream(tmp_path, seed=4).batches(2))]
    assert first == again and first != other
    epoch = [p for b in first for p in b][:23]
    assert sorted(epoch) == sorted(f"prompt {i}" for i in range(23))  # every prompt once per epoch
    r0 = [b for _, b in zip(range(5), _stream(tmp_path, seed=3, rank=0, world_size=2).batches(2))]
    r1 = [b for _, b in zip(range(5), _stream(tmp_path, seed=3, rank=1, world_size=2).batches(2))]
    merged = [p for a, b in zip(r0, r1) for pair in zip(a, b) for p in pair]
    assert merged == [p for b in first[:10] for p in b][:20]


def test_resume_from_a_position_continues_the_same_order(tmp_path):
    full = _stream(tmp_path, seed=1)
    batches = [b for _, b in zip(range(12), full.batches(3))]
    part = _stream(tmp_path, seed=1)
    it = part.batches(3)
    head = [next(it) for _ in range(5)]
    resumed = _stream(tmp_path, seed=1, position=part.position)
    tail = [b for _, b in zip(range(7), resumed.batches(3))]
    assert part.position == 15 and head + tail == batches


def test_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match=r"empty.txt: empty"):
        PromptStream.from_specs([str(empty)])
    bad_key = tmp_path / "k.jsonl"
    bad_key.write_text('{"text": "fine"}\n{"caption": "x"}\n')
    with pytest.raises(InputError, match=r"k.jsonl:2: no key 'text' \(keys: caption\)"):
        list(read_prompts(bad_key, "text"))
    bad_json = tmp_path / "j.jsonl"
    bad_json.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(InputError, match=r"j.jsonl:2: not valid JSON"):
        list(read_prompts(bad_json, "text"))
    latin = tmp_path / "l.txt"
    latin.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(InputError, match=r"l.txt:2: not UTF-8"):
        list(read_prompts(latin))
    shard = _tar(tmp_path / "good.tar", [(f"{i:03d}.json", json.dumps({"text": f"p{i}" * 200})) for i in range(20)])
    broken = tmp_path / "broken.tar"
    broken.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"broken.tar: broken WebDataset shard"):
        list(read_prompts(broken, "text"))
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(InputError, match=r"garbage.tar: broken WebDataset shard"):
        PromptStream.from_specs([str(garbage)])
    no_key = _tar(tmp_path / "nokey.tar", [("000.json", json.dumps({"caption": "x"}))])
    with pytest.raises(InputError, match=r"nokey.tar:000.json: no key 'text'"):
        PromptStream.from_specs([str(no_key)])
    for exc in (pytest.raises(InputError),):
        with exc as info:
            PromptStream.from_specs([str(empty)])
        assert "\n" not in str(info.value)
