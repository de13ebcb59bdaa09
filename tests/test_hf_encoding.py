"""x2i_core.hf_encoding: the steps every Hugging Face encoder plugin shares, on tiny real transformers models."""
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from x2i_core import (HFEncoder, answer_encoding, check_loaded, check_reserved, find_chat_template, greedy_reply,
                      joined_text, masked_encoding, pad_rows, pad_to, quiet_transformers, read_checkpoint_tensor,
                      reference_message, reference_text, stack_hidden_states, to_model, token_ids, video_frames,
                      with_lm_head)
from x2i_core.errors import CheckpointError, InputError
from x2i_core.prompt import MultimodalPrompt, PromptPart, Turn
from x2i_plugins.encoders.qwen25vl.tiny import CHAT_TEMPLATE, build_tiny_tokenizer

TEXT_ONLY_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory, tokenizer):
    """A tiny Qwen2 causal LM saved with an untied lm_head, its folder and its base model loaded alone."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    full = Qwen2ForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("lm") / "tiny-qwen2"
    full.save_pretrained(folder)
    with quiet_transformers():
        base, info = Qwen2Model.from_pretrained(folder, output_loading_info=True)
    return full, folder, base.eval(), info


def test_check_loaded_names_the_first_missing_or_mismatched_weight():
    check_loaded({"missing_keys": [], "mismatched_keys": []}, "ckpt", "Tiny")
    with pytest.raises(CheckpointError, match=r"ckpt lacks or mismatches 2 Tiny weights \(first: b.weight\)"):
        check_loaded({"missing_keys": ["b.weight"], "mismatched_keys": [("a.weight", (1,), (2,))]}, "ckpt", "Tiny")


def test_quiet_transformers_restores_the_verbosity():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    with quiet_transformers():
        assert hf_logging.get_verbosity() == logging.ERROR
    assert hf_logging.get_verbosity() == logging.WARNING


def test_find_chat_template_skips_text_only_templates(tmp_path, tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATE
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": TEXT_ONLY_TEMPLATE}))
    assert find_chat_template(str(tmp_path), tokenizer, ["<|image_pad|>"]) == CHAT_TEMPLATE
    # the processor's file wins when it places images
    (tmp_path / "chat_template.jinja").write_text(CHAT_TEMPLATE + "{# processor #}")
    (tmp_path / "chat_template.json").unlink()
    assert find_chat_template(str(tmp_path), tokenizer, ["<|image_pad|>"]).endswith("{# processor #}")
    tokenizer.chat_template = TEXT_ONLY_TEMPLATE
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(CheckpointError, match="my-ckpt has no chat template that places images"):
        find_chat_template(str(tmp_path), tokenizer, ["<|image_pad|>"], name="my-ckpt")


def test_read_checkpoint_tensor_single_and_sharded(tmp_path):
    a, b = torch.randn(3, 2), torch.randn(4)
    save_file({"lm_head.weight": a, "other": b}, str(tmp_path / "model.safetensors"))
    assert torch.equal(read_checkpoint_tensor(str(tmp_path), ("x", "lm_head.weight")), a)
    assert read_checkpoint_tensor(str(tmp_path), ("absent",)) is None
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"model.lm_head.weight": a}, str(sharded / "part-2.safetensors"))
    save_file({"other": b}, str(sharded / "part-1.safetensors"))
    index = {"weight_map": {"model.lm_head.weight": "part-2.safetensors", "other": "part-1.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(read_checkpoint_tensor(str(sharded), ("lm_head.weight", "model.lm_head.weight")), a)


def test_with_lm_head_and_greedy_reply_match_the_full_model(causal_lm, tokenizer):
    from transformers import Qwen2ForCausalLM

    full, folder, base, info = causal_lm
    check_loaded(info, str(folder), "Qwen2")
    generator = with_lm_head(Qwen2ForCausalLM, base, str(folder), ("lm_head.weight",))
    assert generator.model is base and torch.equal(generator.lm_head.weight, full.lm_head.weight)
    assert not torch.equal(generator.lm_head.weight, base.get_input_embeddings().weight)
    ids = torch.tensor([tokenizer("a red circle", add_special_tokens=False)["input_ids"]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pad = tokenizer.pad_token_id
    stops = token_ids(tokenizer, ["<|im_end|>", "<|not a token|>"])
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    answer = greedy_reply(generator, tokenizer, inputs, max_new_tokens=5, stop_ids=stops, pad_token_id=pad)
    expected = full.generate(**inputs, max_new_tokens=5, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    assert answer == tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True).strip()
    # a prompt given as embeddings: generate returns only the new tokens, all of them decoded
    embeds = {"inputs_embeds": base.get_input_embeddings()(ids), "attention_mask": inputs["attention_mask"]}
    assert greedy_reply(generator, tokenizer, embeds, max_new_tokens=5, stop_ids=stops, pad_token_id=pad) == answer
    # no lm_head stored: tied to the input embeddings
    tied = with_lm_head(Qwen2ForCausalLM, base, str(folder), ("absent.weight",))
    assert tied.lm_head.weight is base.get_input_embeddings().weight


def test_hf_encoder_shapes_identity_to_and_encode(causal_lm, tokenizer):
    full, folder, base, _ = causal_lm

    class Tiny(HFEncoder):
        name = "tiny"

        @property
        def text_config(self):
            return self.model.config

        def __init__(self, model):
            self.model, self.pretrained = model, str(folder)

        @classmethod
        def from_pretrained(cls, pretrained, **options):
            raise NotImplementedError

        def prepare(self, prompts):
            rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
            input_ids, attention_mask = pad_rows(rows, tokenizer.pad_token_id)
            return {"input_ids": input_ids, "attention_mask": attention_mask}

        def hidden_states(self, inputs):
            return stack_hidden_states(self.model(**inputs, output_hidden_states=True), self.num_layers)

    encoder = Tiny(base)
    encoded = encoder.encode(["a red circle above a blue square", "a cat"])
    short = len(tokenizer("a cat", add_special_tokens=False)["input_ids"])
    assert encoded.hidden_states.shape[:2] == (2, 3) and encoded.attention_mask[1].sum() == short
    assert torch.all(encoded.hidden_states[1, :, short:] == 0)
    alone = encoder.encode(["a cat"]).hidden_states
    torch.testing.assert_close(encoded.hidden_states[1, :, :short], alone[0])  # the padding never leaks in
    encoder.template = "reference"  # the reference's unmasked mean: pad states kept, every position counts
    kept = encoder.encode(["a red circle above a blue square", "a cat"])
    assert kept.attention_mask.all() and not torch.all(kept.hidden_states[1, :, short:] == 0)
    assert (encoder.num_layers, encoder.hidden_size) == (3, 32)
    assert encoder.identity == f"tiny({folder})"
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    encoder._generator = SimpleNamespace(lm_head=torch.nn.Linear(2, 2))
    assert encoder.to(dtype=torch.float64) is encoder
    assert encoder.dtype == torch.float64 and encoder._generator.lm_head.weight.dtype == torch.float64
    encoder.to(dtype=torch.float32)


def test_stack_hidden_states_checks_the_layer_count():
    layers = tuple(torch.full((2, 4, 3), float(i)) for i in range(3))
    stacked = stack_hidden_states(SimpleNamespace(hidden_states=layers), 3)
    assert stacked.shape == (2, 3, 4, 3) and torch.equal(stacked[:, 2], layers[2])
    with pytest.raises(RuntimeError, match="expected 4 hidden states, the model returned 3"):
        stack_hidden_states(SimpleNamespace(hidden_states=layers), 4)


def test_masked_and_answer_encodings():
    states = torch.randn(2, 3, 4, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    encoded = masked_encoding(states, mask)
    assert encoded.attention_mask.dtype == torch.bool
    assert torch.equal(encoded.attention_mask, mask.bool())
    assert torch.all(encoded.hidden_states[0, :, 2:] == 0) and torch.equal(encoded.hidden_states[1], states[1])
    kept = masked_encoding(states, mask, keep_padding=True)
    assert bool(kept.attention_mask.all()) and torch.equal(kept.hidden_states, states)
    answer = answer_encoding(states[:1], 2)
    assert torch.equal(answer.hidden_states, states[:1, :, 2:])
    assert answer.attention_mask.shape == (1, 2) and answer.attention_mask.all()
    assert torch.equal(answer_encoding(states[:1], 2, with_prompt=True).hidden_states, states[:1])


def test_padding_left_and_right():
    assert pad_to([5, 6], 0, 4) == [5, 6, 0, 0] and pad_to([5, 6], 0, 4, "left") == [0, 0, 5, 6]
    assert pad_to([5, 6, 7], 0, 2) == [5, 6, 7]  # never truncated
    ids, mask = pad_rows([[1, 2, 3], [4]], 9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_rows([[1, 2, 3], [4]], 9, length=5, side="left")
    assert ids.tolist() == [[9, 9, 1, 2, 3], [9, 9, 9, 9, 4]] and mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]


def test_to_model_moves_tensors_and_casts_media_only():
    inputs = {"input_ids": torch.ones(1, 2, dtype=torch.long), "pixel_values": torch.ones(2, 3), "flag": True}
    moved = to_model(inputs, "cpu", torch.float64)
    assert moved["input_ids"].dtype == torch.long and moved["pixel_values"].dtype == torch.float64
    assert moved["flag"] is True


def test_video_frames_thins_lists_of_frames():
    frames = [Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)) for i in range(10)]
    picked, fps = video_frames(frames, fps=2.0, max_frames=4)
    assert fps == 2.0 and [int(np.asarray(f)[0, 0, 0]) for f in picked] == [0, 2, 5, 7]
    assert len(video_frames(frames[:3], fps=1.0, max_frames=4)[0]) == 3
    with pytest.raises(InputError, match="at least one frame"):
        video_frames([], fps=1.0, max_frames=4)


def test_check_reserved_reads_every_turn():
    check_reserved(MultimodalPrompt.coerce("a cat"), ["<tok>"], "Tiny")
    earlier = MultimodalPrompt([PromptPart("text", "again")], history=[Turn("user", [PromptPart("text", "x <tok>")])])
    with pytest.raises(InputError, match=r"reserved Tiny token \(<tok>, <b>\)"):
        check_reserved(earlier, ["<tok>", "<b>"], "Tiny")


def test_reference_text_and_messages():
    expected = {"Text input": "a cat", "Instruction editing description": "no", "image input": "no"}
    assert eval(reference_text("a cat")) == expected
    turn = Turn("user", [PromptPart("text", "a"), PromptPart("image", "x.png"), PromptPart("text", " "),
                         PromptPart("text", "b")])
    assert joined_text(turn.parts) == "a b"
    message = reference_message(turn, lambda text, media: f"{text}|{media}")
    assert message == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a b|True"}]}
    answer = reference_message(Turn("assistant", [PromptPart("text", "ok")]), lambda *a: "unused")
    assert answer == {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}
