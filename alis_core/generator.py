"""The ALIS generator: a mapping network and a patch-wise, equivariant StyleGAN2 synthesis network.

Vocabulary (ALIS, Skorokhodov et al. 2021):
- anchor: a latent w placed on a horizontal grid, one every `anchor_spacing` pixels;
- window: three consecutive anchors (left, centre, right), spanning two anchor intervals;
- patch: `patch_width` columns of a frame; a frame is `grid_size` patches; every patch is
  computed on its own, from its window and its position in that window (`left_border`, `slot`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GeneratorConfig
from . import kernels as _kernels
from .errors import AlisError
from .layers import (LRELU_ALPHA, LRELU_GAIN, FullyConnected, _version, conv3x3_winograd, conv_transpose3x3_up2,
                     conv_up2_polyphase, _filter_2d, coord_features, logarithmic_basis, normalize_2nd_moment,
                     polyphase_weight, upsample2d, winograd_weight)

NOISE_MODES = ("none", "const", "random")
CHANNELS_LAST = torch.channels_last
SMALL_DECONV_PIXELS = 4096  # fused float32 path: transposed convolutions of inputs this small are matmuls
WINOGRAD_MIN_CHANNELS = 128  # fused float32 path: 3x3 convolutions this wide (in and out) and
WINOGRAD_MIN_PIXELS = 1024  # this large (batch x height x width) use Winograd F(4x4, 3x3)
WINOGRAD2_MIN_CHANNELS = 256  # smaller ones this wide and large use F(2x2, 3x3)
WINOGRAD2_MIN_PIXELS = 128
# The compiled kernels (alis_core.kernels, numba) run the models whose largest layer, in one frame,
# has at least this many pixels x input channels x output channels (a 256 px model: 2.7e8; the
# bundled 128 px model: 1.7e7, where they gained nothing against the half second that loading
# them costs a process). Decided per model, so every frame and tile of a model takes the same path.
# Of such a model's layers, float32 3x3 convolutions of 64+ channels and 1024+ pixels run as their
# Winograd F(4x4, 3x3) (at 32 channels oneDNN's direct convolution stays faster, below 1024 pixels
# the PyTorch path's F(2x2) with its smaller weights), float32 upsampling layers of 128+ input
# pixels through them; bfloat16 layers all.
KERNEL_MIN_WORK = 1 << 27
KERNEL_WINOGRAD_MIN_CHANNELS = 64
KERNEL_WINOGRAD_MIN_PIXELS = 1024
KERNEL_UPSAMPLING_MIN_PIXELS = 128
# A strip across anchors (context rendering) with at most this many anchors gets every anchor's
# RGB by one matrix product and the compiled toRGB pass (more: interval by interval, in PyTorch).
TORGB_KERNEL_MAX_ANCHORS = 8
# Context rendering: extra columns each side at every resolution that make a strip's columns equal
# one convolution over the whole panorama (measured: 4 leaves errors of 1e-2, 6 is exact to 1e-6).
# 8, so that every block reads a multiple of 4 more columns: oneDNN's bfloat16 upsampling
# convolution ran 40% slower on inputs 4n + 6 wide than on 4n + 8.
CONTEXT_MARGIN = 8
EPILOGUE_CHUNK_BYTES = 1 << 19  # fused path: noise, leaky ReLU and clamp in blocks this large
EPILOGUE_CHUNK_DTYPES = (torch.bfloat16,)  # float32 measured no faster (its passes are cheaper)
_HAS_FUSED_CONV = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()
# dtypes whose fused CPU path failed on this machine (e.g. float16 where oneDNN needs avx512_fp16
# or avx_ne_convert): they take the plain fast path from then on; every other dtype keeps its own.
_FUSED_FAILED: set[torch.dtype] = set()


def _conv_act(x: Tensor, weight: Tensor, bias: Tensor | None, padding, groups: int = 1,
              act: bool = True, add: Tensor | None = None) -> Tensor:
    """oneDNN convolution (CPU only) with bias and either the leaky ReLU or the addition of `add`
    (a tensor of the output's shape; oneDNN fuses no activation after an addition but ReLU).
    `padding`: one int for both sides, or (rows, columns)."""
    padding = [padding] * 2 if isinstance(padding, int) else list(padding)
    if add is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, weight, bias, padding, [1, 1], [1, 1],
                                                              groups, "add", None, None, [], None)
    attr, scalars = ("leaky_relu", [LRELU_ALPHA]) if act else ("none", [])
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, [1, 1], [1, 1], groups,
                                                   attr, scalars, "")


def _leaky_clamp_(x: Tensor, clamp: float | None, noise: Tensor | None = None) -> Tensor:
    """In place: + noise * LRELU_GAIN (noise [B, 1, H, W]), leaky ReLU, then the clamp, on a
    channels-last tensor. A large tensor goes in blocks of rows of one image (about
    EPILOGUE_CHUNK_BYTES each) so that the later passes find their block still in cache."""
    b, c, h, w = x.shape
    rows = max(1, EPILOGUE_CHUNK_BYTES // (w * c * x.element_size()))
    if rows >= h or not x.is_contiguous(memory_format=CHANNELS_LAST) or x.dtype not in EPILOGUE_CHUNK_DTYPES:
        if noise is not None:
            x = x.add_(noise, alpha=LRELU_GAIN)
        x = F.leaky_relu_(x, LRELU_ALPHA)
        return x if clamp is None else x.clamp_(-clamp, clamp)
    v = x.permute(0, 2, 3, 1)  # [B, H, W, C] view: one image's rows are contiguous
    nv = None if noise is None else noise.expand(b, 1, h, w).permute(0, 2, 3, 1)  # [B, H, W, 1]
    for i in range(b):
        for r in range(0, h, rows):
            block = v[i, r: r + rows]
            if nv is not None:
                block.add_(nv[i, r: r + rows], alpha=LRELU_GAIN)
            F.leaky_relu_(block, LRELU_ALPHA)
            if clamp is not None:
                block.clamp_(-clamp, clamp)
    return x


def _kernel_model(cfg: GeneratorConfig) -> bool:
    """Whether a model is large enough for the compiled kernels (KERNEL_MIN_WORK)."""
    work = max(cfg.grid_size * res * (res // cfg.grid_size) * cfg.channels(res) ** 2 for res in cfg.block_resolutions)
    return work >= KERNEL_MIN_WORK


def _kernels_f32(x: Tensor) -> bool:
    """Whether the compiled float32 kernels take this layer: float32 and no CPU autocast (which
    asks for bfloat16 products: the PyTorch path honours it)."""
    return x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and _kernels.available()


@contextlib.contextmanager
def exact_cuda(device: torch.device, weights: Tensor):
    """Rendering on CUDA in true float32 with deterministic cuDNN algorithms. cuDNN convolutions
    default to TF32 (10-bit mantissas, about 1e-3 relative), too coarse for parity with the official
    model, and picked algorithms whose sums differed from call to call (2e-5 on an H200), so that the
    same seed gave other pixels on every call and the loop did not close bit-exactly. cuDNN's
    heuristics also picked an FFT algorithm that made 1024 px panoramas 5x slower: benchmark mode
    times the deterministic ones once per shape (panorama tiles share one) and keeps the fastest.
    Training (gradients for `weights`) keeps PyTorch's global settings."""
    if device.type != "cuda" or (weights.requires_grad and torch.is_grad_enabled()):
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, False, True, True
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


class MappingNetwork(nn.Module):
    """z -> w: second-moment normalisation, then leaky-ReLU dense layers; tracks w_avg."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], activation="lrelu",
                                                   lr_multiplier=cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> Tensor:
        trained = self.fc0.weight if self.num_layers else self.w_avg
        with torch.autocast(device_type=z.device.type, enabled=False), exact_cuda(z.device, trained):
            x = normalize_2nd_moment(z.to(torch.float32))
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


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


class _ColumnStyles:
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
        self.coef_a = (m - tt).unsqueeze(1).to(device)  # [B, 1, W]
        self.coef_b = tt.unsqueeze(1).to(device)
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
        k = self.k.unsqueeze(1).expand(-1, s.shape[1], -1)
        return (s.gather(2, k) * self.coef_a + s.gather(2, k + 1) * self.coef_b).unsqueeze(2)

    def ends(self, styles: Tensor) -> tuple[Tensor, Tensor]:
        """The two anchor styles each element interpolates between, [B, C] each (`single` only)."""
        rows, k = torch.arange(styles.shape[0], device=styles.device), self.k[:, 0]
        return styles[rows, k], styles[rows, k + 1]


class _FeatureCache:
    """A small LRU cache of coordinate features, keyed by resolution and patch position."""

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


class _Scratch(OrderedDict):
    """Tensors derived from the weights and rebuilt on demand: copies and pickles start empty
    (oneDNN-layout tensors can be neither deep-copied nor pickled)."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return (type(self), ())


class _Context:
    """Everything a forward pass shares across layers: positions, per-resolution column styles."""

    def __init__(self, cfg: GeneratorConfig, pos: PatchPositions, num_anchors: int, device, dtype,
                 noise_mode: str, generator: torch.Generator | None, cache: "_FeatureCache", fast: bool = False):
        self.cfg, self.pos, self.device, self.dtype, self.cache = cfg, pos, device, dtype, cache
        self.num_anchors = num_anchors
        self.noise_mode, self.generator = noise_mode, generator
        self.inplace = not torch.is_grad_enabled()  # inference: overwrite activations nobody needs
        self.fast = fast or dtype != torch.float32
        if self.inplace and device.type == "cuda" and dtype == torch.float32:
            # the fast formulation is built for CPUs (NHWC for oneDNN, folded weights); rendering
            # in float32 on an H200 the exact one was as fast or faster (1024 px panoramas 0.015 s
            # per frame against 0.022 s), and it is the official order of operations
            self.fast = False
        # CPU inference on the fast path: oneDNN convolutions with bias and activation fused in,
        # conv inputs assembled and modulated in one pass, toRGB as one small matmul per patch.
        self.fused = (self.fast and self.inplace and device.type == "cpu" and _HAS_FUSED_CONV
                      and dtype not in _FUSED_FAILED)
        self.kernels = self.fused and _kernel_model(cfg)  # may use alis_core.kernels (where installed)
        # what cached tensors derived from the positions are keyed by (inference tensors cannot
        # take part in a graph: keep them apart)
        self.pos_key = (pos.left_border.tobytes(), pos.slot.tobytes(), pos.span, pos.margin, str(device),
                        torch.is_inference_mode_enabled())
        self._cols: dict[tuple[int, int], _ColumnStyles] = {}
        # fused path: every layer's styles from one matrix product (`SynthesisNetwork._style_table`)
        self.table: Tensor | None = None  # [B, A, sum of channels]
        self.table_slices: dict[int, slice] = {}  # id(module) -> its columns
        self.table_rgb: tuple[int, Tensor] | None = None  # where the toRGB layers' columns start, their weights
        self._ends: dict[bytes, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        self._rgb: dict = {}
        self.next_input: "_NextInput | None" = None  # a block's input, assembled by the block before it

    def margin(self, res: int, width: int) -> int:
        """Context columns on each side of activations `width` columns wide at resolution `res`."""
        return (width - self.pos.span * (res // self.cfg.grid_size)) // 2

    def column_styles(self, res: int, width: int) -> _ColumnStyles:
        """The column styles of activations [B, C, res, width]."""
        if (res, width) not in self._cols:  # shared by a pass's layers, and cached across passes
            key = ("columns", res, width, self.num_anchors, self.pos_key)
            cols = self.cache.get(key)
            if cols is None:
                cols = _ColumnStyles(self.cfg, res, self.margin(res, width), self.pos, self.num_anchors, self.device)
                self.cache.put(key, cols)
            self._cols[res, width] = cols
        return self._cols[res, width]

    def styles(self, module: nn.Module, w3: Tensor) -> Tensor:
        """A layer's styles [B, A, C] for its anchors w3 [B, A, w_dim] (from the pass's table if it has one)."""
        sl = self.table_slices.get(id(module))
        return module.styles(w3) if sl is None else self.table[:, :, sl]

    def _table_ends(self, cols: _ColumnStyles) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The table's rows at each element's two anchors (`cols.single`): [B, sum C] each, then the
        same as [B, 1, sum C]."""
        key = cols.k_key  # every resolution of a patch lies between the same anchors: index the table once
        if key not in self._ends:
            sa, sb = cols.ends(self.table)  # [B, sum C] each
            self._ends[key] = (sa, sb, sa.unsqueeze(1), sb.unsqueeze(1))
        return self._ends[key]

    def rgb_weights(self, module: "ToRGB", w3: Tensor, cols: _ColumnStyles, dtype) -> Tensor:
        """A toRGB layer's weights with the styles at each element's two anchors folded in (`single`
        only): [B, C, 6] (`dtype`), from the pass's table for every toRGB layer at once if it has one."""
        sl = self.table_slices.get(id(module))
        if sl is None:
            ends = torch.stack(cols.ends(module.styles(w3)), dim=2)  # [B, C, 2]
            return _fold_rgb(ends, module.rgb_weight).to(dtype).view(ends.shape[0], -1, 6)
        start, weight = self.table_rgb
        key = (cols.k_key, dtype)
        if key not in self._rgb:
            sa, sb = self._table_ends(cols)[:2]
            ends = torch.stack([sa[:, start:], sb[:, start:]], dim=2)  # [B, C, 2]: every toRGB layer's channels
            self._rgb[key] = _fold_rgb(ends, weight).to(dtype).view(ends.shape[0], -1, 6)
        return self._rgb[key][:, sl.start - start: sl.stop - start]

    def modulation(self, module: nn.Module, w3: Tensor, res: int, width: int, dtype) -> Tensor:
        """SA-AdaIN input scales [B, C, 1, width] (`dtype`) of a layer whose inputs are [B, C, res, width]
        (channels-last memory on the fast path)."""
        cols = self.column_styles(res, width)
        if self.fused and cols.single:  # two anchors per element: [B, width, C] from the two ends
            sl = self.table_slices.get(id(module))
            if sl is None:
                sa, sb = (e.unsqueeze(1) for e in cols.ends(module.styles(w3)))
            else:
                sa, sb = (e[:, :, sl] for e in self._table_ends(cols)[2:])
            b, _, c = sa.shape
            mod = torch.empty([b, width, c], dtype=dtype, device=sa.device)
            torch.addcmul(sa * cols.coef_a_t, sb, cols.coef_b_t, out=mod)
            return mod.view(b, 1, width, c).permute(0, 3, 1, 2)
        mod = cols(self.styles(module, w3)).to(dtype)
        # with NHWC activations, channels innermost here too: a broadcast multiply then vectorises
        return mod.contiguous(memory_format=CHANNELS_LAST) if self.fast else mod

    def coords(self, block: int, res: int, width: int, basis: Tensor, use_cosine: bool, stacked: bool = False):
        """Coordinate features of every element at resolution `res`: B tensors [D, res, width], or with
        `stacked` one [B, D, res, width] (the fast path's layout; cached per set of positions too).

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
                shift = (lb * pw - w_dist) / w_dist * cfg.w_coord_dist + 1.0
                x = (slot * pw - margin + np.arange(width)) / res * 2 - 1 + shift
                if pos.canonical:
                    # Every anchor interval equals the first one up to whole periods of every
                    # feature (SynthesisNetwork.periodic): fold the columns onto it for exact equality.
                    x = x - (cols[i] // w_dist) * cfg.w_coord_dist
                y = (res - 1 - np.arange(res)) / res * 2 - 1
                feats = coord_features(basis, x[None], y, use_cosine)[0].to(self.device, self.dtype)
                if self.fast:  # the NHWC layout of the block input they are written into
                    feats = feats.unsqueeze(0).contiguous(memory_format=CHANNELS_LAST)[0]
                self.cache.put(key, feats)
            out.append(feats)
        return out

    def noise(self, layer: "SynthesisLayer", shape, gain: float = 1.0) -> Tensor | None:
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
        n = torch.randn([b, 1, h, w], generator=self.generator, device="cpu")
        n = n.to(device=self.device, dtype=self.dtype) * layer.noise_strength.to(self.dtype)
        return n * gain if gain != 1 else n


@dataclass
class _NextInput:
    """A block's input assembled by the block before it (fused path): `buffer` [B, C + D, h, w]
    (channels-last) holds the modulated coordinate features in its last D channels, and its first C
    receive the previous block's output times `scale`'s first C channels ([B, C + D, 1, w]: the
    conv0 modulation) as that output is computed."""

    buffer: Tensor
    scale: Tensor
    written: bool = False


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution with SA-AdaIN styles, per patch, demodulated by weights only."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int,
                 conv_clamp: float | None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self._prepared: tuple | None = None
        self._packed_cache = _Scratch()
        self.noise_cache = _Scratch()  # "const" noise as positions read it, scaled by its strength

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the layer (ComfyUI offloads models between runs) drops what was
        derived from the weights, which would otherwise keep the old device's memory."""
        self._prepared = None
        self._packed_cache.clear()
        self.noise_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def prepared_weights(self, dtype, fast: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """(weight, bias, demod) ready for `dtype`; cached while the weights are frozen.

        ALIS demodulates with the weights alone (styles vary along x, so they cannot fold in).
        In fast mode, demodulation and the leaky-ReLU gain (the activation is positively
        homogeneous) fold into the weights, saving two passes over every activation; exact mode
        keeps the official order of operations so that it matches official outputs to 1e-4.
        """
        frozen = not (self.weight.requires_grad and torch.is_grad_enabled())
        key = (dtype, fast, _version(self.weight), _version(self.bias), self.weight.device,
               torch.is_inference_mode_enabled())  # inference tensors cannot enter a graph
        if frozen and self._prepared is not None and self._prepared[0] == key:
            return self._prepared[1]
        demod = (self.weight.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()
        if not fast:
            w, b, d = self.weight, self.bias, demod.reshape(1, -1, 1, 1)
        else:
            w, b, d = self.weight * (demod * LRELU_GAIN).reshape(-1, 1, 1, 1), self.bias * LRELU_GAIN, None
        if self.up == 2:
            w = w.transpose(0, 1)  # [I, O, 3, 3] for the transposed convolution
            if dtype != torch.float32:  # bf16/fp16 matrix units run ordinary convolutions much faster
                w = polyphase_weight(w)
        w = w.to(dtype)
        if fast:  # the layout oneDNN uses with NHWC activations: no reorder on every call
            w = w.contiguous(memory_format=CHANNELS_LAST)
        out = (w, b.to(dtype), d)
        if frozen:  # a training step needs the graph through the weights: never cache then
            self._prepared = (key, tuple(t.detach() if t is not None else None for t in out))
            self._packed_cache.clear()
        return out

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, I], one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1)

    def modulation(self, w3: Tensor, ctx: _Context, res: int, width: int, dtype) -> Tensor:
        """SA-AdaIN input scales [B, I, 1, width] for inputs [B, I, res, width]."""
        return ctx.modulation(self, w3, res, width, dtype)

    def forward(self, x: Tensor, w3: Tensor, ctx: _Context, premodulated: bool = False,
                out_scale: Tensor | None = None, also: "_NextInput | None" = None) -> Tensor:
        """x [B, I, h, pw], w3 [B, 3, w_dim] -> [B, O, h * up, pw * up]. Overwrites x when
        gradients are off (x is never needed again). `premodulated`: the caller already scaled x
        by `modulation` (the fused path assembles and scales a block's input in one pass).
        `out_scale` (fused path only): the next layer's modulation, applied to the output (in the
        same pass as the activation where the compiled kernels run). `also` (fused path only): the
        next block's input buffer, whose first O channels receive the output times their scale
        (in the activation's pass where the compiled kernels run)."""
        ip = ctx.inplace
        if not premodulated:
            mod = self.modulation(w3, ctx, x.shape[2], x.shape[3], x.dtype)
            x = x.mul_(mod) if ip else x * mod
        weight, bias, demod = self.prepared_weights(x.dtype, ctx.fast)
        if ctx.fused:
            x = self._forward_fused(x, weight, bias, ctx, out_scale, also)
            if also is not None and not also.written:
                o = x.shape[1]
                torch.mul(x, also.scale[:, :o], out=also.buffer[:, :o])
            return x
        if out_scale is not None or also is not None:
            raise ValueError("out_scale and also are for the fused CPU path only")
        if self.up == 2:
            x = conv_up2_polyphase(x, weight) if weight.shape[2] == 2 else conv_transpose3x3_up2(x, weight)
        else:
            x = F.conv2d(x, weight, padding=1)
        noise = ctx.noise(self, x.shape)
        b = bias.reshape(1, -1, 1, 1)
        if demod is not None:  # float32: (x * demod + noise + b) -> lrelu -> * gain -> clamp
            x = torch.addcmul(noise, x, demod) if noise is not None else (x.mul_(demod) if ip else x * demod)
            x = x.add_(b) if ip else x + b
            x = F.leaky_relu_(x, LRELU_ALPHA).mul_(LRELU_GAIN) if ip else F.leaky_relu(x, LRELU_ALPHA) * LRELU_GAIN
        else:  # demod and gain are in the weights
            x = x.add_(b) if ip else x + b
            if noise is not None:
                x = x.add_(noise, alpha=LRELU_GAIN) if ip else x + noise * LRELU_GAIN
            x = F.leaky_relu_(x, LRELU_ALPHA) if ip else F.leaky_relu(x, LRELU_ALPHA)
        if self.conv_clamp is None:
            return x
        return x.clamp_(-self.conv_clamp, self.conv_clamp) if ip else x.clamp(-self.conv_clamp, self.conv_clamp)

    def _packed(self, weight: Tensor, shape, padding=(1, 1), tag: str = "") -> Tensor:
        """`weight` reordered once into oneDNN's blocked layout for inputs of this shape (the
        reorder otherwise runs on every call: a third of the time of the small, weight-heavy
        layers). Two shapes are kept per weight (a frame and a panorama batch, say); `tag` names
        a weight derived from the layer's (the polyphase halves)."""
        key = (weight.dtype, tuple(shape))
        cache = self._packed_cache.setdefault(("onednn", tag), OrderedDict())  # emptied when the weights change
        if key not in cache:
            cache[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), list(padding), [1, 1], [1, 1], 1,
                                                                  list(shape))
            while len(cache) > 2:
                cache.popitem(last=False)
        return cache[key]

    def _polyphase_halves(self, weight: Tensor, shape) -> tuple[Tensor, Tensor]:
        """The polyphase weight [4*O, I, 2, 2] (output channel o*4 + 2a + b: phase row parity a,
        column parity b) split by row parity, phase-major: even output rows need both kernel
        rows, [2*O, I, 2, 2]; odd rows only the second, [2*O, I, 1, 2]. 12 of the 16 taps the
        single 2x2 convolution multiplies (9 are nonzero)."""
        key = ("polyphase-halves", weight.dtype)
        if key not in self._packed_cache:
            i = weight.shape[1]
            k = weight.view(-1, 2, 2, i, 2, 2)  # [O, a, b, I, u, v]
            even = k[:, 0].transpose(0, 1).reshape(-1, i, 2, 2)
            odd = k[:, 1, :, :, 1:].transpose(0, 1).reshape(-1, i, 1, 2)
            self._packed_cache[key] = tuple(t.contiguous(memory_format=CHANNELS_LAST) for t in (even, odd))
        even, odd = self._packed_cache[key]
        return (self._packed(even, shape, tag="even"), self._packed(odd, shape, (0, 1), tag="odd"))

    @staticmethod
    def _winograd_tile(x: Tensor, weight: Tensor) -> int:
        """The Winograd tile size for this 3x3 convolution, 0 for none. F(4x4, 3x3) pays for its
        tile transforms from 128 channels on (measured per layer: about 2x faster than oneDNN's
        direct convolution at 512 channels, 1.2-1.9x at 256, a few % at 128, slower at 64), and for
        its 4x larger weights from about 64 tiles on (below, reading the weights from memory costs
        more than the multiplications saved). Below that, on the wide layers of a few hundred
        pixels, F(2x2, 3x3) (16/9 the weights) is the better one. Float32 only (the transforms
        would lose bfloat16's few bits of precision)."""
        b, i, h, w = x.shape
        if x.dtype != torch.float32:
            return 0
        c, n = min(i, weight.shape[0]), b * h * w
        if c >= WINOGRAD_MIN_CHANNELS and n >= WINOGRAD_MIN_PIXELS and h % 4 == 0 and w % 4 == 0:
            return 4
        if c >= WINOGRAD2_MIN_CHANNELS and n >= WINOGRAD2_MIN_PIXELS and h % 2 == 0 and w % 2 == 0:
            return 2
        return 0

    @staticmethod
    def _kernel_winograd(x: Tensor, weight: Tensor) -> bool:
        """Whether this float32 3x3 convolution runs as the compiled kernels' Winograd F(4x4, 3x3)
        (measured per layer of a 256 frame against the best PyTorch path: 13.1 -> 9.3 ms at 64
        channels, 8.1 -> 5.9 at 128, 5.6 -> 4.4 at 256, 4.5 -> 3.8 at 512; at 32 channels oneDNN's
        direct convolution stays faster)."""
        b, i, h, w = x.shape
        return (min(i, weight.shape[0]) >= KERNEL_WINOGRAD_MIN_CHANNELS and b * h * w >= KERNEL_WINOGRAD_MIN_PIXELS
                and h % 4 == 0 and w % 4 == 0 and _kernels_f32(x))

    def _winograd(self, weight: Tensor, m: int) -> Tensor:
        key = ("winograd", m, weight.dtype)
        if key not in self._packed_cache:  # emptied whenever the prepared weights change
            self._packed_cache[key] = winograd_weight(weight, m)
        return self._packed_cache[key]

    def _deconv_matrix(self, weight: Tensor) -> Tensor:
        """The transposed convolution's kernel [I, O, 3, 3] as a matrix [I, 3*3*O] ((ky, kx, o) columns)."""
        key = ("matmul", weight.dtype)
        if key not in self._packed_cache:
            self._packed_cache[key] = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()
        return self._packed_cache[key]

    def _conv_transpose_small(self, x: Tensor, weight: Tensor) -> Tensor:
        """F.conv_transpose2d(x, weight, stride=2) for inputs of a few pixels: every input pixel
        times the whole kernel in one matmul, then nine strided additions. NHWC in and out."""
        b, i, h, w = x.shape
        o = weight.shape[1]
        y = (x.permute(0, 2, 3, 1).reshape(-1, i) @ self._deconv_matrix(weight)).view(b, h, w, 3, 3, o)
        out = torch.zeros([b, 2 * h + 1, 2 * w + 1, o], dtype=x.dtype)
        for ky in range(3):
            for kx in range(3):
                out[:, ky: ky + 2 * h: 2, kx: kx + 2 * w: 2] += y[:, :, :, ky, kx]
        return out.permute(0, 3, 1, 2)

    def _epilogue(self, x: Tensor, act: bool, noise: Tensor | None, out_scale: Tensor | None,
                  also: "_NextInput | None") -> Tensor:
        """The compiled bfloat16 epilogue (`kernels.epilogue_bf16_`), writing `also` in the same pass."""
        if also is None:
            return _kernels.epilogue_bf16_(x, self.conv_clamp, act, noise, out_scale, LRELU_ALPHA)
        x = _kernels.epilogue_bf16_(x, self.conv_clamp, act, noise, out_scale, LRELU_ALPHA, (also.buffer, also.scale))
        also.written = True
        return x

    def _forward_fused(self, x: Tensor, weight: Tensor, bias: Tensor, ctx: _Context,
                       out_scale: Tensor | None = None, also: "_NextInput | None" = None) -> Tensor:
        """The fast path on the CPU without gradients: bias and leaky ReLU run inside the oneDNN
        convolution (inside the low-pass filter's convolution for the upsampling layers). Models
        of KERNEL_MIN_WORK and more use the compiled kernels where numba is installed
        (`alis_core.kernels`): in bfloat16 everything oneDNN cannot fuse in one pass after the
        convolution; in float32 their Winograd convolution and their upsampling tail."""
        b, _, h, w = x.shape
        reduced = x.dtype != torch.float32
        # reduced precision: the noise comes with its gain applied, for the convolution to add
        noise = ctx.noise(self, (b, 1, h * self.up, w * self.up), LRELU_GAIN if reduced else 1.0)
        act = noise is None  # noise goes in between the bias and the activation
        add = gained = None
        work = ctx.kernels  # a model large enough for the compiled kernels
        kernels = work and _kernels.enabled_for(x)  # bfloat16 with numba
        if noise is not None and reduced:
            gained, noise = noise, None  # [B, 1, H, W]
            if not kernels:  # bfloat16 element-wise passes are slow on CPUs: let the convolution add the
                # noise (in float32 the separate in-place addition is faster)
                add = gained.expand(b, bias.shape[0], h * self.up, w * self.up)
        if self.up == 1 and work and self._kernel_winograd(x, weight):  # float32: the epilogue in its output transform
            x = _kernels.conv3x3_winograd_f32(x, self._winograd(weight, 4), bias, noise, LRELU_GAIN, self.conv_clamp,
                                              LRELU_ALPHA)
            return x if out_scale is None else x.mul_(out_scale)
        tile = self._winograd_tile(x, weight) if self.up == 1 else 0
        if tile:
            x = F.leaky_relu_(conv3x3_winograd(x, self._winograd(weight, tile), bias, noise, LRELU_GAIN), LRELU_ALPHA)
            noise = None
        elif self.up == 1:
            if kernels and gained is not None:  # the kernel's pass adds the noise: no [B, O, H, W] copy of it
                x = _conv_act(x, self._packed(weight, x.shape), bias, 1, act=False)
                return self._epilogue(x, True, gained, out_scale, also)
            x = _conv_act(x, self._packed(weight, x.shape), bias, 1, act=act, add=add)
        else:
            o = bias.shape[0]
            filt = _filter_2d(o, 4.0, x.dtype, "cpu")  # [O, 1, 4, 4]: already oneDNN's layout
            if weight.shape[2] == 2:  # polyphase: the 4 phases by two convolutions, shuffled into a buffer
                even, odd = self._polyphase_halves(weight, x.shape)
                y0 = _conv_act(x, even, None, (1, 1), act=False)  # [B, 2*O, h+1, w+1]: phases (0, b)
                y1 = _conv_act(x, odd, None, (0, 1), act=False)  # [B, 2*O, h, w+1]: phases (1, b)
                if kernels:  # interleave, filter, bias, noise, activation, clamp, scale: one pass
                    if ("bias32",) not in self._packed_cache:
                        self._packed_cache["bias32",] = bias.float()
                    return _kernels.upsample_epilogue_bf16(y0, y1, self._packed_cache["bias32",], self.conv_clamp,
                                                           gained, out_scale, LRELU_ALPHA)
                buf = torch.empty([b, o, 2 * h + 3, 2 * w + 3], dtype=x.dtype, memory_format=CHANNELS_LAST)
                bv = buf.permute(0, 2, 3, 1)  # [B, H, W, O] view of the NHWC memory
                bv[:, 0].zero_()
                bv[:, :, 0].zero_()
                bv[:, -1].zero_()  # phase (1, b) of row h reads only the zero padding
                phases = bv[:, 1:, 1:].view(b, h + 1, 2, w + 1, 2, o)
                phases[:, :, 0].copy_(y0.permute(0, 2, 3, 1).view(b, h + 1, w + 1, 2, o))
                phases[:, :h, 1].copy_(y1.permute(0, 2, 3, 1).view(b, h, w + 1, 2, o))
                x = _conv_act(buf, filt, bias, 0, groups=o, act=act, add=add)
            else:
                small = b * h * w <= SMALL_DECONV_PIXELS  # one matmul beats oneDNN's deconvolution there
                if work and b * h * w >= KERNEL_UPSAMPLING_MIN_PIXELS and _kernels_f32(x):  # the products, then
                    # everything else in one compiled pass
                    if small:  # (which also sums the products into the transposed convolution's output)
                        return _kernels.deconv_up2_f32(x, self._deconv_matrix(weight), bias, self.conv_clamp, noise,
                                                       LRELU_GAIN, out_scale, LRELU_ALPHA)
                    return _kernels.upsample_epilogue_f32(F.conv_transpose2d(x, weight, stride=2), bias, self.conv_clamp,
                                                          noise, LRELU_GAIN, out_scale, LRELU_ALPHA)
                y = self._conv_transpose_small(x, weight) if small else F.conv_transpose2d(x, weight, stride=2)
                x = _conv_act(y, filt, bias, 1, groups=o, act=act, add=add)
        if kernels and _kernels.enabled_for(x):  # the activation (unless fused), clamp and scale: one pass
            return self._epilogue(x, not act, None, out_scale, also)
        if noise is not None or add is not None:  # the activation was not fused into the convolution
            x = _leaky_clamp_(x, self.conv_clamp, noise)
        elif self.conv_clamp is not None:
            x = x.clamp_(-self.conv_clamp, self.conv_clamp)
        return x if out_scale is None else x.mul_(out_scale)


def _fold_rgb(styles: Tensor, weight: Tensor) -> Tensor:
    """Anchor styles [B, C, A] folded into toRGB weights [C, 3]: [B, C, A, 3], each anchor's RGB
    weights (one matmul with them gives every anchor's image); contiguous if the styles are."""
    return styles.unsqueeze(3) * weight.unsqueeze(1)


class ToRGB(nn.Module):
    """1x1 modulated convolution (no demodulation) to RGB, with SA-AdaIN styles."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, C] (the weight gain included), one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1) * self.weight_gain

    def forward(self, x: Tensor, w3: Tensor, ctx: _Context, img: Tensor | None = None) -> Tensor:
        """x [B, C, h, w] -> the block's skip image, float32 [B, 3, h, w]: this layer's RGB plus `img`
        (the previous block's, [B, 3, h / 2, w / 2]; None for the first block) upsampled.

        The fused CPU path never scales x: the styles at the anchors fold into one weight matrix
        per anchor, one matmul per element gives every anchor's RGB image, and the per-column
        weights (SA-AdaIN) blend them."""
        cols = ctx.column_styles(x.shape[2], x.shape[3])
        if ctx.fused:
            b, c, h, w = x.shape
            kernel = (ctx.kernels and x.dtype in (torch.bfloat16, torch.float32) and _kernels.available()
                      and not torch.is_autocast_enabled("cpu"))  # the blend, clamp and skip sum in one pass
            if cols.single:  # a patch: between two anchors
                wm = ctx.rgb_weights(self, w3, cols, x.dtype)  # [B, C, 6]
                y = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), wm).view(b, h, w, 6)
                if kernel:
                    return _kernels.torgb_skip(y, cols.coef_a, cols.coef_b, self.bias, self.conv_clamp, img)
                y = y.float()
                ca, cb = cols.coef_a[:, :, :, None], cols.coef_b[:, :, :, None]  # [B, 1, w, 1]
                y = torch.addcmul(torch.addcmul(self.bias, y[..., :3], ca), y[..., 3:], cb).permute(0, 3, 1, 2)
                if self.conv_clamp is not None:
                    y = y.clamp_(-self.conv_clamp, self.conv_clamp)
            else:  # a strip across anchors (context rendering)
                styles = ctx.styles(self, w3)  # [B, A, C]
                a = styles.shape[1]
                if kernel and a <= TORGB_KERNEL_MAX_ANCHORS:  # every anchor's RGB by one product
                    wm = _fold_rgb(styles.transpose(1, 2), self.rgb_weight).to(x.dtype).reshape(b, c, 3 * a)
                    y = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), wm).view(b, h, w, 3 * a)
                    return _kernels.torgb_skip(y, cols.coef_a, cols.coef_b, self.bias, self.conv_clamp, img, cols.k)
                y = self._forward_strip(x, styles, cols)
        else:
            x = x * cols(self.styles(w3)).to(x.dtype)  # x is still needed by the next block
            y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))
            if self.conv_clamp is not None:
                lim = self.conv_clamp
                y = y.clamp_(-lim, lim) if ctx.inplace else y.clamp(-lim, lim)
            y = y.to(torch.float32)
        return y if img is None else upsample2d(img) + y

    @property
    def rgb_weight(self) -> Tensor:
        """The 1x1 weights as a matrix [C, 3]."""
        return self.weight[:, :, 0, 0].t()

    def _forward_strip(self, x: Tensor, styles: Tensor, cols: _ColumnStyles) -> Tensor:
        """The fused path for strips across anchors (context rendering), run by run of columns:
        x [B, C, h, w] (NHWC memory), styles [B, A, C] -> [B, 3, h, w] float32 (NHWC memory)."""
        b, c, h, w = x.shape
        wm = _fold_rgb(styles.transpose(1, 2), self.rgb_weight).to(x.dtype)  # [B, C, A, 3]
        xs = x.permute(0, 2, 3, 1)  # [B, h, w, C] view of the NHWC memory
        y = torch.empty([b, h, w, 3])
        ca, cb = cols.coef_a[:, 0, :, None], cols.coef_b[:, 0, :, None]  # [B, w, 1]
        for i, j0, j1, k in cols.runs:
            wr = wm[i, :, k: k + 2].reshape(c, 6)
            if x.dtype == torch.float32 or 4 * (j1 - j0) < w:  # [h, n, C] @ [C, 6] from the strided columns
                yr = torch.matmul(xs[i, :, j0:j1], wr).view(h, j1 - j0, 2, 3)
            else:  # strided bfloat16 matmuls are slow: all columns (contiguous), then this run's
                yr = torch.matmul(xs[i].reshape(h * w, c), wr).view(h, w, 2, 3)[:, j0:j1]
            yr = yr.float()  # the blend runs 3x faster on float32 than on bfloat16 mixed with float32
            torch.addcmul(torch.addcmul(self.bias, yr[..., 0, :], ca[i, j0:j1]), yr[..., 1, :], cb[i, j0:j1],
                          out=y[i, :, j0:j1])
        y = y.permute(0, 3, 1, 2)  # [B, 3, h, w]
        return y if self.conv_clamp is None else y.clamp_(-self.conv_clamp, self.conv_clamp)


class GridInput(nn.Module):
    """The 4x4 input: a learned column [C, 4] modulated along x by interpolated anchor styles,
    concatenated with Fourier coordinate features of the 4x4 grid."""

    def __init__(self, cfg: GeneratorConfig, channels: int):
        super().__init__()
        self.input_column = nn.Parameter(torch.randn([channels, 4]))
        self.affine = FullyConnected(cfg.w_dim, channels, bias_init=0.0)
        self.basis = logarithmic_basis(4, channels, remove_lowest_freq=True, use_diagonal=True)
        self.out_channels = channels + 2 * self.basis.shape[0]

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, C], one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1)

    def forward(self, w3: Tensor, ctx: _Context) -> Tensor:
        b = w3.shape[0]
        width = ctx.pos.span * (4 // ctx.cfg.grid_size) + 2 * ctx.pos.margin
        x = self.input_column[None, :, :, None].expand(b, -1, -1, width)  # [B, C, 4, width]
        x = x * ctx.column_styles(4, width)(ctx.styles(self, w3))
        return torch.cat([x, torch.stack(ctx.coords(4, 4, width, self.basis, True)).to(x.dtype)], dim=1)


class SynthesisBlock(nn.Module):
    """One resolution: [coords ++ x] -> conv0 (up 2) -> conv1 -> toRGB, skip-connected images."""

    def __init__(self, cfg: GeneratorConfig, res: int):
        super().__init__()
        self.res = res
        out_ch = cfg.channels(res)
        if res == 4:
            self.input = GridInput(cfg, out_ch)
            conv1_in = self.input.out_channels
        else:
            dim = cfg.coord_dims[str(res)]
            self.basis = logarithmic_basis(res, dim, remove_lowest_freq=True,
                                           use_diagonal=cfg.coord_use_diagonal)
            self.use_cosine = cfg.coord_use_cosine
            n_coord = self.basis.shape[0] * (2 if self.use_cosine else 1)
            self.conv0 = SynthesisLayer(cfg.channels(res // 2) + n_coord, out_ch, cfg.w_dim, res, 2,
                                        cfg.conv_clamp)
            conv1_in = out_ch
        self.conv1 = SynthesisLayer(conv1_in, out_ch, cfg.w_dim, res, 1, cfg.conv_clamp)
        self.torgb = ToRGB(out_ch, cfg.img_channels, cfg.w_dim, cfg.conv_clamp)

    def forward(self, x: Tensor | None, img: Tensor | None, ws3: Tensor, ctx: _Context,
                nxt: "SynthesisBlock | None" = None, ws_nxt: Tensor | None = None):
        """ws3 [B, 3 layers, A anchors, w_dim] -> (x, img). `nxt` (fused path, no context columns):
        the next block, whose input (`input_buffer`, with ws_nxt [B, A, w_dim], its conv0's anchors)
        this block's last layer fills as it computes its output (handed over in ctx.next_input)."""
        layout = CHANNELS_LAST if ctx.fast else torch.contiguous_format  # NHWC: fastest convolutions
        also = None
        if self.res == 4:
            x = self.input(ws3[:, 0], ctx).to(ctx.dtype).contiguous(memory_format=layout)
            if nxt is not None:
                also = nxt.input_buffer(ws_nxt, ctx, (x.shape[0], self.conv1.bias.shape[0]) + x.shape[2:], x.dtype)
            x = self.conv1(x, ws3[:, 1], ctx, also=also)
        else:
            if ctx.pos.margin:  # the upsampling doubles the context columns: keep half of them
                half = ctx.pos.margin // 2
                x, img = x[:, :, :, half: x.shape[3] - half], img[:, :, :, half: img.shape[3] - half]
            b, c, h, w = x.shape
            if ctx.fused:  # assemble and modulate in one pass; conv0 scales its output for conv1
                prepared, ctx.next_input = ctx.next_input, None
                if prepared is None:
                    prepared = self.input_buffer(ws3[:, 0], ctx, x.shape, x.dtype)
                    torch.mul(x, prepared.scale[:, :c], out=prepared.buffer[:, :c])
                scale = self.conv1.modulation(ws3[:, 1], ctx, 2 * h, 2 * w, x.dtype)
                x = self.conv0(prepared.buffer, ws3[:, 0], ctx, True, scale)
                if nxt is not None:
                    also = nxt.input_buffer(ws_nxt, ctx, x.shape, x.dtype)
                x = self.conv1(x, ws3[:, 1], ctx, premodulated=True, also=also)
            else:
                coords = ctx.coords(self.res, h, w, self.basis, self.use_cosine)
                xc = torch.empty([b, c + coords[0].shape[0], h, w], dtype=x.dtype, device=x.device,
                                 memory_format=layout)
                xc[:, :c] = x
                for i, feats in enumerate(coords):  # straight from the cache, no intermediate stack
                    xc[i, c:] = feats
                x = self.conv1(self.conv0(xc, ws3[:, 0], ctx), ws3[:, 1], ctx)
        ctx.next_input = also
        return x, self.torgb(x, ws3[:, 2], ctx, img)

    def input_buffer(self, ws0: Tensor, ctx: _Context, shape, dtype) -> _NextInput:
        """This block's conv0 input for the previous block's output of `shape` [B, C, h, w] (fused
        path): a [B, C + D, h, w] buffer with the modulated coordinate features written into its
        last D channels, and the conv0 modulation [B, C + D, 1, w] for the first C."""
        b, c, h, w = shape
        coords = ctx.coords(self.res, h, w, self.basis, self.use_cosine, stacked=True)
        buf = torch.empty([b, c + coords.shape[1], h, w], dtype=dtype, device=coords.device,
                          memory_format=CHANNELS_LAST)
        mod = self.conv0.modulation(ws0, ctx, h, w, dtype)
        torch.mul(coords, mod[:, c:], out=buf[:, c:])
        return _NextInput(buf, mod)


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        for res in cfg.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res))
        # Training ramps the shift of frames inside their window from 0 to 1 (official schedule).
        self.register_buffer("max_shift_strength", torch.ones([1]))
        self._table = _Scratch()  # _style_table's cache (copies and pickles start empty)
        self._check_periodicity()

    def _check_periodicity(self) -> None:
        """Can patch positions be folded by one anchor interval without changing any feature?"""
        bases = [self.b4.input.basis] + [getattr(self, f"b{r}").basis for r in self.cfg.block_resolutions[1:]]
        phase = torch.cat([b[:, 0] for b in bases]).double().numpy() * self.cfg.w_coord_dist / (2 * math.pi)
        self.periodic = bool(np.all(np.abs(phase - np.round(phase)) < 1e-3))
        self.feature_cache = _FeatureCache()

    def _apply(self, fn, *args, **kwargs):
        self.feature_cache = _FeatureCache()  # coordinate features and column styles of the old device
        self._table.clear()
        return super()._apply(fn, *args, **kwargs)

    def forward(self, ws3: Tensor, pos: PatchPositions, noise_mode: str = "none",
                generator: torch.Generator | None = None, dtype=torch.float32, fast: bool = False) -> Tensor:
        """ws3 [B, num_ws, A, w_dim] (per layer the anchors from a window's left one on: left, centre,
        right, and for context rendering as many more as its columns reach) -> [B, C, H, span * Wp]."""
        if noise_mode not in NOISE_MODES:
            raise AlisError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if pos.margin % 2:
            raise AlisError(f"the context margin must be even, got {pos.margin}")
        if pos.canonical and not self.periodic and not pos.margin:
            # Folding changes the features of such a model: keep the window's own coordinates. (Strips
            # with context keep folding: every column then gets the same features in every strip,
            # jumping at anchors, as this model's patches do in a loop.)
            pos = dataclasses.replace(pos, canonical=False)
        ctx = _Context(self.cfg, pos, ws3.shape[2], ws3.device, dtype, noise_mode, generator, self.feature_cache, fast)
        rng_state = generator.get_state() if generator is not None and ctx.fused else None
        try:
            with exact_cuda(ws3.device, self.b4.conv1.weight):
                return self._run(ws3, ctx)
        except RuntimeError as e:
            if not ctx.fused:
                raise
            if not isinstance(e, _kernels.KernelFailure):  # (a failed compiled kernel switched the kernels off)
                # This CPU's oneDNN build lacks an operator of the fused path for this dtype: this
                # dtype takes the plain fast path from now on (same numbers to float rounding); the
                # other dtypes keep theirs.
                _FUSED_FAILED.add(dtype)
                warnings.warn(f"the fused CPU path does not run {str(dtype).removeprefix('torch.')} on this "
                              f"CPU ({str(e).splitlines()[0][:160]}); using the plain path for it",
                              RuntimeWarning, stacklevel=2)
        # the same call again without what failed, with the same random noise
        if rng_state is not None:
            generator.set_state(rng_state)
        return self._run(ws3, _Context(self.cfg, pos, ws3.shape[2], ws3.device, dtype, noise_mode, generator,
                                       self.feature_cache, fast))

    def _style_table(self) -> tuple[Tensor, Tensor, dict[int, slice], tuple[int, Tensor]]:
        """Every affine layer's scaled weights side by side: (weights [w_dim, sum C], biases [1, sum C],
        id(module) -> its columns, (the first toRGB column, the toRGB weights [sum C_rgb, 3])); the
        toRGB layers come last, their weight gain folded in. Cached while the weights are frozen
        (rebuilt when any changes)."""
        blocks = [getattr(self, f"b{res}") for res in self.cfg.block_resolutions]
        rgb = [block.torgb for block in blocks]
        modules = [m for block in blocks for m in (block.input if block.res == 4 else block.conv0, block.conv1)] + rgb
        key = tuple((_version(m.affine.weight), _version(m.affine.bias)) for m in modules) + tuple(
            _version(m.weight) for m in rgb) + (self.b4.conv1.weight.device, torch.is_inference_mode_enabled())
        if self._table.get("key") != key:
            ws, bs, slices, start = [], [], {}, 0
            for m in modules:
                wt, b = m.affine.scaled(torch.float32, keep=False)  # (the table is the copy kept)
                gain = getattr(m, "weight_gain", 1.0)
                ws.append(wt * gain if gain != 1 else wt)
                bs.append(b * gain if gain != 1 else b)
                slices[id(m)] = slice(start, start + wt.shape[1])
                start += wt.shape[1]
            rgb_weight = torch.cat([m.rgb_weight for m in rgb]).float()  # [sum C_rgb, 3]
            self._table.update(key=key, value=(torch.cat(ws, dim=1), torch.cat(bs, dim=1), slices,
                                               (slices[id(rgb[0])].start, rgb_weight)))
        return self._table["value"]

    def _run(self, ws3: Tensor, ctx: _Context) -> Tensor:
        if ctx.fused and torch.equal(ws3, ws3[:, :1].expand_as(ws3)):
            # every layer has the same anchors (a frame or panorama of [N, w_dim] latents): all the
            # styles by one matrix product instead of one per layer
            wt, b, ctx.table_slices, ctx.table_rgb = self._style_table()
            n, a, w_dim = ws3.shape[0], ws3.shape[2], ws3.shape[3]
            # a frame's patches share their anchors: one element's rows (the product reads 16+ MB of weights)
            w = ws3[:1, 0] if n > 1 and torch.equal(ws3[1:, 0], ws3[:1, 0].expand(n - 1, a, w_dim)) else ws3[:, 0]
            ctx.table = torch.addmm(b, w.reshape(-1, w_dim), wt).view(w.shape[0], a, -1).expand(n, a, -1)
        x = img = None
        blocks = [getattr(self, f"b{res}") for res in self.cfg.block_resolutions]
        for i, block in enumerate(blocks):
            # the fused path assembles each block's input as the block before computes it
            nxt = blocks[i + 1] if ctx.fused and not ctx.pos.margin and i + 1 < len(blocks) else None
            x, img = block(x, img, ws3[:, 2 * i: 2 * i + 3], ctx, nxt, None if nxt is None else ws3[:, 2 * i + 2])
        m = ctx.pos.margin
        return img[:, :, :, m: img.shape[3] - m] if m else img


class Generator(nn.Module):
    """ALIS generator. `map` turns latents into anchors, `frame` renders the official frame,
    `patches` renders any set of patches (the panorama engine's unit of work)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.config = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        self.compute_dtype = torch.float32
        # fast: NHWC activations and folded weights (about 1e-6 relative from exact); exact: the
        # official order of operations, matching official outputs to 1e-4. Reduced dtypes are fast.
        self.fast = False

    @property
    def img_resolution(self) -> int:
        return self.config.img_resolution

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def anchor_spacing(self) -> int:
        return self.config.anchor_spacing

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def map(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """z [N, z_dim] -> w [N, w_dim]; truncation lerps towards the tracked w_avg."""
        return self.mapping(z.to(self.device), truncation_psi=truncation_psi)

    def _per_layer(self, w: Tensor, name: str) -> Tensor:
        w = w.to(self.device, torch.float32)
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise AlisError(f"{name} must be [N, {self.w_dim}] or [N, {self.num_ws}, {self.w_dim}], "
                            f"got {list(w.shape)}")
        return w

    def frame(self, w_left: Tensor, w_center: Tensor, w_right: Tensor, left_border,
              noise_mode: str = "none", generator: torch.Generator | None = None) -> Tensor:
        """One frame per sample, [N, 3, H, H] in [-1, 1], as the official synthesis computes it for
        ws=w_center, ws_context=(w_left, w_right), left_borders_idx=left_border (patches, [N])."""
        wl, wc, wr = (self._per_layer(w, n) for w, n in
                      ((w_left, "w_left"), (w_center, "w_center"), (w_right, "w_right")))
        n, g = wc.shape[0], self.config.grid_size
        lb = torch.as_tensor(left_border).reshape(-1).cpu()
        if lb.numel() not in (1, n):
            raise AlisError(f"left_border must hold 1 or {n} values, got {lb.numel()}")
        max_lb = 2 * self.config.patches_per_interval - g
        if lb.min() < 0 or lb.max() > max_lb:
            raise AlisError(f"left_border must lie in [0, {max_lb}] (patches inside the window), got {lb.tolist()}")
        lb = lb.expand(n).to(torch.float32)
        lb = (self.synthesis.max_shift_strength.cpu() * lb).to(torch.int64).numpy()
        ws3 = torch.stack([wl, wc, wr], dim=2).repeat_interleave(g, dim=0)  # [N*g, num_ws, 3, w_dim]
        pos = PatchPositions(np.repeat(lb, g), np.tile(np.arange(g), n))
        patches = self.synthesis(ws3, pos, noise_mode, generator, self.compute_dtype, self.fast)  # [N*g, C, H, pw]
        c, h, pw = patches.shape[1:]
        return patches.reshape(n, g, c, h, pw).permute(0, 2, 3, 1, 4).reshape(n, c, h, g * pw)

    def patches(self, ws3: Tensor, left_border, slot, noise_mode: str = "none",
                generator: torch.Generator | None = None, canonical: bool = True, margin: int = 0,
                span: int = 1) -> Tensor:
        """Render B independent patches: ws3 [B, 3, w_dim] or [B, num_ws, 3, w_dim] -> [B, 3, H, Wp].

        With `margin` > 0 (context rendering), each element is a strip of `span` consecutive patches
        computed together with `margin` context columns each side at every resolution, and ws3 holds
        every anchor those columns reach ([B, (num_ws,) A, w_dim], from the first one):
        [B, 3, H, span * Wp]. A margin of `CONTEXT_MARGIN` makes every column equal what one
        convolution over the whole panorama would give, so strips join without a seam.
        """
        ws3 = ws3.to(self.device, torch.float32)
        if ws3.ndim == 3:
            ws3 = ws3.unsqueeze(1).expand(-1, self.num_ws, -1, -1)
        pos = PatchPositions(np.asarray(left_border, dtype=np.int64).reshape(-1),
                             np.asarray(slot, dtype=np.int64).reshape(-1), canonical=canonical,
                             margin=int(margin), span=int(span))
        return self.synthesis(ws3, pos, noise_mode, generator, self.compute_dtype, self.fast)
