"""Engine presets and cube-map layouts, read back as each engine reads them.

The test sky is coloured by direction: RGB = (d + 1) / 2 with d the Blender-world unit vector
(docs/SKY.md conventions: u = 0.5 - azimuth / 360, elevation 0 at the middle row). Each engine's
lookup (which file, which pixel for a direction) is written here by hand from that engine's
documentation or source, NOT from alis_core.export's tables, and probed at off-axis directions:
a mirrored or rotated face would show another colour there.
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from alis_core import AlisError
from alis_core import export
from alis_core.image import load_float_image, load_image, save_float_image, save_png, linear_to_srgb
from alis_testing import direction_sky as coloured_by_direction

H = 64  # equirect [3, 64, 128]; faces 32 px
TOL = 0.025  # 8-bit quantisation + bilinear sampling of a smooth field; a mirrored face is off by > 0.1

# Off-axis probes (Blender world), one with each major axis: +X, -X, +Y, -Y, +Z, -Z.
PROBES = [(1, 0.5, 0.25), (-1, -0.7, 0.35), (-0.3, 1, -0.6), (0.6, -1, 0.15), (0.2, -0.4, 1), (0.5, 0.3, -1)]


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def direction_sky(h=H):
    return coloured_by_direction(h)


def expected(b):
    return (unit(b) + 1) / 2


def bilinear(img, x, y, wrap=False):
    """img [C, H, W] numpy at continuous pixel coordinates (x, y) measured from the top-left corner."""
    c, h, w = img.shape
    x, y = x - 0.5, min(max(y - 0.5, 0), h - 1)
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    def px(xx, yy):
        xx = xx % w if wrap else min(max(xx, 0), w - 1)
        return img[:, min(max(yy, 0), h - 1), xx]
    top = px(x0, y0) * (1 - fx) + px(x0 + 1, y0) * fx
    bottom = px(x0, y0 + 1) * (1 - fx) + px(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def gl_face(r):
    """OpenGL 4.6 core spec, Table 8.19 "Selection of cube map images" (Direct3D uses the same
    faces and orientations): major axis -> (face index +X, -X, +Y, -Y, +Z, -Z; s, t in [0, 1]),
    with t counted from the first (top) row of the image as stored."""
    rx, ry, rz = r
    a = np.abs(r)
    if a[0] >= a[1] and a[0] >= a[2]:
        face, sc, tc, ma = (0, -rz, -ry, a[0]) if rx > 0 else (1, rz, -ry, a[0])
    elif a[1] >= a[2]:
        face, sc, tc, ma = (2, rx, rz, a[1]) if ry > 0 else (3, rx, -rz, a[1])
    else:
        face, sc, tc, ma = (4, rx, -ry, a[2]) if rz > 0 else (5, -rx, -ry, a[2])
    return face, (sc / ma + 1) / 2, (tc / ma + 1) / 2


def read_png(path):
    return load_image(path).numpy()


def sample_face(img, s, t):
    size = img.shape[-1]
    return bilinear(img, s * size, t * size)


@pytest.fixture(scope="module")
def sky_png(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sky")
    path = folder / "sky.png"
    save_png(path, direction_sky())
    return path


def export_to(sky, tmp_path, target):
    out = tmp_path / target
    export.export_sky(sky, out, target)
    return out


# --- Unity ---------------------------------------------------------------------------------------

def unity_dir(b):
    # Unity: left-handed, Y up, Z forward; Blender's front view (X right, Y away, Z up) -> X, Z, Y.
    b = unit(b)
    return np.array([b[0], b[2], b[1]])


@pytest.mark.parametrize("b", PROBES)
def test_unity_six_sided_slots(sky_png, tmp_path, b):
    # Unity 6 Sided skybox: slots Left [+X], Right [-X], Up [+Y], Down [-Y], Front [+Z], Back [-Z]
    # (docs.unity3d.com Manual/shader-skybox-6sided.html), each read as the cube face a Unity Cubemap
    # holds (Direct3D convention, gl_face above); no public source gives the in-slot orientation
    # (Unity's skybox mesh UVs), see docs/ENGINES.md.
    out = export_to(sky_png, tmp_path, "unity")
    slots = ["left+x.png", "right-x.png", "up+y.png", "down-y.png", "front+z.png", "back-z.png"]
    face, s, t = gl_face(unity_dir(b))
    np.testing.assert_allclose(sample_face(read_png(out / slots[face]), s, t), expected(b), atol=TOL)


@pytest.mark.parametrize("b", PROBES)
def test_unity_panoramic_lookup(sky_png, tmp_path, b):
    # Skybox/Panoramic (Unity's built-in Skybox-Panoramic.shader, ToRadialCoords):
    # u = 0.5 - atan2(z, x) / 2pi, v = 1 - acos(y) / pi with v = 1 the image's top row.
    out = export_to(sky_png, tmp_path, "unity")
    x, y, z = unity_dir(b)
    u = (0.5 - math.atan2(z, x) / (2 * math.pi)) % 1.0
    row = math.acos(y) / math.pi
    img = load_float_image(out / "sky.hdr").numpy()
    got = linear_to_srgb(bilinear(img, u * img.shape[2], row * img.shape[1], wrap=True))
    np.testing.assert_allclose(got, expected(b), atol=TOL)


# --- Godot ---------------------------------------------------------------------------------------

def godot_dir(b):
    # Godot: right-handed, Y up, -Z forward; glTF's axes (Blender x, z, -y), as Godot imports glTF.
    b = unit(b)
    return np.array([b[0], b[2], -b[1]])


@pytest.mark.parametrize("b", PROBES)
def test_godot_cubemap_2x3(sky_png, tmp_path, b):
    # Godot Cubemap (docs.godotengine.org classes/class_cubemap.html): image order X+, X-, Y+, Y-,
    # Z+, Z- in Godot's coordinate system; the 2x3 arrangement is 2 columns by 3 rows, read row by
    # row (ResourceImporterLayeredTexture). The sky shader there samples texture(cubemap, EYEDIR):
    # the right-handed direction goes straight into the OpenGL face table.
    out = export_to(sky_png, tmp_path, "godot")
    img = read_png(out / "cubemap_2x3.png")
    size = img.shape[2] // 2
    assert img.shape[1:] == (3 * size, 2 * size)
    face, s, t = gl_face(godot_dir(b))
    cell = img[:, (face // 2) * size:(face // 2 + 1) * size, (face % 2) * size:(face % 2 + 1) * size]
    np.testing.assert_allclose(sample_face(cell, s, t), expected(b), atol=TOL)


@pytest.mark.parametrize("b", PROBES)
def test_godot_panorama_lookup(sky_png, tmp_path, b):
    # Godot's sky shader (servers/rendering/.../sky.glsl): panorama_coords =
    # (atan(n.x, -n.z), acos(n.y)) / (2pi, pi), x wrapped to [0, 1); row 0 = the image's top.
    out = export_to(sky_png, tmp_path, "godot")
    x, y, z = godot_dir(b)
    u = (math.atan2(x, -z) / (2 * math.pi)) % 1.0
    row = math.acos(y) / math.pi
    img = load_float_image(out / "sky.hdr").numpy()
    got = linear_to_srgb(bilinear(img, u * img.shape[2], row * img.shape[1], wrap=True))
    np.testing.assert_allclose(got, expected(b), atol=TOL)


# --- three.js ------------------------------------------------------------------------------------

def three_dir(b):
    # three.js: right-handed, Y up, camera looks along -Z; glTF's axes (Blender x, z, -y).
    b = unit(b)
    return np.array([b[0], b[2], -b[1]])


@pytest.mark.parametrize("b", PROBES)
def test_threejs_cube_texture_lookup(sky_png, tmp_path, b):
    # CubeTextureLoader: six images px, nx, py, ny, pz, nz (threejs.org docs/pages/CubeTextureLoader);
    # CubeTexture.flipY = false (rows as stored); a scene.background CubeTexture that is not a render
    # target is sampled at diag(-1, 1, 1) * direction (src/renderers/webgl/WebGLBackground.js `_m`).
    out = export_to(sky_png, tmp_path, "threejs")
    x, y, z = three_dir(b)
    face, s, t = gl_face(np.array([-x, y, z]))
    files = ["px.png", "nx.png", "py.png", "ny.png", "pz.png", "nz.png"]
    np.testing.assert_allclose(sample_face(read_png(out / files[face]), s, t), expected(b), atol=TOL)


@pytest.mark.parametrize("b", PROBES)
def test_threejs_equirect_lookup(sky_png, tmp_path, b):
    # EquirectangularReflectionMapping (src/renderers/shaders/ShaderChunk/common.glsl.js equirectUv):
    # u = atan(d.z, d.x) / 2pi + 0.5, v = asin(d.y) / pi + 0.5; textures flipY, so v = 1 is the top row.
    out = export_to(sky_png, tmp_path, "threejs")
    x, y, z = three_dir(b)
    u = (math.atan2(z, x) / (2 * math.pi) + 0.5) % 1.0
    row = 1 - (math.asin(y) / math.pi + 0.5)
    img = load_float_image(out / "sky.hdr").numpy()
    got = linear_to_srgb(bilinear(img, u * img.shape[2], row * img.shape[1], wrap=True))
    np.testing.assert_allclose(got, expected(b), atol=TOL)


# --- Babylon.js ----------------------------------------------------------------------------------

@pytest.mark.parametrize("b", PROBES)
def test_babylon_cube_texture_lookup(sky_png, tmp_path, b):
    # Babylon.js CubeTexture appends _px, _nx, _py, _ny, _pz, _nz for the +x ... -z sides
    # (doc.babylonjs.com features/featuresDeepDive/environment/skybox); Babylon's default world is
    # left-handed, Y up, like Unity's, and samples the cube with the world direction.
    out = export_to(sky_png, tmp_path, "babylon")
    face, s, t = gl_face(unity_dir(b))
    files = [f"skybox_{n}.png" for n in ("px", "nx", "py", "ny", "pz", "nz")]
    np.testing.assert_allclose(sample_face(read_png(out / files[face]), s, t), expected(b), atol=TOL)


# --- Unreal --------------------------------------------------------------------------------------

def unreal_dir(b):
    # Unreal: left-handed, Z up, X forward, Y right; Blender's X forward, Y left, Z up -> (x, -y, z).
    b = unit(b)
    return np.array([b[0], -b[1], b[2]])


def unreal_long_lat(img, w):
    """The long-lat texel Unreal shows at its world direction w, for a .hdr imported as a TextureCube.

    Unreal's TextureCompressorModule.cpp (GenerateBaseCubeMipFromLongitudeLatitude2D): the cube texel at
    Direct3D direction d holds the long-lat image at D = (d.x, d.z, d.y) (TransformSideToWorldSpace,
    "z and y are flipped"), X = (1 + atan2(D.X, -D.Z) / pi) / 2 * SizeX, Y = acos(D.Y) / pi * SizeY,
    bilinear with texel i at coordinate i (LookupLongLat, LookupFiltered). The renderer samples the cube
    at the world direction itself (ReflectionEnvironmentShared.ush, GetSkyLightReflection): d = w.
    """
    w = unit(w)
    d = (w[0], w[2], w[1])
    x = (1 + math.atan2(d[0], -d[2]) / math.pi) / 2 * img.shape[2]
    y = math.acos(d[1]) / math.pi * img.shape[1]
    return bilinear(img, x + 0.5, y + 0.5, wrap=True)  # bilinear() puts texel i at i + 0.5


@pytest.mark.parametrize("b", PROBES)
def test_unreal_texture_cube_lookup(sky_png, tmp_path, b):
    out = export_to(sky_png, tmp_path, "unreal")
    img = load_float_image(out / "sky.hdr").numpy()
    np.testing.assert_allclose(linear_to_srgb(unreal_long_lat(img, unreal_dir(b))), expected(b), atol=TOL)


def test_unreal_writes_a_long_lat_hdr_keeping_values_above_one(tmp_path):
    # HDRI Backdrop takes a long-lat .hdr imported as a cube texture. A float input keeps its range.
    linear = torch.from_numpy(np.asarray(direction_sky())).float() * 4.0  # radiance up to 4
    src = tmp_path / "bright.hdr"
    save_float_image(src, linear_to_srgb(linear))
    out = export_to(src, tmp_path, "unreal")
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "sky.hdr"]
    got = load_float_image(out / "sky.hdr")
    assert got.shape == (3, H, 2 * H)
    assert float(got.max()) > 3.5
    ref = load_float_image(src)
    # turned about the vertical only: every row keeps its values (the probes above check the turn)
    assert torch.allclose(got.sort(dim=-1).values, ref.sort(dim=-1).values, rtol=0.02, atol=0.02)


def test_float_input_png_faces_are_tone_mapped_at_the_sidecar_exposure(tmp_path):
    linear = torch.full((3, 16, 32), 0.25)
    src = tmp_path / "flat.hdr"
    save_float_image(src, linear_to_srgb(linear))
    (tmp_path / "flat.json").write_text(json.dumps({"format": "alis-sky", "format_version": 1, "exposure": 1.0,
                                                    "sun": None}))
    out = export_to(src, tmp_path, "babylon")
    face = load_image(out / "skybox_px.png")
    # tone_map(0.25, exposure 1) = sRGB(0.5) (below the shoulder the plain sRGB encoding)
    assert abs(float(face.mean()) - float(linear_to_srgb(torch.tensor(0.5)))) < 0.01


# --- README and the sun --------------------------------------------------------------------------

SUN = {"azimuth_deg": 30.0, "elevation_deg": 20.0, "angular_diameter_deg": 0.53, "irradiance": 1000.0,
       "color": [1.0, 0.9, 0.8], "visible": True, "source": "explicit"}


def sun_direction(az, el):
    a, e = math.radians(az), math.radians(el)
    return [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]


@pytest.mark.parametrize("target", ["unity", "unreal", "godot", "threejs", "babylon"])
def test_readme_says_how_to_import_and_where_the_sun_is(tmp_path, sky_png, target):
    src = tmp_path / "s.png"
    src.write_bytes(sky_png.read_bytes())
    sun = {**SUN, "direction": sun_direction(30, 20)}
    (tmp_path / "s.json").write_text(json.dumps({"format": "alis-sky", "format_version": 1, "sun": sun,
                                                 "exposure": 0.0}))
    out = export_to(src, tmp_path, target)
    text = (out / "README.txt").read_text()
    assert "How to import" in text and "azimuth 30 deg" in text and "elevation 20 deg" in text
    b = unit(sun["direction"])
    towards = {"unity": [b[0], b[2], b[1]], "babylon": [b[0], b[2], b[1]], "godot": [b[0], b[2], -b[1]],
               "threejs": [b[0], b[2], -b[1]], "unreal": [b[0], -b[1], b[2]]}[target]
    assert "(" + ", ".join(f"{round(v, 6):g}" for v in towards) + ")" in text


def test_unity_light_rotation_points_the_light_away_from_the_sun():
    # Unity: a Directional Light shines along its transform's +Z; Euler X then Y (Unity applies Z,
    # X, Y): forward = (sin Y cos X, -sin X, cos Y cos X).
    d = export.sun_in_engine(sun_direction(30, 20), "unity")
    x, y = (math.radians(d["rotation_deg"][k]) for k in ("x", "y"))
    forward = [math.sin(y) * math.cos(x), -math.sin(x), math.cos(y) * math.cos(x)]
    np.testing.assert_allclose(forward, -np.array(d["towards_sun"]), atol=1e-5)


def test_godot_light_rotation_points_the_light_away_from_the_sun():
    # Godot: a DirectionalLight3D shines along its -Z; rotation X then Y (YXZ order):
    # -Z basis = (-sin Y cos X, sin X, -cos Y cos X).
    d = export.sun_in_engine(sun_direction(200, 35), "godot")
    x, y = (math.radians(d["rotation_deg"][k]) for k in ("x", "y"))
    forward = [-math.sin(y) * math.cos(x), math.sin(x), -math.cos(y) * math.cos(x)]
    np.testing.assert_allclose(forward, -np.array(d["towards_sun"]), atol=1e-5)


def test_unreal_light_rotation_points_the_light_away_from_the_sun():
    # Unreal: a Directional Light shines along its +X; FRotator::Vector() of (Pitch, Yaw, 0) is
    # (cos P cos Y, cos P sin Y, sin P).
    d = export.sun_in_engine(sun_direction(120, 25), "unreal")
    p, y = (math.radians(d["rotation_deg"][k]) for k in ("pitch", "yaw"))
    forward = [math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p)]
    np.testing.assert_allclose(forward, -np.array(d["towards_sun"]), atol=1e-5)


@pytest.mark.parametrize("az, el", [(30, 20), (200, 35)])
def test_unreal_readme_sun_is_where_the_sky_shows_it(tmp_path, sky_png, az, el):
    # The README's sun vector (Unreal axes), looked up as Unreal looks up the imported sky.hdr, lands
    # on the sun's direction in the sky: the lamp and the sky agree.
    src = tmp_path / "s.png"
    src.write_bytes(sky_png.read_bytes())
    sun = {**SUN, "azimuth_deg": az, "elevation_deg": el, "direction": sun_direction(az, el)}
    (tmp_path / "s.json").write_text(json.dumps({"format": "alis-sky", "format_version": 1, "sun": sun,
                                                 "exposure": 0.0}))
    out = export_to(src, tmp_path, "unreal")
    text = (out / "README.txt").read_text()
    towards = [float(v) for v in re.search(r"Towards the sun in Unreal Engine axes: \(([^)]*)\)", text)[1].split(",")]
    img = load_float_image(out / "sky.hdr").numpy()
    np.testing.assert_allclose(linear_to_srgb(unreal_long_lat(img, towards)), expected(sun["direction"]), atol=TOL)


# --- layouts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, cols, rows", [("3x2", 3, 2), ("2x3", 2, 3), ("6x1", 6, 1), ("1x6", 1, 6)])
def test_grid_layouts_hold_the_faces_row_by_row(tmp_path, sky_png, layout, cols, rows):
    written = export.write_layout(load_image(sky_png), tmp_path, layout)
    assert [Path(p).name for p in written] == [f"cubemap_{layout}.png"]
    img = read_png(written[0])
    size = img.shape[1] // rows
    assert img.shape[1:] == (rows * size, cols * size)
    for b in PROBES:  # the default faces are Unity's: the OpenGL table on (x, z, y)
        face, s, t = gl_face(unity_dir(b))
        r, c = divmod(face, cols)
        cell = img[:, r * size:(r + 1) * size, c * size:(c + 1) * size]
        np.testing.assert_allclose(sample_face(cell, s, t), expected(b), atol=TOL)


def test_default_layout_is_todays_faces_and_cross(tmp_path, sky_png):
    from alis_core.projection import cubemap_layout, equirect_to_cubemap
    written = export.write_layout(load_image(sky_png), tmp_path)
    assert [Path(p).name for p in written] == ["px.png", "nx.png", "py.png", "ny.png", "pz.png", "nz.png",
                                               "cross.png"]
    faces = equirect_to_cubemap(load_image(sky_png), H // 2).clamp(0, 1)
    assert torch.allclose(load_image(tmp_path / "pz.png"), faces[4], atol=1 / 255 + 1e-6)
    assert torch.allclose(load_image(tmp_path / "cross.png"), cubemap_layout(faces, "cross"), atol=1 / 255 + 1e-6)


# --- CLI and errors ------------------------------------------------------------------------------

class Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli(capsys):
    """`alis ARGS` in this process (as the entry point runs it): returncode, stdout, stderr."""
    from alis_core.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return Done(code, out.out, out.err)
    return run


def test_cli_export_and_its_errors(tmp_path, sky_png, run_cli):
    done = run_cli("export", sky_png, "--target", "godot", "--out", tmp_path / "g")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g" / "cubemap_2x3.png").is_file() and (tmp_path / "g" / "README.txt").is_file()
    again = run_cli("export", sky_png, "--target", "godot", "--out", tmp_path / "g")  # our own files: replaced
    assert again.returncode == 0, again.stderr
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "sky.hdr").write_text("notes")
    refused = run_cli("export", sky_png, "--target", "unreal", "--out", tmp_path / "u")
    assert refused.returncode == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "u" / "sky.hdr").read_text() == "notes"
    for args, words in [(("--target", "quake"), "--target must be one of"),
                        (("--layout", "4x4"), "--layout must be one of"),
                        ((), "give one of --target")]:
        bad = run_cli("export", sky_png, *args, "--out", tmp_path / "x")
        assert bad.returncode == 2 and words in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_non_equirect_input_is_one_clear_error(tmp_path):
    src = tmp_path / "wide.png"
    save_png(src, torch.rand(3, 10, 30))
    with pytest.raises(AlisError, match="not a 2:1 equirect"):
        export.export_sky(src, tmp_path / "o", "unity")
    assert not (tmp_path / "o").exists()


def test_generate_with_target_and_layout(tmp_path, run_cli):
    done = run_cli("generate", "--wrap", "--anchors", "2", "--cubemap", tmp_path / "c", "--layout", "6x1",
                   "--progress-format", "none")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cubemap_6x1.png", "sky.json"]
    done = run_cli("generate", "--wrap", "--anchors", "2", "--cubemap", tmp_path / "t", "--target", "threejs",
                   "--sun", "60,30", "--progress-format", "none")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted(
        ["px.png", "nx.png", "py.png", "ny.png", "pz.png", "nz.png", "sky.hdr", "README.txt", "sky.json"])
    sidecar = json.loads((tmp_path / "t" / "sky.json").read_text())
    readme = (tmp_path / "t" / "README.txt").read_text()
    assert sidecar["sun"]["azimuth_deg"] == 60  # the generated sky's sun, as three.js's light
    assert "azimuth 60 deg" in readme and "elevation 30 deg" in readme and "THREE.DirectionalLight" in readme
    bad = run_cli("generate", "--wrap", "--target", "unity")
    assert bad.returncode == 2 and "--cubemap DIR" in bad.stderr


def test_a_cube_map_folder_reads_back_as_the_equirect(tmp_path, sky_png):
    export.write_layout(load_image(sky_png), tmp_path / "cube")
    sky = export.load_sky(tmp_path / "cube")
    assert sky.display01.shape == (3, H, 2 * H)
    core = (slice(None), slice(8, H - 8))  # away from the poles, where both resamplings blur most
    assert float((sky.display01 - load_image(sky_png))[core].abs().max()) < 0.03
