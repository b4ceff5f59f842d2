"""Optional compiled kernels for the CPU's bfloat16 path (the `fast` extra: numba).

PyTorch runs an activation, a clamp or a multiply as one pass over memory each, and on bfloat16
each pass costs about as much as the next (the conversions to float and back dominate), while
its oneDNN convolution fuses at most one activation. With numba installed, what follows a
bfloat16 convolution runs as one pass: after a stride-1 layer the leaky ReLU, clamp and the next
layer's SA-AdaIN scaling (the same bits as the PyTorch operations); after an upsampling layer's
polyphase convolution also the interleaving of its phases, the low-pass filter, bias and noise
(in float32, rounded once: within a bfloat16 rounding of the PyTorch path, which rounds after
every step). Without numba, or with ALIS_KERNELS=0 in the environment, the PyTorch path runs.
numba compiles the kernels on their first use and caches them on disk (seconds, once).
"""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import torch
from torch import Tensor

ENV = "ALIS_KERNELS"  # "0": never use the kernels
_impl = None  # the loaded kernel module; False once it proved unavailable (tests set it)
_NONE = np.zeros(0, np.uint16)  # an absent noise or scale


def _load():
    global _impl
    if _impl is None:
        _impl = False
        if os.environ.get(ENV, "1") != "0":
            try:
                with warnings.catch_warnings():  # a read-only cache folder costs a recompile, nothing else
                    warnings.simplefilter("ignore")
                    from . import _numba_kernels
                _impl = _numba_kernels
            except ImportError:
                pass
    return _impl


def available() -> bool:
    """Whether the kernels run here (numba importable and not switched off)."""
    return bool(_load())


def enabled_for(x: Tensor) -> bool:
    """Whether the kernels take this activation: bfloat16, on the CPU, in channels-last memory."""
    return (x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
            and available())


def _bits(t: Tensor | None) -> np.ndarray:
    """The uint16 bits of a bfloat16 tensor stored as one dense block, in memory order, without a
    copy (a tensor in channels-last memory through its NHWC view). None: an empty array."""
    if t is None:
        return _NONE
    if t.dim() == 4 and not t.is_contiguous():
        t = t.permute(0, 2, 3, 1)
    if t.dtype != torch.bfloat16 or not t.is_contiguous():
        raise ValueError(f"the kernels need dense bfloat16 tensors, got {t.dtype} with strides {t.stride()}")
    return t.view(torch.int16).numpy().view(np.uint16).reshape(-1)


def _per_pixel(noise: Tensor | None, b: int, h: int, w: int) -> Tensor | None:
    """noise [B or 1, 1, H, W] -> bfloat16 [B, 1, H, W], dense."""
    return None if noise is None else noise.to(torch.bfloat16).expand(b, 1, h, w).contiguous()


def _per_column(scale: Tensor | None, b: int, c: int, w: int) -> Tensor | None:
    """An SA-AdaIN scale [B, C, 1, W] -> bfloat16 in channels-last memory ([B, W, C] in memory)."""
    if scale is None:
        return None
    if tuple(scale.shape) != (b, c, 1, w):
        raise ValueError(f"scale must be [{b}, {c}, 1, {w}], got {list(scale.shape)}")
    return scale.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def _threads():
    """numba's threads for one call: as many as PyTorch uses (its thread count is per calling thread)."""
    import numba  # loaded with the kernels
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _limit(clamp: float | None) -> float:
    return float("inf") if clamp is None else float(clamp)


def epilogue_bf16_(x: Tensor, clamp: float | None, act: bool = True, noise: Tensor | None = None,
                   scale: Tensor | None = None, slope: float = 0.2) -> Tensor:
    """In place on x [B, C, H, W] (bfloat16, channels-last memory), bit for bit as the PyTorch
    operations `x.add_(noise)` (noise [B or 1, 1, H, W]), `F.leaky_relu_(x, slope)` (if act),
    `x.clamp_(-clamp, clamp)` and `x.mul_(scale)` (scale [B, C, 1, W], an SA-AdaIN modulation)
    compute it, in one pass. Returns x."""
    impl = _load()
    b, c, h, w = x.shape
    nz, sc = _per_pixel(noise, b, h, w), _per_column(scale, b, c, w)
    lim = _limit(clamp)
    with _threads():
        impl.epilogue_bf16(_bits(x), b * h, w, c, _bits(nz), _bits(sc), slope if act else 1.0, -lim, lim)
    return x


def upsample_epilogue_bf16(even: Tensor, odd: Tensor, bias: Tensor, clamp: float | None, noise: Tensor | None = None,
                           scale: Tensor | None = None, slope: float = 0.2, block: int = 8) -> Tensor:
    """The rest of a bfloat16 upsampling layer after its polyphase convolution
    (`SynthesisLayer._polyphase_halves`): `even` [B, 2C, h + 1, w + 1] (output rows 2i) and `odd`
    [B, 2C, h, w + 1] (rows 2i + 1), channels-last, channel p * C + o holding column parity p of
    channel o -> [B, C, 2h, 2w] channels-last: the phases interleaved, the [1,3,3,1] low-pass
    filter (gain 4), + bias + noise ([B or 1, 1, 2h, 2w], gain applied), leaky ReLU, clamp,
    * scale ([B, C, 1, 2w]), in float32, rounded once. `block`: output rows per task."""
    impl = _load()
    b, c2, h, w1 = odd.shape
    c, w = c2 // 2, w1 - 1
    if tuple(even.shape) != (b, c2, h + 1, w1):
        raise ValueError(f"even must be [{b}, {c2}, {h + 1}, {w1}] beside odd {list(odd.shape)}, got {list(even.shape)}")
    out = torch.empty([b, c, 2 * h, 2 * w], dtype=torch.bfloat16, memory_format=torch.channels_last)
    nz, sc = _per_pixel(noise, b, 2 * h, 2 * w), _per_column(scale, b, c, 2 * w)
    lim = _limit(clamp)
    with _threads():
        impl.upsample_epilogue_bf16(_bits(even), _bits(odd), _bits(out), b, h, w, c,
                                    bias.detach().float().contiguous().numpy(), _bits(nz), _bits(sc), slope, -lim, lim,
                                    block)
    return out
