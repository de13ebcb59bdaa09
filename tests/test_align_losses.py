"""Distillation losses, attention hooks and alignment settings (no encoder needed; a tiny Flux transformer)."""
import pytest
import torch

from x2i_core.align.config import AlignConfig, parse_term_weights
from x2i_core.align.hooks import captured_attention, count_hooks, term_kind
from x2i_core.align.losses import LOSS_FUNCTIONS, distillation_loss, kl, rkl, standardize, text_pair
from x2i_core.errors import InputError
from x2i_core.interfaces import AttentionPoint


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from _align_tiny import one_thread

    yield from one_thread()


def _pair(seed=0, shape=(2, 5, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) * 2 + 1


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_identical_inputs_give_zero(name):
    a, _ = _pair()
    assert LOSS_FUNCTIONS[name](a, a.clone()).abs().item() < 1e-6


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_losses_are_positive_and_scale_invariant(name):
    a, b = _pair()
    value = LOSS_FUNCTIONS[name](a, b)
    assert value.item() > 0
    # per-token standardisation: scaling and shifting a token changes nothing
    assert torch.allclose(LOSS_FUNCTIONS[name](a * 5 + 3, b), value, atol=1e-5)


def test_rkl_is_the_reverse_of_kl_and_asymmetric():
    a, b = _pair(1)
    assert torch.allclose(rkl(a, b), kl(b, a), atol=1e-6)
    assert not torch.allclose(rkl(a, b), kl(a, b), atol=1e-4)


def test_rkl_matches_torch_kl_div_at_temperature_3():
    a, b = _pair(2)
    log_s = torch.log_softmax(standardize(a) / 3, -1).reshape(-1, 16)
    log_t = torch.log_softmax(standardize(b) / 3, -1).reshape(-1, 16)
    # KL(student || teacher) = kl_div(input=log teacher, target=student), batchmean over all token rows
    expected = torch.nn.functional.kl_div(log_t, log_s, reduction="batchmean", log_target=True)
    assert torch.allclose(rkl(a, b), expected, atol=1e-6)


def test_mask_drops_padded_positions():
    a, b = _pair(3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    garbage = b.clone()
    garbage[~mask] = 1e4 * torch.randn_like(garbage[~mask])
    for fn in LOSS_FUNCTIONS.values():
        assert torch.allclose(fn(a, b, mask), fn(a, garbage, mask), atol=1e-6)
    per_token_first = rkl(a[:1, :2], b[:1, :2])
    per_token_second = rkl(a[1:, :3], b[1:, :3])
    assert torch.allclose(rkl(a, b, mask), (2 * per_token_first + 3 * per_token_second) / 5, atol=1e-6)


def test_text_pair_truncates_to_the_shorter_and_combines_masks():
    s, t = torch.randn(1, 7, 4), torch.randn(1, 4, 4)
    s_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    s2, t2, mask = text_pair(s, t, s_mask, None)
    assert s2.shape[1] == t2.shape[1] == 4 and mask.tolist() == [[True, True, True, False]]


def test_total_is_weighted_and_nonfinite_terms_are_skipped():
    a, b = _pair(4)
    student = {"double_image/x": a.clone().requires_grad_(), "single_text/y": a.clone().requires_grad_(),
               "double_text/x": torch.full_like(a, float("nan")).requires_grad_()}
    teacher = {"double_image/x": b, "single_text/y": b, "double_text/x": b}
    out = distillation_loss(student, teacher, weights={"double_image": 2.0, "single_text": 0.5, "double_text": 1.0})
    expected = 2.0 * rkl(a, b) + 0.5 * rkl(a, b)
    assert torch.allclose(out.total, expected, atol=1e-6)
    assert out.skipped == 1 and set(out.terms) == set(student)
    out.total.backward()
    assert torch.isfinite(student["double_image/x"].grad).all()
    assert student["double_text/x"].grad is None  # the skipped term is not in the graph
    zero = distillation_loss(student, teacher, weights={"double_image": 0, "single_text": 0, "double_text": 1})
    assert zero.skipped == 1 and zero.total.item() == 0.0


def test_term_weights_parsing_and_image_side_only():
    assert parse_term_weights("double_text=0.5, single_text=0")["double_text"] == 0.5
    with pytest.raises(InputError, match="KIND=WEIGHT"):
        parse_term_weights("text=1")
    with pytest.raises(InputError, match="not a number"):
        parse_term_weights("double_text=abc")
    weights = AlignConfig(image_side_only=True).weights()
    assert weights["double_text"] == weights["single_text"] == 0 and weights["double_image"] == 1


@pytest.fixture(scope="module")
def tiny_flux_transformer():
    from x2i_plugins.backbones.flux.tiny import tiny_transformer

    torch.manual_seed(0)
    return tiny_transformer(num_layers=2, num_single_layers=2).eval().requires_grad_(False)


def _points(model):
    points = [AttentionPoint(f"transformer_blocks.{i}.attn", b.attn, "double") for i, b in enumerate(model.transformer_blocks)]
    points += [AttentionPoint(f"single_transformer_blocks.{i}.attn", b.attn, "single")
               for i, b in enumerate(model.single_transformer_blocks)]
    return points


def _forward(model, text_len=5, image_len=16):
    g = torch.Generator().manual_seed(0)
    return model(
        hidden_states=torch.randn(1, image_len, 16, generator=g), timestep=torch.ones(1),
        guidance=torch.full((1,), 3.5), pooled_projections=torch.randn(1, 24, generator=g),
        encoder_hidden_states=torch.randn(1, text_len, 32, generator=g), txt_ids=torch.zeros(text_len, 3),
        img_ids=torch.zeros(image_len, 3), return_dict=False,
    )[0]


def test_hooks_capture_every_side_with_the_right_lengths(tiny_flux_transformer):
    points = _points(tiny_flux_transformer)
    with captured_attention(points, text_length=5) as out:
        _forward(tiny_flux_transformer)
    assert count_hooks(points) == 0
    assert len(out) == 8
    for key, tensor in out.items():
        assert tensor.shape[1] == (5 if term_kind(key).endswith("text") else 16), key
    with captured_attention(points, text_length=5, sides=("image",)) as image_only:
        _forward(tiny_flux_transformer)
    assert sorted({term_kind(k) for k in image_only}) == ["double_image", "single_image"]


def test_hooks_are_removed_after_an_exception(tiny_flux_transformer):
    points = _points(tiny_flux_transformer)
    with pytest.raises(RuntimeError, match="boom"):
        with captured_attention(points, text_length=5):
            _forward(tiny_flux_transformer)
            raise RuntimeError("boom")
    assert count_hooks(points) == 0


def test_gradient_flows_to_conditioning_through_frozen_checkpointed_transformer(tiny_flux_transformer):
    """Grad through the frozen transformer reaches the conditioning, identically with gradient checkpointing."""
    model = tiny_flux_transformer
    points = _points(model)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        cond = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1)).requires_grad_()
        g = torch.Generator().manual_seed(0)
        with captured_attention(points, text_length=5) as out:
            model(hidden_states=torch.randn(1, 16, 16, generator=g), timestep=torch.ones(1), guidance=torch.full((1,), 3.5),
                  pooled_projections=torch.randn(1, 24, generator=g), encoder_hidden_states=cond,
                  txt_ids=torch.zeros(5, 3), img_ids=torch.zeros(16, 3), return_dict=False)
        sum(t.float().pow(2).mean() for t in out.values()).backward()
        grads.append(cond.grad.clone())
    model.disable_gradient_checkpointing()
    assert all(p.grad is None for p in model.parameters())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-5)
