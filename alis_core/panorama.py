"""Panoramas of any length from an anchor sequence, streamed patch by patch (ALIS Sec. 3.2).

Anchor m sits at column m * anchor_spacing. The interval between anchors m and m+1 holds
`patches_per_interval` patches; each is rendered as the left half of the window (a_m, a_m+1, .),
which is exactly what the official inference computes for it (only the two anchors around a patch
and its position between them matter). With wrap=True the anchor sequence is cyclic, so K anchors
give K intervals and the strip closes into a 360° loop.

With context=True each tile of patches is computed as one strip with `CONTEXT_MARGIN` neighbouring
columns on each side at every resolution instead of zero padding at every patch edge: every column
then equals what one convolution over the whole panorama gives (to float rounding), whatever the
tiling, so no patch grid is drawn even by a model that has not learnt to hide it. The official
pixels (and the paper's independent patches) are context=False.
"""
from __future__ import annotations

import math
import operator
import warnings
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from . import options
from .errors import AlisError
from .generator import CONTEXT_MARGIN

ProgressFn = Callable[[int, int], None]


def _as_anchors(G, anchors) -> Tensor:
    w = anchors.ws if hasattr(anchors, "ws") else anchors
    if not isinstance(w, Tensor):
        raise AlisError("anchors must be a tensor of w [K, w_dim]; build them with sample_anchors()")
    w = w.detach().to(torch.float32)
    if w.ndim == 2:
        w = w.unsqueeze(1).expand(-1, G.num_ws, -1)
    if w.ndim != 3 or w.shape[1:] != (G.num_ws, G.w_dim):
        raise AlisError(f"anchors must be [K, {G.w_dim}] or [K, {G.num_ws}, {G.w_dim}], got {list(w.shape)}")
    return w


class PanoramaPlan:
    """Geometry of one panorama: which patches to render, in order, and how wide it is."""

    def __init__(self, G, anchors, wrap: bool, width: int | None):
        cfg = G.config
        self.ws = _as_anchors(G, anchors)
        k = self.ws.shape[0]
        if wrap and k < 2:
            raise AlisError(f"a wrapping panorama needs at least 2 anchors, got {k}")
        if not wrap and k < 2:
            raise AlisError(f"a panorama needs at least 2 anchors (K anchors give K-1 intervals), got {k}")
        self.wrap = wrap
        self.num_intervals = k if wrap else k - 1
        self.ppi = cfg.patches_per_interval
        self.grid_size = cfg.grid_size
        self.patch_width = cfg.patch_width
        self.height = cfg.img_resolution
        self.natural_width = options.natural_width(k, self.ppi * self.patch_width, wrap)
        if width is not None:
            width = int(width)
            if width <= 0:
                raise AlisError(f"width must be a positive number of pixels, got {width}")
            if width > self.natural_width:
                raise AlisError(f"width {width} px exceeds the {self.natural_width} px that {k} anchors give "
                                f"({G.anchor_spacing} px per interval); add anchors or lower the width")
        self.width = self.natural_width if width is None else width
        self.num_patches = math.ceil(self.width / self.patch_width)

    def window(self, patches: range) -> tuple[Tensor, list[int], list[int]]:
        """ws3 [B, num_ws, 3, w_dim], left borders and slots of the given patch indices.

        Without wrap, windows are laid out as the official inference notebook lays them out
        (centred on anchors 1, 3, 5, ...), so the pixels match it. With wrap, every patch is the
        left half of its window with folded coordinates, so the result is exactly equivariant:
        rotating the anchors rolls the panorama.
        """
        k = self.ws.shape[0]
        idx = torch.tensor(list(patches))
        m = idx // self.ppi
        q = idx % self.ppi
        odd = (m % 2 == 1) & (not self.wrap)
        first = torch.where(odd, m - 1, m)  # window's left anchor
        pos = torch.where(odd, q + self.ppi, q)  # patch index inside the window
        # The window's right anchor is only read by patches in its right half.
        right = torch.where(first + 2 < k, first + 2, first + 1)
        ws3 = torch.stack([self.ws[first % k], self.ws[(first + 1) % k], self.ws[right % k]], dim=2)
        g = self.grid_size
        return ws3, (pos - pos % g).tolist(), (pos % g).tolist()

    def strip(self, patches: range, margin: int) -> tuple[Tensor, int, int]:
        """Context rendering of consecutive patches as one strip: ws [1, num_ws, A, w_dim] holding
        every anchor its columns reach with `margin` context columns each side (the furthest at the
        4x4 resolution), and the strip's left border and slot counted from the first of them.
        Without wrap, anchors past the ends repeat the end anchors."""
        k, ppi, g = self.ws.shape[0], self.ppi, self.grid_size
        pw4 = 4 // g  # columns per patch at the 4x4 resolution, ppi * pw4 per anchor interval
        first = (patches.start * pw4 - margin) // (ppi * pw4)
        last = (patches.stop * pw4 + margin - 1) // (ppi * pw4) + 1
        idx = torch.arange(first, last + 1)
        idx = idx % k if self.wrap else idx.clamp(0, k - 1)
        index = patches.start - first * ppi
        return self.ws[idx].transpose(0, 1).unsqueeze(0), index - index % g, index % g


