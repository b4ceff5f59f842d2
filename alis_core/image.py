"""Image conversions and file writers: the only place that changes value ranges and layouts.

Ranges: the generator outputs [-1, 1]; display images are [0, 1] (sRGB-encoded, as the
model was trained on sRGB photos). Layouts: alis_core works in CHW ([C, H, W] or [N, C, H, W]);
ComfyUI, Blender, Pillow and numpy image code use HWC. Every function here accepts torch
tensors and numpy arrays alike and returns the same kind it was given.

Files:
- PNG (``save_png``) holds the sRGB-encoded model output as-is, 8 or 16 bits per channel,
  optionally with text chunks (metadata such as seeds and checkpoint names).
- Float images (``save_float_image``, ``.hdr`` or ``.exr``) hold *linear light*:
  ``srgb_to_linear(img01)``, which is what renderers expect from an environment map.
All writers are atomic (temporary file in the destination folder, then ``os.replace``),
create missing parent folders, and raise ``AlisError`` naming the path when they cannot write.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path
from typing import Iterator, Mapping, Union

import numpy as np
import torch

from .errors import AlisError

log = logging.getLogger(__name__)

Array = Union[torch.Tensor, np.ndarray]

__all__ = [
    "to_unit", "from_unit", "chw_to_hwc", "hwc_to_chw", "srgb_to_linear", "linear_to_srgb",
    "atomic_path", "save_image", "save_png", "save_float_image", "load_image", "load_float_image",
    "read_png_text",
]


# ----------------------------------------------------------------------------------------------
# Ranges and layouts.

def to_unit(x: Array) -> Array:
    """Model range [-1, 1] -> display range [0, 1], clamped."""
    if isinstance(x, torch.Tensor):
        return ((x + 1) * 0.5).clamp(0, 1)
    return np.clip((np.asarray(x) + 1) * 0.5, 0, 1)


def from_unit(x: Array) -> Array:
    """Display range [0, 1] -> model range [-1, 1] (no clamping)."""
    return x * 2 - 1


def chw_to_hwc(x: Array) -> Array:
    """[C, H, W] -> [H, W, C], or [N, C, H, W] -> [N, H, W, C]. Returns a view where possible."""
    _check_ndim(x, "chw_to_hwc")
    if isinstance(x, torch.Tensor):
        return x.movedim(-3, -1)
    return np.moveaxis(x, -3, -1)


def hwc_to_chw(x: Array) -> Array:
    """[H, W, C] -> [C, H, W], or [N, H, W, C] -> [N, C, H, W]. Returns a view where possible."""
    _check_ndim(x, "hwc_to_chw")
    if isinstance(x, torch.Tensor):
        return x.movedim(-1, -3)
    return np.moveaxis(x, -1, -3)


def _check_ndim(x: Array, name: str) -> None:
    if x.ndim not in (3, 4):
        raise AlisError(f"{name}: expected a 3-d or 4-d image, got shape {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Transfer functions (IEC 61966-2-1, the sRGB standard; piecewise, not a plain 2.2 gamma).

def srgb_to_linear(x: Array) -> Array:
    """sRGB-encoded values (nominally [0, 1]) -> linear light. Values above 1 follow the power curve."""
    if isinstance(x, torch.Tensor):
        x = x if x.is_floating_point() else x.float()
        power = ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
        return torch.where(x <= 0.04045, x / 12.92, power)
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    power = ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4
    return np.where(x <= 0.04045, x / 12.92, power)


def linear_to_srgb(x: Array) -> Array:
    """Linear light -> sRGB-encoded values. Inverse of ``srgb_to_linear``."""
    if isinstance(x, torch.Tensor):
        x = x if x.is_floating_point() else x.float()
        power = 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
        return torch.where(x <= 0.0031308, x * 12.92, power)
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    power = 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055
    return np.where(x <= 0.0031308, x * 12.92, power)


# ----------------------------------------------------------------------------------------------
# Atomic writes.

@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    Creates missing parent folders. The temporary name keeps the suffix, so libraries that pick
    a format from the extension still work. On any failure the temporary file is removed and an
    OSError becomes an ``AlisError`` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise AlisError(f"cannot write {path}: {e.strerror or e}; choose a writable location") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# ----------------------------------------------------------------------------------------------
# PNG.

def _to_numpy_chw(img: Array, name: str) -> np.ndarray:
    """Any [C, H, W] float image (torch or numpy) -> float32 numpy, validated."""
    if isinstance(img, torch.Tensor):
        img = img.detach().to("cpu", torch.float32).numpy()
    img = np.asarray(img, dtype=np.float32)
    if any(st < 0 for st in img.strides) or not img.flags.writeable:  # flipped or read-only views:
        img = img.copy()  # PyTorch, which does the arithmetic below, takes neither as it is
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise AlisError(f"{name}: expected an image [C, H, W] with C in 1, 3, 4; got shape {img.shape}")
    return img


def _check_finite(img: np.ndarray, name: str) -> None:
    """Refuse NaN and infinities: saved, they would silently become black or white pixels.
    (PyTorch's min and max propagate NaN: both are finite exactly when every value is.)"""
    low, high = torch.aminmax(torch.from_numpy(img)) if img.size else (torch.zeros(()), torch.zeros(()))
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        bad = int(np.size(img) - np.count_nonzero(np.isfinite(img)))
        raise AlisError(f"{name}: the image holds {bad} NaN or infinite values; nothing was written "
                        "(check the checkpoint's weights, or use float32)")


def _quantize(img01: np.ndarray, bits: int) -> np.ndarray:
    """[C, H, W] float [0, 1] -> [H, W, C] uint8/uint16, rounded to nearest (half to even; NaN
    to 0). PyTorch does the arithmetic: on every core, unlike numpy."""
    peak = (1 << bits) - 1
    q = torch.nan_to_num(torch.from_numpy(img01).float(), nan=0.0).clamp(0.0, 1.0).mul_(peak).round_()
    q = q.to(torch.uint8 if bits == 8 else torch.int32).movedim(0, -1).contiguous().numpy()
    return q if bits == 8 else q.astype(np.uint16)


def save_png(
    path: Union[str, os.PathLike],
    img01: Array,
    bits: int = 8,
    text: Mapping[str, object] | None = None,
) -> Path:
    """Write a [C, H, W] image in [0, 1] (C = 1, 3 or 4; values clamped) as an 8- or 16-bit PNG.

    The values are stored as they are: PNGs hold sRGB-encoded images (no transfer function is
    applied). ``text`` becomes PNG text chunks (tEXt, or iTXt for non-Latin-1 values); values are
    converted with ``str``. 16-bit files use a small built-in encoder because Pillow cannot write
    16-bit RGB. Returns the path written.
    """
    if bits not in (8, 16):
        raise AlisError(f"save_png: bits must be 8 or 16, got {bits!r}")
    img = _to_numpy_chw(img01, "save_png")
    text = {str(k): str(v) for k, v in (text or {}).items()}
    for key in text:
        if not 1 <= len(key) <= 79 or not _is_latin1(key):
            raise AlisError(f"save_png: PNG text key {key!r} must be 1-79 Latin-1 characters")
    _check_finite(img, "save_png")
    pixels = _quantize(img, bits)
    path = Path(path)
    with atomic_path(path) as tmp:
        if bits == 8 and pixels.shape[0] * pixels.shape[1] >= _PARALLEL_PNG_MIN_PIXELS:
            tmp.write_bytes(_encode_png(pixels, 8, text, level=_LARGE_PNG_LEVEL, sub=True))
        elif bits == 8:
            _write_png8_pillow(tmp, pixels, text)
        else:
            tmp.write_bytes(_encode_png(pixels, 16, text))
    return path


def save_image(
    path: Union[str, os.PathLike],
    img01: Array,
    bits: int = 8,
    text: Mapping[str, object] | None = None,
    quality: int = 95,
) -> Path:
    """Write a [C, H, W] image in [0, 1] in the format its extension names, atomically.

    .png: ``save_png`` (8 or 16 bits, ``text`` chunks). .jpg/.jpeg, .webp: 8-bit sRGB through
    Pillow (``quality``; JPEG drops alpha; ``text`` is not stored). .exr/.hdr: linear light
    through ``save_float_image`` (RGB only). Any other extension, and 16 bits in a format that
    holds 8, is an ``AlisError``. Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return save_png(path, img01, bits=bits, text=text)
    if suffix in (".exr", ".hdr"):
        return save_float_image(path, img01)
    if suffix not in (".jpg", ".jpeg", ".webp"):
        raise AlisError(f"save_image: {path} must end in .png, .jpg, .jpeg, .webp, .exr or .hdr")
    if bits != 8:
        raise AlisError(f"save_image: {path.name} holds 8 bits per channel; use .png for {bits} bits")
    from PIL import Image

    img = _to_numpy_chw(img01, "save_image")
    _check_finite(img, "save_image")
    pixels = _quantize(img, 8)
    if suffix != ".webp" and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[..., :3])
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    with atomic_path(path) as tmp:
        Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(
            tmp, format="JPEG" if suffix != ".webp" else "WEBP", quality=int(quality))
    return path


def _is_latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _write_png8_pillow(path: Path, pixels: np.ndarray, text: Mapping[str, str]) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if _is_latin1(value):
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path, format="PNG", pnginfo=info)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_PARALLEL_PNG_MIN_PIXELS = 1 << 22  # 8-bit PNGs this large: our encoder, deflating on every core
# ... at zlib level 4: on an 8192 x 4096 sky 3.8x as fast as level 6 for an 11% larger file
_LARGE_PNG_LEVEL = 4


def _deflate(data, level: int) -> bytes:
    """A zlib stream of ``data`` (bytes-like). Large data is cut in pieces deflated on PyTorch's
    thread count at once (zlib lets go of the GIL): each piece a raw deflate stream ended by a
    sync flush, the last by the final block, which joined make one valid stream (as pigz writes
    it; a piece starts without its predecessor's window, a few tenths of a percent larger)."""
    view = memoryview(data).cast("B")
    threads = max(1, torch.get_num_threads())
    if threads == 1 or len(view) < 4 << 20:
        return zlib.compress(view, level)
    from concurrent.futures import ThreadPoolExecutor
    size = -(-len(view) // (4 * threads))
    pieces = [view[i:i + size] for i in range(0, len(view), size)]

    def piece(i: int) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        return c.compress(pieces[i]) + c.flush(zlib.Z_FINISH if i == len(pieces) - 1 else zlib.Z_SYNC_FLUSH)
    with ThreadPoolExecutor(threads) as pool:
        body = b"".join(pool.map(piece, range(len(pieces))))
    return b"\x78\x9c" + body + struct.pack(">I", zlib.adler32(view))


def _encode_png(pixels: np.ndarray, bits: int, text: Mapping[str, str], level: int = 6,
                sub: bool = False) -> bytes:
    """Minimal PNG encoder: [H, W, C] uint8/uint16 -> PNG bytes, every row with the Up filter
    (type 2), or with ``sub`` the Sub filter (type 1: each byte less the same byte of the pixel
    to its left; for landscapes about as small as Pillow's adaptive filters).

    Both filters vectorise, and a reader can undo them row by row without per-pixel Python loops.
    """
    h, w, c = pixels.shape
    raw = torch.from_numpy(pixels.astype(">u2" if bits == 16 else np.uint8, copy=False).view(np.uint8)
                           .reshape(h, w * c * bits // 8))
    bpp = c * bits // 8
    rows = torch.empty(h, raw.shape[1] + 1, dtype=torch.uint8)
    rows[:, 0] = 1 if sub else 2
    rows[:, 1:] = raw  # uint8 arithmetic below wraps modulo 256, as the PNG filters require
    if sub:
        rows[:, 1 + bpp:] -= raw[:, :-bpp]
    else:
        rows[1:, 1:] -= raw[:-1]
    out = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, _PNG_COLOR_TYPE[c], 0, 0, 0))]
    for key, value in text.items():
        if _is_latin1(value):
            out.append(_png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
        else:  # iTXt: keyword, null, compression flag, method, language tag, null, translated kw, null
            out.append(_png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    out.append(_png_chunk(b"IDAT", _deflate(rows.numpy(), level)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _decode_png16(data: bytes, path: Path) -> np.ndarray:
    """Minimal 16-bit PNG decoder (grey, RGB, RGBA; non-interlaced) -> [H, W, C] uint16."""
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise AlisError(f"cannot read {path}: not a valid PNG file")
    w, h, bits, color_type, _, _, interlace = header
    channels = {v: k for k, v in _PNG_COLOR_TYPE.items()}.get(color_type)
    if bits != 16 or channels is None or interlace:
        raise AlisError(f"cannot read {path}: unsupported PNG layout (bits {bits}, colour type {color_type}, interlace {interlace})")
    _check_pixels(path, w, h)  # before inflating: a few bytes of IDAT can declare gigabytes
    bpp, stride = 2 * channels, w * 2 * channels
    raw = zlib.decompressobj().decompress(b"".join(idat), h * (stride + 1))
    if len(raw) != h * (stride + 1):
        raise AlisError(f"cannot read {path}: truncated PNG image data")
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride + 1)
    filters, out = rows[:, 0], rows[:, 1:].astype(np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = filters[y], out[y]
        if f == 1:  # Sub: running sum per byte position within a pixel
            line = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            line = (line + prev) % 256
        elif f in (3, 4):  # Average / Paeth depend on the reconstructed left byte: per-pixel loop
            line = _unfilter_sequential(line, prev, bpp, int(f))
        elif f != 0:
            raise AlisError(f"cannot read {path}: bad PNG filter type {f}")
        out[y] = line
        prev = line
    return out.astype(np.uint8).reshape(h, w, channels, 2).view(">u2")[..., 0].astype(np.uint16)


def _unfilter_sequential(line: np.ndarray, prev: np.ndarray, bpp: int, kind: int) -> np.ndarray:
    cur, up = [int(v) for v in line], [int(v) for v in prev]  # slow path: files from other encoders
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b, c = up[i], (up[i - bpp] if i >= bpp else 0)
        if kind == 3:
            pred = (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) % 256
    return np.array(cur, np.int32)


def read_png_text(path: Union[str, os.PathLike]) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG file as a dict."""
    import io

    from PIL import Image

    data = read_regular_file(path, "image", MAX_IMAGE_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(Path(path), *im.size)  # text after the pixels is read by decoding them
            im.load()
            return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise AlisError(f"cannot read {path}: {e}") from None


# Reading. Files come from users and from the internet: only regular files are opened (a FIFO
# would block, /dev/zero never ends), and image dimensions are checked before any pixel is decoded.

MAX_IMAGE_BYTES = 1 << 30  # encoded size; a 16-bit RGBA PNG of Pillow's pixel limit fits easily


def regular_file(path: Union[str, os.PathLike], what: str) -> os.stat_result:
    """os.stat (symlinks followed) of `path`, refusing anything but a regular file with one line.

    Never opens the file, so a FIFO cannot block and a device cannot be read."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AlisError(f"{what} not found: {path}") from None
    except OSError as e:
        raise AlisError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AlisError(f"{what} {path} is a folder; pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise AlisError(f"{what} {path} is not a regular file (a device, pipe or socket); pass a file")
    return st


def read_regular_file(path: Union[str, os.PathLike], what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; anything else is one AlisError line.

    Opened non-blocking and checked again on the open descriptor, so a file swapped for a FIFO
    between the checks cannot block either."""
    import stat

    regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise AlisError(f"cannot read {what} {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise AlisError(f"{what} {path} is not a regular file (a device, pipe or socket); pass a file")
        if st.st_size > max_bytes:
            raise AlisError(f"{what} {path} is {st.st_size} bytes, more than the {max_bytes} this alis reads")
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise AlisError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise AlisError(f"{what} {path} grew past {max_bytes} bytes while being read")
    return data


def _max_pixels() -> int:
    """Pillow's decompression-bomb limit (users may lower or raise it; never disabled here)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS or 89_478_485  # None means "disabled" to Pillow; keep its default


def _check_pixels(path: Path, w: int, h: int) -> None:
    if w * h > _max_pixels():
        raise AlisError(f"image {path} declares {w}x{h} = {w * h / 1e6:.0f} Mpx, more than the "
                        f"{_max_pixels() / 1e6:.0f} Mpx read; downscale it first")


def load_image(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Read an image file -> float32 [C, H, W] in [0, 1], values as stored (sRGB-encoded).

    8-bit files of any Pillow format are read with Pillow (palette and grey+alpha images are
    converted to RGB/RGBA). 16-bit PNGs keep their full precision through a built-in decoder.
    Images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused
    before decoding.
    """
    import io
    import warnings

    from PIL import Image

    path = Path(path)
    data = read_regular_file(path, "image", MAX_IMAGE_BYTES)
    try:
        if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[24] == 16 and data[25] in (0, 2, 6):
            return hwc_to_chw(torch.from_numpy(_decode_png16(data, path).astype(np.float32) / 65535.0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _check_pixels(path, *im.size)
                if im.mode not in ("L", "RGB", "RGBA"):
                    im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
                arr = np.asarray(im, dtype=np.float32) / 255.0
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise AlisError(f"image {path} is too large to decode safely ({e}); downscale it first") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise AlisError(f"cannot read image {path}: {getattr(e, 'strerror', None) or e}") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return hwc_to_chw(torch.from_numpy(np.ascontiguousarray(arr)))


# ----------------------------------------------------------------------------------------------
# Float images (linear light): Radiance .hdr (built in) and OpenEXR .exr (optional package).

def save_float_image(path: Union[str, os.PathLike], img01: Array, half: bool = False) -> Path:
    """Write a [3, H, W] sRGB-encoded image in [0, 1] as linear-light ``.hdr`` or ``.exr``.

    The file holds ``srgb_to_linear(img01)``: renderers treat float environment maps as
    linear light, so the sRGB transfer function is undone here (values are not otherwise scaled).
    ``.hdr`` is Radiance RGBE (built in; about 1% relative precision). ``.exr`` needs the
    ``OpenEXR`` package (``pip install OpenEXR``); it is written PIZ-compressed (lossless) as
    32-bit float, or 16-bit half float with ``half=True``. Returns the path written.
    """
    img = _float_image_array(path, img01, "save_float_image")
    return _write_float_image(Path(path), srgb_to_linear(torch.from_numpy(img).clamp(min=0.0)).numpy(), half)


def save_radiance(path: Union[str, os.PathLike], hdr: Array, half: bool = False) -> Path:
    """Write scene-linear radiance [3, H, W] (any range >= 0, e.g. a completed sky with its sun)
    as ``.hdr`` or ``.exr``, values as they are (see save_float_image for the formats). Half-float
    EXR tops out at 65504: keep such skies in float32 EXR or .hdr."""
    img = _float_image_array(path, hdr, "save_radiance")
    top = float(torch.from_numpy(img).max()) if img.size else 0.0
    if half and top > 65504.0:
        raise AlisError(f"save_radiance: {path}: values up to {top:.0f} overflow half floats "
                        "(max 65504); write float32 EXR or .hdr")
    return _write_float_image(Path(path), torch.from_numpy(img).clamp(min=0.0).numpy(), half)


def _float_image_array(path: Union[str, os.PathLike], img: Array, what: str) -> np.ndarray:
    if Path(path).suffix.lower() not in (".hdr", ".exr"):
        raise AlisError(f"{what}: {path} must end in .hdr or .exr")
    arr = _to_numpy_chw(img, what)
    if arr.shape[0] != 3:
        raise AlisError(f"{what}: expected an RGB image [3, H, W], got shape {arr.shape}")
    _check_finite(arr, what)
    return arr


def _write_float_image(path: Path, linear_chw: np.ndarray, half: bool) -> Path:
    """[3, H, W] float32 >= 0, finite -> .exr or .hdr (both take the channel planes as they are)."""
    linear = np.ascontiguousarray(linear_chw, dtype=np.float32)
    if path.suffix.lower() == ".exr":
        exr = _import_openexr()
        with atomic_path(path) as tmp:
            _write_exr(exr, tmp, linear, half)
    else:
        with atomic_path(path) as tmp:
            tmp.write_bytes(_encode_hdr(linear))
    return path


def load_float_image(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Read a ``.hdr`` or ``.exr`` file -> float32 [3, H, W], linear light as stored."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".hdr", ".exr"):
        raise AlisError(f"load_float_image: {path} must end in .hdr or .exr")
    try:
        if suffix == ".hdr":
            arr = _decode_hdr(read_regular_file(path, "image", MAX_IMAGE_BYTES), path)
        else:
            regular_file(path, "image")
            exr = _import_openexr()
            with exr.File(str(path), header_only=True) as f:
                box = f.header().get("dataWindow")
                if box is not None:
                    (x0, y0), (x1, y1) = box
                    _check_pixels(path, int(x1) - int(x0) + 1, int(y1) - int(y0) + 1)
            with exr.File(str(path)) as f:
                channels = f.channels()
                if "RGB" in channels:
                    arr = channels["RGB"].pixels
                else:
                    arr = np.stack([channels[k].pixels for k in "RGB"], axis=-1)
    except (OSError, IndexError, ValueError, RuntimeError) as e:  # truncated .hdr data; OpenEXR: RuntimeError
        raise AlisError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return hwc_to_chw(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))


def _import_openexr():
    try:
        import OpenEXR
    except ImportError as e:
        raise AlisError("writing .exr needs the OpenEXR package: pip install OpenEXR (or save as .hdr)") from e
    if not hasattr(OpenEXR, "File"):
        raise AlisError("the installed OpenEXR package is too old (needs 3.2+): pip install -U OpenEXR")
    return OpenEXR


def _write_exr(exr, path: Path, linear_chw: np.ndarray, half: bool) -> None:
    """Channels R, G, B from the planes, PIZ-compressed (lossless; every EXR reader takes it, and
    it compresses float32 skies smaller and faster than ZIP) on PyTorch's thread count."""
    header = {"compression": exr.PIZ_COMPRESSION, "type": exr.scanlineimage}
    planes = {name: linear_chw[i].astype(np.float16 if half else np.float32, copy=False) for i, name in enumerate("RGB")}
    with _EXR_LOCK:  # the thread count is OpenEXR's global: one write sets and puts it back at a time
        threads = exr.global_thread_count() if hasattr(exr, "global_thread_count") else None
        try:
            if threads is not None:
                exr.set_global_thread_count(max(1, torch.get_num_threads()))
            with exr.File(header, planes) as f:
                f.write(str(path))
        finally:
            if threads is not None:
                exr.set_global_thread_count(threads)


_EXR_LOCK = threading.Lock()


def _encode_hdr(linear_chw: np.ndarray) -> bytes:
    """Radiance RGBE encoder: [3, H, W] float32 (>= 0, finite) -> file bytes. Scanlines use the
    'new' run-length format with literal runs only, which every reader accepts and which, unlike
    flat RGBE, cannot be misread as the old run-length marker (a pixel of 1, 1, 1). PyTorch does
    the arithmetic (on every core)."""
    _, h, w = linear_chw.shape
    rgb = torch.from_numpy(linear_chw).clamp(min=0.0)
    peak = rgb.amax(0)  # [H, W]
    mantissa, exponent = torch.frexp(peak)  # peak = mantissa * 2**exponent, mantissa in [0.5, 1)
    lit = peak > 1e-32
    scale = torch.where(lit, mantissa * 256.0 / torch.where(lit, peak, 1.0), 0.0)
    # [H, 4, W]: each scanline's R, G, B and E planes, the order the run-length format stores them
    planes = torch.empty(h, 4, w, dtype=torch.uint8)
    planes[:, :3] = (rgb * scale).clamp_(max=255).to(torch.uint8).movedim(0, 1)
    planes[:, 3] = torch.where(lit, exponent + 128, 0).clamp_(0, 255).to(torch.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nSOFTWARE=alis_core\n\n-Y {h} +X {w}\n".encode("ascii")
    if not 8 <= w <= 0x7FFF:  # the run-length format is only defined for these widths
        return header + planes.movedim(1, 2).contiguous().numpy().tobytes()
    # Per scanline: marker (2, 2, w_hi, w_lo), then each component as literal runs of <= 128 bytes,
    # written in place: [H, 4 + 4 L] with L = each plane's runs and their count bytes.
    n_full, rest = divmod(w, 128)
    length = n_full * 129 + (rest + 1 if rest else 0)
    out = torch.empty(h, 4 + 4 * length, dtype=torch.uint8)
    out[:, :4] = torch.tensor([2, 2, w >> 8, w & 0xFF], dtype=torch.uint8)
    body = out[:, 4:].view(h, 4, length)
    if n_full:
        runs = body[..., :n_full * 129].view(h, 4, n_full, 129)
        runs[..., 0] = 128
        runs[..., 1:] = planes[..., :n_full * 128].view(h, 4, n_full, 128)
    if rest:
        body[..., n_full * 129] = rest
        body[..., n_full * 129 + 1:] = planes[..., n_full * 128:]
    return header + out.numpy().tobytes()


def _decode_hdr(data: bytes, path: Path) -> np.ndarray:
    """Radiance RGBE decoder (flat and run-length scanlines, standard -Y H +X W orientation)."""
    end = data.find(b"\n\n")
    if not data.startswith(b"#?") or end < 0:
        raise AlisError(f"cannot read {path}: not a Radiance .hdr file")
    line_end = data.index(b"\n", end + 2)
    size = data[end + 2:line_end].split()
    if len(size) != 4 or size[0] != b"-Y" or size[2] != b"+X":
        raise AlisError(f"cannot read {path}: unsupported .hdr orientation {b' '.join(size).decode()!r}")
    if not (size[1].isdigit() and size[3].isdigit()):
        raise AlisError(f"cannot read {path}: bad .hdr size line")
    h, w = int(size[1]), int(size[3])
    _check_pixels(path, w, h)
    buf, pos = memoryview(data), line_end + 1
    rgbe = _literal_scanlines(data, pos, h, w)
    if rgbe is not None:
        return _rgbe_to_float(rgbe)
    rgbe = np.zeros((h, w, 4), np.uint8)
    for y in range(h):
        if 8 <= w <= 0x7FFF and buf[pos] == 2 and buf[pos + 1] == 2 and (buf[pos + 2] << 8 | buf[pos + 3]) == w:
            pos += 4
            for c in range(4):
                x = 0
                while x < w:
                    count = buf[pos]
                    if count > 128:  # a run of one repeated byte
                        count -= 128
                        rgbe[y, x:x + count, c] = buf[pos + 1]
                        pos += 2
                    else:
                        rgbe[y, x:x + count, c] = np.frombuffer(buf[pos + 1:pos + 1 + count], np.uint8)
                        pos += 1 + count
                    x += count
        else:  # flat scanline (old run-length markers are not supported)
            rgbe[y] = np.frombuffer(buf[pos:pos + 4 * w], np.uint8).reshape(w, 4)
            pos += 4 * w
    return _rgbe_to_float(rgbe)


def _literal_scanlines(data: bytes, pos: int, h: int, w: int) -> np.ndarray | None:
    """The pixels [H, W, 4] of run-length scanlines made only of literal runs of 128 bytes (and
    one shorter run at the end), as ``_encode_hdr`` writes them, read without a loop; None if
    the file is laid out any other way (the general decoder reads it then)."""
    if not 8 <= w <= 0x7FFF:
        return None
    n_full, rest = divmod(w, 128)
    length = n_full * 129 + (rest + 1 if rest else 0)
    row = 4 + 4 * length
    if len(data) - pos < h * row:
        return None
    rows = np.frombuffer(data, np.uint8, count=h * row, offset=pos).reshape(h, row)
    if not (rows[:, :4] == np.array([2, 2, w >> 8, w & 0xFF], np.uint8)).all():
        return None
    runs = rows[:, 4:].reshape(h, 4, length)
    full = runs[..., :n_full * 129].reshape(h, 4, n_full, 129)
    if not (full[..., 0] == 128).all() or (rest and not (runs[..., n_full * 129] == rest).all()):
        return None
    planes = np.concatenate([full[..., 1:].reshape(h, 4, n_full * 128), runs[..., n_full * 129 + 1:]], axis=2)
    return planes.transpose(0, 2, 1)  # [H, W, 4]


def _rgbe_to_float(rgbe: np.ndarray) -> np.ndarray:
    """RGBE pixels [H, W, 4] -> linear RGB float32 [H, W, 3]: (m + 0.5) * 2^(e - 136), 0 where e = 0."""
    t = torch.from_numpy(np.ascontiguousarray(rgbe))
    exponent = t[..., 3:].to(torch.int32)
    scale = torch.where(exponent > 0, torch.exp2((exponent - 136).to(torch.float64)), 0.0)  # exact powers of two
    return ((t[..., :3].to(torch.float64) + 0.5) * scale).to(torch.float32).numpy()
