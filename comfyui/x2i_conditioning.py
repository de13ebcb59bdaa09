"""An x2i Conditioning (AlignNet output) -> ComfyUI's CONDITIONING for FLUX models.

Facts this relies on, read from ComfyUI's source (comfy/model_base.py, comfy/samplers.py, nodes.py,
comfy_extras/nodes_flux.py):
- CONDITIONING is a list of [cond, extras] pairs. CLIPTextEncode returns [[cond, {"pooled_output": pooled}]];
  CLIPTextEncodeFlux and FluxGuidance add extras["guidance"] (a float).
- samplers.convert_cond copies extras and passes cond as kwargs["cross_attn"]; model_base.Flux.extra_conds turns
  it into c_crossattn (the transformer's `context`, txt_in: width 4096 for FLUX.1), encode_adm returns
  extras["pooled_output"] as `y` (vector_in: width 768), and guidance defaults to 3.5 when extras has none
  (models without a guidance embedder ignore it).
- Flux's extra_conds reads extras["attention_mask"] only together with "attention_mask_img_shape" (a regional
  image mask), so there is no key for a text padding mask: padded tokens must not be in `cond` at all.
  Flux text tokens all sit at position 0 (txt_ids are zeros), so dropping padded tokens changes nothing for the
  real ones: each prompt becomes its own pair, cut to its real tokens.
"""
from __future__ import annotations

#: ComfyUI's own default for FLUX.1-dev (CLIPTextEncodeFlux, FluxGuidance)
DEFAULT_GUIDANCE = 3.5


def to_comfy(conditioning, guidance: float | None = DEFAULT_GUIDANCE) -> list:
    """[[cond (1, S, D), {"pooled_output": (1, P), "guidance": g}], ...]: one pair per prompt, real tokens only.

    Tensors go to the CPU in float32: Comfy casts conditioning to its model's device and dtype itself.
    """
    embeds, pooled, mask = conditioning.prompt_embeds, conditioning.pooled_prompt_embeds, conditioning.attention_mask
    pairs = []
    for i in range(embeds.shape[0]):
        tokens = embeds[i] if mask is None else embeds[i][mask[i].to(device=embeds.device, dtype=bool)]
        extras = {"pooled_output": pooled[i:i + 1].detach().float().cpu()}
        if guidance is not None:
            extras["guidance"] = float(guidance)
        pairs.append([tokens.unsqueeze(0).detach().float().cpu(), extras])
    return pairs
