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
  (`deconv_up2_f32`, `upsample_epilogue_f32`);
- both: the end of every block, after its toRGB matrix product: the blend of the two anchors'
  RGB, bias, clamp and the skip connection's upsample-and-add in one pass (`torgb_skip`: a dozen
  small PyTorch operations per block before, which cost more than their arithmetic).

- the sky (`alis_core.sky`, float32): the band's calibration through a table, the band's detail
  textures, and every dome and ground row in one pass (`lut_rows`, `detail_rows`, `sky_rows`).

Which layers take them is the render plan's choice (`alis_core.cpu.plan`: those of models large
enough to pay for loading them, KERNEL_MIN_WORK), and `alis_core.cpu.fused` calls them. Without
numba, or with ALIS_KERNELS=0 in the environment, the
PyTorch path runs. numba compiles the kernels on their first use and caches them on disk (under a minute on two
cores, once; the sky's about 10 s of it); loading them costs a process about half a second.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import warnings

import numpy as np
import torch
from torch import Tensor

ENV = "ALIS_KERNELS"  # "0": never use the kernels
_impl = None  # the loaded kernel module; False once it proved unavailable (tests set it)
_NONE = np.zeros(0, np.uint16)  # an absent noise or scale
_NONE_F32 = np.zeros(0, np.float32)
_NONE_I64 = np.zeros(0, np.int64)
_EMPTY = {torch.bfloat16: _NONE, torch.float32: _NONE_F32, torch.int64: _NONE_I64}
F32 = torch.float32


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


_NP = {torch.bfloat16: (ctypes.c_uint16, np.uint16), torch.float32: (ctypes.c_float, np.float32),
       torch.int64: (ctypes.c_int64, np.int64)}
_ARRAY_TYPES: dict = {}  # (torch dtype, length) -> ctypes array type


def _flat(t: Tensor | None, dtype=torch.bfloat16) -> np.ndarray:
    """t's elements as a flat numpy array over its memory, in memory order (a tensor in channels-last
    memory: NHWC), without a copy: bfloat16 as its uint16 bits. t must be a dense CPU tensor of
    `dtype`; the caller keeps it alive while the array is in use. None: an empty array.
    (Through ctypes: a few hundred nanoseconds, where `Tensor.numpy()` and the views it needs are
    PyTorch operations of a few microseconds each, dozens of them in every frame.)"""
    if t is None:
        return _EMPTY[dtype]
    if t.dtype != dtype or t.device.type != "cpu" or not (
            t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))):
        raise ValueError(f"the kernels need dense {dtype} CPU tensors, got {t.dtype} on {t.device} with shape "
                         f"{list(t.shape)} and strides {t.stride()}")
    key = (dtype, t.numel())
    array = _ARRAY_TYPES.get(key)
    if array is None:
        if len(_ARRAY_TYPES) > 1024:
            _ARRAY_TYPES.clear()
        array = _ARRAY_TYPES[key] = _NP[dtype][0] * t.numel()
    return np.frombuffer(array.from_address(t.data_ptr()), _NP[dtype][1])


def _dense(t: Tensor | None, shape, dtype=torch.bfloat16, channels_last: bool = False) -> Tensor | None:
    """t broadcast to `shape` as a dense `dtype` tensor (channels-last memory if asked); t itself
    when it already is one (no PyTorch operation at all)."""
    if t is None:
        return None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if t.dtype == dtype and tuple(t.shape) == tuple(shape) and t.is_contiguous(memory_format=fmt):
        return t
    return t.to(dtype).expand(shape).contiguous(memory_format=fmt)


def _per_pixel(noise: Tensor | None, b: int, h: int, w: int, dtype=torch.bfloat16) -> Tensor | None:
    """noise [B or 1, 1, H, W] -> `dtype` [B, 1, H, W], dense."""
    return _dense(noise, (b, 1, h, w), dtype)


def _per_column(scale: Tensor | None, b: int, c: int, w: int, dtype=torch.bfloat16) -> Tensor | None:
    """An SA-AdaIN scale [B, C, 1, W] -> `dtype` in channels-last memory ([B, W, C] in memory)."""
    if scale is not None and tuple(scale.shape) != (b, c, 1, w):
        raise ValueError(f"scale must be [{b}, {c}, 1, {w}], got {list(scale.shape)}")
    return _dense(scale, (b, c, 1, w), dtype, channels_last=True)


