"""`x2i train-lightcontrol` as a task of the one training loop (x2i_core.training): the LightControl branch is the
trained module; the transformer, the MLLM, the AlignNet and the VAE stay frozen.

One step, for a batch of (source image, instruction, target) examples (flow matching on the TARGET):
  conditioning = AlignNet(MLLM(source image + instruction))    the prompt `x2i generate --image SRC "..."` builds
  x0 = packed VAE latents of the target; noise ~ N(0, 1); sigma from FLUX's shifted schedule at this size
  x_t = (1 - sigma) x0 + sigma noise;   velocity target = noise - x0
  residuals = branch(VAE latents of the SOURCE)                 (the reference feeds the target here: a leak)
  loss = MSE(transformer(x_t, sigma, conditioning, controlnet_block_samples=residuals), noise - x0)
With probability --drop-instruction the prompt is the empty one (what true CFG's negative branch gets), so the
branch also learns to carry the source alone.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .lightcontrol import LightControlNet, encode_lightcontrol_source
from .outputs import save_pretrained
from .training.lightcontrol_config import LightControlConfig, pick_models
from .training.edit_data import IndexStream, read_edit_folder
from .training.loop import StepLoss, TrainingTask, run_training

RECORD_FILE = "x2i_lightcontrol.json"


def pixels_of(paths, size: tuple[int, int]) -> torch.Tensor:
    """Images as (B, 3, H, W) in [-1, 1] at `size` (width, height)."""
    from .request import open_image

    rows = []
    for path in paths:
        image = open_image(path, "--data").convert("RGB")
        if image.size != tuple(size):
            image = image.resize(tuple(size), resample=3)  # bicubic, as diffusers' VaeImageProcessor
        rows.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(rows)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 2R, 2C') -> (B, R*C', 4C): the Flux token layout (one token per 2x2 latent patch)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def token_ids(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """(rows*cols, 3) rotary ids (0, row, col) of the image tokens."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1], ids[..., 2] = torch.arange(rows)[:, None], torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


