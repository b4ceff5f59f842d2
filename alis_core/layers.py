"""Pure tensor ops of ALIS first, small modules after. Reference semantics run on any device.

All ops act on *patch batches*: x [B, C, H, Wp] holds B patches, each convolved on its own with
zero padding (ALIS Sec. 3.2: patches are generated independently, so a panorama of any length is
a sequence of patches). No reshuffling between frame and patch layouts is ever needed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_ALPHA = 0.2
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x / RMS(x) along `dim` (StyleGAN's z normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(x: Tensor, b: Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by gain, clamp to +-clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA)
        gain = gain * LRELU_GAIN
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def lowpass_filter_1d(device=None) -> Tensor:
    """The [1,3,3,1] binomial filter, normalised to sum 1."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    return f / f.sum()


_FILTERS: dict = {}


def _filter_2d(channels: int, gain: float, dtype, device) -> Tensor:
    """The [1,3,3,1] x [1,3,3,1] filter times `gain` as a depthwise weight [channels, 1, 4, 4], cached
    (a constant; made under inference_mode it could not enter a graph, so kept apart then)."""
    key = (channels, gain, dtype, str(device), torch.is_inference_mode_enabled())
    if key not in _FILTERS:
        f = lowpass_filter_1d(device).to(torch.float64)
        _FILTERS[key] = (torch.outer(f, f) * gain).to(dtype).expand(channels, 1, 4, 4).contiguous()
    return _FILTERS[key]


POOLED_LOWPASS_DEVICES = ("cuda", "mps")  # where `lowpass2d` pools when gradients are recorded


def lowpass2d(x: Tensor, pad: int, gain: float = 1.0, stride: int = 1) -> Tensor:
    """Zero-pad by `pad`, convolve every channel with the [1,3,3,1] x [1,3,3,1] filter times `gain`,
    keep every `stride`-th pixel.

    One depthwise convolution, except on accelerators with gradients recorded, where it runs as three
    2x2 averages (the binomial filter is a 2-tap box filter three times over): PyTorch computes the
    double backward of a grouped convolution (R1 and path-length regularisation differentiate
    gradients) one channel at a time, about 1000 convolutions per R1 pass of the default128 model,
    each a kernel launch on a GPU; pooling has no groups, and its derivatives are poolings again.
    On the CPU the grouped convolution stays (pooled, training steps there were no faster).
    """
    if x.device.type in POOLED_LOWPASS_DEVICES and torch.is_grad_enabled() and x.requires_grad:
        if pad:
            x = F.pad(x, [pad] * 4)
        x = F.avg_pool2d(F.avg_pool2d(F.avg_pool2d(x, 2, 1), 2, 1), 2, stride)
        return x * gain if gain != 1 else x
    c = x.shape[1]
    return F.conv2d(x, _filter_2d(c, gain, x.dtype, x.device), stride=stride, padding=pad, groups=c)


def upsample2d(x: Tensor) -> Tensor:
    """2x upsampling with the [1,3,3,1] filter: zero-insert, pad (2, 1), filter; per patch.

    Equals StyleGAN2's upfirdn2d.upsample2d; written as one depthwise transposed convolution. On the
    CPU in channels-last memory: oneDNN's depthwise transposed convolution of an NCHW image (the
    3-channel skip image) takes many times as long.
    """
    c = x.shape[1]
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(x, _filter_2d(c, 4.0, x.dtype, x.device), stride=2, padding=1, groups=c)


def conv_transpose3x3_up2(x: Tensor, weight_t: Tensor) -> Tensor:
    """3x3 convolution on the 2x upsampled input, as StyleGAN2's conv2d_resample(up=2) computes it:
    a stride-2 transposed convolution (weight_t [I, O, 3, 3]) followed by the [1,3,3,1] low-pass
    filter (pad 1, gain 4). [B, I, h, w] -> [B, O, 2h, 2w]."""
    return lowpass2d(F.conv_transpose2d(x, weight_t, stride=2), 1, 4.0)  # from [B, O, 2h+1, 2w+1]


