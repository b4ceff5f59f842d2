"""Per-world sky settings (World.alis_sky) and per-session status (WindowManager.alis_sky_status)."""
import math
import os

import bpy

from . import params, world
from .shared import options

_NOISE_LABELS = {
    "none": ("None", "No noise: the same seed gives the same sky"),
    "const": ("Constant", "The model's fixed noise maps"),
    "random": ("Random", "Fresh noise drawn from the seed"),
}
_NOISE_ITEMS = [(m, *_NOISE_LABELS.get(m, (m.title(), ""))) for m in options.NOISE_MODES]
_SKY_LABELS = {
    "physical": ("Physical", "A daylight dome fitted to the landscape's sky, a ground plane and a sun"),
    "blur": ("Blur", "The landscape's top and bottom rows blurred over the poles (no sun disk)"),
}
_SKY_ITEMS = [(m, *_SKY_LABELS.get(m, (m.title(), ""))) for m in options.SKY_MODES]
_SUN_LABELS = {
    "auto": ("Auto", "The landscape's brightest sky region, if it is bright enough to be a sun"),
    "none": ("None", "No sun"),
    "manual": ("Manual", "A sun at the azimuth and elevation below"),
}
_SUN_ITEMS = [(m, *_SUN_LABELS.get(m, (m.title(), ""))) for m in options.SUN_MODES]
_DEFAULT = params.SkyParams()


def _update_rotation(self, context):
    world.set_rotation(self.id_data, self.rotation)
    world.set_sun_rotation(self.id_data, self.rotation)


def _update_strength(self, context):
    world.set_strength(self.id_data, self.strength)
    world.set_sun_strength(self.id_data, self.strength)


def _search_models(self, context, edit_text):
    from .preferences import model_names

    return [name for name in model_names() if edit_text.lower() in name]


