"""Training data: photos from a folder or .zip, or procedural frames, as square uint8 frames.

Photos are decoded once into a cache at the training resolution R:

- EXIF orientation is applied; an embedded ICC profile (RGB or CMYK) is converted to sRGB; any
  mode (RGB, RGBA, LA, P, L, I;16, CMYK, ...) becomes RGB, transparency composited over white;
- the short side is resized to R (Lanczos), then R x R squares are cropped: a landscape photo
  gives one crop per R columns of its resized width, evenly spaced from the left edge to the
  right edge (a leftover under a quarter of R adds no crop); a portrait photo gives its centre;
- files whose short side is under ``R * MIN_SIZE_FRACTION`` are skipped as too small; images
  over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89.5 Mpx by default) and
  zip members over ``MAX_MEMBER_BYTES`` uncompressed as too large; anything that fails to decode
  (corrupt, truncated, fuzzed) as unreadable; entries that are not regular files (FIFOs, devices)
  are never opened. Skipped files are listed in the manifest and named in one warning line; when
  every file is skipped the same summary is the error. Files without an image extension and
  hidden files are ignored.

``ImageDataset.manifest["identity"]`` identifies the frames' source independently of its path:
the number of image files and a hash of their relative names and sizes (for a zip, also their
CRCs), or ``synthetic:N:SEED`` with the renderer's version. A run records it and ``--resume``
checks it.

The cache is one ``.npy`` file of uint8 [N, 3, R, R] (memory-mapped when read back) plus a JSON
manifest, both written atomically. It is reused while the source listing (names, sizes and
modification times; for a zip, names, sizes and CRCs) and R are unchanged.

The source ``synthetic``, ``synthetic:N`` or ``synthetic:N:SEED`` renders N frames with
``training.synthetic`` instead (in memory unless a cache folder is given).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

try:  # colour management is optional in Pillow builds
    from PIL import ImageCms
except ImportError:  # pragma: no cover
    ImageCms = None

from alis_core.errors import AlisError

from . import synthetic

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MIN_SIZE_FRACTION = 0.5     # skip photos whose short side is under R * this (too much upscaling)
SKIP_KINDS = ("unreadable", "too small", "too large", "not a regular file")
MAX_MEMBER_BYTES = 512 << 20  # zip members are read into memory: skip larger ones (zip bombs)
DEFAULT_SYNTHETIC_FRAMES = 1024
CACHE_VERSION = 1
_SYNTHETIC_RE = re.compile(r"^synthetic(?::(\d+))?(?::(\d+))?$")


class ImageDataset:
    """Square training frames, uint8 [N, 3, R, R]; items are uint8 tensors [3, R, R].

    ``manifest`` describes where the frames came from (see ``prepare_dataset``).
    """

    def __init__(self, images: np.ndarray, manifest: dict | None = None):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] \
                or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 [N, 3, R, R] frames, got {images.dtype} {images.shape}")
        self.images = images
        self.manifest = manifest or {}

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[index]))  # copy: the cache may be read-only

    def sample_batch(self, batch_size: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
        """Draw ``batch_size`` frames with replacement: float32 [N, 3, R, R] in [-1, 1].

        With ``flip``, each frame is mirrored left-right with probability 1/2. All randomness
        comes from ``generator`` (a CPU ``torch.Generator``).
        """
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        x = torch.from_numpy(self.images[idx.numpy()]).float().div_(127.5).sub_(1.0)
        if flip:
            mirror = torch.rand(batch_size, generator=generator) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        return x


# ---------------------------------------------------------------------------------------------
# Decoding and cropping.


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Convert an RGB or CMYK image with an embedded ICC profile to sRGB; else return it as is."""
    icc = im.info.get("icc_profile")
    if not icc or ImageCms is None or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im  # a broken profile: fall back to the plain mode conversion


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; alpha is composited over white, 16-bit and float scaled to 8 bits."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            top = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        else:
            top = 65535.0 if a.max(initial=0.0) > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _crop_offsets(length: int, resolution: int) -> list[int]:
    """Left edges of the R-wide crops taken across ``length`` columns, evenly spaced."""
    n = max(1, math.ceil(length / resolution - 0.25))
    if n == 1:
        return [(length - resolution) // 2]
    return [round(k * (length - resolution) / (n - 1)) for k in range(n)]


def _decode_frames(data: io.BytesIO | Path, resolution: int) -> np.ndarray:
    """Decode one image file and cut it into frames: uint8 [K, 3, R, R].

    Raises ``_Skip`` for what is skipped on purpose (not a regular file, too small, too large);
    decoding errors propagate (any exception: Pillow's plugins raise many kinds on corrupt files).
    """
    r = resolution
    with contextlib.ExitStack() as stack:
        if isinstance(data, Path):
            data = stack.enter_context(_open_regular(data))
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it (and refuses above); the size check below
            # reports both the same way, as a skipped file
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = stack.enter_context(Image.open(data))
            except Image.DecompressionBombError as exc:
                raise _Skip("too large", str(exc).split(" could be")[0]) from None
        w, h = im.size
        limit = Image.MAX_IMAGE_PIXELS
        if limit and w * h > limit:
            raise _Skip("too large", f"{w}x{h} px, over Pillow's decompression-bomb limit of {limit} pixels")
        # Image size after EXIF orientation has the same short side, so check before decoding.
        if min(w, h) < r * MIN_SIZE_FRACTION:
            raise _Skip("too small", f"{w}x{h} px, short side under {math.ceil(r * MIN_SIZE_FRACTION)}")
        if im.format == "JPEG":
            im.draft(None, (r, r))  # decode at a reduced DCT scale when the photo is much larger
        with _quiet_native_stderr() if im.format == "TIFF" else contextlib.nullcontext():
            im.load()
        im = _to_rgb(_icc_to_srgb(ImageOps.exif_transpose(im)))
    w, h = im.size
    if w >= h:
        size = (max(r, round(w * r / h)), r)
    else:
        size = (r, max(r, round(h * r / w)))
    if im.size != size:
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    a = np.asarray(im)                                                    # [h, w, 3]
    if size[0] >= size[1]:
        crops = [a[:, x:x + r] for x in _crop_offsets(size[0], r)]
    else:
        y = (size[1] - r) // 2
        crops = [a[y:y + r]]
    return np.stack(crops).transpose(0, 3, 1, 2).copy()                  # [K, 3, R, R]


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 while libtiff decodes: it prints its own lines about damaged
    files ("Using code not yet in table", ...) there, and such a file is reported once, as skipped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file (a FIFO would block, a device never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Skip("not a regular file", "a FIFO, device or socket; only regular files are read")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


class _Skip(Exception):
    """A file skipped on purpose: ``kind`` (too small, too large, not a regular file) and why."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# Sources.


@dataclass(frozen=True)
class _Source:
    kind: str        # "folder" | "zip"
    path: Path
    names: list[str]  # image members, sorted, POSIX-style relative paths
    fingerprint: str  # the cache key's listing: names, sizes and mtimes (zip: CRCs)
    identity: str  # path-independent: file count and a hash of names and sizes (zip: and CRCs)

    def open(self) -> Iterator[tuple[str, io.BytesIO | Path]]:
        if self.kind == "folder":
            for name in self.names:
                yield name, self.path / name
        else:
            with zipfile.ZipFile(self.path) as zf:
                for name in self.names:
                    payload: io.BytesIO | Exception
                    size = zf.getinfo(name).file_size
                    if size > MAX_MEMBER_BYTES:
                        payload = _Skip("too large", f"{size / 2 ** 20:.0f} MiB uncompressed, over "
                                                     f"{MAX_MEMBER_BYTES >> 20} MiB")
                    else:
                        try:  # zipfile stops at the declared size, so memory stays bounded
                            with zf.open(name) as f:
                                payload = io.BytesIO(f.read(MAX_MEMBER_BYTES + 1))
                        except Exception as exc:  # noqa: BLE001 - encrypted or corrupt member
                            payload = exc
                    yield name, payload


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in IMAGE_EXTENSIONS


def _scan_source(path: Path) -> _Source:
    if path.is_dir():
        names, stats, sizes = [], [], []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = Path(root).relative_to(path)
            for f in sorted(files):
                rel = (rel_root / f).as_posix()
                if _is_image_name(rel):
                    try:
                        st = (Path(root) / f).stat()
                        stamp, size = f"{st.st_size}\0{st.st_mtime_ns}", st.st_size
                    except OSError:  # dangling link: listed, then skipped as unreadable
                        stamp, size = "missing", -1
                    names.append(rel)
                    stats.append(f"{rel}\0{stamp}")
                    sizes.append(size)
        names_stats = sorted(zip(names, stats, sizes))
        names = [n for n, _, _ in names_stats]
        fp = hashlib.sha256("\n".join(s for _, s, _ in names_stats).encode()).hexdigest()
        ident = hashlib.sha256("\n".join(f"{n}\0{z}" for n, _, z in names_stats).encode()).hexdigest()
        return _Source("folder", path, names, fp, f"files:{len(names)}:{ident[:16]}")
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as exc:
        raise AlisError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    if not regular:  # opening a FIFO or device to look for a zip would block or never end
        raise AlisError(f"dataset {path} is neither a folder nor a regular file; "
                        "give a folder or .zip of images, or the source 'synthetic'")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir() and _is_image_name(i.filename)
                         and not i.filename.startswith("__MACOSX/")]
        except Exception as exc:  # noqa: BLE001 - zipfile raises several kinds on a damaged directory
            raise AlisError(f"cannot read zip {path}: {exc}; re-create the archive") from None
        infos.sort(key=lambda i: i.filename)
        fp = hashlib.sha256("\n".join(f"{i.filename}\0{i.file_size}\0{i.CRC}" for i in infos)
                            .encode()).hexdigest()
        return _Source("zip", path, [i.filename for i in infos], fp, f"zip:{len(infos)}:{fp[:16]}")
    raise AlisError(f"dataset {path} is neither a folder nor a .zip of images; "
                    "give a folder or .zip of JPEG/PNG/WebP images, or the source 'synthetic'")


# ---------------------------------------------------------------------------------------------
# Cache files.


def default_cache_dir() -> Path:
    """Where prepared datasets go: $ALIS_CACHE_DIR, else datasets/ in the model cache (alis_core.hub)."""
    env = os.environ.get("ALIS_CACHE_DIR")
    if env:
        return Path(env)
    from alis_core.hub import cache_root
    return cache_root() / "datasets"


def _write_npy_stream(path: Path, chunks: Iterator[np.ndarray], frame_shape: tuple[int, ...]) -> int:
    """Write uint8 chunks [k, *frame_shape] as one .npy at ``path`` atomically; return N.

    Frames are streamed to a temporary raw file first, so memory stays at one image. Nothing is
    created on disk before the first chunk arrives, so a source without usable frames leaves no trace.
    """
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return 0
    n = 0
    raw_name = tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, raw_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".raw")
        with os.fdopen(fd, "wb") as raw:
            for chunk in itertools.chain([first], chunks):
                raw.write(np.ascontiguousarray(chunk, np.uint8).tobytes())
                n += len(chunk)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                  "fortran_order": False, "shape": (n, *frame_shape)}
        fd2, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd2, "wb") as out, open(raw_name, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 16 << 20)
        os.replace(tmp_name, path)
    except OSError as exc:
        raise AlisError(f"cannot write the dataset cache {path}: {exc.strerror or exc}; "
                        "free some space or pass --cache-dir (or set ALIS_CACHE_DIR) to a writable folder") from None
    finally:
        for name in (raw_name, tmp_name):
            if name is not None and os.path.exists(name):
                os.remove(name)
    return n


def _write_json(path: Path, obj: dict) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        raise AlisError(f"cannot write the dataset cache {path}: {exc.strerror or exc}; "
                        "pass --cache-dir (or set ALIS_CACHE_DIR) to a writable folder") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _load_cache(npy: Path, manifest_path: Path, expect: dict) -> ImageDataset | None:
    """The cached dataset if its manifest matches ``expect`` (key -> value), else None."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if any(manifest.get(k) != v for k, v in expect.items()):
            return None
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(images.shape) != manifest.get("shape"):
        return None
    return ImageDataset(images, manifest)


def _cache_paths(cache_dir: Path, stem: str, ident: str, resolution: int) -> tuple[Path, Path]:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "dataset"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    base = cache_dir / f"{safe}-{digest}-r{resolution}"
    return base.with_suffix(".npy"), base.with_suffix(".json")


# ---------------------------------------------------------------------------------------------
# Entry point.


def _summarise_skipped(skipped: list[dict], total: int) -> str:
    counts = {kind: sum(s["kind"] == kind for s in skipped) for kind in SKIP_KINDS}
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    names = [re.sub(r"[\x00-\x1f\x7f]", "?", s["name"]) for s in skipped]  # the summary stays one line
    shown = ", ".join(names[:10]) + (f", ... and {len(names) - 10} more" if len(names) > 10 else "")
    return f"skipped {len(skipped)} of {total} files ({parts}): {shown}"


def _prepare_synthetic(count: int, seed: int, resolution: int, cache_dir: Path | None) -> ImageDataset:
    landscapes = synthetic.SyntheticLandscapes(resolution, count, seed=seed)
    manifest = {"cache_version": CACHE_VERSION, "source": f"synthetic:{count}:{seed}",
                "identity": f"synthetic:{count}:{seed}:v{synthetic.SYNTHETIC_VERSION}", "kind": "synthetic", "synthetic_version": synthetic.SYNTHETIC_VERSION,
                "resolution": resolution, "shape": [count, 3, resolution, resolution],
                "frames": count, "files_total": 0, "files_used": 0, "files": [], "skipped": []}
    frames = (landscapes.frame_uint8(i).transpose(2, 0, 1)[None] for i in range(count))
    if cache_dir is None:
        return ImageDataset(np.concatenate(list(frames)), manifest)
    npy, man = _cache_paths(Path(cache_dir), f"synthetic-{count}-{seed}", manifest["source"], resolution)
    expect = {k: manifest[k] for k in ("cache_version", "source", "synthetic_version", "resolution")}
    cached = _load_cache(npy, man, expect)
    if cached is not None:
        log.info("reusing cached synthetic frames %s", npy)
        cached.manifest["identity"] = manifest["identity"]
        return cached
    _write_npy_stream(npy, frames, (3, resolution, resolution))
    _write_json(man, manifest)
    return ImageDataset(np.load(npy, mmap_mode="r"), manifest)


def prepare_dataset(source: str | os.PathLike, resolution: int,
                    cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Prepare (or reuse) square frames at ``resolution`` from a folder, a .zip or ``synthetic``.

    ``cache_dir`` defaults to ``default_cache_dir()`` for photos; synthetic frames are only
    cached when it is given. Raises AlisError for a missing source, an unreadable zip or a
    source without a single usable image.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise AlisError(f"training resolution must be an integer of at least 4, got {resolution!r}")
    m = _SYNTHETIC_RE.match(str(source)) if isinstance(source, str) else None
    if m:
        count = int(m.group(1)) if m.group(1) else DEFAULT_SYNTHETIC_FRAMES
        if count < 1:
            raise AlisError(f"'{source}' asks for no frames; use synthetic:N with N >= 1")
        return _prepare_synthetic(count, int(m.group(2) or 0), resolution,
                                  None if cache_dir is None else Path(cache_dir))

    path = Path(source).expanduser()
    if not path.exists():
        raise AlisError(f"dataset not found: {path}; give a folder or .zip of images, "
                        "or the source 'synthetic' to train on procedural landscapes")
    path = path.resolve()
    src = _scan_source(path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npy, man = _cache_paths(cache, path.stem if src.kind == "zip" else path.name, str(path), resolution)
    expect = {"cache_version": CACHE_VERSION, "source": str(path), "resolution": resolution,
              "fingerprint": src.fingerprint}
    cached = _load_cache(npy, man, expect)
    if cached is not None:
        log.info("reusing prepared dataset %s (%d frames)", npy, len(cached))
        cached.manifest["identity"] = src.identity
        return cached
    if not src.names:
        raise AlisError(f"no images in {path}; add JPEG, PNG or WebP files "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or use the source 'synthetic'")

    used: list[dict] = []
    skipped: list[dict] = []

    def frames() -> Iterator[np.ndarray]:
        for name, payload in src.open():
            try:
                if isinstance(payload, Exception):
                    raise payload
                crops = _decode_frames(payload, resolution)
            except _Skip as exc:
                skipped.append({"name": name, "kind": exc.kind, "reason": str(exc)})
                continue
            except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on corrupt files
                skipped.append({"name": name, "kind": "unreadable",
                                "reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]})
                continue
            used.append({"name": name, "crops": len(crops)})
            yield crops

    n = _write_npy_stream(npy, frames(), (3, resolution, resolution))
    if n == 0:  # nothing was written; the summary is the error, not a warning before it
        raise AlisError(f"no usable images in {path}: {_summarise_skipped(skipped, len(src.names))}; "
                        f"add readable JPEG/PNG/WebP images of at least "
                        f"{math.ceil(resolution * MIN_SIZE_FRACTION)} px on the short side, "
                        "or lower the resolution")
    if skipped:
        log.warning("%s", _summarise_skipped(skipped, len(src.names)))
    manifest = {**expect, "identity": src.identity, "kind": src.kind, "shape": [n, 3, resolution, resolution], "frames": n,
                "files_total": len(src.names), "files_used": len(used),
                "min_short_side": math.ceil(resolution * MIN_SIZE_FRACTION),
                "files": used, "skipped": skipped}
    _write_json(man, manifest)
    log.info("prepared %d frames at %d px from %d of %d images in %s -> %s",
             n, resolution, len(used), len(src.names), path, npy)
    return ImageDataset(np.load(npy, mmap_mode="r"), manifest)
