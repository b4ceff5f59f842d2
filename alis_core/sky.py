"""Full-sphere skies from a 360° panorama strip: a daylight dome above it, a ground plane below
it, a sun, all in scene-linear radiance (see docs/SKY.md).

    hdr, info = complete_sky(strip01)            # [3, H, 2H] radiance, SkyInfo
    png01 = tone_map(hdr, info.exposure)         # [3, H, 2H] sRGB in [0, 1]; the band as it was
    write_sky_json("out/sky.exr", info, model="default", seeds=[1, 2])   # out/sky.json

Conventions are those of ``alis_core.projection``: equirect column u = (x + 0.5) / W, row
t = (y + 0.5) / H; Blender world axes, Z up; +X at u = 0.5, +Y at u = 0.25. Azimuth (degrees)
is counter-clockwise from +X about +Z, so u = 0.5 - azimuth / 360; elevation 0 is the horizon,
90 the zenith.

Calibration: the band's sRGB values are decoded to linear light and passed through the inverse
of the tone-mapping operator's shoulder (``tone_map``), so ``tone_map(complete_sky(...))`` shows
the band as the strip had it. The dome is the Preetham et al. (1999) analytic daylight model,
scaled per azimuth and colour channel to the band's top row, so everything shares the band's
linear units; the sun's irradiance is set against the sky's (``_SUN_TO_SKY``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .errors import AlisError
from .image import linear_to_srgb, srgb_to_linear
from .options import SKY_MODES

__all__ = [
    "SKY_MODES", "SUN_ANGULAR_DIAMETER_DEG", "SunInfo", "SkyInfo", "complete_sky", "tone_map",
    "sky_json_path", "write_sky_json", "read_sky_json",
]

_DETAIL_SIGMA = 2.0  # columns: what is finer than this is "detail", carried separately from colour
SUN_ANGULAR_DIAMETER_DEG = 0.53  # the sun seen from the earth (0.52-0.54° over the year)

# Tone mapping (per channel, on linear light times 2^exposure): identity up to SHOULDER, then an
# exponential shoulder tangent to it that approaches 1; then the sRGB encoding. The band's
# calibration is its inverse, so band pixels come back as they were; the band's pure white
# (sRGB 1.0) maps to BAND_WHITE (the inverse is infinite there).
SHOULDER = 0.8
BAND_WHITE = 2.0
_SHOULDER_CLIP = 1.0 - math.exp(-(BAND_WHITE - SHOULDER) / (1.0 - SHOULDER))

# Rec. 709 / sRGB luminance weights (linear light) and the XYZ -> linear sRGB matrix (IEC 61966-2-1).
_LUMA = (0.2126, 0.7152, 0.0722)
_XYZ_TO_RGB = torch.tensor([[3.2406, -1.5372, -0.4986],
                            [-0.9689, 1.8758, 0.0415],
                            [0.0557, -0.2040, 1.0570]], dtype=torch.float64)

# Preetham, Shirley and Smits, "A Practical Analytic Model for Daylight", SIGGRAPH 1999,
# Appendix A.2: Perez coefficients (A..E) as linear functions a * T + b of turbidity T, for the
# chromaticities x, y and luminance Y; and the zenith chromaticity polynomials (rows T^2, T, 1;
# columns theta_s^3, theta_s^2, theta_s, 1). Published data, used as printed there.
_PEREZ = torch.tensor([
    # x: A, B, C, D, E  as (a, b)
    [[-0.0193, -0.2592], [-0.0665, 0.0008], [-0.0004, 0.2125], [-0.0641, -0.8989], [-0.0033, 0.0452]],
    # y
    [[-0.0167, -0.2608], [-0.0950, 0.0092], [-0.0079, 0.2102], [-0.0441, -1.6537], [-0.0109, 0.0529]],
    # Y
    [[0.1787, -1.4630], [-0.3554, 0.4275], [-0.0227, 5.3251], [0.1206, -2.5771], [-0.0670, 0.3703]],
], dtype=torch.float64)
_ZENITH_X = torch.tensor([[0.00166, -0.00375, 0.00209, 0.0],
                          [-0.02903, 0.06377, -0.03202, 0.00394],
                          [0.11693, -0.21196, 0.06052, 0.25886]], dtype=torch.float64)
_ZENITH_Y = torch.tensor([[0.00275, -0.00610, 0.00317, 0.0],
                          [-0.04214, 0.08970, -0.04153, 0.00516],
                          [0.15346, -0.26756, 0.06670, 0.26688]], dtype=torch.float64)
_SUN_MAX_SKY_FRACTION = 0.05  # auto: no sun if more of the sky than this reaches the shoulder
_TURBIDITIES = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)  # candidates of the fit (model range 2-10)


# ----------------------------------------------------------------------------------------------
# Results.

@dataclass
class SunInfo:
    """The sun of a completed sky, in the image's linear units and Blender's world frame."""

    azimuth_deg: float            # counter-clockwise from +X about +Z; u = 0.5 - azimuth / 360
    elevation_deg: float          # 0 = horizon, 90 = zenith
    direction: tuple              # unit vector towards the sun (x, y, z), Z up
    angular_diameter_deg: float
    irradiance: float             # luminance of the disk integrated over its solid angle: a Sun
    #                               lamp's strength (the world's radiance is the image's values)
    color: tuple                  # linear RGB with luminance 1 (the lamp's colour)
    visible: bool                 # False where the band's terrain hides it (or it is below the horizon)
    source: str                   # "auto" (found in the band) or "explicit"


@dataclass
class SkyInfo:
    """What ``complete_sky`` made: the sun, the exposure, where the band lies, and provenance."""

    sun: Optional[SunInfo]
    exposure: float                          # EV: tone_map(hdr, exposure) shows the band as it was
    band_elevation_deg: tuple                # (low, high): elevations of the band's bottom and top edges
    sky: str = "physical"                    # "physical" or "blur"
    turbidity: Optional[float] = None        # the fitted Preetham turbidity (physical skies)
    height: int = 0                          # equirect size: [3, height, 2 * height]
    model: Optional[str] = None              # provenance, filled by the front end
    seeds: Optional[list] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self, model: Optional[str] = None, seeds: Optional[Sequence[int]] = None) -> dict:
        """A JSON-ready dict; ``model`` / ``seeds`` override the stored ones when given."""
        d = asdict(self)
        d["band_elevation_deg"] = list(d["band_elevation_deg"])
        if d["sun"] is not None:
            d["sun"]["direction"] = list(d["sun"]["direction"])
            d["sun"]["color"] = list(d["sun"]["color"])
        if model is not None:
            d["model"] = str(model)
        if seeds is not None:
            d["seeds"] = [int(s) for s in seeds]
        return {"format": "alis-sky", "format_version": 1, **d}

    def to_json(self, model: Optional[str] = None, seeds: Optional[Sequence[int]] = None) -> str:
        return json.dumps(self.to_dict(model, seeds), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "SkyInfo":
        d = {k: v for k, v in d.items() if k not in ("format", "format_version", "alis_output")}
        sun = d.pop("sun", None)
        if sun is not None:
            sun = SunInfo(**{**sun, "direction": tuple(sun["direction"]), "color": tuple(sun["color"])})
        return cls(sun=sun, **{**d, "band_elevation_deg": tuple(d["band_elevation_deg"])})


def sky_json_path(path: Union[str, os.PathLike]) -> Path:
    """The sidecar of an equirect (sky.exr -> sky.json), or of a cube map folder (DIR/sky.json)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return path
    return path / "sky.json" if path.is_dir() or not path.suffix else path.with_suffix(".json")


