"""MultimodalEncoder: a multimodal LLM that turns prompts into the hidden states of all its layers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

from ..errors import IncompatibleError, InputError
from ..prompt import MultimodalPrompt
from .values import EncodedPrompt


class MultimodalEncoder(ABC):
    """A multimodal LLM that turns a MultimodalPrompt into the hidden states of all its layers."""

    #: the modalities this encoder understands, a subset of ("text", "image", "video", "audio")
    modalities: ClassVar[frozenset[str]] = frozenset({"text"})
    #: `reply` and `encode_reply` work (the MLLM can answer first: --reason, and the answers of `x2i chat`)
    supports_reply: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, **options) -> "MultimodalEncoder":
        """Load from a hub id or a local folder."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """C: decoder layers + 1 (the embedding output)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """H: the width of each hidden state."""

    @property
    def identity(self) -> str:
        """A short name saved with an AlignNet so that a mismatch can be named in an error."""
        return f"{type(self).__name__}(layers={self.num_layers}, hidden={self.hidden_size})"

    @abstractmethod
    def encode(self, prompts: Sequence[MultimodalPrompt]) -> EncodedPrompt:
        """Apply the encoder's one prompt template and return all hidden states, padded with a mask.

        Alignment (text only) and generation (any mix) go through this same method.
        """

    def check_prompt(self, prompt: MultimodalPrompt) -> None:
        """Raise InputError if the prompt uses a modality this encoder does not understand.

        An empty prompt is valid here: it is the unconditional prompt of classifier-free guidance (and of
        alignment with --empty-prompt-prob). Generation refuses an empty *user* prompt itself."""
        unsupported = prompt.modalities - set(self.modalities)
        if unsupported:
            raise InputError(
                f"{self.identity} does not understand {', '.join(sorted(unsupported))} input "
                f"(it takes {', '.join(sorted(self.modalities))})"
            )

    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The model's greedy answer to the prompt (its whole dialogue), at most `max_new_tokens` tokens."""
        raise IncompatibleError(f"the encoder {self.identity} cannot answer prompts (no text generation)")

    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after `prompt` (the reference's use-answer mode: only
        the answer's tokens); `with_prompt` keeps the prompt's tokens before them too. Batch of one."""
        raise IncompatibleError(f"the encoder {self.identity} cannot answer prompts (no text generation)")

    def to(self, device=None, dtype=None) -> "MultimodalEncoder":
        """Move the encoder's weights (a no-op unless the plugin overrides it); returns self."""
        return self