def _noise_seed(noise_seed: int, seed: int | None) -> int:
    """The noise seed, accepting the deprecated name `seed` (which read like the scene's seed)."""
    if seed is not None:
        if noise_seed not in (0, seed):
            raise AlisError(f"give the noise seed once: noise_seed={noise_seed} and seed={seed} disagree")
        warnings.warn("panorama(seed=...) is now noise_seed=... (the seed of the noise, not of the "
                      "scene: anchors carry the scene)", DeprecationWarning, stacklevel=3)
        noise_seed = seed
    try:
        value = operator.index(noise_seed)  # ints and numpy integers, not floats
    except TypeError:
        value = None
    if value is None or isinstance(noise_seed, bool) or not -2 ** 63 <= value < 2 ** 64:  # what torch takes
        raise AlisError(f"noise seed must be an integer in [0, 2**64 - 1], got {noise_seed!r}")
    return value


@torch.no_grad()
def iter_panorama(G, anchors, wrap: bool = False, width: int | None = None, noise_mode: str = "none",
                  batch_size: int = 8, progress: ProgressFn | None = None, noise_seed: int = 0,
                  context: bool = False, *, seed: int | None = None) -> Iterator[Tensor]:
    """Yield consecutive column tiles [3, H, w_tile] (CPU float32, [-1, 1]) of the panorama.

    Memory does not grow with the width: each tile is `batch_size` patches. `progress(done, total)`
    is called after each tile; it may raise to cancel. `noise_seed`: the seed of noise_mode
    "random" (the scene comes from the anchors); `seed` is its former, deprecated name.
    `context`: compute each tile as one strip with its neighbouring columns (no patch grid; see
    the module notes) instead of patch by patch.
    """
    noise_seed = _noise_seed(noise_seed, seed)
    plan = PanoramaPlan(G, anchors, wrap, width)
    if int(batch_size) < 1:
        raise AlisError(f"batch size must be >= 1, got {batch_size}")
    gen = torch.Generator("cpu").manual_seed(noise_seed)
    emitted = 0
    for start in range(0, plan.num_patches, int(batch_size)):
        patches = range(start, min(start + int(batch_size), plan.num_patches))
        if context:
            ws, lb, slot = plan.strip(patches, CONTEXT_MARGIN)
            out = G.patches(ws, [lb], [slot], noise_mode=noise_mode, generator=gen, canonical=True,
                            margin=CONTEXT_MARGIN, span=len(patches))  # [1, 3, H, B * pw]
        else:
            ws3, lb, slot = plan.window(patches)
            out = G.patches(ws3, lb, slot, noise_mode=noise_mode, generator=gen, canonical=plan.wrap)  # [B, 3, H, pw]
        tile = out.float().permute(1, 2, 0, 3).reshape(out.shape[1], out.shape[2], -1).cpu()
        tile = tile[:, :, : plan.width - emitted]
        emitted += tile.shape[2]
        if progress is not None:
            progress(patches.stop, plan.num_patches)
        yield tile


