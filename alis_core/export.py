"""Skyboxes in the layouts and conventions game engines import as they are (docs/ENGINES.md).

    export_sky("sky.hdr", "out/godot", target="godot")       # files + README.txt for that engine
    write_layout(eq01, "out/cube", "3x2")                    # one cube-map image, 3 columns x 2 rows

Directions follow ``alis_core.projection`` (Blender world: Z up, +X at the equirect's centre
column; azimuth counter-clockwise from +X). Each engine preset fixes three things, each taken from
the engine's documentation or source (cited in docs/ENGINES.md):

- ``to_engine``: Blender world axes -> the engine's world axes (a rotation, never a mirror, so the
  sky is not flipped; Y-up engines take Blender's front view as their default view);
- ``lookup``: the engine's world direction -> the vector its cube-map sampler receives. Cube faces
  are then written with the OpenGL/Direct3D face table (``projection.cubemap_directions``), so the
  engine sees each direction's colour where it looks. three.js negates x for image cube textures;
  Godot samples right-handed directions unchanged;
- ``panorama_roll``: where the engine's 2:1 long-lat lookup puts azimuth 0, as a fraction of the width.

Floats (.hdr) keep the input's true range; 8-bit PNGs hold the sky as displayed (a float input is
tone-mapped with ``sky.tone_map`` at the sidecar's exposure).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import options, outputs
from .errors import AlisError

__all__ = ["PRESETS", "Preset", "load_sky", "arrange_faces", "engine_faces", "engine_panorama",
           "write_layout", "export_sky", "export_arrays", "sun_in_engine"]

EQUIRECT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".exr", ".hdr")
_EYE = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_Y_UP_LEFT = ((1, 0, 0), (0, 0, 1), (0, 1, 0))      # (x, y, z) <- Blender (x, z, y)
_Y_UP_RIGHT = ((1, 0, 0), (0, 0, 1), (0, -1, 0))    # (x, y, z) <- Blender (x, z, -y): glTF's axes


@dataclass(frozen=True)
class Preset:
    """What one engine imports: its axes, its cube-map lookup, file names and formats."""

    name: str
    title: str
    to_engine: tuple            # 3x3 rows: engine vector = to_engine @ Blender vector
    lookup: Optional[tuple]     # 3x3: cube-map lookup vector = lookup @ engine vector; None: no cube map
    faces: Optional[tuple]      # six file names (+X, -X, +Y, -Y, +Z, -Z of the lookup frame), or None
    layout: Optional[str]       # a grid layout written as one image instead of six files
    panorama: Optional[str]     # 2:1 long-lat .hdr file name, or None
    panorama_roll: float        # engine u = Blender-convention u - roll (fraction of the width)
    import_steps: str           # README text: how to import the files
    light: str                  # "unity", "unreal", "godot", "threejs", "babylon": how the sun lamp is given


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("unity", "Unity", _Y_UP_LEFT, _EYE,
           ("left+x.png", "right-x.png", "up+y.png", "down-y.png", "front+z.png", "back-z.png"), None,
           "sky.hdr", 0.0,
           "Skybox/Panoramic: import sky.hdr (Texture Shape 2D), make a material with the shader\n"
           "Skybox/Panoramic, Mapping Latitude Longitude Layout, Image Type 360 Degrees; set it in\n"
           "Window > Rendering > Lighting > Environment > Skybox Material.\n"
           "Skybox/6 Sided (8-bit): the six PNGs go into the slots their names give:\n"
           "Left [+X] left+x.png, Right [-X] right-x.png, Up [+Y] up+y.png, Down [-Y] down-y.png,\n"
           "Front [+Z] front+z.png, Back [-Z] back-z.png (Wrap Mode: Clamp).\n", "unity"),
    # Unreal's long-lat import shows the centre column at Unreal -Y (Blender +Y) and +X a quarter
    # of the width to its right (docs/ENGINES.md): turn Blender +X to that column.
    Preset("unreal", "Unreal Engine", ((1, 0, 0), (0, -1, 0), (0, 0, 1)), None, None, None, "sky.hdr", -0.25,
           "Import sky.hdr (it becomes a Texture Cube from the long-lat image). Enable the HDRI Backdrop\n"
           "plugin, place an HDRI Backdrop actor (Rotation left at 0) and set its Cubemap to the imported\n"
           "texture; or use the texture as a Sky Light's Source Cubemap (Source Cubemap Angle 0). The\n"
           "image is turned so that Unreal shows Blender +X (azimuth 0) at Unreal +X: the sun lamp\n"
           "below matches the sun in the sky.\n", "unreal"),
    Preset("godot", "Godot", _Y_UP_RIGHT, _EYE, None, "2x3", "sky.hdr", 0.25,
           "Panorama: WorldEnvironment > Environment > Background: Sky; Sky > Sky Material:\n"
           "PanoramaSkyMaterial with Panorama = sky.hdr.\n"
           "Cube map (8-bit): cubemap_2x3.png; in the Import dock choose Import As: Cubemap,\n"
           "Slices > Arrangement: 2x3, then use it in a sky shader as samplerCube with\n"
           "texture(source_panorama, EYEDIR) (the Cubemap class page has the shader).\n", "godot"),
    Preset("threejs", "three.js", _Y_UP_RIGHT, ((-1, 0, 0), (0, 1, 0), (0, 0, 1)),
           ("px.png", "nx.png", "py.png", "ny.png", "pz.png", "nz.png"), None, "sky.hdr", 0.0,
           "scene.background = new THREE.CubeTextureLoader().setPath('DIR/')\n"
           "    .load(['px.png', 'nx.png', 'py.png', 'ny.png', 'pz.png', 'nz.png']);\n"
           "or the float panorama: const t = await new HDRLoader().loadAsync('DIR/sky.hdr');\n"
           "t.mapping = THREE.EquirectangularReflectionMapping; scene.background = scene.environment = t;\n",
           "threejs"),
    Preset("babylon", "Babylon.js", _Y_UP_LEFT, _EYE,
           ("skybox_px.png", "skybox_nx.png", "skybox_py.png", "skybox_ny.png", "skybox_pz.png", "skybox_nz.png"),
           None, None, 0.0,
           "const box = BABYLON.MeshBuilder.CreateBox('skyBox', {size: 1000}, scene);\n"
           "const mat = new BABYLON.StandardMaterial('skyBox', scene); mat.backFaceCulling = false;\n"
           "mat.reflectionTexture = new BABYLON.CubeTexture('DIR/skybox', scene,\n"
           "    ['_px.png', '_py.png', '_pz.png', '_nx.png', '_ny.png', '_nz.png']);\n"
           "mat.reflectionTexture.coordinatesMode = BABYLON.Texture.SKYBOX_MODE;\n"
           "mat.diffuseColor = mat.specularColor = new BABYLON.Color3(0, 0, 0); box.material = mat;\n"
           "(The extensions list is in CubeTexture's order px, py, pz, nx, ny, nz.)\n", "babylon"),
)}
assert tuple(PRESETS) == options.EXPORT_TARGETS


# ----------------------------------------------------------------------------------------------
# Reading a sky.

@dataclass
class Sky:
    """An equirect sky: display image (sRGB [0, 1]), linear radiance, and its sidecar (or None)."""

    display01: torch.Tensor   # [3, H, 2H]
    linear: torch.Tensor      # [3, H, 2H], scene-linear; values above 1 kept from float inputs
    info: Optional[dict]      # the "alis-sky" sidecar JSON, if one lies beside the input
    source: Path


def read_sidecar(path) -> Optional[dict]:
    """The "alis-sky" JSON beside an image (`<stem>.json`) or in a cube-map folder (`sky.json`);
    None where there is none (or not ours)."""
    from .sky import sky_json_path
    side = sky_json_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "alis-sky" else None


def load_sky(path, option: str = "SKY") -> Sky:
    """Read a 2:1 equirect (.png/.jpg/.webp: sRGB; .exr/.hdr: linear) or a cube-map folder (px..nz.png)."""
    from .image import load_float_image, load_image, srgb_to_linear
    from .sky import tone_map

    path = Path(path)
    info = None
    if path.is_dir():
        eq01 = _load_cube_folder(path, option)
        linear = srgb_to_linear(eq01)
        info = read_sidecar(path)
    elif not path.is_file():
        raise AlisError(f"{option} {path} does not exist; give an equirect image (.png, .exr, .hdr) or a cube-map folder")
    else:
        suffix = path.suffix.lower()
        if suffix not in EQUIRECT_EXTENSIONS:
            raise AlisError(f"{option} {path}: unknown image type; use one of {', '.join(EQUIRECT_EXTENSIONS)}")
        info = read_sidecar(path)
        if suffix in (".exr", ".hdr"):
            linear = load_float_image(path).float()
            if not bool(torch.isfinite(linear).all()):
                raise AlisError(f"{option} {path} holds NaN or infinite values; re-export it")
            exposure = float((info or {}).get("exposure") or 0.0)
            eq01 = tone_map(linear, exposure)
        else:
            eq01 = _rgb(load_image(path))
            linear = srgb_to_linear(eq01)
    h, w = eq01.shape[1:]
    if w != 2 * h or h < 2:
        raise AlisError(f"{option} {path} is {w}x{h}, not a 2:1 equirect; use an image whose width is twice its height")
    return Sky(eq01.float(), linear.float(), info, path)


def _rgb(img: torch.Tensor) -> torch.Tensor:
    return img[:3] if img.shape[0] >= 3 else img[:1].expand(3, -1, -1)


def _load_cube_folder(folder: Path, option: str) -> torch.Tensor:
    from .image import load_image
    from .projection import CUBE_FACE_FILES, cubemap_to_equirect, layout_to_cubemap

    files = [folder / f"{n}.png" for n in CUBE_FACE_FILES]
    if all(f.is_file() for f in files):
        faces = torch.stack([_rgb(load_image(f)) for f in files])
    elif (folder / "cross.png").is_file():
        faces = layout_to_cubemap(_rgb(load_image(folder / "cross.png")), "cross")
    else:
        raise AlisError(f"{option} {folder} is a folder without px.png ... nz.png or cross.png; "
                        "give a cube-map folder written by `alis generate --cubemap`, or an equirect image")
    if faces.shape[2] != faces.shape[3] or len({tuple(f.shape) for f in faces}) != 1:
        raise AlisError(f"{option} {folder}: the cube faces are not six squares of one size")
    return cubemap_to_equirect(faces, 2 * faces.shape[-1]).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Faces, layouts and panoramas in an engine's conventions.

def _matrix(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# projection's cube frame is (Blender x, z, y): cube vector = _CUBE @ Blender vector.
_CUBE = _matrix(_Y_UP_LEFT)


def engine_faces(eq: torch.Tensor, face_size: int, preset: Optional[Preset] = None) -> torch.Tensor:
    """Equirect [C, H, 2H] -> faces [6, C, S, S] as the preset's engine samples them (default:
    ``projection.equirect_to_cubemap``'s faces, which are Unity's)."""
    from .projection import _promote, _sample_equirect, cubemap_directions, direction_to_equirect_uv

    if face_size < 1:
        raise AlisError(f"face size must be a positive number of pixels, got {face_size}")
    g = cubemap_directions(face_size)  # [6, S, S, 3]: lookup vectors, OpenGL face table (float32, as the grid)
    if preset is None or preset.lookup is None:
        m = torch.eye(3)
    else:  # lookup vector -> engine -> Blender -> projection's cube frame (all orthonormal)
        m = (_CUBE @ _matrix(preset.to_engine).T @ _matrix(preset.lookup).T).float()
    c = g @ m.T
    u, t = direction_to_equirect_uv(c)
    faces = _sample_equirect(_promote(eq), u, t, "bilinear")  # [C, 6, S, S]
    return faces.permute(1, 0, 2, 3).contiguous().to(eq.dtype)


def engine_panorama(eq: torch.Tensor, preset: Preset) -> torch.Tensor:
    """The equirect turned about the vertical so that the engine's long-lat lookup sees it right."""
    w = eq.shape[-1]
    shift = preset.panorama_roll * w
    if shift == 0:
        return eq
    if abs(shift - round(shift)) < 1e-9:
        return torch.roll(eq, -round(shift), dims=-1)  # out[x] = in[x + shift]
    from .projection import _promote, _sample_equirect
    u = ((torch.arange(w, dtype=torch.float64) + 0.5) / w + preset.panorama_roll)[None].expand(eq.shape[1], w)
    t = ((torch.arange(eq.shape[1], dtype=torch.float64) + 0.5) / eq.shape[1])[:, None].expand_as(u)
    return _sample_equirect(_promote(eq), torch.remainder(u, 1.0), t, "bilinear").to(eq.dtype)


