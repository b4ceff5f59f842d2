"""The choices every front end shares (CLI, ComfyUI nodes, Blender extension, trainer), defined once.

Front ends take their option names, ranges and defaults from here and validate through the checks
below, so that a value means the same everywhere and the error names the option the user set.
This module imports no torch (the Blender extension carries a copy for its UI, see
blender_addon/build.py); the few helpers that need torch import it when called.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import AlisError

# Noise of the synthesis layers: none (deterministic, the default), the layers' constant buffers,
# or fresh random noise from the noise seed.
NOISE_MODES = ("none", "const", "random")

# Compute dtypes by name. float32 is exact; bfloat16 and float16 are faster where the hardware has them.
DTYPE_NAMES = ("float32", "bfloat16", "float16")

# Devices: "auto" picks CUDA, then Apple MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")

# Truncation psi (1 = no truncation, 0.7 = typical tamer scenes).
PSI_MIN, PSI_MAX = 0.0, 2.0

# Full-sphere skies (alis_core.sky): what fills the sphere beyond the strip, and where the sun is.
SKY_MODES = ("physical", "blur")  # a daylight dome + ground plane + sun; or the strip's rows blurred (no sun)
SUN_MODES = ("auto", "none", "manual")  # manual: an azimuth and an elevation in degrees
EXPOSURE_MIN, EXPOSURE_MAX = -20.0, 20.0  # EV

# Upper bounds that keep a typo from asking for terabytes; the official LHQ 1024 checkpoint and
# its 8192 px 4-anchor loop are far inside them.
MAX_ANCHORS = 4096
MAX_SEED = 2 ** 63 - 1

# Optimisation steps of a photo inversion (alis_core.invert): about 39 dB on the bundled model's own
# frames (>= 27 is tested) for about 13 s of CPU time per 128 px frame (bench/bench_invert.py).
INVERT_STEPS = 100


@dataclass(frozen=True)
class FrontEndDefaults:
    """What one front end does when the user says nothing."""

    psi: float  # truncation psi
    anchors: int  # anchors of a panorama when neither a count nor a width is given
    fast: bool  # the fast formulation (bfloat16-friendly, fused CPU path) rather than the official order
    context: bool  # patch context: each batch of patches computed with its neighbouring columns


# Each front end's defaults, recorded as they are (changing one changes its pictures).
LIBRARY = FrontEndDefaults(psi=1.0, anchors=6, fast=False, context=False)  # the official model's pixels
CLI = FrontEndDefaults(psi=1.0, anchors=6, fast=True, context=True)
COMFYUI = FrontEndDefaults(psi=0.7, anchors=8, fast=True, context=True)
BLENDER = FrontEndDefaults(psi=0.7, anchors=8, fast=True, context=True)


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    """`value` if it is one of `choices`, else one clear error naming `option`."""
    if value not in choices:
        raise AlisError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_noise_mode(value: str, option: str = "noise_mode") -> str:
    return check_choice(value, NOISE_MODES, option)


def check_psi(value, option: str = "truncation psi") -> float:
    """psi as a float within [PSI_MIN, PSI_MAX] (NaN refused), else one clear error naming `option`."""
    try:
        psi = float(value)
    except (TypeError, ValueError):
        psi = math.nan
    if not PSI_MIN <= psi <= PSI_MAX:  # also False for NaN
        raise AlisError(f"{option} must be within [{PSI_MIN:g}, {PSI_MAX:g}] (1 = no truncation, "
                        f"0.7 = typical), got {value}")
    return psi


def check_seed(value, option: str = "seed") -> int:
    """A seed as an int in [0, 2**63 - 1] (what torch.Generator.manual_seed takes)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise AlisError(f"{option} must be an integer in [0, 2**63 - 1], got {value!r}")
    return value


def torch_dtype(name: str, option: str = "dtype"):
    """A dtype name of DTYPE_NAMES -> the torch dtype."""
    import torch
    return getattr(torch, check_choice(name, DTYPE_NAMES, option))


def resolve_device(name: str, option: str = "--device"):
    """'auto' -> CUDA, then Apple MPS, then the CPU; an unavailable device is one clear error. -> torch.device"""
    import torch
    check_choice(name, DEVICES, option)
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AlisError(f"{option} cuda: no CUDA GPU is visible to this PyTorch; use cpu or auto")
    if name == "mps" and not has_mps:
        raise AlisError(f"{option} mps: Apple MPS is not available here; use cpu or auto")
    return torch.device(name)


def natural_width(num_anchors: int, anchor_spacing: int, wrap: bool) -> int:
    """Pixels a panorama of K anchors has: (K - 1) intervals, or K with wrap (the last joins the first)."""
    return (num_anchors if wrap else num_anchors - 1) * anchor_spacing


def anchors_for_width(width: int, anchor_spacing: int, wrap: bool) -> int:
    """The fewest anchors whose panorama is at least `width` pixels wide (2 at least)."""
    return max(2, math.ceil(width / anchor_spacing) + (0 if wrap else 1))


def check_float(value, option: str, low: float, high: float) -> float:
    """A finite float within [low, high], else one clear error naming `option`."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and low <= x <= high):
        raise AlisError(f"{option} must be a number within [{low:g}, {high:g}], got {value}")
    return x


def parse_sun(value, option: str = "--sun"):
    """'auto', 'none', 'AZ,EL' or (az, el) in degrees -> 'auto' | 'none' | (az, el). Azimuth is
    counter-clockwise from +X about +Z (Blender's world), elevation above the horizon."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
        return value.strip().lower()
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else []
    if len(parts) != 2:
        raise AlisError(f"{option} must be auto, none or AZIMUTH,ELEVATION in degrees (e.g. 60,30), got {value!r}")
    az = check_float(parts[0], f"{option} azimuth", -360.0, 360.0)
    el = check_float(parts[1], f"{option} elevation", -90.0, 90.0)
    return az, el


# Cube-map layouts (alis_core.export): today's six face files + the horizontal cross (the default),
# the faces alone, the cross alone, and single-image grids and strips (NxM = N columns by M rows,
# faces +X, -X, +Y, -Y, +Z, -Z row by row).
CUBEMAP_LAYOUTS = ("faces+cross", "faces", "cross", "3x2", "2x3", "6x1", "1x6")
# Game engines with an export preset (alis_core.export.PRESETS; docs/ENGINES.md).
EXPORT_TARGETS = ("unity", "unreal", "godot", "threejs", "babylon")
