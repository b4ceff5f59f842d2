"""What one forward pass of the synthesis network shares across its layers: where the patches lie,
the per-column styles (SA-AdaIN), the coordinate features and the noise they read, and the caches
that keep these across passes.

Vocabulary (ALIS, Skorokhodov et al. 2021): an anchor is a latent w placed every `anchor_spacing`
pixels; a window is three consecutive anchors; a patch is `patch_width` columns, computed on its
own from its window and its position in that window (`left_border`, `slot`).
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .config import GeneratorConfig
from .errors import AlisError
from .layers import _version, coord_features

# Context rendering: extra columns each side at every resolution that make a strip's columns equal
# one convolution over the whole panorama (4 leave visible errors, 6 are exact to float rounding:
# tests/core/test_context.py). 8, so that every block reads a multiple of 4 more columns, the
# widths oneDNN's convolutions handle best.
CONTEXT_MARGIN = 8
CHANNELS_LAST = torch.channels_last


@dataclass
class PatchPositions:
    """Where each element of a batch sits: its first patch is the `slot`-th patch of a frame whose
    left border is `left_border` patches from the first anchor it is given (a window's left anchor).
    Positions live on the CPU (numpy).

    By default an element is one patch computed on its own, as in the paper (`span` 1, `margin` 0).
    Context rendering computes `span` consecutive patches as one strip, with `margin` extra columns
    on each side at every resolution (the next block reads `margin // 2` of them): its convolutions
    see the neighbouring columns instead of zero padding, and the strip is cropped at the end.
    """

    left_border: np.ndarray  # [B] int
    slot: np.ndarray  # [B] int, 0 <= slot < grid_size
    canonical: bool = False  # fold positions by whole anchor intervals onto the first (exact periodicity)
    margin: int = 0  # extra columns each side, at every resolution (even)
    span: int = 1  # patches per batch element

    @property
    def index(self) -> np.ndarray:
        return self.left_border + self.slot

    def columns(self, pw: int, margin: int) -> np.ndarray:
        """Columns [B, span * pw + 2 * margin] at a resolution with `pw` columns per patch,
        counted from the first anchor (may be negative or past the window without enough anchors)."""
        return (self.index * pw - margin)[:, None] + np.arange(self.span * pw + 2 * margin)[None, :]


class ColumnStyles:
    """Per-column style interpolation (ALIS Sec. 3.2, Spatially-Aligned AdaIN) at one resolution.

    Anchors sit every w_dist columns; between anchors k and k+1 the styles go linearly from one to
    the other (sampled at pixel centres). A window is three anchors (two intervals); context
    rendering passes as many as its columns reach.
    """

    def __init__(self, cfg: GeneratorConfig, res: int, margin: int, pos: PatchPositions, num_anchors: int, device):
        w_dist = int(0.5 * cfg.w_coord_dist * res)
        pw = res // cfg.grid_size
        m = cfg.w_lerp_multiplier
        t = torch.linspace(1 / (2 * w_dist), 1 - 1 / (2 * w_dist), w_dist, dtype=torch.float32) * m
        cols = torch.from_numpy(pos.columns(pw, margin))  # [B, W]
        k = cols.div(w_dist, rounding_mode="floor")  # the anchor on each column's left
        if cols.min() < 0 or k.max() + 1 >= num_anchors:
            raise AlisError(f"patch position {int(pos.index.max())} lies outside its anchor window "
                            f"({num_anchors} anchors)")
        tt = t[cols % w_dist]
        self.k = k.to(device)  # [B, W]
        self.coef_a = (m - tt).unsqueeze(1).to(device)  # [B, 1, W]: weight of the left anchor
        self.coef_b = tt.unsqueeze(1).to(device)  # [B, 1, W]: weight of the right anchor
        self.coef_a_t, self.coef_b_t = self.coef_a.transpose(1, 2), self.coef_b.transpose(1, 2)  # [B, W, 1]
        self._k_cpu = k
        self.single = bool((k == k[:, :1]).all())  # every element lies between the same two anchors
        self.k_key = k[:, 0].numpy().tobytes()

    @functools.cached_property
    def runs(self) -> list[tuple[int, int, int, int]]:
        """(element, first column, end column, left anchor) of each run of columns between two
        anchors (a strip across anchors; columns grow left to right, so each anchor is one run)."""
        out = []
        for i, row in enumerate(self._k_cpu):
            bounds = [0] + (torch.nonzero(row[1:] != row[:-1]).flatten() + 1).tolist() + [row.numel()]
            out += [(i, j0, j1, int(row[j0])) for j0, j1 in zip(bounds[:-1], bounds[1:])]
        return out

    def __call__(self, styles: Tensor) -> Tensor:
        """styles [B, A, C] (one per anchor) -> modulation [B, C, 1, W]."""
        s = styles.transpose(1, 2)  # [B, C, A]
        k = self.k.unsqueeze(1).expand(-1, s.shape[1], -1)  # [B, C, W]
        return (s.gather(2, k) * self.coef_a + s.gather(2, k + 1) * self.coef_b).unsqueeze(2)

    def ends(self, styles: Tensor) -> tuple[Tensor, Tensor]:
        """The two anchor styles each element interpolates between, [B, C] each (`single` only)."""
        rows, k = torch.arange(styles.shape[0], device=styles.device), self.k[:, 0]
        return styles[rows, k], styles[rows, k + 1]


class FeatureCache:
    """A small LRU cache of coordinate features and column styles, keyed by resolution and patch position."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        self._d[key] = value
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)


