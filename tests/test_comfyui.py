"""The ComfyUI node package in comfyui/, run without ComfyUI: loaded as Comfy loads a custom-node folder, its nodes
called as Comfy calls them, their CONDITIONING checked against Comfy's FLUX format and drawn by a FLUX sampler.

The tiny Qwen2.5-Omni world (tests/_omni_world.py) reads images, video frames and audio and can answer, so the
one set of models covers every input and the reasoning option.
"""
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from x2i_core import IncompatibleError, InputError, MultimodalPrompt
from x2i_core.interfaces import Conditioning

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "comfyui"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' own helpers (_omni_world, _media_files)

# ComfyUI's core node classes that the example workflows may use besides ours (nodes.py, comfy_extras)
COMFY_CORE = {"UNETLoader", "VAELoader", "EmptyLatentImage", "EmptySD3LatentImage", "KSampler", "VAEDecode",
              "SaveImage", "LoadImage", "FluxGuidance", "LoraLoaderModelOnly", "ControlNetLoader",
              "ControlNetApplyAdvanced", "ConditioningZeroOut", "LoadAudio", "PreviewImage", "CheckpointLoaderSimple"}


def load_like_comfy():
    """Import the folder as ComfyUI's load_custom_node does: a module spec from its __init__.py, put in sys.modules."""
    name = "x2i_comfyui_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nodes():
    return load_like_comfy()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from _omni_world import build_world

    return build_world(tmp_path_factory.mktemp("comfy-omni"))


@pytest.fixture(scope="module")
def loaded(nodes, world):
    """(encoder, alignnet) from the loader nodes, and an X2IPipeline on the same objects for reference values."""
    from x2i_core import load_component
    from x2i_core.generate import X2IPipeline

    m = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():  # ComfyUI's PromptExecutor.execute runs every node inside inference mode
        (align,) = m["X2ILoadAlignNet"]().load(world.align, "cpu", "fp32")
        (encoder,) = m["X2ILoadEncoder"]().load("qwen2.5-omni", world.omni, "cpu", "fp32", "auto", False,
                                                alignnet=align)
    backbone = load_component("backbone", "flux", world.flux, device=torch.device("cpu"), dtype=torch.float32)
    return encoder, align, X2IPipeline(encoder.encoder, align, backbone)


def encode(nodes, loaded, text="", **kw):
    encoder, align, _ = loaded
    options = dict(guidance=3.5, reason=False, reason_tokens=8, reason_with_prompt=False)
    options.update({k: kw.pop(k) for k in list(kw) if k in options})
    with torch.inference_mode():
        return nodes.NODE_CLASS_MAPPINGS["X2IEncodePrompt"]().encode(encoder, align, text, **options, **kw)


def run_graph(mappings, graph: dict, output: str) -> dict:
    """Run an API-format graph the way ComfyUI's executor does: each linked input's type checked against the source
    node's RETURN_TYPES (validate_inputs), inputs resolved depth first, FUNCTION called in inference mode.
    Returns every executed node's outputs by node id."""
    results = {}

    def run(node_id):
        if node_id in results:
            return results[node_id]
        node = graph[node_id]
        cls = mappings[node["class_type"]]
        declared = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                source, slot = value
                assert mappings[graph[source]["class_type"]].RETURN_TYPES[slot] == declared[name][0], (node_id, name)
                value = run(source)[slot]
            kwargs[name] = value
        with torch.inference_mode():
            results[node_id] = getattr(cls(), cls.FUNCTION)(**kwargs)
        return results[node_id]

    run(output)
    return results


def reference(pipe, prompt):
    """The pipeline's own encoder + AlignNet output for a prompt (what X2IPipeline conditions its images on)."""
    with torch.no_grad():
        enc = pipe.encoder.encode([prompt])
        return pipe.aligner(enc.hidden_states, enc.attention_mask)


def image_tensor(images):
    """PIL images -> Comfy's IMAGE (B, H, W, 3) float in [0, 1], as its LoadImage node makes them."""
    return torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0) for im in images])


def test_package_loads_like_comfy_and_declares_its_nodes(nodes):
    mappings, names = nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert set(mappings) == {"X2ILoadEncoder", "X2ILoadAlignNet", "X2IEncodePrompt"} == set(names)
    for cls in mappings.values():
        types = cls.INPUT_TYPES()
        assert isinstance(types["required"], dict) and callable(getattr(cls, cls.FUNCTION))
        assert isinstance(cls.RETURN_TYPES, tuple) and cls.CATEGORY == "x2i"
        for spec in [*types["required"].values(), *types.get("optional", {}).values()]:
            if isinstance(spec[0], list):  # a combo: its default must be one of its choices
                assert spec[1]["default"] in spec[0]
    assert mappings["X2IEncodePrompt"].RETURN_TYPES[0] == "CONDITIONING"
    optional = mappings["X2IEncodePrompt"].INPUT_TYPES()["optional"]
    assert optional == {"image": ("IMAGE",), "video_frames": ("IMAGE",), "audio": ("AUDIO",)}


