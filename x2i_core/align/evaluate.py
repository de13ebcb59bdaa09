"""`x2i eval-align`: how close the student (encoder + AlignNet) comes to the teacher (T5 + CLIP) on held-out prompts.

For each prompt, teacher and student sample from the same noise latents with the same steps and guidance.
Metrics, stated plainly:
- latent MSE: mean squared difference of the final denoised latents (before the VAE), when the backbone
  exposes `denoise` (FluxBackbone does);
- pixel MSE and PSNR: on the decoded RGB images scaled to [0, 1] (PSNR = 10 log10(1 / MSE), in dB);
- distillation terms: the training loss (each term kind averaged over its blocks) at the training
  timestep setting, same noise, no grad.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..aligner_record import fill_models, read_record
from ..alignnet import AlignNet
from ..device import resolve as resolve_device
from ..errors import InputError
from ..limits import MAX_STEPS, MAX_TEXT_TOKENS, check_finite, check_image_size, check_memory, check_range, sampling_bytes
from ..outputs import check_output_dir
from .components import load_backbone, load_encoder, load_teacher, transformer_device
from .config import LOSSES, TIMESTEP_MODES, AlignConfig
from .data import PromptStream
from .hooks import term_kind
from .sampling import step_generator
from .trainer import distill_step


@dataclass
class EvalConfig:
    """Settings of `x2i eval-align`."""

    aligner: str = ""  # an AlignNet folder
    data: list[str] = field(default_factory=list)  # held-out prompts (the first num_prompts, in file order)
    # None: what the AlignNet records (`x2i align` writes it), else the paper's qwen2.5-vl-7b and flux-dev
    encoder: str | None = None
    backbone: str | None = None
    encoder_path: str | None = None
    backbone_path: str | None = None
    num_prompts: int = 8
    text_key: str = "text"
    steps: int | None = None  # sampling steps; None: the backbone's default
    resolution: int | None = None  # None: the AlignNet's training resolution, else the backbone's default size
    guidance: float | None = None
    seed: int = 0
    loss: str = "rkl"
    temperature: float = 3.0
    timesteps: str = "one"
    image_side_only: bool = False
    teacher_max_length: int | None = None
    teacher_cache: str | None = None
    save_images: str | None = None  # write teacher-<i>.png / student-<i>.png pairs here
    device: str | None = None
    dtype: str | None = None

    def validate(self) -> None:
        """Raise InputError for settings that cannot work, naming the option (before anything loads)."""
        check_finite({"--guidance": self.guidance, "--temperature": self.temperature})
        if self.loss not in LOSSES or self.timesteps not in TIMESTEP_MODES:
            raise InputError(f"--loss must be one of {', '.join(LOSSES)} and --timesteps one of "
                             f"{', '.join(TIMESTEP_MODES)}, got {self.loss!r} and {self.timesteps!r}")
        if self.temperature <= 0:
            raise InputError(f"the temperature must be positive, got {self.temperature:g}")
        if self.num_prompts < 1:
            raise InputError(f"--num-prompts must be at least 1, got {self.num_prompts}")
        check_range("--steps", self.steps, 1, MAX_STEPS)
        check_image_size(self.resolution, self.resolution, 1, width_option="--resolution", height_option="--resolution")
        check_range("--teacher-max-length", self.teacher_max_length, 1, MAX_TEXT_TOKENS, " tokens")

    def with_recorded_models(self) -> tuple["EvalConfig", str | None]:
        """Encoder, backbone and resolution not given taken from what the AlignNet records (the paper's models when
        it records none), and one note line when a given one differs from the record."""
        record = read_record(self.aligner)
        chosen, note = fill_models(record, {"encoder": self.encoder, "encoder_path": self.encoder_path,
                                            "backbone": self.backbone, "backbone_path": self.backbone_path})
        chosen["encoder"] = chosen["encoder"] or "qwen2.5-vl-7b"
        chosen["backbone"] = chosen["backbone"] or "flux-dev"
        return replace(self, **chosen, resolution=self.resolution or record.resolution), note


@dataclass
class EvalResult:
    """Averages over the prompts, and one row per prompt."""

    prompts: int
    latent_mse: float | None
    pixel_mse: float
    psnr: float
    loss: float
    terms: dict[str, float]
    per_prompt: list[dict] = field(default_factory=list)

    def table_rows(self) -> list[tuple[str, str]]:
        """(metric, value) rows for printing."""
        rows = [("prompts", str(self.prompts))]
        if self.latent_mse is not None:
            rows.append(("final latent MSE (teacher vs student)", f"{self.latent_mse:.6g}"))
        rows += [("pixel MSE, RGB in [0,1]", f"{self.pixel_mse:.6g}"), ("PSNR (dB)", f"{self.psnr:.3f}"),
                 ("distillation loss (sum of terms)", f"{self.loss:.6g}")]
        rows += [(f"  {kind} (mean over blocks)", f"{value:.6g}") for kind, value in self.terms.items()]
        return rows


def _pixels(image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype="float32") / 255.0)


def psnr(mse: float) -> float:
    """10 log10(1 / mse) for signals in [0, 1]; inf for identical images."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _sample(backbone, conditioning, latents, *, size, steps, guidance):
    """(final latents, PIL image) from the given starting latents."""
    final = backbone.denoise(conditioning, height=size, width=size, num_inference_steps=steps,
                             guidance_scale=guidance, latents=latents)
    return final.float().cpu(), backbone.decode(final, size, size)[0]


