"""Train the shapes MLLM from scratch: the real Qwen2.5-VL architecture, small, on this world only.

Losses: next-token prediction on the answers (captioning in English and German, translation, questions,
edits) + a contrastive loss that pulls together the mean hidden states (middle and last layer) of the
first user turn for the image, English and German views of the same scene (and of "image + edit
instruction" with the edited scene) + optionally a token-level term (`token_alignment`) that puts every
German and image token state near some English token state of the same scene + optionally a transport
term (`image_transport`) that makes the image (and image + edit) token states, as a set, match the states
of the full English caption one to one + optionally an object-level term (`object_targets`) that pulls
each image token's states onto the caption word its cell stands for. Held-out colour+shape pairs never
appear, edits included.

python -m x2i_shapes_lab.train_mllm --out DIR [--steps N]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .encoder_inputs import image_patches
from .schedule import warmup_cosine
from .object_targets import object_assignment, object_regression
from .vision_shapes import vision_shape_loss
from .mllm_tasks import ASK_DE, ASK_EN, QUESTIONS, Example, edit_instruction, scene_examples, word_examples
from .world import SHAPES, COLOURS, BACKGROUNDS, DE_COLOUR, DE_SHAPE, DE_BG, DE_POS, render, sample_scene

PAD, SPECIAL = "<|endoftext|>", ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                                  "<|image_pad|>", "<|video_pad|>")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
IMAGE_SIDE = 64


def mllm_words() -> list[str]:
    """Every word of captions, tasks, answers and edits, both languages."""
    from .text import grammar_words

    extra = {"user", "assistant", "system", "make", "it", "move", "to", "the", "mach", "es", "einen", "ein",
             "daraus", "verschiebe", "nach", "den", "hintergrund", "translate", "into", "english", "german",
             "übersetze", "ins", "deutsche", "englische", ",", ".", "?", ":", "!"}
    for t in ASK_EN + ASK_DE + [q for pair in QUESTIONS.values() for q in pair]:
        extra.update(t.split())
    extra.update(SHAPES, COLOURS, BACKGROUNDS, DE_COLOUR.values(), DE_BG.values(), ["klein", "groß"])
    extra.update(w.lower() for n, _ in DE_SHAPE.values() for w in [n])
    extra.update(w.lower() for ps in DE_POS.values() for p in ps for w in p.split())
    return grammar_words(("en", "de"), extra=sorted(extra))


def build_tokenizer():
    """Word-level, lower-casing, punctuation-splitting tokenizer with Qwen's special tokens and a chat template."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([PAD, "[UNK]"] + mllm_words())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token="[UNK]", eos_token="<|im_end|>",
                                   model_max_length=512, padding_side="right")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer):
    """Qwen2_5_VLForConditionalGeneration: text 4 layers x 128, vision 2 layers x 64 with 8-pixel patches."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD, *SPECIAL)}
    text = dict(
        vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=ids[PAD], eos_token_id=ids["<|im_end|>"], pad_token_id=ids[PAD],
    )
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=8, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=128, window_size=64, fullatt_block_indexes=[1],
                  tokens_per_second=2)
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_image_processor():
    """Qwen's PIL image processor with 8-pixel patches: a 64x64 image = 8x8 patches = 16 tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=IMAGE_SIDE * IMAGE_SIDE, patch_size=8,
                                    temporal_patch_size=2, merge_size=2)


def wrap(model, tokenizer, image_processor):
    """The project's Qwen25VLEncoder around the model being trained (its template and image path)."""
    from x2i_plugins.encoders.qwen25vl.encoder import Qwen25VLEncoder

    enc = Qwen25VLEncoder(model.model, tokenizer, image_processor, CHAT_TEMPLATE,
                          max_pixels=IMAGE_SIDE * IMAGE_SIDE, min_pixels=32 * 32)
    model.train().requires_grad_(True)  # the wrapper froze it; we are training
    return enc