class ALIS_WorldSettings(bpy.types.PropertyGroup):
    model: bpy.props.StringProperty(
        name="Model", default="", search=_search_models, search_options={"SUGGESTION"},
        description="Which generator: empty = the Checkpoint in the ALIS Sky preferences; 'default' = the bundled "
        "model; a downloaded or cached model's name (the preferences' Models list); or a .safetensors/.pkl path",
    )
    photo: bpy.props.StringProperty(
        name="From Image", default="", subtype="FILE_PATH",
        description="Start the 360° loop with this photo: Generate fits anchors that redraw it (a few seconds to "
        "minutes), then continues it with new scenes from the seed; empty = scenes from the seed alone",
    )
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, max=params.MAX_SEED,
                                description="Scene seed: which landscapes the anchors show")
    anchors: bpy.props.IntProperty(
        name="Anchors", default=params.DEFAULTS.anchors, min=2, soft_max=64,
        description="Number of anchors; each adds one frame-spaced stretch of landscape",
    )
    psi: bpy.props.FloatProperty(
        name="Psi", default=params.DEFAULTS.psi, min=options.PSI_MIN, max=options.PSI_MAX, soft_max=1.0,
        description="Truncation psi: lower = more typical, less varied landscapes",
    )
    noise_mode: bpy.props.EnumProperty(
        name="Noise", items=_NOISE_ITEMS, default=params.SkyParams.noise_mode,
        description="Noise of the synthesis layers",
    )
    resolution: bpy.props.IntProperty(
        name="Resolution", default=2048, min=params.MIN_WIDTH, max=params.MAX_WIDTH, step=64,
        subtype="PIXEL", description="Equirect width in pixels (height is half of it)",
    )
    wrap: bpy.props.BoolProperty(name="Wrap", default=True, description="Close the panorama into a seamless 360° loop")
    horizon: bpy.props.FloatProperty(
        name="Horizon", default=0.5, min=0.05, max=0.95, subtype="FACTOR",
        description="Where the horizon lands, from the top of the sky image: 0 = zenith, 0.5 = equator, 1 = nadir",
    )
    strip_scale: bpy.props.FloatProperty(
        name="Landscape Height", default=1.0, min=0.05, max=4.0,
        description="Vertical stretch of the landscape strip (1 = square pixels); "
        "the sky and ground fills cover the rest of the sphere",
    )
    cap_blur: bpy.props.FloatProperty(
        name="Fill Blur", default=2.0, min=0.0, max=10.0,
        description="How fast the sky and ground fills blur away from the landscape strip",
    )
    sky: bpy.props.EnumProperty(
        name="Sky", items=_SKY_ITEMS, default=_DEFAULT.sky,
        description="What fills the sphere above and below the landscape",
    )
    sun_mode: bpy.props.EnumProperty(
        name="Sun", items=_SUN_ITEMS, default=_DEFAULT.sun_mode, description="Where the sky's sun is",
    )
    sun_azimuth: bpy.props.FloatProperty(
        name="Sun Azimuth", default=math.radians(_DEFAULT.sun_azimuth_deg), subtype="ANGLE",
        min=-2 * math.pi, max=2 * math.pi, soft_min=-math.pi, soft_max=math.pi,
        description="Manual sun: counter-clockwise from +X about +Z, before the Rotation below",
    )
    sun_elevation: bpy.props.FloatProperty(
        name="Sun Elevation", default=math.radians(_DEFAULT.sun_elevation_deg), subtype="ANGLE",
        min=-math.pi / 2, max=math.pi / 2, description="Manual sun: above the horizon (90° = zenith)",
    )
    sun_lamp: bpy.props.BoolProperty(
        name="Sun Lamp", default=_DEFAULT.sun_lamp,
        description="Light the scene with a Sun lamp (\"ALIS Sun\") that follows the sky's sun, and leave the "
        "sun's disk out of the sky image: the same light with less render noise",
    )
    exposure: bpy.props.FloatProperty(
        name="Exposure", default=_DEFAULT.exposure, min=options.EXPOSURE_MIN, max=options.EXPOSURE_MAX,
        soft_min=-5.0, soft_max=5.0,
        description="EV: the sky image holds radiance x 2^-EV (the sun lamp's strength follows)",
    )
    rotation: bpy.props.FloatProperty(
        name="Rotation", default=0.0, subtype="ANGLE", soft_min=-math.pi, soft_max=math.pi,
        description="Rotate the sky about the vertical axis (no re-generation needed)",
        update=_update_rotation,
    )
    strength: bpy.props.FloatProperty(
        name="Strength", default=1.0, min=0.0, soft_max=10.0,
        description="Background strength", update=_update_strength,
    )

    def to_params(self) -> params.SkyParams:
        return params.SkyParams(
            seed=self.seed, anchors=self.anchors, psi=self.psi, noise_mode=self.noise_mode, width=self.resolution // 2 * 2,
            wrap=self.wrap or bool(self.photo.strip()),  # a photo loop always wraps
            horizon=self.horizon, strip_scale=self.strip_scale, cap_blur=self.cap_blur,
            sky=self.sky, sun_mode=self.sun_mode,
            # rounded: a float32 angle of 60° reads back as 59.999996°
            sun_azimuth_deg=round(math.degrees(self.sun_azimuth), 4),
            sun_elevation_deg=round(math.degrees(self.sun_elevation), 4),
            sun_lamp=self.sun_lamp, exposure=round(self.exposure, 4),
            rotation=self.rotation, strength=self.strength, model=self.model,
            photo=os.path.abspath(bpy.path.abspath(self.photo)) if self.photo.strip() else "",
        )


class ALIS_Status(bpy.types.PropertyGroup):
    running: bpy.props.BoolProperty(default=False)
    progress: bpy.props.FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    text: bpy.props.StringProperty(default="")


classes = (ALIS_WorldSettings, ALIS_Status)


def register() -> None:
    bpy.types.World.alis_sky = bpy.props.PointerProperty(type=ALIS_WorldSettings)
    bpy.types.WindowManager.alis_sky_status = bpy.props.PointerProperty(type=ALIS_Status)


def unregister() -> None:
    del bpy.types.WindowManager.alis_sky_status
    del bpy.types.World.alis_sky
