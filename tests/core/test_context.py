"""Context rendering: strips computed with their neighbouring columns equal one convolution over
the whole panorama, so patch edges disappear, while the loop stays exact."""
from __future__ import annotations

import pytest
import torch
from alis_testing import make_tiny

import alis_core
from alis_core import AlisError
from alis_core.context import CONTEXT_MARGIN
from alis_core.panorama import PanoramaPlan


def _strip(G, plan: PanoramaPlan, patches: range, margin: int, noise: str = "none", grad: bool = False) -> torch.Tensor:
    ws, lb, slot = plan.strip(patches, margin)
    with torch.set_grad_enabled(grad):
        out = G.patches(ws, [lb], [slot], noise_mode=noise, canonical=True, margin=margin, span=len(patches))
    return out[0].detach()


# exact: the official order of operations; fast: the fused CPU path; fast-unfused: the fast path
# as it runs on GPUs (and in training: with gradients on); winograd4/2: the fused path with every
# 3x3 convolution whose size allows it by Winograd F(4x4) or F(2x2), chunks of 8 tiles; kernels:
# every float32 layer the compiled kernels take (their Winograd, their upsampling), in small chunks
@pytest.mark.parametrize("mode", ["exact", "fast", "fast-unfused", "winograd4", "winograd2", "kernels"])
@pytest.mark.parametrize("noise", ["none", "const"])
def test_strips_with_context_equal_one_strip_over_everything(mode, noise, monkeypatch):
    kernel_calls = []
    if mode == "kernels":
        if not alis_core.kernels.available():
            pytest.skip("numba (the `fast` extra) is not installed")
        for name in ("KERNEL_MIN_WORK", "KERNEL_WINOGRAD_MIN_CHANNELS", "KERNEL_WINOGRAD_MIN_PIXELS",
                     "KERNEL_UPSAMPLING_MIN_PIXELS"):
            monkeypatch.setattr(alis_core.cpu.plan, name, 0)
        monkeypatch.setattr(alis_core.cpu.plan, "SMALL_DECONV_PIXELS", 10 ** 9)
        monkeypatch.setattr(alis_core.kernels, "WINOGRAD_CHUNK_BYTES", 1)  # one tile row per chunk
        monkeypatch.setattr(alis_core.kernels, "DECONV_CHUNK_BYTES", 1)  # one input row per chunk
        for name in ("conv3x3_winograd_f32", "deconv_up2_f32"):
            f = getattr(alis_core.kernels, name)
            monkeypatch.setattr(alis_core.kernels, name,
                                lambda *a, f=f, name=name, **k: kernel_calls.append(name) or f(*a, **k))
        skip = alis_core.kernels.torgb_skip  # strips across anchors: each column's anchors given
        monkeypatch.setattr(alis_core.kernels, "torgb_skip",
                            lambda *a: kernel_calls.append("torgb_skip" + ("" if len(a) < 7 else "-left")) or skip(*a))
    else:
        monkeypatch.setattr(alis_core.kernels, "_impl", False)
    if mode.startswith("winograd"):
        for m, name in ((4, "WINOGRAD"), (2, "WINOGRAD2")):
            on = 0 if mode == f"winograd{m}" else 10 ** 9
            monkeypatch.setattr(alis_core.cpu.plan, name + "_MIN_CHANNELS", on)
            monkeypatch.setattr(alis_core.cpu.plan, name + "_MIN_PIXELS", on)
        monkeypatch.setattr(alis_core.layers, "WINOGRAD_CHUNK_TILES", 8)
        monkeypatch.setattr(alis_core.layers, "WINOGRAD_CHUNK_MIN_RATIO", 0)
    winograd = alis_core.cpu.fused.conv3x3_winograd
    tiles = []
    monkeypatch.setattr(alis_core.cpu.fused, "conv3x3_winograd",
                        lambda x, ww, *a, **k: tiles.append(ww.shape[0]) or winograd(x, ww, *a, **k))
    G = make_tiny(5)
    G.fast = mode != "exact"
    grad = mode == "fast-unfused"
    plan = PanoramaPlan(G, alis_core.sample_anchors(G, 3, seed=4), wrap=True, width=None)
    n = plan.num_patches
    whole = _strip(G, plan, range(n), 4 * CONTEXT_MARGIN, noise, grad)  # more context than any column reaches
    for size in (1, 2, 3):
        parts = torch.cat([_strip(G, plan, range(i, min(i + size, n)), CONTEXT_MARGIN, noise, grad)
                           for i in range(0, n, size)], dim=2)
        assert (parts - whole).abs().max() <= 1e-5
    # 6 columns are the least that is exact (CONTEXT_MARGIN is 8 for speed); 4 are not enough.
    for margin, exact in ((6, True), (4, False)):
        parts = torch.cat([_strip(G, plan, range(i, i + 2), margin, noise, grad) for i in range(0, n, 2)], dim=2)
        assert ((parts - whole).abs().max() <= 1e-5) == exact
    assert set(tiles) == ({36} if mode == "winograd4" else {16} if mode == "winograd2" else set())
    used = {"conv3x3_winograd_f32", "deconv_up2_f32", "torgb_skip-left"} if mode == "kernels" else set()
    assert used <= set(kernel_calls) <= used | ({"torgb_skip"} if used else set())  # (strips within one interval)