def test_registry_metadata_in_its_pyproject():
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert meta["project"]["name"] and meta["project"]["version"]
    assert any(dep.split(">")[0].split("=")[0].strip() == "x2i" for dep in meta["project"]["dependencies"])
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and "Icon" in comfy


def test_example_workflows_wire_existing_nodes_and_inputs(nodes):
    """Each workflow (Comfy's API format) uses our nodes with their real input names, and links point at nodes."""
    files = sorted((PACKAGE / "workflows").glob("*.json"))
    assert files
    for path in files:
        graph = json.loads(path.read_text())
        assert any(n["class_type"] == "X2IEncodePrompt" for n in graph.values()), path.name
        for node_id, node in graph.items():
            cls = nodes.NODE_CLASS_MAPPINGS.get(node["class_type"])
            assert cls is not None or node["class_type"] in COMFY_CORE, (path.name, node["class_type"])
            for value in node["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                    assert value[0] in graph, (path.name, node_id, value)
            if cls is not None:
                declared = cls.INPUT_TYPES()
                assert set(declared["required"]) <= set(node["inputs"]), (path.name, node_id)
                assert set(node["inputs"]) <= set(declared["required"]) | set(declared.get("optional", {}))


def test_image_tensor_becomes_the_same_pixels(nodes):
    from x2i_comfyui_under_test.x2i_media import images_from_tensor

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(2)]
    out = images_from_tensor(image_tensor([Image.fromarray(a) for a in arrays]))
    assert [im.size for im in out] == [(28, 20)] * 2
    assert all(np.array_equal(np.asarray(im), a) for im, a in zip(out, arrays))
    with pytest.raises(InputError, match="channels"):
        images_from_tensor(torch.zeros(1, 8, 8, 2))


