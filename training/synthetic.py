"""Procedural landscapes: a photo-free data source for training, tests and demos.

A landscape is a pure function of ``(seed, x)``: every scene element (ridge profiles, clouds,
stars, ripples, grain) is built from hashed lattice noise evaluated at absolute coordinates, so

- the same seed gives the same pixels on every machine (no global RNG state is touched);
- ``render_landscape(seed, H, W, x0=a)`` continues ``render_landscape(seed, H, W, x0=a - W)``
  exactly: any window of the infinite strip can be rendered on its own;
- with ``period=P`` every lattice is wrapped modulo its own cell count, so the strip repeats
  every ``P`` columns and a ``P``-wide panorama closes into a 360-degree loop.

Lengths are measured in frame heights (``u = x / H``, ``v = y / H``), so one seed renders the
same scene at any resolution. Scene layout (palette, number of ridge layers, horizon, water,
sun) is drawn once per seed with ``numpy.random.default_rng``; see ``scene_params``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Bump when a change alters rendered pixels, so that caches of synthetic frames are rebuilt.
SYNTHETIC_VERSION = 1

_MASK64 = (1 << 64) - 1

# Palettes: colours in sRGB [0, 1]. Per-seed jitter is applied in `scene_params`.
_PALETTES: dict[str, dict[str, tuple[float, float, float]]] = {
    "day": {
        "zenith": (0.22, 0.42, 0.78), "horizon": (0.70, 0.82, 0.93), "haze": (0.74, 0.82, 0.90),
        "sun": (1.00, 0.97, 0.88), "land_near": (0.15, 0.25, 0.15), "land_far": (0.30, 0.36, 0.44),
        "cloud_lit": (1.00, 1.00, 0.98), "cloud_shade": (0.62, 0.68, 0.78),
        "water": (0.08, 0.20, 0.28), "snow": (0.95, 0.96, 1.00),
    },
    "dusk": {
        "zenith": (0.16, 0.15, 0.36), "horizon": (1.00, 0.62, 0.36), "haze": (0.92, 0.58, 0.50),
        "sun": (1.00, 0.82, 0.50), "land_near": (0.10, 0.06, 0.12), "land_far": (0.36, 0.24, 0.38),
        "cloud_lit": (1.00, 0.66, 0.46), "cloud_shade": (0.42, 0.28, 0.42),
        "water": (0.12, 0.08, 0.16), "snow": (1.00, 0.80, 0.72),
    },
    "night": {
        "zenith": (0.010, 0.018, 0.060), "horizon": (0.090, 0.140, 0.290),
        "haze": (0.060, 0.090, 0.190), "sun": (0.92, 0.94, 1.00),
        "land_near": (0.012, 0.016, 0.035), "land_far": (0.040, 0.055, 0.110),
        "cloud_lit": (0.20, 0.23, 0.34), "cloud_shade": (0.05, 0.06, 0.11),
        "water": (0.015, 0.025, 0.060), "snow": (0.20, 0.23, 0.33),
    },
    "golden": {
        "zenith": (0.30, 0.46, 0.72), "horizon": (0.98, 0.84, 0.62), "haze": (0.88, 0.79, 0.68),
        "sun": (1.00, 0.88, 0.62), "land_near": (0.17, 0.20, 0.08), "land_far": (0.40, 0.36, 0.36),
        "cloud_lit": (1.00, 0.90, 0.72), "cloud_shade": (0.56, 0.50, 0.54),
        "water": (0.12, 0.18, 0.22), "snow": (1.00, 0.93, 0.82),
    },
    "mist": {
        "zenith": (0.56, 0.62, 0.68), "horizon": (0.84, 0.86, 0.86), "haze": (0.82, 0.85, 0.86),
        "sun": (1.00, 0.98, 0.92), "land_near": (0.14, 0.20, 0.18), "land_far": (0.30, 0.36, 0.40),
        "cloud_lit": (0.93, 0.94, 0.95), "cloud_shade": (0.60, 0.64, 0.68),
        "water": (0.30, 0.36, 0.40), "snow": (0.92, 0.94, 0.96),
    },
}
_PALETTE_PROBS = {"day": 0.34, "golden": 0.14, "dusk": 0.22, "night": 0.14, "mist": 0.16}


# ---------------------------------------------------------------------------------------------
# Hashed lattice noise (pure functions of integer coordinates).


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _key(*parts: int) -> int:
    """Combine integers (seed, stream ids) into one 64-bit key, in plain Python."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ ((p + 0x9E3779B97F4A7C15) & _MASK64))
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64   # splitmix64 finaliser
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h


