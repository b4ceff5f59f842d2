"""ALIS Panorama, ALIS Seam Check and ALIS Scroll Frames.

ComfyUI IMAGE tensors are [B, H, W, 3] float32 in [0, 1]; alis_core.image converts to and
from the library's [3, H, W] in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Callable

import torch

import alis_core
from alis_core import image as alis_image
from alis_core import options, outputs

from .anchors import AlisAnchors
from .errors import alis_errors_as_input_error, input_error
from .loaders import AlisModel
from .spec import ALIS_ANCHORS, ALIS_MODEL, SEED_MAX, NodeSpec, Out, Param

NODE = "ALIS Panorama"
SEAM_NODE = "ALIS Seam Check"
SCROLL_NODE = "ALIS Scroll Frames"
NOISE_MODES = options.NOISE_MODES
DEFAULTS = options.COMFYUI
NATURAL_WIDTH = -1  # width input value meaning "as wide as the anchors reach"
MAX_WIDTH = 1 << 20
MAX_BATCH = 256

Progress = Callable[[int, int], None]


def natural_width(model: AlisModel, num_anchors: int, wrap: bool) -> int:
    """Columns K anchors span: K x spacing with wrap (a closed loop), else (K - 1) x spacing."""
    return options.natural_width(num_anchors, model.anchor_spacing, wrap)


def make_panorama(model: AlisModel, anchors: AlisAnchors, wrap: bool = True, width: int = NATURAL_WIDTH,
                  noise_mode: str = "none", batch_size: int = 8, noise_seed: int = 0,
                  patch_context: bool = DEFAULTS.context, progress: Progress | None = None) -> torch.Tensor:
    """Node function: one panorama -> IMAGE [1, H, W, 3] float32 in [0, 1] (CPU).

    progress(done, total) is called after every batch of frames and may raise to cancel.
    """
    k = len(anchors)
    if anchors.w.shape[1] != model.w_dim:
        raise input_error(NODE, "anchors", f"anchors have w_dim {anchors.w.shape[1]} but the model expects "
                          f"{model.w_dim}; make them with ALIS Anchors from this model")
    if k < 2:
        need = "a 360° loop (wrap)" if wrap else "a panorama"
        raise input_error(NODE, "anchors", f"{need} needs at least 2 anchors, got {k}; "
                          "raise num_anchors in ALIS Anchors or join more anchors")
    if width == 0 or not NATURAL_WIDTH <= width <= MAX_WIDTH:
        raise input_error(NODE, "width", f"got {width}; use 1..{MAX_WIDTH} pixels, "
                          f"or {NATURAL_WIDTH} for the natural width of the anchors")
    if noise_mode not in NOISE_MODES:
        raise input_error(NODE, "noise_mode", f"unknown mode '{noise_mode}'; choose one of {', '.join(NOISE_MODES)}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise input_error(NODE, "batch_size", f"got {batch_size}; use 1..{MAX_BATCH} frames per batch")
    if isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or not 0 <= noise_seed <= SEED_MAX:
        raise input_error(NODE, "noise_seed", f"got {noise_seed!r}; use an integer 0..2^64-1")
    reach = natural_width(model, k, wrap)
    if not wrap and width > reach:  # with wrap, alis_core resamples the closed loop to any width
        need = options.anchors_for_width(width, model.anchor_spacing, wrap)
        raise input_error(NODE, "width", f"{width} px is wider than {k} anchors reach ({reach} px); lower width, "
                          f"set it to {NATURAL_WIDTH}, or raise num_anchors to {need}")
    out_width = reach if width == NATURAL_WIDTH else width
    try:  # the panorama, its [0, 1] copy and ComfyUI's IMAGE are all held in memory
        outputs.check_memory(outputs.strip_bytes(model.img_resolution, out_width),
                             f"a {out_width} x {model.img_resolution} px panorama", "lower width or num_anchors")
    except alis_core.AlisError as e:
        raise input_error(NODE, "width" if width != NATURAL_WIDTH else "anchors", str(e)) from None
    with torch.no_grad(), model.on_device() as G:
        w = anchors.w.to(device=model.device)
        with alis_errors_as_input_error(NODE, "anchors"):
            img = alis_core.panorama(G, w, wrap=wrap, width=None if width == NATURAL_WIDTH else width,
                                     noise_mode=noise_mode, batch_size=batch_size, progress=progress,
                                     noise_seed=noise_seed, context=patch_context)  # [3, H, W] in [-1, 1]
    if not bool(torch.isfinite(img).all()):
        raise input_error(NODE, "model", "the panorama came out with NaN or infinite values (broken weights, or a "
                          "float16 overflow); load the checkpoint as float32 or pick another one")
    return alis_image.chw_to_hwc(alis_image.to_unit(img.float().cpu()))[None].contiguous()


def check_image(node: str, input_name: str, image: torch.Tensor) -> None:
    """Reject anything that is not a ComfyUI IMAGE [B, H, W, 3] of finite values."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3 or 0 in image.shape:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise input_error(node, input_name, f"expected an RGB IMAGE [batch, height, width, 3], got {shape}; "
                          "connect an image output (e.g. ALIS Panorama)")
    if not bool(torch.isfinite(image).all()):
        raise input_error(node, input_name, "the image holds NaN or infinite values; check the node that made it")


