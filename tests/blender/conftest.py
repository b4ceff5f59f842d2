"""Fixtures for the Blender extension tests: bpy (skipped when not installed), the built zip, an enabled install."""
import os
import tempfile

import pytest

# bpy reads its user folders when first imported: keep them (and the test extension repository)
# out of the home directory.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="alis_blender_user_"))


@pytest.fixture(scope="session")
def bpy():
    return pytest.importorskip("bpy", reason="needs Blender as a Python module: pip install bpy==5.0.1")


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory):
    from blender_addon import build

    return build.build(str(tmp_path_factory.mktemp("dist")))


@pytest.fixture(scope="session")
def alis_extension(bpy, extension_zip, tmp_path_factory):
    """Install the built zip into a temporary local extension repository and enable it, as a user would.

    Yields the add-on module name (bl_ext.<repo>.alis_sky).
    """
    prefs = bpy.context.preferences
    prefs.use_preferences_save = False
    repo_dir = str(tmp_path_factory.mktemp("extensions") / "alis_test")
    assert bpy.ops.preferences.extension_repo_add(
        name="alis_test", type="LOCAL", use_custom_directory=True, custom_directory=repo_dir,
    ) == {"FINISHED"}
    index, repo = next((i, r) for i, r in enumerate(prefs.extensions.repos) if r.directory == repo_dir)
    assert bpy.ops.extensions.package_install_files(
        filepath=extension_zip, repo=repo.module, enable_on_install=True,
    ) == {"FINISHED"}
    module = f"bl_ext.{repo.module}.alis_sky"
    assert module in prefs.addons, "the extension did not enable"
    yield module
    bpy.ops.preferences.addon_disable(module=module)
    bpy.ops.preferences.extension_repo_remove(index=index, remove_files=True)


@pytest.fixture
def addon_prefs(bpy, alis_extension):
    """The extension's preferences, restored after the test."""
    prefs = bpy.context.preferences.addons[alis_extension].preferences
    saved = {k: getattr(prefs, k) for k in ("backend", "python_path", "checkpoint", "device", "output_dir")}
    yield prefs
    for k, v in saved.items():
        setattr(prefs, k, v)


@pytest.fixture
def fresh_world(bpy, alis_extension):
    """A new, empty-node World assigned to the current scene (removed afterwards)."""
    scene = bpy.context.scene
    old = scene.world
    world = bpy.data.worlds.new("ALIS test world")
    scene.world = world
    yield world
    scene.world = old
    bpy.data.worlds.remove(world)
    for obj in [o for o in bpy.data.objects if o.get("alis_sun") is not None]:  # a sun lamp Generate made
        light = obj.data
        bpy.data.objects.remove(obj)
        if light.users == 0:
            bpy.data.lights.remove(light)



@pytest.fixture(scope="session")
def sky_checkpoint(tmp_path_factory):
    """A tiny random generator (default init, seeded) whose skies change visibly with the seed, saved to disk."""
    alis_core = pytest.importorskip("alis_core")
    import torch

    torch.manual_seed(0)
    G = alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sky.safetensors"
    alis_core.save_generator(G, path)
    return str(path)
