"""Shared steps of Hugging Face MLLM encoders: finding the chat template, loading quietly and checking the weights,
frames of a video, padding, stacking every layer's hidden states into an EncodedPrompt, the lm_head for answers,
greedy answers, and the reference's instruction dict. Encoder plugins keep only what is their model's own."""
from __future__ import annotations

import json
from abc import abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .errors import CheckpointError, InputError
from .interfaces import EncodedPrompt, MultimodalEncoder
from .media import load_image, sample_video
from .prompt import MultimodalPrompt, Turn

IMAGE_PROBE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]


class HFEncoder(MultimodalEncoder):
    """A MultimodalEncoder around one transformers `model`: shapes, identity, device, dtype, `to`, and `encode`
    from the plugin's `prepare` (a batch's model inputs, with its attention_mask) and `hidden_states`."""

    #: the encoder's name in `identity`, e.g. "qwen2.5-vl"
    name: str = "hf"
    pretrained: str = ""
    template: str = "x2i"
    #: templates whose every position counts, pad states included (the reference's unmasked mean)
    unmasked_templates: frozenset = frozenset({"reference"})
    #: a generation wrapper holding an lm_head of its own (built on first `reply`), moved along by `to`
    _generator = None

    @abstractmethod
    def prepare(self, prompts: Sequence[MultimodalPrompt | str]) -> dict:
        """Everything the model takes for a batch, its (B, S) "attention_mask" included."""

    @abstractmethod
    def hidden_states(self, inputs: dict) -> torch.Tensor:
        """(B, layers + 1, S, H): every layer's hidden states of prepared inputs, embedding output first."""

    @torch.no_grad()
    def encode(self, prompts: Sequence[MultimodalPrompt | str]) -> EncodedPrompt:
        """All hidden states (B, layers + 1, S, H), embedding output first, and the (B, S) bool mask."""
        inputs = self.prepare(prompts)
        return masked_encoding(self.hidden_states(inputs), inputs["attention_mask"],
                               keep_padding=self.template in self.unmasked_templates)

    @property
    def text_config(self):
        """The language model's config (num_hidden_layers, hidden_size)."""
        return self.model.config.text_config

    @property
    def num_layers(self) -> int:
        """C: decoder layers + 1 (the embedding output)."""
        return self.text_config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        """H: the language model's width."""
        return self.text_config.hidden_size

    @property
    def identity(self) -> str:
        """e.g. "qwen2.5-vl(Qwen/Qwen2.5-VL-7B-Instruct)": saved with AlignNets to name mismatches."""
        return f"{self.name}({self.pretrained})"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's weight dtype (hidden states come out in it)."""
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> "HFEncoder":
        """Move (and optionally cast) the model, and the lm_head once built; returns self."""
        self.model.to(device=device, dtype=dtype)
        if self._generator is not None:
            self._generator.lm_head.to(device=device, dtype=dtype)
        return self