def _hash_float(key: int, *coords: np.ndarray) -> np.ndarray:
    """Uniform floats in [-1, 1) from an int key and broadcastable int64 coordinate arrays."""
    h = np.broadcast_to(np.uint64(key), np.broadcast_shapes(*(c.shape for c in coords))).copy()
    for c in coords:
        h = _mix64(h ^ (np.asarray(c, np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)))
    return ((h >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0).astype(np.float32)


def _catmull_rom(t: np.ndarray, cells: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Catmull-Rom stencil for samples at positions ``t`` [L] (lattice units).

    Returns ``(idx [K], pos [L, 4], w [L, 4])``: sample l = sum_j w[l, j] * values(idx)[pos[l, j]].
    With ``cells`` the lattice wraps modulo ``cells`` (periodic noise). Sums run in a fixed order
    per sample, so a sample's value does not depend on which other samples share the call.
    """
    i = np.floor(t).astype(np.int64)
    s = (t - i).astype(np.float32)[:, None]
    s2, s3 = s * s, s * s * s
    w = np.concatenate([  # basis for the lattice points i-1, i, i+1, i+2
        -0.5 * s3 + s2 - 0.5 * s,
        1.5 * s3 - 2.5 * s2 + 1.0,
        -1.5 * s3 + 2.0 * s2 + 0.5 * s,
        0.5 * s3 - 0.5 * s2,
    ], axis=1)                                                     # [L, 4]
    pts = i[:, None] + np.arange(-1, 3)[None, :]                   # [L, 4]
    if cells is not None:
        pts = np.mod(pts, cells)
    lo = int(pts.min())
    return np.arange(lo, int(pts.max()) + 1, dtype=np.int64), pts - lo, w


def _octave_cells(freq: float, period: float | None) -> tuple[float, int | None]:
    """Snap a frequency (cycles per unit) to a whole number of cells per period."""
    if period is None:
        return freq, None
    cells = max(1, round(freq * period))
    return cells / period, cells


def fbm_1d(u: np.ndarray, key: int, freq: float, octaves: int, gain: float = 0.5,
           period: float | None = None, lacunarity: float = 2.0) -> np.ndarray:
    """Fractal value noise along one axis: u [L] (units) -> [L] float32, roughly in [-1, 1]."""
    out = np.zeros(len(u), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        f, cells = _octave_cells(freq * lacunarity**o, period)
        idx, pos, w = _catmull_rom(u * f, cells)
        vals = _hash_float(_key(key, o), idx)[pos]                 # [L, 4]
        out += amp * (((vals[:, 0] * w[:, 0] + vals[:, 1] * w[:, 1])
                       + vals[:, 2] * w[:, 2]) + vals[:, 3] * w[:, 3])
        norm += amp
        amp *= gain
    return out / norm


def fbm_2d(u: np.ndarray, v: np.ndarray, key: int, freq_u: float, freq_v: float, octaves: int,
           gain: float = 0.5, period: float | None = None) -> np.ndarray:
    """Fractal value noise on a grid: u [W], v [H] -> [H, W] float32; periodic in u if asked."""
    out = np.zeros((len(v), len(u)), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        fu, cells = _octave_cells(freq_u * 2.0**o, period)
        iu, pu, wu = _catmull_rom(u * fu, cells)                   # [Ku], [W, 4]
        iv, pv, wv = _catmull_rom(v * freq_v * 2.0**o, None)       # [Kv], [H, 4]
        lattice = _hash_float(_key(key, o), iv[:, None], iu[None, :])  # [Kv, Ku]
        rows = lattice[:, pu[:, 0]] * wu[:, 0]                     # interpolate along u: [Kv, W]
        for j in range(1, 4):
            rows = rows + lattice[:, pu[:, j]] * wu[:, j]
        grid = rows[pv[:, 0]] * wv[:, :1]                          # then along v: [H, W]
        for j in range(1, 4):
            grid = grid + rows[pv[:, j]] * wv[:, j:j + 1]
        out += amp * grid
        norm += amp
        amp *= gain
    return out / norm


def _smoothstep(e0: float | np.ndarray, e1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return a + (b - a) * t


# ---------------------------------------------------------------------------------------------
# Scene description.


@dataclass(frozen=True)
class RidgeLayer:
    """One mountain range: ridge line ``v = top - amp * profile(u)``; depth 1 = farthest."""

    top: float
    amp: float
    freq: float
    octaves: int
    sharpness: float   # 0 = rolling fBm hills, 1 = ridged (sharp) peaks
    depth: float
    snow_line: float | None  # ridges above this v get snow caps
    trees: bool         # jagged, tree-like outline and texture (near layers)


@dataclass(frozen=True)
class LandscapeParams:
    """Everything a seed decides apart from per-pixel noise. Coordinates in frame heights."""

    seed: int
    palette: str
    colors: dict[str, np.ndarray]
    horizon: float              # v of the horizon (0 = top of the frame)
    sun_u: float
    sun_v: float
    sun_radius: float
    layers: tuple[RidgeLayer, ...]
    water_line: float | None    # v of the lake surface, or None (no water)
    cloud_cover: float          # 0 = clear, 1 = overcast
    fog: float                  # atmospheric perspective strength
    mist: float                 # valley mist strength


def scene_params(seed: int, period: float | None = None) -> LandscapeParams:
    """Draw the layout of landscape ``seed`` (palette, ridges, water, sun, clouds).

    ``period`` (in frame heights) only bounds where the sun may go, so it lies inside the loop.
    """
    rng = np.random.default_rng([seed & _MASK64, 0xA115])
    names = list(_PALETTE_PROBS)
    palette = names[int(rng.choice(len(names), p=list(_PALETTE_PROBS.values())))]
    jitter = rng.uniform(0.92, 1.08, size=3)
    colors = {k: np.clip(np.array(c, np.float32) * jitter.astype(np.float32), 0, 1)
              for k, c in _PALETTES[palette].items()}
    if palette == "day" and rng.random() < 0.3:  # autumn / dry-grass foreground
        colors["land_near"] = np.array([0.30, 0.22, 0.10], np.float32) * jitter.astype(np.float32)

    horizon = float(rng.uniform(0.56, 0.70))
    water = rng.random() < 0.45
    water_line = float(horizon + rng.uniform(0.0, 0.06)) if water else None

    n = int(rng.integers(3, 6))
    far_height = float(rng.uniform(0.14, 0.30))      # how far the farthest range rises
    near_top = (water_line - 0.02) if water else horizon + float(rng.uniform(0.08, 0.20))
    snowy = rng.random() < {"day": 0.45, "golden": 0.35, "mist": 0.45, "dusk": 0.2, "night": 0.0}[palette]
    layers = []
    for i in range(n):
        t = i / (n - 1)
        near_amp = float(rng.uniform(0.02, 0.045)) if not water else float(rng.uniform(0.01, 0.025))
        top = horizon - far_height * (1 - t) ** 1.3 + t * (near_top - horizon)
        amp = far_height * 0.5 * (1 - t) ** 1.1 + t * near_amp
        layers.append(RidgeLayer(
            top=top, amp=amp * float(rng.uniform(0.8, 1.2)),
            freq=float(rng.uniform(0.5, 0.9) * (1 + 1.5 * t)),
            octaves=7 if i == n - 1 else 6,
            sharpness=float(rng.uniform(0.5, 1.0) if t < 0.5 else rng.uniform(0.0, 0.5)),
            depth=1.0 - t,
            snow_line=(top - amp * float(rng.uniform(0.8, 1.6))) if snowy and t < 0.3 else None,
            trees=(not water) and i == n - 1 and rng.random() < 0.7,
        ))

    if palette == "dusk":
        sun_v = horizon - float(rng.uniform(0.02, 0.14))
    elif palette == "golden":
        sun_v = horizon - float(rng.uniform(0.08, 0.22))
    elif palette == "night":
        sun_v = float(rng.uniform(0.08, 0.32))       # the moon
    else:
        sun_v = float(rng.uniform(0.08, horizon - 0.12))
    span = period if period is not None else 3.0
    return LandscapeParams(
        seed=seed, palette=palette, colors=colors, horizon=horizon,
        sun_u=float(rng.uniform(0.3, max(0.31, span - 0.3))), sun_v=sun_v,
        sun_radius=float(rng.uniform(0.022, 0.036) * (0.7 if palette == "night" else 1.0)),
        layers=tuple(layers), water_line=water_line,
        cloud_cover=float(rng.uniform(0.55, 0.95) if palette == "mist" else rng.uniform(0.0, 0.75)),
        fog=float(rng.uniform(0.35, 0.6) if palette != "mist" else rng.uniform(0.65, 0.85)),
        mist=float(rng.uniform(0.1, 0.35) if palette != "mist" else rng.uniform(0.35, 0.6)),
    )


# ---------------------------------------------------------------------------------------------
# Rendering.


def _ridge_profile(u: np.ndarray, key: int, layer: RidgeLayer, period: float | None,
                   octaves: int | None = None) -> np.ndarray:
    """Height of a ridge line above its mean, u [L] -> [L], zero mean and unit spread."""
    oct_ = layer.octaves if octaves is None else octaves
    # fBm of value noise has std ~0.3; ridged noise 1 - 2|fBm| has mean ~0.47 and std ~0.34.
    smooth = fbm_1d(u, key, layer.freq, oct_, gain=0.48, period=period) / 0.3
    # Ridged noise: fold fBm at zero so valleys round out and peaks turn sharp.
    folded = fbm_1d(u, _key(key, 7), layer.freq * 0.7, oct_, gain=0.5, period=period)
    # A softened |.| keeps crests sharp to the eye but gives the slope shading a short ramp
    # across a crest instead of a hard vertical line.
    ridged = (0.57 - 2.0 * np.sqrt(folded * folded + 0.03**2)) / 0.34
    prof = _mix(smooth, ridged, layer.sharpness)
    if layer.trees and octaves is None:
        crowns = np.abs(fbm_1d(u, _key(key, 9), 18.0, 3, gain=0.6, period=period))
        prof = prof + 0.6 * crowns * (0.02 / max(layer.amp, 1e-3))
    return prof


def _wrap(du: np.ndarray, period: float | None) -> np.ndarray:
    return du if period is None else (du + 0.5 * period) % period - 0.5 * period


def _render(p: LandscapeParams, height: int, x: np.ndarray, period: float | None) -> np.ndarray:
    """Render columns ``x`` (int pixels) of scene ``p`` -> [H, len(x), 3] float32 in [0, 1]."""
    c = p.colors
    u = ((x + 0.5) / height).astype(np.float64)                    # [W]
    v = ((np.arange(height) + 0.5) / height).astype(np.float64)    # [H]
    vv = v[:, None].astype(np.float32)                             # [H, 1]
    du = _wrap(u - p.sun_u, period)
    # In a loop, measure the offset from the sun as a chord, smooth through the opposite point.
    chord = du if period is None else period / math.pi * np.sin(math.pi * du / period)
    du_sun = chord.astype(np.float32)[None, :]                      # [1, W]
    dist_sun = np.sqrt(du_sun**2 + (vv - p.sun_v) ** 2)            # [H, W]
    night = p.palette == "night"
    k = _key(p.seed, 0x5CE)

    # Sky: vertical gradient, brighter and warmer towards the sun along the horizon.
    t = np.clip(vv / p.horizon, 0.0, 1.0) ** 1.6
    img = _mix(c["zenith"], c["horizon"], t[..., None])            # [H, 1, 3]
    img = np.broadcast_to(img, (height, len(x), 3)).copy()
    low_sun = {"dusk": 1.0, "golden": 0.6}.get(p.palette, 0.0)      # warm light along the horizon
    side = np.exp(-np.sqrt(du_sun**2 + 0.03**2) / (0.6 + 0.3 * low_sun))
    horizon_glow = side * np.exp(-np.clip(p.horizon - vv, 0, None) / 0.18)
    img += (0.12 + 0.33 * low_sun) * horizon_glow[..., None] * c["sun"]

    if night:  # stars: sparse hashed pixels, dimmer near the horizon
        xs = np.mod(x, int(round(period * height))) if period is not None else x
        h = _hash_float(_key(k, 11), np.arange(height)[:, None], xs[None, :])
        star = np.clip((h - 0.994) / 0.006, 0, 1) ** 2 * _smoothstep(p.horizon, p.horizon * 0.4, vv)
        img += star[..., None] * np.array([0.9, 0.92, 1.0], np.float32)

    # Sun (or moon): disc with a one-pixel soft edge, plus a tight and a wide glow.
    px = 1.0 / height
    disc = _smoothstep(p.sun_radius + px, p.sun_radius - px, dist_sun)
    glow_wide = 0.35 if not night else 0.12
    glow = 0.6 * np.exp(-((dist_sun / (3.0 * p.sun_radius)) ** 2)) + glow_wide * np.exp(-dist_sun / 0.3)
    if p.palette == "mist":
        glow *= 0.6
    img += glow[..., None] * c["sun"] * (1.0 - 0.5 * t[..., None])
    np.minimum(img, 1.0, out=img)  # saturate here: the disc and its reflection must not be darker
    disc_col = np.minimum(c["sun"] * 1.25 + 0.1, 1.0) * (0.85 if night else 1.0)
    img = _mix(img, disc_col, disc[..., None])

    # Clouds: 2D fBm in a "cloud plane" coordinate that compresses towards the horizon.
    rc = min(height, int(math.ceil((p.horizon - 0.03) * height)))    # rows that can hold cloud
    if p.cloud_cover > 0.02 and rc > 0:
        vc, vvc, tc = v[:rc], vv[:rc], t[:rc]
        depth_v = 0.35 / np.clip(p.horizon - vc, 0.02, None)          # [h]
        n = fbm_2d(u, depth_v, _key(k, 21), 1.6, 0.9, 5, gain=0.55, period=period)
        n_below = fbm_2d(u, depth_v * 1.04 + 0.05, _key(k, 21), 1.6, 0.9, 3, gain=0.55, period=period)
        thresh = 0.55 - 0.75 * p.cloud_cover + 0.04 * depth_v[:, None]   # far clouds: sparser
        dens = _smoothstep(thresh, thresh + 0.35, n) * _smoothstep(p.horizon - 0.03, p.horizon - 0.25, vvc)
        dens *= 0.92
        lit = np.clip(0.55 + 3.0 * (n - n_below), 0.0, 1.0)
        ccol = _mix(c["cloud_shade"], c["cloud_lit"], lit[..., None])
        rim = np.exp(-dist_sun[:rc] / 0.18) * (1.0 - dens) * 4.0 * dens  # silver lining near the sun
        ccol = ccol + (0.5 * rim)[..., None] * c["sun"]
        # Far clouds dissolve into the horizon haze.
        ccol = _mix(ccol, c["horizon"], (0.6 * tc)[..., None])
        img[:rc] = _mix(img[:rc], ccol, dens[..., None])

    # Mountain ranges, far to near, each faded toward the haze (atmospheric perspective).
    haze = c["haze"] + (0.15 + 0.2 * low_sun) * side[0][:, None] * c["sun"]  # [W, 3]
    # +1 where the sun is to the right, -1 to the left; smooth through the sun and, in a loop,
    # through the point opposite it, so the shading has no seams.
    toward_sun = -np.tanh(du_sun[0] / 0.2)                          # [W]
    if period is not None:
        toward_sun = toward_sun * np.clip((0.5 * period - np.abs(du)) / 0.2, 0.0, 1.0).astype(np.float32)
    keys = [_key(k, 100 + i) for i in range(len(p.layers))]
    tops = [(layer.top - layer.amp * _ridge_profile(u, lk, layer, period)).astype(np.float32)
            for layer, lk in zip(p.layers, keys)]                   # [W] each
    # Rows below this v are fully hidden by nearer layers or the lake: skip them (speed only).
    hidden = np.full(len(x), 2.0, np.float32) if p.water_line is None \
        else np.full(len(x), p.water_line, np.float32)
    floors = []
    for top in reversed(tops):
        floors.append(float(hidden.max()) + 2 * px)
        hidden = np.minimum(hidden, top)
    floors.reverse()
    for i, (layer, lk, top) in enumerate(zip(p.layers, keys, tops)):
        r0 = max(0, int(math.floor(float(top.min()) * height)) - 1)
        r1 = min(height, int(math.ceil(floors[i] * height)) + 1)
        if r0 >= r1:
            continue
        vb, vvb = v[r0:r1], vv[r0:r1]
        below = vvb - top[None, :]                                   # [h, W], > 0 inside
        cover = _smoothstep(-0.7 * px, 0.7 * px, below)              # anti-aliased ridge
        base = _mix(c["land_near"], c["land_far"], layer.depth ** 0.8)
        # Slope shading from a smoothed ridge (central difference of the noise itself, so no
        # edge effects): a face that descends toward the sun faces it and is lit.
        d = 0.01
        descent = layer.amp * (_ridge_profile(u - d, lk, layer, period, 3)
                               - _ridge_profile(u + d, lk, layer, period, 3)) / (2 * d)
        shade = np.clip(descent.astype(np.float32) * toward_sun * 1.2, -1.0, 1.0)
        shade = (shade[None, :] * np.exp(-np.clip(below, 0, None) / 0.08))[..., None]  # [h, W, 1]
        col = base * (1.0 + (0.3 if not night else 0.15) * shade)
        if layer.snow_line is not None:
            # Streaks elongated downhill: snow lingers in gullies below the snow line.
            gullies = fbm_2d(u, vb, _key(lk, 3), 24.0, 3.0, 3, period=period)
            snow = _smoothstep(layer.snow_line + 0.012, layer.snow_line - 0.012, vvb + 0.04 * gullies)
            col = _mix(col, c["snow"] * (1.0 + 0.25 * shade), snow[..., None])
        if layer.trees:
            tex = fbm_2d(u, vb, _key(lk, 5), 40.0, 25.0, 2, period=period)
            col = col * (1.0 + 0.25 * tex[..., None])
        fade = p.fog * layer.depth ** 1.6
        valley = p.mist * (1.0 - np.exp(-np.clip(below, 0, None) / 0.12))
        col = _mix(col, haze[None, :, :], np.clip(fade + (1 - fade) * valley, 0, 1)[..., None])
        col = col * (1.0 + 0.12 * layer.depth * shade)               # relief survives the haze
        img[r0:r1] = _mix(img[r0:r1], col, cover[..., None])

    # Lake: mirror the scene above the water line, rippled, darkened and tinted.
    if p.water_line is not None:
        wl = p.water_line
        rw = int(np.searchsorted(v, wl, side="right"))                 # first row under water
        if rw < height:
            dv = v[rw:] - wl                                          # [h] depth below the line
            ripple = fbm_2d(u, dv, _key(k, 31), 6.0, 1.0, 3, period=period)
            ripple_y = 1.0 / (dv + 0.02)                              # perspective: far = fine
            streak = fbm_2d(u, ripple_y, _key(k, 33), 1.0, 3.0, 3, period=period)
            src_v = wl - dv[:, None] + 0.02 * dv[:, None] * ripple   # [h, W]
            src_y = np.clip(np.round(src_v * height - 0.5).astype(np.int64), 0, height - 1)
            shift = np.round(0.03 * height * dv[:, None] * streak).astype(np.int64)
            src_x = np.clip(np.arange(len(x))[None, :] + shift, 0, len(x) - 1)
            refl = img[src_y, src_x]                                  # [h, W, 3]
            dvf = dv.astype(np.float32)
            fres = np.clip(0.25 + 1.3 * dvf, 0, 0.85)[:, None, None]
            water = _mix(refl * 0.8, c["water"], fres) * (1.0 + 0.08 * streak[..., None])
            # Glitter path under the sun.
            path = np.exp(-((du_sun / (0.05 + 0.5 * dvf[:, None])) ** 2))
            glint = np.clip(streak * 2.5 - 0.6, 0, 1) * path * (0.25 if night else 0.6)
            water += glint[..., None] * c["sun"]
            # Thin bright line where the far shore meets the water.
            water += (0.06 * np.exp(-dvf / (1.5 * px)))[:, None, None] * c["haze"]
            img[rw:] = water

    # Film grain (+-1 code value) against banding in the smooth gradients.
    xs = np.mod(x, int(round(period * height))) if period is not None else x
    grain = _hash_float(_key(k, 41), np.arange(height)[:, None], xs[None, :])
    img = img + grain[..., None] * (1.0 / 255.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _check_size(height: int, width: int) -> None:
    if int(height) < 2 or int(width) < 1:
        raise ValueError(f"landscape size must be at least 2 x 1 pixels, got {height} x {width}")


def render_landscape(seed: int, height: int, width: int, x0: int = 0,
                     period: int | None = None) -> np.ndarray:
    """Render columns ``[x0, x0 + width)`` of landscape ``seed`` at frame height ``height``.

    Returns uint8 [height, width, 3]. ``period`` (pixels) makes the landscape repeat every
    ``period`` columns; ``None`` gives an endless, non-repeating strip.
    """
    _check_size(height, width)
    per_units = None if period is None else period / height
    p = scene_params(seed, per_units)
    # The lake samples its reflection a few columns sideways: render a margin and crop it.
    margin = int(math.ceil(0.03 * height)) + 1 if p.water_line is not None else 0
    x = np.arange(x0 - margin, x0 + width + margin, dtype=np.int64)
    img = _render(p, height, x, per_units)[:, margin:margin + width]
    return (img * 255.0 + 0.5).astype(np.uint8)


def render_panorama(seed: int, height: int, width: int, periodic: bool = True) -> np.ndarray:
    """A wide strip of landscape ``seed``: uint8 [height, width, 3].

    ``periodic=True`` closes the strip into a loop (column ``width`` would equal column 0), as
    for a 360-degree panorama; ``False`` gives a window of the endless strip.
    """
    return render_landscape(seed, height, width, period=width if periodic else None)


class SyntheticLandscapes:
    """Square frames cropped from periodic procedural strips, for training without photos.

    Frame ``i`` comes from strip ``i // frames_per_strip`` (``strip_frames`` frames wide, a 360
    loop), at an offset drawn from the seed, so neighbouring indices share a scene. Items are
    float32 tensors [3, R, R] in [-1, 1]; rendering is lazy and deterministic per index.
    """

    def __init__(self, resolution: int, num_images: int, seed: int = 0,
                 strip_frames: int = 6, frames_per_strip: int = 4):
        if resolution < 2 or num_images < 1:
            raise ValueError(f"need resolution >= 2 and num_images >= 1, got {resolution}, {num_images}")
        self.resolution = int(resolution)
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.strip_frames = int(strip_frames)
        self.frames_per_strip = max(1, int(frames_per_strip))

    def __len__(self) -> int:
        return self.num_images

    def strip_seed(self, index: int) -> int:
        """Landscape seed of the strip that frame ``index`` is cropped from."""
        return _key(self.seed, index // self.frames_per_strip) & 0x7FFFFFFF

    def frame_uint8(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 [R, R, 3]."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"frame {index} out of range for {self.num_images} frames")
        r = self.resolution
        period = r * self.strip_frames
        x0 = int(_key(self.seed, index // self.frames_per_strip, index) % period)
        return render_landscape(self.strip_seed(index), r, r, x0=x0, period=period)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = torch.from_numpy(self.frame_uint8(index)).permute(2, 0, 1)  # [3, R, R] uint8
        return img.float() / 127.5 - 1.0