def arrange_faces(faces: torch.Tensor, layout: str) -> torch.Tensor:
    """Faces [6, C, S, S] -> one image: "cross" (projection's 4x3 cross) or a grid "NxM" of N
    columns by M rows holding +X, -X, +Y, -Y, +Z, -Z row by row ("6x1" and "1x6" are strips)."""
    from .projection import cubemap_layout
    if layout == "cross":
        return cubemap_layout(faces, "cross")
    cols, rows = _grid(layout)
    _, c, s, _ = faces.shape
    return faces.reshape(rows, cols, c, s, s).permute(2, 0, 3, 1, 4).reshape(c, rows * s, cols * s)


def _grid(layout: str) -> tuple[int, int]:
    try:
        cols, rows = (int(n) for n in layout.split("x"))
    except ValueError:
        cols = rows = 0
    if cols * rows != 6:
        raise AlisError(f"--layout must be one of {', '.join(options.CUBEMAP_LAYOUTS)}, got {layout!r}")
    return cols, rows


def layout_files(layout: str) -> list[str]:
    """File names `write_layout` writes for a layout."""
    from .projection import CUBE_FACE_FILES
    options.check_choice(layout, options.CUBEMAP_LAYOUTS, "--layout")
    faces = [f"{n}.png" for n in CUBE_FACE_FILES]
    if layout == "faces+cross":
        return faces + ["cross.png"]
    if layout == "faces":
        return faces
    return ["cross.png" if layout == "cross" else f"cubemap_{layout}.png"]


