"""The `alis` command line: outputs, geometry, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import alis_core
from alis_core.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return main([str(a) for a in args])


def test_generate_skybox_files(tmp_path, tiny_checkpoint, capsys):
    rc = run_cli("generate", "--checkpoint", tiny_checkpoint, "--wrap", "--anchors", 3, "--seed", 4,
                 "--out", tmp_path / "pano.png", "--equirect", tmp_path / "sky.hdr", "--cubemap", tmp_path / "faces",
                 "--progress-format", "none")
    assert rc == 0
    out = capsys.readouterr()
    assert "wrote" in out.out and "seam score" in out.err
    pano = alis_core.load_image(tmp_path / "pano.png")
    assert pano.shape == (3, 64, 3 * 128)
    sky = alis_core.load_float_image(tmp_path / "sky.hdr")
    assert sky.shape == (3, 192, 384)
    for stem in alis_core.CUBE_FACE_FILES:
        assert alis_core.load_image(tmp_path / "faces" / f"{stem}.png").shape == (3, 96, 96)
    assert alis_core.load_image(tmp_path / "faces" / "cross.png").shape[1:] == (288, 384)
    text = json.loads(alis_core.image.read_png_text(tmp_path / "pano.png")["alis"])
    assert text["seed"] == 4 and text["wrap"] is True


@pytest.mark.parametrize("context", [True, False])
def test_generate_matches_library(tmp_path, tiny_checkpoint, tiny_G, context):
    run_cli("generate", "--checkpoint", tiny_checkpoint, "--seeds", "3,1,4", "--bits", 16,
            "--out", tmp_path / "p.png", "--progress-format", "none", *([] if context else ["--no-context"]))
    img = alis_core.load_image(tmp_path / "p.png")
    anchors = alis_core.anchors_from_seeds(tiny_G, [3, 1, 4])
    ref = alis_core.to_unit(alis_core.panorama(tiny_G, anchors, context=context))
    assert (img - ref).abs().max() <= 1 / 65535 + 5e-5  # 16-bit rounding; the CLI runs the fast path
    other = alis_core.to_unit(alis_core.panorama(tiny_G, anchors, context=not context))
    assert (img - other).abs().max() > 1e-2  # patch context is on by default, off with --no-context


def test_width_picks_the_number_of_anchors(tmp_path, tiny_checkpoint):
    run_cli("generate", "--checkpoint", tiny_checkpoint, "--width", 300, "--out", tmp_path / "p.png",
            "--progress-format", "none")
    assert alis_core.load_image(tmp_path / "p.png").shape == (3, 64, 300)


def test_tiles_stream_with_an_index(tmp_path, tiny_checkpoint):
    run_cli("generate", "--checkpoint", tiny_checkpoint, "--width", 700, "--batch-size", 3,
            "--tiles", tmp_path / "tiles", "--progress-format", "none")
    index = json.loads((tmp_path / "tiles" / "index.json").read_text())
    assert index["width"] == 700 and sum(t["width"] for t in index["tiles"]) == 700
    whole = torch.cat([alis_core.load_image(tmp_path / "tiles" / t["file"]) for t in index["tiles"]], 2)
    assert whole.shape == (3, 64, 700)


@pytest.mark.parametrize("args, needle", [
    (["--width", "0"], "--width must be a positive"),
    (["--device", "tpu"], "--device must be one of"),
    (["--psi", "5"], "--psi must be within"),
    (["--noise", "loud"], "--noise must be"),
    (["--anchors", "1", "--wrap"], "at least 2 anchors"),
    (["--seeds", "1,a"], "'a' is not an integer"),
    (["--equirect", "sky.tif"], "--equirect sky.tif"),
])
def test_bad_generate_inputs(args, needle, tiny_checkpoint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("generate", "--checkpoint", tiny_checkpoint, "--progress-format", "none", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_missing_checkpoint_and_unwritable_output(tmp_path, tiny_checkpoint, capsys):
    assert run_cli("generate", "--checkpoint", tmp_path / "none.safetensors") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli("generate", "--checkpoint", tiny_checkpoint, "--out", blocker / "sub" / "p.png") == 2
    assert "not writable" in capsys.readouterr().err


def test_info_and_convert(tmp_path, capsys):
    fixtures = REPO / "tests" / "fixtures"
    assert run_cli("convert", fixtures / "official_tiny64.pkl", tmp_path / "t.safetensors") == 0
    assert run_cli("info", tmp_path / "t.safetensors") == 0
    out = capsys.readouterr().out
    assert "64 x 64 px (2 patches of 32 px)" in out and "anchor spacing    128 px" in out
    assert run_cli("convert", fixtures / "official_tiny64.pkl", tmp_path / "t.bin") == 2


def test_module_entry_point_exit_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "alis_core", "generate", "--checkpoint", str(tmp_path / "x.pkl")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: checkpoint not found") and "Traceback" not in r.stderr


def test_train_and_eval_are_delegated(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("train", "--help")
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        run_cli("train", "--data", "synthetic", "--preset", "nope", "--out", "x")
    assert e.value.code == 2 and "nope" in capsys.readouterr().err


def test_info_says_whether_the_compiled_kernels_run(monkeypatch):
    from alis_core import GeneratorConfig, kernels
    from alis_core.cli import _kernels_line
    big, small = GeneratorConfig(img_resolution=256, channel_base=16384), GeneratorConfig.tiny()
    assert _kernels_line(small).startswith("not used")
    monkeypatch.setattr(kernels, "installed", lambda: True)
    assert _kernels_line(big).startswith("on")
    monkeypatch.setattr(kernels, "installed", lambda: False)
    assert _kernels_line(big).startswith("not installed")
    monkeypatch.setenv(kernels.ENV, "0")
    assert _kernels_line(big).startswith("off")
    monkeypatch.undo()
    monkeypatch.setenv(kernels.ENV, "0")
    assert not kernels.installed()


# --- output formats and replacing files ---------------------------------------------------------

GEN = ("generate", "--anchors", 2, "--seed", 3, "--progress-format", "none")


@pytest.mark.parametrize("name, magic", [("p.jpg", b"\xff\xd8\xff"), ("p.jpeg", b"\xff\xd8\xff"),
                                         ("p.webp", b"RIFF"), ("p.hdr", b"#?RADIANCE"), ("p.png", b"\x89PNG")])
def test_out_format_follows_the_extension(name, magic, tmp_path, tiny_checkpoint, tiny_G):
    assert run_cli(*GEN, "--checkpoint", tiny_checkpoint, "--out", tmp_path / name) == 0
    assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    ref = alis_core.to_unit(alis_core.panorama(tiny_G, alis_core.sample_anchors(tiny_G, 2, 3), context=True))
    if name.endswith(".hdr"):  # linear light
        img = alis_core.linear_to_srgb(alis_core.load_float_image(tmp_path / name))
        assert (img - ref).abs().mean() < 0.02
    else:
        img = alis_core.load_image(tmp_path / name)
        assert img.shape == ref.shape and (img - ref).abs().mean() < (0.002 if name.endswith("png") else 0.05)


def test_an_image_output_replaces_an_image_and_only_force_replaces_anything_else(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "p.png"
    alis_core.save_png(out, torch.zeros(3, 4, 4))
    assert run_cli(*GEN, "--checkpoint", tiny_checkpoint, "--out", out) == 0  # an image over an image
    assert alis_core.load_image(out).shape == (3, 64, 128)
    precious = tmp_path / "precious.jpg"
    precious.write_bytes(Path(tiny_checkpoint).read_bytes())
    assert run_cli(*GEN, "--checkpoint", tiny_checkpoint, "--out", precious) == 2
    assert "is a checkpoint" in capsys.readouterr().err
    assert precious.read_bytes() == Path(tiny_checkpoint).read_bytes()
    assert run_cli(*GEN, "--checkpoint", tiny_checkpoint, "--out", precious, "--force") == 0
    assert precious.read_bytes()[:3] == b"\xff\xd8\xff"


def test_noise_seed_is_the_noise_and_seed_the_scene(tmp_path, tiny_checkpoint):
    def render(*extra):
        path = tmp_path / f"p{len(list(tmp_path.iterdir()))}.png"
        assert run_cli(*GEN, "--checkpoint", tiny_checkpoint, "--noise", "random", "--bits", 16, "--out", path,
                       *extra) == 0
        return alis_core.load_image(path)
    base = render()
    assert torch.equal(render("--noise-seed", 3), base)  # the noise seed defaults to --seed
    other_noise = render("--noise-seed", 4)
    assert not torch.equal(other_noise, base)
    assert (other_noise - base).abs().mean() < (render("--seed", 4, "--noise-seed", 3) - base).abs().mean()


def test_library_seed_is_a_deprecated_alias_of_noise_seed(tiny_G):
    a = alis_core.sample_anchors(tiny_G, 2, 0)
    ref = alis_core.panorama(tiny_G, a, noise_mode="random", noise_seed=5)
    with pytest.warns(DeprecationWarning, match="noise_seed"):
        old = alis_core.panorama(tiny_G, a, noise_mode="random", seed=5)
    assert torch.equal(ref, old)
    with pytest.raises(alis_core.AlisError, match="disagree"):
        alis_core.panorama(tiny_G, a, noise_seed=4, seed=5)


# --- tile sets ------------------------------------------------------------------------------------

TILES = ("generate", "--width", 500, "--batch-size", 2, "--progress-format", "none")


def tile_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("tile_"))


def test_tile_index_records_provenance_and_completes_last(tmp_path, tiny_checkpoint):
    folder = tmp_path / "tiles"
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--seed", 5, "--tiles", folder) == 0
    index = json.loads((folder / "index.json").read_text())
    prov = index["provenance"]
    assert index["complete"] is True and index["alis_output"] == "tiles"
    assert prov["seed"] == 5 and prov["anchors"] == 5 and prov["checkpoint"]["name"] == "tiny.safetensors"
    assert {"psi", "noise", "noise_seed", "wrap", "width", "context", "dtype", "exact", "version"} <= set(prov)
    assert [t["file"] for t in index["tiles"]] == tile_files(folder) and not (folder / ".alis.lock").exists()


def test_interrupted_tile_set_is_marked_incomplete_and_resumable(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "tiles"

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as mp:
        from alis_core import cli
        mp.setattr(cli, "ProgressReporter", lambda *a, **k: interrupt)
        assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 130
    index = json.loads((folder / "index.json").read_text())
    assert index["complete"] is False and index["tiles"] == []  # a reader can tell
    assert not (folder / ".alis.lock").exists()
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 0  # same panorama: resumes
    assert json.loads((folder / "index.json").read_text())["complete"] is True


def test_another_panoramas_tiles_are_refused_without_force(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "tiles"
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 0
    first = {n: (folder / n).read_bytes() for n in tile_files(folder)}
    (folder / "mine.txt").write_text("the user's")
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder, "--seed", 9) == 2
    assert "tiles of another panorama" in capsys.readouterr().err
    assert {n: (folder / n).read_bytes() for n in tile_files(folder)} == first
    # --force replaces them; a narrower set removes the old set's extra tiles, and nothing else
    assert run_cli("generate", "--width", 200, "--batch-size", 2, "--progress-format", "none", "--seed", 9,
                   "--checkpoint", tiny_checkpoint, "--tiles", folder, "--force") == 0
    index = json.loads((folder / "index.json").read_text())
    assert tile_files(folder) == [t["file"] for t in index["tiles"]] and len(index["tiles"]) < len(first)
    assert (folder / "mine.txt").read_text() == "the user's"


def test_a_tile_folder_not_ours_is_refused(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "tiles"
    folder.mkdir()
    (folder / "tile_00000.png").write_text("not a tile")
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 2
    assert "another panorama" in capsys.readouterr().err
    (folder / "tile_00000.png").unlink()
    (folder / "index.json").write_text('{"tiles": []}')
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 2
    assert "index.json was not written by alis generate" in capsys.readouterr().err


def test_one_run_at_a_time_per_tile_folder(tmp_path, tiny_checkpoint, capsys):
    import socket
    folder = tmp_path / "tiles"
    folder.mkdir()
    lock = folder / ".alis.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))  # a live run
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 2
    err = capsys.readouterr().err
    assert "in use by another alis run" in err and f"pid {os.getpid()}" in err and not tile_files(folder)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))  # a run that is gone
    assert run_cli(*TILES, "--checkpoint", tiny_checkpoint, "--tiles", folder) == 0
    assert "replaced the lock of a run that is gone" in capsys.readouterr().err and not lock.exists()


def _angles(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Elevation [H, 1] and azimuth [1, W] of an equirect's pixel centres, in degrees
    (u = 0.5 - azimuth / 360: the project's and Blender's convention)."""
    el = 90.0 - 180.0 * (torch.arange(h, dtype=torch.float64) + 0.5) / h
    az = (0.5 - (torch.arange(w, dtype=torch.float64) + 0.5) / w) * 360.0
    return el[:, None], az[None, :]