# -- loading ---------------------------------------------------------------------------------------
@contextmanager
def quiet_transformers():
    """Silence transformers' warnings (not errors) for the duration of a load."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def check_loaded(info: dict, pretrained: str, what: str) -> None:
    """CheckpointError when from_pretrained's loading info reports missing or mismatched weights: random weights
    would encode garbage without any error downstream."""
    missing = sorted(info.get("missing_keys") or ()) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
    if missing:
        raise CheckpointError(f"{pretrained} lacks or mismatches {len(missing)} {what} weights (first: {missing[0]})")


def find_chat_template(folder: str, tokenizer, probe_tokens: Iterable[str], hub: dict | None = None, *,
                       name: str | None = None) -> str:
    """The checkpoint's multimodal chat template: the processor's file (chat_template.json, or .jinja in newer
    saves), else the tokenizer's; the first that writes exactly one of `probe_tokens` for one image (a tokenizer
    may carry a text-only template). `name` is the checkpoint as the user gave it (default: `folder`)."""
    from transformers.utils import cached_file

    candidates = []
    for fname in ("chat_template.json", "chat_template.jinja"):
        try:
            found = cached_file(folder, fname, _raise_exceptions_for_missing_entries=False, **(hub or {}))
        except OSError:
            found = None
        if found:
            text = Path(found).read_text(encoding="utf-8")
            candidates.append(json.loads(text)["chat_template"] if fname.endswith(".json") else text)
    own = tokenizer.chat_template
    candidates.append(own.get("default") if isinstance(own, dict) else own)
    probe_tokens = tuple(probe_tokens)
    for template in filter(None, candidates):
        rendered = tokenizer.apply_chat_template(IMAGE_PROBE, chat_template=template, tokenize=False)
        if sum(rendered.count(token) for token in probe_tokens) == 1:
            return template
    raise CheckpointError(f"{name or folder} has no chat template that places images (chat_template.json or tokenizer)")


def read_checkpoint_tensor(pretrained: str, keys: Sequence[str], hub: dict | None = None):
    """The first of `keys` found in the checkpoint's safetensors (sharded or not), or None when it has none."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def find(fname):
        try:
            return cached_file(pretrained, fname, _raise_exceptions_for_missing_entries=False, **(hub or {}))
        except OSError:
            return None

    index = find("model.safetensors.index.json")
    if index:
        weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
        files = {key: weight_map[key] for key in keys if key in weight_map}
    else:
        files = {key: "model.safetensors" for key in keys}
    for key, fname in files.items():
        path = find(fname)
        if not path:
            continue
        with safe_open(path, framework="pt") as f:
            if key in f.keys():
                return f.get_tensor(key)
    return None


def with_lm_head(generator_class, model, pretrained: str, keys: Sequence[str], hub: dict | None = None):
    """`generator_class` (a *ForConditionalGeneration) around the loaded base `model` and the checkpoint's lm_head,
    read from its safetensors: no second copy of the model, and no lm_head memory unless the encoder answers.
    A checkpoint that stores none of `keys` ties the lm_head to the input embeddings."""
    with torch.device("meta"):
        generator = generator_class(model.config)
    generator.model = model
    embed = model.get_input_embeddings().weight
    weight = read_checkpoint_tensor(pretrained, keys, hub)
    head = torch.nn.Linear(embed.shape[1], embed.shape[0], bias=False, device=embed.device, dtype=embed.dtype)
    head.weight = embed if weight is None else torch.nn.Parameter(weight.to(embed), requires_grad=False)
    generator.lm_head = head.requires_grad_(False)
    return generator.eval()


# -- prompts and media -----------------------------------------------------------------------------
def check_reserved(prompt: MultimodalPrompt, tokens: Sequence[str], model: str) -> None:
    """InputError when the prompt's text (any turn) holds one of the model's reserved tokens."""
    for turn in prompt.turns:
        for part in turn.parts:
            if part.modality == "text" and any(token in str(part.value) for token in tokens):
                raise InputError(f"the prompt text contains a reserved {model} token ({', '.join(tokens)})")


def video_frames(value: Any, *, fps: float, max_frames: int) -> tuple[list, float]:
    """(frames, frames per second) of a video file sampled at `fps`, or of a list of frames evenly thinned to
    `max_frames` (taken as sampled at `fps`)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError("a video given as frames needs at least one frame")
        step = max(1.0, len(value) / max_frames)
        return [load_image(value[int(i * step)]) for i in range(min(len(value), max_frames))], fps
    return sample_video(value, fps=fps, max_frames=max_frames)


def pad_to(ids: list[int], pad_id: int, length: int, side: str = "right") -> list[int]:
    """`ids` padded with `pad_id` to at least `length` on `side` ("left" or "right"); never truncated."""
    fill = [pad_id] * max(0, length - len(ids))
    return fill + ids if side == "left" else ids + fill


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, length: int = 0,
             side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) as long tensors: rows padded on `side` to the longest (at least `length`)."""
    width = max(max(len(r) for r in rows), length)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, ids in enumerate(rows):
        where = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        input_ids[r, where] = torch.tensor(list(ids), dtype=torch.long)
        mask[r, where] = 1
    return input_ids, mask