def _require_nhwc(what: str, *tensors: Tensor) -> None:
    """Refuse 4-D tensors not in channels-last memory (a contiguous NCHW one would pass `_flat` and be
    read in the wrong order)."""
    if not all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        raise ValueError(f"{what} must be in channels-last memory, got strides {[t.stride() for t in tensors]}")


def _f32(t: Tensor) -> Tensor:
    """A dense float32 copy of t (a bias, column weights), or t itself if it is one."""
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.detach().float().contiguous()


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
    before, want = numba.get_num_threads(), max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if want != before:
        numba.set_num_threads(want)
    try:
        # One kernel at a time in a process: each already runs on every core, and numba's
        # fallback threading layer (workqueue) aborts the process on concurrent calls.
        with _CALL_LOCK:
            yield
    except (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)):
        raise
    except Exception as e:
        _impl = False
        warnings.warn(f"alis_core: the compiled kernels failed here ({type(e).__name__}: {str(e)[:200]}); "
                      f"rendering without them from now on (set {ENV}=0 to skip them)", RuntimeWarning, stacklevel=3)
        raise KernelFailure(str(e)) from e
    finally:
        if want != before:
            numba.set_num_threads(before)


_CALL_LOCK = threading.Lock()


def _limit(clamp: float | None) -> float:
    return float("inf") if clamp is None else float(clamp)


