"""Sky generation parameters: the contract between the Blender UI and the backend (no bpy).

The World panel fills a `SkyParams`; the backend turns it into a command line or a direct call.
Keeping it a frozen dataclass makes a run reproducible from its file name and easy to test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re

from .shared import options

MIN_WIDTH = 64
MAX_WIDTH = 16384
MAX_SEED = 2**31 - 1  # Blender's integer properties are 32-bit (alis_core takes up to 2**63 - 1)
DEFAULTS = options.BLENDER  # psi, anchors, fast, context when the user says nothing


@dataclasses.dataclass(frozen=True)
class SkyParams:
    """Everything one sky generation depends on.

    seed:        scene seed: the anchors' latents (integer in [0, 2**31 - 1]); also the noise seed
                 of noise mode "random".
    anchors:     number of anchors K; with wrap the strip closes into a 360° loop of K * spacing px.
    psi:         truncation psi in [options.PSI_MIN, options.PSI_MAX]; lower = more typical, less
                 varied landscapes.
    noise_mode:  noise of the synthesis layers, one of options.NOISE_MODES ("none": deterministic).
    width:       equirect width in px (height = width / 2).
    wrap:        close the panorama into a seamless loop (on by default: a sky must wrap).
    horizon:     where the horizon lands, as a fraction of the equirect height from the top
                 (0 = zenith, 0.5 = equator, 1 = nadir), as in alis_core.projection.strip_to_equirect.
    strip_scale: vertical stretch of the landscape strip (1 = square pixels); the sky and ground
                 caps fill the rest of the sphere.
    cap_blur:    how fast the sky/ground fill blurs away from the strip (Gaussian sigma in columns per row).
    sky:         what fills the sphere beyond the strip, one of options.SKY_MODES: "physical" (a daylight
                 dome fitted to the strip's sky, a ground plane, a sun) or "blur" (the strip's rows blurred).
    sun_mode:    one of options.SUN_MODES: "auto" (the strip's brightest sky region, if bright enough),
                 "none", or "manual" (sun_azimuth_deg, sun_elevation_deg).
    sun_azimuth_deg, sun_elevation_deg: the manual sun in degrees (azimuth counter-clockwise from +X
                 about +Z, elevation above the horizon); ignored unless sun_mode is "manual".
    sun_lamp:    light the scene with a Sun lamp synced to the sky's sun; the sun's disk is then left out
                 of the world image (no double light, less Cycles noise).
    exposure:    EV: the world image holds radiance x 2^-exposure (the lamp's strength follows).
    rotation:    Z rotation of the sky in radians (applied by the Mapping node in Blender, not baked).
    strength:    Background strength (Blender only).
    model:       the World's Model as typed (a model name or a checkpoint path; "" = the preference's
                 Checkpoint). Only the file name uses it (model_label): the operator resolves the checkpoint.
    photo:       "From Image": an absolute image path whose inversion starts the loop (alis generate
                 --from-photo; alis_core.invert.photo_loop_anchors); "" = anchors from the seed alone.
                 The loop always wraps then.
    """

    seed: int = 0
    anchors: int = DEFAULTS.anchors
    psi: float = DEFAULTS.psi
    noise_mode: str = "none"  # = alis_core.panorama's and the CLI's default
    width: int = 2048
    wrap: bool = True
    horizon: float = 0.5
    strip_scale: float = 1.0
    cap_blur: float = 2.0  # = alis_core.projection.strip_to_equirect default (the CLI has no flag for it yet)
    sky: str = "physical"  # = alis_core.sky.complete_sky's and the CLI's default
    sun_mode: str = "auto"
    sun_azimuth_deg: float = 0.0
    sun_elevation_deg: float = 30.0
    sun_lamp: bool = True
    exposure: float = 0.0
    rotation: float = 0.0
    strength: float = 1.0
    model: str = ""
    photo: str = ""

    @property
    def photo_tag(self) -> str:
        """8 hex digits of the photo's path and modification time ("" without a photo): an edited photo gets a new name."""
        if not self.photo:
            return ""
        mtime = os.stat(self.photo).st_mtime_ns if os.path.isfile(self.photo) else 0
        return hashlib.sha1(f"{self.photo}|{mtime}".encode("utf-8")).hexdigest()[:8]

    @property
    def model_label(self) -> str:
        """The model's part of the file name: a name as it is, a path's file stem; letters, digits, - and _."""
        value = self.model.strip()
        if not value:
            return ""
        stem = os.path.splitext(os.path.basename(value.replace("\\", "/").rstrip("/")))[0]
        return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:40]

    @property
    def sun_disk(self) -> bool:
        """Whether the world image holds the sun's disk: not when a Sun lamp gives that light instead."""
        return not self.sun_lamp

    @property
    def sun(self):
        """The sun as alis_core.sky.complete_sky and `alis --sun` take it: "auto", "none" or (az, el) in degrees."""
        if self.sun_mode == "manual":
            return (self.sun_azimuth_deg, self.sun_elevation_deg)
        return self.sun_mode

    def sun_arg(self) -> str:
        """The CLI's --sun value: auto, none or AZ,EL."""
        sun = self.sun
        return sun if isinstance(sun, str) else f"{sun[0]:g},{sun[1]:g}"

    @property
    def height(self) -> int:
        """Equirect height in px: half the width (2:1 latitude-longitude image)."""
        return self.width // 2

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the bad value and the fix."""
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed {self.seed} is out of range: use 0..{MAX_SEED}")
        if self.anchors < 2:
            raise ValueError(f"anchors {self.anchors} is too few: use at least 2")
        if not options.PSI_MIN <= self.psi <= options.PSI_MAX:
            raise ValueError(f"psi {self.psi} is out of range: use {options.PSI_MIN:g}..{options.PSI_MAX:g}")
        if self.noise_mode not in options.NOISE_MODES:
            raise ValueError(f"noise {self.noise_mode!r} is unknown: use one of {', '.join(options.NOISE_MODES)}")
        if not MIN_WIDTH <= self.width <= MAX_WIDTH or self.width % 2:
            raise ValueError(f"resolution {self.width} is invalid: use an even width in {MIN_WIDTH}..{MAX_WIDTH}")
        if not 0.0 <= self.horizon <= 1.0:
            raise ValueError(f"horizon {self.horizon} is out of range: use 0..1")
        if not 0.0 < self.strip_scale <= 4.0:
            raise ValueError(f"strip scale {self.strip_scale} is out of range: use a value in (0, 4]")
        if not 0.0 <= self.cap_blur <= 10.0:
            raise ValueError(f"fill blur {self.cap_blur} is out of range: use 0..10")
        if self.sky not in options.SKY_MODES:
            raise ValueError(f"sky {self.sky!r} is unknown: use one of {', '.join(options.SKY_MODES)}")
        if self.sun_mode not in options.SUN_MODES:
            raise ValueError(f"sun {self.sun_mode!r} is unknown: use one of {', '.join(options.SUN_MODES)}")
        if not (math.isfinite(self.sun_azimuth_deg) and -360.0 <= self.sun_azimuth_deg <= 360.0):
            raise ValueError(f"sun azimuth {self.sun_azimuth_deg} is out of range: use -360..360 degrees")
        if not (math.isfinite(self.sun_elevation_deg) and -90.0 <= self.sun_elevation_deg <= 90.0):
            raise ValueError(f"sun elevation {self.sun_elevation_deg} is out of range: use -90..90 degrees")
        if not (math.isfinite(self.exposure) and options.EXPOSURE_MIN <= self.exposure <= options.EXPOSURE_MAX):
            raise ValueError(f"exposure {self.exposure} is out of range: "
                             f"use {options.EXPOSURE_MIN:g}..{options.EXPOSURE_MAX:g} EV")
        if not math.isfinite(self.rotation):
            raise ValueError("rotation must be a finite angle")
        if self.photo and not os.path.isfile(self.photo):
            raise ValueError(f"photo {self.photo!r} does not exist: pick an image file in From Image (or clear it)")
        if self.photo and not self.wrap:
            raise ValueError("From Image makes a 360° loop: turn Wrap on")

    def file_stem(self) -> str:
        """A stable file name stem that names the settings that change the pixels (not rotation/strength).

        Settings at their defaults add nothing, so the default sky keeps its plain name; a blur sky,
        another sun, the sun's disk in the image, an exposure or the World's Model each add a part
        ("_blur", "_sunnone" / "_sun60.0_30.0", "_disk", "_ev+1", "_mlhq1024").
        """
        wrap = "wrap" if self.wrap else "open"
        noise = "" if self.noise_mode == SkyParams.noise_mode else f"_n{self.noise_mode}"
        sky = "" if self.sky == SkyParams.sky else f"_{self.sky}"
        if self.sun_mode == "manual":
            sun = f"_sun{self.sun_azimuth_deg:.1f}_{self.sun_elevation_deg:.1f}"
        else:
            sun = "" if self.sun_mode == SkyParams.sun_mode else f"_sun{self.sun_mode}"
        # only a physical sky draws the disk, and only when there is a sun to draw
        disk = "_disk" if self.sun_disk and self.sky == "physical" and self.sun_mode != "none" else ""
        ev = "" if self.exposure == 0 else f"_ev{self.exposure:+g}"
        model = f"_m{self.model_label}" if self.model_label else ""
        model += f"_p{self.photo_tag}" if self.photo else ""
        return (
            f"alis_sky_s{self.seed}_k{self.anchors}_psi{self.psi:.2f}_{self.width}_{wrap}"
            f"_h{self.horizon:.2f}_x{self.strip_scale:.2f}_b{self.cap_blur:.2f}{noise}{sky}{sun}{disk}{ev}{model}"
        )

    def file_name(self, ext: str = ".exr") -> str:
        """File name for the generated equirect, e.g. 'alis_sky_s0_k8_psi0.70_2048_wrap_h0.50_x1.00_b2.00.exr'."""
        if not ext.startswith("."):
            ext = "." + ext
        return self.file_stem() + ext.lower()

