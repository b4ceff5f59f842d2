"""Shared pytest fixtures (helpers live in alis_testing.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

import alis_core
from alis_core import Generator
from alis_testing import FIXTURES, make_tiny


@pytest.fixture(autouse=True)
def _fresh_cpu_fallbacks(monkeypatch):
    """Each test starts with every CPU fast path on, whatever an earlier test made fail (a float16
    frame on a CPU without float16 convolutions, a kernel made to fail), and leaves none off."""
    from alis_core import kernels
    from alis_core.cpu import plan
    monkeypatch.setattr(plan, "FAILED", set())
    monkeypatch.setattr(kernels, "_impl", kernels._impl)


@pytest.fixture(params=["pytorch", "kernels"])
def bf16_path(request, monkeypatch) -> str:
    """Runs a test on each CPU path: PyTorch operations only, and with the compiled kernels
    (`alis_core.kernels`, numba; bfloat16 and float32) where they are installed (CI installs them)."""
    from alis_core import kernels
    from alis_core.cpu import plan
    if request.param == "kernels":
        if not kernels.available():
            pytest.skip("numba (the `fast` extra) is not installed")
        monkeypatch.setattr(plan, "KERNEL_MIN_WORK", 0)  # the small test models too
    else:
        monkeypatch.setattr(kernels, "_impl", False)
    return request.param


@pytest.fixture(scope="session")
def tiny_G() -> Generator:
    """A random 64 px generator (2 patches of 32 px per frame, anchors 128 px apart)."""
    return make_tiny(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_G) -> Path:
    """tiny_G saved as one of our .safetensors checkpoints."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    alis_core.save_generator(tiny_G, path)
    return path


@pytest.fixture(scope="session")
def official_fixture() -> dict:
    from safetensors.torch import load_file
    return load_file(str(FIXTURES / "official_tiny64.safetensors"))
