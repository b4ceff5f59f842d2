"""ALIS Panorama to Equirect, ALIS Equirect to Cubemap and Save Skybox."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from alis_core import AlisError
from alis_core import image as alis_image
from alis_core import options, outputs, projection, sky as alis_sky

from .errors import alis_errors_as_input_error, input_error
from .panorama import check_float, check_image
from .spec import ALIS_SKY, NodeSpec, Out, Param

EQUIRECT_NODE = "ALIS Panorama to Equirect"
CUBEMAP_NODE = "ALIS Equirect to Cubemap"
SAVE_NODE = "Save Skybox"
FACE_NAMES = ("px", "nx", "py", "ny", "pz", "nz")  # projection order +X, -X, +Y, -Y, +Z, -Z
FLOAT_FORMATS = ("hdr", "exr", "none")
CUBEMAP_OUTPUTS = ("faces + cross", "faces", "cross", "none")
MAX_FACE = 8192  # 6 faces and a cross of 8192 px are already tens of GB while being sampled

# (prefix, output_dir, width, height) -> (folder, filename, counter, subfolder, prefix),
# the signature of ComfyUI's folder_paths.get_save_image_path.
SavePathFn = Callable[[str, str, int, int], tuple[str, str, int, str, str]]


@dataclass(eq=False)
class AlisSky:
    """ALIS_SKY: a batch of full-sphere skies in scene-linear radiance (HDR, the sun disk's true
    range included) and their sun/sky descriptions, from ALIS Panorama to Equirect to Save Skybox."""

    hdr: list[torch.Tensor]  # [3, H, 2H] float32 each, on the CPU
    info: list[alis_sky.SkyInfo]


def panorama_to_equirect(image: torch.Tensor, horizon: float = 0.5, strip_horizon: float = 0.5,
                         strip_scale: float = 1.0, cap_blur: float = 2.0, sky: str = "physical",
                         sun: str = "auto", sun_azimuth: float = 60.0, sun_elevation: float = 30.0,
                         sun_disk: bool = True, exposure: float = 0.0) -> tuple[torch.Tensor, AlisSky]:
    """Node function: 360° panoramas [B, H, W, 3] -> (equirect skies [B, W/2, W, 3] tone-mapped to
    0..1, the same skies in radiance as an AlisSky), completed by alis_core.sky.complete_sky."""
    check_image(EQUIRECT_NODE, "image", image)
    if image.shape[2] % 2 or image.shape[2] < 8:
        raise input_error(EQUIRECT_NODE, "image", f"width {image.shape[2]} is odd or below 8 px; a 360° strip needs "
                          "an even width (set an even width on ALIS Panorama)")
    for name, value, (low, high) in (("horizon", horizon, (0.0, 1.0)), ("strip_horizon", strip_horizon, (0.0, 1.0)),
                                     ("strip_scale", strip_scale, (0.05, 8.0)), ("cap_blur", cap_blur, (0.0, 8.0)),
                                     ("sun_azimuth", sun_azimuth, (-360.0, 360.0)),
                                     ("sun_elevation", sun_elevation, (-90.0, 90.0)),
                                     ("exposure", exposure, (options.EXPOSURE_MIN, options.EXPOSURE_MAX))):
        check_float(EQUIRECT_NODE, name, value, low, high)  # the declared ranges of the inputs
    for name, value, choices in (("sky", sky, options.SKY_MODES), ("sun", sun, options.SUN_MODES)):
        if value not in choices:
            raise input_error(EQUIRECT_NODE, name, f"unknown choice '{value}'; choose one of {', '.join(choices)}")
    _check_memory(EQUIRECT_NODE, "image", image.shape[0] * 2 * outputs.equirect_bytes(image.shape[2]),
                  f"{image.shape[0]} equirect image(s) of {image.shape[2]} px", "use a narrower panorama")
    sun_arg = (float(sun_azimuth), float(sun_elevation)) if sun == "manual" else sun
    tone_mapped, hdrs, infos = [], [], []
    for strip in alis_image.hwc_to_chw(image.float()):
        with alis_errors_as_input_error(EQUIRECT_NODE, "strip_scale"):
            hdr, info = alis_sky.complete_sky(strip, horizon=horizon, strip_horizon=strip_horizon,
                                              strip_scale=strip_scale, cap_blur=cap_blur, sky=sky, sun=sun_arg,
                                              sun_disk=sun_disk, exposure=exposure)
        tone_mapped.append(alis_sky.tone_map(hdr, exposure))
        hdrs.append(hdr)
        infos.append(info)
    return alis_image.chw_to_hwc(torch.stack(tone_mapped)).clamp(0, 1).contiguous(), AlisSky(hdrs, infos)


def check_equirect(node: str, image: torch.Tensor) -> None:
    check_image(node, "image", image)
    h, w = image.shape[1], image.shape[2]
    if w != 2 * h:
        raise input_error(node, "image", f"{w}x{h} is not a 2:1 equirect image; convert the panorama with "
                          "ALIS Panorama to Equirect first (or resize it to width = 2 x height)")


def _check_memory(node: str, input_name: str, needed: int, what: str, hint: str) -> None:
    try:
        outputs.check_memory(needed, what, hint)
    except AlisError as e:
        raise input_error(node, input_name, str(e)) from None


def _check_face_size(node: str, face_size: int, image: torch.Tensor) -> int:
    size = face_size or default_face_size(image)
    if not 1 <= size <= MAX_FACE:
        raise input_error(node, "face_size", f"got {face_size}; use 1..{MAX_FACE}, or 0 for width / 4")
    _check_memory(node, "face_size", outputs.cubemap_bytes(size), f"a cube map of {size} px faces",
                  "lower face_size")
    return size


def default_face_size(image: torch.Tensor) -> int:
    return max(1, image.shape[2] // 4)  # W / 4 keeps the equirect's resolution at the horizon


def equirect_to_cubemap(image: torch.Tensor, face_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Node function: equirect [B, H, 2H, 3] -> (faces [6B, S, S, 3], crosses [B, 3S, 4S, 3]).

    Faces come in the order +X, -X, +Y, -Y, +Z, -Z for each image; face_size 0 -> W / 4.
    """
    check_equirect(CUBEMAP_NODE, image)
    size = _check_face_size(CUBEMAP_NODE, face_size, image)
    faces, crosses = [], []
    for eq in alis_image.hwc_to_chw(image.float()):
        with alis_errors_as_input_error(CUBEMAP_NODE, "face_size"):
            cube = projection.equirect_to_cubemap(eq, size)  # [6, 3, S, S]
            crosses.append(projection.cubemap_layout(cube, "cross"))
        faces.append(cube)
    faces_hwc = alis_image.chw_to_hwc(torch.cat(faces)).clamp(0, 1).contiguous()
    cross_hwc = alis_image.chw_to_hwc(torch.stack(crosses)).clamp(0, 1).contiguous()
    return faces_hwc, cross_hwc


