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


def _sky_pixels(image):
    w, h = image.size
    return np.array(image.pixels[:], np.float32).reshape(h, w, 4)[::-1, :, :3]


@pytest.mark.slow  # two 100-step inversions (alis generate has no steps option): 21 to 85 s measured on 2 shared CPUs
def test_generate_from_image_is_the_same_loop_with_both_backends(bpy, addon_prefs, fresh_world, sky_checkpoint,
                                                                 tmp_path, monkeypatch):
    import alis_core
    import torch
    from PIL import Image

    G = alis_core.load_generator(sky_checkpoint, device="cpu")
    with torch.no_grad():  # a 128 px landscape the tiny model can redraw
        frame = alis_core.panorama(G, alis_core.sample_anchors(G, 2, 5, truncation_psi=0.7), wrap=False)
    photo = tmp_path / "photo.png"
    Image.fromarray((alis_core.image.to_unit(frame).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(photo)

    s = fresh_world.alis_sky
    s.anchors, s.resolution, s.photo = 4, 128, str(photo)
    p = s.to_params()
    stem = p.file_stem()
    assert p.photo == str(photo) and stem.endswith(f"_p{p.photo_tag}") and len(p.photo_tag) == 8
    os.utime(photo, ns=(1, 10**18))
    assert s.to_params().file_stem() != stem  # an edited photo is another sky

    skies = {}
    for kind in ("IN_PROCESS", "SUBPROCESS"):
        _use_backend(addon_prefs, kind, sky_checkpoint, monkeypatch)
        assert bpy.ops.alis.generate_world() == {"FINISHED"}
        skies[kind] = _sky_pixels(fresh_world.node_tree.nodes["ALIS Environment"].image)
    assert skies["IN_PROCESS"].shape == (64, 128, 3)
    # the CLI's file is Radiance HDR: RGBE keeps ~1% of each pixel's brightest channel
    tolerance = 0.02 * skies["IN_PROCESS"].max(axis=2, keepdims=True) + 1e-3
    assert (np.abs(skies["SUBPROCESS"] - skies["IN_PROCESS"]) <= tolerance).all()

    s.photo = ""  # the photo changed the loop: without it the same seed gives another sky
    _use_backend(addon_prefs, "IN_PROCESS", sky_checkpoint, monkeypatch)
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    assert np.abs(_sky_pixels(fresh_world.node_tree.nodes["ALIS Environment"].image) - skies["IN_PROCESS"]).mean() > 1e-3


def test_generate_from_a_missing_image_says_so(bpy, addon_prefs, fresh_world, sky_checkpoint, tmp_path, monkeypatch):
    _use_backend(addon_prefs, "IN_PROCESS", sky_checkpoint, monkeypatch)
    fresh_world.alis_sky.photo = str(tmp_path / "gone.png")
    with pytest.raises(RuntimeError, match="gone.png.*From Image"):
        bpy.ops.alis.generate_world()


def test_export_and_photo_commands_parse_with_the_cli(tmp_path):
    from alis_core.cli import build_parser

    from blender_addon import backend
    from blender_addon.params import SkyParams

    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    p = SkyParams(anchors=6, photo=str(photo))
    a = build_parser().parse_args(backend.build_generate_command("/py", p, "/o/sky.hdr")[3:])
    assert (a.from_photo, a.anchors, a.wrap, a.context) == (str(photo), 6, True, True)
    assert "--from-photo" not in backend.build_generate_command("/py", SkyParams(), "/o/sky.hdr")
    a = build_parser().parse_args(backend.build_export_command("/py", "/t/sky.exr", "/out", "godot")[3:])
    assert (a.command, a.sky, a.target, a.out) == ("export", "/t/sky.exr", "godot", "/out")
    with pytest.raises(backend.BackendError, match="target 'quake'.*godot"):
        backend.build_export_command("/py", "/t/sky.exr", "/out", "quake")
    with pytest.raises(ValueError, match="Wrap"):
        SkyParams(photo=str(photo), wrap=False).validate()
