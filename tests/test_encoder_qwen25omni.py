"""The built-in `qwen2.5-omni` encoder on tiny real Qwen2.5-Omni folders (a full thinker + talker + token2wav
model, as the hub repositories hold, and a thinker alone) written by write_tiny_qwen25omni."""
import json
import shutil
import types

import numpy as np
import pytest
import torch
from PIL import Image

from x2i_core.errors import CheckpointError, InputError
from x2i_core.plugins import get_registry, load_component
from x2i_core.prompt import MultimodalPrompt, PromptPart, Turn
from x2i_core.testing import check_encoder, write_test_video
from x2i_plugins.encoders.qwen25omni.audio import audio_features, video_with_audio_tokens
from x2i_plugins.encoders.qwen25omni.encoder import Qwen25OmniEncoder
from x2i_plugins.encoders.qwen25omni.tiny import write_tiny_qwen25omni

from _media_files import write_tone, write_video_with_sound

LAYERS, HIDDEN = 3, 64


@pytest.fixture(scope="session")
def omni_dir(tmp_path_factory):
    path = write_tiny_qwen25omni(tmp_path_factory.mktemp("omni") / "tiny-qwen25omni", seed=0)
    # the real repositories ship the talker's speakers as a pickle: it must never be opened
    with open(f"{path}/spk_dict.pt", "wb") as f:
        f.write(b"\x80\x04cbuiltins\nexec\n.")  # unpickling this would reach for builtins.exec
    return path


@pytest.fixture(scope="session")
def encoder(omni_dir):
    return Qwen25OmniEncoder.from_pretrained(omni_dir, device="cpu")


@pytest.fixture(scope="session")
def sound_encoder(encoder):
    """The same thinker, reading videos' sound tracks (the option a CLI user sets with --use-audio-in-video)."""
    return Qwen25OmniEncoder(encoder.model, encoder.tokenizer, encoder.image_processor, encoder.feature_extractor,
                             encoder.chat_template, pretrained=encoder.pretrained, use_audio_in_video=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni-media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "corrupt.wav").write_bytes(rng.bytes(500))
    (root / "empty.mp3").write_bytes(b"")
    return types.SimpleNamespace(
        root=root, image=str(root / "a.png"),
        wav=write_tone(root / "tone.wav", seconds=1.0, rate=16000, channels=1),
        mp3=write_tone(root / "tone.mp3", seconds=2.0, rate=22050, channels=2, hz=660.0),
        silent=write_tone(root / "silent.flac", seconds=0.5, rate=16000, channels=1, amplitude=0.0),
        video=write_test_video(root / "mute.mp4", num_frames=12, fps=4),  # 3 s, no sound track
        sound_video=write_video_with_sound(root / "sound.mp4", seconds=3.0, fps=4),
    )


def _real(out, row):
    return out.hidden_states[row][:, out.attention_mask[row]]


def _count(inputs, encoder, token):
    return int((inputs["input_ids"] == encoder.tokenizer.convert_tokens_to_ids(token)).sum())