def epilogue_bf16_(x: Tensor, clamp: float | None, act: bool = True, noise: Tensor | None = None,
                   scale: Tensor | None = None, slope: float = 0.2, also: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """In place on x [B, C, H, W] (bfloat16, channels-last memory), bit for bit as the PyTorch
    operations `x.add_(noise)` (noise [B or 1, 1, H, W]), `F.leaky_relu_(x, slope)` (if act),
    `x.clamp_(-clamp, clamp)` and `x.mul_(scale)` (scale [B, C, 1, W], an SA-AdaIN modulation)
    compute it, in one pass. Returns x. `also` (buffer [B, C2, H, W], scale2 [B, C2, 1, W], both
    bfloat16 in channels-last memory, C2 >= C): the same pass also writes
    `torch.mul(x, scale2[:, :C], out=buffer[:, :C])` (the next block's modulated input)."""
    impl = _load()
    b, c, h, w = x.shape
    _require_nhwc("x", x)
    nz, sc = _per_pixel(noise, b, h, w), _per_column(scale, b, c, w)
    out2, scale2, c2 = _NONE, _NONE, c
    if also is not None:
        buf, s2 = also
        c2 = buf.shape[1]
        if tuple(buf.shape) != (b, c2, h, w) or c2 < c or tuple(s2.shape) != (b, c2, 1, w):
            raise ValueError(f"also must be a buffer [{b}, >= {c}, {h}, {w}] and its scale [{b}, C2, 1, {w}], got "
                             f"{list(buf.shape)} and {list(s2.shape)}")
        _require_nhwc("also: the buffer and its scale", buf, s2)
        out2, scale2 = _flat(buf), _flat(s2)
    lim, args = _limit(clamp), (_flat(x), b * h, w, c, _flat(nz), _flat(sc))  # (refusals before the call)
    with _threads():
        impl.epilogue_bf16(*args, slope if act else 1.0, -lim, lim, b, out2, scale2, c2)
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
    _require_nhwc("even and odd", even, odd)
    out = torch.empty([b, c, 2 * h, 2 * w], dtype=torch.bfloat16, memory_format=torch.channels_last)
    nz, sc, bs = _per_pixel(noise, b, 2 * h, 2 * w), _per_column(scale, b, c, 2 * w), _f32(bias)
    lim, args = _limit(clamp), (_flat(even), _flat(odd), _flat(out), b, h, w, c, _flat(bs, F32), _flat(nz), _flat(sc))
    with _threads():
        impl.upsample_epilogue_bf16(*args, slope, -lim, lim, block)
    return out


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
    nz, bs = _per_pixel(noise, b, h, w, torch.float32), _f32(bias)
    xs, outs, nzs, bss = _flat(x, F32), _flat(out, F32), _flat(nz, F32), _flat(bs, F32)
    wt = weight_wino.float()
    lim = _limit(clamp)
    with _threads():
        for r0 in range(0, tile_rows, rows):
            n = min(rows, tile_rows - r0)
            t = n * tiles_x
            vc, mc = v[: 36 * t * c], m[: 36 * t * o]
            impl.winograd_input_f32(xs, _flat(vc, F32), h, w, c, tiles_x, r0, n)
            torch.bmm(vc.view(36, t, c), wt, out=mc.view(36, t, o))
            impl.winograd_output_f32(_flat(mc, F32), outs, bss, nzs, h, w, o, tiles_x, r0, n, gain, slope, -lim, lim)
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
    nz, sc, bs = _per_pixel(noise, b, 2 * h, 2 * w, F32), _per_column(scale, b, c, 2 * w, F32), _f32(bias)
    lim, args = _limit(clamp), (_flat(y, F32), _flat(out, F32), b, h, w, c, _flat(bs, F32), _flat(nz, F32))
    with _threads():
        impl.upsample_epilogue_f32(*args, gain, _flat(sc, F32), slope, -lim, lim, block)
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
    nz, sc, bs = _per_pixel(noise, b, 2 * h, 2 * w, F32), _per_column(scale, b, o, 2 * w, F32), _f32(bias)
    outs, nzs, scs, bss = _flat(out, F32), _flat(nz, F32), _flat(sc, F32), _flat(bs, F32)
    wm = weight_mat.float()
    lim = _limit(clamp)
    rows_in = max(1, DECONV_CHUNK_BYTES // (w * 9 * o * 4) - 2)  # input rows whose output rows a chunk writes
    with _threads():
        for image in range(b):
            for r_begin in range(0, 2 * h, 2 * rows_in):
                r_end = min(2 * h, r_begin + 2 * rows_in)
                first, last = max(0, (r_begin - 1) // 2 - 1), min(h, r_end // 2 + 1)  # input rows these need
                y9 = torch.matmul(xs[image, first:last].reshape(-1, i), wm)  # [(rows, w), (3, 3, O)]
                impl.deconv_epilogue_f32(_flat(y9, F32), first, outs, image, r_begin, r_end, h, w, o, bss, nzs,
                                         gain, scs, slope, -lim, lim, block)
    return out


def torgb_skip(y: Tensor, coef_a: Tensor, coef_b: Tensor, bias: Tensor, clamp: float | None,
               prev: Tensor | None, left: Tensor | None = None) -> Tensor:
    """The end of a fused toRGB layer and the skip connection, in one pass: y [B, h, w, 3A] (bfloat16
    or float32, dense): each pixel's RGB by the styles of each of A anchors; left [B, w] (int64):
    the anchor on each column's left, or None where every column lies between anchors 0 and 1
    (A = 2); coef_a, coef_b [B, 1, w] float32: the column weights of that anchor and the next
    (SA-AdaIN); bias [3]. -> [B, 3, h, w] float32 in channels-last memory:
    clamp(bias + y[..., left] * coef_a + y[..., left + 1] * coef_b) + `layers.upsample2d(prev)`
    (prev [B, 3, h / 2, w / 2], or None for the first block)."""
    impl = _load()
    b, h, w, n = y.shape
    anchors = n // 3
    if n % 3 or anchors < 2 or y.dtype not in (torch.bfloat16, torch.float32) or not y.is_contiguous():
        raise ValueError(f"y must be dense bfloat16 or float32 [B, h, w, 3 * anchors] (2+ anchors), "
                         f"got {y.dtype} {list(y.shape)}")
    if tuple(coef_a.shape) != (b, 1, w) or tuple(coef_b.shape) != (b, 1, w) or bias.numel() != 3:
        raise ValueError(f"coef_a and coef_b must be [{b}, 1, {w}] and bias 3 values, got {list(coef_a.shape)}, "
                         f"{list(coef_b.shape)} and {list(bias.shape)}")
    if left is None:
        if anchors != 2:
            raise ValueError(f"y holds {anchors} anchors: say which each column lies between (left)")
    elif (tuple(left.shape) != (b, w) or left.dtype != torch.int64 or int(left.min()) < 0
          or int(left.max()) > anchors - 2):
        raise ValueError(f"left must be int64 [{b}, {w}] in [0, {anchors - 2}], got {left.dtype} {list(left.shape)}")
    if prev is not None and (tuple(prev.shape) != (b, 3, h // 2, w // 2) or h % 2 or w % 2):
        raise ValueError(f"prev must be [{b}, 3, {h // 2}, {w // 2}] for a [{b}, 3, {h}, {w}] image, "
                         f"got {list(prev.shape)}")
    out = torch.empty([b, 3, h, w], memory_format=torch.channels_last)
    prev = None if prev is None else _dense(prev, prev.shape, F32, channels_last=True)
    left = None if left is None else left.contiguous()
    ca, cb, bs = _f32(coef_a), _f32(coef_b), _f32(bias)
    lim, ys, cas, cbs, bss = _limit(clamp), _flat(y, y.dtype), _flat(ca, F32), _flat(cb, F32), _flat(bs, F32)
    ls = _NONE_I64 if left is None else _flat(left, torch.int64)
    with _threads():
        impl.torgb_skip(ys, anchors, ls, cas, cbs, bss, -lim, lim, _flat(prev, F32), _flat(out, F32), b, h, w)
    return out


def _np(t: Tensor, dtype) -> np.ndarray:
    return t.detach().to(dtype).contiguous().numpy()


def _check_sky_out(out: Tensor, sums: Tensor) -> None:
    if out.dtype != F32 or not out.is_contiguous() or out.ndim != 3 or out.shape[0] != 3:
        raise ValueError(f"out must be dense float32 [3, H, W], got {out.dtype} {list(out.shape)}")
    if sums.dtype != torch.float64 or not sums.is_contiguous() or tuple(sums.shape) != tuple(out.shape[:2]):
        raise ValueError(f"sums must be dense float64 {list(out.shape[:2])}, got {sums.dtype} {list(sums.shape)}")


def lut_rows(src: Tensor, out: Tensor, y0: int, lut: Tensor, sums: Tensor,
             weights: tuple | None = None, gain: float = 1.0) -> Tensor | None:
    """out[:, y0:y0 + R] = lut interpolated at src [3, R, W] * gain (clamped to [0, 1]; lut
    [N + 1] float32 sampled at i / N): the sky's calibration, or its tone mapping, in one pass;
    sums[:, y0:y0 + R] the rows' sums. out: float32 [3, H, W], sums: float64 [3, H], both dense. With ``weights`` (three
    floats), also returns the weighted sum of each written pixel's values [R, W] (luminance)."""
    impl = _load()
    _check_sky_out(out, sums)
    if src.shape[0] != 3 or src.shape[-1] != out.shape[-1] or not 0 <= y0 <= out.shape[1] - src.shape[1]:
        raise ValueError(f"src [3, R, W] must fit in out {list(out.shape)} at row {y0}, got {list(src.shape)}")
    lum = torch.empty(src.shape[1:] if weights is not None else (0, 0))
    wts = np.asarray(weights if weights is not None else (0.0, 0.0, 0.0), np.float64)
    with _threads():  # src with any strides: no copy
        impl.lut_rows(src.detach().float().numpy(), out.numpy(), int(y0), _np(lut, F32), float(gain), sums.numpy(),
                      lum.numpy(), wts)
    return lum if weights is not None else None


def detail_rows(src: Tensor, taps: Tensor, lo: float, hi: float) -> Tensor:
    """src [3, K, W] (float32, any strides) -> its rows' fine detail, clamp(src / blur(src), lo, hi)
    with the blur ``taps`` along each row (circular): [3, K, W] in channels-last memory (a view
    of [K, W, 3], the layout `sky_rows` samples)."""
    impl = _load()
    k, w = src.shape[1], src.shape[2]
    if src.shape[0] != 3 or taps.numel() % 2 == 0:
        raise ValueError(f"src must be [3, K, W] and taps odd in number, got {list(src.shape)}, {taps.numel()} taps")
    out = torch.empty(k, w, 3)
    with _threads():
        impl.detail_rows(src.detach().float().numpy(), out.numpy(), _np(taps, F32), float(lo), float(hi))
    return out.permute(2, 0, 1)


def sky_rows(out: Tensor, y0: int, smooth: Tensor, rows: tuple, cols: tuple, mirror: Tensor | None,
             mrow: Tensor, ramp: Tensor, detail: Tensor, ru: Tensor, rv: Tensor, cosx: Tensor, sinx: Tensor,
             sums: Tensor) -> None:
    """Rows y0 .. y0 + n of a sky as smooth * detail in one pass (`sky._continue_band`): smooth
    [3, Rs, Ws] interpolated by rows = (r0, r1, wr) [n] and cols = (c0, c1, wc) [W]; detail: the
    texture detail [3, K, Q] on a plane, periodic in Q and mirrored in K (period P = 2K), at
    (frac(rv * sin) * P, frac(ru * cos) * Q), lerped from mirror [3, K, W] rows mrow (where >= 0)
    by ramp; sums[:, y0:y0 + n] the rows' sums. out: float32 [3, H, W], sums: float64 [3, H], both
    dense. mirror and detail are read channels last: pass them in channels-last memory (as
    `detail_rows` makes them) to spare a copy."""
    impl = _load()
    _check_sky_out(out, sums)
    (r0, r1, wr), (c0, c1, wc) = rows, cols
    n, w = len(r0), out.shape[-1]
    if not 0 <= y0 <= out.shape[1] - n or len(c0) != w or smooth.shape[0] != 3 or detail.shape[0] != 3 \
            or int(r0.min()) < 0 or int(r1.max()) >= smooth.shape[1] or int(c0.min()) < 0 \
            or int(c1.max()) >= smooth.shape[2] or (mirror is not None and int(mrow.max()) >= mirror.shape[1]) \
            or (mirror is not None and mirror.shape[2] != w):
        raise ValueError(f"sky_rows: rows {y0}..{y0 + n} of {list(out.shape)}, smooth {list(smooth.shape)}, "
                         f"detail {list(detail.shape)}: the maps must index inside them")
    i64, f64 = torch.int64, torch.float64
    mir = torch.zeros(1, 1, 3) if mirror is None else mirror.permute(1, 2, 0)  # channels last: a view, if it is
    with _threads():
        impl.sky_rows(out.numpy(), int(y0), _np(smooth, F32), _np(r0, i64), _np(r1, i64), _np(wr, F32),
                      _np(c0, i64), _np(c1, i64), _np(wc, F32), _np(mir, F32), _np(mrow, i64), _np(ramp, F32),
                      _np(detail.permute(1, 2, 0), F32), _np(ru, f64), _np(rv, f64), _np(cosx, f64), _np(sinx, f64), sums.numpy())


def warm_up() -> bool:
    """Load (on first use ever: compile) every kernel now, on tiny inputs, so that no later call
    pays for it; False where the kernels are unavailable. Loading takes about half a second and
    150 MB of memory (numba and LLVM), compiling them all under a minute on 2 cores (once: numba caches
    them on disk)."""
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
    for dtype in (torch.bfloat16, torch.float32):
        for left in (None, torch.zeros(1, 2, dtype=torch.int64)):
            torgb_skip(torch.zeros(1, 2, 2, 6, dtype=dtype), torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(3),
                       1.0, torch.zeros(1, 3, 1, 1), left)
    out, sums = torch.zeros(3, 4, 8), torch.zeros(3, 4, dtype=torch.float64)  # the sky's
    for src in (torch.zeros(3, 1, 8), torch.zeros(1, 8, 3).permute(2, 0, 1)):  # dense, or a strided view
        for weights in (None, (0.2, 0.7, 0.1)):
            lut_rows(src, out, 1, torch.zeros(3), sums, weights)
        tex = detail_rows(src + 1, torch.ones(3) / 3, 0.5, 2.0)
    i0 = torch.zeros(1, dtype=torch.int64)
    for mirror in (None, tex):
        sky_rows(out, 0, torch.ones(3, 1, 8), (i0, i0, torch.zeros(1)), (torch.arange(8), torch.arange(8), torch.zeros(8)),
                 mirror, i0, torch.ones(1), tex, torch.ones(1), torch.ones(1), torch.ones(8), torch.zeros(8), sums)
    return True