def check_float(node: str, input_name: str, value, low: float, high: float) -> float:
    """A FLOAT input within its declared [low, high]; NaN and infinities refused."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not low <= x <= high:  # also False for NaN
        raise input_error(node, input_name, f"got {value}; use a number within {low:g}..{high:g}")
    return x


def seam_check(image: torch.Tensor, columns: int = 16) -> tuple[float, torch.Tensor]:
    """Node function: seam score of the first image (~1 = seamless) and a preview of its 360° seam.

    image: IMAGE [B, H, W, 3] in [0, 1]. The preview [B, H, 2 * columns, 3] puts the last
    `columns` columns left of the first `columns`, so the wrap seam runs down its middle.
    """
    check_image(SEAM_NODE, "image", image)
    width = image.shape[2]
    if not 1 <= columns <= width // 2:
        raise input_error(SEAM_NODE, "columns", f"got {columns} for a {width} px wide image; use 1..{width // 2}")
    with alis_errors_as_input_error(SEAM_NODE, "image"):
        score = alis_core.seam_score(alis_image.from_unit(alis_image.hwc_to_chw(image[0].float())))
    preview = torch.cat([image[:, :, -columns:], image[:, :, :columns]], dim=2)
    return float(score), preview.contiguous()


def scroll_frames(image: torch.Tensor, frame_width: int = 0, num_frames: int = 48,
                  loop: bool = True) -> torch.Tensor:
    """Node function: a camera sliding left to right along the first panorama -> IMAGE [N, H, fw, 3].

    loop=True (a wrapping panorama): the camera travels once round the 360°, wrapping past the
    right edge; frame N would equal frame 0, so the video loops. loop=False: from the left end to
    the right end. frame_width 0 -> 16:9 frames of the panorama's height.
    """
    check_image(SCROLL_NODE, "image", image)
    height, width = image.shape[1], image.shape[2]
    if frame_width == 0:
        frame_width = min(width, 2 * round(height * 16 / 9 / 2))
    if not 1 <= frame_width <= width:
        raise input_error(SCROLL_NODE, "frame_width", f"got {frame_width} for a {width} px panorama; "
                          f"use 1..{width}, or 0 for 16:9 frames")
    if num_frames < 1:
        raise input_error(SCROLL_NODE, "num_frames", f"got {num_frames}; use 1 or more")
    if loop:
        starts = torch.arange(num_frames, dtype=torch.float64) * (width / num_frames)
    else:
        starts = torch.linspace(0, width - frame_width, num_frames, dtype=torch.float64)
    starts = starts.round().long()  # [N]
    cols = (starts[:, None] + torch.arange(frame_width)[None, :]) % width  # [N, fw]
    return image[0][:, cols].permute(1, 0, 2, 3).contiguous()  # [H, N, fw, 3] -> [N, H, fw, 3]


PANORAMA = NodeSpec(
    node_id="ALISPanorama",
    display_name=NODE,
    category="ALIS/generate",
    description="Generates a landscape panorama through the anchors; with wrap on it closes into a "
                "seamless 360° loop.",
    function=make_panorama,
    inputs=(
        Param("model", ALIS_MODEL, tooltip="The generator from Load ALIS Checkpoint."),
        Param("anchors", ALIS_ANCHORS, tooltip="Anchors from ALIS Anchors / ALIS Join Anchors (at least 2)."),
        Param("wrap", "BOOLEAN", default=True,
              tooltip="Close the panorama into a seamless 360° loop (last anchor blends back into the first)."),
        Param("width", "INT", default=NATURAL_WIDTH, min=NATURAL_WIDTH, max=MAX_WIDTH,
              tooltip="Output width in pixels; -1 = natural width (anchors x spacing with wrap, "
                      "(anchors - 1) x spacing without). With wrap another width resamples the loop "
                      "(still seamless); without wrap it crops."),
        Param("noise_mode", "COMBO", options=NOISE_MODES, default="none",
              tooltip="Per-pixel noise: 'none' = no noise (as the official panoramas; seamless, exact loop), "
                      "'const' = the model's fixed noise map (repeats every frame), "
                      "'random' = fresh noise from noise_seed."),
        Param("batch_size", "INT", default=8, min=1, max=MAX_BATCH,
              tooltip="Frames generated at once; lower it if you run out of memory."),
        Param("noise_seed", "INT", default=0, min=0, max=SEED_MAX,
              tooltip="Seed for noise_mode 'random'; ignored otherwise."),
        # optional: prompts saved before it existed still run
        Param("patch_context", "BOOLEAN", default=DEFAULTS.context, optional=True,
              tooltip="Compute each batch of patches together with its neighbouring columns, so that no "
                      "patch grid shows (every column as if the panorama were one image). Off: every patch "
                      "on its own, as in the paper (the official model's exact pixels)."),
    ),
    outputs=(Out("image", "IMAGE", "The panorama, [1, height, width, 3]."),),
    extras=("progress",),
)

SEAM_CHECK = NodeSpec(
    node_id="ALISSeamCheck",
    display_name=SEAM_NODE,
    category="ALIS/inspect",
    description="Measures how well a 360° panorama closes: the last and first columns side by side.",
    function=seam_check,
    inputs=(
        Param("image", "IMAGE", tooltip="A panorama (first image of the batch is scored)."),
        Param("columns", "INT", default=16, min=1, max=4096,
              tooltip="Columns taken from each end for the preview (the seam is in its middle)."),
    ),
    outputs=(
        Out("seam_score", "FLOAT", "Wrap-seam difference over interior difference; about 1 = seamless, "
                                   "much larger = a visible seam."),
        Out("preview", "IMAGE", "Last columns then first columns: the 360° seam runs down the middle."),
    ),
)

SCROLL = NodeSpec(
    node_id="ALISScrollFrames",
    display_name=SCROLL_NODE,
    category="ALIS/video",
    description="Frames of a camera sliding along the panorama, for video nodes (e.g. Save Animated WEBP).",
    function=scroll_frames,
    inputs=(
        Param("image", "IMAGE", tooltip="A panorama from ALIS Panorama (first image of the batch is used)."),
        Param("frame_width", "INT", default=0, min=0, max=MAX_WIDTH,
              tooltip="Width of each frame in pixels; 0 = 16:9 frames of the panorama's height."),
        Param("num_frames", "INT", default=48, min=1, max=10000,
              tooltip="Number of frames; the camera covers the panorama once over all of them."),
        Param("loop", "BOOLEAN", default=True,
              tooltip="Wrap around past the right edge (for a 360° panorama): the video loops seamlessly. "
                      "Off: travel from the left end to the right end."),
    ),
    outputs=(Out("frames", "IMAGE", "Frames [num_frames, height, frame_width, 3]."),),
)
