"""ComfyUI nodes for ALIS panoramas and skyboxes.

The node logic lives in plain functions (loaders, anchors, panorama, skybox) that import
without ComfyUI; `NODE_SPECS` describes every node as data. The ComfyUI V3 classes are in
`nodes.v3`, which only the pack's root __init__ imports, and only when ComfyUI is present.
"""
from . import anchors, invert, loaders, panorama, preview, skybox
from .anchors import AlisAnchors
from .loaders import AlisModel
from .spec import NodeSpec

NODE_SPECS: tuple[NodeSpec, ...] = (
    loaders.LOAD_CHECKPOINT,
    anchors.ANCHORS,
    anchors.JOIN,
    panorama.PANORAMA,
    skybox.EQUIRECT,
    skybox.CUBEMAP,
    panorama.SEAM_CHECK,
    panorama.SCROLL,
    preview.PREVIEW,
    invert.INVERT,
    invert.SAVE,
    invert.LOAD,
    skybox.SAVE,
)

__all__ = ["NODE_SPECS", "AlisAnchors", "AlisModel", "NodeSpec"]
