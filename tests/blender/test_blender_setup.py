"""Set Up Backend in real Blender: a venv in the extension's user folder with torch and the zip's own
project wheel, after which Generate works through it with no other step.

It installs torch==2.13.0 for real (about a minute on 2 cores), so it is marked slow. The torch wheel
must come from this machine (pip's configured --find-links folder, or pip's cache in CI), never from
the network: without a local wheel the test is skipped, unless CI is set.
"""
import glob
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from blender_addon import installer
from test_blender_extension import _draw, _module, assert_sky_wiring


def _local_torch_wheel() -> bool:
    """Whether pip's find-links folders (PIP_FIND_LINKS, or pip's configuration) hold the torch wheel."""
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                             capture_output=True, text=True, timeout=60)
        folders += out.stdout.split() if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        pass
    pattern = f"torch-{installer.TORCH_VERSION}*.whl"
    return any(glob.glob(os.path.join(folder, pattern)) for folder in folders if os.path.isdir(folder))


@pytest.mark.slow
@pytest.mark.skipif(not _local_torch_wheel() and not os.environ.get("CI"),
                    reason=f"no local torch {installer.TORCH_VERSION} wheel: the test never downloads torch")
def test_set_up_backend_makes_a_venv_that_generates(
        bpy, alis_extension, addon_prefs, fresh_world, sky_checkpoint, tmp_path, monkeypatch):
    system = bpy.context.preferences.system
    saved_online, saved_build = system.use_online_access, addon_prefs.torch_build
    system.use_online_access = True
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the venv must find its own alis_core, not this checkout
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "alis_home"))
    prefs_mod = _module(alis_extension, "preferences")
    venv_dir, log_path = prefs_mod.setup_paths()
    backend_dir = os.path.dirname(venv_dir)
    try:
        # pip's own configuration: on this machine the local wheel folder (the CPU index is the default)
        addon_prefs.torch_build = "PYPI"
        addon_prefs.python_path = ""
        assert bpy.ops.alis.setup_backend() == {"FINISHED"}

        python = installer.venv_python(venv_dir)
        assert addon_prefs.python_path == python and os.path.isfile(python)
        assert pathlib.Path(venv_dir).is_relative_to(bpy.utils.extension_path_user(
            alis_extension, create=False))  # kept across updates of the extension, out of its own folder
        assert f"torch {installer.TORCH_VERSION}" in addon_prefs.check_result
        log = pathlib.Path(log_path).read_text()
        for step in ("Creating the backend's virtual environment", "Installing torch", "Checking the backend"):
            assert f"== {step}" in log
        where = subprocess.run([python, "-c", "import alis_core, torch; print(alis_core.__file__)"],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert where.returncode == 0, where.stderr
        assert pathlib.Path(where.stdout.strip()).is_relative_to(venv_dir)  # the wheel's copy, in the venv

        # Generate through the new backend, nothing else set up
        addon_prefs.backend = "AUTO"
        addon_prefs.checkpoint = sky_checkpoint
        addon_prefs.device = "cpu"
        s = fresh_world.alis_sky
        s.anchors, s.resolution = 2, 128
        assert bpy.ops.alis.generate_world() == {"FINISHED"}
        image = assert_sky_wiring(fresh_world, 0.0)["ALIS Environment"].image
        got = np.array(image.pixels[:], np.float32).reshape(64, 128, 4)[::-1, :, :3]
        backend = _module(alis_extension, "backend")
        expected, _ = backend.generate_in_process(s.to_params(), checkpoint=sky_checkpoint, device="cpu")
        tolerance = 0.02 * expected.max(axis=2, keepdims=True) + 1e-3  # Radiance HDR's shared exponent
        assert (np.abs(got - expected) <= tolerance).all()
    finally:
        system.use_online_access = saved_online
        addon_prefs.torch_build = saved_build
        shutil.rmtree(backend_dir, ignore_errors=True)  # a gigabyte of torch


def test_set_up_backend_failure_is_one_line_and_keeps_the_backend_python(
        bpy, alis_extension, addon_prefs, tmp_path):
    system = bpy.context.preferences.system
    saved_online, saved_base = system.use_online_access, addon_prefs.setup_python
    system.use_online_access = True
    prefs_mod = _module(alis_extension, "preferences")
    venv_dir, log_path = prefs_mod.setup_paths()
    try:
        addon_prefs.python_path = "/kept/python"
        addon_prefs.setup_python = str(tmp_path / "no_such_python")
        with pytest.raises(RuntimeError, match="Creating the backend's virtual environment failed: could not start"):
            bpy.ops.alis.setup_backend()
        assert addon_prefs.python_path == "/kept/python"
        assert addon_prefs.setup_result.startswith("Setup failed: Creating the backend's virtual environment failed")
        assert log_path in addon_prefs.setup_result and os.path.isfile(log_path)
        assert bpy.ops.alis.open_setup_log.poll()  # the log is there to open
        calls = _draw(bpy, type(addon_prefs), addon_prefs, bpy.context)
        assert ("label", addon_prefs.setup_result) in [(c[0], c[1]) for c in calls]
    finally:
        system.use_online_access = saved_online
        addon_prefs.setup_python, addon_prefs.setup_result = saved_base, ""
        shutil.rmtree(os.path.dirname(venv_dir), ignore_errors=True)
