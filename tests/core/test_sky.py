"""Full-sphere skies (alis_core.sky): sun, dome continuity, ground, fits, calibration, sidecar."""
import functools
import json
import math

import pytest
import torch

import alis_core
from alis_core.errors import AlisError
from alis_core.image import srgb_to_linear
from alis_core.projection import strip_to_equirect
from alis_core.sky import (SUN_ANGULAR_DIAMETER_DEG, SkyInfo, complete_sky, read_sky_json, tone_map,
                           write_sky_json)
from training.synthetic import render_panorama, scene_params

LUMA = torch.tensor([0.2126, 0.7152, 0.0722])
SEEDS = {"day": 2, "dusk": 1, "night": 0}  # synthetic landscapes of each palette (checked below)


@functools.lru_cache(maxsize=None)
def synthetic_strip(palette: str) -> torch.Tensor:
    """A 360° synthetic strip [3, 128, 1536] in [0, 1] with the given palette."""
    seed = SEEDS[palette]
    assert scene_params(seed, 12.0).palette == palette
    img = render_panorama(seed, 128, 1536)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


@functools.lru_cache(maxsize=None)
def alis_strip() -> torch.Tensor:
    """A wrapped strip of the bundled model: [3, 128, 1536] in [0, 1]."""
    G = alis_core.load_generator()
    anchors = alis_core.sample_anchors(G, 6, seed=1)
    with torch.inference_mode():
        return alis_core.to_unit(alis_core.panorama(G, anchors, wrap=True)).clone()


@functools.lru_cache(maxsize=None)
def sky(source: str, **kwargs):
    """complete_sky of a test strip ("alis" or a palette), computed once per argument set (the
    results are pure functions of the arguments; tests only read them)."""
    strip = alis_strip() if source == "alis" else synthetic_strip(source)
    return complete_sky(strip, **kwargs)


def lum(x):
    return torch.einsum("c,c...->...", LUMA, x)


def row_elevations(height):  # degrees, row centres
    return (0.5 - (torch.arange(height, dtype=torch.float64) + 0.5) / height) * 180


def pixel_solid_angles(height):  # [H], independent of the module
    edges = (0.5 - torch.arange(height + 1, dtype=torch.float64) / height) * math.pi
    return (edges[:-1].sin() - edges[1:].sin()) * (math.pi / height)


def band_rows(info, height):
    """First band row and the row after it, from the elevations SkyInfo reports."""
    low, high = info.band_elevation_deg
    return round((0.5 - high / 180) * height), round((0.5 - low / 180) * height)


# ----------------------------------------------------------------------------------------------
# The sun

def test_explicit_sun_is_a_disk_of_the_right_size_direction_and_strength():
    strip = synthetic_strip("day")
    height = 1024  # 0.18° pixels: the 0.53° disk covers a few of them
    hdr, info = sky("day", height=height, sun=(60, 30))
    bare, info_bare = sky("day", height=height, sun=(60, 30), sun_disk=False)
    assert hdr.shape == (3, height, 2 * height) and hdr.dtype == torch.float32
    s = info.sun
    assert (s.azimuth_deg, s.elevation_deg) == (60, 30) and s.visible and s.source == "explicit"
    assert s.angular_diameter_deg == SUN_ANGULAR_DIAMETER_DEG
    expect = (math.cos(math.radians(30)) * math.cos(math.radians(60)),
              math.cos(math.radians(30)) * math.sin(math.radians(60)), math.sin(math.radians(30)))
    assert max(abs(a - b) for a, b in zip(s.direction, expect)) < 1e-9
    assert info_bare.sun == s  # sun_disk=False keeps the sun in SkyInfo

    # Brightest pixel within 3° of (60°, 30°), with the project's u = 0.5 - azimuth / 360.
    y = lum(hdr)
    row, col = divmod(int(y.argmax()), 2 * height)
    az = (0.5 - (col + 0.5) / (2 * height)) * 360
    el = float(row_elevations(height)[row])
    d = math.degrees(math.acos(min(1.0, math.sin(math.radians(el)) * 0.5 + math.cos(math.radians(el))
                                   * math.cos(math.radians(30)) * math.cos(math.radians(az - 60)))))
    assert d < 3, (az, el)

    # A true dynamic range: the sun is >= 1000x the upper hemisphere's median.
    upper = row_elevations(height) > 0
    assert float(y.max()) >= 1000 * float(y[upper].median())

    # The disk alone: its solid angle and integrated radiance.
    disk = lum(hdr - bare)
    omega = pixel_solid_angles(height)[:, None]
    integral = float((disk.double() * omega).sum())
    solid = integral / float(disk.max())
    r = math.radians(s.angular_diameter_deg / 2)
    assert abs(solid / (2 * math.pi * (1 - math.cos(r))) - 1) < 0.2
    assert abs(integral / s.irradiance - 1) < 0.1
    assert (hdr - bare).min() >= 0 and int((disk > 0).sum()) < 100  # only the disk differs

    # Sun : sky like an outdoor HDRI: on a surface facing the sun 2-20x the sky on a horizontal one.
    sin_el = torch.sin(torch.deg2rad(row_elevations(height)))[:, None]
    sky_horizontal = float((lum(bare).double() * sin_el * omega)[upper].sum())
    assert 2 <= s.irradiance / sky_horizontal <= 20

    # Exact wrap: the seam is no bigger a step than any other pair of neighbouring columns.
    logy = lum(bare).clamp(min=1e-8).log()
    seam = (logy[:, 0] - logy[:, -1]).abs().mean()
    interior = (logy[:, 1:] - logy[:, :-1]).abs().mean()
    assert seam < 1.5 * interior, (seam, interior)