def write_layout(eq01: torch.Tensor, folder, layout: str = "faces+cross", face_size: Optional[int] = None,
                 bits: int = 8) -> list[str]:
    """Write projection's cube map of an equirect [3, H, 2H] (sRGB [0, 1]) in `layout` into `folder`."""
    from .image import save_image
    folder = Path(folder)
    names = layout_files(layout)
    size = face_size or eq01.shape[1] // 2
    outputs.check_memory(outputs.cubemap_bytes(size), f"a cube map of {size} px faces", "lower --face-size")
    faces = engine_faces(eq01.float(), size).clamp(0, 1)
    written = []
    if layout in ("faces+cross", "faces"):
        for name, face in zip(names, faces):
            written.append(str(save_image(folder / name, face, bits=bits)))
    if layout != "faces":
        written.append(str(save_image(folder / names[-1], arrange_faces(faces, "cross" if layout == "faces+cross"
                                                                         else layout), bits=bits)))
    return written


# ----------------------------------------------------------------------------------------------
# Presets.

def preset_files(target: str) -> list[str]:
    """Every file a preset writes (README.txt included)."""
    p = PRESETS[options.check_choice(target, options.EXPORT_TARGETS, "--target")]
    names = list(p.faces or [])
    if p.layout:
        names.append(f"cubemap_{p.layout}.png")
    if p.panorama:
        names.append(p.panorama)
    return names + ["README.txt"]


