"""x2i core: interfaces, the AlignNet, the plugin manager and the generation/alignment plumbing.

Importing this package does not import torch; the torch-based names load on first access.
The names exported here (and the contract checks in `x2i_core.testing`) are the public API: plugins,
built-in ones included, import nothing else from x2i_core (tests/test_layering.py checks it).
"""
from importlib import import_module

from .errors import CheckpointError, IncompatibleError, InputError, PluginError, X2IError, first_line
from .hookspecs import hookimpl
from .prompt import MultimodalPrompt, PromptPart, Turn
from .specs import AdapterSpec, AlignerSpec, BackboneSpec, ComponentSpec, EncoderSpec, WorldSpec

__version__ = "0.1.0"

# name -> module that defines it; imported lazily so `x2i --help` never pays for torch.
_LAZY = {
    "MultimodalEncoder": "x2i_core.interfaces",
    "DiTBackbone": "x2i_core.interfaces",
    "Aligner": "x2i_core.interfaces",
    "Adapter": "x2i_core.interfaces",
    "Guide": "x2i_core.interfaces", "LatentsInfo": "x2i_core.interfaces", "StepInputs": "x2i_core.interfaces",
    "STEP_KEYS": "x2i_core.interfaces",
    "GenerationRequest": "x2i_core.request", "AdapterChoice": "x2i_core.request", "parse_outpaint": "x2i_core.request",
    "open_image": "x2i_core.request",
    "EncodedPrompt": "x2i_core.interfaces",
    "Conditioning": "x2i_core.interfaces",
    "AttentionPoint": "x2i_core.interfaces",
    "TeacherConditioner": "x2i_core.interfaces",
    "AlignNet": "x2i_core.alignnet",
    "get_registry": "x2i_core.plugins",
    "load_component": "x2i_core.plugins",
    "folder_model_type": "x2i_core.plugins",
    "X2IPipeline": "x2i_core.generate",
    "load_aligner": "x2i_core.generate",
    "load_image": "x2i_core.media", "sample_video": "x2i_core.media", "sample_video_frames": "x2i_core.media",
    "load_audio": "x2i_core.media", "video_sound_track": "x2i_core.media",
    "expand_placeholders": "x2i_core.templates", "chat_messages": "x2i_core.templates",
    "resolve_device": "x2i_core.device",
    "MEMORY_LEVELS": "x2i_core.memory", "resolve_memory_level": "x2i_core.memory",
    "OfficialAligner": "x2i_core.official",
    **{n: "x2i_core.hf_encoding" for n in ("HFEncoder", "quiet_transformers", "check_loaded", "find_chat_template",
       "read_checkpoint_tensor", "with_lm_head", "check_reserved", "video_frames", "pad_to", "pad_rows", "to_model",
       "stack_hidden_states", "masked_encoding", "answer_encoding", "token_ids", "greedy_reply",
       "reference_text", "reference_message", "joined_text")},
    "LightControlNet": "x2i_core.lightcontrol", "encode_lightcontrol_source": "x2i_core.lightcontrol",
}
_RENAMED = {"resolve_device": "resolve"}  # public name -> name in its module


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'x2i_core' has no attribute {name!r}")
    return getattr(import_module(module), _RENAMED.get(name, name))


__all__ = [
    "X2IError", "InputError", "CheckpointError", "IncompatibleError", "PluginError", "first_line",
    "hookimpl", "MultimodalPrompt", "PromptPart", "Turn",
    "ComponentSpec", "EncoderSpec", "BackboneSpec", "AlignerSpec", "AdapterSpec", "WorldSpec",
    *_LAZY,
]
