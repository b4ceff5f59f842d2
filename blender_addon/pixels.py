"""numpy <-> Blender image pixel layout (no bpy).

Blender stores `Image.pixels` as one flat float32 array of RGBA rows ordered bottom-up
(row 0 is the bottom of the picture). Our images are top-down HWC arrays. These two
functions are the only place that knows that.
"""
from __future__ import annotations

import numpy as np


def hwc_to_blender_pixels(img: np.ndarray) -> np.ndarray:
    """Top-down image [H, W, 3|4] float -> flat float32 [H * W * 4] bottom-up RGBA (alpha 1 if absent)."""
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an image [H, W, 3|4], got shape {tuple(img.shape)}")
    h, w, c = img.shape
    rgba = np.ones((h, w, 4), dtype=np.float32)
    rgba[:, :, :c] = img
    return np.ascontiguousarray(rgba[::-1]).reshape(-1)


def blender_pixels_to_hwc(flat: np.ndarray, width: int, height: int, channels: int = 4) -> np.ndarray:
    """Flat bottom-up Blender pixels [H * W * channels] -> top-down float32 image [H, W, channels]."""
    flat = np.asarray(flat, dtype=np.float32)
    if flat.size != width * height * channels:
        raise ValueError(f"expected {width}x{height}x{channels} = {width * height * channels} values, got {flat.size}")
    return np.ascontiguousarray(flat.reshape(height, width, channels)[::-1])


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1), float32.

    Used for images that arrive sRGB-encoded (8/16-bit PNG); the in-process backend uses
    alis_core.image instead, and EXR/HDR files from the CLI are linear already.
    """
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def longitude_bands(width: int, height: int, colors: np.ndarray) -> np.ndarray:
    """Synthetic equirect [H, W, 3]: the columns split into len(colors) equal vertical bands, band i = colors[i].

    A test image whose orientation is obvious when rendered (column u in [0, 1) gets band floor(u * n)).
    """
    colors = np.asarray(colors, dtype=np.float32)
    n = colors.shape[0]
    band = (np.arange(width) * n) // width  # [W]
    return np.broadcast_to(colors[band][None], (height, width, 3)).copy()


def _resample_axis(x: np.ndarray, n_out: int, axis: int, periodic: bool) -> np.ndarray:
    """Linear (tent) resampling of one axis with pixel-centre alignment; widened tent when shrinking (antialias)."""
    n_in = x.shape[axis]
    if n_out == n_in:
        return x
    scale = n_in / n_out
    support = max(1.0, scale)  # tent half-width in input pixels
    centres = (np.arange(n_out) + 0.5) * scale - 0.5  # [n_out] in input pixel coordinates
    first = np.floor(centres - support).astype(np.int64) + 1
    taps = int(np.ceil(2 * support)) + 1
    idx = first[:, None] + np.arange(taps)[None]  # [n_out, taps]
    w = np.clip(1.0 - np.abs(idx - centres[:, None]) / support, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    idx = np.mod(idx, n_in) if periodic else np.clip(idx, 0, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1:], dtype=np.float32)
    for k in range(taps):
        out += np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape).astype(np.float32)
    return out


def resize_equirect(img: np.ndarray, width: int) -> np.ndarray:
    """Resize an equirect [H, W, C] to [width / 2, width, C]; columns wrap round (the 360° seam stays closed)."""
    if width % 2:
        raise ValueError(f"equirect width must be even, got {width}")
    img = np.asarray(img, dtype=np.float32)
    out = _resample_axis(img, width, axis=1, periodic=True)
    return _resample_axis(out, width // 2, axis=0, periodic=False)
