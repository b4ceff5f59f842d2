"""ALIS Invert Image, ALIS Save Anchors and ALIS Load Anchors: a photo continued into a loop.

ALIS Invert Image fits anchors that redraw a photo; join them with new scenes (ALIS Join Anchors)
and render with ALIS Panorama (wrap and patch_context on): the loop holds the photo at the
columns the node reports.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

import alis_core
from alis_core import image as alis_image
from alis_core import invert as alis_invert
from alis_core import options

from .anchors import AlisAnchors
from .errors import alis_errors_as_input_error, input_error
from .loaders import AlisModel
from .panorama import check_image
from .spec import ALIS_ANCHORS, ALIS_MODEL, NodeSpec, Out, Param

INVERT_NODE = "ALIS Invert Image"
SAVE_NODE = "ALIS Save Anchors"
LOAD_NODE = "ALIS Load Anchors"
MAX_STEPS = 10_000
ANCHORS_SUFFIX = ".safetensors"

Progress = Callable[[int, int], None]


def invert_photo(model: AlisModel, image: torch.Tensor, steps: int = options.INVERT_STEPS, seed: int = 0,
                 progress: Progress | None = None) -> tuple[AlisAnchors, torch.Tensor, float, str]:
    """Node function: anchors that redraw the first image of `image` (IMAGE [B, H, W, 3] in [0, 1]).

    -> (anchors [A, w_dim], the reconstruction IMAGE [1, H', W', 3] at the model's height, its PSNR
    in dB, a line saying which columns of a loop starting with these anchors hold the photo).
    progress(done, total) is called after every step and may raise to cancel.
    """
    check_image(INVERT_NODE, "image", image)
    if not 0 <= steps <= MAX_STEPS:
        raise input_error(INVERT_NODE, "steps", f"got {steps}; use 0..{MAX_STEPS}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= options.MAX_SEED:
        raise input_error(INVERT_NODE, "seed", f"got {seed!r}; use an integer 0..2^63-1")
    photo = alis_image.hwc_to_chw(image[0].float().cpu())  # [3, H, W] in [0, 1]
    with model.on_device() as G:
        with alis_errors_as_input_error(INVERT_NODE, "image"):
            r = alis_invert.invert_image(G, photo, steps=steps, seed=seed, progress=progress)
    x0, x1 = r.columns
    where = (f"photo at columns {x0}..{x1} of a loop that starts with these {r.anchors.shape[0]} anchors; "
             f"reconstruction PSNR {r.psnr:.2f} dB")
    anchors = AlisAnchors(w=r.anchors, label=f"photo {x0}..{x1}")
    recon = alis_image.chw_to_hwc(alis_image.to_unit(r.recon))[None].contiguous()
    return anchors, recon, float(r.psnr), where


def save_anchors_file(model: AlisModel, anchors: AlisAnchors, filename_prefix: str = "ALIS/anchors", *,
                      output_dir: str) -> dict[str, str]:
    """Node function: write the anchors as <prefix>_<counter>.safetensors in the output folder
    (with the model's config, checked when loaded). -> {"filename", "subfolder"}."""
    if anchors.w.shape[1] != model.w_dim:
        raise input_error(SAVE_NODE, "anchors", f"anchors have w_dim {anchors.w.shape[1]} but the model expects "
                          f"{model.w_dim}; connect the model that made them")
    subfolder, stem = os.path.split(os.path.normpath(filename_prefix))
    folder = Path(output_dir, subfolder)
    if not stem or not folder.resolve().is_relative_to(Path(output_dir).resolve()):
        raise input_error(SAVE_NODE, "filename_prefix", f"'{filename_prefix}' points outside the output folder; "
                          "use a relative prefix like 'ALIS/anchors'")
    used = [int(p.stem[len(stem) + 1:]) for p in folder.glob(f"{stem}_*{ANCHORS_SUFFIX}")
            if p.stem[len(stem) + 1:].isdigit()]
    name = f"{stem}_{max(used, default=0) + 1:05}{ANCHORS_SUFFIX}"
    with alis_errors_as_input_error(SAVE_NODE, "filename_prefix"):
        alis_core.anchors.save_anchors(folder / name, anchors.w, model.generator, {"label": anchors.label})
    return {"filename": name, "subfolder": subfolder}


def anchors_file_names(input_dir: str | os.PathLike) -> list[str]:
    """The .safetensors files under the input folder (relative, sorted): the Load node's choices."""
    root = Path(input_dir)
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{ANCHORS_SUFFIX}") if p.is_file())


def load_anchors_file(model: AlisModel, anchors_file: str, *, input_dir: str) -> AlisAnchors:
    """Node function: anchors from a file in the input folder, refused if made for another model."""
    root = Path(input_dir).resolve()
    path = (root / anchors_file).resolve()
    if not path.is_relative_to(root):
        raise input_error(LOAD_NODE, "anchors_file", f"'{anchors_file}' points outside the input folder")
    with alis_errors_as_input_error(LOAD_NODE, "anchors_file"):
        w, info = alis_core.anchors.load_anchors(path, model.generator)
    label = info.get("label") or (f"photo {info['columns'][0]}..{info['columns'][1]}" if info.get("columns")
                                  else Path(anchors_file).stem)
    return AlisAnchors(w=w, label=str(label))


INVERT = NodeSpec(
    node_id="ALISInvertImage",
    display_name=INVERT_NODE,
    category="ALIS/anchors",
    description="Fits anchors so that the model redraws a photo; join them with new scenes (ALIS Join "
                "Anchors) and render a wrapping panorama: the 360° loop continues the photo.",
    function=invert_photo,
    inputs=(
        Param("model", ALIS_MODEL, tooltip="The generator from Load ALIS Checkpoint."),
        Param("image", "IMAGE", tooltip="The photo (first image of the batch); it is scaled to the model's height, "
                                        "and one wider than a frame spans several frames."),
        Param("steps", "INT", default=options.INVERT_STEPS, min=0, max=MAX_STEPS,
              tooltip="Optimisation steps: more fit the photo better and take longer."),
        Param("seed", "INT", default=0, min=0, max=options.MAX_SEED,
              tooltip="Seed of the starting codes; the same seed gives the same anchors."),
    ),
    outputs=(
        Out("anchors", ALIS_ANCHORS, "The photo's anchors: put them first and join new scenes after them."),
        Out("reconstruction", "IMAGE", "What the loop shows where the photo is."),
        Out("psnr", "FLOAT", "Reconstruction PSNR in dB (higher = closer to the photo)."),
        Out("columns", "STRING", "Which columns of the loop hold the photo."),
    ),
    extras=("progress",),
)

SAVE = NodeSpec(
    node_id="ALISSaveAnchors",
    display_name=SAVE_NODE,
    category="ALIS/anchors",
    description="Saves anchors (e.g. an inverted photo's) as a .safetensors file in the output folder.",
    function=save_anchors_file,
    inputs=(
        Param("model", ALIS_MODEL, tooltip="The generator the anchors belong to (its config is stored and checked "
                                           "on load)."),
        Param("anchors", ALIS_ANCHORS, tooltip="Anchors to save."),
        Param("filename_prefix", "STRING", default="ALIS/anchors",
              tooltip="File name prefix inside the output folder; a counter is appended."),
    ),
    output_node=True,
    extras=("output_dir",),
)

LOAD = NodeSpec(
    node_id="ALISLoadAnchors",
    display_name=LOAD_NODE,
    category="ALIS/anchors",
    description="Loads anchors saved by ALIS Save Anchors or `alis invert` (put the file in the input folder).",
    function=load_anchors_file,
    inputs=(
        Param("model", ALIS_MODEL, tooltip="The generator the anchors were made with (checked)."),
        Param("anchors_file", "COMBO", options_from="alis_anchor_files",
              tooltip="An anchors .safetensors file in ComfyUI's input folder."),
    ),
    outputs=(Out("anchors", ALIS_ANCHORS, "The anchors from the file."),),
    extras=("input_dir",),
)
