"""A tiny X2I world around Qwen2.5-Omni for tests: a full tiny Omni checkpoint, a tiny Flux and an AlignNet that
fits both, plus media (a tone, an image, a video with a sound track)."""
from __future__ import annotations

import types

import numpy as np
import torch
from PIL import Image

from _media_files import write_tone, write_video_with_sound

SIZE = dict(width=32, height=32, steps=2)
SIZE_ARGS = ["--width", "32", "--height", "32", "--steps", "2"]


def build_world(root) -> types.SimpleNamespace:
    from x2i_core.alignnet import AlignNet
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
    from x2i_plugins.encoders.qwen25omni.tiny import write_tiny_qwen25omni

    omni = write_tiny_qwen25omni(root / "omni", seed=0)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AlignNet(num_layers=3, hidden_size=64, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
                 encoder="tiny-omni").save_pretrained(root / "align")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "a.png")
    return types.SimpleNamespace(
        root=root, omni=omni, flux=flux, align=str(root / "align"), image=str(root / "a.png"),
        tone=write_tone(root / "tone.wav", seconds=1.0, rate=16000, channels=1),
        sound_video=write_video_with_sound(root / "sound.mp4", seconds=2.0, fps=4),
    )


def model_args(world) -> list[str]:
    return ["--encoder", "qwen2.5-omni", "--encoder-path", world.omni, "--backbone", "flux", "--backbone-path",
            world.flux, "--aligner", world.align, "--device", "cpu"]


def pipeline(world):
    from x2i_core.generate import X2IPipeline

    return X2IPipeline.from_names("qwen2.5-omni", "flux", world.align, encoder_path=world.omni,
                                  backbone_path=world.flux, device="cpu")