def test_auto_sun_finds_the_painted_sun_and_night_has_none():
    strip = synthetic_strip("day")
    p = scene_params(SEEDS["day"], 12.0)
    hdr, info = sky("day")
    assert info.sun is not None and info.sun.source == "auto" and info.sun.visible
    # The painted sun: strip column sun_u * 128 (frame heights), row sun_v * 128 of a 30° band.
    col, row = p.sun_u * 128, p.sun_v * 128
    assert abs(((0.5 - col / 1536) * 360 - info.sun.azimuth_deg + 180) % 360 - 180) < 1.5
    assert abs((15 - row / 128 * 30) - info.sun.elevation_deg) < 1.5
    _, night = sky("night")
    assert night.sun is None
    white_top = strip.clone()
    white_top[:, :40] = 1.0  # a clipped, overcast sky: bright everywhere, no compact sun
    assert complete_sky(white_top, height=256)[1].sun is None


def test_sun_at_the_zenith_and_on_the_projection_axes():
    """The sun's azimuth follows projection.py: azimuth 90° is Blender +Y, the cube map's +Z face."""
    from alis_core.projection import equirect_to_cubemap
    strip = synthetic_strip("day")
    hdr, info = complete_sky(strip, height=256, sun=(90, 40))
    faces = equirect_to_cubemap(hdr, 64)  # faces +X, -X, +Y (up), -Y, +Z (Blender +Y), -Z
    assert int(lum(faces.transpose(0, 1)).flatten(1).max(1).values.argmax()) == 4
    hdr, info = complete_sky(strip, height=256, sun=(0, 90))
    assert bool(torch.isfinite(hdr).all()) and info.sun.visible
    assert max(abs(a - b) for a, b in zip(info.sun.direction, (0, 0, 1))) < 1e-12
    assert int(lum(hdr).argmax()) // 512 == 0  # in the top row


def test_a_sun_behind_the_ground_is_kept_but_not_drawn():
    strip = synthetic_strip("day")
    hdr, info = sky("day", sun=(30, -5))
    bare, _ = sky("day", sun=(30, -5), sun_disk=False)
    assert info.sun is not None and not info.sun.visible and info.sun.irradiance > 0
    assert torch.equal(hdr, bare)
    none, info_none = sky("day", sun="none")
    assert info_none.sun is None and float(none.max()) <= 2.0  # no disk: the band's white is the top


# ----------------------------------------------------------------------------------------------
# Dome and ground

@pytest.mark.parametrize("source", ["alis", "day", "dusk"])
def test_band_flows_into_the_dome_without_an_edge(source):
    hdr, info = sky(source, sun="none")
    top, _ = band_rows(info, hdr.shape[1])
    logy = lum(hdr).clamp(min=1e-8).log()
    step = (logy[top - 1] - logy[top]).abs()  # [W] across the band's top edge
    dome_steps = (logy[1:top] - logy[:top - 1]).abs()
    dome_median = float(dome_steps.median())
    band_steps = (logy[top:top + 3] - logy[top + 1:top + 4]).abs().mean(0)  # just below its top
    ok = (step <= 3 * dome_median) | (step <= 2 * band_steps)
    assert float(ok.float().mean()) >= 0.95, (float(ok.float().mean()), dome_median)


