"""`import alis_core` tunes the memory of a process it owns (one that has not imported torch yet)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocates 40 MB with malloc and reports how much of the heap glibc served by mmap (hblkhd):
# glibc maps anything above its mmap threshold (at most 32 MB unless raised) on its own.
PROBE = r"""
import ctypes, sys
ORDER = sys.argv[1].split(",")
for name in ORDER:
    __import__(name)
if "alis_core" in ORDER:
    import alis_core
    print("tuned" if alis_core.MALLOC_TUNED else "untouched")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
p = libc.malloc(40 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(ctypes.c_void_p(p))
"""


def _mmapped_bytes(order: str, **env) -> int:
    """Bytes glibc mmapped for a 40 MB malloc after importing the modules in `order`."""
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_",
                                                            "MALLOC_TRIM_THRESHOLD_")}
    r = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True, cwd=ROOT,
                       env={**base, **env}, check=True)
    *flag, mapped = r.stdout.split()
    assert flag == [] or flag[0] == ("tuned" if int(mapped) == 0 else "untouched")  # the flag tells the truth
    return int(mapped)


def _has_mallinfo2() -> bool:
    try:
        import ctypes
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33+")
def test_own_process_keeps_large_blocks_in_the_heap():
    assert _mmapped_bytes("torch") >= 40 << 20  # glibc's default: mapped on its own
    assert _mmapped_bytes("alis_core,torch") == 0  # `import alis_core` first: from the heap
    assert _mmapped_bytes("torch,alis_core") >= 40 << 20  # a host that imported torch first: left alone
    assert _mmapped_bytes("alis_core", GLIBC_TUNABLES="glibc.malloc.perturb=0") >= 40 << 20  # the user's settings win
