"""The sky's sun in real Blender: the synced "ALIS Sun" lamp, and Cycles shadows from the lamp and from the world.

Skipped when bpy is not installed (pip install bpy==5.0.1). The skies come from a tiny random
generator; a manual sun fixes where the light comes from. The band is kept low (strip scale 0.5,
4 anchors: about +-11°), so a sun at 30° is above the terrain and always visible.
"""
import importlib
import math

import numpy as np
import pytest

SUN = (60.0, 30.0)  # azimuth, elevation in degrees
SKY = dict(anchors=4, resolution=128, strip_scale=0.5, seed=3)


def _module(alis_extension, name):
    return importlib.import_module(f"{alis_extension}.{name}")


def _sun_lights(bpy, scene):
    return [o for o in scene.objects if o.type == "LIGHT" and o.data.type == "SUN"]


def _towards_sun(obj):
    """Unit vector from the scene towards the lamp's sun: its +Z axis (the light travels along -Z)."""
    z = obj.rotation_euler.to_matrix().col[2].normalized()  # matrix_world waits for a depsgraph update
    return np.array(z)


def _direction(az_deg, el_deg):
    az, el = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def _angle_deg(a, b):
    return math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(a, b))))))


@pytest.fixture
def sun_scene(bpy, addon_prefs, sky_checkpoint):
    """A new scene with its own world and the in-process backend on the tiny model; all removed afterwards."""
    addon_prefs.backend = "IN_PROCESS"
    addon_prefs.checkpoint = sky_checkpoint
    addon_prefs.device = "cpu"
    addon_prefs.output_dir = ""
    scene = bpy.data.scenes.new("alis_sun_test")
    scene.world = bpy.data.worlds.new("alis_sun_world")
    s = scene.world.alis_sky
    for k, v in SKY.items():
        setattr(s, k, v)
    s.sun_mode = "manual"
    s.sun_azimuth, s.sun_elevation = (math.radians(a) for a in SUN)
    yield scene
    world = scene.world
    for obj in list(scene.objects):
        data = obj.data
        bpy.data.objects.remove(obj)
        if isinstance(data, bpy.types.Light) and data.users == 0:
            bpy.data.lights.remove(data)
    bpy.data.scenes.remove(scene)
    image = world.node_tree.nodes["ALIS Environment"].image if "ALIS Environment" in world.node_tree.nodes else None
    bpy.data.worlds.remove(world)
    if image is not None and image.users == 0:
        bpy.data.images.remove(image)


def _generate(bpy, scene):
    with bpy.context.temp_override(scene=scene):
        assert bpy.ops.alis.generate_world() == {"FINISHED"}


def test_sun_lamp_follows_the_manual_sun_and_is_reused(bpy, alis_extension, sun_scene):
    s = sun_scene.world.alis_sky
    assert s.sun_lamp  # on by default
    _generate(bpy, sun_scene)
    (lamp,) = _sun_lights(bpy, sun_scene)
    assert lamp.name == "ALIS Sun"
    assert _angle_deg(_towards_sun(lamp), _direction(*SUN)) < 2.0
    assert lamp.data.energy > 0 and lamp.data.angle == pytest.approx(math.radians(0.53), rel=1e-3)
    assert min(lamp.data.color) > 0
    energy, pointer = lamp.data.energy, lamp.as_pointer()

    _generate(bpy, sun_scene)  # again: the same lamp, no second one
    (again,) = _sun_lights(bpy, sun_scene)
    assert again.as_pointer() == pointer and again.data.energy == pytest.approx(energy)
    assert len([o for o in bpy.data.objects if o.name.startswith("ALIS Sun")]) == 1

    # Rotation turns the lamp with the sky (what the image shows at A appears at A - rotation) ...
    s.rotation = math.radians(90)
    assert _angle_deg(_towards_sun(again), _direction(SUN[0] - 90, SUN[1])) < 2.0
    # ... and Strength scales it with the sky
    s.strength = 2.0
    assert again.data.energy == pytest.approx(2 * energy)

    # a new sun moves the lamp; sun lamp off or no sun: no lamp
    s.sun_azimuth = math.radians(-100)
    _generate(bpy, sun_scene)
    (moved,) = _sun_lights(bpy, sun_scene)
    assert _angle_deg(_towards_sun(moved), _direction(-100 - 90, SUN[1])) < 2.0
    s.sun_lamp = False
    _generate(bpy, sun_scene)
    assert _sun_lights(bpy, sun_scene) == []
    s.sun_lamp, s.sun_mode = True, "none"
    _generate(bpy, sun_scene)
    assert _sun_lights(bpy, sun_scene) == []


def test_sun_lamp_keeps_the_disk_out_of_the_world_image(bpy, alis_extension, sun_scene):
    s = sun_scene.world.alis_sky

    def brightest():
        _generate(bpy, sun_scene)
        image = sun_scene.world.node_tree.nodes["ALIS Environment"].image
        px = np.array(image.pixels[:], np.float32).reshape(image.size[1], image.size[0], 4)[::-1, :, :3]
        return px.max(), image.name, s.to_params().file_name()

    with_lamp, _, name_lamp = brightest()
    s.sun_lamp = False
    with_disk, _, name_disk = brightest()
    assert with_disk > 100 * with_lamp  # the disk is in the image only without the lamp
    assert name_disk != name_lamp


