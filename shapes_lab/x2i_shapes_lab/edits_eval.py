"""Edit accuracy of the shapes student (MLLM + AlignNet) with optional LoRA / LightControl adapters.

Each edit: prompt = the source image + the instruction (as `x2i generate --image SRC "make it blue"`); the
LightControl branch reads the same source; seeds 0..n-1; scored by evaluate.score against the edited scene on every
attribute, so "all" = the asked attribute changed and every other one kept.
"""
from __future__ import annotations

import numpy as np
import torch

from .evaluate import score, summarise
from .world import render

ATTRS = {"colour", "shape", "size", "position", "background"}


def edit_cases(num: int, data: str | None):
    """(source image, instruction, target scene) triples: the held-out set, or a folder's."""
    from PIL import Image

    from .edits import heldout_edits, read_folder_scenes

    if data:
        return [(Image.open(p).convert("RGB"), text, target) for p, text, target in read_folder_scenes(data)[:num]]
    return [(render(src), text, target) for src, text, target in heldout_edits(num)]


def run_edit_eval(num: int, *, lora=None, lightcontrol=None, lightcontrol_scale=1.0, data=None, steps=None,
                  true_cfg=None, batch: int = 25) -> dict:
    from x2i_core import GenerationRequest, MultimodalPrompt, load_component

    from .benchmark import load_world, student_fn

    backbone, encoder, aligner = load_world()
    adapters = []
    if lora:
        adapters.append(load_component("adapter", "lora", lora))
    if lightcontrol:
        adapters.append(load_component("adapter", "lightcontrol", lightcontrol, scale=lightcontrol_scale))
    for adapter in adapters:
        adapter.apply(backbone)
    fn = student_fn(encoder, aligner)
    cfg = backbone.default_true_cfg if true_cfg is None else true_cfg
    negative = fn([""]) if cfg > 1 else None
    steps = steps or backbone.default_steps
    cases = edit_cases(num, data)
    results = []
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        prompts = [MultimodalPrompt.build(text, images=[src]) for src, text, _ in chunk]
        request = GenerationRequest(prompt=prompts[0], inputs={"lightcontrol": [src for src, _, _ in chunk]})
        guides = [g for g in (a.guide(request) for a in adapters) if g is not None]
        gens = [torch.Generator("cpu").manual_seed(start + j) for j in range(len(chunk))]
        with torch.no_grad():
            images = backbone.generate(fn(prompts), height=64, width=64, num_inference_steps=steps,
                                       guidance_scale=backbone.default_guidance, generator=gens, negative=negative,
                                       true_cfg_scale=cfg, request=request, guides=guides)
        results += [score(np.asarray(im), target, ATTRS) for im, (_, _, target) in zip(images, chunk)]
    summary = summarise(results)
    return {"n": len(results), **{k: round(v, 4) for k, v in summary.items()},
            "adapters": [a.describe() for a in adapters], "steps": steps, "true_cfg": cfg}