def make_batch(rng: random.Random, n_scenes: int, edit_prob: float = 0.4, n_words: int = 0):
    """Examples for n scenes (+ the scenes their edits produce) and n_words dictionary pairs."""
    scenes_, examples = [], []
    for _ in range(n_scenes):
        scenes_.append(sample_scene(rng, split="train"))
    k = len(scenes_)
    for g in range(k):
        sc = scenes_[g]
        edit = None
        if len(sc.shapes) == 1 and rng.random() < edit_prob:
            for _ in range(10):
                text, edited = edit_instruction(sc, rng, rng.choice(["en", "de"]))
                if not edited.is_held_out():
                    break
            else:
                edited = None
            if edited is not None:
                scenes_.append(edited)
                edit = (text, edited)
        examples += scene_examples(sc, g, rng, len(scenes_) - 1 if edit else None, edit)
    for g in range(k, len(scenes_)):
        examples += scene_examples(scenes_[g], g, rng)
    return examples + (word_examples(rng, n_words, len(scenes_)) if n_words else [])


def encode_examples(enc, examples):
    """input_ids, attention mask, labels, first-turn mask, image tensors, for a list of Examples."""
    from x2i_core import MultimodalPrompt, expand_placeholders
    from x2i_plugins.encoders.qwen25vl.encoder import IMAGE_TOKEN

    texts, rows, grids = [], [], []
    for ex in examples:
        prompt = MultimodalPrompt.build(ex.text or None, images=[render(ex.image)] if ex.image else [])
        first = enc.render(prompt)
        counts = []
        if ex.image is not None:
            r, g = image_patches(enc, render(ex.image))
            rows.append(r)
            grids.append(g)
            counts.append(math.prod(g) // 4)
        first = expand_placeholders(first, IMAGE_TOKEN, counts)
        texts.append(first + f"<|im_start|>user\n{ex.task}<|im_end|>\n<|im_start|>assistant\n{ex.answer}<|im_end|>")
    tok = enc.tokenizer
    batch = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assistant = tok.convert_tokens_to_ids("assistant")
    labels = torch.full_like(ids, -100)
    first_turn = torch.zeros_like(ids, dtype=torch.bool)
    for i in range(len(texts)):
        row = ids[i].tolist()
        end1 = row.index(im_end)
        first_turn[i, : end1 + 1] = True
        a = max(j for j, t in enumerate(row) if t == assistant) + 1
        labels[i, a: int(mask[i].sum())] = ids[i, a: int(mask[i].sum())]
    import numpy as np

    inputs = {"input_ids": ids, "attention_mask": mask,
              "mm_token_type_ids": (ids == enc.image_token_id).int()}
    if rows:
        inputs["pixel_values"] = torch.from_numpy(np.concatenate(rows))
        inputs["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
    return inputs, labels, first_turn


def contrastive(vectors: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised InfoNCE: each view against all others; positives = other views of the same scene."""
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.T / temperature
    eye = torch.eye(len(v), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e4)
    pos = (groups[:, None] == groups[None, :]) & ~eye
    has = pos.any(1)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob * pos).sum(1)[has].div(pos.sum(1)[has]).mean()


def first_turn_means(hidden_states, first_turn, layers):
    """Mean hidden state over the first user turn, for each layer index in `layers`, concatenated."""
    w = first_turn.unsqueeze(-1).float()
    return [(hidden_states[l] * w).sum(1) / w.sum(1) for l in layers]


def token_alignment(hidden_states, first_turn, examples, views=("de", "image")) -> torch.Tensor:
    """Chamfer distance, at every layer, between the first-turn token states of a scene's German (or image)
    view and its English view, the English side detached.

    Why: the aligner is trained on English token states only and the teacher's joint attention reads text
    tokens as a set (FLUX gives them no positions), so a German or image prompt transfers when each of its
    token states lies near some English token state (and every English token has a counterpart). Matching
    only the mean states (the contrastive loss) leaves the individual tokens far apart. Squared distances
    are divided by the English states' mean squared norm so that every layer counts alike.
    """
    index: dict[int, dict[str, int]] = {}
    for i, ex in enumerate(examples):
        index.setdefault(ex.group, {})[ex.view] = i
    states = torch.stack(hidden_states)  # (layers, batch, seq, hidden): all layers in one cdist per pair
    terms = []
    for by_view in index.values():
        if "en" not in by_view:
            continue
        b_i = by_view["en"]
        b = states[:, b_i, first_turn[b_i]].detach().float()
        scale = b.pow(2).sum(-1).mean(-1).clamp_min(1e-6)[:, None, None]  # per layer
        for view in views:
            if view in by_view:
                a_i = by_view[view]
                d = torch.cdist(states[:, a_i, first_turn[a_i]].float(), b).pow(2) / scale
                terms.append(d.min(2).values.mean(1) + d.min(1).values.mean(1))  # (layers,)
    return torch.cat(terms).mean() if terms else states.new_zeros(())


def transport_plan(cost: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, eps: float = 0.05,
                   max_iters: int = 1000, tol: float = 1e-3) -> torch.Tensor:
    """Entropic optimal transport (log-domain Sinkhorn): cost (..., n, m), log masses log_a (..., n) and
    log_b (..., m) (padding: a very negative log mass) -> plan (..., n, m) with those marginals (rows to
    `tol`, columns exactly). Runs to convergence at each of eps 1, 0.5, 0.25, 0.1 above `eps`, then at `eps`,
    each stage starting from the last (eps scaling). Why: at eps 0.05, Sinkhorn from zero took about 4x as
    long on a real training batch (1.27 s vs 0.34 s), and cut off after 60 iterations it left plans far from
    the marginals, close to nearest-neighbour, i.e. the Chamfer match."""
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for e in [x for x in (1.0, 0.5, 0.25, 0.1) if x > eps] + [eps]:
        for it in range(max_iters):
            f = e * (log_a - torch.logsumexp((g[..., None, :] - cost) / e, dim=-1))
            g = e * (log_b - torch.logsumexp((f[..., :, None] - cost) / e, dim=-2))
            if it % 10 == 9:  # columns are exact after the g step; check the rows
                rows = torch.exp((f[..., :, None] + g[..., None, :] - cost) / e).sum(-1)
                if (rows - log_a.exp()).abs().max() < tol:
                    break
    return torch.exp((f[..., :, None] + g[..., None, :] - cost) / eps)


def uniform_log_mass(mask: torch.Tensor) -> torch.Tensor:
    """Log of uniform masses over the True entries of mask (..., n); -1e4 (no mass) on padding."""
    return torch.where(mask, -mask.sum(-1, keepdim=True).float().log(), torch.full(mask.shape, -1e4, device=mask.device))


def image_transport(hidden_states, first_turn, targets: dict[int, torch.Tensor]) -> torch.Tensor:
    """Optimal-transport cost, at every layer, between the first-turn token states of each image (or image +
    edit) example and `targets[i]`, the (layers, tokens, hidden) states of the full English caption of the
    scene it means (computed without gradient).

    Why not the Chamfer term alone: it is zero when every image token sits on SOME English token, and the
    trained MLLM met it by putting most image tokens on "a", "on" and "background" (`x2i shapes probe`):
    no token stood for the shape or the position, and several "a"-like tokens read to the teacher like two
    objects. Transport with uniform masses matches the sets one to one (a word used once in the caption
    can absorb only its share of image tokens), which is how FLUX's joint attention sees text tokens: as a
    set, without positions. The plan is computed without gradient; the cost carries it. Squared distances
    are divided by the English states' mean squared norm so that every layer counts alike. All examples
    and layers go through Sinkhorn at once, padded.
    """
    states = torch.stack(hidden_states)  # (layers, batch, seq, hidden)
    if not targets:
        return states.new_zeros(())
    rows = [states[:, i, first_turn[i]].float() for i in targets]  # (layers, n_i, hidden)
    cols = [t.float() for t in targets.values()]  # (layers, m_i, hidden)
    n, m = max(r.shape[1] for r in rows), max(c.shape[1] for c in cols)
    a = torch.stack([F.pad(r, (0, 0, 0, n - r.shape[1])) for r in rows])  # (E, layers, n, hidden)
    b = torch.stack([F.pad(c, (0, 0, 0, m - c.shape[1])) for c in cols])
    mask_a = torch.stack([torch.arange(n, device=a.device) < r.shape[1] for r in rows])[:, None].expand(-1, a.shape[1], -1)
    mask_b = torch.stack([torch.arange(m, device=b.device) < c.shape[1] for c in cols])[:, None].expand(-1, b.shape[1], -1)
    scale = (b.pow(2).sum(-1) * mask_b).sum(-1) / mask_b.sum(-1)  # (E, layers)
    cost = torch.cdist(a, b).pow(2) / scale.clamp_min(1e-6)[..., None, None]
    cost = cost * (mask_a[..., :, None] & mask_b[..., None, :])
    with torch.no_grad():
        plan = transport_plan(cost, uniform_log_mass(mask_a), uniform_log_mass(mask_b))
    return (plan * cost).sum((-2, -1)).mean()


def full_caption_states(model, enc, examples, views=("image", "edit")):
    """For each example of `views`: the first-turn states (layers, tokens, hidden) of the full English
    caption of the scene it means, from the model being trained, without gradient; and those tokens."""
    from .world import caption

    which = [i for i, ex in enumerate(examples) if ex.view in views and ex.meaning is not None]
    if not which:
        return {}, {}
    texts = [Example(None, caption(examples[i].meaning, "en", full=True), "", "", 0, "en") for i in which]
    inputs, _, first_turn = encode_examples(enc, texts)
    with torch.no_grad():
        model.model.rope_deltas = None
        hs = model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True).hidden_states
    states = torch.stack(hs)
    ids = inputs["input_ids"]
    return ({i: states[:, k, first_turn[k]] for k, i in enumerate(which)},
            {i: enc.tokenizer.convert_ids_to_tokens(ids[k][first_turn[k]].tolist()) for k, i in enumerate(which)})


def save(model, tokenizer, image_processor, out):
    """Write the Qwen2.5-VL folder: config + safetensors, tokenizer (chat template inside), image processor."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)


def train(out: str, steps: int = 3000, n_scenes: int = 12, lr: float = 2e-3, seed: int = 0, threads: int = 1,
          contrastive_weight: float = 1.0, token_weight: float = 0.0, n_words: int = 0, init: str | None = None,
          max_minutes: float = 1e9, image_transport_weight: float = 0.0, object_weight: float = 0.0,
          object_cells: str = "first", object_words_once: bool = False, vision_shape_weight: float = 0.0,
          log=print) -> dict:
    """Train (from scratch, or continue `init`) and save; checkpoints every 250 steps."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0, c0 = time.time(), time.process_time()
    tokenizer = build_tokenizer()
    if init:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
        if model.config.text_config.vocab_size < len(tokenizer):
            raise ValueError(f"{init} was not trained with this world's tokenizer")
    else:
        model = build_model(tokenizer)
    image_processor = build_image_processor()
    enc = wrap(model, tokenizer, image_processor)
    n_layers = model.config.text_config.num_hidden_layers
    layers = (n_layers // 2, n_layers)  # hidden_states index: middle layer and after the final norm
    # the vision-shape head is only for training (not saved); its scenes come from their own generator so that
    # the main batches are the same with the term on or off
    shape_head = torch.nn.Linear(model.config.vision_config.out_hidden_size, 3)
    shape_rng = random.Random(seed + 1)
    params = list(model.parameters()) + (list(shape_head.parameters()) if vision_shape_weight else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, steps, (time.time() - t0) / 60, max_minutes, warm))
    rng = random.Random(seed)
    # views that need the full caption's states: with the object term on, image views take it and only edits
    # (whose image is not the scene they mean) take transport
    target_views = ("image",) if object_weight else ()
    if image_transport_weight:
        target_views += ("edit",) if object_weight else ("image", "edit")
    # with the transport or object term on, the image views leave the Chamfer term (both are stricter)
    chamfer_views = ("de",) if image_transport_weight or object_weight else ("de", "image")
    step = 0
    for step in range(steps):
        examples = make_batch(rng, n_scenes, n_words=n_words)
        # targets first: this forward pass resets rope_deltas like the training one below
        targets, caption_tokens = full_caption_states(model, enc, examples, target_views)
        inputs, labels, first_turn = encode_examples(enc, examples)
        image_tokens = lambda i: enc.tokenizer.convert_ids_to_tokens(inputs["input_ids"][i][first_turn[i]].tolist())
        assignments = {i: object_assignment(examples[i].image, image_tokens(i), caption_tokens[i], object_cells,
                                            object_words_once)
                       for i, ex in enumerate(examples) if object_weight and ex.view == "image"}
        model.model.rope_deltas = None
        out_ = model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        logits = out_.logits[:, :-1]
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        groups = torch.tensor([ex.group for ex in examples])
        con = sum(contrastive(v, groups) for v in first_turn_means(out_.hidden_states, first_turn, layers)) / len(layers)
        tok = token_alignment(out_.hidden_states, first_turn, examples, chamfer_views) if token_weight else torch.zeros(())
        transport_targets = {i: t for i, t in targets.items() if i not in assignments}
        ot = (image_transport(out_.hidden_states, first_turn, transport_targets) if image_transport_weight
              else torch.zeros(()))
        obj = (object_regression(out_.hidden_states, first_turn, assignments, targets) if object_weight
               else torch.zeros(()))
        shp = (vision_shape_loss(model, enc, shape_head, shape_rng, n_scenes) if vision_shape_weight
               else torch.zeros(()))
        loss = (lm + contrastive_weight * con + token_weight * tok + image_transport_weight * ot + object_weight * obj
                + vision_shape_weight * shp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            log(f"mllm step {step} lm {lm.item():.4f} contrastive {con.item():.4f} token {tok.item():.4f} "
                f"transport {ot.item():.4f} object {obj.item():.4f} vision-shape {shp.item():.4f} wall {time.time() - t0:.0f}s")
        if step % 250 == 249:
            save(model, tokenizer, image_processor, out)
        if (time.time() - t0) / 60 >= max_minutes:
            log(f"time budget reached at step {step}")
            break
    save(model, tokenizer, image_processor, out)
    stats = {"steps": step + 1, "scenes_per_step": n_scenes, "lr": lr, "threads": threads,
             "cpu_s": time.process_time() - c0, "wall_s": time.time() - t0, "final_lm": lm.item(),
             "final_contrastive": con.item(), "token_weight": token_weight, "final_token": tok.item(),
             "words_per_step": n_words, "image_transport_weight": image_transport_weight,
             "final_image_transport": ot.item(), "object_weight": object_weight, "final_object": obj.item()}
    if object_weight:
        stats.update(object_cells=object_cells, object_words_once=object_words_once)
    if vision_shape_weight:
        stats.update(vision_shape_weight=vision_shape_weight, final_vision_shape=shp.item())
    if init:
        previous = Path(init, "train_stats.json")
        stats["continued_from"] = json.loads(previous.read_text()) if previous.exists() else init
    Path(out, "train_stats.json").write_text(json.dumps(stats, indent=1))
    log(json.dumps(stats))
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--init", default=None)
    p.add_argument("--token-weight", type=float, default=0.0)
    p.add_argument("--words", type=int, default=0)
    p.add_argument("--image-transport-weight", type=float, default=0.0)
    p.add_argument("--object-weight", type=float, default=0.0)
    p.add_argument("--object-cells", choices=("first", "last"), default="first")
    p.add_argument("--object-words-once", action="store_true")
    p.add_argument("--vision-shape-weight", type=float, default=0.0)
    a = p.parse_args(argv)
    train(a.out, a.steps, a.scenes, a.lr, a.seed, a.threads, token_weight=a.token_weight, n_words=a.words, init=a.init,
          max_minutes=a.max_minutes, image_transport_weight=a.image_transport_weight, object_weight=a.object_weight,
          object_cells=a.object_cells, object_words_once=a.object_words_once,
          vision_shape_weight=a.vision_shape_weight)


if __name__ == "__main__":
    main()
