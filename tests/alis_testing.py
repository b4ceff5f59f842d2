"""Test helpers shared by tests and benchmarks: tiny models with every parameter randomised,
so that no term of the model hides. (Not named conftest: pytest has one conftest per folder.)"""
from __future__ import annotations

from pathlib import Path

import torch

from alis_core import Generator, GeneratorConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter and noise buffer with seeded random values of a sensible scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if name.endswith(("weight", "input_column")) else 0.1
            if name.startswith("mapping.") and name.endswith("weight"):
                scale = 1.0 / getattr(module, "config").mapping_lr_multiplier  # weights run scaled by lr_mul
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for name, b in module.named_buffers():
            if name.endswith(("noise_const", "w_avg")):
                b.copy_(torch.randn(b.shape, generator=g) * (1.0 if "noise" in name else 0.1))
    return module


def make_tiny(seed: int = 0, **overrides) -> Generator:
    G = Generator(GeneratorConfig.tiny(**overrides))
    return randomize(G, seed).eval().requires_grad_(False)
