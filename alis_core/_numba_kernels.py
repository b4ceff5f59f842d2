"""numba kernels behind `alis_core.kernels` (imported only when numba is installed and a kernel is
first needed). bfloat16 values travel as their uint16 bit patterns: widening to float32 is a
16-bit shift, narrowing rounds to nearest even as PyTorch does.

Indices into arrays are kept provably non-negative (slices instead of `x[k - n]`): numba wraps
negative indices around, and the test for that kept LLVM from vectorising a loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload


# fastmath without "nnan" and "ninf": NaN and infinity keep their meaning, so that the index
# clamps of the table and texture lookups hold for any input.
_FASTMATH_KEEP_NAN = {"reassoc", "contract", "arcp", "afn", "nsz"}


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


def _value(v):
    """An element as float32: bfloat16 bits widened, float32 as it is (compiled by type)."""


@overload(_value, inline="always")
def _value_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: _widen(v)
    return lambda v: np.float32(v)


@njit(inline="always")
def _act_clamp(f, s, lo, hi):
    """Leaky ReLU (slope s), then clamp to [lo, hi]; NaN stays NaN (as in PyTorch)."""
    f = f * s if f < 0 else f
    f = lo if f < lo else f
    return hi if f > hi else f


@njit(parallel=True, cache=True, boundscheck=False)
def epilogue_bf16(v, rows, width, channels, noise, scale, slope, lo, hi, batch, out2, scale2, channels2):
    """In place on v, the uint16 bits of a bfloat16 [rows, width, channels] tensor (NHWC, rows =
    batch x height): (+ noise[row, column], rounded), leaky ReLU with `slope` (1: none), clamp to
    [lo, hi], then (* scale[image, column, channel], rounded). `noise` [rows * width] and `scale`
    [batch * width * channels] may be empty (then skipped); images have rows // batch rows.
    Each case has its own branch-free inner loop over channels, which LLVM vectorises.
    out2 (bits of [rows, width, channels2], channels2 >= channels; may be empty): also receives
    the result times scale2 (bits of [batch, width, channels2]) in its first `channels` channels."""
    has_noise, has_scale, has_out2 = noise.shape[0] > 0, scale.shape[0] > 0, out2.shape[0] > 0
    per_image = rows // batch
    s, lo, hi = np.float32(slope), np.float32(lo), np.float32(hi)
    for r in prange(rows):
        image = r // per_image
        for j in range(width):
            p = (r * width + j) * channels
            q = (image * width + j) * channels
            x = v[p: p + channels]
            if has_out2:
                o2 = out2[(r * width + j) * channels2:][:channels]
                m2 = scale2[(image * width + j) * channels2:][:channels]
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
            if has_out2:
                for k in range(channels):
                    o2[k] = _narrow(_widen(x[k]) * _widen(m2[k]))


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
            k0 = (r - r0) * n
            a0, a1, a2, a3 = hx[k0:][:n], hx[k0 + n:][:n], hx[k0 + 2 * n:][:n], hx[k0 + 3 * n:][:n]
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


# Winograd F(4x4, 3x3) transforms (Lavin & Gray 2016) for float32 3x3 convolutions, with the
# matrix products in between left to torch.bmm. Written out as the sparse sums they are (the
# PyTorch path multiplies by the dense 36x36 Kronecker product instead: 8x the arithmetic, and
# each transform a pass of its own), each vectorised over channels.

@njit(inline="always")
def _bt_rows(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5, n):
    """o = B^T d along one axis, for n channels: B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]."""
    for k in range(n):
        a = d4[k] - 4 * d2[k]
        b = d3[k] - 4 * d1[k]
        e = d4[k] - d2[k]
        f = 2 * (d3[k] - d1[k])
        o0[k] = 4 * d0[k] - 5 * d2[k] + d4[k]
        o1[k] = a + b
        o2[k] = a - b
        o3[k] = e + f
        o4[k] = e - f
        o5[k] = 4 * d1[k] - 5 * d3[k] + d5[k]


@njit(parallel=True, cache=True, boundscheck=False)
def winograd_input_f32(x, v, h, w, c, tiles_x, row0, rows):
    """Input transform of F(4x4, 3x3) with zero padding 1. x: float32 [B, H, W, C] (NHWC, flat);
    tile rows row0 .. row0 + rows - 1 of all images' tile rows in a row (image i's tile row r is
    i * H / 4 + r); v: float32 [36, rows * tiles_x, C] (flat): v[6a + b, tile] = (B^T d B)[a, b]
    for the 6x6 input window d of the tile (rows 4r - 1 .. 4r + 4)."""
    tiles = rows * tiles_x
    zero = np.zeros(c, np.float32)
    tile_rows = h // 4
    for t in prange(tiles):
        row = row0 + t // tiles_x
        image, ty, tx = row // tile_rows, row % tile_rows, t % tiles_x
        u = np.empty((6, 6, c), np.float32)  # B^T d: [a, column j]
        for j in range(6):
            col = 4 * tx - 1 + j
            inside = 0 <= col < w
            r = 4 * ty - 1
            p = ((image * h + r) * w + col) * c  # the first row's pixel; the next rows are w * c apart
            d0 = x[p: p + c] if inside and r >= 0 else zero
            d1 = x[p + w * c: p + w * c + c] if inside else zero
            d2 = x[p + 2 * w * c: p + 2 * w * c + c] if inside else zero
            d3 = x[p + 3 * w * c: p + 3 * w * c + c] if inside else zero
            d4 = x[p + 4 * w * c: p + 4 * w * c + c] if inside else zero
            d5 = x[p + 5 * w * c: p + 5 * w * c + c] if inside and r + 5 < h else zero
            _bt_rows(d0, d1, d2, d3, d4, d5, u[0, j], u[1, j], u[2, j], u[3, j], u[4, j], u[5, j], c)
        for a in range(6):
            q = (6 * a * tiles + t) * c
            s = tiles * c  # from one point (a, b) to the next
            _bt_rows(u[a, 0], u[a, 1], u[a, 2], u[a, 3], u[a, 4], u[a, 5], v[q: q + c], v[q + s: q + s + c],
                     v[q + 2 * s: q + 2 * s + c], v[q + 3 * s: q + 3 * s + c], v[q + 4 * s: q + 4 * s + c],
                     v[q + 5 * s: q + 5 * s + c], c)


@njit(parallel=True, cache=True, boundscheck=False)
def winograd_output_f32(m, out, bias, noise, h, w, o, tiles_x, row0, rows, gain, slope, lo, hi):
    """Output transform of F(4x4, 3x3) and the layer's epilogue. m: float32 [36, rows * tiles_x, O]
    (the products, same tile order as `winograd_input_f32`); out: float32 [B, H, W, O] (NHWC,
    flat): the tiles' 4x4 pixels A^T m A + bias + gain * noise[image, pixel], leaky ReLU (slope;
    1: none), clamped to [lo, hi]. noise: float32 [B * H * W] or empty.
    A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]."""
    tiles = rows * tiles_x
    tile_rows = h // 4
    has_noise = noise.shape[0] > 0
    s, lo, hi, g = np.float32(slope), np.float32(lo), np.float32(hi), np.float32(gain)
    for t in prange(tiles):
        row = row0 + t // tiles_x
        image, ty, tx = row // tile_rows, row % tile_rows, t % tiles_x
        u = np.empty((4, 6, o), np.float32)  # A^T m: [i, column b]
        st = tiles * o
        for b in range(6):
            q = (b * tiles + t) * o
            m0, m1, m2 = m[q: q + o], m[q + 6 * st: q + 6 * st + o], m[q + 12 * st: q + 12 * st + o]
            m3, m4, m5 = m[q + 18 * st: q + 18 * st + o], m[q + 24 * st: q + 24 * st + o], m[q + 30 * st: q + 30 * st + o]
            u0, u1, u2, u3 = u[0, b], u[1, b], u[2, b], u[3, b]
            for k in range(o):
                a_ = m1[k] + m2[k]
                b_ = m1[k] - m2[k]
                e = m3[k] + m4[k]
                f = m3[k] - m4[k]
                u0[k] = m0[k] + a_ + e
                u1[k] = b_ + 2 * f
                u2[k] = a_ + 4 * e
                u3[k] = b_ + 8 * f + m5[k]
        for i in range(4):
            r = 4 * ty + i
            pix = (image * h + r) * w + 4 * tx
            n0 = g * noise[pix] if has_noise else np.float32(0)
            n1 = g * noise[pix + 1] if has_noise else np.float32(0)
            n2 = g * noise[pix + 2] if has_noise else np.float32(0)
            n3 = g * noise[pix + 3] if has_noise else np.float32(0)
            s0, s1, s2, s3, s4, s5 = u[i, 0], u[i, 1], u[i, 2], u[i, 3], u[i, 4], u[i, 5]
            y0, y1 = out[pix * o: pix * o + o], out[pix * o + o: pix * o + 2 * o]
            y2, y3 = out[pix * o + 2 * o: pix * o + 3 * o], out[pix * o + 3 * o: pix * o + 4 * o]
            for k in range(o):
                a_ = s1[k] + s2[k]
                b_ = s1[k] - s2[k]
                e = s3[k] + s4[k]
                f = s3[k] - s4[k]
                z0 = s0[k] + a_ + e + bias[k] + n0
                z1 = b_ + 2 * f + bias[k] + n1
                z2 = a_ + 4 * e + bias[k] + n2
                z3 = b_ + 8 * f + s5[k] + bias[k] + n3
                z0 = z0 * s if z0 < 0 else z0
                z1 = z1 * s if z1 < 0 else z1
                z2 = z2 * s if z2 < 0 else z2
                z3 = z3 * s if z3 < 0 else z3
                z0 = lo if z0 < lo else z0
                z1 = lo if z1 < lo else z1
                z2 = lo if z2 < lo else z2
                z3 = lo if z3 < lo else z3
                y0[k] = hi if z0 > hi else z0
                y1[k] = hi if z1 > hi else z1
                y2[k] = hi if z2 > hi else z2
                y3[k] = hi if z3 > hi else z3


@njit(inline="always")
def _lowpass_row(x, d, n, channels):
    """One padded row along x: d (float32 [2w * C]) = the [1,3,3,1] filter (gain 2) over x (float32
    [(2w + 1) * C], zero-padded by one column on each side)."""
    q, t = np.float32(0.25), np.float32(0.75)
    m = n + channels
    for k in range(channels):  # output column 0 reads padded columns 0 (zero) .. 3
        d[k] = t * x[k] + t * x[channels + k] + q * x[2 * channels + k]
    x0, x1, x2, x3 = x[:n - 2 * channels], x[channels:], x[2 * channels:], x[3 * channels:]
    d1 = d[channels: n - channels]
    for k in range(n - 2 * channels):  # column c reads input columns c - 1 .. c + 2
        d1[k] = q * (x0[k] + x3[k]) + t * (x1[k] + x2[k])
    x0, x1, x2 = x[m - 3 * channels:], x[m - 2 * channels:], x[m - channels:]
    d2 = d[n - channels:]
    for k in range(channels):  # the last column reads input columns 2w - 2 .. 2w and padding
        d2[k] = q * x0[k] + t * (x1[k] + x2[k])


@njit(inline="always")
def _lowpass_columns_epilogue(a0, a1, a2, a3, o, cols, channels, bias, noise, gn, scale, s, lo, hi):
    """One output row from four x-filtered rows: the filter along y (gain 2), + bias + gn * noise
    (float32 [cols] or empty), leaky ReLU (slope s), clamp, * scale (float32 [cols * C] or empty)."""
    q, t = np.float32(0.25), np.float32(0.75)
    has_noise, has_scale = noise.shape[0] > 0, scale.shape[0] > 0
    for c in range(cols):
        nz = gn * noise[c] if has_noise else np.float32(0)
        p = c * channels
        if has_scale:
            sc = scale[p:][:channels]
            for k in range(channels):
                f = q * (a0[p + k] + a3[p + k]) + t * (a1[p + k] + a2[p + k]) + (bias[k] + nz)
                f = f * s if f < 0 else f
                f = lo if f < lo else f
                f = hi if f > hi else f
                o[p + k] = f * sc[k]
        else:
            for k in range(channels):
                f = q * (a0[p + k] + a3[p + k]) + t * (a1[p + k] + a2[p + k]) + (bias[k] + nz)
                f = f * s if f < 0 else f
                f = lo if f < lo else f
                o[p + k] = hi if f > hi else f


@njit(inline="always")
def _output_rows(hx, r0, r1, out, image, rows, cols, channels, bias, noise, gn, scale, s, lo, hi):
    """Output rows r0 .. r1 - 1 of image `image` (out: float32 [B, rows, cols, C], flat) from hx,
    the padded rows r0 .. r1 + 2 filtered along x, by `_lowpass_columns_epilogue`; noise float32
    [B * rows * cols] and scale float32 [B * cols * C] may be empty."""
    n = cols * channels
    for r in range(r0, r1):
        o = out[(image * rows + r) * n:][:n]
        nz = noise[(image * rows + r) * cols:][:cols] if noise.shape[0] > 0 else noise
        sc = scale[image * n:][:n] if scale.shape[0] > 0 else scale
        k0 = (r - r0) * n
        _lowpass_columns_epilogue(hx[k0:][:n], hx[k0 + n:][:n], hx[k0 + 2 * n:][:n], hx[k0 + 3 * n:][:n], o, cols,
                                  channels, bias, nz, gn, sc, s, lo, hi)


@njit(parallel=True, cache=True, boundscheck=False)
def deconv_epilogue_f32(y9, first, out, image, r_begin, r_end, h, w, channels, bias, noise, gain, scale, slope,
                        lo, hi, block):
    """A float32 upsampling layer after the products of its stride-2 transposed 3x3 convolution:
    y9 float32 [rows, w, 3, 3, C] (flat; input rows first.. of image `image`: every input pixel
    times the whole kernel) -> out rows r_begin .. r_end - 1 of image `image` (float32
    [B, 2h, 2w, C], flat): the products summed into the transposed convolution's [2h + 1, 2w + 1]
    grid (pixel (i, j) tap (u, v) lands on (2i + u, 2j + v)), the [1,3,3,1] x [1,3,3,1] filter
    (padding 1, gain 4), + bias + gain * noise (float32 [B * 2h * 2w] or empty), leaky ReLU,
    clamp, * scale (float32 [B * 2w * C] or empty). Output row r needs input rows (r - 1) // 2 - 1
    .. (r + 2) // 2 (those that exist). Each task takes `block` output rows."""
    s, lo, hi, gn = np.float32(slope), np.float32(lo), np.float32(hi), np.float32(gain)
    rows, cols = 2 * h, 2 * w
    n = cols * channels  # one output row
    m = (cols + 1) * channels  # one grid row
    per_pixel = 9 * channels
    blocks = (r_end - r_begin + block - 1) // block
    for task in prange(blocks):
        r0 = r_begin + task * block
        r1 = min(r_end, r0 + block)
        hx = np.empty((r1 - r0 + 3) * n, np.float32)  # padded grid rows r0 .. r1 + 2, filtered along x
        grid = np.empty(m, np.float32)
        for g in range(r0, r1 + 3):  # padded row g is grid row g - 1
            d = hx[(g - r0) * n:][:n]
            gr = g - 1
            if gr < 0 or gr > rows:
                d[:] = 0
                continue
            grid[:] = 0
            for i, u in ((gr // 2, gr % 2), (gr // 2 - 1, 2)):  # the input rows and kernel rows landing here
                if (u == 2 and gr % 2) or i < 0 or i >= h:
                    continue
                src = y9[(i - first) * w * per_pixel:][:w * per_pixel]
                for j in range(w):
                    for v in range(3):
                        a = src[(j * 3 + u) * 3 * channels + v * channels:][:channels]
                        b = grid[(2 * j + v) * channels:][:channels]
                        for k in range(channels):
                            b[k] += a[k]
            _lowpass_row(grid, d, n, channels)
        _output_rows(hx, r0, r1, out, image, rows, cols, channels, bias, noise, gn, scale, s, lo, hi)


@njit(parallel=True, cache=True, boundscheck=False)
def upsample_epilogue_f32(y, out, batch, h, w, channels, bias, noise, gain, scale, slope, lo, hi, block):
    """The float32 counterpart of `upsample_epilogue_bf16`, after a stride-2 transposed convolution:
    y: float32 [B, 2h + 1, 2w + 1, C] (NHWC, flat), zero-padded by one on every side, filtered by
    the [1,3,3,1] x [1,3,3,1] filter (gain 4; valid: [B, 2h, 2w, C]), + bias + gain * noise (float32
    [B * 2h * 2w] or empty), leaky ReLU (slope), clamp to [lo, hi], * scale (float32 [B * 2w * C] or
    empty), into out (float32 [B, 2h, 2w, C], flat). Each task takes `block` output rows."""
    s, lo, hi, gn = np.float32(slope), np.float32(lo), np.float32(hi), np.float32(gain)
    rows, cols = 2 * h, 2 * w
    n = cols * channels  # one output row
    m = (cols + 1) * channels  # one input row
    blocks = (rows + block - 1) // block
    for task in prange(batch * blocks):
        image, r0 = task // blocks, (task % blocks) * block
        r1 = min(rows, r0 + block)
        hx = np.empty((r1 - r0 + 3) * n, np.float32)  # padded rows r0 .. r1 + 2, filtered along x
        for g in range(r0, r1 + 3):  # padded row g is input row g - 1; rows 0 and 2h + 2 are zero
            d = hx[(g - r0) * n:][:n]
            if g == 0 or g == rows + 2:
                d[:] = 0
            else:
                _lowpass_row(y[(image * (rows + 1) + g - 1) * m:][:m], d, n, channels)
        _output_rows(hx, r0, r1, out, image, rows, cols, channels, bias, noise, gn, scale, s, lo, hi)


@njit(parallel=True, cache=True, boundscheck=False)
def torgb_skip(y, anchors, left, coef_a, coef_b, bias, lo, hi, prev, out, batch, h, w):
    """A block's skip image in one pass: y [B, h, w, 3 * anchors] (flat; bfloat16 bits or float32):
    each pixel's RGB by every anchor's styles; left (int64 [B * w], or empty: all 0) the anchor on
    each column's left; coef_a, coef_b float32 [B * w]: the column weights of that anchor and the
    next (SA-AdaIN); bias float32 [3]. out (float32 [B, h, w, 3], flat) =
    clamp(bias + y[..., left] * coef_a + y[..., left + 1] * coef_b, lo, hi) + prev upsampled 2x with
    the [1,3,3,1] filter (gain 4, zero outside; `layers.upsample2d`), prev float32 [B, h/2, w/2, 3]
    (flat) or empty (the first block). One task per output row."""
    has_prev, has_left = prev.shape[0] > 0, left.shape[0] > 0
    n = 3 * anchors
    hp, wp = h // 2, w // 2
    q, t = np.float32(0.25), np.float32(0.75)
    lo, hi = np.float32(lo), np.float32(hi)
    for r in prange(batch * h):
        image, i = r // h, r % h
        src = y[r * w * n:][:w * n]
        dst = out[r * w * 3:][:w * 3]
        ca, cb = coef_a[image * w:][:w], coef_b[image * w:][:w]
        up = np.zeros(w * 3, np.float32)
        if has_prev:  # prev rows k - 1, k (even i) or k, k + 1 (odd i), weights 1/4, 3/4 or 3/4, 1/4
            k = i // 2
            ra, fa, rb, fb = (k - 1, q, k, t) if i % 2 == 0 else (k, t, k + 1, q)
            col = np.zeros((wp + 2) * 3, np.float32)  # filtered along y, a zero column each side
            c1 = col[3:][:wp * 3]
            if ra >= 0:
                pa = prev[(image * hp + ra) * wp * 3:][:wp * 3]
                for m in range(wp * 3):
                    c1[m] = fa * pa[m]
            if rb < hp:
                pb = prev[(image * hp + rb) * wp * 3:][:wp * 3]
                for m in range(wp * 3):
                    c1[m] += fb * pb[m]
            for j in range(wp):  # output columns 2j (columns j - 1, j) and 2j + 1 (j, j + 1)
                for c in range(3):
                    up[6 * j + c] = q * col[3 * j + c] + t * col[3 * j + 3 + c]
                    up[6 * j + 3 + c] = t * col[3 * j + 3 + c] + q * col[3 * j + 6 + c]
        for j in range(w):
            a, b = ca[j], cb[j]
            p = n * j + (3 * left[image * w + j] if has_left else 0)
            for c in range(3):
                f = bias[c] + _value(src[p + c]) * a + _value(src[p + 3 + c]) * b
                f = lo if f < lo else f
                f = hi if f > hi else f
                dst[3 * j + c] = f + up[3 * j + c]


@njit(parallel=True, cache=True, boundscheck=False, fastmath=_FASTMATH_KEEP_NAN)
def lut_rows(src, out, y0, lut, gain, sums, lum, weights):
    """out[c, y0 + y, x] = lut interpolated at src[c, y, x] * gain (clamped to [0, 1]): src float32
    [3, R, W], out float32 [3, H, W], lut float32 [N + 1] sampled at i / N (the sky's calibration);
    sums[c, y0 + y] (float64 [3, H]) = the row's sum; lum[y, x] (float32 [R, W], or empty for
    none) = the weighted sum of the pixel's three values (its luminance). The index is clamped
    after the conversion, so no input (NaN included) reads outside lut."""
    n = lut.shape[0] - 1
    fn = np.float32(n)
    g = np.float32(gain)
    rows, w = src.shape[1], src.shape[2]
    has_lum = lum.shape[0] > 0
    for y in prange(rows):
        for c in range(3):
            s = src[c, y]
            d = out[c, y0 + y]
            total = np.float32(0)
            for x in range(w):
                v = min(max(s[x] * g, np.float32(0)), np.float32(1)) * fn
                i = min(max(np.int32(v), np.int32(0)), np.int32(n - 1))
                f = v - np.float32(i)
                d[x] = lut[i] + f * (lut[i + 1] - lut[i])
                total += d[x]
            sums[c, y0 + y] = total
        if has_lum:
            a0, a1, a2 = out[0, y0 + y], out[1, y0 + y], out[2, y0 + y]
            k0, k1, k2 = np.float32(weights[0]), np.float32(weights[1]), np.float32(weights[2])
            ly = lum[y]
            for x in range(w):
                ly[x] = k0 * a0[x] + k1 * a1[x] + k2 * a2[x]


@njit(parallel=True, cache=True, boundscheck=False, fastmath=_FASTMATH_KEEP_NAN)
def sky_rows(out, y0, smooth, r0, r1, wr, c0, c1, wc, mirror, mrow, ramp, tex, ru, rv, cosx, sinx, sums):
    """Rows y0 .. y0 + n of a sky (out float32 [3, H, W]) as smooth * detail, in one pass:
    smooth: the grid ``smooth`` [3, Rs, Ws] interpolated bilinearly (row y: rows r0[y], r1[y],
    weight wr[y]; column x: columns c0[x], c1[x], weight wc[x]); detail: the texture ``tex``
    [K, Q, 3] (channels last: one cache line serves a texel's three channels) laid on a plane,
    periodic in Q and mirrored in K (period P = 2K), sampled bilinearly at
    (frac(rv[y] * sinx[x]) * P, frac(ru[y] * cosx[x]) * Q), the plane seen from row y at column
    x; where mrow[y] >= 0, lerp(mirror[mrow[y], x], that, ramp[y]) (mirror [K', W, 3], channels
    last too); sums[c, y0 + y] (float64 [3, H]) = the row's sum. `sky._continue_band`.
    Texture indices are clamped after their conversion, so no input reads outside tex."""
    n, w = r0.shape[0], cosx.shape[0]
    ws = smooth.shape[2]
    k, q = np.int32(tex.shape[0]), np.int32(tex.shape[1])
    p = np.int32(2 * k)
    zero, one = np.int32(0), np.int32(1)
    for y in prange(n):
        a, b, t = r0[y], r1[y], wr[y]
        row = np.empty((3, ws), np.float32)  # the smooth grid's row y (interpolated between rows)
        for c in range(3):
            for j in range(ws):
                row[c, j] = smooth[c, a, j] + t * (smooth[c, b, j] - smooth[c, a, j])
        m, rp = mrow[y], ramp[y]
        fu, fv = ru[y], rv[y]
        o0, o1, o2 = out[0, y0 + y], out[1, y0 + y], out[2, y0 + y]
        s0, s1, s2 = np.float32(0), np.float32(0), np.float32(0)
        for x in range(w):
            ca, cb, s = c0[x], c1[x], wc[x]
            u = fu * cosx[x]
            u = (u - np.floor(u)) * q
            v = fv * sinx[x]
            v = (v - np.floor(v)) * p
            iu = min(max(np.int32(u), zero), q - one)
            iv = min(max(np.int32(v), zero), p - one)
            du = np.float32(u - iu)
            dv = np.float32(v - iv)
            iu1 = iu + one if iu + one < q else zero
            iv1 = iv + one if iv + one < p else zero
            ra = iv if iv < k else p - one - iv  # the mirrored half
            rb = iv1 if iv1 < k else p - one - iv1
            ta, tb, tc, td = tex[ra, iu], tex[ra, iu1], tex[rb, iu], tex[rb, iu1]
            d0 = ta[0] + du * (tb[0] - ta[0])
            d0 += dv * (tc[0] + du * (td[0] - tc[0]) - d0)
            d1 = ta[1] + du * (tb[1] - ta[1])
            d1 += dv * (tc[1] + du * (td[1] - tc[1]) - d1)
            d2 = ta[2] + du * (tb[2] - ta[2])
            d2 += dv * (tc[2] + du * (td[2] - tc[2]) - d2)
            if m >= 0:
                mv = mirror[m, x]
                d0 = mv[0] + rp * (d0 - mv[0])
                d1 = mv[1] + rp * (d1 - mv[1])
                d2 = mv[2] + rp * (d2 - mv[2])
            o0[x] = (row[0, ca] + s * (row[0, cb] - row[0, ca])) * d0
            o1[x] = (row[1, ca] + s * (row[1, cb] - row[1, ca])) * d1
            o2[x] = (row[2, ca] + s * (row[2, cb] - row[2, ca])) * d2
            s0 += o0[x]
            s1 += o1[x]
            s2 += o2[x]
        sums[0, y0 + y], sums[1, y0 + y], sums[2, y0 + y] = s0, s1, s2


@njit(parallel=True, cache=True, boundscheck=False, fastmath=_FASTMATH_KEEP_NAN)
def detail_rows(src, out, taps, lo, hi):
    """The fine detail of image rows: out[y, x, c] = clamp(src[c, y, x] / max(b, 1e-6), lo, hi),
    b = src[c, y] blurred along the row by ``taps`` (odd length, centred; circular across the
    seam). src float32 [3, K, W] (any strides), out float32 [K, W, 3] (channels last, as
    `sky_rows` reads a texture). `sky._detail_texture`."""
    k, w = src.shape[1], src.shape[2]
    r = taps.shape[0] // 2
    lo, hi = np.float32(lo), np.float32(hi)
    for task in prange(3 * k):
        c, y = task // k, task % k
        row = src[c, y]
        buf = np.empty(w + 2 * r, np.float32)
        for x in range(w):
            buf[r + x] = row[x]
        for x in range(r):
            buf[x] = row[(x - r) % w]
            buf[r + w + x] = row[x % w]
        acc = np.zeros(w, np.float32)
        for t in range(2 * r + 1):
            wt = taps[t]
            seg = buf[t:t + w]
            for x in range(w):
                acc[x] += wt * seg[x]
        dst = out[y]
        for x in range(w):
            v = buf[r + x] / max(acc[x], np.float32(1e-6))
            dst[x, c] = min(max(v, lo), hi)