@pytest.mark.parametrize("source", ["alis", "day", "dusk"])
def test_ground_continues_the_band_in_perspective_without_a_pinch(source):
    hdr, info = sky(source, sun="none")
    height = hdr.shape[1]
    _, bottom = band_rows(info, height)
    el = row_elevations(height)
    low = info.band_elevation_deg[0]
    logy = lum(hdr).clamp(min=1e-8).log()

    def fine(rows):  # high-pass energy: squared differences of neighbouring columns (log luminance)
        return float((logy[rows] - logy[rows].roll(1, -1)).pow(2).mean())

    band_bottom = torch.arange(bottom - 4, bottom)
    ground = ((el <= low - 5) & (el >= low - 25)).nonzero().flatten()
    assert fine(ground) >= 0.25 * fine(band_bottom), (fine(ground), fine(band_bottom))
    # Colours from the band: the ground's mean chromaticity is the band's bottom rows'.
    def chroma(rows):
        m = hdr[:, rows].double().mean((1, 2))
        return m / m.sum()
    assert (chroma(ground) - chroma(band_bottom)).abs().max() < 0.03

    # Around the nadir: no pinch (the last row is one colour) and no radial streaks (along a
    # row, colours change no faster than the band's do, and the pattern does not repeat row to row).
    nadir = (el <= -80).nonzero().flatten()
    last = hdr[:, -1]
    assert float((last.max(-1).values - last.min(-1).values).max()) <= 0.1 * float(last.mean())
    assert fine(nadir) <= 0.5 * fine(band_bottom), (fine(nadir), fine(band_bottom))
    hp = logy[nadir] - logy[nadir].mean(-1, keepdim=True)
    a, b = hp[: len(nadir) // 2].mean(0), hp[len(nadir) // 2:].mean(0)
    streaks = float((a * b).mean() / (a.pow(2).mean() * b.pow(2).mean()).sqrt().clamp(min=1e-12))
    assert streaks < 0.5 or float(hp.pow(2).mean()) < 1e-4


def test_fits_follow_the_band_dusk_stays_warm():
    def blue_over_red(x):
        m = x.double().mean((1, 2))
        return float(m[2] / m[0])

    for palette in ("day", "dusk", "night"):
        hdr, info = sky(palette, sun="none")
        top, _ = band_rows(info, hdr.shape[1])
        dome = hdr[:, :top]
        band_sky = hdr[:, top:top + 8]
        # The dome keeps the band's colour balance (a clear zenith is somewhat bluer than 15°
        # up; a forced noon sky over a dusk band would be 4x bluer), whatever the time of day.
        assert abs(math.log(blue_over_red(dome) / blue_over_red(band_sky))) < math.log(1.8), palette
        if palette == "day":
            assert blue_over_red(dome) > 1.2
        if palette == "dusk":  # no blue noon dome: far redder than the day's
            day, day_info = sky("day", sun="none")
            assert blue_over_red(dome) < 0.5 * blue_over_red(day[:, :band_rows(day_info, day.shape[1])[0]])


# ----------------------------------------------------------------------------------------------
# Calibration, compatibility, sidecar, errors

@pytest.mark.parametrize("exposure", [0.0, 1.5])
def test_tone_map_gives_back_the_band(exposure):
    strip = alis_strip()
    hdr, info = sky("alis", exposure=exposure)
    top, bottom = band_rows(info, hdr.shape[1])
    assert bottom - top == strip.shape[1] and info.band_elevation_deg == pytest.approx((-15, 15))
    assert info.exposure == exposure
    back = tone_map(hdr, info.exposure)[:, top:bottom]
    if info.sun is not None:  # the drawn disk is the only change
        bare, _ = sky("alis", exposure=exposure, sun_disk=False)
        back = tone_map(bare, exposure)[:, top:bottom]
    assert float((back - strip).abs().max()) <= 2.5 / 255


def test_blur_sky_is_todays_fill_linearised():
    strip = synthetic_strip("dusk")
    hdr, info = complete_sky(strip, sky="blur", sun="none")
    eq = strip_to_equirect(strip).clamp(0, 1)
    assert info.sun is None and info.sky == "blur"
    torch.testing.assert_close(tone_map(hdr), eq, atol=5e-4, rtol=0)  # 1/8 of an 8-bit level
    linear = srgb_to_linear(eq)
    below = linear <= 0.8  # below the shoulder the calibration is the plain sRGB decoding
    torch.testing.assert_close(hdr[below], linear[below])
    # The physical sky places the band exactly where the blurred one does.
    phys, _ = sky("dusk", sun="none")
    top, bottom = band_rows(info, hdr.shape[1])
    assert torch.equal(phys[:, top:bottom], hdr[:, top:bottom])


@pytest.mark.parametrize("horizon, strip_scale", [(0.3, 1.0), (0.62, 2.0), (0.5, 0.1)])
def test_band_anywhere_gives_a_finite_closed_sphere(horizon, strip_scale):
    """A band above the horizon, a tall band below it, a thin one: the dome and the ground
    adapt (their planes' horizons follow the band's edges) and stay finite and seamless."""
    hdr, info = sky("dusk", height=256, horizon=horizon, strip_scale=strip_scale, sun="none")
    assert hdr.shape == (3, 256, 512) and bool(torch.isfinite(hdr).all()) and float(hdr.min()) > 0
    low, high = info.band_elevation_deg
    assert high - low == pytest.approx(30 * strip_scale, abs=0.5)
    assert (low + high) / 2 == pytest.approx(90 - 180 * horizon, abs=0.5)
    logy = lum(hdr).log()
    seam = (logy[:, 0] - logy[:, -1]).abs().mean()
    assert seam < 1.5 * (logy[:, 1:] - logy[:, :-1]).abs().mean()


def test_height_resamples_the_strip_round_the_loop():
    strip = synthetic_strip("day")
    hdr, info = complete_sky(strip, height=512, sun="none")
    assert hdr.shape == (3, 512, 1024) and info.height == 512
    top, bottom = band_rows(info, 512)
    assert bottom - top == round(128 * 1024 / 1536)
    logy = lum(hdr).clamp(min=1e-8).log()
    seam = (logy[:, 0] - logy[:, -1]).abs().mean()
    interior = (logy[:, 1:] - logy[:, :-1]).abs().mean()
    assert seam < 1.5 * interior


def test_sidecar_json_round_trip(tmp_path):
    _, info = sky("day", sun=(60, 30), exposure=0.5)
    path = write_sky_json(tmp_path / "sky.exr", info, model="default", seeds=[3, 4])
    assert path == tmp_path / "sky.json"
    d = json.loads(path.read_text())
    assert d["format"] == "alis-sky" and d["model"] == "default" and d["seeds"] == [3, 4]
    assert d["sun"]["azimuth_deg"] == 60 and len(d["sun"]["direction"]) == 3 and d["exposure"] == 0.5
    back = read_sky_json(path)
    assert back == SkyInfo(**{**info.__dict__, "model": "default", "seeds": [3, 4]})
    _, night = sky("night")
    assert read_sky_json(write_sky_json(tmp_path / "n.json", night)) == night
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AlisError, match="bad.json"):
        read_sky_json(tmp_path / "bad.json")


