"""Write the engine regression files: what today's paths (no adapter) produce, pinned before the sampling refactor.

    python3 tests/data/engine_regression/make.py      # rewrites the .npy/.png files next to this script

The cases (inputs and settings) live here and tests/test_engine_regression.py imports them, so the test runs
exactly what was pinned. Rewrite the files only on purpose: they are the "before" of a refactor.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
H = W = 32


def machine() -> dict[str, str]:
    """What float results depend on: the torch build and the CPU kernels it picks (bit-identity holds within one)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def conditioning(batch: int, length: int, seed: int, padded: int = 0):
    """Random prompt/pooled embeddings of the tiny Flux widths; `padded` trailing tokens masked out."""
    import torch

    from x2i_core.interfaces import Conditioning
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM

    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(batch, length, PROMPT_DIM, generator=g)
    pooled = torch.randn(batch, POOLED_DIM, generator=g)
    mask = None
    if padded:
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[:, length - padded:] = False
        prompt[:, length - padded:] = 50.0  # what padding holds must not matter once masked
    return Conditioning(prompt, pooled, mask)


def generators(*seeds):
    import torch

    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def flux_cases():
    """name -> (conditioning, denoise keyword arguments) for the tiny Flux backbone."""
    return {
        "plain": (conditioning(1, 6, 0), dict(height=H, width=W, num_inference_steps=3, guidance_scale=3.5,
                                              generator=generators(5))),
        "padded_mask": (conditioning(1, 7, 1, padded=3), dict(height=H, width=W, num_inference_steps=3,
                                                              guidance_scale=3.5, generator=generators(5))),
        "true_cfg": (conditioning(2, 6, 2), dict(height=H, width=W, num_inference_steps=3, guidance_scale=3.5,
                                                 generator=generators(0, 1), negative=conditioning(1, 4, 9, padded=1),
                                                 true_cfg_scale=4.0)),
        "seeds": (conditioning(1, 5, 3).repeat(3), dict(height=H, width=W + 8, num_inference_steps=2,
                                                        guidance_scale=2.0, generator=generators(7, 8, 9))),
    }


def tiny_flux_backbone(root: Path):
    from x2i_plugins.backbones.flux.backbone import FluxBackbone
    from x2i_plugins.backbones.flux.tiny import write_tiny_flux

    return FluxBackbone.from_pretrained(write_tiny_flux(root / "flux", seed=0, with_teacher=False), device="cpu")


def shapes_default_image():
    """`x2i generate "a red circle"` through the API with the default world and default settings."""
    from x2i_core.generate import X2IPipeline
    from x2i_core.plugins import get_registry

    world = get_registry().default_world()
    pipe = X2IPipeline.from_names(world.encoder, world.backbone, world.aligner, device="cpu")
    return pipe("a red circle")[0]


def main() -> None:
    import numpy as np
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        backbone = tiny_flux_backbone(Path(tmp))
        for name, (cond, kwargs) in flux_cases().items():
            latents = backbone.denoise(cond, **kwargs)
            np.save(HERE / f"{name}.npy", latents.to(torch.float32).numpy())
            image = backbone.decode(latents, kwargs["height"], kwargs["width"])[0]
            image.save(HERE / f"{name}.png")
    shapes_default_image().save(HERE / "shapes_default.png")
    (HERE / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    print("wrote", sorted(p.name for p in HERE.iterdir() if p.suffix in (".npy", ".png", ".json")), file=sys.stderr)


if __name__ == "__main__":
    main()
