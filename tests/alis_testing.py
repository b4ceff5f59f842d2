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


def check_official_outputs(G: Generator, t: dict, tol: float = 1e-4, rel: float = 0.0) -> None:
    """G (on any device) against the outputs the official code recorded in fixture `t`: mapping,
    truncation, frames in both deterministic noise modes and, where recorded, the panorama.
    Errors are measured in units of max(1, rel * max |reference|) (`rel` for other devices' rounding
    of outputs in the hundreds)."""
    import alis_core

    def err(a, b):
        return float((a.detach().cpu() - b).abs().max()) / max(1.0, rel * float(b.abs().max()))

    assert err(G.map(t["in.z"]), t["out.ws"]) <= tol
    assert err(G.map(t["in.z"], truncation_psi=0.7), t["out.ws_psi0.7"]) <= tol
    ctx = t["in.ws_context"]
    for mode in ("none", "const"):
        frame = G.frame(ctx[:, 0], t["out.ws"], ctx[:, 1], t["in.left_borders_idx"], noise_mode=mode)
        e = err(frame, t[f"out.img_noise_{mode}"])
        assert e <= tol, f"noise {mode}: max abs error {e}"
    if "out.panorama" in t:
        assert err(G.map(t["in.panorama_z"]), t["out.panorama_ws"]) <= tol
        pano = alis_core.panorama(G, t["out.panorama_ws"])
        assert pano.shape == t["out.panorama"].shape
        assert err(pano, t["out.panorama"]) <= tol


def direction_sky(h: int):
    """A [3, h, 2h] equirect whose colour is its direction: RGB = (d + 1) / 2, d the unit vector in
    Blender's world (z up; u = 0.5 - azimuth / 360, the project's convention), written by hand."""
    import numpy as np
    w = 2 * h
    u = (np.arange(w) + 0.5) / w
    t = (np.arange(h) + 0.5) / h
    az = (0.5 - u)[None, :] * 2 * np.pi
    el = (0.5 - t)[:, None] * np.pi
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) + 0 * az])
    return torch.from_numpy((d + 1) / 2).float()