@pytest.mark.parametrize("kwargs, match", [
    ({"sky": "cloudy"}, "sky must be one of"),
    ({"sun": "east"}, "sun must be"),
    ({"sun": (10, 95)}, "elevation"),
    ({"sun": (1, 2, 3)}, "sun must be"),
    ({"strip_scale": 7.0}, "leave at least one row"),
    ({"height": 2}, "height"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(AlisError, match=match) as e:
        complete_sky(synthetic_strip("day"), **kwargs)
    assert "\n" not in str(e.value)
    with pytest.raises(AlisError, match="width must be even"):
        complete_sky(torch.zeros(3, 8, 33))


@pytest.mark.parametrize("source,kwargs", [("day", dict(sun=(60, 30), height=512)), ("dusk", dict(sun="auto")),
                                           ("night", dict(sun="none", height=300, exposure=1.0)),
                                           ("day", dict(sky="blur"))])
def test_compiled_passes_give_the_pytorch_sky(source, kwargs, monkeypatch):
    """With numba, the calibration (a table), the band's detail textures and the dome and ground
    rows of large skies are compiled single passes (here every sky); without it PyTorch computes
    the same sky: within the calibration table's error (1e-3 relative next to white) everywhere,
    and the same sun."""
    from alis_core import kernels, sky as sky_mod
    if not kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed")
    monkeypatch.setattr(sky_mod, "SKY_KERNEL_MIN_PIXELS", 0)
    strip = synthetic_strip(source)
    fast, fast_info = complete_sky(strip, **kwargs)
    monkeypatch.setattr(kernels, "_impl", False)
    ref, ref_info = complete_sky(strip, **kwargs)
    rel = (fast - ref).abs() / ref.abs().clamp(min=1e-3)
    assert float(rel.max()) < 2e-3, float(rel.max())
    assert (fast_info.sun is None) == (ref_info.sun is None)
    if ref_info.sun is not None:
        assert fast_info.sun.irradiance == pytest.approx(ref_info.sun.irradiance, rel=1e-4)
        assert (fast_info.sun.azimuth_deg, fast_info.sun.elevation_deg) == \
            pytest.approx((ref_info.sun.azimuth_deg, ref_info.sun.elevation_deg), abs=1e-6)
    assert fast_info.turbidity == ref_info.turbidity


def test_a_failing_sky_kernel_costs_a_warning_not_the_sky(monkeypatch):
    """A compiled pass that fails on this machine switches the kernels off with one warning; the
    same sky comes from the PyTorch operations."""
    from alis_core import kernels, sky as sky_mod
    if not kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed")
    monkeypatch.setattr(sky_mod, "SKY_KERNEL_MIN_PIXELS", 0)
    strip = synthetic_strip("day")
    impl = kernels._load()
    monkeypatch.setattr(kernels, "_impl", False)
    ref, _ = complete_sky(strip, sun=(60, 30), height=256)
    monkeypatch.setattr(kernels, "_impl", impl)

    def boom(*args):
        raise RuntimeError("LLVM ERROR: no such CPU")
    monkeypatch.setattr(impl, "sky_rows", boom)
    with pytest.warns(RuntimeWarning, match="compiled kernels failed") as warned:
        out, _ = complete_sky(strip, sun=(60, 30), height=256)
    assert len([w for w in warned if "compiled kernels" in str(w.message)]) == 1
    assert not kernels.available()
    rel = (out - ref).abs() / ref.abs().clamp(min=1e-3)
    assert float(rel.max()) < 2e-3


def test_small_skies_take_pytorch_and_large_ones_the_compiled_passes(monkeypatch):
    """Loading the kernels costs a process more than PyTorch's passes cost on a small sky: the
    choice is by size alone (so a sky does not depend on what the process ran before)."""
    from alis_core import kernels, sky as sky_mod
    if not kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed")
    impl = kernels._load()
    calls = []
    monkeypatch.setattr(impl, "sky_rows", lambda *a: calls.append(a[0].shape) or None)
    monkeypatch.setattr(sky_mod, "SKY_KERNEL_MIN_PIXELS", 512 * 256)
    complete_sky(synthetic_strip("day"), sun="none", height=255)
    assert calls == []
    complete_sky(synthetic_strip("day"), sun="none", height=256)
    assert calls and all(c == (3, 256, 512) for c in calls)


def test_compiled_tone_map_is_the_curve(monkeypatch):
    """Large images are tone-mapped through a table of the curve in one compiled pass: within
    2e-6 of the curve everywhere (the shoulder, the sRGB segment's kink, far above white,
    below zero), and at any exposure."""
    from alis_core import kernels, sky as sky_mod
    if not kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed")
    hdr = (torch.rand(3, 64, 128, generator=torch.Generator().manual_seed(4)) ** 4) * 12
    hdr[0, 0, :6] = torch.tensor([-1.0, 0.0, 0.0031308, 0.8, 7.99, 1e6])
    want = {ev: tone_map(hdr, ev) for ev in (0.0, -1.5, 2.0)}  # below the size limit: PyTorch
    monkeypatch.setattr(sky_mod, "SKY_KERNEL_MIN_PIXELS", 0)
    for ev, ref in want.items():
        got = tone_map(hdr, ev)
        assert float((got - ref).abs().max()) < 2e-6, ev


def test_a_one_row_band_keeps_its_clouds():
    """A band of one row (a very thin strip) still lends the dome its texture: the cloud mask
    is as tall as the band, not empty."""
    from alis_core import sky as sky_mod
    band_lum = torch.rand(1, 128) + 1.0  # one bright (sky) row
    mask = sky_mod._eroded_sky(sky_mod._skyline(band_lum), 2)
    assert mask.shape == (1, 128) and bool(mask.all())
