"""x2i for ComfyUI: any prompt (text, images, video frames, audio) -> CONDITIONING for Comfy's FLUX models.

ComfyUI imports this folder as a custom-node package and reads the two mappings below. It needs the x2i
distribution installed in ComfyUI's Python (`pip install x2i`, or `pip install -e /path/to/x2i`).
"""
from .x2i_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
