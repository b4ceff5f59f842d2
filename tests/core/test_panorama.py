"""Panorama engine: geometry, streaming, exact wraparound, seam score, anchors."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from alis_testing import make_tiny

import alis_core
from alis_core import AlisError


def test_anchor_spacing_and_widths(tiny_G):
    sp = tiny_G.anchor_spacing
    assert sp == int(0.5 * tiny_G.config.w_coord_dist * tiny_G.img_resolution) == 128
    a = alis_core.sample_anchors(tiny_G, 4, seed=1)
    assert alis_core.panorama(tiny_G, a).shape == (3, 64, 3 * sp)
    assert alis_core.panorama(tiny_G, a, wrap=True).shape == (3, 64, 4 * sp)
    assert alis_core.panorama(tiny_G, a, width=200).shape == (3, 64, 200)


def test_streamed_tiles_equal_the_whole_panorama(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 5, seed=2)
    whole = alis_core.panorama(tiny_G, a, batch_size=8)
    tiles = list(alis_core.iter_panorama(tiny_G, a, batch_size=3, width=500))
    assert all(t.shape[2] <= 3 * tiny_G.config.patch_width for t in tiles)
    assert torch.allclose(torch.cat(tiles, 2), whole[:, :, :500], atol=1e-5)


_STREAM_MEMORY = r"""
import sys
import alis_core, torch
from alis_testing import randomize
keep = sys.argv[1] == "keep"
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))
G = randomize(alis_core.Generator(alis_core.GeneratorConfig.tiny(img_resolution=128)), 0).eval()
alis_core.kernels.warm_up()  # loading (or compiling) the optional kernels is no part of the width's cost
kept, out = [], []
with torch.inference_mode():
    for width in (16384, 65536):
        w = alis_core.sample_anchors(G, width // G.anchor_spacing, seed=0)
        for context in ((False,) if keep else (False, True)):
            for tile in alis_core.iter_panorama(G, w, wrap=True, batch_size=32, context=context):
                if keep:
                    kept.append(tile.double())  # twice the tile: far beyond the allocator's slack
        out.append(hwm())
print(*out)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("keep", [False, True])
def test_streamed_panorama_memory_does_not_grow_with_width(keep):
    """Peak resident memory of a process streaming 16384 px and then 65536 px panoramas of 128 px
    frames (with and without patch context): the wider ones may raise it by less than 40 MiB (the
    allocator's fragments; 0-25 MiB measured). A consumer that keeps the tiles (keep=True, as float64:
    192 MiB for the 65536 px panorama, more than the heap's reusable holes) must trip the same
    measurement."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "tests")]))
    r = subprocess.run([sys.executable, "-c", _STREAM_MEMORY, "keep" if keep else "drop"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    narrow, wide = (float(v) for v in r.stdout.split())
    if keep:
        assert wide - narrow > 100, (narrow, wide)
    else:
        assert wide - narrow < 40, (narrow, wide)


def test_rotating_anchors_rolls_the_loop_exactly():
    G = make_tiny(11)
    a = alis_core.sample_anchors(G, 5, seed=3)
    sp = G.anchor_spacing
    pano = alis_core.panorama(G, a, wrap=True, batch_size=4)
    for r in (1, 2):
        rolled = alis_core.panorama(G, torch.roll(a, -r, 0), wrap=True, batch_size=4)
        assert (torch.roll(pano, -r * sp, 2) - rolled).abs().max() <= 1e-5


def test_wrap_interval_equals_the_open_panorama_interval(tiny_G):
    """The closing interval (last anchor -> first) is an ordinary interval: render it open."""
    a = alis_core.sample_anchors(tiny_G, 3, seed=4)
    sp = tiny_G.anchor_spacing
    loop = alis_core.panorama(tiny_G, a, wrap=True)
    open_strip = alis_core.panorama(tiny_G, torch.cat([a[2:], a[:1]]))
    assert (loop[:, :, 2 * sp:] - open_strip).abs().max() <= 1e-3 * open_strip.abs().max()


def test_seam_score_detects_a_seam(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 4, seed=5)
    pw = tiny_G.config.patch_width
    loop = alis_core.panorama(tiny_G, a, wrap=True)
    closed = alis_core.seam_score(loop, pw)
    # cutting the loop anywhere else opens a seam that is not a patch boundary
    cut = torch.roll(loop, pw // 2, 2)
    assert alis_core.seam_score(cut, pw) > 0  # defined
    smooth = torch.linspace(-1, 1, 256).expand(3, 16, 256).clone()
    assert alis_core.seam_score(smooth) > 50  # a ramp has one huge jump at its seam
    assert alis_core.seam_score(torch.roll(torch.cat([smooth, smooth.flip(2)], 2), 0, 2)) < 2
    assert 0 < closed < 3


def test_progress_and_cancel(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 4, seed=6)
    calls = []
    alis_core.panorama(tiny_G, a, batch_size=5, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and [c[0] for c in calls] == sorted(c[0] for c in calls)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        alis_core.panorama(tiny_G, a, batch_size=2, progress=cancel)


def test_wrap_with_other_width_resamples_the_loop(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 3, seed=7)
    loop = alis_core.panorama(tiny_G, a, wrap=True, width=300)
    assert loop.shape == (3, 64, 300)


def test_bad_panorama_inputs(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 3, seed=8)
    with pytest.raises(AlisError, match="positive"):
        alis_core.panorama(tiny_G, a, width=0)
    with pytest.raises(AlisError, match="exceeds"):
        alis_core.panorama(tiny_G, a, width=10_000)
    with pytest.raises(AlisError, match="at least 2 anchors"):
        alis_core.panorama(tiny_G, a[:1], wrap=True)
    with pytest.raises(AlisError, match="anchors must be"):
        alis_core.panorama(tiny_G, torch.zeros(3, 5))


def test_anchors_are_seeded_and_device_independent(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 3, seed=9)
    assert torch.equal(a, alis_core.sample_anchors(tiny_G, 3, seed=9))
    assert not torch.equal(a, alis_core.sample_anchors(tiny_G, 3, seed=10))
    b = alis_core.anchors_from_seeds(tiny_G, [12, 7, 12])
    assert torch.equal(b[0], b[2]) and not torch.equal(b[0], b[1])
    assert alis_core.parse_seed_list(" 12, 7;99 ") == [12, 7, 99]
    with pytest.raises(AlisError, match="'x'"):
        alis_core.parse_seed_list("1,x")
    with pytest.raises(AlisError, match="psi"):
        alis_core.sample_anchors(tiny_G, 2, seed=0, truncation_psi=3)


def test_noise_modes_in_panoramas(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 3, seed=10)
    none = alis_core.panorama(tiny_G, a, noise_mode="none")
    const = alis_core.panorama(tiny_G, a, noise_mode="const")
    r1 = alis_core.panorama(tiny_G, a, noise_mode="random", noise_seed=1)
    assert not torch.equal(none, const)
    assert torch.equal(r1, alis_core.panorama(tiny_G, a, noise_mode="random", noise_seed=1))
    assert not torch.equal(r1, alis_core.panorama(tiny_G, a, noise_mode="random", noise_seed=2))


def test_patch_grid_score_sees_lines_at_patch_edges():
    x = torch.arange(256) * (2 * math.pi * 3 / 256)  # 3 periods over the strip: no seam, no grid
    smooth = torch.sin(x).expand(3, 4, 256).clone()
    assert 0.8 < alis_core.patch_grid_score(smooth, 16) < 1.25
    lined = smooth.clone()
    lined[:, :, 15::16] += 0.2  # a bright column at the right edge of every patch
    assert alis_core.patch_grid_score(lined, 16) > 3
    stepped = smooth + 0.5 * (torch.arange(256) // 16 % 2)  # alternate patches brighter
    assert alis_core.patch_grid_score(stepped, 16) > 2
    with pytest.raises(alis_core.AlisError, match="two patches"):
        alis_core.patch_grid_score(smooth[:, :, :20], 16)