def test_audio_dict_becomes_16khz_mono(nodes):
    from x2i_comfyui_under_test.x2i_media import audio_clips

    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    (clip,) = audio_clips({"waveform": torch.from_numpy(stereo)[None], "sample_rate": rate})
    assert clip.dtype == np.float32 and clip.ndim == 1 and abs(clip.size - 16000) <= 64
    spectrum = np.abs(np.fft.rfft(clip[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2  # 1 Hz bins: the tone kept its pitch
    with pytest.raises(InputError, match="waveform"):
        audio_clips({"samples": stereo})


def test_conditioning_is_comfys_flux_format_and_the_pipelines_values(nodes, loaded):
    _, align, pipe = loaded
    cond, answer = encode(nodes, loaded, "a red circle on the left", guidance=2.5)
    assert answer == "" and isinstance(cond, list) and len(cond) == 1
    tokens, extras = cond[0]
    assert set(extras) == {"pooled_output", "guidance"} and extras["guidance"] == 2.5
    assert tokens.dtype == torch.float32 and tokens.dim() == 3 and tokens.shape[0] == 1
    assert tokens.shape[2] == pipe.backbone.prompt_embed_dim and extras["pooled_output"].shape == (
        1, pipe.backbone.pooled_embed_dim)
    ref = reference(pipe, MultimodalPrompt.from_text("a red circle on the left"))
    assert torch.equal(tokens, ref.prompt_embeds) and torch.equal(extras["pooled_output"], ref.pooled_prompt_embeds)


def test_padded_tokens_are_cut_per_prompt(nodes):
    from x2i_comfyui_under_test.x2i_conditioning import to_comfy

    embeds, pooled = torch.randn(2, 5, 8), torch.randn(2, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pairs = to_comfy(Conditioning(embeds, pooled, mask), guidance=None)
    assert [p[0].shape for p in pairs] == [(1, 3, 8), (1, 5, 8)] and "guidance" not in pairs[0][1]
    assert torch.equal(pairs[0][0][0], embeds[0, :3]) and torch.equal(pairs[1][1]["pooled_output"], pooled[1:])


def test_image_video_frames_and_audio_inputs_reach_the_encoder(nodes, loaded, world):
    """IMAGE, a frame batch and an AUDIO dict give what the pipeline gives for the same media as PIL / arrays."""
    from x2i_core import load_audio

    _, _, pipe = loaded
    picture = Image.open(world.image).convert("RGB")
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    samples = load_audio(world.tone)  # 16 kHz mono: no resampling, so the values must match exactly
    audio = {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": 16000}
    cond, _ = encode(nodes, loaded, "draw what you see and hear", image=image_tensor([picture]),
                     video_frames=image_tensor(frames), audio=audio)
    prompt = MultimodalPrompt.build("draw what you see and hear", images=[picture], videos=[frames], audios=[samples])
    ref = reference(pipe, prompt)
    assert torch.equal(cond[0][0], ref.prompt_embeds) and torch.equal(cond[0][1]["pooled_output"],
                                                                      ref.pooled_prompt_embeds)
    text_only, _ = encode(nodes, loaded, "draw what you see and hear")
    assert cond[0][0].shape[1] > text_only[0][0].shape[1]  # the media's tokens are there


def test_reasoning_conditions_on_the_answer(nodes, loaded):
    encoder, _, pipe = loaded
    cond, answer = encode(nodes, loaded, "what colour is the sky?", reason=True, reason_tokens=6)
    prompt = MultimodalPrompt.from_text("what colour is the sky?")
    assert answer and answer == encoder.encoder.reply(prompt, max_new_tokens=6).strip()
    with torch.no_grad():
        enc = encoder.encoder.encode_reply(prompt, answer)
        ref = pipe.aligner(enc.hidden_states, enc.attention_mask)
    assert torch.equal(cond[0][0], ref.prompt_embeds)


def test_template_mismatch_is_one_line(nodes, loaded):
    """An AlignNet refuses an encoder loaded with another prompt template than the one it was trained on."""
    from x2i_core import AlignNet
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM

    encoder, _, _ = loaded
    reference_net = AlignNet(num_layers=3, hidden_size=64, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
                             prompt_template="reference")
    with pytest.raises(IncompatibleError, match="'reference' prompt template"):
        nodes.NODE_CLASS_MAPPINGS["X2IEncodePrompt"]().encode(encoder, reference_net, "a cat", 3.5, False, 8, False)
    _, align, _ = loaded  # and the other way round: an x2i-template AlignNet with an encoder on the reference one
    on_reference = type(encoder)(encoder.encoder, encoder.name, "reference")
    with pytest.raises(IncompatibleError, match="'x2i' prompt template"):
        nodes.NODE_CLASS_MAPPINGS["X2IEncodePrompt"]().encode(on_reference, align, "a cat", 3.5, False, 8, False)


def test_comfy_flux_path_draws_what_the_pipeline_draws(nodes, loaded, world):
    """The CONDITIONING mapped the way Comfy's Flux model reads it (cross_attn -> context, pooled_output -> y,
    guidance) and drawn by diffusers' FluxPipeline gives the image X2IPipeline draws from the same prompt."""
    from diffusers import FluxPipeline

    _, _, pipe = loaded
    cond, _ = encode(nodes, loaded, "a small blue square", guidance=3.0)
    tokens, extras = cond[0]
    context, y, guidance = tokens, extras["pooled_output"], extras.get("guidance", 3.5)  # model_base.Flux.extra_conds
    sampler = FluxPipeline.from_pretrained(world.flux, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                           tokenizer_2=None)
    drawn = sampler(prompt_embeds=context, pooled_prompt_embeds=y, guidance_scale=guidance, num_inference_steps=2,
                    height=32, width=32, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images[0]
    ours = pipe("a small blue square", steps=2, guidance=3.0, true_cfg=1.0, seed=5, width=32, height=32)[0]
    ours = np.asarray(ours, dtype=np.float32) / 255.0
    assert drawn.shape == ours.shape == (32, 32, 3) and drawn.std() > 0.01
    assert np.abs(drawn - ours).max() <= 1 / 255 + 1e-6  # the same image up to 8-bit rounding


def test_a_graph_of_the_nodes_runs_as_comfys_executor_runs_it(nodes, loaded, world):
    graph = {
        "1": {"class_type": "X2ILoadAlignNet", "inputs": {"alignnet": world.align, "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "X2ILoadEncoder", "inputs": {"encoder": "(the folder given in checkpoint)",
                                                         "checkpoint": world.omni, "device": "cpu", "dtype": "fp32",
                                                         "template": "auto", "trust_remote_code": False,
                                                         "offload": True, "alignnet": ["1", 0]}},
        "3": {"class_type": "X2IEncodePrompt", "inputs": {"encoder": ["2", 0], "alignnet": ["1", 0],
                                                          "text": "a green triangle", "guidance": 3.5, "reason": False,
                                                          "reason_tokens": 16, "reason_with_prompt": False}},
    }
    outputs = run_graph(nodes.NODE_CLASS_MAPPINGS, graph, "3")
    cond, answer = outputs["3"]
    expected, _ = encode(nodes, loaded, "a green triangle")
    assert answer == "" and torch.equal(cond[0][0], expected[0][0])  # an encoder found from its folder alone
    assert outputs["2"][0].device == torch.device("cpu")  # offload: the device it is moved to for each prompt


def test_offload_puts_the_encoder_on_its_device_only_while_encoding(nodes, loaded, monkeypatch):
    encoder, align, _ = loaded
    moves = []
    monkeypatch.setattr(encoder.encoder, "to", lambda device=None, dtype=None: moves.append(str(device)))
    offloaded = type(encoder)(encoder.encoder, encoder.name, encoder.template, torch.device("meta"))
    with torch.inference_mode():
        cond, _ = nodes.NODE_CLASS_MAPPINGS["X2IEncodePrompt"]().encode(offloaded, align, "a cat", 3.5, False, 8, False)
    assert moves == ["meta", "cpu"]  # to the device for this prompt, back to the CPU after it
    assert torch.equal(cond[0][0], encode(nodes, loaded, "a cat")[0][0][0])