# -- running the model -----------------------------------------------------------------------------
def to_model(inputs: dict, device, dtype, float_keys: Sequence[str] = ("pixel_values",)) -> dict:
    """Prepared inputs on the model's device, the media tensors in `float_keys` cast to its dtype; non-tensors as
    they are."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    for key in float_keys:
        if key in moved:
            moved[key] = moved[key].to(dtype)
    return moved


def stack_hidden_states(outputs, expected_layers: int) -> torch.Tensor:
    """(B, layers + 1, S, H) from a forward run with output_hidden_states, embedding output first; RuntimeError
    when the model returned another count."""
    hidden_states = torch.stack(outputs.hidden_states, dim=1)
    if hidden_states.shape[1] != expected_layers:
        raise RuntimeError(f"expected {expected_layers} hidden states, the model returned {hidden_states.shape[1]}")
    return hidden_states


def masked_encoding(hidden_states: torch.Tensor, mask: torch.Tensor, *, keep_padding: bool = False) -> EncodedPrompt:
    """EncodedPrompt with a bool mask and zeros at the masked rows, so what an aligner sees there never depends on
    the batch. `keep_padding`: every row counts (the reference's unmasked mean over its pad states)."""
    mask = mask.to(hidden_states.device).bool()
    if keep_padding:
        mask = torch.ones_like(mask)
    return EncodedPrompt(hidden_states * mask[:, None, :, None].to(hidden_states.dtype), mask)


def answer_encoding(hidden_states: torch.Tensor, answer_tokens: int, *, with_prompt: bool = False) -> EncodedPrompt:
    """The last `answer_tokens` positions (all with `with_prompt`) of a one-row batch, every position kept."""
    if not with_prompt:
        hidden_states = hidden_states[:, :, hidden_states.shape[2] - answer_tokens:]
    mask = torch.ones(hidden_states.shape[0], hidden_states.shape[2], dtype=torch.bool, device=hidden_states.device)
    return EncodedPrompt(hidden_states, mask)


def token_ids(tokenizer, tokens: Sequence[str], *, with_eos: bool = True) -> list[int]:
    """The ids of those `tokens` the tokenizer knows (and its eos token), in order: the stops of an answer."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens] + ([tokenizer.eos_token_id] if with_eos else [])
    return [i for i in ids if isinstance(i, int) and i >= 0]


def greedy_reply(generator, tokenizer, inputs: dict, *, max_new_tokens: int, stop_ids: Sequence[int],
                 pad_token_id, **options) -> str:
    """The generator's greedy answer to prepared inputs, decoded without special tokens: the tokens after the
    prompt's input_ids (all of them when the prompt came as inputs_embeds). `options` go to generate()."""
    out = generator.generate(**inputs, max_new_tokens=int(max_new_tokens), do_sample=False,
                             eos_token_id=list(stop_ids) or None, pad_token_id=pad_token_id, **options)
    start = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
    return tokenizer.decode(out[0, start:], skip_special_tokens=True).strip()


# -- the reference's templates ---------------------------------------------------------------------
def reference_text(text: str) -> str:
    """The reference's instruction dict for a text prompt, as `str(dict)`: the form its released AlignNets were
    trained on (its datamodules). Its multimodal front ends wrote other dicts; the plugins keep those."""
    return str({"Text input": text, "Instruction editing description": "no", "image input": "no"})


def joined_text(parts) -> str:
    """A turn's non-blank text parts joined by spaces."""
    return " ".join(str(p.value) for p in parts if p.modality == "text" and str(p.value).strip())


def reference_message(turn: Turn, wrap) -> dict:
    """One turn as the reference wrote it: a user turn's media placeholders, then its text wrapped by
    `wrap(text, has_media)` (the model's instruction dict); other turns as their text."""
    if turn.role != "user":
        return {"role": turn.role, "content": [{"type": "text", "text": joined_text(turn.parts)}]}
    content = [{"type": p.modality} for p in turn.parts if p.modality != "text"]
    content.append({"type": "text", "text": wrap(joined_text(turn.parts), len(content) > 0)})
    return {"role": "user", "content": content}
