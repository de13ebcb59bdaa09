"""Measure the shapes MLLM's shared space: retrieval between image, English and German views of held-out
scenes from the hidden states Qwen25VLEncoder returns (mean over real tokens, per layer)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from x2i_core import MultimodalPrompt

from .world import caption, render, scenes

PROBE_SEED = 777


def pooled_states(encoder, prompts, batch: int = 50) -> torch.Tensor:
    """(N, C, H): masked mean of every layer's hidden states."""
    out = []
    for i in range(0, len(prompts), batch):
        enc = encoder.encode(prompts[i:i + batch])
        w = enc.attention_mask[:, None, :, None].float()
        out.append((enc.hidden_states.float() * w).sum(2) / w.sum(2))
    return torch.cat(out)


def retrieval(a: torch.Tensor, b: torch.Tensor, keys: list | None = None) -> float:
    """Top-1 accuracy of finding row i of b from row i of a by cosine similarity (a hit: the same scene, or
    one with the same key, i.e. identical attributes up to pixel jitter)."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    best = sim.argmax(1).tolist()
    keys = keys or list(range(len(a)))
    return sum(keys[j] == keys[i] for i, j in enumerate(best)) / len(a)


def scene_key(scene) -> tuple:
    """A scene's attributes without its pixel jitter."""
    return (scene.background, tuple((s.shape, s.colour, s.size, s.position) for s in scene.shapes))


def probe(encoder, n: int = 100, split: str = "heldout") -> dict:
    """Retrieval accuracies (chance = 1/n) at the last layer and the best layer, for each pair of views."""
    sc = scenes(PROBE_SEED, n, split=split, two_prob=0.0)
    views = {
        "image": [MultimodalPrompt.build(images=[render(s)]) for s in sc],
        "en": [caption(s, "en", full=True) for s in sc],
        "de": [caption(s, "de", full=True) for s in sc],
    }
    states = {k: pooled_states(encoder, v) for k, v in views.items()}
    keys = [scene_key(s) for s in sc]
    result = {"n": n, "split": split, "distinct_scenes": len(set(keys)), "chance": 1.0 / len(set(keys))}
    for a, b in (("image", "en"), ("en", "image"), ("image", "de"), ("en", "de"), ("de", "en")):
        per_layer = [retrieval(states[a][:, l], states[b][:, l], keys) for l in range(states[a].shape[1])]
        result[f"{a}->{b}"] = {"last": per_layer[-1], "best": max(per_layer), "best_layer": per_layer.index(max(per_layer))}
    return result


