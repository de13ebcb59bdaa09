"""FluxTeacher: FLUX's own text conditioning (CLIP-L pooled + T5 sequence), loaded only for alignment."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from x2i_core import CheckpointError, Conditioning, TeacherConditioner, first_line, resolve_device

# subfolder -> what lives there, as in every diffusers Flux checkpoint
TEACHER_PARTS = {
    "text_encoder": CLIPTextModel,
    "tokenizer": AutoTokenizer,
    "text_encoder_2": T5EncoderModel,
    "tokenizer_2": AutoTokenizer,
}


class FluxTeacher(TeacherConditioner):
    """CLIPTextModel (pooled_prompt_embeds) + T5EncoderModel (prompt_embeds), encoding as FluxPipeline.encode_prompt."""

    def __init__(self, clip, clip_tokenizer, t5, t5_tokenizer, *, max_sequence_length: int = 512):
        self.clip = clip.requires_grad_(False).eval()
        self.clip_tokenizer = clip_tokenizer
        self.t5 = t5.requires_grad_(False).eval()
        self.t5_tokenizer = t5_tokenizer
        self.max_sequence_length = max_sequence_length
        # FluxPipeline pads CLIP to the tokenizer's own limit (77 for CLIP-L)
        self.clip_max_length = int(getattr(clip_tokenizer, "model_max_length", 77) or 77)
        if self.clip_max_length > clip.config.max_position_embeddings:
            self.clip_max_length = int(clip.config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, max_sequence_length: int = 512) -> "FluxTeacher":
        """Load text_encoder/tokenizer (CLIP) and text_encoder_2/tokenizer_2 (T5) from a Flux folder or hub id."""
        device, dtype = resolve_device(device, dtype)
        folder = Path(str(pretrained)).expanduser()
        if folder.is_dir():
            missing = [sub for sub in TEACHER_PARTS if not (folder / sub).is_dir()]
            if missing:
                raise CheckpointError(
                    f"{folder} has no teacher text encoders (missing {', '.join(missing)}); "
                    f"alignment needs a full Flux pipeline folder with CLIP and T5"
                )
        loaded = {}
        for sub, cls_ in TEACHER_PARTS.items():
            try:
                if cls_ is AutoTokenizer:
                    loaded[sub] = cls_.from_pretrained(str(pretrained), subfolder=sub)
                else:
                    loaded[sub] = cls_.from_pretrained(str(pretrained), subfolder=sub, dtype=dtype).to(device)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {first_line(exc)}"
                raise CheckpointError(f"cannot load the Flux teacher's {sub} from {pretrained}: {reason}") from exc
        return cls(
            loaded["text_encoder"], loaded["tokenizer"], loaded["text_encoder_2"], loaded["tokenizer_2"],
            max_sequence_length=max_sequence_length,
        )

    def t5_token_mask(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, max_sequence_length) bool, True on real T5 tokens (FluxPipeline itself attends to the padding)."""
        ids = self.t5_tokenizer(
            list(texts), padding="max_length", max_length=self.max_sequence_length, truncation=True,
            return_tensors="pt",
        )
        return ids.attention_mask.bool()

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Conditioning:
        """T5 last hidden state padded to max_sequence_length and CLIP's pooler_output; attention_mask None
        because FLUX attends to T5 padding (exactly as FluxPipeline.encode_prompt conditions it)."""
        texts = list(texts)
        clip_ids = self.clip_tokenizer(
            texts, padding="max_length", max_length=self.clip_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        pooled = self.clip(clip_ids.to(self.clip.device), output_hidden_states=False).pooler_output
        t5_ids = self.t5_tokenizer(
            texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt"
        ).input_ids
        prompt = self.t5(t5_ids.to(self.t5.device), output_hidden_states=False)[0]
        return Conditioning(prompt.to(self.t5.dtype), pooled.to(self.clip.dtype), None)
