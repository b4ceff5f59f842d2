"""A library leaves the process alone; the `alis` command tunes its own process's memory.

`import alis_core` (and generating with it) must not touch os.environ or glibc's malloc settings:
ComfyUI, Blender or a notebook own their process. The CLI entry point (alis_core/entry.py) tunes
malloc and asks PyTorch for huge pages before torch is imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs one scenario, then allocates 40 MB with malloc and reports how much of it glibc served by
# mmap (hblkhd): by default glibc maps anything above its mmap threshold (at most 32 MB) on its own,
# a tuned process serves it from the heap.
PROBE = r"""
import ctypes, json, os, sys
env_before = dict(os.environ)
scenario = sys.argv[1]
if scenario == "library":
    import alis_core
    G = alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval()
    strip = alis_core.panorama(G, alis_core.sample_anchors(G, 3, seed=0), wrap=True, context=True)
    assert strip.shape[-1] == 3 * G.anchor_spacing
elif scenario == "cli":
    from alis_core import entry
    sys.argv = ["alis", "generate", "--checkpoint", "missing.safetensors"]
    assert entry.main() == 2  # the real command: tunes, imports torch and the CLI, reports the error
    assert "torch" in sys.modules
elif scenario == "torch-first":
    import torch
    from alis_core import entry
    assert entry.tune_process_memory() is False
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
p = libc.malloc(40 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(p))
changed = sorted(k for k in {*env_before, *os.environ} if env_before.get(k) != os.environ.get(k))
print(json.dumps({"mapped": mapped, "env_changed": changed}))
"""


def _probe(scenario: str, **env) -> dict:
    """{'mapped': bytes glibc mmapped for a 40 MB malloc, 'env_changed': variables the scenario changed}."""
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_",
                                                            "MALLOC_TRIM_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")}
    r = subprocess.run([sys.executable, "-c", PROBE, scenario], capture_output=True, text=True, cwd=ROOT,
                       env={**base, "PYTHONPATH": str(ROOT), **env}, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _has_mallinfo2() -> bool:
    try:
        import ctypes
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33+")


def test_the_library_leaves_the_process_alone():
    r = _probe("library")
    assert r["env_changed"] == []  # no THP_MEM_ALLOC_ENABLE, nothing else
    assert r["mapped"] >= 40 << 20  # glibc's default: a large block mapped on its own


def test_the_cli_tunes_its_own_process():
    r = _probe("cli")
    assert r["env_changed"] == ["THP_MEM_ALLOC_ENABLE"]  # set before torch read it
    assert r["mapped"] == 0  # served from the heap


def test_the_users_malloc_settings_win():
    r = _probe("cli", GLIBC_TUNABLES="glibc.malloc.perturb=0")
    assert r["mapped"] >= 40 << 20


def test_tuning_after_torch_is_a_no_op():
    r = _probe("torch-first")
    assert r["env_changed"] == [] and r["mapped"] >= 40 << 20
