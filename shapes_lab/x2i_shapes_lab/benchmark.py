"""Generate from held-out prompts with the teacher (T5+CLIP) or the student (MLLM+AlignNet) and score them.

Prompt sets (all single-shape scenes, canonical full captions, fixed seeds):
  heldout  held-out colour+shape pairs, English       seen   training pairs, unseen scenes, English
  german   the held-out scenes, German (student only)  image  the rendered scene as the only input
  edit     rendered scene + "make it <colour>" (the target is the recoloured scene)
  image-seen  the scenes of `seen` (training pairs) as the only input: whether image prompts transfer at all,
              apart from whether the MLLM's vision composes held-out colour+shape pairs
"""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch

from .evaluate import score, summarise
from .world import COLOURS, Scene, caption, caption_checks, render, scenes

SETS = ("heldout", "seen", "german", "image", "edit", "image-seen")
EVAL_SEED = 20251


def eval_scenes(name: str, n: int) -> list[Scene]:
    """The scenes of a prompt set (the same for teacher and student)."""
    seen = name in ("seen", "image-seen")
    return scenes(EVAL_SEED + seen, n, split="train" if seen else "heldout", two_prob=0.0)


def prompts_and_targets(name: str, n: int):
    """(prompts, target scenes, attributes to check) of a set; prompts are str or MultimodalPrompt."""
    from x2i_core import MultimodalPrompt

    sc = eval_scenes(name, n)
    if name in ("heldout", "seen"):
        texts = [caption(s, "en", full=True) for s in sc]
        return texts, sc, [caption_checks(s, t) for s, t in zip(sc, texts)]
    if name == "german":
        texts = [caption(s, "de", full=True) for s in sc]
        return texts, sc, [caption_checks(s, t) for s, t in zip(sc, texts)]
    if name in ("image", "image-seen"):
        prompts = [MultimodalPrompt.build(images=[render(s)]) for s in sc]
        return prompts, sc, [{"colour", "shape", "size", "position", "background"}] * n
    rng = random.Random(EVAL_SEED)
    prompts, targets = [], []
    for s in sc:
        new = rng.choice([c for c in COLOURS if c != s.shapes[0].colour])
        prompts.append(MultimodalPrompt.build(f"make it {new}", images=[render(s)]))
        targets.append(replace(s, shapes=(replace(s.shapes[0], colour=new),)))
    return prompts, targets, [{"colour", "shape", "size", "position", "background"}] * n


def generate_batched(backbone, conditioning_fn, prompts, *, steps: int, seed: int, batch: int = 50):
    """PIL images, one per prompt; image i uses noise seed + i whoever conditions it. With the backbone's default
    true CFG > 1, both teacher and student guide away from their own encoding of the empty prompt."""
    true_cfg = getattr(backbone, "default_true_cfg", 1.0)
    negative = conditioning_fn([""]) if true_cfg > 1 else None
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        cond = conditioning_fn(chunk)
        gens = [torch.Generator("cpu").manual_seed(seed + i + j) for j in range(len(chunk))]
        images += backbone.generate(cond, height=64, width=64, num_inference_steps=steps,
                                    guidance_scale=backbone.default_guidance, generator=gens,
                                    negative=negative, true_cfg_scale=true_cfg)
    return images


def teacher_fn(backbone):
    """Texts -> Conditioning with the backbone's own T5 + CLIP."""
    teacher = backbone.load_teacher()
    return lambda texts: teacher.encode_text(list(texts))


def student_fn(encoder, aligner):
    """Prompts -> Conditioning with the MLLM + AlignNet."""
    def fn(prompts):
        with torch.no_grad():
            enc = encoder.encode(list(prompts))
            return aligner(enc.hidden_states, enc.attention_mask)
    return fn


def run_set(backbone, cond_fn, name: str, n: int, steps: int = 20, seed: int = 0):
    """(summary, images, targets) of one prompt set."""
    prompts, targets, checks = prompts_and_targets(name, n)
    images = generate_batched(backbone, cond_fn, prompts, steps=steps, seed=seed)
    results = [score(np.asarray(im), t, c) for im, t, c in zip(images, targets, checks)]
    return summarise(results), images, targets


def load_world(aligner_dir: str | None = None, encoder_dir: str | None = None, backbone_dir: str | None = None,
               student: bool = True):
    """(backbone, encoder, aligner) of the shipped world (or given folders)."""
    from x2i_core import load_aligner, load_component

    backbone = load_component("backbone", "shapes", backbone_dir, device="cpu", dtype=torch.float32)
    if not student:
        return backbone, None, None
    encoder = load_component("encoder", "shapes-mllm", encoder_dir, device="cpu", dtype=torch.float32)
    aligner = load_aligner(aligner_dir or "shapes", device="cpu", dtype=torch.float32)
    return backbone, encoder, aligner