# ---------------------------------------------------------------------------------------------
# Cycles: a cube on a plane, seen from straight above; its shadow falls away from the sun.

RES = 48  # px, the top view covers -3..3 m in x and y
HALF = 3.0


def _build_stage(bpy, scene):
    import bmesh

    def mesh_object(name, make):
        mesh = bpy.data.meshes.new(name)
        bm = bmesh.new()
        make(bm)
        bm.to_mesh(mesh)
        bm.free()
        obj = bpy.data.objects.new(name, mesh)
        scene.collection.objects.link(obj)
        return obj

    mesh_object("plane", lambda bm: bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=20.0))
    cube = mesh_object("cube", lambda bm: bmesh.ops.create_cube(bm, size=1.0))
    cube.location.z = 0.5
    cam_data = bpy.data.cameras.new("alis_top")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = 2 * HALF
    cam = bpy.data.objects.new("alis_top", cam_data)
    cam.location = (0.0, 0.0, 10.0)  # looks down -Z; image right = +X, image up = +Y
    scene.collection.objects.link(cam)
    scene.camera = cam

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 1
    scene.cycles.seed = 0
    scene.render.resolution_x = scene.render.resolution_y = RES
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.view_settings.view_transform = "Standard"


def _render(bpy, scene, path, samples):
    scene.cycles.samples = samples
    scene.render.filepath = str(path)
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(write_still=True, scene=scene.name)
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        px = np.array(img.pixels[:], np.float32).reshape(RES, RES, 4)[:, :, :3]  # row 0 = bottom = -Y
    finally:
        bpy.data.images.remove(img)
    return px.mean(axis=2)


def _ground_at(lum, az_deg, dist=1.3):
    """Mean brightness of the ground around the point `dist` m from the cube's centre towards azimuth az."""
    x, y = dist * math.cos(math.radians(az_deg)), dist * math.sin(math.radians(az_deg))
    col, row = (int((c + HALF) / (2 * HALF) * RES) for c in (x, y))
    return float(lum[row - 2:row + 3, col - 2:col + 3].mean())


def _shadow_side(lum, sun_az_deg):
    """(towards the sun, away from it, 90° to the side): the ground's brightness at each."""
    return _ground_at(lum, sun_az_deg), _ground_at(lum, sun_az_deg + 180), _ground_at(lum, sun_az_deg + 90)


def test_cycles_shadow_falls_away_from_the_sun_from_the_lamp_or_the_world(bpy, alis_extension, sun_scene, tmp_path):
    s = sun_scene.world.alis_sky
    _build_stage(bpy, sun_scene)
    ground = {}
    for sun_lamp in (True, False):
        s.sun_lamp, s.rotation = sun_lamp, 0.0
        _generate(bpy, sun_scene)
        if not sun_lamp:
            # the sun is now a few bright pixels of the world image: importance-sample the world
            sun_scene.world.cycles.sampling_method = "MANUAL"
            sun_scene.world.cycles.sample_map_resolution = 256
        for rotation in (0.0, 90.0):
            s.rotation = math.radians(rotation)
            lum = _render(bpy, sun_scene, tmp_path / f"{sun_lamp}_{rotation:.0f}.exr", samples=8 if sun_lamp else 16)
            seen_az = SUN[0] - rotation  # what the image holds at azimuth A shows at A - rotation
            lit, shadow, side = _shadow_side(lum, seen_az)
            assert shadow < 0.5 * lit and shadow < 0.5 * side, (sun_lamp, rotation, lit, shadow, side)
            ground[sun_lamp, rotation] = lit, shadow
    # the lamp gives the light the disk gave: the same brightness in the sun and in the shadow
    for rotation in (0.0, 90.0):
        np.testing.assert_allclose(ground[True, rotation], ground[False, rotation], rtol=0.15)


def test_cli_subprocess_gives_the_same_sun_lamp(bpy, alis_extension, addon_prefs, sun_scene, monkeypatch):
    # the subprocess backend reads the sun from the CLI's sky.json; in-process gets it from complete_sky
    import os
    import pathlib
    import sys

    repo = pathlib.Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    _generate(bpy, sun_scene)
    (lamp,) = _sun_lights(bpy, sun_scene)
    in_process = (tuple(lamp.rotation_euler), lamp.data.energy, tuple(lamp.data.color), lamp.data.angle)
    addon_prefs.backend, addon_prefs.python_path = "SUBPROCESS", sys.executable
    _generate(bpy, sun_scene)
    (again,) = _sun_lights(bpy, sun_scene)
    assert again.as_pointer() == lamp.as_pointer()
    got = (tuple(again.rotation_euler), again.data.energy, tuple(again.data.color), again.data.angle)
    for a, b in zip(got, in_process):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
