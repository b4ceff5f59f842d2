"""Procedural landscapes: determinism, shapes, continuation, loops, scene content."""
import time

import numpy as np
import pytest
import torch

from training.synthetic import (
    SyntheticLandscapes,
    fbm_1d,
    render_landscape,
    render_panorama,
    scene_params,
)


def _column_steps(img: np.ndarray) -> np.ndarray:
    """Mean absolute difference between neighbouring columns: [W - 1]."""
    a = img.astype(np.float64)
    return np.abs(a[:, 1:] - a[:, :-1]).mean(axis=(0, 2))


def _wrap_step(img: np.ndarray) -> float:
    a = img.astype(np.float64)
    return float(np.abs(a[:, 0] - a[:, -1]).mean())


def test_same_seed_same_pixels_different_seed_different_pixels():
    a = render_landscape(3, 48, 96)
    b = render_landscape(3, 48, 96)
    c = render_landscape(4, 48, 96)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5.0


@pytest.mark.parametrize("height,width", [(2, 1), (17, 33), (63, 250), (31, 7)])
def test_any_size_gives_uint8_rgb(height, width):
    img = render_landscape(11, height, width)
    assert img.shape == (height, width, 3) and img.dtype == np.uint8
    pano = render_panorama(11, height, width)
    assert pano.shape == (height, width, 3) and pano.dtype == np.uint8


def test_too_small_size_is_an_error():
    with pytest.raises(ValueError):
        render_landscape(0, 1, 10)


@pytest.mark.parametrize("seed", [0, 4, 7])  # a mist lake, a day lake, a night lake
def test_windows_continue_the_endless_strip(seed):
    h, w = 40, 72
    whole = render_landscape(seed, h, 3 * w, x0=-w)
    parts = [render_landscape(seed, h, w, x0=x0) for x0 in (-w, 0, w)]
    assert np.array_equal(whole, np.concatenate(parts, axis=1))


@pytest.mark.parametrize("seed", [1, 5, 8])
def test_periodic_landscape_repeats_every_period(seed):
    a = render_landscape(seed, 32, 50, x0=-20, period=90)
    b = render_landscape(seed, 32, 50, x0=70, period=90)
    assert np.array_equal(a, b)


def test_periodic_strip_closes_into_a_loop():
    seam_periodic, seam_open = [], []
    for seed in range(8):
        pano = render_panorama(seed, 48, 192)
        steps = _column_steps(pano)
        wrap = _wrap_step(pano)
        # The wrap seam is an ordinary column step of the loop.
        assert wrap <= np.quantile(steps, 0.98) + 1.0, (seed, wrap, np.quantile(steps, 0.98))
        seam_periodic.append(wrap / (steps.mean() + 1e-6))
        open_strip = render_panorama(seed, 48, 192, periodic=False)
        seam_open.append(_wrap_step(open_strip) / (_column_steps(open_strip).mean() + 1e-6))
    # Without periodic=True the ends do not meet (this is what makes the check above meaningful).
    assert np.median(seam_open) > 3 * np.median(seam_periodic)


def test_noise_is_periodic_and_continuous():
    u = np.linspace(0.0, 2.5, 501)
    n = fbm_1d(u, 123, 1.3, 6, period=2.5)
    assert abs(float(n[0] - n[-1])) < 1e-5                 # u = 0 and u = period coincide
    assert np.abs(np.diff(n)).max() < 0.2                   # no jumps between samples


def test_scenes_vary_across_seeds():
    params = [scene_params(s) for s in range(80)]
    assert {p.palette for p in params} == {"day", "golden", "dusk", "night", "mist"}
    lakes = sum(p.water_line is not None for p in params)
    assert 10 < lakes < 70
    assert len({len(p.layers) for p in params}) >= 2
    assert any(layer.snow_line is not None for p in params for layer in p.layers)


def test_night_scenes_are_darker_than_day_scenes():
    params = {s: scene_params(s) for s in range(40)}
    night = [s for s, p in params.items() if p.palette == "night"][:3]
    day = [s for s, p in params.items() if p.palette == "day"][:3]
    assert len(night) == 3 and len(day) == 3
    mean = lambda seeds: np.mean([render_landscape(s, 32, 64).mean() for s in seeds])  # noqa: E731
    assert mean(night) < 0.4 * mean(day)


def test_lake_mirrors_the_shore():
    # Rows just below the water line repeat the rows just above it (darkened, rippled).
    mirrored, unrelated = [], []
    h = 128
    for seed in range(30):
        p = scene_params(seed)
        if p.water_line is None:
            continue
        img = render_landscape(seed, h, 192).astype(np.float64).mean(axis=2)
        wl = p.water_line * h
        for d in (3, 5):
            below, above, far_above = img[int(wl + d)], img[int(wl - d)], img[int(wl - d - 20)]
            mirrored.append(np.corrcoef(above, below)[0, 1])
            unrelated.append(np.corrcoef(far_above, below)[0, 1])
    assert len(mirrored) >= 8
    assert np.median(mirrored) > 0.8
    assert np.median(mirrored) > np.median(unrelated) + 0.3


def test_render_is_fast():
    render_panorama(2, 128, 512)                            # warm-up
    best = min(_timed(lambda: render_panorama(2, 128, 512)) for _ in range(3))
    assert best < 0.25, f"128 x 512 took {best:.3f} s"      # typically ~0.03 s


def _timed(fn) -> float:
    t = time.process_time()  # CPU time: robust to other processes sharing the machine
    fn()
    return time.process_time() - t


def test_synthetic_landscapes_dataset():
    ds = SyntheticLandscapes(37, 10, seed=5)
    assert len(ds) == 10
    x = ds[3]
    assert x.shape == (3, 37, 37) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.05
    assert torch.equal(x, SyntheticLandscapes(37, 10, seed=5)[3])
    assert not torch.equal(x, SyntheticLandscapes(37, 10, seed=6)[3])
    # Consecutive frames are different crops of a shared scene.
    assert not torch.equal(ds[0], ds[1])
    assert scene_params(ds.strip_seed(0)).palette == scene_params(ds.strip_seed(1)).palette
    with pytest.raises(IndexError):
        ds[10]
