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