# Winograd F(m x m, 3x3) (Lavin & Gray 2016): an (m+2)^2 input tile gives an m x m output tile.
# F(4x4): points 0, +-1, +-2, infinity, 36 multiplications per channel pair instead of 144;
# F(2x2): points 0, +-1, infinity, 16 instead of 36 (weights 16/9 the size instead of 4x: better
# where the weights, not the multiplications, dominate).
_WINO = {
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),  # B^T
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),  # G
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),  # A^T
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
}
_WINO_MATS: dict = {}
WINOGRAD_CHUNK_TILES = 128  # conv3x3_winograd: tiles per chunk, for layers with at least
WINOGRAD_CHUNK_MIN_RATIO = 4  # this many times more tiles than output channels


def _winograd_mats(m: int, dtype, device) -> tuple[Tensor, Tensor]:
    """Both 2D transforms of F(m x m, 3x3) as Kronecker products: input [t*t, t*t], output
    [m*m, t*t] (t = m + 2)."""
    key = (m, dtype, str(device))
    if key not in _WINO_MATS:
        bt, at = (torch.tensor(_WINO[m][i], dtype=torch.float64) for i in (0, 2))
        _WINO_MATS[key] = (torch.kron(bt, bt).to(device, dtype), torch.kron(at, at).to(device, dtype))
    return _WINO_MATS[key]


def winograd_weight(weight: Tensor, m: int = 4) -> Tensor:
    """A 3x3 convolution weight [O, I, 3, 3] in the Winograd domain of F(m x m, 3x3):
    [(m+2)^2, I, O]. G w G^T for every channel pair as one matrix product with kron(G, G), in the
    weight's precision (float32: 3e-8 relative, against 1e-5 for the convolution itself); a
    float64 computation would be slower and its large temporaries would slow the first frame."""
    g = torch.tensor(_WINO[m][1], dtype=torch.float64)
    o, i, t = weight.shape[0], weight.shape[1], m + 2
    k = torch.kron(g, g).to(weight.device, weight.dtype)  # [(a, b), (k, l)]
    u = weight.reshape(o * i, 9) @ k.t()  # [(O, I), (a, b)]
    return u.t().reshape(t * t, o, i).transpose(1, 2).contiguous()