@torch.no_grad()
def evaluate_alignnet(cfg: EvalConfig, *, encoder=None, backbone=None, teacher=None, alignnet=None) -> EvalResult:
    """Run the comparison; already-loaded components may be passed in (tests compare two AlignNets this way)."""
    cfg.validate()
    cfg, _ = cfg.with_recorded_models()  # the CLI prints the note; here the record only fills what is missing
    out_dir = check_output_dir(cfg.save_images, "--save-images") if cfg.save_images else None  # before any loading
    data = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    prompts = PromptStream.from_specs(data, text_key=cfg.text_key).first(cfg.num_prompts)
    shared = AlignConfig(
        data=data, output_dir="-", encoder=cfg.encoder, backbone=cfg.backbone, encoder_path=cfg.encoder_path,
        backbone_path=cfg.backbone_path, loss=cfg.loss, temperature=cfg.temperature, timesteps=cfg.timesteps,
        image_side_only=cfg.image_side_only, teacher_max_length=cfg.teacher_max_length,
        teacher_cache=cfg.teacher_cache, seed=cfg.seed, device=cfg.device, dtype=cfg.dtype,
    )
    device, _ = resolve_device(cfg.device)
    # the AlignNet first: it is small, and a wrong path should fail before the big models load
    alignnet = alignnet or AlignNet.from_pretrained(cfg.aligner, torch_dtype=torch.float32).to(device).eval()
    encoder = encoder or load_encoder(shared, device)
    backbone = backbone or load_backbone(shared, device)
    teacher = teacher or load_teacher(shared, backbone)
    alignnet.check_fits(encoder, backbone)
    size = int(cfg.resolution or backbone.default_size)
    steps = int(cfg.steps or backbone.default_steps)
    guidance = float(backbone.default_guidance if cfg.guidance is None else cfg.guidance)
    shared.resolution = size
    backbone.check_size(size, size)
    # one prompt at a time, sampled twice, plus the no-grad distillation pass
    check_memory(sampling_bytes(backbone, 1, size, size, cfg.teacher_max_length or 512), transformer_device(backbone),
                 f"--resolution {size}", "lower --resolution")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    rows, term_sums = [], {}
    for i, text in enumerate(prompts):
        latents = backbone.noise_latents(1, size, size, step_generator(cfg.seed, i, 0, 0))
        teacher_cond = teacher.encode_text([text])
        encoded = encoder.encode([_prompt(text)])
        student_cond = alignnet(encoded.hidden_states, encoded.attention_mask)
        t_lat, t_img = _sample(backbone, teacher_cond, latents, size=size, steps=steps, guidance=guidance)
        s_lat, s_img = _sample(backbone, student_cond, latents, size=size, steps=steps, guidance=guidance)
        pixel_mse = float((_pixels(t_img) - _pixels(s_img)).pow(2).mean())
        row = {"prompt": text, "pixel_mse": pixel_mse, "psnr": psnr(pixel_mse)}
        if t_lat is not None:
            row["latent_mse"] = float((t_lat - s_lat).pow(2).mean())
        terms = distill_step([text], encoder=encoder, alignnet=alignnet, backbone=backbone, teacher=teacher,
                             cfg=shared, step=i, guidance=guidance)
        row["loss"] = float(terms.total)
        for key, value in terms.terms.items():
            term_sums.setdefault(term_kind(key), []).append(value)
        rows.append(row)
        if out_dir is not None:
            t_img.save(out_dir / f"teacher-{i:03d}.png")
            s_img.save(out_dir / f"student-{i:03d}.png")
    n = len(rows)
    mean = lambda k: sum(r[k] for r in rows) / n  # noqa: E731
    pixel = mean("pixel_mse")
    return EvalResult(
        prompts=n, latent_mse=mean("latent_mse") if rows and "latent_mse" in rows[0] else None,
        pixel_mse=pixel, psnr=psnr(pixel), loss=mean("loss"),
        terms={k: sum(v) / len(v) for k, v in term_sums.items()}, per_prompt=rows,
    )


def _prompt(text: str):
    from ..prompt import MultimodalPrompt

    return MultimodalPrompt.from_text(text)
