"""`x2i train-lora`: a LoRA for image+text->image on the frozen FLUX transformer, conditioned by the frozen encoder +
AlignNet (the X2I paper's LoRA section), on the shared training loop (x2i_core.training).

Each example is (input images, instruction, target image). The encoder reads the inputs and the instruction as one
prompt (MultimodalPrompt: images first, then the text), the AlignNet turns its hidden states into the transformer's
conditioning, and the loss is rectified-flow matching on the target:
  x0 = backbone.encode(target) (VAE mean, shifted and scaled, packed); noise ~ N(0, 1) from (seed, step, micro, rank);
  sigma ~ FLUX's shifted schedule at this size; x_t = (1 - sigma) x0 + sigma noise;
  loss = mean((predict(x_t, sigma) - (noise - x0))^2), guidance as at inference (the backbone's default).
peft LoRA layers on the transformer (to_q, to_k, to_v, to_out.0 of every block by default) are the trained weights,
optionally the AlignNet too (--train-aligner). The result is diffusers' FLUX LoRA file (pytorch_lora_weights
.safetensors, with its adapter metadata so lora_alpha survives): `x2i generate --lora DIR` and
`FluxPipeline.load_lora_weights(DIR)` both load it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .outputs import save_pretrained
from .training.edit_data import IndexStream, read_edit_folder
from .training.lora_config import LORA_SHAPE, LoraTrainConfig, pick_models
from .training.loop import StepLoss, TrainingTask, run_training

RECORD_FILE = "x2i_lora.json"
LORA_FILE = "pytorch_lora_weights.safetensors"


def image_tensor(path: str) -> torch.Tensor:
    """(3, H, W) in [-1, 1]."""
    from .media import load_image

    image = load_image(path)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


class LoraModules(torch.nn.Module):
    """The trained module: the transformer (frozen, with peft LoRA layers) and the AlignNet. Its forward is the
    conditioned velocity prediction, so DDP sees the gradients; checkpoints keep only the trainable tensors."""

    def __init__(self, backbone, aligner):
        super().__init__()
        self.transformer = backbone.transformer
        self.aligner = aligner
        self._backbone = [backbone]  # a list: not a submodule (the backbone is no nn.Module)

    def forward(self, hidden_states, attention_mask, latents, sigma, *, height: int, width: int, guidance: float):
        conditioning = self.aligner(hidden_states, attention_mask)
        return self._backbone[0].predict(latents, sigma, conditioning, height=height, width=width,
                                         guidance_scale=guidance)


class LoraTask(TrainingTask):
    """train-lora as a training.loop task."""

    label = "train-lora"
    weights_dir = "lora"

    def __init__(self, cfg: LoraTrainConfig):
        self.cfg = cfg

    def prepare(self, accelerator) -> None:
        self.cfg = pick_models(self.cfg)
        self.examples, (self.width, self.height) = read_edit_folder(self.cfg.data)

    def stream(self, rank: int, world: int):
        self.world = world
        return IndexStream(len(self.examples), self.cfg.seed, rank, world)

    def check_resume(self, state: dict, accelerator) -> list[str]:
        saved = state.get("config", {})
        shape = {k: saved[k] for k in LORA_SHAPE if k in saved and saved[k] != getattr(self.cfg, k)}
        if shape:
            given = ", ".join(f"--{k.replace('_', '-')} {getattr(self.cfg, k)}" for k in shape)
            raise InputError("cannot resume: the checkpoint's LoRA was built with "
                             + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in shape.items())
                             + f"; pass the same options (given: {given})")
        changed = [f"--{k.replace('_', '-')} {saved[k]} -> {getattr(self.cfg, k)}"
                   for k in ("lr", "warmup", "steps", "batch_size", "grad_accum", "seed", "guidance", "data")
                   if k in saved and saved[k] != getattr(self.cfg, k)]
        if state.get("world_size") not in (None, self.world):
            changed.append(f"processes {state['world_size']} -> {self.world}")
        if changed and accelerator.is_main_process:
            print(f"Warning: resuming with changed settings ({', '.join(changed)}); the run will not follow the "
                  f"interrupted one exactly (recorded in {RECORD_FILE})")
        return changed

    def build(self, device):
        from peft import LoraConfig

        from .generate import load_aligner
        from .plugins import load_component

        cfg = self.cfg
        self.encoder = load_component("encoder", cfg.encoder, cfg.encoder_path, device=device, dtype=cfg.dtype)
        self.backbone = load_component("backbone", cfg.backbone, cfg.backbone_path, device=device, dtype=cfg.dtype)
        multiple = int(self.backbone.size_multiple)  # every DiTBackbone declares it
        if self.width % multiple or self.height % multiple:
            raise InputError(f"--data: the targets are {self.width}x{self.height}; {self.backbone.identity} needs "
                             f"sides that are multiples of {multiple}: resize the data")
        self.backbone.transformer.requires_grad_(False)
        self.backbone.vae.requires_grad_(False)
        aligner = load_aligner(cfg.aligner, device=device).float()
        aligner.requires_grad_(cfg.train_aligner)
        self.lora_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha(), init_lora_weights=True,
                                      target_modules=cfg.targets())
        self.backbone.transformer.add_adapter(self.lora_config)
        if cfg.gradient_checkpointing:
            self.backbone.transformer.enable_gradient_checkpointing()
        self.guidance = float(self.backbone.default_guidance if cfg.guidance is None else cfg.guidance)
        self.device = device
        return LoraModules(self.backbone, aligner)

    def step(self, model, batch, step: int, micro: int, rank: int) -> StepLoss:
        from .align.sampling import sample_timesteps, step_generator
        from .prompt import MultimodalPrompt

        examples = [self.examples[i] for i in batch]
        prompts = [MultimodalPrompt.build(text=e.instruction, images=list(e.inputs)) for e in examples]
        with torch.no_grad():
            encoded = self.encoder.encode(prompts)
            clean = self.backbone.encode(torch.stack([image_tensor(e.target) for e in examples]))
        generator = step_generator(self.cfg.seed, step, micro, rank)  # CPU: identical draws on every device
        noise = torch.randn(clean.shape, generator=generator).to(device=clean.device, dtype=clean.dtype)
        sigma = sample_timesteps("shifted", len(examples), generator, image_seq_len=clean.shape[1])
        sigma = sigma.to(device=clean.device, dtype=clean.dtype)
        noisy = (1 - sigma[:, None, None]) * clean + sigma[:, None, None] * noise
        velocity = model(encoded.hidden_states, encoded.attention_mask, noisy, sigma, height=self.height,
                         width=self.width, guidance=self.guidance)
        loss = torch.nn.functional.mse_loss(velocity.float(), (noise - clean).float())
        return StepLoss(loss, {"flow": float(loss.detach())})

    def state(self) -> dict:
        return {"config": self.cfg.to_dict(), "encoder_identity": self.encoder.identity,
                "backbone_identity": self.backbone.identity}

    def save_final(self, module, output: Path, summary: dict) -> None:
        from diffusers import FluxPipeline
        from peft.utils import get_peft_model_state_dict

        from .outputs import follow_umask

        layers = get_peft_model_state_dict(module.transformer)
        FluxPipeline.save_lora_weights(str(output), transformer_lora_layers=layers, weight_name=LORA_FILE,
                                       transformer_lora_adapter_metadata=self.lora_config.to_dict())
        follow_umask([output / LORA_FILE])
        if self.cfg.train_aligner:
            save_pretrained(module.aligner, output / "aligner")
        record = {"encoder": self.cfg.encoder, "encoder_path": self.cfg.encoder_path,
                  "backbone": self.cfg.backbone, "backbone_path": self.cfg.backbone_path, "aligner": self.cfg.aligner,
                  "size": [self.width, self.height], "examples": len(self.examples), **summary,
                  "config": self.cfg.to_dict()}
        (output / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))


def train_lora(cfg: LoraTrainConfig):
    """Train (or resume) a LoRA as `cfg` says; returns the TrainResult (its output_dir holds the LoRA)."""
    cfg.validate()
    return run_training(cfg, LoraTask(cfg))