def test_generate_full_sphere_sky_with_a_sun(tmp_path, capsys):
    """#19 on the bundled model: `--equirect sky.exr --sun 60,30` puts an HDR sun where asked, far
    brighter than the sky, with its strength in sky.json; the loop still wraps exactly."""
    rc = run_cli("generate", "--wrap", "--seed", 7, "--equirect", tmp_path / "sky.exr", "--sun", "60,30",
                 "--progress-format", "none")
    assert rc == 0
    sky = alis_core.load_float_image(tmp_path / "sky.exr")  # [3, H, 2H] radiance
    info = json.loads((tmp_path / "sky.json").read_text())
    assert info["sun"]["azimuth_deg"] == 60 and info["sun"]["elevation_deg"] == 30
    assert info["model"] == "default" and info["seeds"] == [7]
    lum = sky.mean(0).double()
    h, w = lum.shape
    y, x = divmod(int(lum.argmax()), w)
    el, az = _angles(h, w)
    assert abs(float(el[y, 0]) - 30) <= 3 and abs((float(az[0, x]) - 60 + 180) % 360 - 180) <= 3
    assert float(lum.max()) >= 1000 * float(lum[: h // 2].median())
    # the disk's integrated radiance is the irradiance the JSON gives a sun lamp
    omega = (torch.pi / h) * (2 * torch.pi / w) * torch.cos(torch.deg2rad(el))  # [H, 1]
    disk = lum > 50 * float(lum[: h // 2].median())
    rgb_weights = torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)
    ylum = (sky.double() * rgb_weights[:, None, None]).sum(0)
    background = float(ylum[: h // 2][~disk[: h // 2]].median())
    irr = float(((ylum - background) * disk * omega).sum())
    assert abs(irr / info["sun"]["irradiance"] - 1) <= 0.1, (irr, info["sun"]["irradiance"])
    # exact wrap: the step across the seam is like any step between neighbouring columns
    seam = (sky[..., 0] - sky[..., -1]).abs().mean()
    inner = (sky[..., 1:] - sky[..., :-1]).abs().mean(dim=(0, 1))
    assert float(seam) <= 3 * float(inner.median()) + 1e-6


def test_no_sun_disk_keeps_the_sun_in_the_json_and_blur_keeps_the_old_fill(tmp_path):
    """--no-sun-disk: no disk in the image, the sun still in sky.json (for apps that add a lamp);
    --sky blur: today's blurred caps (no sun), its PNG as before."""
    base = ["generate", "--wrap", "--seed", 7, "--progress-format", "none"]
    assert run_cli(*base, "--equirect", tmp_path / "a.hdr", "--sun", "60,30", "--no-sun-disk") == 0
    a = alis_core.load_float_image(tmp_path / "a.hdr")
    info = json.loads((tmp_path / "a.json").read_text())
    assert info["sun"]["irradiance"] > 0 and float(a.max()) < 100
    assert run_cli(*base, "--equirect", tmp_path / "b.png", "--sky", "blur", "--sun", "none") == 0
    assert run_cli(*base, "--out", tmp_path / "strip.png") == 0
    strip = alis_core.load_image(tmp_path / "strip.png")
    old = alis_core.strip_to_equirect(strip).clamp(0, 1)
    new = alis_core.load_image(tmp_path / "b.png")
    assert (new - old).abs().max() <= 3 / 255
    assert json.loads((tmp_path / "b.json").read_text())["sun"] is None


def test_warnings_are_one_line_each_and_the_format_is_put_back():
    """A command's warnings print as one `warning:` line (no source path, no line of code), like
    its errors; the process's warning format is restored when the command returns."""
    code = ("import warnings\n"
            "from alis_core.cli import run_main\n"
            "before = warnings.formatwarning\n"
            "rc = run_main(lambda argv: (warnings.warn('float16 is slow here', RuntimeWarning), 0)[1], [])\n"
            "assert rc == 0 and warnings.formatwarning is before\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "warning: float16 is slow here\n"
