"""Distillation losses between student and teacher attention outputs, as plain functions.

Every loss first standardises each token over its channels (zero mean, unit variance), so layers of
different scale count alike. rkl/kl/js then compare softmax distributions over channels at a
temperature (the reference: 3); mse compares the standardised features directly. Per-token losses
are averaged over real tokens (a mask drops padded text positions), i.e. "batchmean" over the
(batch x tokens) rows. The reference applies batchmean to (B, N, D) tensors, which sums over tokens;
ours differs by that constant factor only, and keeps the scale independent of resolution and padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from .hooks import term_kind


def standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per token over channels, in float32: (x - mean) / (std + eps)."""
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def masked_token_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (B, N) per-token loss over positions where mask is True (all when mask is None)."""
    if mask is None:
        return per_token.mean()
    weights = mask.to(device=per_token.device, dtype=per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp(min=1.0)


def _log_probs(x: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(standardize(x) / temperature, dim=-1)


def rkl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 3.0) -> torch.Tensor:
    """Reverse KL, KL(P_student || P_teacher): the reference's loss (mode-seeking)."""
    log_s, log_t = _log_probs(student, temperature), _log_probs(teacher, temperature)
    return masked_token_mean((log_s.exp() * (log_s - log_t)).sum(-1), mask)


def kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 3.0) -> torch.Tensor:
    """Forward KL, KL(P_teacher || P_student) (mean-seeking)."""
    log_s, log_t = _log_probs(student, temperature), _log_probs(teacher, temperature)
    return masked_token_mean((log_t.exp() * (log_t - log_s)).sum(-1), mask)


def js(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence: the mean KL of each distribution to their average."""
    log_s, log_t = _log_probs(student, temperature), _log_probs(teacher, temperature)
    log_m = torch.logaddexp(log_s, log_t) - torch.log(torch.tensor(2.0, device=log_s.device))
    per_token = 0.5 * (log_s.exp() * (log_s - log_m)).sum(-1) + 0.5 * (log_t.exp() * (log_t - log_m)).sum(-1)
    return masked_token_mean(per_token, mask)


def mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 3.0) -> torch.Tensor:
    """Mean squared error of the standardised features (temperature unused)."""
    return masked_token_mean((standardize(student) - standardize(teacher)).pow(2).mean(-1), mask)


LOSS_FUNCTIONS = {"rkl": rkl, "kl": kl, "js": js, "mse": mse}


def text_pair(
    student: torch.Tensor, teacher: torch.Tensor,
    student_mask: torch.Tensor | None, teacher_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Text sides of different lengths: positions up to the shorter, counted where both are real tokens.

    Position i of the MLLM sequence and of the T5 sequence are different tokens (method.md): the text
    terms are the reference's heuristic, which --image-side-only switches off.
    """
    length = min(student.shape[1], teacher.shape[1])
    masks = [m[:, :length].to(student.device, torch.bool) for m in (student_mask, teacher_mask) if m is not None]
    mask = None
    if masks:
        mask = masks[0] if len(masks) == 1 else masks[0] & masks[1]
    return student[:, :length], teacher[:, :length], mask


@dataclass
class DistillationLoss:
    """The weighted total (a tensor with grad), each term's unweighted value, and how many were skipped."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    skipped: int = 0


def distillation_loss(
    student_out: Mapping[str, torch.Tensor],
    teacher_out: Mapping[str, torch.Tensor],
    *,
    loss: str = "rkl",
    temperature: float = 3.0,
    weights: Mapping[str, float] | None = None,
    student_mask: torch.Tensor | None = None,
    teacher_mask: torch.Tensor | None = None,
) -> DistillationLoss:
    """Sum of weight(kind) * loss(student, teacher) over the captured keys; NaN/Inf terms are left out and counted.

    Image-side terms compare every position; text-side terms go through `text_pair` with the masks.
    Terms of weight 0 are not computed. A step whose terms are all non-finite returns a zero total
    that still touches the graph, so distributed ranks stay in step.
    """
    fn = LOSS_FUNCTIONS[loss]
    weights = dict(weights or {})
    values: dict[str, torch.Tensor] = {}
    for key, student in student_out.items():
        weight = weights.get(term_kind(key), 1.0)
        if weight == 0 or key not in teacher_out:
            continue
        teacher = teacher_out[key].detach()
        if key.split("/", 1)[0].endswith("_text"):
            student, teacher, mask = text_pair(student, teacher, student_mask, teacher_mask)
        else:
            mask = None
        if student.requires_grad:
            # Recompute the term's float32 softmax intermediates in the backward pass instead of keeping them:
            # at 1024 px they would hold ~0.2 GB per term (x76) while the captured outputs are alive anyway.
            values[key] = torch.utils.checkpoint.checkpoint(fn, student, teacher, mask, temperature, use_reentrant=False)
        else:
            values[key] = fn(student, teacher, mask, temperature)
    if not values:
        raise ValueError("no distillation term to compute (all weights 0, or nothing captured)")
    keys = list(values)
    numbers = torch.stack([values[k].detach().float() for k in keys]).tolist()  # one sync per step
    total = None
    terms: dict[str, float] = {}
    skipped = 0
    for key, number in zip(keys, numbers):
        terms[key] = number
        if not math.isfinite(number):
            skipped += 1
            continue
        weighted = values[key] * weights.get(term_kind(key), 1.0)
        total = weighted if total is None else total + weighted
    if total is None:
        any_student = next(iter(student_out.values()))
        total = any_student.float().sum() * 0.0 if any_student.requires_grad else torch.zeros((), device=any_student.device)
        total = torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0)
    return DistillationLoss(total, terms, skipped)
