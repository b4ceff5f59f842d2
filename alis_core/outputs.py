"""Output safety: which existing files a command may replace, atomic writers, and memory bounds.

The rule every front end follows before it writes: a missing path is written; an existing one is
replaced only if it holds an output of the same kind the command itself writes, recognised by its
content (an image's magic bytes, or the marker a JSON or text file of ours carries), never by its
name. Anything else (a checkpoint, an anchors file, a user's notes) needs `force=True` (`--force`).

    check_replaceable(path, "image", force, "--out")   # before any work
    write_json(path, data, "tiles")                    # carries the marker, written atomically
    check_memory(strip_bytes(h, w), "--width 100000", "stream it with --tiles DIR")

Kinds: "image" (PNG, JPEG, WebP, OpenEXR, Radiance HDR), "checkpoint" (safetensors; never
replaced without force: a checkpoint is hours of training), and any name a JSON or text writer of
this module gives (its marker names it, so an index.json only replaces an index.json).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from .errors import AlisError

PathLike = Union[str, os.PathLike]

MARKER_KEY = "alis_output"  # JSON files we write: {"alis_output": "<kind>", ...}
TEXT_MARKER = "alis-output:"  # text files we write: first line "# alis-output: <kind>" (any comment prefix)

# Formats of image outputs, by lower-case extension (the extension chooses the format).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WebP", ".exr": "EXR", ".hdr": "HDR"}
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp")  # 16 bits per channel: PNG only
FLOAT_FORMATS = (".exr", ".hdr")  # linear light, see alis_core.image.save_float_image

_ALWAYS_FORCE = ("checkpoint",)


def sniff_kind(path: PathLike) -> str | None:
    """The kind of output an existing file holds, from its first bytes; None if not ours/unknown."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head.startswith(b"\x76\x2f\x31\x01")
            or head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE")):
        return "image"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        return _safetensors_kind(path)  # safetensors: u64 header length, then a JSON header
    if head.lstrip()[:1] == b"{":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        kind = data.get(MARKER_KEY) if isinstance(data, dict) else None
        return kind if isinstance(kind, str) else None
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    if TEXT_MARKER in first:
        return first.split(TEXT_MARKER, 1)[1].strip() or None
    return None


def _safetensors_kind(path: PathLike) -> str:
    """"anchors" for an anchors file we wrote (metadata alis_output), else "checkpoint"."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if n <= 1 << 20 else {}
    except (OSError, ValueError):
        return "checkpoint"
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return "anchors" if isinstance(meta, dict) and meta.get(MARKER_KEY) == "anchors" else "checkpoint"


def check_replaceable(path: PathLike, kind: str, force: bool = False, option: str = "output") -> Path:
    """Refuse to write `path` unless it is missing or holds an output of `kind` (or `force`).

    Also refuses a folder in the way and a location that cannot be written. Call it before any
    work, so that a refusal costs nothing. `option` names the setting in the message (`--out`).
    Returns `path` as a Path.
    """
    path = Path(path)
    if path.is_dir():
        raise AlisError(f"{option} {path} is a folder; give a file name")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise AlisError(f"{option} {path} is not writable (check the folder and its permissions)")
    if not (path.exists() or path.is_symlink()) or force:
        return path
    found = sniff_kind(path)
    if found == kind and kind not in _ALWAYS_FORCE:
        return path
    what = f"a {found}" if found else "a file this command did not write"
    raise AlisError(f"{option} {path} already exists and is {what}, not {_article(kind)} output of this command; "
                    "choose another name, or pass --force to replace it")


def check_folder(path: PathLike, option: str = "output folder") -> Path:
    """A folder to write into: missing (created later) or an existing, writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlisError(f"{option} {path} exists and is not a folder; give a folder name")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise AlisError(f"{option} {path} is not writable (check the folder and its permissions)")
    return path