def local_save_path(prefix: str, output_dir: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str, str]:
    """Stand-in for folder_paths.get_save_image_path outside ComfyUI: next free counter for `prefix`."""
    subfolder, filename = os.path.split(os.path.normpath(prefix))
    folder = Path(output_dir, subfolder)
    if not folder.resolve().is_relative_to(Path(output_dir).resolve()):
        raise input_error(SAVE_NODE, "filename_prefix", f"'{prefix}' points outside the output folder; "
                          "use a relative prefix like 'ALIS/skybox'")
    folder.mkdir(parents=True, exist_ok=True)
    used = [int(p.name[len(filename) + 1:].split("_")[0]) for p in folder.glob(f"{filename}_*")
            if p.name[len(filename) + 1:].split("_")[0].isdigit()]
    return str(folder), filename, max(used, default=0) + 1, subfolder, prefix


def save_skybox(image: torch.Tensor, filename_prefix: str = "ALIS/skybox", float_format: str = "hdr",
                cubemap: str = "faces + cross", face_size: int = 0, sky: AlisSky | None = None, *,
                output_dir: str, text: Mapping[str, str] | None = None,
                save_path: SavePathFn = local_save_path) -> list[dict[str, str]]:
    """Node function: write each equirect [B, H, 2H, 3] as PNG (+ float, + cube map files).

    Files: <prefix>_<counter>_.png, <prefix>_<counter>_.hdr|.exr, <prefix>_<counter>_px.png ...
    (faces +X, -X, +Y, -Y, +Z, -Z) and <prefix>_<counter>_cross.png. `text` goes into every PNG
    (ComfyUI: prompt and workflow). With `sky` (from ALIS Panorama to Equirect) the float file holds
    its true radiance (sun included) and <prefix>_<counter>_.json its sun and sky (alis_core.sky);
    without it, the float file is the PNG decoded to linear light. Returns one {"filename",
    "subfolder", "kind"} per file written, kind in {"equirect", "float", "sky", "face", "cross"}.
    """
    check_equirect(SAVE_NODE, image)
    if sky is not None and (not isinstance(sky, AlisSky) or len(sky.hdr) != image.shape[0]):
        raise input_error(SAVE_NODE, "sky", "connect the hdr_sky output of the ALIS Panorama to Equirect node that made "
                          "this image")
    if float_format not in FLOAT_FORMATS:
        raise input_error(SAVE_NODE, "float_format", f"unknown format '{float_format}'; "
                          f"choose one of {', '.join(FLOAT_FORMATS)}")
    if cubemap not in CUBEMAP_OUTPUTS:
        raise input_error(SAVE_NODE, "cubemap", f"unknown choice '{cubemap}'; "
                          f"choose one of {', '.join(CUBEMAP_OUTPUTS)}")
    size = _check_face_size(SAVE_NODE, face_size, image) if cubemap != "none" else 0
    folder, filename, counter, subfolder, _ = save_path(filename_prefix, output_dir, image.shape[2], image.shape[1])
    os.makedirs(folder, exist_ok=True)
    written: list[dict[str, str]] = []
    for i in range(image.shape[0]):  # never replace a file that is not an image (alis_core.outputs' rule)
        stem = f"{filename}_{counter + i:05}_"
        names = [".png", f".{float_format}", *[f"{n}.png" for n in FACE_NAMES], "cross.png"]
        for name in names[:1] + names[1:2] * (float_format != "none") + names[2:] * (cubemap != "none"):
            with alis_errors_as_input_error(SAVE_NODE, "filename_prefix"):
                outputs.check_replaceable(Path(folder, stem + name), "image", option="file")
        if sky is not None:
            with alis_errors_as_input_error(SAVE_NODE, "filename_prefix"):
                outputs.check_replaceable(Path(folder, stem + ".json"), "sky", option="file")

    def record(name: str, kind: str) -> None:
        written.append({"filename": name, "subfolder": subfolder, "kind": kind})

    for i, eq in enumerate(alis_image.hwc_to_chw(image.float().cpu())):  # [3, H, W] in [0, 1]
        stem = f"{filename}_{counter:05}_"
        alis_image.save_png(Path(folder, stem + ".png"), eq, text=text)
        record(stem + ".png", "equirect")
        if float_format != "none":
            with alis_errors_as_input_error(SAVE_NODE, "float_format"):
                if sky is None:
                    alis_image.save_float_image(Path(folder, f"{stem}.{float_format}"), eq)
                else:
                    alis_image.save_radiance(Path(folder, f"{stem}.{float_format}"), sky.hdr[i])
            record(f"{stem}.{float_format}", "float")
        if sky is not None:
            alis_sky.write_sky_json(Path(folder, stem + ".json"), sky.info[i])
            record(stem + ".json", "sky")
        if cubemap != "none":
            cube = projection.equirect_to_cubemap(eq, size).clamp(0, 1)  # [6, 3, S, S]
            if cubemap in ("faces + cross", "faces"):
                for face, name in zip(cube, FACE_NAMES):
                    alis_image.save_png(Path(folder, f"{stem}{name}.png"), face, text=text)
                    record(f"{stem}{name}.png", "face")
            if cubemap in ("faces + cross", "cross"):
                alis_image.save_png(Path(folder, f"{stem}cross.png"), projection.cubemap_layout(cube, "cross"),
                                    text=text)
                record(f"{stem}cross.png", "cross")
        counter += 1
    return written


