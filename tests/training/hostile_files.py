"""Hostile data files for the dataset and bad-input tests (built on the fly, tiny on disk)."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def make_png(w: int = 40, h: int = 30, seed: int = 0) -> bytes:
    """A small ordinary RGB PNG."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()


def fuzzed_tiff(entry_type: int = 2) -> bytes:
    """An 80x64 RGB TIFF whose StripOffsets entry has its field type changed, as a fuzzer does:
    type 2 (ASCII) makes Pillow raise TypeError, type 16 OverflowError (neither is an OSError)."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(b, "TIFF")
    data = bytearray(b.getvalue())
    assert data[:2] == b"II"
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == 273:  # StripOffsets
            data[entry + 2:entry + 4] = struct.pack("<H", entry_type)
            return bytes(data)
    raise AssertionError("no StripOffsets entry")


def bomb_png(w: int = 13000, h: int = 13000) -> bytes:
    """A valid 1-bit PNG of w x h pixels (169 Mpx by default): ~20 KB on disk, 507 MB as RGB."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = bytes(1 + (w + 7) // 8)  # filter byte 0, then all-black pixels
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def zip_declaring(path, name: str, size: int, payload: bytes) -> None:
    """A zip whose one member `name` declares `size` bytes uncompressed (a zip bomb's directory entry)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, payload)
    data = bytearray(open(path, "rb").read())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22:local + 26] = struct.pack("<I", size)
    data[central + 24:central + 28] = struct.pack("<I", size)
    open(path, "wb").write(bytes(data))


def damaged_lzw_tiff() -> bytes:
    """An 80x64 LZW TIFF with the start of its strip inverted: libtiff fails it and prints its own
    lines ("Using code not yet in table") on file descriptor 2."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
        b, "TIFF", compression="tiff_lzw")
    data = bytearray(b.getvalue())
    for i in range(8, 48):  # Pillow writes the strip right after the 8-byte header
        data[i] ^= 0xFF
    return bytes(data)