class Scratch(OrderedDict):
    """Tensors derived from the weights and rebuilt on demand: copies and pickles start empty
    (oneDNN-layout tensors can be neither deep-copied nor pickled)."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return (type(self), ())


class RenderContext:
    """Everything a forward pass shares across layers: the render plan, positions, per-resolution
    column styles, coordinate features and noise."""

    def __init__(self, cfg: GeneratorConfig, pos: PatchPositions, num_anchors: int, device, noise_mode: str,
                 generator: torch.Generator | None, cache: FeatureCache, plan):
        self.cfg, self.pos, self.device, self.cache, self.plan = cfg, pos, device, cache, plan
        self.dtype = plan.dtype
        self.fast = plan.fast  # NHWC activations, demodulation and gain folded into the weights
        self.inplace = plan.inference  # overwrite activations nobody needs
        self.num_anchors = num_anchors
        self.noise_mode, self.generator = noise_mode, generator
        # what cached tensors derived from the positions are keyed by (inference tensors cannot
        # take part in a graph: keep them apart)
        self.pos_key = (pos.left_border.tobytes(), pos.slot.tobytes(), pos.span, pos.margin, str(device),
                        torch.is_inference_mode_enabled())
        self._cols: dict[tuple[int, int], ColumnStyles] = {}
        # every layer's styles precomputed for the pass (the CPU engine's style table), or None
        self.table: Tensor | None = None  # [B, A, sum of channels]
        self.table_slices: dict[int, slice] = {}  # id(module) -> its columns

    def margin(self, res: int, width: int) -> int:
        """Context columns on each side of activations `width` columns wide at resolution `res`."""
        return (width - self.pos.span * (res // self.cfg.grid_size)) // 2

    def column_styles(self, res: int, width: int) -> ColumnStyles:
        """The column styles of activations [B, C, res, width]."""
        if (res, width) not in self._cols:  # shared by a pass's layers, and cached across passes
            key = ("columns", res, width, self.num_anchors, self.pos_key)
            cols = self.cache.get(key)
            if cols is None:
                cols = ColumnStyles(self.cfg, res, self.margin(res, width), self.pos, self.num_anchors, self.device)
                self.cache.put(key, cols)
            self._cols[res, width] = cols
        return self._cols[res, width]

    def styles(self, module: nn.Module, w3: Tensor) -> Tensor:
        """A layer's styles [B, A, C] for its anchors w3 [B, A, w_dim] (from the pass's table if it has one)."""
        sl = self.table_slices.get(id(module))
        return module.styles(w3) if sl is None else self.table[:, :, sl]

    def modulation(self, module: nn.Module, w3: Tensor, res: int, width: int, dtype) -> Tensor:
        """SA-AdaIN input scales [B, C, 1, width] (`dtype`) of a layer whose inputs are [B, C, res, width]
        (ALIS Sec. 3.2: each column's style interpolated between the anchors around it)."""
        mod = self.column_styles(res, width)(self.styles(module, w3)).to(dtype)
        # with NHWC activations, channels innermost here too: a broadcast multiply then vectorises
        return mod.contiguous(memory_format=CHANNELS_LAST) if self.fast else mod

    def coords(self, block: int, res: int, width: int, basis: Tensor, use_cosine: bool, stacked: bool = False):
        """Coordinate features (ALIS Sec. 3.3) of every element at resolution `res`: B tensors
        [D, res, width], or with `stacked` one [B, D, res, width] (cached per set of positions too).

        x is relative to the window, as the official `generate_shifted_coords` computes it.
        Features depend on the block and the position only, so they are cached per position.
        """
        if stacked:
            key = ("stacked", block, width, self.pos_key, self.pos.canonical, self.dtype, self.fast)
            out = self.cache.get(key)
            if out is None:
                out = torch.stack(self.coords(block, res, width, basis, use_cosine))
                if self.fast:
                    out = out.contiguous(memory_format=CHANNELS_LAST)
                self.cache.put(key, out)
            return out
        cfg, pos = self.cfg, self.pos
        pw = res // cfg.grid_size
        w_dist = int(0.5 * cfg.w_coord_dist * res)
        margin = self.margin(res, width)
        cols = pos.columns(pw, margin)  # [B, width]
        out = []
        for i, (lb, slot) in enumerate(zip(pos.left_border.tolist(), pos.slot.tolist())):
            key = (block, lb, slot, margin, pos.span, pos.canonical, self.dtype, self.fast, str(self.device))
            feats = self.cache.get(key)
            if feats is None:
                # x relative to the window: its left anchor at -1 - w_coord_dist, its centre at -1
                shift = (lb * pw - w_dist) / w_dist * cfg.w_coord_dist + 1.0
                x = (slot * pw - margin + np.arange(width)) / res * 2 - 1 + shift
                if pos.canonical:
                    # Every anchor interval equals the first one up to whole periods of every
                    # feature (SynthesisNetwork.periodic): fold the columns onto it for exact equality.
                    x = x - (cols[i] // w_dist) * cfg.w_coord_dist
                y = (res - 1 - np.arange(res)) / res * 2 - 1
                feats = coord_features(basis, x[None], y, use_cosine)[0].to(self.device, self.dtype)  # [D, res, width]
                if self.fast:  # the NHWC layout of the block input they are written into
                    feats = feats.unsqueeze(0).contiguous(memory_format=CHANNELS_LAST)[0]
                self.cache.put(key, feats)
            out.append(feats)
        return out

    def noise(self, layer: nn.Module, shape, gain: float = 1.0) -> Tensor | None:
        """The layer's noise [B, 1, h, w] (dense) for outputs of `shape`, times its strength (and
        then `gain`, rounded to the compute dtype after each product); None without noise."""
        if self.noise_mode == "none":
            return None
        b, _, h, w = shape
        if self.noise_mode == "const":
            frozen = not (layer.noise_strength.requires_grad and torch.is_grad_enabled())
            key = (self.pos_key, h, w, self.dtype, gain, _version(layer.noise_const), _version(layer.noise_strength))
            if frozen and key in layer.noise_cache:
                return layer.noise_cache[key]
            # column j of patch slot s reads column s * pw + j of the frame-wide buffer; context
            # columns read their neighbours' (the buffer repeats every frame)
            slots = torch.from_numpy(self.pos.slot).to(self.device)
            pw, margin = h // self.cfg.grid_size, self.margin(h, w)
            cols = (slots[:, None] * pw - margin + torch.arange(w, device=self.device)[None, :]) % h  # [B, w]
            n = layer.noise_const.to(self.dtype)[:, cols].permute(1, 0, 2).contiguous().unsqueeze(1)  # [B, 1, h, w]
            n = n * layer.noise_strength.to(self.dtype)
            if gain != 1:
                n = n * gain
            if frozen:  # one or two position patterns recur (a frame's; a panorama's tiles and its last)
                layer.noise_cache[key] = n
                while len(layer.noise_cache) > 2:
                    layer.noise_cache.popitem(last=False)
            return n
        n = torch.randn([b, 1, h, w], generator=self.generator, device="cpu")  # drawn on the CPU: same on every device
        n = n.to(device=self.device, dtype=self.dtype) * layer.noise_strength.to(self.dtype)
        return n * gain if gain != 1 else n
