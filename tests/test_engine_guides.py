"""The Guide protocol of the one Flux loop: what a per-step guide adds reaches every transformer call (both true-CFG
branches), after_step sees every step, several guides combine, and an adapter's guide arrives through X2IPipeline."""
import numpy as np
import pytest
import torch

from x2i_core import Adapter, Guide, InputError
from x2i_core.interfaces import Conditioning
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 32


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return FluxBackbone.from_pretrained(write_tiny_flux(tmp_path_factory.mktemp("flux") / "f", with_teacher=False),
                                        device="cpu")


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 5, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))


def _run(backbone, guides=(), cfg=False):
    extra = dict(negative=_cond(9), true_cfg_scale=3.0) if cfg else {}
    return backbone.denoise(_cond(), height=H, width=W, num_inference_steps=3, guidance_scale=3.5,
                            generator=[torch.Generator().manual_seed(0)], guides=guides, **extra)


class Residuals(Guide):
    """ControlNet-shaped residuals (one per double and single block), `value` x a fixed pattern; records each call."""

    def __init__(self, value):
        self.value, self.calls, self.after = value, [], []

    def prepare(self, backbone, request, info):
        width = backbone.transformer.inner_dim
        tokens = info.rows * info.cols
        double = len(backbone.transformer.transformer_blocks)
        single = len(backbone.transformer.single_transformer_blocks)
        g = torch.Generator().manual_seed(0)  # a fixed pattern (a constant would vanish in the next LayerNorm)
        pattern = torch.randn(info.batch, tokens, width, generator=g)
        return [pattern * self.value] * double, [pattern * self.value] * single

    def step_inputs(self, state, step):
        self.calls.append((step.index, step.branch, tuple(step.prompt_embeds.shape)))
        return {"controlnet_block_samples": state[0], "controlnet_single_block_samples": state[1]}

    def after_step(self, state, step):
        self.after.append((step.index, float(step.sigma_next)))
        return step.latents


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "true-cfg"])
def test_residuals_reach_every_call(backbone, cfg):
    base = _run(backbone, cfg=cfg)
    zero = Residuals(0.0)
    assert torch.equal(_run(backbone, [zero], cfg), base)  # zero residuals: the very same image
    branches = ["positive", "negative"] if cfg else ["positive"]
    assert [(i, b) for i, b, _ in zero.calls] == [(i, b) for i in range(3) for b in branches]
    assert [i for i, _ in zero.after] == [0, 1, 2] and zero.after[-1][1] == 0.0
    assert (_run(backbone, [Residuals(0.5)], cfg) - base).abs().max() > 1e-3


def test_several_guides_sum_their_residuals(backbone):
    both = _run(backbone, [Residuals(0.25), Residuals(0.25)])
    torch.testing.assert_close(both, _run(backbone, [Residuals(0.5)]))


class ExtraTokens(Guide):
    """Kontext-shaped: the current latents appended as a second image (position index 1)."""

    def step_inputs(self, state, step):
        rows = cols = H // 4
        ids = torch.zeros(rows * cols, 3)
        ids[:, 0] = 1
        ids[:, 1] = torch.arange(rows).repeat_interleave(cols)
        ids[:, 2] = torch.arange(cols).repeat(rows)
        return {"image_tokens": step.latents.flip(1), "image_ids": ids}


class Shrink(Guide):
    def after_step(self, state, step):
        return step.latents * 0.5


def test_image_tokens_and_after_step_change_the_image(backbone):
    base = _run(backbone)
    tokens = _run(backbone, [ExtraTokens()])
    assert tokens.shape == base.shape and (tokens - base).abs().max() > 1e-3
    assert (_run(backbone, [Shrink()]) - base).abs().max() > 1e-3


def test_unknown_step_input_is_one_line(backbone):
    class Bad(Guide):
        def step_inputs(self, state, step):
            return {"my_residuals": 1}

    with pytest.raises(InputError, match="my_residuals"):
        _run(backbone, [Bad()])


class ShiftAdapter(Adapter):
    """A third-party style adapter: no weights, one guide that reads its own request input."""

    name = "shift"

    def __init__(self):
        self.seen = []

    @classmethod
    def from_pretrained(cls, pretrained, **options):
        return cls()

    def guide(self, request):
        value = request.inputs.get("shift")
        self.seen.append(value)
        return None if value is None else Residuals(value)


def test_an_adapter_guide_arrives_through_the_pipeline():
    from x2i_core.generate import X2IPipeline

    adapter = ShiftAdapter()
    pipe = X2IPipeline.from_names("shapes-mllm", "shapes", "shapes", device="cpu", adapters=[adapter])
    plain = pipe("a red circle", steps=2)[0]
    shifted = pipe("a red circle", steps=2, inputs={"shift": 0.3})[0]
    assert adapter.seen == [None, 0.3]
    assert plain.tobytes() != shifted.tobytes() and shifted.info["adapters"] == "shift@1"
    with pytest.raises(InputError, match="unknown generation option"):
        pipe("a red circle", steps=1, shift=0.3)


def test_lora_inpaint_guide_and_true_cfg_in_one_loop(backbone, tmp_path):
    """Everything at once: a LoRA on the weights, a guide's residuals, an inpaint request and true CFG."""
    from test_adapter_inpaint import _image, _init_latents, _mask
    from test_adapter_lora import _kohya_lora

    from x2i_core import GenerationRequest
    from x2i_plugins.adapters.lora.adapter import LoraAdapter
    from x2i_plugins.backbones.flux.sampling import pack

    request = GenerationRequest(init_image=_image(4, (W, H)), mask=_mask((W, H)))
    kw = dict(height=H, width=W, num_inference_steps=3, guidance_scale=3.5, negative=_cond(9), true_cfg_scale=3.0,
              request=request, guides=[Residuals(0.5)])
    run = lambda: backbone.denoise(_cond(), generator=[torch.Generator().manual_seed(3)], **kw)  # noqa: E731
    without = run()
    lora = LoraAdapter.from_pretrained(_kohya_lora(tmp_path / "k.safetensors", 2))
    lora.apply(backbone)
    try:
        with_lora = run()
    finally:
        lora.remove(backbone)
    kept_pixels = torch.from_numpy(np.asarray(request.mask) < 128)[None, None, ::2, ::2]  # latent cells kept
    keep = pack(kept_pixels.float().repeat(1, 4, 1, 1))[0] > 0.5
    init = _init_latents(backbone, request.init_image, H, W, 3)[0]
    assert torch.equal(with_lora[0][keep], init[keep]) and torch.equal(without[0][keep], init[keep])
    assert (with_lora[0][~keep] - without[0][~keep]).abs().max() > 1e-3