def check_image_path(path: PathLike, bits: int = 8, option: str = "--out",
                     formats: tuple[str, ...] = tuple(IMAGE_FORMATS)) -> str:
    """The lower-case extension of an image output, refusing formats outside `formats` and 16 bits
    in a format that only holds 8."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        names = ", ".join(sorted(set(formats)))
        raise AlisError(f"{option} {path}: the extension chooses the format; use one of {names}")
    if bits == 16 and suffix in EIGHT_BIT_ONLY:
        raise AlisError(f"{option} {path}: {IMAGE_FORMATS[suffix]} holds 8 bits per channel; "
                        "use a .png name for --bits 16, or drop --bits 16")
    return suffix


def _article(kind: str) -> str:
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


# ----------------------------------------------------------------------------------------------
# Atomic writers for the project's own JSON and text files (images: alis_core.image).

def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` atomically (temporary file in the same folder, then os.replace)."""
    from .image import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_json(path: PathLike, data: dict[str, Any], kind: str) -> Path:
    """Write a JSON object atomically, marked as our output of `kind` (the first key)."""
    body = {MARKER_KEY: kind, **{k: v for k, v in data.items() if k != MARKER_KEY}}
    return write_bytes(path, (json.dumps(body, indent=1) + "\n").encode("utf-8"))


def write_text(path: PathLike, text: str, kind: str, comment: str = "#") -> Path:
    """Write a text file atomically; its first line `<comment> alis-output: <kind>` marks it as ours."""
    return write_bytes(path, f"{comment} {TEXT_MARKER} {kind}\n{text}".encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# Memory bounds: outputs held in memory are refused up front when they cannot fit.

# Peak bytes per pixel, measured on the CPU (float32 images, float64 sampling coordinates) with
# a margin: the strip [3, H, W] with its copies (tiles, concatenation, [0, 1], quantising),
# strip_to_equirect per W^2 of its [3, W/2, W] output, equirect_to_cubemap + cross per S^2.
STRIP_BYTES_PER_PIXEL = 96
EQUIRECT_BYTES_PER_W2 = 24
CUBEMAP_BYTES_PER_S2 = 640


def strip_bytes(height: int, width: int) -> int:
    return STRIP_BYTES_PER_PIXEL * int(height) * int(width)


def equirect_bytes(width: int) -> int:
    return EQUIRECT_BYTES_PER_W2 * int(width) ** 2


def cubemap_bytes(face_size: int) -> int:
    return CUBEMAP_BYTES_PER_S2 * int(face_size) ** 2


def available_memory() -> int | None:
    """Bytes of memory the system can give now (Linux MemAvailable, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, hint: str) -> None:
    """Refuse work that needs more memory than is available: one line naming `what` and `hint`."""
    avail = available_memory()
    if avail is not None and needed > avail:
        raise AlisError(f"{what} needs about {_gb(needed)} of memory but {_gb(avail)} is available; {hint}")


def _gb(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


# ----------------------------------------------------------------------------------------------
# A folder that one run at a time writes into.

class FolderLock:
    """An exclusive lock file in a folder (O_CREAT | O_EXCL), naming the host and process holding it.

    A lock left by a process of this host that no longer runs is reported (`stale`) and taken
    over; a live one, or one from another host, is one clear error. Use as a context manager.
    """

    def __init__(self, folder: PathLike, option: str = "output folder", name: str = ".alis.lock"):
        self.path = Path(folder) / name
        self.option = option
        self.stale: str | None = None  # "host pid" of a dead owner this lock replaced

    def __enter__(self) -> "FolderLock":
        import socket
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("host") == me["host"] and not _pid_alive(owner.get("pid")):
                    self.stale = f"{owner.get('host')} pid {owner.get('pid')}"
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                who = f"{owner.get('host')} pid {owner.get('pid')}" if owner else "an unknown process"
                raise AlisError(f"{self.option} {self.path.parent} is in use by another alis run ({who}); wait for it, "
                                f"or delete {self.path} if that run is gone") from None
            except OSError as e:
                raise AlisError(f"{self.option} {self.path.parent} is not writable: {e.strerror or e}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            return self
        raise AlisError(f"{self.option}: cannot take the lock {self.path}; delete it if no alis run uses the folder")

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            return owner if isinstance(owner, dict) else None
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True