def write_sky_json(path: Union[str, os.PathLike], info: SkyInfo, model: Optional[str] = None,
                   seeds: Optional[Sequence[int]] = None, force: bool = False) -> Path:
    """Write ``info`` as the sidecar of ``path`` (see sky_json_path), atomically, marked as the
    project's own "sky" output: an existing file is replaced only if it is one (or with ``force``).
    Returns the path written."""
    from . import outputs
    path = outputs.check_replaceable(sky_json_path(path), "sky", force, "sky sidecar")
    return outputs.write_json(path, info.to_dict(model, seeds), kind="sky")


def read_sky_json(path: Union[str, os.PathLike]) -> SkyInfo:
    """Read a sidecar written by ``write_sky_json``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != "alis-sky":
            raise ValueError("not an alis-sky file")
        return SkyInfo.from_dict(d)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise AlisError(f"cannot read sky sidecar {path}: {e}; write it with write_sky_json") from e


# ----------------------------------------------------------------------------------------------
# Tone mapping and the band's calibration.

def tone_map(hdr: torch.Tensor, exposure: float = 0.0) -> torch.Tensor:
    """Scene-linear radiance [3, H, W] -> display sRGB [3, H, W] in [0, 1].

    Per channel: x = hdr * 2^exposure; y = x below SHOULDER (0.8), else
    0.8 + 0.2 * (1 - exp(-(x - 0.8) / 0.2)) (tangent to the identity, approaching 1); then the
    sRGB encoding. Below the shoulder this is exactly the plain sRGB encoding of linear light.
    Images of SKY_KERNEL_MIN_PIXELS and more, with the compiled kernels, go through a table of
    this curve in one pass (within 1e-6 of it).
    """
    if not isinstance(hdr, torch.Tensor) or not hdr.is_floating_point():
        raise AlisError(f"tone_map: expected a float tensor [3, H, W], got {type(hdr).__name__}")
    from . import kernels
    if hdr.ndim == 3 and hdr.shape[0] == 3 and hdr.shape[1] * hdr.shape[2] >= SKY_KERNEL_MIN_PIXELS \
            and hdr.device.type == "cpu" and kernels.available():
        global _tone_lut
        if _tone_lut is None:
            _tone_lut = _tone_curve(torch.arange(_TONE_LUT_SIZE + 1, dtype=torch.float64) * (_TONE_MAX / _TONE_LUT_SIZE),
                                    0.0).float()
        out = torch.empty(hdr.shape)
        try:
            kernels.lut_rows(hdr, out, 0, _tone_lut, torch.zeros(3, hdr.shape[1], dtype=torch.float64),
                             gain=float(2.0 ** exposure) / _TONE_MAX)
            return out
        except kernels.KernelFailure:
            pass
    return _tone_curve(hdr, exposure)


_TONE_MAX = 8.0  # tone_map's curve is 1 from here on (to 1e-15)
_TONE_LUT_SIZE = 1 << 18
_tone_lut: Optional[torch.Tensor] = None


def _tone_curve(hdr: torch.Tensor, exposure: float) -> torch.Tensor:
    x = hdr.float().clamp(min=0) * float(2.0 ** exposure)
    k = SHOULDER
    over = k - (1 - k) * torch.expm1(-(x - k) / (1 - k))
    return linear_to_srgb(torch.where(x > k, over, x)).clamp(0, 1)


def _calibrate(strip01: torch.Tensor) -> torch.Tensor:
    """sRGB [0, 1] -> scene-linear radiance at exposure 0: the inverse of ``tone_map``."""
    y = srgb_to_linear(strip01.float().clamp(0, 1))
    k = SHOULDER
    arg = ((y - k) / (1 - k)).clamp(0, _SHOULDER_CLIP)
    return torch.where(y > k, k - (1 - k) * torch.log1p(-arg), y)


SKY_KERNEL_MIN_PIXELS = 1 << 24  # skies this large (8192 x 4096: 2^25) take the compiled passes
_LUT_SIZE = 1 << 16  # calibration table intervals: within 2e-6 of _calibrate below sRGB 0.95
_lut: Optional[torch.Tensor] = None


def _calibrate_into(out: torch.Tensor, y0: int, strip01: torch.Tensor, sums: torch.Tensor,
                    luminance: bool = False, compiled: bool = False) -> Optional[torch.Tensor]:
    """out[:, y0:y0 + R] = _calibrate(strip01 [3, R, W]), sums[:, y0:y0 + R] (float64) the rows'
    sums, and with ``luminance`` the rows' luminance [R, W] returned; ``compiled``: in one pass
    of the compiled kernels through a table of _calibrate (pow and log per pixel cost more than
    the rest of the sky)."""
    global _lut
    from . import kernels
    if compiled and kernels.available():  # (off for good once a kernel failed here)
        if _lut is None:
            _lut = _calibrate(torch.arange(_LUT_SIZE + 1, dtype=torch.float64) / _LUT_SIZE).float()
        try:
            return kernels.lut_rows(strip01, out, y0, _lut, sums, _LUMA if luminance else None)
        except kernels.KernelFailure:
            pass
    rows = slice(y0, y0 + strip01.shape[1])
    out[:, rows] = _calibrate(strip01)
    sums[:, rows] = out[:, rows].sum(-1)
    return _luminance(out[:, rows]) if luminance else None


def _luminance(x: torch.Tensor) -> torch.Tensor:
    return x[0] * _LUMA[0] + x[1] * _LUMA[1] + x[2] * _LUMA[2]


# ----------------------------------------------------------------------------------------------
# Preetham's daylight model.

def _preetham(turbidity: float, sun_zenith: Optional[float], cos_theta: torch.Tensor,
              gamma: Optional[torch.Tensor]) -> torch.Tensor:
    """Sky radiance (linear sRGB, arbitrary scale) for view zenith angles (cos_theta [...]) and
    angles to the sun (gamma [...], radians). ``sun_zenith=None``: no sun term (the sky's vertical
    gradient only, for bands without a sun), chromaticity of a sun at 45°."""
    t = float(turbidity)
    ts = math.radians(45.0) if sun_zenith is None else min(float(sun_zenith), math.radians(89.0))
    coef = (_PEREZ[..., 0] * t + _PEREZ[..., 1]).float()  # [3 (x, y, Y), 5]
    tpow = torch.tensor([t * t, t, 1.0], dtype=torch.float64)
    spow = torch.tensor([ts ** 3, ts ** 2, ts, 1.0], dtype=torch.float64)
    chi = (4.0 / 9.0 - t / 120.0) * (math.pi - 2.0 * ts)
    zen = [float(tpow @ _ZENITH_X @ spow), float(tpow @ _ZENITH_Y @ spow),
           max((4.0453 * t - 4.9710) * math.tan(chi) - 0.2155 * t + 2.4192, 1e-3)]
    ct = cos_theta.clamp(min=0.02)
    out = []
    for i in range(3):
        a, b, c, d, e = (float(v) for v in coef[i])
        grad = 1.0 + a * torch.exp(b / ct)
        grad0 = 1.0 + a * math.exp(b)
        if sun_zenith is None or gamma is None:
            out.append(zen[i] * grad / grad0)
        else:
            sun_term = 1.0 + c * torch.exp(d * gamma) + e * torch.cos(gamma) ** 2
            sun0 = 1.0 + c * math.exp(d * ts) + e * math.cos(ts) ** 2
            out.append(zen[i] * grad * sun_term / (grad0 * sun0))
    x, y, lum = out
    y = y.clamp(min=1e-4)
    xyz = torch.stack([x / y * lum, lum, (1 - x - y) / y * lum])  # [3, ...]
    rgb = torch.einsum("ij,j...->i...", _XYZ_TO_RGB.float(), xyz)
    return rgb.clamp(min=1e-6)


def _sun_color(elevation_deg: float, turbidity: float) -> tuple:
    """Direct sunlight's colour (linear RGB, luminance 1): Rayleigh and aerosol (Angstrom)
    extinction at 610/550/465 nm (the sRGB primaries' dominant wavelengths) along the
    Kasten-Young air mass. An approximation."""
    el = max(elevation_deg, 0.0)
    airmass = 1.0 / (math.sin(math.radians(el)) + 0.50572 * (el + 6.07995) ** -1.6364)
    beta = max(0.04608 * turbidity - 0.04586, 0.0)  # Preetham 1999, Appendix A.3
    rgb = []
    for lam_um, rayleigh in ((0.61, 0.064), (0.55, 0.097), (0.465, 0.19)):
        rgb.append(math.exp(-airmass * (rayleigh + beta * lam_um ** -1.3)))
    y = sum(w * c for w, c in zip(_LUMA, rgb))
    return tuple(c / y for c in rgb)


def _sun_to_sky(elevation_deg: float) -> float:
    """The sun's irradiance on a surface facing it over the sky's on a horizontal surface.
    Clear-sky measurements give about 3 with the sun on the horizon to about 10 high up (direct
    normal 200 -> 900 W/m², diffuse 60 -> 100 W/m²); kept within that range."""
    return 3.0 + 7.0 * math.sqrt(max(math.sin(math.radians(elevation_deg)), 0.0))


# ----------------------------------------------------------------------------------------------
# Geometry helpers.

def _resample_loop(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize a 360° strip [C, h, w] to [C, height, width], columns treated as periodic."""
    c, h, w = img.shape
    if h != height:
        img = F.interpolate(img[None], size=(height, w), mode="bilinear", align_corners=False,
                            antialias=height < h)[0]
    if w == width:
        return img
    if width < w:  # minifying: antialiased, on three copies side by side so the ends wrap
        tiled = torch.cat([img, img, img], dim=-1)[None]
        out = F.interpolate(tiled, size=(height, 3 * width), mode="bilinear", align_corners=False, antialias=True)[0]
        return out[..., width:2 * width].contiguous()
    xc = (torch.arange(width, dtype=torch.float64) + 0.5) * (w / width) - 0.5
    x0 = xc.floor()
    fx = (xc - x0).float()
    return torch.lerp(img[..., torch.remainder(x0.long(), w)], img[..., torch.remainder(x0.long() + 1, w)], fx)


def _row_elevations(height: int) -> torch.Tensor:
    """Elevation (radians) of each equirect row centre, [H] float64."""
    return (0.5 - (torch.arange(height, dtype=torch.float64) + 0.5) / height) * math.pi


def _col_azimuths(width: int) -> torch.Tensor:
    """Azimuth (radians, counter-clockwise from +X) of each equirect column centre, [W] float64."""
    return (0.5 - (torch.arange(width, dtype=torch.float64) + 0.5) / width) * 2 * math.pi


def _direction(az_deg: float, el_deg: float) -> tuple:
    a, e = math.radians(az_deg), math.radians(el_deg)
    return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


def _pixel_solid_angles(height: int) -> torch.Tensor:
    """Solid angle of one pixel of each row of an equirect [H, 2H], [H] float64."""
    edges = (0.5 - torch.arange(height + 1, dtype=torch.float64) / height) * math.pi
    return (edges[:-1].sin() - edges[1:].sin()) * (2 * math.pi / (2 * height))


def _circular_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur along the last axis, circular: x [C, W] with sigma [R] (columns) ->
    [C, R, W], one blur per sigma (in the Fourier domain: any sigma costs the same)."""
    w = x.shape[-1]
    freq = torch.fft.rfftfreq(w, dtype=torch.float64)
    gain = torch.exp(-2 * math.pi ** 2 * sigma.double()[:, None] ** 2 * freq[None] ** 2).float()
    return torch.fft.irfft(torch.fft.rfft(x.float(), dim=-1)[:, None] * gain[None], n=w, dim=-1)


def _plane_tile(tex: torch.Tensor) -> torch.Tensor:
    """A detail texture [C, K, W] as one period of a plane texture tiled in one axis and mirrored
    in the other: [C, 2K + 1, W + 1], its last row and column repeating the first (for bilinear)."""
    tile = torch.cat([tex, tex.flip(1)], dim=1)  # mirrored: periodic in both axes, [C, 2K, W]
    tile = torch.cat([tile, tile[:, :1]], dim=1)
    return torch.cat([tile, tile[..., :1]], dim=-1).contiguous()


def _plane_radius(elev: torch.Tensor, texel: float) -> torch.Tensor:
    """Distance along a horizontal plane at unit distance, in texels, of view directions at
    angles ``elev`` [R] (radians) from the plane's horizon: [R] float64."""
    return 1.0 / torch.tan(elev.double().clamp(min=1e-3)) / texel


def _plane_detail(tile: torch.Tensor, radius: torch.Tensor, azim: torch.Tensor) -> torch.Tensor:
    """Sample a plane texture (``_plane_tile``, [C, P + 1, Q + 1]) for view directions at
    ``radius`` [R] texels from the point under (or over) the eye and azimuths [W]: [C, R, W].
    Texture that shrinks with distance, as on a real ground (or cloud deck), and is regular at
    the pole (no pinch, no radial streaks)."""
    p, q = tile.shape[1] - 1, tile.shape[2] - 1
    r = radius.float()[:, None]
    grid = torch.empty(1, len(radius), len(azim), 2)
    # (align_corners=True: -1 is texel 0, +1 the repeated texel 0 one period on.) Coordinates as
    # fractions of each period, shifted positive so that frac() wraps them (cheaper than
    # remainder); the shift stays small, so float32 keeps a fine fraction.
    for axis, trig, period in ((0, azim.cos(), q), (1, azim.sin(), p)):
        g = grid[0, ..., axis]
        shift = math.ceil(float(r.max()) / period) + 1
        torch.mul(r / period, trig.float()[None], out=g)
        g.add_(shift).frac_().mul_(2.0).sub_(1.0)
    return F.grid_sample(tile[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _detail_texture(rows: torch.Tensor, clamp: float = 1.3, sigma: float = _DETAIL_SIGMA,
                    compiled: bool = False) -> torch.Tensor:
    """Band rows [C, K, W] (linear) -> their fine detail: each row's ratio to its own Gaussian
    blur of ``sigma`` columns (circular across the seam), [C, K, W]. Blurring along rows only
    keeps horizontal edges (a shore, a skyline, the band's gradient) out: laid on a plane they
    would draw long lines; texture and vertical detail stay. ``compiled``: one pass of the kernels
    (the blur's taps cut at 5 sigma) whose result is in channels-last memory, as the plane's
    sampling reads it."""
    c, k, w = rows.shape
    from . import kernels
    if c == 3 and compiled and kernels.available():
        r = math.ceil(5 * sigma)
        taps = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma * sigma))
        try:
            return kernels.detail_rows(rows, taps / taps.sum(), 1 / clamp, clamp)
        except kernels.KernelFailure:
            pass
    local = _circular_blur(rows.reshape(c * k, w), torch.tensor([sigma]))[:, 0].reshape(c, k, w)
    # Clamped (+-30% on planes): texture survives, the odd hard feature does not dominate.
    return (rows / local.clamp(min=1e-6)).clamp(1 / clamp, clamp)


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


# ----------------------------------------------------------------------------------------------
# The band: placement, skyline, sun.

def _band_rows(strip_h: int, height: int, horizon: float, strip_scale: float,
               strip_horizon: float = 0.5) -> tuple[int, int]:
    """First row and the row after the band in an equirect of ``height`` rows (as strip_to_equirect)."""
    rows = max(1, round(strip_h * strip_scale))
    top = round(horizon * height - strip_horizon * rows)
    return top, top + rows


def _skyline(lum: torch.Tensor) -> torch.Tensor:
    """Sky mask of the band [K, W] from its luminance: per column, the rows from the top down
    that stay at least half as bright as the top row's neighbourhood (terrain is darker)."""
    ref = _circular_blur(lum[:2].mean(0, keepdim=True), torch.tensor([3.0]))[0, 0]  # [W]
    dark = lum < 0.5 * ref[None]
    k = lum.shape[0]
    depth = torch.where(dark.any(0), dark.byte().argmax(0), k)  # the first dark row
    return torch.arange(k)[:, None] < depth[None]


def _eroded_sky(skymask: torch.Tensor, k: int) -> torch.Tensor:
    """The sky mask's first ``k`` rows less a pixel round the terrain (a 3 x 3 erosion, circular
    across the seam; rows outside 0 .. k - 1 do not count): [k, W] bool. The mask holds the
    first depth rows of each column, so the eroded one holds min(neighbours' depths) - 1."""
    k = min(k, skymask.shape[0])  # (a band of one row asks for two)
    d = skymask.sum(0).clamp(max=k)
    low = torch.minimum(torch.minimum(d.roll(1), d), d.roll(-1))
    e = torch.where(low >= k, k, (low - 1).clamp(min=0))
    return torch.arange(k)[:, None] < e[None]


def _core3(lum: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """3 x 3 means of lum [K, W] for its rows a .. b - 1: [b - a, W] (circular across the seam;
    outside rows 0 .. K - 1 nothing counts)."""
    k = lum.shape[0]
    lo, hi = max(0, a - 1), min(k, b + 1)
    rows = lum[lo:hi]
    padded = torch.cat([rows[:, -2:], rows, rows[:, :2]], dim=-1)[None, None]
    core = F.avg_pool2d(padded, 3, stride=1, padding=(1, 0), count_include_pad=False)[0, 0, :, 1:-1]
    return core[a - lo:a - lo + (b - a)]


def _find_sun(lum: torch.Tensor, sky: torch.Tensor, top: int, height: int) -> Optional[tuple]:
    """(azimuth, elevation) in degrees of the brightest sky region of the band (luminance lum
    [K, W], sky mask [K, W]), if it is bright enough to be a sun (its 3x3 core at least the
    tone-map shoulder) and compact (at most 5% of the sky that bright); else None (night,
    overcast)."""
    lum = lum * sky  # [K, W]
    k, w = lum.shape
    if k < 3:
        return None
    # Only rows near a pixel at the shoulder can hold a core that reaches it; the search below
    # reads cores up to three rows beyond them (a row either side, then a vertical 5-mean).
    hot = (lum >= SHOULDER).any(1).nonzero().flatten()
    if len(hot) == 0:
        return None
    a, b = max(0, int(hot[0]) - 3), min(k, int(hot[-1]) + 4)
    core = _core3(lum, a, b)
    if float(core.max()) < SHOULDER:
        return None
    # A sun is a compact bright spot: a sky bright all over (overcast, haze, clipped white)
    # has no sun to find.
    if float((core >= SHOULDER).sum()) > _SUN_MAX_SKY_FRACTION * float(sky.sum()):
        return None
    # The sun is the brightest region, not the brightest pixel: a wide blur of the luminance.
    sigma = max(2.0, w / 360.0 * 1.5)
    wide = _circular_blur(core, torch.tensor([sigma]))[:, 0]  # [b - a, W]
    wide = F.avg_pool2d(F.pad(wide[None, None], (0, 0, 2, 2), mode="replicate"), (5, 1), stride=1)[0, 0]
    wide = torch.where(core >= SHOULDER, wide, torch.zeros_like(wide))
    idx = int(wide.argmax())
    ry, rx = divmod(idx, w)
    ry += a
    # Centroid of the saturated pixels around it (columns unwrapped round the seam).
    rad = max(2, round(w / 360.0 * 1.5))
    y0, y1 = max(0, ry - rad), min(k, ry + rad + 1)
    ys = torch.arange(y0, y1)
    xs = torch.arange(rx - rad, rx + rad + 1)
    patch = _core3(lum, y0, y1)[:, torch.remainder(xs, w)]
    wgt = (patch >= 0.95 * float(patch.max())).double()
    cy = float((wgt.sum(1) * ys.double()).sum() / wgt.sum())
    cx = float((wgt.sum(0) * xs.double()).sum() / wgt.sum())
    az = (0.5 - (cx + 0.5) / w) * 360.0
    el = (0.5 - (top + cy + 0.5) / height) * 180.0
    return ((az + 180.0) % 360.0 - 180.0, el)


def _sun_visible(az: float, el: float, sky: torch.Tensor, top: int, bottom: int, height: int, width: int) -> bool:
    if el <= 0:
        return False
    y = (0.5 - el / 180.0) * height - 0.5
    if y < top - 0.5:
        return True  # above the band
    if y > bottom - 0.5:
        return False
    x = int(math.floor((0.5 - az / 360.0) % 1.0 * width)) % width
    return bool(sky[min(max(round(y) - top, 0), sky.shape[0] - 1), x])


def _sun_disk(height: int, az: float, el: float, diameter_deg: float) -> tuple[slice, torch.Tensor]:
    """Rows and coverage [R, W] (0..1, antialiased over one row's angle) of the sun's disk."""
    width = 2 * height
    r = math.radians(diameter_deg) / 2
    row_ang = math.pi / height
    el_r = math.radians(el)
    lat = _row_elevations(height)
    rows = ((lat - el_r).abs() <= r + 2 * row_ang).nonzero().flatten()
    if len(rows) == 0:
        return slice(0, 0), torch.zeros(0, width)
    sl = slice(int(rows.min()), int(rows.max()) + 1)
    lat = lat[sl][:, None]
    lon = _col_azimuths(width)[None] - math.radians(az)
    cosd = lat.sin() * math.sin(el_r) + lat.cos() * math.cos(el_r) * lon.cos()
    dist = torch.acos(cosd.clamp(-1, 1))
    cover = ((r - dist) / row_ang + 0.5).clamp(0, 1)
    return sl, cover.float()


# ----------------------------------------------------------------------------------------------
# The sky.

def complete_sky(
    strip01: torch.Tensor,
    *,
    height: Optional[int] = None,
    horizon: float = 0.5,
    strip_scale: float = 1.0,
    strip_horizon: float = 0.5,
    sky: str = "physical",
    sun: Union[str, Sequence[float]] = "auto",
    sun_disk: bool = True,
    exposure: float = 0.0,
    cap_blur: float = 2.0,
) -> tuple[torch.Tensor, SkyInfo]:
    """Complete a 360° strip into a full-sphere sky: equirect radiance [3, height, 2 * height].

    - ``strip01`` [3, h, w] sRGB in [0, 1], a wrapped 360° strip (w even).
    - ``height``: equirect height (default w / 2, the strip's own resolution); the strip is
      resampled (periodically) to 2 * height columns.
    - ``horizon``, ``strip_scale``: where the band goes and how tall it is, as in
      ``projection.strip_to_equirect`` (strip_scale 1: square pixels, ``360 * h / w`` degrees);
      ``strip_horizon``: where the horizon is inside the strip (fraction of its height), as there.
    - ``sky``: "physical" (daylight dome fitted to the band, ground plane, sun) or "blur"
      (``strip_to_equirect``'s blurred caps, ``cap_blur`` as there, calibrated like the band; no
      sun disk).
    - ``sun``: "auto" (the band's brightest sky region, if bright enough to be a sun), "none",
      or (azimuth_deg, elevation_deg), which wins over a sun painted in the band.
    - ``sun_disk``: False leaves the disk out of the image (the sun stays in SkyInfo).
    - ``exposure`` (EV): the image is radiance * 2^-exposure; ``tone_map(hdr, exposure)`` shows
      the band as the strip had it.
    Returns (hdr float32 [3, height, 2 * height], SkyInfo).
    """
    if not isinstance(strip01, torch.Tensor) or strip01.ndim != 3 or strip01.shape[0] != 3 \
            or not strip01.is_floating_point():
        shape = tuple(strip01.shape) if hasattr(strip01, "shape") else type(strip01).__name__
        raise AlisError(f"complete_sky: expected a float strip [3, H, W] in [0, 1], got {shape}")
    _, h, w = strip01.shape
    if w % 2 or w < 8:
        raise AlisError(f"complete_sky: strip width must be even and at least 8 (360° = 2 x 180°), got {w}")
    if sky not in SKY_MODES:
        raise AlisError(f"complete_sky: sky must be one of {', '.join(SKY_MODES)}; got {sky!r}")
    height = w // 2 if height is None else int(height)
    if height < 4:
        raise AlisError(f"complete_sky: height must be at least 4, got {height}")
    if strip_scale <= 0:
        raise AlisError(f"complete_sky: strip_scale must be positive, got {strip_scale}")
    explicit = None
    if isinstance(sun, str):
        if sun not in ("auto", "none"):
            raise AlisError(f"complete_sky: sun must be 'auto', 'none' or (azimuth_deg, elevation_deg); got {sun!r}")
    else:
        try:
            explicit = (float(sun[0]), float(sun[1]))
            if len(sun) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise AlisError(f"complete_sky: sun must be 'auto', 'none' or (azimuth_deg, elevation_deg); "
                            f"got {sun!r}") from None
        if not -90.0 <= explicit[1] <= 90.0 or not math.isfinite(explicit[0]):
            raise AlisError(f"complete_sky: sun elevation must be in [-90, 90] degrees, got {explicit[1]}")

    width = 2 * height
    strip_h = max(1, round(h * width / w))
    strip = _resample_loop(strip01.detach().to("cpu", torch.float32), width, strip_h)
    top, bottom = _band_rows(strip_h, height, horizon, strip_scale, strip_horizon)
    if top < 1 or bottom > height - 1:
        raise AlisError(
            f"complete_sky: the strip would cover rows {top}..{bottom - 1} of a {height}-row image; it must "
            "leave at least one row at each pole: lower strip_scale or move horizon nearer 0.5")
    rows = bottom - top
    band01 = strip if rows == strip_h else F.interpolate(
        strip[None], size=(rows, width), mode="bilinear", align_corners=False, antialias=rows < strip_h)[0]
    hdr = torch.empty(3, height, width, dtype=torch.float32)
    sums = torch.zeros(3, height, dtype=torch.float64)  # each row's sum (the sun's irradiance needs them)
    # The compiled passes (numba) for large skies only: loading them costs a process about 0.7 s,
    # more than PyTorch's slower passes cost below about 2^24 pixels. Chosen by size alone, so a
    # sky is the same whatever the process ran before.
    from . import kernels
    compiled = width * height >= SKY_KERNEL_MIN_PIXELS and kernels.available()
    lum = _calibrate_into(hdr, top, band01, sums, luminance=True, compiled=compiled)
    band = hdr[:, top:bottom]  # [3, rows, W] radiance at exposure 0
    edge_deg = lambda row: 90.0 - 180.0 * row / height  # noqa: E731  (elevation of a row edge)
    band_el = (edge_deg(bottom), edge_deg(top))
    scale = float(2.0 ** -exposure)

    skymask = _skyline(lum)
    found = _find_sun(lum, skymask, top, height) if sun == "auto" else None
    sun_pos = explicit if explicit is not None else found

    if sky == "blur":
        from .projection import strip_to_equirect
        eq01 = strip_to_equirect(strip, horizon=horizon, strip_scale=strip_scale, strip_horizon=strip_horizon,
                                 cap_blur=cap_blur).clamp(0, 1)
        _calibrate_into(hdr, 0, eq01, sums, compiled=compiled)
        turbidity = None
    else:
        turbidity = _fill_dome(hdr, sums, band, skymask, top, sun_pos, compiled)
        _fill_ground(hdr, sums, band, bottom, compiled)

    sun_info = None
    if sun_pos is not None:
        az, el = sun_pos
        az = (az + 180.0) % 360.0 - 180.0
        t_sun = 3.0 if turbidity is None else turbidity
        lat = _row_elevations(height)
        omega = _pixel_solid_angles(height)
        upper = int((lat > 0).sum())
        row_sums = _luminance(sums[:, :upper])  # [rows]
        sky_irr = float((row_sums * lat[:upper].sin() * omega[:upper]).sum())
        irradiance = _sun_to_sky(el) * sky_irr
        color = _sun_color(el, t_sun)
        visible = _sun_visible(az, el, skymask, top, bottom, height, width)
        sun_info = SunInfo(azimuth_deg=az, elevation_deg=el, direction=_direction(az, el),
                           angular_diameter_deg=SUN_ANGULAR_DIAMETER_DEG, irradiance=irradiance * scale,
                           color=color, visible=visible, source="explicit" if explicit else "auto")
        if sun_disk and visible and sky == "physical":
            sl, cover = _sun_disk(height, az, el, SUN_ANGULAR_DIAMETER_DEG)
            solid = float((cover.double() * omega[sl][:, None]).sum())
            if solid > 0:
                radiance = irradiance / solid
                rows_idx = torch.arange(height)[sl]
                in_band = (rows_idx >= top) & (rows_idx < bottom)
                if bool(in_band.any()):  # terrain in front of the sun hides that part of it
                    cover = cover.clone()
                    cover[in_band] *= skymask[rows_idx[in_band] - top].float()
                hdr[:, sl] += cover[None] * torch.tensor(color, dtype=torch.float32)[:, None, None] * radiance
    if scale != 1.0:
        hdr.mul_(scale)
    info = SkyInfo(sun=sun_info, exposure=float(exposure), band_elevation_deg=band_el, sky=sky,
                   turbidity=turbidity, height=height)
    return hdr, info


# Continuation parameters. Blur rates are columns of Gaussian sigma per row of distance from the
# band (as strip_to_equirect's cap_blur); ramps are the angles over which the plane's texture
# takes over from the band's edge row; texel angles are where the plane's texture has the band's
# own pixel size.
_SKY_BLUR = 2.0
_SKY_RAMP_DEG = 4.0
_SKY_TEXEL_AT_DEG = 6.0
_GROUND_BLUR = 2.0
_GROUND_RAMP_DEG = 3.0
_GROUND_TEXEL_AT_DEG = 20.0
_COARSE = 4  # rows beyond the ramp compute their smooth part on every 4th column
_COARSE_ROW_DEG = 0.15  # ... and on rows about this far apart (every row of skies up to 1200 rows high)


def _fit_model(band: torch.Tensor, skymask: torch.Tensor, top: int, height: int, model_at) -> tuple[float, float]:
    """Fit the dome to the band's sky rows: (turbidity, chroma): the turbidity whose vertical
    luminance gradient best matches theirs, and how much of the model's colour gradient to keep
    (0: the band's top-row colours all the way up; 1: the model's), by least squares on the
    change of each channel's share of luminance from the band's top row to mid-sky."""
    depth = skymask.sum(0)  # [W] sky rows per column
    r1 = int(depth.float().median()) // 2
    if r1 < 2 or int(skymask[r1].sum()) < 8:
        return 3.0, 1.0
    cols = skymask[r1]
    rows = band[:, [0, r1]][..., cols].clamp(min=1e-6)  # [3, 2, N]
    lum = _luminance(rows)
    want = (lum[0].log() - lum[1].log()).median()
    lat = _row_elevations(height)[[top, top + r1]]  # [2]
    best, best_err = 3.0, float("inf")
    for t in _TURBIDITIES:
        m = _luminance(model_at(t, lat, band.shape[-1], 1.0)).expand(2, cols.shape[0])
        got = (m[0, cols].log() - m[1, cols].log()).median()
        err = abs(float(got - want))
        if err < best_err:
            best, best_err = t, err
    share = (rows / lum[None]).log()  # [3, 2, N]
    d_band = (share[:, 0] - share[:, 1]).median(-1).values  # [3]
    m = model_at(best, lat, band.shape[-1], 1.0).expand(3, 2, band.shape[-1])[..., cols]
    m_share = (m / _luminance(m)[None]).log()
    d_model = (m_share[:, 0] - m_share[:, 1]).median(-1).values
    denom = float((d_model * d_model).sum())
    chroma = float((d_band * d_model).sum()) / denom if denom > 1e-12 else 1.0
    return best, min(max(chroma, 0.0), 1.0)


def _lerp_map(n_out: int, positions: torch.Tensor, periodic: bool) -> tuple:
    """Linear interpolation from samples at ``positions`` (ascending, in output units; [n]) to
    outputs 0 .. n_out - 1: (i0, i1, weight) with out = lerp(s[i0], s[i1], weight). periodic:
    positions are column centres of a loop (n_out / n apart), wrapping round its ends; else
    outputs outside the positions take the nearest one."""
    x = torch.arange(n_out, dtype=torch.float64)
    n = len(positions)
    if periodic:
        step = n_out / n
        xc = (x - float(positions[0])) / step
        i0 = xc.floor()
        return (torch.remainder(i0.long(), n), torch.remainder(i0.long() + 1, n), (xc - i0).float())
    i1 = torch.searchsorted(positions.double().contiguous(), x, right=True).clamp(1, n - 1) if n > 1 \
        else torch.zeros(n_out, dtype=torch.long)
    i0 = (i1 - 1).clamp(min=0)
    p0, p1 = positions.double()[i0], positions.double()[i1]
    w = ((x - p0) / (p1 - p0).clamp(min=1e-12)).clamp(0, 1)
    return i0, i1, w.float()


def _smooth_times_detail(out: torch.Tensor, y0: int, smooth: torch.Tensor, rows: tuple, cols: tuple,
                         mirror: Optional[torch.Tensor], mrow: torch.Tensor, ramp: torch.Tensor,
                         detail: torch.Tensor, radius: torch.Tensor, az: torch.Tensor, sums: torch.Tensor,
                         compiled: bool) -> None:
    """out[:, y0:y0 + n] = smooth (interpolated by the maps rows, cols) * detail, detail = the
    texture ``detail`` [3, K, Q] on a plane (``_plane_tile``) at ``radius`` [n] texels and
    azimuths ``az`` [W], lerped from
    ``mirror`` [3, K, W] rows ``mrow`` by ``ramp`` where mrow >= 0; sums[:, y0:y0 + n] (float64)
    the rows' sums. ``compiled``: one pass of the compiled kernels (the PyTorch operations below
    otherwise: the same values)."""
    from . import kernels
    p, q = 2 * detail.shape[1], detail.shape[2]
    if compiled and kernels.available():  # (off for good once a kernel failed here)
        try:
            kernels.sky_rows(out, y0, smooth, rows, cols, mirror, mrow, ramp, detail, radius / q, radius / p,
                             az.cos(), az.sin(), sums)
            return
        except kernels.KernelFailure:
            pass
    (r0, r1, wr), (c0, c1, wc) = rows, cols
    sm = torch.lerp(smooth[:, r0], smooth[:, r1], wr[None, :, None])
    sm = torch.lerp(sm[..., c0], sm[..., c1], wc)
    det = _plane_detail(_plane_tile(detail), radius, az)
    if mirror is not None:
        det = torch.lerp(mirror[:, mrow.clamp(min=0)], det, torch.where(mrow >= 0, ramp, 1.0)[None, :, None])
    torch.mul(sm, det, out=out[:, y0:y0 + len(r0)])
    sums[:, y0:y0 + len(r0)] = out[:, y0:y0 + len(r0)].sum(-1)


def _continue_band(out: torch.Tensor, sums: torch.Tensor, y0: int, edge: torch.Tensor, mirror: torch.Tensor,
                   lat: torch.Tensor, dist: torch.Tensor, model_at, angle: torch.Tensor, angle0: float,
                   detail: torch.Tensor, texel: float, ramp_deg: float, blur: float, compiled: bool) -> None:
    """Fill rows y0 .. y0 + R of ``out`` [3, H, W] (rows at elevations ``lat`` [R], ``dist`` [R]
    rows from the band) with model(lat) * gain * detail. gain: ``edge`` [3, W] (the band's edge
    row, smoothed, over the model there) continued with a widening circular blur that ends in
    its mean at the pole. detail: next to the band, the band's own fine detail ``mirror``
    [3, K, W] (row 0 at the band's edge) reflected across the edge, so the first rows out step no
    more than the band's rows do; then, fading in over ``ramp_deg``, the texture ``detail`` on a
    plane, seen at ``angle`` [R] degrees from the plane's horizon (``angle0`` at the band).
    model_at(lat, columns) -> [3, R, cols], or None (a uniform model: the ground). Rows beyond
    the ramp, whose model * gain is already smooth, compute it on a coarser grid (every
    _COARSE-th column, rows _COARSE_ROW_DEG apart) and interpolate."""
    width = out.shape[-1]
    az = _col_azimuths(width)
    stretch = 1.0 / lat.cos().clamp(min=1e-6)
    dmax = float(dist.max())
    near = (angle - angle0) < ramp_deg  # [R]: within the ramp (contiguous, next to the band)
    f = _COARSE if width % _COARSE == 0 and width >= 16 * _COARSE else 1
    if f > 1:  # the coarse columns must resolve the gain's blur: at least f columns of sigma
        near |= blur * dist.double() * stretch < 2 * f
    idx_near = near.nonzero().flatten()
    idx_far = (~near).nonzero().flatten()

    def smooth_part(idx: torch.Tensor, e: torch.Tensor, cols: int) -> torch.Tensor:
        d = dist[idx].double()
        g = _circular_blur(e, blur * d * stretch[idx] * cols / width)
        mean = e.double().mean(-1).float()[:, None, None]
        g = torch.lerp(g, mean.expand_as(g), ((d / dmax) ** 2).float()[None, :, None])
        if model_at is not None:
            g = g * model_at(lat[idx], cols)
        return g.contiguous()

    # Channels last, as the compiled pass samples them (no copy if they are already).
    detail = detail.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    mirror = mirror.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    radius = _plane_radius(torch.deg2rad(angle), texel)
    identity = (torch.arange(width), torch.arange(width), torch.zeros(width))
    if len(idx_near):
        lo, hi = int(idx_near[0]), int(idx_near[-1]) + 1  # contiguous
        k = mirror.shape[1]
        m = torch.remainder(dist[lo:hi] - 1, 2 * k)
        m = torch.where(m < k, m, 2 * k - 1 - m)  # reflected again beyond K rows
        ramp = _smoothstep((angle[lo:hi] - angle0) / ramp_deg).float()
        rows = (torch.arange(hi - lo), torch.arange(hi - lo), torch.zeros(hi - lo))
        _smooth_times_detail(out, y0 + lo, smooth_part(idx_near, edge, width), rows, identity, mirror, m, ramp,
                             detail, radius[lo:hi], az, sums, compiled)
    if len(idx_far):
        lo, hi = int(idx_far[0]), int(idx_far[-1]) + 1  # contiguous
        step = min(max(int(_COARSE_ROW_DEG * out.shape[1] / 180.0), 1), _COARSE)
        picks = torch.unique(torch.cat([torch.arange(0, hi - lo, step), torch.tensor([hi - lo - 1])]))
        coarse = edge.reshape(3, width // f, f).mean(-1) if f > 1 else edge
        grid = smooth_part(idx_far[picks], coarse, width // f)
        rows = _lerp_map(hi - lo, picks, periodic=False)
        cols = _lerp_map(width, (torch.arange(width // f, dtype=torch.float64) + 0.5) * f - 0.5, periodic=True)
        _smooth_times_detail(out, y0 + lo, grid, rows, cols, None, torch.full((hi - lo,), -1), torch.ones(hi - lo),
                             detail, radius[lo:hi], az, sums, compiled)


def _fill_dome(hdr: torch.Tensor, sums: torch.Tensor, band: torch.Tensor, skymask: torch.Tensor, top: int,
               sun_pos: Optional[tuple], compiled: bool) -> float:
    """Rows above the band: Preetham's sky fitted to the band, with its clouds. Returns turbidity."""
    _, height, width = hdr.shape
    lat_all = _row_elevations(height)
    if sun_pos is not None:
        s_az, s_el = math.radians(sun_pos[0]), math.radians(max(sun_pos[1], 0.5))
        sun_zenith = math.pi / 2 - s_el
    else:
        sun_zenith = None

    def model_at(t: float, lat: torch.Tensor, cols: int, chroma: float) -> torch.Tensor:  # [R] -> [3, R, cols]
        cos_theta = lat.sin().float()[:, None]
        if sun_zenith is None:
            rgb = _preetham(t, None, cos_theta, None).expand(3, len(lat), cols)
        else:
            az = _col_azimuths(cols)
            cosg = lat.sin()[:, None] * math.sin(s_el) + lat.cos()[:, None] * math.cos(s_el) * (az[None] - s_az).cos()
            rgb = _preetham(t, sun_zenith, cos_theta, torch.acos(cosg.clamp(-1, 1)).float())
        if chroma == 1.0:
            return rgb
        y = _luminance(rgb)[None]
        return y * (rgb / y) ** chroma  # the model's luminance, a fraction of its colour change

    turbidity, chroma = _fit_model(band, skymask, top, height, model_at)
    lat = lat_all[:top]
    # Clouds: the fine detail of the band's upper sky rows, laid on a cloud deck (a plane above).
    k = max(2, min(int(skymask.sum(0).float().median()), band.shape[1] // 2))
    mirror = _detail_texture(band[:, :k], clamp=4.0, compiled=compiled)
    smooth = _circular_blur(band[:, 0], torch.tensor([_DETAIL_SIGMA]))[:, 0]
    edge = smooth / model_at(turbidity, lat_all[top:top + 1], width, chroma)[:, 0]
    detail = mirror.clamp(1 / 1.3, 1.3)
    # Only the sky's texture goes up: terrain reaching into these rows (and a pixel around it) is left out.
    detail = torch.where(_eroded_sky(skymask, k)[None], detail, 1.0)
    e_top = (0.5 - top / height) * 180.0  # the band's top edge
    psi0 = max(e_top, 2.0)
    # Elevation above the deck's horizon: the identity when the band's top is above 2°.
    psi = psi0 + (torch.rad2deg(lat) - e_top) * (90.0 - psi0) / (90.0 - e_top)
    texel = 2 * math.pi / width / math.tan(math.radians(min(psi0 + _SKY_TEXEL_AT_DEG, 89.0)))
    _continue_band(hdr, sums, 0, edge, mirror, lat, torch.arange(top, 0, -1),
                   lambda la, c: model_at(turbidity, la, c, chroma),
                   psi, psi0, detail, texel, _SKY_RAMP_DEG, _SKY_BLUR, compiled)
    return turbidity


def _fill_ground(hdr: torch.Tensor, sums: torch.Tensor, band: torch.Tensor, bottom: int, compiled: bool) -> None:
    """Rows below the band: its bottom rows continued onto a ground plane, colours from the band."""
    _, height, width = hdr.shape
    lat = _row_elevations(height)[bottom:]
    k = max(2, band.shape[1] // 4)
    mirror = _detail_texture(band[:, -k:].flip(1), clamp=4.0, compiled=compiled)  # row 0 = the band's bottom row
    detail = mirror.clamp(1 / 1.3, 1.3)
    edge = _circular_blur(band[:, -1], torch.tensor([_DETAIL_SIGMA]))[:, 0]
    e_bot = (0.5 - bottom / height) * 180.0
    phi0 = max(-e_bot, 2.0)
    # Depression angle below the ground's horizon: the identity when the band ends below -2°.
    phi = phi0 + (e_bot - torch.rad2deg(lat)) * (90.0 - phi0) / (90.0 + e_bot)
    texel = 2 * math.pi / width / math.tan(math.radians(min(phi0 + _GROUND_TEXEL_AT_DEG, 89.0)))
    _continue_band(hdr, sums, bottom, edge, mirror, lat, torch.arange(1, height - bottom + 1), None,
                   phi, phi0, detail, texel, _GROUND_RAMP_DEG, _GROUND_BLUR, compiled)