def conv3x3_winograd(x: Tensor, weight_wino: Tensor, bias: Tensor | None = None, add: Tensor | None = None,
                     alpha: float = 1.0) -> Tensor:
    """F.conv2d(x, weight, bias, padding=1) + alpha * add, by Winograd F(m x m, 3x3) with m the
    tile size `weight_wino` was made for (4 or 2), for H and W multiples of m.

    x [B, I, H, W] (best in channels-last memory), weight_wino from `winograd_weight`, `add`
    broadcastable to [B, 1, H, W] (noise) -> [B, O, H, W] in channels-last memory. F(4x4): 2.25x
    fewer multiply-adds than the direct convolution, paid for with three passes over tiles 2.25x the
    size of the input and output and 4x larger weights: a gain from about 128 channels and 64
    tiles. F(2x2): 2.25x fewer too, 4x the input and 16/9 the weights. Relative error in float32
    about 1e-5 (F(4x4)) and 2e-6 (F(2x2)).
    """
    b, c, h, w = x.shape
    t2, _, o = weight_wino.shape
    t = math.isqrt(t2)
    m = t - 2
    if h % m or w % m:
        raise ValueError(f"conv3x3_winograd F({m}x{m}) needs H and W multiples of {m}, got {h}x{w}")
    ty, tx = h // m, w // m
    k_in, k_out = _winograd_mats(m, x.dtype, x.device)
    xp = x.new_empty([b, h + 2, w + 2, c])  # zero-padded, NHWC
    for border in (xp[:, 0], xp[:, -1], xp[:, :, 0], xp[:, :, -1]):
        border.zero_()
    xp[:, 1:-1, 1:-1] = x.permute(0, 2, 3, 1)
    s = xp.stride()
    out = torch.empty([b, o, h, w], dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    if add is not None:
        add = add.to(x.dtype).expand(b, 1, h, w).reshape(b, ty, m, tx, m, 1)
    tiled = out.permute(0, 2, 3, 1).view(b, ty, m, tx, m, o)
    # Chunks of about WINOGRAD_CHUNK_TILES tiles (whole tile rows of one image) keep each chunk's
    # transformed tiles in the caches from one pass to the next; every chunk reads all the weights
    # again, so only layers with many more tiles than output channels are chunked.
    rows = ty if b * ty * tx < WINOGRAD_CHUNK_MIN_RATIO * o else max(1, WINOGRAD_CHUNK_TILES // tx)
    chunks = [(0, b, 0, ty)] if rows >= ty else [(i, 1, r0, min(rows, ty - r0)) for i in range(b)
                                                  for r0 in range(0, ty, rows)]
    for i, n, r0, r in chunks:  # images i..i+n-1, tile rows r0..r0+r-1
        origin = xp.storage_offset() + i * s[0] + r0 * m * s[1]
        tiles = xp.as_strided([t, t, n, r, tx, c], [s[1], s[2], s[0], m * s[1], m * s[2], 1], origin)  # overlapping
        v = (k_in @ tiles.reshape(t2, -1)).view(t2, -1, c)  # [t*t, tiles, I]
        y = torch.bmm(v, weight_wino)  # [t*t, tiles, O]
        if bias is not None:  # column 1 of A^T is all ones: a constant at point (1, 1) reaches all outputs
            y[t + 1].add_(bias.to(x.dtype))
        y = (k_out @ y.view(t2, -1)).view(m, m, n, r, tx, o).permute(2, 3, 0, 4, 1, 5)
        dst = tiled[i: i + n, r0: r0 + r]
        if add is None:
            dst.copy_(y)
        else:  # the noise rides along the pass that lays the tiles out
            torch.add(y, add[i: i + n, r0: r0 + r], alpha=alpha, out=dst)
    return out


# ---------------------------------------------------------------------------------------------
# Fourier coordinate features (ALIS Sec. 3.3): a logarithmic basis of wavefronts in 4 directions.

def logarithmic_basis(resolution: int, max_features: int, remove_lowest_freq: bool = True,
                      use_diagonal: bool = True) -> Tensor:
    """Frequencies [D, 2] (x, y coefficients) of the coordinate features, float32.

    Per direction, ceil(log2(resolution)) octaves of a base period of 4 (4*sqrt(2) on diagonals);
    directions: horizontal bands, vertical bands, main and anti diagonal. If the octaves of all
    directions do not fit `max_features`, the diagonals are dropped (anti-diagonal first).
    The float32 arithmetic (direction * 2^k * 2pi/period) is the official one, so the phases, and
    thus the pixels, match official checkpoints bit for bit at the first layer.
    """
    n = int(math.ceil(math.log2(resolution)))
    s = 1.0 / math.sqrt(2.0)
    directions = [((0.0, 1.0), 4.0), ((1.0, 0.0), 4.0)]
    if use_diagonal:
        directions += [((-s, s), 4.0 * math.sqrt(2.0)), ((s, s), 4.0 * math.sqrt(2.0))]
    while n * len(directions) > max_features and len(directions) > 2:
        directions = directions[:-1]
    first = 1 if remove_lowest_freq else 0
    powers = (2.0 ** torch.arange(first, n, dtype=torch.float32)).unsqueeze(1)  # [n', 1]
    rows = [torch.tensor([d], dtype=torch.float32) * powers * (2.0 * math.pi / period) for d, period in directions]
    basis = torch.cat(rows, dim=0) if rows and n > first else torch.zeros([0, 2])
    if basis.shape[0] > max_features:
        raise ValueError(f"{basis.shape[0]} coordinate features do not fit into {max_features}")
    return basis


def coord_features(basis: Tensor, x: np.ndarray, y: np.ndarray, use_cosine: bool) -> Tensor:
    """sin (and cos) of basis . (x, y) at every pixel: [B, D(*2), H, W] from x [B, W], y [H], float32.

    The phase is the official float32 einsum over (x, y); x and y are exact in float32.
    """
    b, w, h = x.shape[0], x.shape[1], y.shape[0]
    xs = torch.from_numpy(x.astype(np.float32))[:, None, :].expand(b, h, w)
    ys = torch.from_numpy(y.astype(np.float32))[None, :, None].expand(b, h, w)
    coords = torch.stack([xs, ys], dim=1)  # [B, 2, H, W]
    phase = torch.einsum("bdc,bcxy->bdxy", basis.unsqueeze(0).expand(b, -1, -1).contiguous(), coords)
    return torch.cat([phase.sin(), phase.cos()] if use_cosine else [phase.sin()], dim=1)


# ---------------------------------------------------------------------------------------------
# Modules

def _version(t: Tensor) -> tuple[int, int]:
    """What caches derived from a tensor are keyed by: its memory (a tensor swapped in, as by
    `load_state_dict(..., assign=True)`, has other memory) and its in-place update counter
    (inference tensors, made under inference_mode as in ComfyUI, cannot change: they have none).
    Writes through `.data` bump no counter: models that are changed that way need `G.to()` (which
    empties the caches) afterwards."""
    return t.data_ptr(), 0 if t.is_inference() else t._version


class FullyConnected(nn.Module):
    """A dense layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self._scaled: tuple | None = None

    def scaled(self, dtype, keep: bool = True) -> tuple[Tensor, Tensor]:
        """(weight^T, bias [1, out]) with the learning-rate gains applied: cached while the
        weights are frozen (inference scales them once, not on every call). `keep` False: not
        cached (for a caller that keeps its own copy)."""
        frozen = keep and not (self.weight.requires_grad and torch.is_grad_enabled())
        key = (dtype, self.weight.device, _version(self.weight), _version(self.bias),
               torch.is_inference_mode_enabled())
        if frozen and self._scaled is not None and self._scaled[0] == key:
            return self._scaled[1]
        wt = (self.weight.to(dtype) * self.weight_gain).t()
        b = self.bias.to(dtype).unsqueeze(0)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if frozen:
            self._scaled = (key, (wt.detach(), b.detach()))
        return wt, b

    def _apply(self, fn, *args, **kwargs):
        self._scaled = None  # moved or cast: the cached copy would pin the old device's memory
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        wt, b = self.scaled(x.dtype)
        if self.activation == "linear":
            return torch.addmm(b, x, wt)
        return bias_act(x.matmul(wt), b[0], self.activation)


def polyphase_weight(weight_t: Tensor) -> Tensor:
    """Rewrite a stride-2 transposed 3x3 kernel [I, O, 3, 3] as one 2x2 convolution [4*O, I, 2, 2]
    whose 4 output groups are the 4 phases (row parity a, column parity b) of the upsampled result."""
    i, o = weight_t.shape[:2]
    k = weight_t.new_zeros([o, 2, 2, i, 2, 2])  # [O, a, b, I, u, v]
    taps = {0: ((1, 0), (0, 2)), 1: ((1, 1),)}  # phase -> ((u, kernel index), ...): u = 1 reads x[m]
    wt = weight_t.permute(1, 0, 2, 3)  # [O, I, 3, 3]
    for a, rows in taps.items():
        for b, cols in taps.items():
            for u, kh in rows:
                for v, kw in cols:
                    k[:, a, b, :, u, v] = wt[:, :, kh, kw]
    return k.reshape(4 * o, i, 2, 2)


def conv_up2_polyphase(x: Tensor, weight_pp: Tensor) -> Tensor:
    """Same result as conv_transpose3x3_up2, computed as one ordinary 2x2 convolution per phase
    (weight_pp from `polyphase_weight`) and a pixel shuffle: ordinary convolutions run several times
    faster than transposed ones on CPUs with bfloat16 matrix units. [B, I, h, w] -> [B, O, 2h, 2w]."""
    h, w = x.shape[2:]
    y = F.pixel_shuffle(F.conv2d(x, weight_pp, padding=1), 2)  # [B, O, 2h+2, 2w+2]: the transposed conv, 0-padded
    return lowpass2d(y, 1, 4.0)[:, :, : 2 * h, : 2 * w]  # from [B, O, 2h+1, 2w+1]
