"""Reasoning before drawing (`--reason`): the MLLM answers the prompt first, and its answer conditions the image.

As the X2I reference's use-answer mode: greedy decoding up to a token cap, then the hidden states of the
answer's tokens (read after the whole dialogue, so they carry what the answer was about) go to the AlignNet;
`with_prompt` keeps the templated prompt's states before them (the reference's multi-turn mode uses this:
the dialogue's prefill states plus the answer tokens).
"""
from __future__ import annotations

from .errors import IncompatibleError, InputError
from .interfaces import EncodedPrompt, MultimodalEncoder
from .prompt import MultimodalPrompt

#: the answer's token cap by default for --reason, and for the answers of `x2i chat` (the reference's 64)
DEFAULT_REASON_TOKENS = 128
CHAT_ANSWER_TOKENS = 64


def check_can_reason(encoder: MultimodalEncoder, max_new_tokens: int) -> None:
    """One line, before any work, when the encoder cannot answer or the token cap is not positive."""
    if not encoder.supports_reply:
        raise IncompatibleError(
            f"the encoder {encoder.identity} cannot answer prompts (no text generation): --reason and `x2i chat` "
            f"need an encoder that can, e.g. qwen2.5-omni"
        )
    if int(max_new_tokens) < 1:
        raise InputError(f"the answer's token cap must be at least 1, got {max_new_tokens}")


def reasoned_encoding(encoder: MultimodalEncoder, prompt: MultimodalPrompt, *, max_new_tokens: int = DEFAULT_REASON_TOKENS,
                      with_prompt: bool = False) -> tuple[str, EncodedPrompt]:
    """The encoder's greedy answer to the prompt and the hidden states that condition the image on it."""
    check_can_reason(encoder, max_new_tokens)
    answer = encoder.reply(prompt, max_new_tokens=int(max_new_tokens)).strip()
    if not answer:
        raise InputError("the encoder's answer is empty, so there is nothing to draw from: run without --reason "
                         "or raise the token cap")
    return answer, encoder.encode_reply(prompt, answer, with_prompt=with_prompt)