def check_outputs(folder, names: Sequence[str], force: bool, option: str) -> Path:
    """Refuse before any work: a file in the way that is not our output of the same kind."""
    folder = outputs.check_folder(folder, f"{option} folder")
    for name in names:
        kind = "readme" if name == "README.txt" else "image"
        outputs.check_replaceable(folder / name, kind, force, f"{option} file")
    return folder


def export_arrays(display01: torch.Tensor, linear: torch.Tensor, folder, target: str,
                  face_size: Optional[int] = None, info: Optional[dict] = None,
                  force: bool = False) -> list[str]:
    """Write the preset `target` for an equirect given as display sRGB [3, H, 2H] in [0, 1] and
    linear radiance [3, H, 2H] (the float files keep its range) into `folder`, with README.txt.

    `info` is the sky sidecar dict (its sun goes into the README). Blender and other front ends
    holding the images in memory call this; `export_sky` reads them from a file first.
    """
    from .image import save_image, save_radiance

    preset = PRESETS[options.check_choice(target, options.EXPORT_TARGETS, "--target")]
    folder = check_outputs(folder, preset_files(target), force, "--out")
    size = face_size or display01.shape[1] // 2
    if preset.faces or preset.layout:
        outputs.check_memory(outputs.cubemap_bytes(size), f"the {preset.title} cube map of {size} px faces",
                             "lower --face-size")
    written: list[str] = []
    with outputs.FolderLock(folder if folder.is_dir() else _made(folder), "--out folder"):
        if preset.faces or preset.layout:
            faces = engine_faces(display01.float(), size, preset).clamp(0, 1)
            if preset.faces:
                for name, face in zip(preset.faces, faces):
                    written.append(str(save_image(folder / name, face)))
            if preset.layout:
                written.append(str(save_image(folder / f"cubemap_{preset.layout}.png",
                                              arrange_faces(faces, preset.layout))))
        if preset.panorama:
            pano = engine_panorama(linear.float().clamp(min=0), preset)
            written.append(str(save_radiance(folder / preset.panorama, pano)))  # values as they are
        text = readme_text(preset, info, size, display01.shape[1])
        written.append(str(outputs.write_text(folder / "README.txt", text, "readme")))
    return written


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_sky(path, folder, target: str, face_size: Optional[int] = None, force: bool = False) -> list[str]:
    """`alis export`: read an equirect (and its sidecar JSON) and write the preset `target`."""
    preset_files(target)  # the target is checked before anything is read
    check_outputs(folder, preset_files(target), force, "--out")
    sky = load_sky(path)
    return export_arrays(sky.display01, sky.linear, folder, target, face_size, sky.info, force)


