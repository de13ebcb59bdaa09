"""The `ip-adapter` adapter on a tiny Flux backbone: a tiny FLUX IP-Adapter file (XLabs layout) and a tiny
CLIPVisionModelWithProjection written here; alone and with true CFG; refusals in one line."""
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, SiglipVisionConfig, SiglipVisionModel

from x2i_core import GenerationRequest
from x2i_core.errors import CheckpointError, IncompatibleError, InputError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 16
EMBED = 16  # the tiny CLIP's projection width (ViT-L/14: 768)
INNER = 32  # tiny transformer: 2 heads x 16


def _xlabs_file(path, seed, width=PROMPT_DIM, embed=EMBED, blocks=1):
    """The XLabs flux-ip-adapter layout: image projection to 4 prompt-width tokens, k/v projections per double block."""
    g = torch.Generator().manual_seed(seed)
    tensors = {"ip_adapter_proj_model.proj.weight": torch.randn(4 * width, embed, generator=g) * 0.5,
               "ip_adapter_proj_model.proj.bias": torch.randn(4 * width, generator=g) * 0.1,
               "ip_adapter_proj_model.norm.weight": torch.ones(width), "ip_adapter_proj_model.norm.bias": torch.zeros(width)}
    for i in range(blocks):
        for kv in ("k", "v"):
            tensors[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.weight"] = \
                torch.randn(INNER, width, generator=g) * 0.5
            tensors[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.bias"] = torch.zeros(INNER)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ip")
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=EMBED)).save_pretrained(root / "clip")
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(root / "siglip")
    images = {}
    for name, colour in (("cat", (220, 120, 30)), ("sky", (40, 90, 230))):
        images[name] = str(root / f"{name}.png")
        Image.new("RGB", (40, 40), colour).save(images[name])
    return dict(flux=flux, clip=str(root / "clip"), siglip=str(root / "siglip"),
                ip=_xlabs_file(root / "ip" / "ip_adapter.safetensors", 1),
                wide=_xlabs_file(root / "wide" / "ip_adapter.safetensors", 2, width=48),
                sd=_xlabs_file(root / "sd" / "ip_adapter.safetensors", 3, embed=24), **images)


@pytest.fixture
def backbone(files):
    return load_component("backbone", "flux", files["flux"], device="cpu")


def _cond(seed):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 5, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))


def _sample(backbone, adapters=(), cfg=False, request=None):
    request = request or GenerationRequest()
    for adapter in adapters:
        adapter.check_request(request)
    extra = dict(negative=_cond(9), true_cfg_scale=2.0) if cfg else {}
    return backbone.denoise(_cond(0), height=H, width=W, num_inference_steps=2, guidance_scale=3.5,
                            generator=[torch.Generator().manual_seed(0)], request=request,
                            guides=[a.guide(request) for a in adapters], **extra)


def _ip(files, **options):
    return load_component("adapter", "ip-adapter", str(files["ip"]).rsplit("/", 1)[0], image_encoder=files["clip"],
                          **options)


def test_registered():
    assert "ip-adapter" in get_registry().names("adapter")


@pytest.mark.parametrize("cfg", [False, True])
def test_changes_the_image_alone_and_with_true_cfg(backbone, files, cfg):
    none = _sample(backbone, cfg=cfg)
    adapter = _ip(files, image=files["cat"])
    adapter.apply(backbone)
    cat = _sample(backbone, [adapter], cfg=cfg)
    sky = _sample(backbone, [adapter], cfg=cfg, request=GenerationRequest(reference_images=[files["sky"]]))
    adapter.image = None  # the API form: the reference image comes with the request
    sky_api = _sample(backbone, [adapter], cfg=cfg, request=GenerationRequest(reference_images=[files["sky"]]))
    assert torch.isfinite(cat).all() and not torch.equal(none, cat) and torch.equal(sky, cat)  # its own image wins
    assert not torch.equal(cat, sky_api)
    zero = _sample(backbone, [adapter], cfg=cfg, request=GenerationRequest(reference_images=[files["sky"]],
                                                                          adapter_scales={"ip-adapter": 0.0}))
    assert torch.allclose(zero, none, atol=1e-6)  # scale 0 is no IP-Adapter
    adapter.remove(backbone)
    assert torch.equal(_sample(backbone, cfg=cfg), none)


def test_refusals_are_one_line(backbone, files, tmp_path):
    with pytest.raises(IncompatibleError, match="made for another architecture"):
        load_component("adapter", "ip-adapter", files["wide"], image_encoder=files["clip"]).apply(backbone)
    with pytest.raises(IncompatibleError, match="takes 24-d image embeddings but its image encoder gives 16-d"):
        load_component("adapter", "ip-adapter", files["sd"], image_encoder=files["clip"]).apply(backbone)
    with pytest.raises(IncompatibleError, match="siglip"):
        _ip({**files, "clip": files["siglip"]})
    with pytest.raises(CheckpointError, match="not found"):
        load_component("adapter", "ip-adapter", str(tmp_path / "nowhere"), image_encoder=files["clip"])
    with pytest.raises(InputError, match="--ip-image file not found"):
        _ip(files, image=str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match="needs a reference image"):
        _ip(files).check_request(GenerationRequest())


def test_cli_takes_an_ip_adapter_and_refuses_before_loading(files, tmp_path_factory):
    from click.testing import CliRunner

    from _adapter_world import generate_args, write_encoder_and_aligner
    from x2i_cli.main import cli
    from x2i_core.generate import read_metadata

    root = tmp_path_factory.mktemp("ip-cli")
    qwen, align = write_encoder_and_aligner(root)
    out = root / "out.png"
    args = generate_args(qwen, files["flux"], align, out)
    ip = str(files["ip"]).rsplit("/", 1)[0]
    ok = CliRunner().invoke(cli, [*args, "--ip-adapter", ip, "--ip-image", files["cat"], "--ip-scale", "0.6",
                                  "--ip-image-encoder", files["clip"], "--true-cfg", "2"])
    assert ok.exit_code == 0, ok.output
    assert "ip-adapter:" in read_metadata(out)["adapters"] and "@0.6" in read_metadata(out)["adapters"]
    for extra, line in ((["--ip-adapter", ip], "needs its reference image"),
                        (["--ip-image", files["cat"]], "needs an --ip-adapter"),
                        (["--ip-adapter", ip, "--ip-image", str(root / "nope.png")], "not found")):
        bad = CliRunner().invoke(cli, [*args, *extra])
        assert bad.exit_code == 2 and line in bad.output and "Traceback" not in bad.output, bad.output


@pytest.mark.parametrize("level", ["low", "lowest"])
def test_works_on_memory_levels(files, level):
    backbone = load_component("backbone", "flux", files["flux"], device="cpu", memory=level)
    none = _sample(backbone)
    adapter = _ip(files, image=files["cat"])
    adapter.apply(backbone)
    assert not torch.equal(_sample(backbone, [adapter], cfg=True), none)
