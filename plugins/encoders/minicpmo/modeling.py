"""MiniCPM-o-2.6 rebuilt from transformers' own parts: Qwen2 (`llm.`), an Idefics2/SigLIP NaViT vision tower (`vpm.`),
a Whisper encoder (`apm.`), plus MiniCPM's two small pieces written here: the perceiver resampler (`resampler.`) and
the audio projection (`audio_projection_layer.`). Attribute names follow the released checkpoint, so its keys load
as they are (checkpoint.py). The TTS head (`tts.`) is not built: x2i never speaks.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def sincos_2d(embed_dim: int, height: int, width: int) -> torch.Tensor:
    """(height, width, embed_dim) 2-D sin-cos position table: the first half encodes the column, the second the row.

    Computed in float32 numpy as MiniCPM's resampler does, so the values match it bit for bit.
    """
    half = embed_dim // 2
    omega = np.arange(half // 2, dtype=np.float32)
    omega /= half / 2.0
    omega = 1.0 / 10000 ** omega
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))

    def encode(pos):
        angles = np.einsum("hw,d->hwd", pos, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)

    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=-1)).float()


class Resampler(nn.Module):
    """MiniCPM's perceiver resampler: `num_queries` learned queries cross-attend once to a slice's patch features
    (keys carry the 2-D sin-cos position of each patch), giving a fixed number of tokens per image slice."""

    def __init__(self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(embed_dim ** -0.5 * torch.randn(embed_dim, embed_dim))

    def forward(self, features: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """features (B, L, kv_dim), row-major patches first, then padding; grids (B, 2) patch rows and columns."""
        batch, length = features.shape[:2]
        lengths = grids[:, 0] * grids[:, 1]
        padding = torch.arange(length, device=features.device)[None, :] >= lengths.to(features.device)[:, None]
        pos = torch.zeros(batch, length, self.embed_dim, dtype=features.dtype, device=features.device)
        for i, (h, w) in enumerate(grids.tolist()):
            pos[i, : h * w] = sincos_2d(self.embed_dim, h, w).reshape(h * w, -1).to(pos)
        kv = self.ln_kv(self.kv_proj(features)).transpose(0, 1)  # (L, B, D): the attention is sequence-first
        query = self.ln_q(self.query)[:, None, :].expand(-1, batch, -1)
        out = self.attn(query, kv + pos.transpose(0, 1), kv, key_padding_mask=padding, need_weights=False)[0]
        return self.ln_post(out.transpose(0, 1)) @ self.proj


class AudioProjection(nn.Module):
    """Whisper features to the language model's width: Linear, ReLU, Linear (keys linear1, linear2)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(features)))


def navit_position_ids(patch_mask: torch.Tensor, side: int) -> torch.Tensor:
    """Position ids of a NaViT SigLIP for (B, rows, cols) patch masks: each image's patch grid, whatever its
    size, is spread over the `side` x `side` table of positions the tower was trained at (MiniCPM's rule:
    fractional coordinates bucketed into `side` bins, taken with torch.arange as MiniCPM does, so that
    boundary cases fall into the same bins)."""
    batch, rows, cols = patch_mask.shape
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    ids = torch.zeros(batch, rows * cols, dtype=torch.long)
    for i, mask in enumerate(patch_mask.cpu()):
        h, w = int(mask[:, 0].sum()), int(mask[0].sum())
        bucket_h = torch.bucketize(torch.arange(0, 1 - 1e-6, 1 / h), boundaries, right=True)
        bucket_w = torch.bucketize(torch.arange(0, 1 - 1e-6, 1 / w), boundaries, right=True)
        ids[i][mask.reshape(-1)] = (bucket_h[:, None] * side + bucket_w).flatten()
    return ids.to(patch_mask.device)


def navit_embeddings_class():
    """Idefics2's vision embeddings with MiniCPM's position rule (built lazily: transformers loads on first use)."""
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings

    class NavitVisionEmbeddings(Idefics2VisionEmbeddings):
        """Same weights as Idefics2VisionEmbeddings; positions by navit_position_ids."""

        def forward(self, pixel_values: torch.Tensor, patch_attention_mask: torch.BoolTensor) -> torch.Tensor:
            embeddings = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
            return embeddings + self.position_embedding(navit_position_ids(patch_attention_mask, self.num_patches_per_side))

    return NavitVisionEmbeddings