# ----------------------------------------------------------------------------------------------
# The sun as a directional light, in each engine's axes.

def sun_in_engine(direction: Sequence[float], target: str) -> dict:
    """A unit vector towards the sun (Blender world) -> how the target engine's light is set.

    Returns {"towards_sun": [x, y, z] engine axes, "light_forward": the light's travel direction,
    and "rotation_deg" where the engine sets a light by Euler angles (Unity: X, Y; Godot: X, Y;
    Unreal: pitch, yaw)}.
    """
    preset = PRESETS[options.check_choice(target, options.EXPORT_TARGETS, "--target")]
    b = torch.tensor([float(v) for v in direction], dtype=torch.float64)
    b = b / b.norm().clamp(min=1e-12)
    s = (_matrix(preset.to_engine) @ b).tolist()
    out = {"towards_sun": [round(v, 6) for v in s], "light_forward": [round(-v, 6) for v in s]}
    el = math.degrees(math.asin(max(-1.0, min(1.0, float(b[2])))))
    az = math.degrees(math.atan2(float(b[1]), float(b[0])))
    if target == "unity":  # a light shines along its +Z; rotation (X, Y) with forward (sinY cosX, -sinX, cosY cosX)
        out["rotation_deg"] = {"x": round(el, 3), "y": round(_wrap(math.degrees(math.atan2(-s[0], -s[2]))), 3)}
    elif target == "godot":  # shines along its -Z; forward (-sinY cosX, sinX, -cosY cosX)
        out["rotation_deg"] = {"x": round(-el, 3), "y": round(_wrap(math.degrees(math.atan2(s[0], s[2]))), 3)}
    elif target == "unreal":  # shines along its +X; forward (cosP cosY, cosP sinY, sinP)
        out["rotation_deg"] = {"pitch": round(-el, 3), "yaw": round(_wrap(math.degrees(math.atan2(-s[1], -s[0]))), 3)}
    out["azimuth_deg"], out["elevation_deg"] = round(az, 3), round(el, 3)
    return out


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def _sun_lines(preset: Preset, info: Optional[dict]) -> str:
    sun = (info or {}).get("sun") if isinstance(info, dict) else None
    if not isinstance(sun, dict) or not isinstance(sun.get("direction"), (list, tuple)):
        return "Sun: none recorded (no sky sidecar JSON with a sun beside the input).\n"
    d = sun_in_engine(sun["direction"], preset.name)
    v = ", ".join(f"{x:g}" for x in d["towards_sun"])
    f = ", ".join(f"{x:g}" for x in d["light_forward"])
    lines = [f"Sun: azimuth {d['azimuth_deg']:g} deg (counter-clockwise from Blender +X), elevation "
             f"{d['elevation_deg']:g} deg{'' if sun.get('visible', True) else ' (hidden by terrain)'}.",
             f"Towards the sun in {preset.title} axes: ({v}); a directional light travels along ({f})."]
    r = d.get("rotation_deg")
    if preset.light == "unity":
        lines.append(f"Directional Light: Transform Rotation X {r['x']:g}, Y {r['y']:g}, Z 0.")
    elif preset.light == "godot":
        lines.append(f"DirectionalLight3D: Rotation X {r['x']:g}, Y {r['y']:g}, Z 0 (degrees).")
    elif preset.light == "unreal":
        lines.append(f"Directional Light: Rotation Pitch {r['pitch']:g}, Yaw {r['yaw']:g}, Roll 0.")
    elif preset.light == "threejs":
        lines.append(f"const sun = new THREE.DirectionalLight(0xffffff, 3); sun.position.set({v}); // target at the origin")
    elif preset.light == "babylon":
        lines.append(f"new BABYLON.DirectionalLight('sun', new BABYLON.Vector3({f}), scene);")
    if sun.get("irradiance") is not None:
        lines.append(f"Strength (the sky's linear units): {float(sun['irradiance']):.4g}; "
                     f"colour (linear RGB): {', '.join(f'{float(c):.3f}' for c in sun.get('color', ()))}.")
    return "\n".join(lines) + "\n"