EQUIRECT = NodeSpec(
    node_id="ALISPanoramaToEquirect",
    display_name=EQUIRECT_NODE,
    category="ALIS/skybox",
    description="Wraps a 360° panorama (made with wrap on) round the horizon of a 2:1 equirect sky and "
                "completes the sphere: a daylight sky fitted to the strip, a ground plane and a sun (or the "
                "strip's rows blurred). The image is tone-mapped; the hdr_sky output carries the HDR radiance to "
                "Save Skybox.",
    function=panorama_to_equirect,
    inputs=(
        Param("image", "IMAGE", tooltip="A 360° panorama from ALIS Panorama with wrap on (even width)."),
        Param("horizon", "FLOAT", default=0.5, min=0.0, max=1.0, step=0.01,
              tooltip="Where the strip's horizon lands in the sky image: 0 = zenith, 0.5 = equator, 1 = nadir."),
        Param("strip_horizon", "FLOAT", default=0.5, min=0.0, max=1.0, step=0.01,
              tooltip="Where the horizon is inside the panorama, as a fraction of its height "
                      "(landscapes often ~0.6)."),
        Param("strip_scale", "FLOAT", default=1.0, min=0.05, max=8.0, step=0.05,
              tooltip="Vertical stretch of the strip; 1.0 keeps square pixels. Lower it if the strip "
                      "would cover a pole."),
        Param("cap_blur", "FLOAT", default=2.0, min=0.0, max=8.0, step=0.05,
              tooltip="sky 'blur': how quickly the sky and ground caps blur away from the strip."),
        Param("sky", "COMBO", options=options.SKY_MODES, default="physical", optional=True,
              tooltip="'physical': a daylight sky fitted to the strip's own sky, its clouds continued, a ground "
                      "plane below and a sun; 'blur': the strip's top and bottom rows blurred (no sun)."),
        Param("sun", "COMBO", options=options.SUN_MODES, default="auto", optional=True,
              tooltip="'auto': the strip's brightest sky region if it is bright enough to be a sun; 'none'; "
                      "'manual': sun_azimuth / sun_elevation (wins over a sun painted in the strip)."),
        Param("sun_azimuth", "FLOAT", default=60.0, min=-360.0, max=360.0, step=1.0, optional=True,
              tooltip="Manual sun: degrees counter-clockwise from +X (Blender's world; image column "
                      "u = 0.5 - azimuth / 360)."),
        Param("sun_elevation", "FLOAT", default=30.0, min=-90.0, max=90.0, step=1.0, optional=True,
              tooltip="Manual sun: degrees above the horizon; below the strip's skyline the terrain hides it."),
        Param("sun_disk", "BOOLEAN", default=True, optional=True,
              tooltip="Draw the sun's disk into the HDR sky; off: the sky's JSON keeps the sun for a sun lamp."),
        Param("exposure", "FLOAT", default=0.0, min=options.EXPOSURE_MIN, max=options.EXPOSURE_MAX, step=0.25,
              optional=True, tooltip="EV: the HDR sky holds radiance x 2^-EV; the image is tone-mapped back."),
    ),
    outputs=(Out("equirect", "IMAGE", "Equirectangular sky [B, W/2, W, 3], tone-mapped to 0..1."),
             Out("hdr_sky", ALIS_SKY, "The same skies in scene-linear radiance with their suns, for Save Skybox.")),
)