class MiniCPMOModel(nn.Module):
    """The parts of MiniCPM-o-2.6 that read prompts and write text: llm, vpm + resampler, apm + projection."""

    def __init__(self, parts):
        """`parts`: checkpoint.MiniCPMOParts (the sub-configs read from the checkpoint's config.json)."""
        from transformers import Qwen2ForCausalLM
        from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        self.parts = parts
        self.llm = Qwen2ForCausalLM(parts.text)
        hidden = parts.text.hidden_size
        self.vpm = Idefics2VisionTransformer(parts.vision)
        self.vpm.embeddings = navit_embeddings_class()(parts.vision)
        self.resampler = Resampler(parts.query_num, hidden, max(1, hidden // 128), parts.vision.hidden_size)
        self.apm = WhisperEncoder(parts.audio)
        self.audio_projection_layer = AudioProjection(parts.audio.encoder_ffn_dim // 4, hidden)
        self.audio_avg_pooler = nn.AvgPool1d(parts.audio_pool_step, stride=parts.audio_pool_step)

    # -- images ----------------------------------------------------------------------------------
    def slice_embeddings(self, slices: list[torch.Tensor]) -> torch.Tensor:
        """(N, query_num, hidden) for N normalised slices (3, 14*h, 14*w), in `vision_batch_size` chunks."""
        out = []
        step = self.parts.vision_batch_size
        for start in range(0, len(slices), step):
            out.append(self._slice_batch(slices[start : start + step]))
        return torch.cat(out)

    def _slice_batch(self, slices: list[torch.Tensor]) -> torch.Tensor:
        patch = self.parts.vision.patch_size
        grids = torch.tensor([[s.shape[1] // patch, s.shape[2] // patch] for s in slices])
        rows, cols = int(grids[:, 0].max()), int(grids[:, 1].max())
        param = self.resampler.query
        pixels = torch.zeros(len(slices), 3, rows * patch, cols * patch, dtype=param.dtype, device=param.device)
        mask = torch.zeros(len(slices), rows, cols, dtype=torch.bool, device=param.device)
        for i, s in enumerate(slices):  # top-left aligned; the mask hides the rest
            pixels[i, :, : s.shape[1], : s.shape[2]] = s.to(pixels)
            mask[i, : grids[i, 0], : grids[i, 1]] = True
        states = self.vpm(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state  # (B, rows*cols, D)
        # the resampler takes each slice's patches row-major first, then padding
        packed = torch.zeros(len(slices), int((grids[:, 0] * grids[:, 1]).max()), states.shape[-1], dtype=states.dtype,
                             device=states.device)
        for i in range(len(slices)):
            real = states[i][mask[i].reshape(-1)]
            packed[i, : real.shape[0]] = real
        return self.resampler(packed, grids)

    # -- audio -----------------------------------------------------------------------------------
    def audio_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) for one clip's log-mel features (mel bins, frames) of at most 30 s.

        Whisper attends in blocks of `audio_chunk_length` seconds, each frame seeing its own block and every
        earlier one (MiniCPM-o's streaming-ready mask); then projection and average pooling.
        """
        apm = self.apm
        x = features[None].to(dtype=apm.conv1.weight.dtype, device=apm.conv1.weight.device)
        x = nn.functional.gelu(apm.conv1(x))
        x = nn.functional.gelu(apm.conv2(x)).permute(0, 2, 1)
        length = x.shape[1]
        if length > apm.embed_positions.weight.shape[0]:
            raise ValueError(f"an audio piece of {length} Whisper frames exceeds the encoder's 30 s")
        hidden = x + apm.embed_positions.weight[:length]
        mask = None
        if self.parts.audio_chunk_length > 0:
            block = int(self.parts.audio_chunk_length * 50)  # Whisper encoder frames per second: 50
            index = torch.arange(length, device=x.device)
            visible = index[None, :] < ((index[:, None] // block) + 1) * block
            mask = torch.zeros(length, length, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~visible, torch.finfo(x.dtype).min)[None, None]
        for layer in apm.layers:
            hidden = layer(hidden, mask)
        hidden = apm.layer_norm(hidden)
        embeds = self.audio_projection_layer(hidden)
        embeds = self.audio_avg_pooler(embeds.transpose(1, 2)).transpose(1, 2)[0]
        step = self.parts.audio_pool_step
        return embeds[: (length - step) // step + 1]

    # -- the language model ----------------------------------------------------------------------
    def input_embeddings(self, input_ids: torch.Tensor, image_rows: list, audio_rows: list) -> torch.Tensor:
        """Token embeddings with each row's placeholder positions replaced by image / audio embeddings.

        image_rows[b] / audio_rows[b]: (positions LongTensor, embeddings (n, hidden)) or None for row b.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        for b, row in enumerate(image_rows):
            if row is not None:
                embeds[b, row[0]] = row[1].to(embeds)
        for b, row in enumerate(audio_rows):
            if row is not None:
                embeds[b, row[0]] = row[1].to(embeds)
        return embeds
