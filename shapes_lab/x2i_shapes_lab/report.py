"""`x2i shapes report`: measure everything the shapes world claims and write docs/shapes_world.md + a PNG grid.

Every number in the report comes from this function's own runs on the shipped weights.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import ABLATIONS_DIR, DOCS_DIR, LOGS_DIR, shipped_folder
from .benchmark import load_world, prompts_and_targets, run_set, student_fn, teacher_fn
from .evaluate import format_summary, score, summarise
from .world import HELD_OUT, render

ABLATIONS = {  # folder under ABLATIONS_DIR -> (fusion as the table names it, loss); all 1500 steps
    "conv-rkl": ("conv 5x5 (paper)", "rkl"), "last-rkl": ("last layer", "rkl"),
    "conv-mse": ("conv 5x5 (paper)", "mse"), "last-mse": ("last layer", "mse"),
    "scale-rkl": ("scale", "rkl"),
    "conv1x5-rkl": ("conv 1x5 (`--token-kernel 1`)", "rkl"),
    "scale-context-rkl": ("scale + 1 context layer", "rkl"),
}


def _stats(folder: Path) -> dict:
    """train_stats.json; a continued run's CPU time, wall time and steps include the runs it continued."""
    f = folder / "train_stats.json"
    if not f.is_file():
        return {}
    stats = json.loads(f.read_text())
    prev, steps = stats.get("continued_from"), [str(stats.get("steps", "?"))]
    while prev:
        stats["cpu_s"] = stats.get("cpu_s", 0) + prev.get("cpu_s", 0)
        stats["wall_s"] = stats.get("wall_s", 0) + prev.get("wall_s", 0)
        steps.insert(0, str(prev.get("steps", "?")))
        prev = prev.get("continued_from")
    stats["steps"] = " + ".join(steps)
    return stats


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _grid(rows: list[list[Image.Image]], header: list[str], path: Path, scale: int = 2) -> None:
    """A labelled grid of 64x64 images, upscaled."""
    cell, top = 64 * scale, 14
    grid = Image.new("RGB", (cell * len(header), top + cell * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, h in enumerate(header):
        draw.text((j * cell + 2, 1), h, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(im.resize((cell, cell), Image.NEAREST), (j * cell, top + i * cell))
    grid.save(path)


def write_report(num: int = 400, ablations: str | None = None, log=print) -> Path:
    """Run every measurement and write the markdown report and grid."""
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    ablations = Path(ablations) if ablations else ABLATIONS_DIR
    teacher_dir, mllm_dir = shipped_folder("backbone", "shapes"), shipped_folder("encoder", "shapes-mllm")
    alignnet_dir = shipped_folder("aligner", "shapes")
    backbone, encoder, aligner = load_world()
    steps = backbone.default_steps
    teach, stud = teacher_fn(backbone), student_fn(encoder, aligner)
    res, imgs = {}, {}
    for who, fn, sets in (("teacher", teach, ("heldout", "seen")),
                          ("student", stud, ("heldout", "seen", "german", "image", "image-seen", "edit"))):
        for name in sets:
            summary, images, targets = run_set(backbone, fn, name, num, steps=steps)
            res[(who, name)], imgs[(who, name)] = summary, images
            log(f"{who:7s} {name:8s} {format_summary(summary, num)}")
    from .reason import REASON_PROMPT, run_reason_set

    said = {}  # image prompts through --reason: the MLLM describes the scene, its answer's states draw it
    for name in ("image", "image-seen"):
        summary, said[name], _, imgs[("reason", name)], _ = run_reason_set(backbone, encoder, aligner, name, num,
                                                                           steps=steps)
        res[("student --reason", name)] = summary
        log(f"reason  {name:8s} {format_summary(summary, num)}; answers: {format_summary(said[name], num)}")
    truth = {}
    for name in ("heldout", "seen", "edit"):
        _, targets, checks = prompts_and_targets(name, num)
        truth[name] = summarise([score(np.asarray(render(t)), t, c) for t, c in zip(targets, checks)])
    from .data import scene_batch, tensor_to_arrays

    vae_rec = {}
    for split, seed in (("any", 555), ("heldout", 556)):  # the VAE is a ceiling on every generated figure
        sc_, x = scene_batch(seed, num, split=split)
        with torch.no_grad():
            rec = backbone.vae.decode(backbone.vae.encode(x).latent_dist.mode()).sample
        vae_rec[split] = summarise([score(a, s_) for a, s_ in zip(tensor_to_arrays(rec), sc_)])
    from .probe import probe

    probed = probe(encoder, num)
    log(json.dumps(probed))
    from .probe import task_accuracy

    tasks = {split: task_accuracy(str(mllm_dir), 20, split=split) for split in ("heldout", "train")}
    log(json.dumps(tasks))
    abl = {}
    from x2i_core import load_aligner

    for folder, (fusion, loss) in ABLATIONS.items():
        path = ablations / folder
        if not (path / "config.json").is_file():
            continue
        a = load_aligner(str(path), device="cpu", dtype=torch.float32)
        fn = student_fn(encoder, a)
        row = {}
        for name in ("heldout", "german", "image"):
            row[name] = run_set(backbone, fn, name, num, steps=steps)[0]
        abl[folder] = (fusion, loss, row)
        log(f"ablation {folder}: " + " ".join(f"{k}={v['all']:.1%}" for k, v in row.items()))

    # -- grid: 6 held-out scenes x (truth, teacher EN, student EN, student DE, student image, edit truth, edit)
    texts_en, sc, _ = prompts_and_targets("heldout", num)
    texts_de, _, _ = prompts_and_targets("german", num)
    edit_prompts, edit_targets, _ = prompts_and_targets("edit", num)
    image_scenes = prompts_and_targets("image", num)[1]
    rows = []
    for i in range(6):
        rows.append([render(sc[i]), imgs[("teacher", "heldout")][i], imgs[("student", "heldout")][i],
                     imgs[("student", "german")][i], render(image_scenes[i]), imgs[("student", "image")][i],
                     render(edit_targets[i]), imgs[("student", "edit")][i]])
    DOCS_DIR.mkdir(exist_ok=True)
    _grid(rows, ["truth", "teacher", "stud EN", "stud DE", "input", "img->img", "edit tgt", "edit"],
          DOCS_DIR / "shapes_grid.png")

    t_held, s_held = res[("teacher", "heldout")]["all"], res[("student", "heldout")]["all"]
    t_seen, s_seen = res[("teacher", "seen")]["all"], res[("student", "seen")]["all"]
    de = res[("student", "german")]["all"]
    img = res[("student", "image")]
    # colour and shape preserved together, recomputed per image
    def colour_and_shape(name):
        _, targets, _ = prompts_and_targets(name, num)
        return float(np.mean([score(np.asarray(im), t, {"colour", "shape"})["all"]
                              for im, t in zip(imgs[("student", name)], targets)]))

    img_cs, img_seen_cs = colour_and_shape("image"), colour_and_shape("image-seen")
    from .evaluate import find_shapes

    def agreement(student_imgs, teacher_imgs):
        """Per attribute: how often the student's image reads the same as the teacher's from the same noise."""
        keys = ("colour", "shape", "size", "position")
        hits = {k: [] for k in (*keys, "background", "all")}
        for si, ti in zip(student_imgs, teacher_imgs):
            (sb, sf), (tb, tf) = find_shapes(np.asarray(si)), find_shapes(np.asarray(ti))
            same_n = len(sf) == len(tf) and len(tf) > 0
            row = {k: same_n and all(getattr(a, k) == getattr(b, k) for a, b in zip(sf, tf)) for k in keys}
            row["background"] = sb == tb
            row["all"] = all(row.values())
            for k, v in row.items():
                hits[k].append(v)
        return {k: float(np.mean(v)) for k, v in hits.items()}

    agree = {
        "student EN vs teacher (held-out)": agreement(imgs[("student", "heldout")], imgs[("teacher", "heldout")]),
        "student EN vs teacher (seen)": agreement(imgs[("student", "seen")], imgs[("teacher", "seen")]),
        "student DE vs teacher EN (held-out)": agreement(imgs[("student", "german")], imgs[("teacher", "heldout")]),
    }
    log(json.dumps(agree))
    ratio = lambda a, b: a / b if b else float("nan")
    attrs = ("colour", "shape", "size", "position", "background")
    mean_attr = lambda r: float(np.mean([r[a] for a in attrs if a in r]))
    stats = {k: _stats(d) for k, d in (("vae", teacher_dir / "vae"), ("teacher", teacher_dir), ("mllm", mllm_dir),
                                        ("alignnet", alignnet_dir))}

    log_csv = LOGS_DIR / "alignnet" / "train_log.csv"  # kept out of the installed weights folder
    if "cpu_s" not in stats["alignnet"] and log_csv.is_file():  # x2i align logs seconds per step, not CPU time
        import csv

        rows = list(csv.DictReader(log_csv.open()))
        stats["alignnet"] = {"wall_s": sum(float(r["seconds"]) for r in rows), "steps": len(rows)}

    def cpu(k):
        s = stats[k]
        if "cpu_s" not in s and "wall_s" in s:
            return f"{s['wall_s'] / 60:.1f} min wall, {s['steps']} steps"
        return f"{s['cpu_s'] / 60:.1f} CPU-min ({s.get('wall_s', 0) / 60:.1f} min wall)" if "cpu_s" in s else "not recorded"

    def line(who, name):
        r = res[(who, name)]
        return f"| {who} | {name} | " + " | ".join(_pct(r.get(a, float('nan'))) if a in r else "-" for a in
                                                   ("colour", "shape", "size", "position", "background", "all")) + " |"

    targets_tbl = [
        ("teacher all-correct (held-out English) >= 90%", t_held >= 0.9, _pct(t_held)),
        ("student Performance Ratio (held-out English) >= 98%", ratio(s_held, t_held) >= 0.98, _pct(ratio(s_held, t_held))),
        ("German >= 90% of the teacher's English accuracy", ratio(de, t_held) >= 0.9, _pct(ratio(de, t_held))),
        ("image->image colour and shape preserved >= 80%", img_cs >= 0.8, _pct(img_cs)),
    ]
    layers = aligner.config.get("context_layers", 0)
    context = f" + {layers} context layer{'s' * (layers > 1)}" if layers else ""
    md = [
        "# The shapes world: a trained miniature X2I",
        "",
        "Generated by `x2i shapes report` (every figure below is measured by that command on the shipped weights;",
        f"{num} prompts per set, {steps} Euler steps, true classifier-free guidance "
        f"{getattr(backbone, 'default_true_cfg', 1.0):g} against each model's own empty prompt, noise seed i for prompt i "
        "in both teacher and student; "
        f"report run took {(time.time() - t0) / 60:.1f} min on CPU).",
        "",
        "## The world",
        "64x64 images of one or two flat shapes (circle, square, triangle), 6 colours (red, green, blue, yellow, purple,",
        "orange), 2 sizes, 5 positions, 3 backgrounds; captions from a grammar in English and German.",
        f"Held-out colour+shape pairs, never seen by any text-conditioned model (teacher transformer and text "
        f"encoders, MLLM, alignment; the text-free VAE sees images of all pairs, see the notes): "
        f"{', '.join(f'{c} {s}' for c, s in sorted(HELD_OUT))}. The `heldout` sets below use only those pairs.",
        "",
        "Evaluator on ground-truth renders (should be 100%): " +
        "; ".join(f"{k}: {format_summary(v, num)}" for k, v in truth.items()),
        "",
        "Evaluator on the VAE's reconstructions (a ceiling for every generated image): " +
        "; ".join(f"{k}: {format_summary(v, num)}" for k, v in vae_rec.items()),
        "",
        "## Models and training cost (2 shared CPU cores, 1 thread per job)",
        "| model | what | training |",
        "|---|---|---|",
        f"| VAE | AutoencoderKL 64x64x3 -> 16x16x16 | {cpu('vae')}, {stats['vae'].get('steps', '?')} steps |",
        f"| teacher | FluxTransformer2DModel (2 double + 2 single blocks, 4x32 heads) + T5EncoderModel + CLIPTextModel, "
        f"joint flow matching on English (EMA weights, shape tokens' loss x10 in the last run) | {cpu('teacher')}, {stats['teacher'].get('steps', '?')} steps |",
        f"| MLLM | Qwen2_5_VLForConditionalGeneration (4 layers x 128, vision patch 8) | {cpu('mllm')}, "
        f"{stats['mllm'].get('steps', '?')} steps |",
        f"| AlignNet | `x2i align` ({aligner.config.fusion} fusion{context}, RKL), English captions only | {cpu('alignnet')} |",
        "",
        "## MLLM shared space (retrieval from mean hidden states, held-out scenes, chance "
        f"{_pct(probed['chance'])})",
        "| query -> target | last layer | best layer |",
        "|---|---|---|",
        *[f"| {k} | {_pct(v['last'])} | {_pct(v['best'])} (layer {v['best_layer']}) |" for k, v in probed.items()
          if isinstance(v, dict)],
        "",
        "MLLM answers (greedy, exact match with the canonical caption, 20 scenes each):",
        "| task | held-out pairs | training pairs |",
        "|---|---|---|",
        *[f"| {k} | {_pct(tasks['heldout'][k])} | {_pct(tasks['train'][k])} |" for k in tasks["heldout"]],
        "",
        "## Teacher vs student",
        "| model | prompt set | colour | shape | size | position | background | all correct |",
        "|---|---|---|---|---|---|---|---|",
        line("teacher", "heldout"), line("teacher", "seen"), line("student", "heldout"), line("student", "seen"),
        line("student", "german"), line("student", "image"), line("student", "image-seen"),
        line("student --reason", "image"), line("student --reason", "image-seen"), line("student", "edit"),
        "",
        f"- Performance Ratio (student / teacher all-correct): held-out {_pct(ratio(s_held, t_held))}, "
        f"seen pairs {_pct(ratio(s_seen, t_seen))}. On the mean per-attribute accuracy (steadier when all-correct "
        f"is small): held-out {_pct(ratio(mean_attr(res[('student', 'heldout')]), mean_attr(res[('teacher', 'heldout')])))}, "
        f"seen {_pct(ratio(mean_attr(res[('student', 'seen')]), mean_attr(res[('teacher', 'seen')])))}; German vs teacher "
        f"English {_pct(ratio(mean_attr(res[('student', 'german')]), mean_attr(res[('teacher', 'heldout')])))}.",
        "- Chance per attribute: colour 16.7%, shape 33.3%, size 50%, position 20%, background 33.3%.",
        f"- German, zero-shot (no German text in alignment): {_pct(de)} all-correct = "
        f"{_pct(ratio(de, t_held))} of the teacher's English accuracy.",
        f"- Image -> image (the rendered scene as the only prompt): colour and shape preserved {_pct(img_cs)}; "
        f"all attributes {_pct(img['all'])}. The same on scenes of training pairs (`image-seen`, which tells a "
        f"failed transfer from a vision path that does not compose held-out pairs): colour and shape preserved "
        f"{_pct(img_seen_cs)}, all attributes {_pct(res[('student', 'image-seen')]['all'])}.",
        f"- Image prompts through `--reason` (the MLLM first answers \"{REASON_PROMPT}\" about the scene, greedy, "
        f"and its answer's hidden states condition the image, as `x2i generate --reason`; rows `student --reason`): "
        f"colour and shape preserved {_pct(res[('student --reason', 'image')]['colour_shape'])} held-out "
        f"(direct {_pct(img_cs)}), {_pct(res[('student --reason', 'image-seen')]['colour_shape'])} on `image-seen` "
        f"(direct {_pct(img_seen_cs)}). The answers' text names the scene's colour and shape in "
        f"{_pct(said['image']['colour_shape'])} of held-out scenes and {_pct(said['image-seen']['colour_shape'])} "
        f"of seen ones (exact full caption {_pct(said['image']['exact'])} / {_pct(said['image-seen']['exact'])}).",
        f"- Image + text editing (\"make it <colour>\", target = recoloured scene): all correct "
        f"{_pct(res[('student', 'edit')]['all'])}, colour {_pct(res[('student', 'edit')]['colour'])}.",
        "",
        "Agreement with the teacher (same prompt meaning, same noise: does the student's image read the same as "
        "the teacher's?). With a weak teacher this measures the distillation itself better than accuracy does:",
        "| comparison | colour | shape | size | position | background | all |",
        "|---|---|---|---|---|---|---|",
        *[f"| {k} | " + " | ".join(_pct(v[a]) for a in ("colour", "shape", "size", "position", "background", "all")) + " |"
          for k, v in agree.items()],
        "",
        "## Ablations (same steps and data; all-correct / mean attribute accuracy; PR vs the teacher on held-out English)",
        "| AlignNet | fusion | loss | held-out EN | PR (all / attr) | German | image->image |",
        "|---|---|---|---|---|---|---|",
        *[f"| {k} | {f} | {l} | {_pct(r['heldout']['all'])} / {_pct(mean_attr(r['heldout']))} | "
          f"{_pct(ratio(r['heldout']['all'], t_held))} / "
          f"{_pct(ratio(mean_attr(r['heldout']), mean_attr(res[('teacher', 'heldout')])))} | "
          f"{_pct(r['german']['all'])} / {_pct(mean_attr(r['german']))} | "
          f"{_pct(r['image']['all'])} / {_pct(mean_attr(r['image']))} |" for k, (f, l, r) in abl.items()],
        "",
        "## Targets",
        "| target | met | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else 'NO'} | {val} |" for name, ok, val in targets_tbl],
        "",
        "![grid](shapes_grid.png)",
        "",
        "Grid columns: ground truth of a held-out prompt, teacher (T5+CLIP), student English, student German,",
        "input image, student image->image, edit target, student edit (\"make it <colour>\").",
        "",
    ]
    out = DOCS_DIR / "shapes_world.md"
    notes = DOCS_DIR / "shapes_world_notes.md"
    if notes.is_file():  # hand-written discussion (what was tried, gaps), appended verbatim
        md += [notes.read_text()]
    out.write_text("\n".join(md))
    (DOCS_DIR / "shapes_world.json").write_text(json.dumps(
        {"results": {f"{a}/{b}": v for (a, b), v in res.items()}, "truth": truth, "vae_reconstruction": vae_rec, "probe": probed,
         "image_colour_shape": img_cs, "image_seen_colour_shape": img_seen_cs, "reason_answers": said, "agreement": agree, "mllm_tasks": tasks, "ablations": {k: v[2] for k, v in abl.items()}}, indent=1))
    log(f"wrote {out}")
    return out