_AXES = {
    "unity": "Unity X = Blender X, Unity Y = Blender Z (up), Unity Z = Blender Y",
    "unreal": "Unreal X = Blender X, Unreal Y = -Blender Y, Unreal Z = Blender Z (up)",
    "godot": "Godot X = Blender X, Godot Y = Blender Z (up), Godot Z = -Blender Y (glTF's axes)",
    "threejs": "three.js X = Blender X, Y = Blender Z (up), Z = -Blender Y (glTF's axes)",
    "babylon": "Babylon X = Blender X, Y = Blender Z (up), Z = Blender Y (left-handed, like Unity)",
}


def readme_text(preset: Preset, info: Optional[dict], face_size: int, height: int) -> str:
    """README.txt of a preset: the files, how to import them, the axes and the sun."""
    files = preset_files(preset.name)[:-1]
    text = [f"ALIS skybox for {preset.title}", "",
            "Files: " + ", ".join(files) + ".",
            f"Cube faces {face_size} px (8-bit sRGB PNG); " if (preset.faces or preset.layout) else "",
            f"{preset.panorama}: 2:1 long-lat, {2 * height} x {height}, linear light (Radiance RGBE), "
            "values above 1 kept." if preset.panorama else "", "",
            "How to import:", preset.import_steps.rstrip("\n"), "",
            f"Axes: {_AXES[preset.name]}.", _sun_lines(preset, info).rstrip("\n"),
            "", "Conventions and sources: docs/ENGINES.md of alis-panoramas."]
    return "\n".join(line for line in text if line is not None) + "\n"


# ----------------------------------------------------------------------------------------------
# The `alis generate` hooks: --layout and --target next to --cubemap.

def add_generate_options(p) -> None:
    p.add_argument("--layout", default="faces+cross",
                   help=f"cube-map files in --cubemap DIR: {', '.join(options.CUBEMAP_LAYOUTS)} (NxM = N columns by "
                        "M rows; default faces+cross: px..nz.png and cross.png)")
    p.add_argument("--target", default=None,
                   help=f"write --cubemap DIR for an engine: {', '.join(options.EXPORT_TARGETS)} "
                        "(its layout, face names, formats and a README.txt; see docs/ENGINES.md)")


def check_generate_cubemap(a) -> None:
    """Checks of --cubemap/--layout/--target, before anything is rendered."""
    layout, target = getattr(a, "layout", "faces+cross"), getattr(a, "target", None)
    options.check_choice(layout, options.CUBEMAP_LAYOUTS, "--layout")
    if target is not None:
        options.check_choice(target, options.EXPORT_TARGETS, "--target")
        if layout != "faces+cross":
            raise AlisError("--target chooses the layout itself; drop --layout")
    if not a.cubemap:
        if target or layout != "faces+cross":
            raise AlisError("--layout and --target need --cubemap DIR (the folder they write into)")
        return
    names = preset_files(target) if target else layout_files(layout)
    check_outputs(a.cubemap, names, a.force, "--cubemap")


def write_generate_cubemap(a, eq01: torch.Tensor, linear: Optional[torch.Tensor] = None,
                           info: Optional[dict] = None) -> list[str]:
    """Write --cubemap DIR for `alis generate`: the layout, or the --target preset. `eq01` is the
    sky as shown, `linear` its radiance (default: eq01 decoded), `info` its sidecar dict."""
    from .image import srgb_to_linear
    target = getattr(a, "target", None)
    if target:
        lin = srgb_to_linear(eq01.float()) if linear is None else linear
        return export_arrays(eq01, lin, a.cubemap, target, a.face_size, info, a.force)
    return write_layout(eq01, a.cubemap, getattr(a, "layout", "faces+cross"), a.face_size, a.bits)