def test_loads_the_thinker_of_a_full_checkpoint(encoder, omni_dir, monkeypatch):
    assert json.load(open(f"{omni_dir}/config.json"))["model_type"] == "qwen2_5_omni"
    assert (encoder.num_layers, encoder.hidden_size) == (LAYERS, HIDDEN)
    assert type(encoder.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert encoder.identity == f"qwen2.5-omni({omni_dir})" and encoder.supports_reply
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())
    assert type(encoder.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert type(encoder.feature_extractor).__name__ == "WhisperFeatureExtractor"
    # loading never unpickles anything (spk_dict.pt is in the folder)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    Qwen25OmniEncoder.from_pretrained(omni_dir, device="cpu")


def test_full_and_thinker_only_folders_encode_alike(encoder, tmp_path):
    thinker = Qwen25OmniEncoder.from_pretrained(write_tiny_qwen25omni(tmp_path / "thinker", seed=0, thinker_only=True))
    torch.testing.assert_close(thinker.encode(["a red circle"]).hidden_states, encoder.encode(["a red circle"]).hidden_states)


def test_registry(omni_dir):
    registry = get_registry()
    assert registry.get("encoder", "qwen2.5-omni-7b").pretrained == "Qwen/Qwen2.5-Omni-7B"
    assert registry.get("encoder", "qwen2.5-omni-3b").pretrained == "Qwen/Qwen2.5-Omni-3B"
    spec = registry.get("encoder", "qwen2.5-omni")
    assert spec.pretrained == "Qwen/Qwen2.5-Omni-7B" and set(spec.modalities) == {"text", "image", "video", "audio"}
    assert type(load_component("encoder", "qwen2.5-omni", omni_dir, device="cpu")).__name__ == "Qwen25OmniEncoder"


def test_template_keeps_the_users_order_and_the_dialogue(encoder):
    prompt = MultimodalPrompt((PromptPart("text", "hear"), PromptPart("audio", "x.wav"), PromptPart("text", "see"),
                               PromptPart("image", "a.png")), history=(Turn.text("user", "hi"), Turn.text("assistant", "yes")))
    assert encoder.render(prompt) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nyes<|im_end|>\n<|im_start|>user\n"
        "hear<|audio_bos|><|AUDIO|><|audio_eos|>see<|vision_bos|><|IMAGE|><|vision_eos|><|im_end|>\n"
    )
    assert encoder.render(prompt, add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_contract_every_modality(encoder, sound_encoder, media):
    check_encoder(encoder)
    check_encoder(encoder, [MultimodalPrompt.build("a dog", audios=[media.wav]),
                            MultimodalPrompt.build("a much longer caption of a dog barking in the park",
                                                   images=[media.image], audios=[media.mp3])])
    check_encoder(encoder, [MultimodalPrompt.build("a clip", videos=[media.video]),
                            MultimodalPrompt.build("a much longer caption about the clip and the picture",
                                                   images=[media.image], videos=[media.sound_video])])
    check_encoder(sound_encoder, [MultimodalPrompt.build("x", videos=[media.sound_video]),
                                  MultimodalPrompt.build("a much longer caption with a tone first and a video",
                                                         audios=[media.wav], videos=[media.sound_video])])


def test_audio_tokens_one_second_is_25(encoder, media):
    inputs = encoder.prepare([MultimodalPrompt.build("a tone", audios=[media.wav, media.mp3])])
    assert _count(inputs, encoder, "<|AUDIO|>") == 25 + 50
    assert inputs["feature_attention_mask"].sum(1).tolist() == [100, 200]
    plain = encoder.encode(["a tone"])
    heard = encoder.encode([MultimodalPrompt.build("a tone", audios=[media.wav])])
    assert heard.hidden_states.shape[2] == plain.hidden_states.shape[2] + 27  # bos + 25 + eos
    assert not torch.allclose(heard.hidden_states[0, -1, -3:], plain.hidden_states[0, -1, -3:])


def test_silent_audio_is_valid(encoder, media):
    out = encoder.encode([MultimodalPrompt.build("silence", audios=[media.silent])])
    assert bool(torch.isfinite(out.hidden_states).all())


def test_matches_transformers_processor_for_images_and_audio(encoder, media):
    """prepare() gives what Qwen2_5OmniProcessor gives (its video path needs torchvision), audio features on the
    real frames included (the processor pads each clip to a 5-minute window first)."""
    from transformers import Qwen2_5OmniProcessor

    from x2i_core.media import load_audio

    class NoVideoProcessor(Qwen2_5OmniProcessor):
        def check_argument_for_proper_class(self, name, argument):  # allow video_processor=None
            return None if argument is None else super().check_argument_for_proper_class(name, argument)

    processor = NoVideoProcessor(image_processor=encoder.image_processor, video_processor=None,
                                 feature_extractor=encoder.feature_extractor, tokenizer=encoder.tokenizer,
                                 chat_template=encoder.chat_template)
    prompt = MultimodalPrompt.build("a dog", images=[media.image], audios=[media.mp3])
    ref = processor(text=[encoder.render(prompt)], images=[Image.open(media.image).convert("RGB")],
                    audio=[load_audio(media.mp3)], return_tensors="pt",
                    images_kwargs={"size": {"shortest_edge": encoder.min_pixels, "longest_edge": encoder.max_pixels}})
    mine = encoder.prepare([prompt])
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        assert torch.equal(ref[key].to(mine[key].dtype), mine[key]), key
    frames = int(ref["feature_attention_mask"].sum())
    assert int(mine["feature_attention_mask"].sum()) == frames
    torch.testing.assert_close(mine["input_features"][0, :, :frames], ref["input_features"][0, :, :frames].float())


def test_video_sound_track_layout_matches_the_processor(sound_encoder, media):
    """With use_audio_in_video the video's tokens interleave with its sound's in 2 s chunks, as the processor
    lays them out (its own layout code run on the same counts)."""
    from transformers import Qwen2_5OmniProcessor

    inputs = sound_encoder.prepare([MultimodalPrompt.build("a clip", videos=[media.sound_video])])
    assert inputs["use_audio_in_video"] is True and inputs["video_grid_thw"].tolist() == [[2, 4, 4]]
    audio_tokens = _count(inputs, sound_encoder, "<|AUDIO|>")
    assert 75 <= audio_tokens <= 80  # 3 s of sound (the AAC encoder adds a little)
    fake = types.SimpleNamespace(video_processor=types.SimpleNamespace(merge_size=2), audio_bos_token="<|audio_bos|>",
                                 audio_eos_token="<|audio_eos|>", video_token="<|VIDEO|>", audio_token="<|AUDIO|>")
    fake.get_chunked_index = lambda idx, n: Qwen2_5OmniProcessor.get_chunked_index(fake, idx, n)
    for grid, seconds, count in (([2, 4, 4], 2.0, audio_tokens), ([8, 2, 2], 0.5, 300), ([3, 2, 4], 4.1, 7)):
        ref = Qwen2_5OmniProcessor.replace_video_with_audio_token(
            fake, {"video_grid_thw": np.array([grid]), "video_second_per_grid": [seconds]}, 0,
            {"num_audio_tokens": np.array([count])}, 0, position_id_per_seconds=25, seconds_per_chunk=2.0)
        mine = video_with_audio_tokens(grid, seconds, count, merge_size=2, position_id_per_seconds=25,
                                       seconds_per_chunk=2, video_token="<|VIDEO|>", audio_token="<|AUDIO|>",
                                       audio_bos="<|audio_bos|>", audio_eos="<|audio_eos|>")
        assert mine == ref
    text = sound_encoder.tokenizer.decode(inputs["input_ids"][0])
    assert "<|vision_bos|><|audio_bos|><|VIDEO|>" in text and "<|audio_eos|><|vision_eos|>" in text


def test_sound_track_changes_the_encoding(encoder, sound_encoder, media):
    prompt = MultimodalPrompt.build("a clip", videos=[media.sound_video])
    mute, heard = encoder.encode([prompt]), sound_encoder.encode([prompt])
    assert heard.hidden_states.shape[2] > mute.hidden_states.shape[2]
    assert not torch.allclose(heard.hidden_states[0, -1, -3:], mute.hidden_states[0, -1, -3:])


def test_audio_features_ignore_padding(encoder, media):
    from x2i_core.media import load_audio

    short, long = load_audio(media.wav), load_audio(media.mp3)
    alone, _ = audio_features([short], encoder.feature_extractor)
    batched, mask = audio_features([short, long], encoder.feature_extractor)
    assert mask.sum(1).tolist() == [100, 200]
    torch.testing.assert_close(batched[0, :, :100], alone[0])
    assert float(batched[0, :, 100:].abs().max()) == 0.0


def test_reply_and_encode_reply(encoder, media):
    prompt = MultimodalPrompt.build("describe this sound", audios=[media.wav])
    answer = encoder.reply(prompt, max_new_tokens=6)
    assert isinstance(answer, str) and answer == encoder.reply(prompt, max_new_tokens=6)  # greedy
    assert len(encoder.tokenizer(answer, add_special_tokens=False)["input_ids"]) <= 6
    ids = encoder.tokenizer(answer, add_special_tokens=False)["input_ids"]
    only = encoder.encode_reply(prompt, answer)
    both = encoder.encode_reply(prompt, answer, with_prompt=True)
    assert only.hidden_states.shape[:3] == (1, LAYERS, len(ids)) and bool(only.attention_mask.all())
    assert both.hidden_states.shape[2] > only.hidden_states.shape[2]
    torch.testing.assert_close(both.hidden_states[:, :, -len(ids):], only.hidden_states)
    # the answer's states are the dialogue's: the same answer after another prompt reads differently
    other = encoder.encode_reply(MultimodalPrompt.from_text("something else"), answer)
    assert not torch.allclose(other.hidden_states[0, -1], only.hidden_states[0, -1])
    with pytest.raises(InputError, match="empty"):
        encoder.encode_reply(prompt, "  ")
    with pytest.raises(InputError, match="at least one token"):
        encoder.reply(prompt, max_new_tokens=0)


@pytest.mark.parametrize("part, match", [
    (PromptPart("audio", "missing.wav"), "audio file not found"),
    (PromptPart("audio", "corrupt.wav"), "cannot read audio"),
    (PromptPart("audio", "empty.mp3"), "audio file is empty"),
    (PromptPart("audio", "a.png"), "cannot read audio|no audio stream"),
    (PromptPart("text", "sneaky <|AUDIO|> token"), "reserved"),
])
def test_bad_inputs_are_one_line(encoder, media, part, match):
    value = str(media.root / part.value) if part.modality != "text" else part.value
    with pytest.raises(InputError, match=match) as err:
        encoder.encode([MultimodalPrompt((PromptPart(part.modality, value), PromptPart("text", "x")))])
    assert "\n" not in str(err.value)


def test_sound_track_asked_of_a_mute_video(sound_encoder, media):
    with pytest.raises(InputError, match="no sound track") as err:
        sound_encoder.encode([MultimodalPrompt.build("x", videos=[media.video])])
    assert media.video in str(err.value)
    with pytest.raises(InputError, match="frames has no sound track"):
        sound_encoder.encode([MultimodalPrompt.build("x", videos=[[media.image, media.image]])])


def test_audio_over_the_cap(encoder, media):
    capped = Qwen25OmniEncoder(encoder.model, encoder.tokenizer, encoder.image_processor, encoder.feature_extractor,
                               encoder.chat_template, max_audio_seconds=1.5)
    with pytest.raises(InputError, match="over the 1.5 s cap"):
        capped.encode([MultimodalPrompt.build("x", audios=[media.mp3])])


def test_bad_checkpoints(tmp_path, omni_dir):
    with pytest.raises(CheckpointError, match="cannot load Qwen2.5-Omni"):
        Qwen25OmniEncoder.from_pretrained(str(tmp_path / "missing"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(CheckpointError, match="not Qwen2.5-Omni"):
        Qwen25OmniEncoder.from_pretrained(str(other))
    broken = tmp_path / "broken"
    shutil.copytree(omni_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError) as err:
        Qwen25OmniEncoder.from_pretrained(str(broken))
    assert "\n" not in str(err.value)


def test_video_and_its_sound_share_time_positions(sound_encoder, media):
    """TMRoPE through the thinker's own position code: inside the video block, frames and sound come in 2 s
    chunks, and a token's temporal position is its time (25 per second) from the block's start."""
    inputs = sound_encoder.prepare([MultimodalPrompt.build("a clip", videos=[media.sound_video])])
    ids = inputs["input_ids"]
    positions, _ = sound_encoder.model.model.get_rope_index(
        ids, None, inputs["video_grid_thw"], inputs["attention_mask"], True,
        inputs["feature_attention_mask"].sum(-1), inputs["video_second_per_grid"])
    token = {t: sound_encoder.tokenizer.convert_tokens_to_ids(t) for t in ("<|VIDEO|>", "<|AUDIO|>", "<|audio_bos|>")}
    row, temporal = ids[0].tolist(), positions[0, 0].tolist()
    start = row.index(token["<|audio_bos|>"]) + 1
    block = [(tok, t - temporal[start]) for tok, t in zip(row[start:], temporal[start:])
             if tok in (token["<|VIDEO|>"], token["<|AUDIO|>"])]
    audio_times = [t for tok, t in block if tok == token["<|AUDIO|>"]]
    assert audio_times == list(range(len(audio_times)))  # one position per 40 ms of sound
    assert sorted({t for tok, t in block if tok == token["<|VIDEO|>"]}) == [0, 50]  # 2 temporal patches, 2 s apart
    chunks = [t // 50 for _, t in block]
    assert chunks == sorted(chunks)  # frames and sound of the same 2 s chunk sit together, in time order
