"""The installed extension inside real Blender (bpy module): register, generate, world nodes, render orientation.

Skipped when bpy is not installed (pip install bpy==5.0.1).
"""
import importlib
import math
import os
import pathlib
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
ALIS_NODES = ("ALIS Texture Coordinate", "ALIS Mapping", "ALIS Environment", "ALIS Background")


def _module(alis_extension, name):
    return importlib.import_module(f"{alis_extension}.{name}")


def _alis_images(bpy):
    return [im for im in bpy.data.images if im.get("alis_sky")]


def _source(socket):
    (link,) = socket.links
    return link.from_node.name, link.from_socket.identifier


def assert_sky_wiring(world, rotation):
    tree = world.node_tree
    nodes = {name: tree.nodes[name] for name in ALIS_NODES}
    assert nodes["ALIS Texture Coordinate"].bl_idname == "ShaderNodeTexCoord"
    assert nodes["ALIS Mapping"].bl_idname == "ShaderNodeMapping"
    assert nodes["ALIS Environment"].bl_idname == "ShaderNodeTexEnvironment"
    assert nodes["ALIS Environment"].projection == "EQUIRECTANGULAR"
    assert nodes["ALIS Background"].bl_idname == "ShaderNodeBackground"
    assert _source(nodes["ALIS Mapping"].inputs["Vector"]) == ("ALIS Texture Coordinate", "Generated")
    assert _source(nodes["ALIS Environment"].inputs["Vector"]) == ("ALIS Mapping", "Vector")
    assert _source(nodes["ALIS Background"].inputs["Color"]) == ("ALIS Environment", "Color")
    (output,) = [n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputWorld" and n.is_active_output]
    assert _source(output.inputs["Surface"]) == ("ALIS Background", "Background")
    assert tuple(nodes["ALIS Mapping"].inputs["Rotation"].default_value) == pytest.approx((0, 0, rotation))
    assert all(n.get("alis_sky") for n in nodes.values())
    return nodes


def test_extension_registers_its_ui(bpy, alis_extension):
    assert hasattr(bpy.types, "WORLD_PT_alis_sky")
    assert bpy.types.WORLD_PT_alis_sky.bl_context == "world"
    for op in ("generate_world", "new_seed", "save_image", "check_backend"):
        assert hasattr(bpy.ops.alis, op)
    prefs = bpy.context.preferences.addons[alis_extension].preferences
    assert (prefs.checkpoint, prefs.device, prefs.output_dir, prefs.python_path) == ("", "auto", "", "")
    world = bpy.data.worlds.new("defaults")
    try:
        s = world.alis_sky
        assert s.wrap is True and s.anchors >= 2 and s.resolution == 2048
    finally:
        bpy.data.worlds.remove(world)


def test_new_seed_changes_the_seed(bpy, fresh_world):
    seeds = set()
    for _ in range(3):
        assert bpy.ops.alis.new_seed() == {"FINISHED"}
        seeds.add(fresh_world.alis_sky.seed)
    assert len(seeds) > 1


def test_generate_in_process_wires_the_world_and_reuses_nodes(bpy, addon_prefs, fresh_world, sky_checkpoint):
    addon_prefs.backend = "IN_PROCESS"
    addon_prefs.checkpoint = sky_checkpoint
    addon_prefs.device = "cpu"
    if fresh_world.node_tree is None:  # Blender 4.x: a new world has no nodes until use_nodes is set
        fresh_world.use_nodes = True
    tree = fresh_world.node_tree
    user_node = tree.nodes.new("ShaderNodeRGB")  # the user's own node must survive
    user_node.name = "My Colour"
    s = fresh_world.alis_sky
    s.anchors, s.resolution, s.seed, s.rotation = 3, 128, 1, 0.5
    images_before = len(_alis_images(bpy))

    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    nodes = assert_sky_wiring(fresh_world, 0.5)
    image = nodes["ALIS Environment"].image
    assert tuple(image.size) == (128, 64)
    assert image.is_float and image.colorspace_settings.name == "Linear Rec.709"
    assert image.packed_file is not None  # no output folder: kept inside the .blend
    first = np.array(image.pixels[:], np.float32)
    assert np.isfinite(first).all() and first.std() > 0.01
    count = len(tree.nodes)
    ids = {name: tree.nodes[name].as_pointer() for name in ALIS_NODES}

    s.seed, s.rotation = 2, -1.0
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    nodes = assert_sky_wiring(fresh_world, -1.0)
    assert len(tree.nodes) == count and "My Colour" in tree.nodes
    assert {name: tree.nodes[name].as_pointer() for name in ALIS_NODES} == ids
    assert len(_alis_images(bpy)) == images_before + 1  # the old sky image was replaced, not piled up
    second = np.array(nodes["ALIS Environment"].image.pixels[:], np.float32)
    assert np.abs(second - first).mean() > 1e-3  # a new seed, a new sky

    # the rotation slider updates the Mapping node without regenerating
    s.rotation = 0.25
    assert tuple(nodes["ALIS Mapping"].inputs["Rotation"].default_value)[2] == pytest.approx(0.25)


def test_generate_saves_into_the_output_folder(bpy, addon_prefs, fresh_world, sky_checkpoint, tmp_path):
    addon_prefs.backend = "IN_PROCESS"
    addon_prefs.checkpoint = sky_checkpoint
    addon_prefs.output_dir = str(tmp_path)
    fresh_world.alis_sky.anchors, fresh_world.alis_sky.resolution = 2, 64
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    image = fresh_world.node_tree.nodes["ALIS Environment"].image
    path = pathlib.Path(bpy.path.abspath(image.filepath))
    assert path.parent == tmp_path and path.suffix == ".exr" and path.is_file()
    assert path.name == fresh_world.alis_sky.to_params().file_name(".exr")
    assert image.packed_file is None
    # the file holds the same linear light as the datablock (Blender 4.2's Image.save() did not)
    loaded = bpy.data.images.load(str(path), check_existing=False)
    try:
        np.testing.assert_allclose(np.array(loaded.pixels[:]), np.array(image.pixels[:]), atol=1e-4)
    finally:
        bpy.data.images.remove(loaded)


def test_generate_reports_a_missing_checkpoint(bpy, addon_prefs, fresh_world, tmp_path):
    addon_prefs.backend = "IN_PROCESS"
    addon_prefs.checkpoint = str(tmp_path / "missing.safetensors")
    with pytest.raises(RuntimeError, match="missing.safetensors"):
        bpy.ops.alis.generate_world()
    assert fresh_world.node_tree is None or "ALIS Environment" not in fresh_world.node_tree.nodes


def _cli_has(flag):
    try:
        from alis_core import cli
    except ImportError:
        return False
    return flag in pathlib.Path(cli.__file__).read_text()


@pytest.mark.skipif(not _cli_has("--progress-format"), reason="alis CLI without --progress-format lines")
@pytest.mark.parametrize("resolution, to_folder", [(128, True), (256, True), (256, False)])
def test_generate_through_the_cli_subprocess(
    bpy, alis_extension, addon_prefs, fresh_world, sky_checkpoint, tmp_path, monkeypatch, resolution, to_folder,
):
    # 2 anchors of the tiny model make a 256 px loop: 256 keeps the CLI's file as it is, 128 resizes it
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    addon_prefs.backend = "SUBPROCESS"
    addon_prefs.python_path = sys.executable
    addon_prefs.checkpoint = sky_checkpoint
    addon_prefs.device = "cpu"
    out_dir = tmp_path / "skies"
    addon_prefs.output_dir = str(out_dir) if to_folder else ""
    s = fresh_world.alis_sky
    s.anchors, s.resolution = 2, resolution
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    nodes = assert_sky_wiring(fresh_world, 0.0)
    image = nodes["ALIS Environment"].image
    assert tuple(image.size) == (resolution, resolution // 2) and image.is_float
    if to_folder:
        name = s.to_params().file_name(".exr")
        assert [f.name for f in out_dir.iterdir()] == [name]
        assert image.filepath == str(out_dir / name) and image.packed_file is None
    else:
        assert image.packed_file is not None and not out_dir.exists()
    image.reload()  # read back from the file or the packed data: the CLI's temporary file is gone
    got = np.array(image.pixels[:], np.float32).reshape(resolution // 2, resolution, 4)[::-1, :, :3]
    # the CLI and the in-process backend make the same sky (up to Radiance HDR's ~1% precision)
    backend = _module(alis_extension, "backend")
    expected, _ = backend.generate_in_process(s.to_params(), checkpoint=str(sky_checkpoint), device="cpu")
    # RGBE shares one 8-bit exponent per pixel: the error scales with the pixel's brightest channel
    tolerance = 0.02 * expected.max(axis=2, keepdims=True) + 1e-3
    assert (np.abs(got - expected) <= tolerance).all()


def _band_sky(width=64):
    """Equirect [H, W, 3] with four colours centred on u = 0, 0.25, 0.5, 0.75 (u = column centre / W)."""
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)  # u=0 red ... u=0.75 yellow
    u = (np.arange(width) + 0.5) / width
    band = np.round(u * 4).astype(int) % 4
    return np.broadcast_to(colors[band][None], (width // 2, width, 3)).copy(), colors


def _render_direction(bpy, scene, yaw, tmp_path):
    """Render a 8x8 view from the origin looking horizontally at angle yaw (0 = +X, 90° = +Y); mean RGB."""
    cam = scene.camera
    cam.rotation_euler = (math.pi / 2, 0.0, yaw - math.pi / 2)
    path = str(tmp_path / f"view_{round(math.degrees(yaw))}.exr")
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True, scene=scene.name)
    img = bpy.data.images.load(path, check_existing=False)
    try:
        px = np.array(img.pixels[:], np.float32).reshape(-1, 4)[:, :3]
    finally:
        bpy.data.images.remove(img)
    return px.mean(axis=0)


def test_render_shows_the_expected_longitudes(bpy, alis_extension, tmp_path):
    # Blender maps image column u to direction atan2: +X sees u = 0.5, +Y sees u = 0.25, -X the seam (u = 0).
    world_mod = _module(alis_extension, "world")
    scene = bpy.data.scenes.new("alis_render_test")
    try:
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = 1
        scene.cycles.use_denoising = False
        scene.cycles.max_bounces = 0
        scene.render.use_persistent_data = True
        scene.render.resolution_x = scene.render.resolution_y = 8
        scene.render.resolution_percentage = 100
        scene.render.image_settings.file_format = "OPEN_EXR"
        scene.view_settings.view_transform = "Standard"
        cam_data = bpy.data.cameras.new("alis_cam")
        cam_data.angle = math.radians(10)
        cam = bpy.data.objects.new("alis_cam", cam_data)
        scene.collection.objects.link(cam)
        scene.camera = cam
        scene.world = bpy.data.worlds.new("alis_render_world")

        sky, colors = _band_sky()
        image = world_mod.image_from_pixels(sky)
        world_mod.wire_world(scene.world, image, rotation=0.0)
        expected = {0: colors[2], 90: colors[1], 180: colors[0], 270: colors[3]}  # +X, +Y, -X, -Y
        for yaw_deg, color in expected.items():
            seen = _render_direction(bpy, scene, math.radians(yaw_deg), tmp_path)
            np.testing.assert_allclose(seen, color, atol=0.02, err_msg=f"looking at yaw {yaw_deg}°")

        # The Mapping node (Point) rotates the lookup direction: at +90° about Z the +X view
        # shows what the +Y view showed before (u = 0.25).
        world_mod.set_rotation(scene.world, math.radians(90))
        seen = _render_direction(bpy, scene, 0.0, tmp_path)
        np.testing.assert_allclose(seen, colors[1], atol=0.02)
    finally:
        for cam_obj in list(scene.collection.objects):
            bpy.data.objects.remove(cam_obj)
        world = scene.world
        bpy.data.scenes.remove(scene)
        if world is not None:
            bpy.data.worlds.remove(world)


def test_save_image_writes_the_sky(bpy, alis_extension, fresh_world, tmp_path):
    world_mod = _module(alis_extension, "world")
    sky, _ = _band_sky(32)
    image = world_mod.image_from_pixels(sky * 2.5)  # HDR values above 1 must survive in EXR
    world_mod.store_image(image, "", "unused.exr")
    world_mod.wire_world(fresh_world, image)
    for name in ("sky.exr", "sky.png"):
        path = tmp_path / name
        assert bpy.ops.alis.save_image(filepath=str(path)) == {"FINISHED"}
        assert path.is_file()
    assert image.packed_file is not None and image.filepath != str(tmp_path / "sky.exr")  # datablock unchanged
    loaded = bpy.data.images.load(str(tmp_path / "sky.exr"), check_existing=False)
    try:
        px = np.array(loaded.pixels[:], np.float32).reshape(16, 32, 4)[::-1, :, :3]
        np.testing.assert_allclose(px, sky * 2.5, atol=1e-3)
    finally:
        bpy.data.images.remove(loaded)


def test_registers_without_torch_and_explains_the_backend(bpy, extension_zip, tmp_path):
    # A Blender whose Python has no torch (the usual case): the extension must still enable,
    # and Generate must say how to get a backend instead of failing with an import error.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["alis_core"] = None
        import bpy
        bpy.context.preferences.use_preferences_save = False
        bpy.ops.preferences.extension_repo_add(
            name="t", type="LOCAL", use_custom_directory=True, custom_directory={str(tmp_path / "repo")!r})
        repo = bpy.context.preferences.extensions.repos[-1]
        bpy.ops.extensions.package_install_files(filepath={extension_zip!r}, repo=repo.module, enable_on_install=True)
        module = "bl_ext." + repo.module + ".alis_sky"
        assert module in bpy.context.preferences.addons, "not enabled"
        prefs = bpy.context.preferences.addons[module].preferences
        problem = sys.modules[module + ".preferences"].backend_problem(prefs)
        print("PROBLEM:", problem)
        try:
            bpy.ops.alis.generate_world()
        except RuntimeError as ex:
            print("REPORT:", str(ex).strip())
        """
    )
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "PROBLEM: torch is not installed in Blender's Python" in out.stdout
    assert "Backend Python" in out.stdout.split("PROBLEM:")[1]
    assert "REPORT:" in out.stdout and "Backend Python" in out.stdout.split("REPORT:")[1]


class FakeLayout:
    """Records what a draw() function asks for; checks each property and operator exists (no UI in background mode)."""

    def __init__(self, bpy, calls):
        self._bpy, self.calls = bpy, calls
        self.enabled = self.active = True

    def _child(self, *args, **kwargs):
        child = type(self)(self._bpy, self.calls)
        self.calls.append(("layout", child))
        return child

    row = column = box = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"no property {name!r}"
        self.calls.append(("prop", name, self))

    def operator(self, idname, **kwargs):
        group, name = idname.split(".")
        assert hasattr(getattr(self._bpy.ops, group), name), f"no operator {idname}"
        self.calls.append(("operator", idname, self))
        return types.SimpleNamespace()

    def label(self, text="", **kwargs):
        self.calls.append(("label", text, self))

    def progress(self, factor=0.0, text="", **kwargs):
        self.calls.append(("progress", text, self))


class _Proxy:
    """An object whose `layout` is ours and whose other attributes come from `target` (an RNA struct)."""

    def __init__(self, target, layout):
        self.__dict__.update(_target=target, layout=layout)

    def __getattr__(self, name):
        return getattr(self._target, name)


def _draw(bpy, cls, owner, context):
    calls = []
    cls.draw(_Proxy(owner, FakeLayout(bpy, calls)), context)
    return calls


def _texts(calls):
    return " ".join(c[1] for c in calls if c[0] in ("label", "progress"))


def test_world_panel_draws_every_control_and_explains_a_missing_backend(bpy, addon_prefs, fresh_world):
    context = types.SimpleNamespace(
        world=fresh_world, window_manager=bpy.context.window_manager, preferences=bpy.context.preferences,
    )
    panel = bpy.types.WORLD_PT_alis_sky
    addon_prefs.backend = "SUBPROCESS"
    addon_prefs.python_path = ""
    calls = _draw(bpy, panel, None, context)
    props = {c[1] for c in calls if c[0] == "prop"}
    assert {"seed", "anchors", "psi", "resolution", "wrap", "horizon", "strip_scale", "cap_blur", "rotation",
            "sky", "sun_mode", "sun_lamp", "exposure"} <= props
    assert not {"sun_azimuth", "sun_elevation"} & props  # the angles only for a manual sun
    fresh_world.alis_sky.sun_mode = "manual"
    assert {"sun_azimuth", "sun_elevation"} <= {c[1] for c in _draw(bpy, panel, None, context) if c[0] == "prop"}
    fresh_world.alis_sky.sun_mode = "auto"
    ops = {c[1]: c[2] for c in calls if c[0] == "operator"}
    assert {"alis.generate_world", "alis.new_seed", "alis.save_image", "preferences.addon_show"} <= set(ops)
    assert not ops["alis.generate_world"].enabled  # no backend: Generate is greyed out ...
    assert "Backend Python" in _texts(calls) and "pip install" in _texts(calls)  # ... and the panel says why

    addon_prefs.backend = "IN_PROCESS"  # importable in the test environment
    status = bpy.context.window_manager.alis_sky_status
    status.running, status.progress, status.text = True, 0.5, "Generating 4/8"
    try:
        calls = _draw(bpy, panel, None, context)
    finally:
        status.running, status.text = False, ""
    assert ("progress", "Generating 4/8") in [(c[0], c[1]) for c in calls]
    assert "preferences.addon_show" not in {c[1] for c in calls if c[0] == "operator"}
    assert "Esc" in _texts(calls)


def test_preferences_draw_every_setting(bpy, addon_prefs):
    calls = _draw(bpy, type(addon_prefs), addon_prefs, bpy.context)
    props = {c[1] for c in calls if c[0] == "prop"}
    assert {"backend", "python_path", "checkpoint", "device", "output_dir", "torch_build", "setup_python",
            "download_url", "download_name"} <= props
    assert {"alis.check_backend", "alis.setup_backend", "alis.open_setup_log", "alis.refresh_models",
            "alis.download_model"} <= {c[1] for c in calls if c[0] == "operator"}
    assert "setup.log" in _texts(calls)  # where the log is


class FakeWindowManager:
    """Stands in for the window manager of an interactive session (timers, modal handlers, progress)."""

    def __init__(self, status):
        self.alis_sky_status = status
        self.windows = []
        self.log = []

    def event_timer_add(self, step, window=None):
        self.log.append("timer_add")
        return "timer"

    def event_timer_remove(self, timer):
        self.log.append("timer_remove")

    def modal_handler_add(self, operator):
        self.log.append("modal_handler")

    def progress_begin(self, low, high):
        self.log.append("progress_begin")

    def progress_update(self, value):
        self.log.append(value)

    def progress_end(self):
        self.log.append("progress_end")


def _interactive(bpy, idname="ALIS_OT_generate_world", **props):
    """(operator stand-in, context) to drive a job operator's modal path without a UI."""
    cls = getattr(bpy.types, idname)
    methods = {}
    for base in reversed(cls.__mro__):  # the operator's own methods and its JobOperator mixin's, not bpy's
        if base.__module__.startswith(cls.__module__.rsplit(".", 1)[0]):
            methods.update({k: v for k, v in vars(base).items()
                            if isinstance(v, types.FunctionType) or (k.startswith("_") and not k.startswith("__"))})
    op = type("OperatorStandIn", (), {**methods, **props})()
    op.reports = []
    op.report = lambda level, message: op.reports.append((set(level), message))
    status = bpy.context.window_manager.alis_sky_status
    workspace = types.SimpleNamespace(texts=[])
    workspace.status_text_set = workspace.texts.append
    context = types.SimpleNamespace(
        scene=bpy.context.scene, preferences=bpy.context.preferences, window=object(),
        window_manager=FakeWindowManager(status), workspace=workspace,
    )
    return op, context


def _pump(op, context, event_type="TIMER", timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = op.modal(context, types.SimpleNamespace(type=event_type, value="NOTHING"))
        if result != {"PASS_THROUGH"}:
            return result
        time.sleep(0.02)
    raise AssertionError("the modal operator never finished")


def test_modal_generate_keeps_the_ui_free_and_shows_progress(bpy, addon_prefs, fresh_world, sky_checkpoint):
    addon_prefs.backend = "IN_PROCESS"
    addon_prefs.checkpoint = sky_checkpoint
    fresh_world.alis_sky.anchors, fresh_world.alis_sky.resolution = 3, 64
    op, context = _interactive(bpy)
    status = context.window_manager.alis_sky_status

    assert op._start_modal(context) == {"RUNNING_MODAL"}
    assert status.running and context.workspace.texts[-1].startswith("ALIS sky")
    assert op.modal(context, types.SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"PASS_THROUGH"}
    assert _pump(op, context) == {"FINISHED"}

    log = context.window_manager.log
    assert log[:3] == ["timer_add", "modal_handler", "progress_begin"]
    assert log[-2:] == ["timer_remove", "progress_end"]
    fractions = [v for v in log if isinstance(v, float)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not status.running and status.text == "Done" and context.workspace.texts[-1] is None
    assert_sky_wiring(fresh_world, 0.0)


def test_modal_generate_cancels_with_esc(bpy, addon_prefs, fresh_world, tmp_path):
    if os.name != "posix":
        pytest.skip("the stand-in backend is a shell script")
    # a stand-in backend Python that reports progress slowly and never writes a file
    slow = tmp_path / "slow_python"
    slow.write_text('#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10; do echo "progress $i/10" >&2; sleep 1; done\n')
    slow.chmod(0o755)
    addon_prefs.backend = "SUBPROCESS"
    addon_prefs.python_path = str(slow)
    op, context = _interactive(bpy)
    assert op._start_modal(context) == {"RUNNING_MODAL"}
    assert op.modal(context, types.SimpleNamespace(type="ESC", value="PRESS")) == {"RUNNING_MODAL"}
    assert _pump(op, context, timeout=10) == {"CANCELLED"}
    assert op._job.state == "CANCELLED" and op._job._proc.poll() is not None
    assert not context.window_manager.alis_sky_status.running
    assert fresh_world.node_tree is None or "ALIS Environment" not in fresh_world.node_tree.nodes
    assert any("cancelled" in message for _, message in op.reports)


def test_ui_choices_and_ranges_come_from_alis_core_options(bpy, alis_extension, addon_prefs, fresh_world):
    from alis_core import options

    props = fresh_world.alis_sky.bl_rna.properties
    assert (props["psi"].hard_min, props["psi"].hard_max) == pytest.approx((options.PSI_MIN, options.PSI_MAX))
    assert props["psi"].default == pytest.approx(options.BLENDER.psi) and props["anchors"].default == options.BLENDER.anchors
    assert tuple(item.identifier for item in props["noise_mode"].enum_items) == options.NOISE_MODES
    assert props["noise_mode"].default == "none"
    assert tuple(item.identifier for item in props["sky"].enum_items) == options.SKY_MODES
    assert tuple(item.identifier for item in props["sun_mode"].enum_items) == options.SUN_MODES
    assert (props["sky"].default, props["sun_mode"].default, props["sun_lamp"].default) == ("physical", "auto", True)
    assert (props["exposure"].hard_min, props["exposure"].hard_max) == pytest.approx(
        (options.EXPOSURE_MIN, options.EXPOSURE_MAX))
    devices = addon_prefs.bl_rna.properties["device"]
    assert tuple(item.identifier for item in devices.enum_items) == options.DEVICES and devices.default == "auto"