class LightControlTask(TrainingTask):
    """The branch is trained; examples come from an edit folder (x2i_core.training.edit_data)."""

    label = "lightcontrol"
    weights_dir = "lightcontrol"

    def __init__(self, cfg: LightControlConfig):
        self.cfg = cfg

    def prepare(self, accelerator) -> None:
        self.cfg = pick_models(self.cfg)  # an unknown name fails here, before anything loads
        self.examples, self.size = read_edit_folder(self.cfg.data)  # bad data: one line, before any model loads
        self.is_main = accelerator.is_main_process

    def stream(self, rank: int, world: int):
        return IndexStream(len(self.examples), self.cfg.seed, rank, world)

    def check_resume(self, state: dict, accelerator) -> list[str]:
        old = state.get("config", {})
        for key in ("encoder", "backbone", "aligner", "hidden_channels"):
            if old.get(key) != getattr(self.cfg, key):
                raise InputError(f"the checkpoint was trained with --{key.replace('_', '-')} {old.get(key)}, not "
                                 f"{getattr(self.cfg, key)}: resume with the same models, or choose another -o")
        return [f"--data changed: {old.get('data')} -> {self.cfg.data}"] if old.get("data") != self.cfg.data else []

    def build(self, device):
        from .generate import load_aligner
        from .plugins import load_component

        cfg = self.cfg
        self.encoder = load_component("encoder", cfg.encoder, cfg.encoder_path, device=device, dtype=cfg.dtype)
        self.backbone = load_component("backbone", cfg.backbone, cfg.backbone_path, device=device, dtype=cfg.dtype)
        self.aligner = load_aligner(cfg.aligner, device=device) if cfg.aligner else None
        if self.aligner is None:
            raise InputError("no AlignNet: pass --aligner (a name or a folder made by x2i align)")
        transformer = self.backbone.transformer.requires_grad_(False)
        self.backbone.vae.requires_grad_(False)
        width, height = self.size
        self.rows, self.cols = self.backbone.latent_grid(height, width)  # a size off the grid: one line
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        value = self.backbone.default_guidance if cfg.guidance is None else cfg.guidance
        self.guidance = float(value) if transformer.config.guidance_embeds else None
        latent = int(self.backbone.vae.config.latent_channels)
        self.device, self.dtype, self.cache = device, transformer.dtype, {}
        return LightControlNet.for_transformer(transformer.config, latent, cfg.widths()).to(device)

    @torch.no_grad()
    def _rows(self, examples, drop: list[bool]) -> list[tuple]:
        """Per example (prompt (S, D), mask (S,), pooled (P,), source latents, target latents), from the cache when
        --cache-inputs keeps them; the frozen models run only for the rest."""
        from .prompt import MultimodalPrompt

        keys = [("", e.inputs[0], e.target) if d else (e.instruction, e.inputs, e.target) for e, d in zip(examples, drop)]
        cache = self.cache if self.cfg.cache_inputs else {}
        todo = [k for k in dict.fromkeys(keys) if k not in cache]
        if todo:
            prompts = [MultimodalPrompt.build(text, images=list(images)) if text else MultimodalPrompt.build("")
                       for text, images, _ in todo]
            encoded = self.encoder.encode(prompts)
            cond = self.aligner(encoded.hidden_states, encoded.attention_mask)
            sources = self._latents([images if isinstance(images, str) else images[0] for _, images, _ in todo])
            targets = self._latents([target for _, _, target in todo])
            for j, key in enumerate(todo):
                mask = (cond.attention_mask[j].bool() if cond.attention_mask is not None
                        else torch.ones(cond.prompt_embeds.shape[1], dtype=torch.bool))
                cache[key] = (cond.prompt_embeds[j], mask.to(cond.prompt_embeds.device), cond.pooled_prompt_embeds[j],
                              sources[j], targets[j])
        return [cache[k] for k in keys]

    @torch.no_grad()
    def _latents(self, paths) -> torch.Tensor:
        vae = self.backbone.vae
        return encode_lightcontrol_source(vae, pixels_of(paths, self.size)).to(device=self.device, dtype=self.dtype)

    def step(self, model, batch, step: int, micro: int, rank: int) -> StepLoss:
        from .align.sampling import sample_timesteps, step_generator

        cfg, transformer = self.cfg, self.backbone.transformer
        examples = [self.examples[i] for i in batch]
        gen = step_generator(cfg.seed, step, micro, rank)
        coin = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        drop = [coin.random() < cfg.drop_instruction for _ in examples]
        rows = self._rows(examples, drop)
        length = max(r[0].shape[0] for r in rows)
        prompt = torch.zeros(len(rows), length, rows[0][0].shape[-1], device=self.device, dtype=self.dtype)
        text_mask = torch.zeros(len(rows), length, dtype=torch.bool, device=self.device)
        for j, row in enumerate(rows):  # padding goes last; the mask hides it wherever it was
            prompt[j, : row[0].shape[0]], text_mask[j, : row[1].shape[0]] = row[0], row[1]
        pooled = torch.stack([r[2] for r in rows]).to(device=self.device, dtype=self.dtype)
        source = torch.stack([r[3] for r in rows])
        x0 = pack(torch.stack([r[4] for r in rows]))
        noise = torch.randn(x0.shape, generator=gen).to(device=x0.device, dtype=x0.dtype)
        sigma = sample_timesteps("shifted", len(examples), gen, self.rows * self.cols).to(x0.device, x0.dtype)
        x_t = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        mask = None
        if not bool(text_mask.all()):  # keys: text tokens (padding hidden), then every image token
            image = torch.ones(len(rows), self.rows * self.cols, dtype=torch.bool, device=self.device)
            mask = torch.cat([text_mask, image], dim=1)[:, None, None, :]
        guidance = None if self.guidance is None else torch.full((len(examples),), self.guidance, device=x0.device)
        pred = transformer(
            hidden_states=x_t, timestep=sigma, guidance=guidance, pooled_projections=pooled,
            encoder_hidden_states=prompt, txt_ids=torch.zeros(prompt.shape[1], 3, device=x0.device, dtype=x0.dtype),
            img_ids=token_ids(self.rows, self.cols, x0.device, x0.dtype), controlnet_block_samples=model(source),
            joint_attention_kwargs=None if mask is None else {"attention_mask": mask}, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        return StepLoss(loss, {"mse": float(loss.detach())})

    def state(self) -> dict:
        return {"config": self.cfg.to_dict()}

    def save_final(self, module, output: Path, summary: dict) -> None:
        save_pretrained(module, output)
        record = {"encoder": self.cfg.encoder, "backbone": self.cfg.backbone, "aligner": self.cfg.aligner,
                  "size": list(self.size), "examples": len(self.examples), **summary, "config": self.cfg.to_dict()}
        (output / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))


def train_lightcontrol(cfg: LightControlConfig):
    """Train (or resume) a LightControl branch as `cfg` says; returns the loop's TrainResult."""
    cfg.validate()
    return run_training(cfg, LightControlTask(cfg))
