"""Optional compiled kernels for CPU rendering (the `fast` extra: numba), float32 and bfloat16.

PyTorch runs a noise addition, an activation, a clamp or a multiply as one pass over memory each
(on bfloat16 each pass costs about as much as the next: the conversions to float and back
dominate), its oneDNN convolution fuses at most one activation, and its Winograd transforms
(`layers.conv3x3_winograd`) are dense 36x36 matrix products. With numba installed:

- bfloat16, after a stride-1 convolution: noise, leaky ReLU and clamp in one pass
  (`epilogue_bf16_`, bit for bit as the PyTorch operations `add_`, `leaky_relu_`, `clamp_`; the
  PyTorch path lets oneDNN add the noise before its rounding instead); after an upsampling layer's
  polyphase convolution, the
  interleaving of its phases, the low-pass filter, bias, noise, activation, clamp and the next
  layer's SA-AdaIN scaling in one pass (`upsample_epilogue_bf16`: float32, rounded once, so within a
  bfloat16 rounding of the PyTorch path, which rounds after every step);
- float32: 3x3 convolutions as Winograd F(4x4, 3x3) whose transforms are compiled sparse sums, the
  epilogue inside the output transform (`conv3x3_winograd_f32`); upsampling layers as one matrix
  product (or PyTorch's transposed convolution) and one compiled pass for the rest
  (`deconv_up2_f32`, `upsample_epilogue_f32`).

Which layers take them is decided in `generator.SynthesisLayer._forward_fused` (those of models
large enough to pay for loading them: `generator.KERNEL_MIN_WORK`). Without numba, or with ALIS_KERNELS=0 in the environment, the
PyTorch path runs. numba compiles the kernels on their first use and caches them on disk (about 15-20 s
once); loading them costs a process about half a second.
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


def installed() -> bool:
    """Whether numba is installed and the kernels not switched off, without importing numba."""
    import importlib.util
    return os.environ.get(ENV, "1") != "0" and importlib.util.find_spec("numba") is not None


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


def _per_pixel(noise: Tensor | None, b: int, h: int, w: int, dtype=torch.bfloat16) -> Tensor | None:
    """noise [B or 1, 1, H, W] -> `dtype` [B, 1, H, W], dense."""
    return None if noise is None else noise.to(dtype).expand(b, 1, h, w).contiguous()


def _per_column(scale: Tensor | None, b: int, c: int, w: int, dtype=torch.bfloat16) -> Tensor | None:
    """An SA-AdaIN scale [B, C, 1, W] -> `dtype` in channels-last memory ([B, W, C] in memory)."""
    if scale is None:
        return None
    if tuple(scale.shape) != (b, c, 1, w):
        raise ValueError(f"scale must be [{b}, {c}, 1, {w}], got {list(scale.shape)}")
    return scale.to(dtype).contiguous(memory_format=torch.channels_last)


class KernelFailure(RuntimeError):
    """A compiled kernel failed to compile or run on this machine. The kernels are then off for the
    rest of the process, and the generator renders the same call again on the PyTorch path."""


@contextlib.contextmanager
def _threads():
    """Around every kernel call: numba's threads set to as many as PyTorch uses (its thread count
    is per calling thread), and any failure of the kernels turned into a KernelFailure that
    switches them off (out-of-memory errors pass as they are)."""
    global _impl
    import numba  # loaded with the kernels
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    except (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)):
        raise
    except Exception as e:
        _impl = False
        warnings.warn(f"alis_core: the compiled kernels failed here ({type(e).__name__}: {str(e)[:200]}); "
                      f"rendering without them from now on (set {ENV}=0 to skip them)", RuntimeWarning, stacklevel=3)
        raise KernelFailure(str(e)) from e
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


def _noise_f32(noise: Tensor | None, b: int, h: int, w: int) -> np.ndarray:
    """noise [B or 1, 1, H, W] -> float32 [B * H * W] (empty for None)."""
    t = _per_pixel(noise, b, h, w, torch.float32)
    return np.zeros(0, np.float32) if t is None else t.numpy().reshape(-1)


def _scale_f32(scale: Tensor | None, b: int, c: int, w: int) -> np.ndarray:
    """An SA-AdaIN scale [B, C, 1, W] -> float32 [B * W * C] (empty for None)."""
    t = _per_column(scale, b, c, w, torch.float32)
    return np.zeros(0, np.float32) if t is None else t.permute(0, 2, 3, 1).numpy().reshape(-1)


WINOGRAD_CHUNK_BYTES = 16 << 20  # conv3x3_winograd_f32: transformed tiles per chunk (bounded memory)


def conv3x3_winograd_f32(x: Tensor, weight_wino: Tensor, bias: Tensor, noise: Tensor | None = None,
                         gain: float = 1.0, clamp: float | None = None, slope: float = 0.2) -> Tensor:
    """leaky_relu(F.conv2d(x, weight, bias, padding=1) + gain * noise, slope).clamp(-clamp, clamp)
    by Winograd F(4x4, 3x3): the transforms compiled (sparse sums, the epilogue inside the output
    transform), the products by torch.bmm, in chunks of whole tile rows whose transformed tiles
    take at most WINOGRAD_CHUNK_BYTES. x: float32 [B, I, H, W] in channels-last memory, H and W
    multiples of 4; weight_wino: [36, I, O] from `layers.winograd_weight(weight, 4)`; noise
    [B or 1, 1, H, W] or None; slope 1: no activation. -> [B, O, H, W] channels-last."""
    impl = _load()
    b, c, h, w = x.shape
    o = weight_wino.shape[2]
    if h % 4 or w % 4 or tuple(weight_wino.shape) != (36, c, o) or x.dtype != torch.float32:
        raise ValueError(f"conv3x3_winograd_f32 takes float32 [B, I, 4m, 4n] and weights [36, I, O], "
                         f"got {x.dtype} {list(x.shape)} and {list(weight_wino.shape)}")
    x = x.contiguous(memory_format=torch.channels_last)
    tiles_x, tile_rows = w // 4, b * (h // 4)
    rows = max(1, min(tile_rows, WINOGRAD_CHUNK_BYTES // (36 * tiles_x * max(c, o) * 4)))
    v = torch.empty(36 * rows * tiles_x * c)
    m = torch.empty(36 * rows * tiles_x * o)
    out = torch.empty([b, o, h, w], memory_format=torch.channels_last)
    nz = _noise_f32(noise, b, h, w)
    xs, outs = x.permute(0, 2, 3, 1).numpy().reshape(-1), out.permute(0, 2, 3, 1).numpy().reshape(-1)
    bs = bias.detach().float().contiguous().numpy()
    wt = weight_wino.float()
    lim = _limit(clamp)
    with _threads():
        for r0 in range(0, tile_rows, rows):
            n = min(rows, tile_rows - r0)
            t = n * tiles_x
            vc, mc = v[: 36 * t * c], m[: 36 * t * o]
            impl.winograd_input_f32(xs, vc.numpy(), h, w, c, tiles_x, r0, n)
            torch.bmm(vc.view(36, t, c), wt, out=mc.view(36, t, o))
            impl.winograd_output_f32(mc.numpy(), outs, bs, nz, h, w, o, tiles_x, r0, n, gain, slope, -lim, lim)
    return out


def upsample_epilogue_f32(y: Tensor, bias: Tensor, clamp: float | None, noise: Tensor | None = None,
                          gain: float = 1.0, scale: Tensor | None = None, slope: float = 0.2,
                          block: int = 8) -> Tensor:
    """The rest of a float32 upsampling layer after its stride-2 transposed convolution:
    y [B, C, 2h + 1, 2w + 1] -> [B, C, 2h, 2w] (channels-last): the [1,3,3,1] low-pass filter
    (padding 1, gain 4), + bias + gain * noise ([B or 1, 1, 2h, 2w]), leaky ReLU, clamp, * scale
    ([B, C, 1, 2w]), in one pass. `block`: output rows per task."""
    impl = _load()
    b, c, h1, w1 = y.shape
    h, w = (h1 - 1) // 2, (w1 - 1) // 2
    if h1 % 2 == 0 or w1 % 2 == 0:
        raise ValueError(f"y must be [B, C, 2h + 1, 2w + 1], got {list(y.shape)}")
    y = y.float().contiguous(memory_format=torch.channels_last)
    out = torch.empty([b, c, 2 * h, 2 * w], memory_format=torch.channels_last)
    nz, sc = _noise_f32(noise, b, 2 * h, 2 * w), _scale_f32(scale, b, c, 2 * w)
    lim = _limit(clamp)
    with _threads():
        impl.upsample_epilogue_f32(y.permute(0, 2, 3, 1).numpy().reshape(-1), out.permute(0, 2, 3, 1).numpy().reshape(-1),
                                   b, h, w, c, bias.detach().float().contiguous().numpy(), nz, gain, sc, slope, -lim, lim,
                                   block)
    return out


DECONV_CHUNK_BYTES = 16 << 20  # deconv_up2_f32: products per chunk (bounded memory)


def deconv_up2_f32(x: Tensor, weight_mat: Tensor, bias: Tensor, clamp: float | None, noise: Tensor | None = None,
                   gain: float = 1.0, scale: Tensor | None = None, slope: float = 0.2, block: int = 8) -> Tensor:
    """A whole float32 upsampling layer (StyleGAN2's up=2 modulated convolution after the
    modulation): x [B, I, h, w] channels-last, weight_mat [I, 3 * 3 * O] (the transposed
    convolution's kernel [I, O, 3, 3] as (ky, kx, o) columns) -> [B, O, 2h, 2w] channels-last.
    Every input pixel times the whole kernel by one matrix product per chunk of input rows
    (torch.matmul), then one compiled pass: the products summed into the transposed
    convolution's grid, the [1,3,3,1] low-pass filter (padding 1, gain 4), + bias + gain * noise
    ([B or 1, 1, 2h, 2w]), leaky ReLU, clamp, * scale ([B, O, 1, 2w])."""
    impl = _load()
    b, i, h, w = x.shape
    o = weight_mat.shape[1] // 9
    if weight_mat.shape != (i, 9 * o) or x.dtype != torch.float32:
        raise ValueError(f"deconv_up2_f32 takes float32 x [B, I, h, w] and weights [I, 9 * O], got {x.dtype} "
                         f"{list(x.shape)} and {list(weight_mat.shape)}")
    xs = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # [B, h, w, I], dense
    out = torch.empty([b, o, 2 * h, 2 * w], memory_format=torch.channels_last)
    nz, sc = _noise_f32(noise, b, 2 * h, 2 * w), _scale_f32(scale, b, o, 2 * w)
    outs = out.permute(0, 2, 3, 1).numpy().reshape(-1)
    bs = bias.detach().float().contiguous().numpy()
    wm = weight_mat.float()
    lim = _limit(clamp)
    rows_in = max(1, DECONV_CHUNK_BYTES // (w * 9 * o * 4) - 2)  # input rows whose output rows a chunk writes
    with _threads():
        for image in range(b):
            for r_begin in range(0, 2 * h, 2 * rows_in):
                r_end = min(2 * h, r_begin + 2 * rows_in)
                first, last = max(0, (r_begin - 1) // 2 - 1), min(h, r_end // 2 + 1)  # input rows these need
                y9 = torch.matmul(xs[image, first:last].reshape(-1, i), wm)  # [(rows, w), (3, 3, O)]
                impl.deconv_epilogue_f32(y9.numpy().reshape(-1), first, outs, image, r_begin, r_end, h, w, o, bs, nz,
                                         gain, sc, slope, -lim, lim, block)
    return out


def warm_up() -> bool:
    """Load (on first use ever: compile) every kernel now, on tiny inputs, so that no later call
    pays for it; False where the kernels are unavailable. Loading takes about half a second and
    150 MB of memory (numba and LLVM), compiling them all about 15-20 s (once: numba caches them on disk)."""
    if not available():
        return False
    from .layers import winograd_weight
    x16 = torch.zeros(1, 2, 1, 2, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    noise16 = torch.zeros(1, 1, 1, 2, dtype=torch.bfloat16)
    for noise in (None, noise16):
        for scale in (None, torch.ones(1, 2, 1, 2)):
            epilogue_bf16_(x16.clone(), 1.0, True, noise, scale)
    even = torch.zeros(1, 4, 2, 2, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    odd = torch.zeros(1, 4, 1, 2, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    upsample_epilogue_bf16(even, odd, torch.zeros(2), 1.0, torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 1, 2))
    x = torch.zeros(1, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    conv3x3_winograd_f32(x, winograd_weight(torch.zeros(2, 2, 3, 3), 4), torch.zeros(2), torch.zeros(1, 1, 4, 4))
    deconv_up2_f32(x, torch.zeros(2, 18), torch.zeros(2), 1.0, torch.zeros(1, 1, 8, 8), 1.0, torch.ones(1, 2, 1, 8))
    upsample_epilogue_f32(torch.zeros(1, 2, 9, 9).contiguous(memory_format=torch.channels_last), torch.zeros(2), 1.0,
                          torch.zeros(1, 1, 8, 8), 1.0, torch.ones(1, 2, 1, 8))
    return True