def panorama(G, anchors, wrap: bool = False, width: int | None = None, noise_mode: str = "none",
             batch_size: int = 8, progress: ProgressFn | None = None, noise_seed: int = 0,
             context: bool = False, *, seed: int | None = None) -> Tensor:
    """The whole panorama [3, H, W] (CPU float32, [-1, 1]).

    K anchors give (K-1) * anchor_spacing columns, or K * anchor_spacing with wrap=True.
    `width` crops a non-wrapping panorama; with wrap=True a width other than the natural one is
    reached by resampling the closed loop circularly, which keeps it seamless. `noise_seed`
    seeds noise_mode "random" (`seed` is its former, deprecated name).
    """
    noise_seed = _noise_seed(noise_seed, seed)
    natural = None if wrap else width
    tiles = list(iter_panorama(G, anchors, wrap, natural, noise_mode, batch_size, progress, noise_seed, context))
    img = torch.cat(tiles, dim=2)
    if wrap and width is not None and int(width) != img.shape[2]:
        img = resample_loop(img, int(width))
    return img


def resample_loop(img: Tensor, width: int) -> Tensor:
    """Resize a closed 360° strip [C, H, W] to `width` columns, treating it as periodic."""
    if width <= 0:
        raise AlisError(f"width must be a positive number of pixels, got {width}")
    w = img.shape[2]
    pad = max(4, math.ceil(4 * w / width))
    padded = torch.cat([img[:, :, -pad:], img, img[:, :, :pad]], dim=2)[None]
    scale = width / w
    out = F.interpolate(padded, size=(img.shape[1], round((w + 2 * pad) * scale)), mode="bicubic",
                        align_corners=False, antialias=scale < 1)[0]
    off = round(pad * scale)
    return out[:, :, off: off + width].contiguous()


def seam_score(img: Tensor, patch_width: int | None = None) -> float:
    """How visible the 360° seam of a strip [3, H, W] is, relative to interior patch boundaries.

    Mean |column W-1 - column 0| divided by the mean difference between the two columns of every
    interior patch boundary (every adjacent pair of columns if patch_width is None). About 1 means
    the seam looks like any other boundary; much more than 1 means a visible seam.
    """
    if img.ndim != 3 or img.shape[2] < 3:
        raise AlisError(f"seam_score needs a strip [3, H, W] with W >= 3, got {list(img.shape)}")
    img = img.float()
    seam = (img[:, :, -1] - img[:, :, 0]).abs().mean()
    step = patch_width or 1
    cols = torch.arange(step, img.shape[2], step)
    if len(cols) == 0:
        raise AlisError(f"a strip of {img.shape[2]} px has no interior patch boundary of width {patch_width}")
    interior = (img[:, :, cols] - img[:, :, cols - 1]).abs().mean()
    return float(seam / interior.clamp_min(1e-12))


def patch_grid_score(img: Tensor, patch_width: int) -> float:
    """How visible the patch grid of a strip [3, H, W] is: the mean |difference| between adjacent
    columns where one of them is a patch's first or last column (the wrap seam included), divided
    by the same over all other adjacent pairs. About 1: patch edges look like the rest of the
    image; a model that draws lines or steps at its patch edges scores several times more."""
    if img.ndim != 3 or patch_width < 4 or img.shape[2] < 2 * patch_width:
        raise AlisError(f"patch_grid_score needs a strip [3, H, W] at least two patches of {patch_width} >= 4 px "
                        f"wide, got {list(img.shape)}")
    img = img.float()
    diff = (torch.roll(img, -1, dims=2) - img).abs().mean(dim=(0, 1))  # [W]: column i+1 - column i, cyclic
    left = torch.arange(img.shape[2]) % patch_width  # position of column i in its patch
    edge = (left == 0) | (left >= patch_width - 2)  # pairs touching a patch's first or last column
    return float(diff[edge].mean() / diff[~edge].mean().clamp_min(1e-12))
