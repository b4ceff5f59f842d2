"""numba kernels behind `alis_core.kernels` (imported only when numba is installed and a kernel is
first needed). bfloat16 values travel as their uint16 bit patterns: widening to float32 is a
16-bit shift, narrowing rounds to nearest even as PyTorch does.

Indices into arrays are kept provably non-negative (slices instead of `x[k - n]`): numba wraps
negative indices around, and the test for that kept LLVM from vectorising a loop (6x slower).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _as_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.uint32), codegen


@intrinsic
def _as_u32(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))
    return types.uint32(types.float32), codegen


@njit(inline="always")
def _widen(h):
    """bfloat16 bits -> float32."""
    return _as_f32(np.uint32(h) << np.uint32(16))


@njit(inline="always")
def _narrow(f):
    """float32 -> bfloat16 bits, rounded to nearest even as PyTorch rounds (overflow becomes inf;
    NaNs here are the CPU's default NaN or widened bfloat16 NaNs, whose payloads survive)."""
    b = _as_u32(f)
    return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@njit(inline="always")
def _act_clamp(f, s, lo, hi):
    """Leaky ReLU (slope s), then clamp to [lo, hi]; NaN stays NaN (as in PyTorch)."""
    f = f * s if f < 0 else f
    f = lo if f < lo else f
    return hi if f > hi else f


@njit(parallel=True, cache=True, boundscheck=False)
def epilogue_bf16(v, rows, width, channels, noise, scale, slope, lo, hi):
    """In place on v, the uint16 bits of a bfloat16 [rows, width, channels] tensor (NHWC, rows =
    batch x height): (+ noise[row, column], rounded), leaky ReLU with `slope` (1: none), clamp to
    [lo, hi], then (* scale[image, column, channel], rounded). `noise` [rows * width] and `scale`
    [batch * width * channels] may be empty (then skipped); images have rows // batch rows.
    Each case has its own branch-free inner loop over channels, which LLVM vectorises."""
    has_noise, has_scale = noise.shape[0] > 0, scale.shape[0] > 0
    per_image = rows // (scale.shape[0] // (width * channels)) if has_scale else rows
    s, lo, hi = np.float32(slope), np.float32(lo), np.float32(hi)
    for r in prange(rows):
        image = r // per_image
        for j in range(width):
            p = (r * width + j) * channels
            q = (image * width + j) * channels
            x = v[p: p + channels]
            m = scale[q: q + channels] if has_scale else scale
            if has_noise:
                n = _widen(noise[r * width + j])
                if has_scale:
                    for k in range(channels):
                        f = _widen(_narrow(_act_clamp(_widen(_narrow(_widen(x[k]) + n)), s, lo, hi)))
                        x[k] = _narrow(f * _widen(m[k]))
                else:
                    for k in range(channels):
                        x[k] = _narrow(_act_clamp(_widen(_narrow(_widen(x[k]) + n)), s, lo, hi))
            elif has_scale:
                for k in range(channels):
                    f = _widen(_narrow(_act_clamp(_widen(x[k]), s, lo, hi)))
                    x[k] = _narrow(f * _widen(m[k]))
            else:
                for k in range(channels):
                    x[k] = _narrow(_act_clamp(_widen(x[k]), s, lo, hi))


@njit(parallel=True, cache=True, boundscheck=False)
def upsample_epilogue_bf16(even, odd, out, batch, h, w, channels, bias, noise, scale, slope, lo, hi, block):
    """The second half of a bfloat16 upsampling layer in one pass: the four phases of a stride-2
    transposed convolution (`even`: the uint16 bits of [B, h + 1, w + 1, 2, C], output rows 2i,
    columns 2j + c; `odd`: [B, h, w + 1, 2, C], rows 2i + 1), interleaved into the zero-padded
    [B, 2h + 3, 2w + 3, C] grid they form (one row of `even` or `odd` is one grid row without its
    first, zero, column), filtered by the [1,3,3,1] x [1,3,3,1] low-pass filter (gain 4; valid:
    [B, 2h, 2w, C]), + bias (float32 [C]) + noise, leaky ReLU, clamp, * scale, all in float32,
    rounded once into `out` (bits of [B, 2h, 2w, C]). noise: bits [B * 2h * 2w] or empty; scale:
    bits [B * 2w * C] or empty. Each task takes `block` output rows of one image: their grid rows
    filtered along x first (each grid row widened once), then along y."""
    has_noise, has_scale = noise.shape[0] > 0, scale.shape[0] > 0
    s, lo, hi = np.float32(slope), np.float32(lo), np.float32(hi)
    q, t = np.float32(0.25), np.float32(0.75)
    rows, cols = 2 * h, 2 * w
    n = cols * channels  # one output row
    blocks = (rows + block - 1) // block
    for task in prange(batch * blocks):
        image, r0 = task // blocks, (task % blocks) * block
        r1 = min(rows, r0 + block)
        hx = np.empty((r1 - r0 + 3) * n, np.float32)  # grid rows r0 .. r1 + 2, filtered along x
        for g in range(r0, r1 + 3):  # grid row 0 and 2h + 2 are padding, 1 + 2i even row i, 2 + 2i odd row i
            if g == 0 or g == 2 * h + 2:
                hx[(g - r0) * n: (g - r0 + 1) * n] = 0
                continue
            m = (w + 1) * 2 * channels
            x = even[(image * (h + 1) + (g - 1) // 2) * m:][:m] if g % 2 else odd[(image * h + (g - 2) // 2) * m:][:m]
            d = hx[(g - r0) * n:][:n]
            for k in range(channels):  # output column 0 reads grid columns 0 (zero) .. 3
                d[k] = t * _widen(x[k]) + t * _widen(x[channels + k]) + q * _widen(x[2 * channels + k])
            x0, x1, x2, x3 = x[:n - channels], x[channels:], x[2 * channels:], x[3 * channels:]
            d1 = d[channels:]
            for k in range(n - channels):  # column c >= 1 reads grid columns c .. c + 3 = x[c - 1 .. c + 2]
                d1[k] = q * (_widen(x0[k]) + _widen(x3[k])) + t * (_widen(x1[k]) + _widen(x2[k]))
        for r in range(r0, r1):
            a0, a1, a2, a3 = hx[(r - r0) * n:][:n], hx[(r - r0 + 1) * n:][:n], hx[(r - r0 + 2) * n:][:n], hx[(r - r0 + 3) * n:][:n]
            y = out[(image * rows + r) * n:][:n]
            for c in range(cols):
                nz = _widen(noise[(image * rows + r) * cols + c]) if has_noise else np.float32(0)
                p = c * channels
                if has_scale:
                    sc = scale[(image * cols + c) * channels:][:channels]
                    for k in range(channels):
                        f = q * (a0[p + k] + a3[p + k]) + t * (a1[p + k] + a2[p + k]) + (bias[k] + nz)
                        f = f * s if f < 0 else f
                        f = lo if f < lo else f
                        f = hi if f > hi else f
                        y[p + k] = _narrow(f * _widen(sc[k]))
                else:
                    for k in range(channels):
                        f = q * (a0[p + k] + a3[p + k]) + t * (a1[p + k] + a2[p + k]) + (bias[k] + nz)
                        f = f * s if f < 0 else f
                        f = lo if f < lo else f
                        f = hi if f > hi else f
                        y[p + k] = _narrow(f)
