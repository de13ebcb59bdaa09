"""Built-in aligner plugin `official`: the X2I reference's released AlignNets (hub repository OPPOer/X2I).

Plain data: one row per released file, so a file name confirmed later is one more row. Each is converted on
first use (x2i_core.OfficialAligner: download, weights-only read, safetensors folder in x2i's cache) and was
aligned on FLUX.1-dev; it is usable on the other FLUX.1 variants (schnell, shuttle, ...), as the paper shows.
The reference's README also lists AlignNets for MiniCPM-o-2.6 and InternVL2.5-1B/4B; their file names in the
hub repository are not confirmed here, so they are not registered yet.
"""
from x2i_core import AlignerSpec, hookimpl

REPOSITORY = "OPPOer/X2I"
#: name -> (file in REPOSITORY, encoder it reads, summary)
RELEASED = {
    "x2i-qwen2.5-vl-7b": ("qwen2.5-vl-7b_proj.pt", "qwen2.5-vl-7b",
                          "the X2I reference's AlignNet for Qwen2.5-VL-7B (29 x 3584), aligned on FLUX.1-dev"),
    "x2i-qwen2.5-vl-3b": ("qwen2.5-vl-3b_proj.pt", "qwen2.5-vl-3b",
                          "the X2I reference's AlignNet for Qwen2.5-VL-3B (37 x 2048), aligned on FLUX.1-dev"),
}
ALIGNED_ON = "flux-dev"


@hookimpl
def register_aligners(register):
    """One official aligner per released file; fits names the encoder and the backbone it was aligned on."""
    for name, (filename, encoder, summary) in RELEASED.items():
        register(AlignerSpec(
            name, "x2i_core:OfficialAligner", summary=summary, pretrained=REPOSITORY,
            options={"filename": filename, "name": name, "encoder": encoder, "backbone": ALIGNED_ON},
            fits={"encoder": encoder, "backbone": ALIGNED_ON},
        ))