def task_accuracy(folder: str, n: int = 30, split: str = "heldout") -> dict:
    """Exact-match accuracy of greedy answers on held-out scenes: captioning (EN, DE) and translation (both ways)."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from x2i_core import expand_placeholders
    from x2i_plugins.encoders.qwen25vl.encoder import IMAGE_TOKEN

    from .encoder_inputs import image_patches
    from .train_mllm import build_image_processor, wrap

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = wrap(model, tok, build_image_processor())
    model.eval().requires_grad_(False)
    sc = scenes(PROBE_SEED + 1, n, split=split, two_prob=0.0)
    norm = lambda t: " ".join(t.lower().split())
    tasks = {
        "caption_en": [(MultimodalPrompt.build(images=[render(s)]), "describe it in english", caption(s, "en", full=True)) for s in sc],
        "caption_de": [(MultimodalPrompt.build(images=[render(s)]), "beschreibe es auf deutsch", caption(s, "de", full=True)) for s in sc],
        "en_to_de": [(MultimodalPrompt.from_text(caption(s, "en", full=True)), "beschreibe es auf deutsch", caption(s, "de", full=True)) for s in sc],
        "de_to_en": [(MultimodalPrompt.from_text(caption(s, "de", full=True)), "describe it in english", caption(s, "en", full=True)) for s in sc],
    }
    out = {}
    for name, items in tasks.items():
        hits = 0
        for prompt, task, want in items:
            first = enc.render(prompt)
            rows, grids, counts = [], [], []
            for im in prompt.images:
                r, g = image_patches(enc, im)
                rows.append(r), grids.append(g), counts.append(int(g[0] * g[1] * g[2]) // 4)
            text = (expand_placeholders(first, IMAGE_TOKEN, counts)
                    + f"<|im_start|>user\n{task}<|im_end|>\n<|im_start|>assistant\n")
            ids = tok(text, return_tensors="pt", add_special_tokens=False)
            kw = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                  "mm_token_type_ids": (ids["input_ids"] == enc.image_token_id).int()}
            if rows:
                import numpy as np

                kw["pixel_values"] = torch.from_numpy(np.concatenate(rows))
                kw["image_grid_thw"] = torch.tensor(grids)
            model.model.rope_deltas = None
            gen = model.generate(**kw, max_new_tokens=30, do_sample=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
            answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            hits += norm(answer) == norm(want)
        out[name] = hits / len(items)
    return out


def image_token_words(encoder, n: int = 50, split: str = "heldout", layer: int = -1) -> dict:
    """Which English word each image token is nearest to, on one-shape scenes: for every image token of the
    image prompt, the nearest token state (Euclidean, at `layer`) among the states of the scene's full
    English caption. Returns the share of image tokens nearest to a word that names an attribute (colour,
    shape, size, position, background colour) and, per attribute, the share of scenes in which some image
    token is nearest to that attribute's word. The teacher reads text tokens as a set, so an image prompt
    can only carry an attribute that some of its token states stand for."""
    sc = scenes(PROBE_SEED + 2, n, split=split, two_prob=0.0)
    tok = encoder.tokenizer
    image_id = encoder.image_token_id
    attr_hits = {"colour": 0, "shape": 0, "size": 0, "position": 0, "background": 0}
    content = total = 0
    for s in sc:
        shape = s.shapes[0]
        words = {"colour": {shape.colour}, "shape": {shape.shape}, "size": {shape.size},
                 "position": set(shape.position.split()), "background": {s.background}}
        prompts = [MultimodalPrompt.build(images=[render(s)]), caption(s, "en", full=True)]
        enc = encoder.encode(prompts)
        ids = encoder.prepare(prompts)["input_ids"]
        mask = enc.attention_mask.bool()
        image_rows = enc.hidden_states[0, layer][mask[0] & (ids[0] == image_id)].float()
        text = enc.hidden_states[1, layer][mask[1]].float()
        names = tok.convert_ids_to_tokens(ids[1][mask[1]].tolist())
        nearest = [names[j] for j in torch.cdist(image_rows, text).argmin(1).tolist()]
        every = set().union(*words.values())
        content += sum(w in every for w in nearest)
        total += len(nearest)
        for attr, ws in words.items():
            attr_hits[attr] += any(w in ws for w in nearest)
    return {"n": n, "layer": layer, "content_word_share": content / total,
            **{f"{a}_word_reached": v / n for a, v in attr_hits.items()}}


def _image_features(encoder, sc, batch: int = 50) -> torch.Tensor:
    """(N, C, 2H): per layer, the mean and the max over the real tokens of each scene's image prompt."""
    out = []
    for i in range(0, len(sc), batch):
        enc = encoder.encode([MultimodalPrompt.build(images=[render(s)]) for s in sc[i:i + batch]])
        w = enc.attention_mask[:, None, :, None].float()
        h = enc.hidden_states.float()
        out.append(torch.cat([(h * w).sum(2) / w.sum(2), h.masked_fill(w == 0, -1e4).max(2).values], -1))
    return torch.cat(out)


def shape_readout(encoder, n_fit: int = 600, n_test: int = 300, fit_colours=("red", "green", "orange"),
                  steps: int = 300) -> dict:
    """Whether the image states carry shape apart from colour: a linear classifier of the shape, fit per layer
    on one-shape training scenes of `fit_colours` (each seen with all three shapes, so colour tells nothing
    about shape there), tested on training-pair scenes of the other colours ("seen") and on held-out pairs.
    If "seen" is high and "heldout" near chance (33%), the model knows shape only together with colour, and
    a held-out pair's image has no shape for the aligner to transfer."""
    from .world import SHAPES

    def draw(seed, n, split, keep):
        return [s for s in scenes(seed, 4 * n, split=split, two_prob=0.0) if keep(s.shapes[0].colour)][:n]

    sets = {"fit": draw(PROBE_SEED + 3, n_fit, "train", lambda c: c in fit_colours),
            "seen": draw(PROBE_SEED + 4, n_test, "train", lambda c: c not in fit_colours),
            "heldout": draw(PROBE_SEED + 5, n_test, "heldout", lambda c: True)}
    x = {k: _image_features(encoder, v) for k, v in sets.items()}
    y = {k: torch.tensor([SHAPES.index(s.shapes[0].shape) for s in v]) for k, v in sets.items()}
    result = {"fit_colours": list(fit_colours), "chance": 1 / len(SHAPES), "seen": [], "heldout": []}
    torch.manual_seed(0)
    for layer in range(x["fit"].shape[1]):
        mean, std = x["fit"][:, layer].mean(0), x["fit"][:, layer].std(0) + 1e-5
        feats = {k: (v[:, layer] - mean) / std for k, v in x.items()}
        clf = torch.nn.Linear(feats["fit"].shape[1], len(SHAPES))
        opt = torch.optim.Adam(clf.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(steps):
            loss = F.cross_entropy(clf(feats["fit"]), y["fit"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for k in ("seen", "heldout"):
                result[k].append(round((clf(feats[k]).argmax(1) == y[k]).float().mean().item(), 3))
    return result
