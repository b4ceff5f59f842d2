"""ALIS Preview 360: an interactive three.js view of any 2:1 equirect IMAGE, inside the node.

Like ComfyUI's PreviewImage, the node saves a temporary PNG (the temp folder, type "temp"); its UI
output "alis_360" lists the files, and the frontend extension (alis_core/web/comfyui/preview360.js,
served from the pack's WEB_DIRECTORY) shows the first one in a three.js canvas you can drag.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from alis_core import image as alis_image
from alis_core import outputs

from .errors import alis_errors_as_input_error
from .skybox import SavePathFn, check_equirect, local_save_path
from .spec import NodeSpec, Param

PREVIEW_NODE = "ALIS Preview 360"
UI_KEY = "alis_360"  # the key of the node's UI output that preview360.js reads
PREFIX = "ALIS_preview360"


def preview_360(image: torch.Tensor, *, output_dir: str, suffix: str = "",
                save_path: SavePathFn = local_save_path) -> dict[str, list[dict[str, str]]]:
    """Node function: save each equirect [B, H, 2H, 3] as a temporary PNG for the 360° viewer.

    `suffix` keeps runs apart (ComfyUI's previews add 5 random letters; the caller draws them).
    Returns the UI dict {"alis_360": [{"filename", "subfolder", "type": "temp"}, ...]}.
    """
    check_equirect(PREVIEW_NODE, image)
    folder, filename, counter, subfolder, _ = save_path(PREFIX + suffix, output_dir, image.shape[2], image.shape[1])
    os.makedirs(folder, exist_ok=True)
    files = []
    for i, eq in enumerate(alis_image.hwc_to_chw(image.float().cpu().clamp(0, 1))):
        name = f"{filename}_{counter + i:05}_.png"
        with alis_errors_as_input_error(PREVIEW_NODE, "image"):
            outputs.check_replaceable(Path(folder, name), "image", option="file")
            alis_image.save_png(Path(folder, name), eq)
        files.append({"filename": name, "subfolder": subfolder, "type": "temp"})
    return {UI_KEY: files}


PREVIEW = NodeSpec(
    node_id="ALISPreview360",
    display_name=PREVIEW_NODE,
    category="ALIS/skybox",
    description="Shows a 2:1 equirect sky (any, not only ALIS's) in an interactive 360° viewer inside the node: "
                "drag to look around, wheel to zoom.",
    function=preview_360,
    inputs=(Param("image", "IMAGE", tooltip="A 2:1 equirect image, e.g. from ALIS Panorama to Equirect; "
                                            "the first of a batch is shown."),),
    output_node=True,
    extras=("output_dir", "suffix", "save_path"),
)