def test_context_panorama_is_tiling_independent_and_rolls_exactly():
    G = make_tiny(11)
    a = alis_core.sample_anchors(G, 5, seed=3)
    sp = G.anchor_spacing
    pano = alis_core.panorama(G, a, wrap=True, batch_size=4, context=True)
    assert pano.shape == (3, 64, 5 * sp)
    # other tilings compute the same columns in tensors of other widths: float rounding only
    # (these random weights drive activations to the clamp, which magnifies it)
    for bs in (1, 3):
        assert (alis_core.panorama(G, a, wrap=True, batch_size=bs, context=True) - pano).abs().max() <= 1e-4
    for r in (1, 2):  # strips of 4 patches start on anchors: the same computations, rolled
        rolled = alis_core.panorama(G, torch.roll(a, -r, 0), wrap=True, batch_size=4, context=True)
        assert (torch.roll(pano, -r * sp, 2) - rolled).abs().max() <= 1e-6
    # It is not the paper's patchwise rendering: the columns at patch edges differ.
    assert (alis_core.panorama(G, a, wrap=True, batch_size=4) - pano).abs().max() > 1e-2


def test_context_without_wrap_streams_and_crops(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 4, seed=2)
    whole = alis_core.panorama(tiny_G, a, context=True)
    assert whole.shape == (3, 64, 3 * tiny_G.anchor_spacing)
    tiles = list(alis_core.iter_panorama(tiny_G, a, batch_size=3, width=300, context=True))
    assert sum(t.shape[2] for t in tiles) == 300
    assert (torch.cat(tiles, 2) - whole[:, :, :300]).abs().max() <= 1e-5


def test_context_hides_the_patch_grid_of_the_default_model():
    """The bundled model draws thin lines at its patch edges when patches are computed apart (the
    paper's zero padding); with context its patch edges look like any other column."""
    G = alis_core.load_generator(fast=True)
    pw = G.config.patch_width
    for seed in (0, 1):
        a = alis_core.sample_anchors(G, 2, seed=seed)
        assert alis_core.patch_grid_score(alis_core.panorama(G, a, wrap=True), pw) > 2.0
        assert alis_core.patch_grid_score(alis_core.panorama(G, a, wrap=True, context=True), pw) < 1.2


def test_odd_margins_and_missing_anchors_are_refused(tiny_G):
    plan = PanoramaPlan(tiny_G, alis_core.sample_anchors(tiny_G, 3, seed=0), wrap=True, width=None)
    ws, lb, slot = plan.strip(range(0, 2), CONTEXT_MARGIN)
    with pytest.raises(AlisError, match="even"):
        tiny_G.patches(ws, [lb], [slot], margin=CONTEXT_MARGIN + 1, span=2)
    with pytest.raises(AlisError, match="outside its anchor window"):
        tiny_G.patches(ws[:, :, :3], [lb], [slot], margin=CONTEXT_MARGIN, span=2)


def test_context_of_a_model_without_periodic_coordinates_is_tiling_independent_too():
    G = make_tiny(0, w_coord_dist=2.0)  # two patches per anchor interval: coordinates not periodic
    assert not G.synthesis.periodic
    a = alis_core.sample_anchors(G, 3, seed=1)
    pano = alis_core.panorama(G, a, wrap=True, context=True, batch_size=1)
    for bs in (2, 3):
        assert (alis_core.panorama(G, a, wrap=True, context=True, batch_size=bs) - pano).abs().max() <= 1e-4
