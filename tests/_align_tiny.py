"""Shared by the tests/test_align_*.py files: tiny real encoder and backbone folders, written once per session."""
from __future__ import annotations

from pathlib import Path

PROMPTS = [
    "a red circle", "a blue square on green grass", "two cats on a sofa", "一个红色的圆",
    "ein Hund im Schnee", "a yellow star above a tree", "an astronaut riding a horse", "a bowl of fruit",
    "un chat noir", "a small boat on a lake", "three green triangles", "a lighthouse at night",
]


def tiny_world(root: Path) -> dict[str, str]:
    """{'encoder', 'backbone', 'prompts'} paths under root (a Qwen2.5-VL folder, a Flux folder with CLIP+T5)."""
    root = Path(root)
    enc, flux, prompts = root / "qwen", root / "flux", root / "prompts.txt"
    if not (flux / "model_index.json").is_file():
        from x2i_plugins.backbones.flux.tiny import write_tiny_flux
        from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

        write_tiny_qwen25vl(enc, seed=0)
        write_tiny_flux(flux, seed=0, with_teacher=True)
        prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return {"encoder": str(enc), "backbone": str(flux), "prompts": str(prompts)}


def tiny_config(world: dict, out: Path, **overrides):
    """An AlignConfig that trains in well under a second per step on CPU."""
    from x2i_core.align import AlignConfig

    settings = dict(
        data=[world["prompts"]], output_dir=str(out), encoder=world["encoder"], backbone=world["backbone"],
        steps=8, batch_size=2, lr=1e-3, warmup=2, resolution=16, teacher_max_length=24,
        gradient_checkpointing=False, checkpoint_every=100, progress=False, device="cpu",
    )
    settings.update(overrides)
    return AlignConfig(**settings)


def one_thread():
    """Generator for an autouse fixture: tiny models run ~10x faster on one thread when cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
