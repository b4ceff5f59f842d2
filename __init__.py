"""ALIS Panoramas as a ComfyUI custom node pack (this folder goes into ComfyUI/custom_nodes/).

ComfyUI imports this folder by its path, so everything below is relative. The node functions
(nodes/) import without ComfyUI; the V3 nodes are registered only when comfy_api imports.
"""
import os
import sys

try:
    import alis_core  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # used straight from custom_nodes/: the library sits next to this file
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from .nodes import NODE_SPECS  # noqa: E402

# ComfyUI serves this folder at /extensions/<pack>/ and loads its .js files: the ALIS Preview 360
# extension (comfyui/preview360.js) and the vendored three.js it imports (three/).
WEB_DIRECTORY = "./alis_core/web"

try:
    import comfy_api.latest  # noqa: F401
except ImportError:
    pass  # no ComfyUI: NODE_SPECS and the node functions in nodes/ still import
else:
    from .nodes.v3 import comfy_entrypoint  # noqa: F401