CUBEMAP = NodeSpec(
    node_id="ALISEquirectToCubemap",
    display_name=CUBEMAP_NODE,
    category="ALIS/skybox",
    description="Samples a 2:1 equirect sky into six cube faces (+X, -X, +Y, -Y, +Z, -Z, OpenGL order) "
                "and a horizontal-cross layout.",
    function=equirect_to_cubemap,
    inputs=(
        Param("image", "IMAGE", tooltip="A 2:1 equirect image, e.g. from ALIS Panorama to Equirect."),
        Param("face_size", "INT", default=0, min=0, max=MAX_FACE,
              tooltip="Cube face size in pixels; 0 = equirect width / 4 (keeps horizon resolution). "
                      "Large faces need much memory while sampling (about 5 GB at 2880 px)."),
    ),
    outputs=(
        Out("faces", "IMAGE", "Six faces per input image: +X, -X, +Y, -Y, +Z, -Z."),
        Out("cross", "IMAGE", "Horizontal cross layout [B, 3S, 4S, 3], empty cells black."),
    ),
)

SAVE = NodeSpec(
    node_id="ALISSaveSkybox",
    display_name=SAVE_NODE,
    category="ALIS/skybox",
    description="Saves equirect PNG, float .hdr/.exr and cube map files to the output folder; "
                "PNGs carry the workflow.",
    function=save_skybox,
    inputs=(
        Param("image", "IMAGE", tooltip="A 2:1 equirect sky, e.g. from ALIS Panorama to Equirect."),
        Param("filename_prefix", "STRING", default="ALIS/skybox",
              tooltip="File name prefix inside the output folder; may contain a subfolder and "
                      "%date% style tokens like SaveImage."),
        Param("float_format", "COMBO", options=FLOAT_FORMATS, default="hdr",
              tooltip="Linear-light float copy for renderers: 'hdr' (Radiance, built in), 'exr' "
                      "(needs pip install OpenEXR) or 'none'."),
        Param("cubemap", "COMBO", options=CUBEMAP_OUTPUTS, default="faces + cross",
              tooltip="Cube map files to write: six face PNGs (_px, _nx, _py, _ny, _pz, _nz), a cross PNG, "
                      "both, or none."),
        Param("face_size", "INT", default=0, min=0, max=MAX_FACE,
              tooltip="Cube face size in pixels; 0 = equirect width / 4."),
        Param("sky", ALIS_SKY, optional=True,
              tooltip="The hdr_sky output of ALIS Panorama to Equirect: the float file then holds the true HDR "
                      "radiance (the sun included) and a .json beside it the sun's direction and strength."),
    ),
    output_node=True,
    extras=("output_dir", "text", "save_path"),
)
