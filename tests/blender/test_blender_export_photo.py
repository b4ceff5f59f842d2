"""Save Image's engine presets (Target) and Generate "From Image", in real Blender (bpy module), both backends.

Skipped when bpy is not installed (pip install bpy==5.0.1).
"""
import os
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _use_backend(addon_prefs, kind, sky_checkpoint, monkeypatch):
    addon_prefs.backend, addon_prefs.checkpoint, addon_prefs.device = kind, sky_checkpoint, "cpu"
    addon_prefs.output_dir = ""
    if kind == "SUBPROCESS":  # the backend Python runs this checkout's alis_core
        monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        addon_prefs.python_path = sys.executable


@pytest.mark.parametrize("kind", ["IN_PROCESS", "SUBPROCESS"])
def test_save_image_exports_an_engine_preset(bpy, addon_prefs, fresh_world, sky_checkpoint, tmp_path, monkeypatch,
                                             kind):
    from PIL import Image

    _use_backend(addon_prefs, kind, sky_checkpoint, monkeypatch)
    s = fresh_world.alis_sky
    s.anchors, s.resolution, s.sun_mode, s.sun_elevation = 2, 128, "manual", 0.5235988  # 30°
    assert bpy.ops.alis.generate_world() == {"FINISHED"}

    out = tmp_path / "godot"
    assert bpy.ops.alis.save_image(filepath=str(out / "ignored.exr"), target="godot") == {"FINISHED"}
    assert sorted(f.name for f in out.iterdir()) == ["README.txt", "cubemap_2x3.png", "sky.hdr"]
    assert Image.open(out / "cubemap_2x3.png").size == (2 * 32, 3 * 32)  # 2 columns x 3 rows of 32 px faces (half the height)
    readme = (out / "README.txt").read_text()
    assert "Godot" in readme and "elevation 30 deg" in readme  # the sky's sidecar (its sun) went along

    # Target None: the image itself, nothing else
    plain = tmp_path / "plain"
    plain.mkdir()
    assert bpy.ops.alis.save_image(filepath=str(plain / "sky.exr")) == {"FINISHED"}
    assert [f.name for f in plain.iterdir()] == ["sky.exr"]


def test_save_image_reports_a_refused_export(bpy, addon_prefs, fresh_world, sky_checkpoint, tmp_path, monkeypatch):
    _use_backend(addon_prefs, "IN_PROCESS", sky_checkpoint, monkeypatch)
    fresh_world.alis_sky.anchors, fresh_world.alis_sky.resolution = 2, 64
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    (tmp_path / "sky.hdr").write_text("someone else's file")
    with pytest.raises(RuntimeError, match="sky.hdr"):
        bpy.ops.alis.save_image(filepath=str(tmp_path / "x.exr"), target="godot")
    assert (tmp_path / "sky.hdr").read_text() == "someone else's file"
