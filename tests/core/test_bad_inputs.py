"""Every bad input of every `alis` command: one `error:` line, exit code 2, and nothing written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import alis_core
from alis_core.cli import main

REPO = Path(__file__).resolve().parents[2]
FIXTURE_PKL = REPO / "tests" / "fixtures" / "official_tiny64.pkl"


def run(args: list[str]) -> int:
    """The exit code of `alis ARGS` run in this process (argparse's own errors exit through SystemExit)."""
    try:
        return main(args)
    except SystemExit as e:
        return e.code


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_checkpoint):
    """A folder with things a careless command could overwrite; the current directory during the test."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(Path(tiny_checkpoint).read_bytes())
    (tmp_path / "ckpt.png").write_bytes(Path(tiny_checkpoint).read_bytes())
    (tmp_path / "notes.png").write_text("my notes, not an image")
    (tmp_path / "anchors.webp").write_text('{"anchors": [1, 2, 3]}')
    (tmp_path / "anchors.json").write_text('{"anchors": [1, 2, 3]}')
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "f.json").write_text('{"my": "settings"}')  # not a sky sidecar: never replaced
    return tmp_path


# (arguments after `alis generate --checkpoint CKPT --progress-format none`, text the error line holds)
GENERATE = [
    (["--seed", str(2 ** 70)], "--seed must be an integer"),
    (["--seed", "-1"], "--seed must be an integer"),
    (["--noise", "random", "--noise-seed", str(2 ** 64)], "--noise-seed must be an integer"),
    (["--seeds", f"1,{2 ** 70}"], "--seeds entry must be an integer"),
    (["--seeds", "1,a"], "'a' is not an integer"),
    (["--seeds", ","], "holds no seeds"),
    (["--seeds", ",".join(["1"] * 5000)], "the number of --seeds must be within"),
    (["--anchors", str(10 ** 6)], "--anchors must be within 1..4096"),
    (["--anchors", "0"], "--anchors must be within"),
    (["--anchors", "-3"], "--anchors must be within"),
    (["--anchors", "1", "--wrap"], "at least 2 anchors"),
    (["--anchors", "3", "--width", "700"], "exceeds the 256 px"),
    (["--width", "0"], "--width must be a positive"),
    (["--width", "-5"], "--width must be a positive"),
    (["--width", str(10 ** 9)], "more than 4096"),
    (["--width", str(10 ** 9), "--tiles", "t"], "more than 4096"),
    (["--anchors", "4000", "--equirect", "e.png"], "needs about"),  # a 512000 px wide 2:1 equirect
    (["--width", "5", "--equirect", "e.png"], "even strip width"),
    (["--width", "6", "--wrap", "--cubemap", "c"], "even strip width"),
    (["--cubemap", "c", "--face-size", str(10 ** 6)], "needs about"),
    (["--cubemap", "c", "--face-size", "0"], "--face-size must be a positive"),
    (["--cubemap", "c", "--face-size", "-2"], "--face-size must be a positive"),
    (["--psi", "nan"], "--psi must be within"),
    (["--psi", "inf"], "--psi must be within"),
    (["--psi", "-0.1"], "--psi must be within"),
    (["--psi", "5"], "--psi must be within"),
    (["--equirect", "e.png", "--horizon", "nan"], "--horizon must be a number within [0, 1]"),
    (["--equirect", "e.png", "--horizon", "inf"], "--horizon must be"),
    (["--equirect", "e.png", "--horizon", "1.5"], "--horizon must be"),
    (["--equirect", "e.png", "--strip-scale", "nan"], "--strip-scale must be"),
    (["--equirect", "e.png", "--strip-scale", "0"], "--strip-scale must be"),
    (["--equirect", "e.png", "--strip-scale=-inf"], "--strip-scale must be"),
    (["--equirect", "e.png", "--strip-scale", "8"], "does not fit between the poles"),
    (["--equirect", "e.png", "--cap-blur", "nan"], "--cap-blur must be"),
    (["--equirect", "e.png", "--cap-blur", "-1"], "--cap-blur must be"),
    (["--equirect", "e.png", "--cap-blur", "inf"], "--cap-blur must be"),
    (["--equirect", "e.exr", "--sky", "cloudy"], "--sky must be one of physical, blur"),
    (["--equirect", "e.exr", "--sun", "noon"], "--sun must be auto, none or AZIMUTH,ELEVATION"),
    (["--equirect", "e.exr", "--sun", "60"], "--sun must be auto, none or AZIMUTH,ELEVATION"),
    (["--equirect", "e.exr", "--sun", "60,95"], "--sun elevation must be a number within [-90, 90]"),
    (["--equirect", "e.exr", "--sun", "nan,30"], "--sun azimuth must be a number"),
    (["--equirect", "e.exr", "--exposure", "nan"], "--exposure must be a number within"),
    (["--equirect", "e.exr", "--exposure", "1e9"], "--exposure must be a number within"),
    (["--equirect", "f.exr", "--cubemap", "c"], "--equirect's sky.json"),  # workdir holds a foreign f.json
    (["--batch-size", "0"], "--batch-size must be within"),
    (["--batch-size", str(10 ** 9)], "--batch-size must be within"),
    (["--bits", "12"], "--bits must be 8 or 16"),
    (["--bits", "16", "--out", "p.jpg"], "holds 8 bits per channel"),
    (["--bits", "16", "--equirect", "e.webp"], "holds 8 bits per channel"),
    (["--out", "p.tif"], "the extension chooses the format"),
    (["--out", "p"], "the extension chooses the format"),
    (["--equirect", "sky.tif"], "--equirect sky.tif"),
    (["--noise", "loud"], "--noise must be one of"),
    (["--dtype", "float64"], "--dtype must be one of"),
    (["--device", "tpu"], "--device must be one of"),
    (["--out", "model.safetensors"], "the extension chooses the format"),
    (["--out", "ckpt.png"], "already exists and is a checkpoint"),  # the content decides, not the name
    (["--equirect", "anchors.webp"], "already exists and is a file this command did not write"),
    (["--out", "notes.png"], "already exists and is a file this command did not write"),
    (["--equirect", "anchors.json"], "the extension chooses the format"),
    (["--out", "folder.png"], "is a folder"),
    (["--cubemap", "afile"], "exists and is not a folder"),
    (["--tiles", "afile"], "exists and is not a folder"),
    (["--out", "afile/sub/p.png"], "not writable"),
    (["--out", "same.png", "--equirect", "same.png"], "name the same file"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--seed", "abc"], "invalid int value"),
]


@pytest.mark.parametrize("args, needle", GENERATE, ids=[" ".join(a)[:60] for a, _ in GENERATE])
def test_bad_generate_input_is_one_error_line(args, needle, workdir, tiny_checkpoint, capsys):
    before = tree(workdir)
    rc = run(["generate", "--checkpoint", str(tiny_checkpoint), "--progress-format", "none", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert tree(workdir) == before  # nothing written, nothing replaced


def test_bad_argparse_input_exits_2(workdir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--psi", "abc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and "--psi" in err[0]


@pytest.mark.parametrize("args, needle", [
    (["info", "missing.safetensors"], "checkpoint not found"),
    (["info", "folder.png"], "is a folder"),
    (["info", "notes.png"], "notes.png"),
    (["convert", "missing.pkl", "x.safetensors"], "source missing.pkl is not a file"),
    (["convert", str(FIXTURE_PKL), "x.bin"], "must end in .safetensors"),
    (["convert", str(FIXTURE_PKL), "model.safetensors"], "already exists and is a checkpoint"),
    (["convert", str(FIXTURE_PKL), "afile/x.safetensors"], "not writable"),
    (["convert", "notes.png", "y.safetensors"], "notes.png"),
])
def test_bad_info_and_convert_input_is_one_error_line(args, needle, workdir, capsys):
    if args[0] == "info" and args[1] == "folder.png":
        (workdir / "folder.png").rename(workdir / "f.safetensors")
        args = ["info", "f.safetensors"]
    before = tree(workdir)
    rc = run(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert tree(workdir) == before


def test_convert_replaces_a_checkpoint_only_with_force(workdir, capsys):
    dst = workdir / "model.safetensors"
    old = dst.read_bytes()
    assert main(["convert", str(FIXTURE_PKL), str(dst)]) == 2 and dst.read_bytes() == old
    assert main(["convert", str(FIXTURE_PKL), str(dst), "--force"]) == 0
    assert dst.read_bytes() != old and alis_core.load_generator(dst).img_resolution == 64


def test_nan_weights_are_refused_not_saved_black(workdir, tiny_G, capsys):
    broken = alis_core.Generator(tiny_G.config).eval()
    broken.load_state_dict(tiny_G.state_dict())
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    alis_core.save_generator(broken, workdir / "nan.safetensors")
    before = tree(workdir)
    rc = main(["generate", "--checkpoint", str(workdir / "nan.safetensors"), "--out", "p.png", "--wrap",
               "--equirect", "e.hdr", "--progress-format", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "NaN or infinite" in err[0], err
    assert tree(workdir) == before


def test_in_memory_outputs_are_bounded_by_memory_tiles_are_not(workdir, tiny_checkpoint, capsys, monkeypatch):
    from alis_core import outputs
    monkeypatch.setattr(outputs, "available_memory", lambda: 2 ** 20)  # a machine with 1 MiB to spare
    before = tree(workdir)
    common = ["generate", "--checkpoint", str(tiny_checkpoint), "--progress-format", "none", "--width", "4000"]
    assert main([*common, "--out", "p.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs about 23 MiB of memory but 1 MiB is available" in err[0] and "--tiles" in err[0]
    assert tree(workdir) == before
    assert main([*common, "--tiles", "t"]) == 0  # streamed: memory does not grow with the width
    assert (workdir / "t" / "index.json").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--seed", str(2 ** 70)], "--seed must be an integer"),
    (["--equirect", "e.png", "--horizon", "nan"], "--horizon must be"),
    (["--width", str(10 ** 9), "--anchors", "4096"], "exceeds the"),
])
def test_bad_input_through_the_module_entry_point(args, needle, workdir, tiny_checkpoint):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "alis_core", "generate", "--checkpoint", str(tiny_checkpoint),
                        "--progress-format", "none", *args], capture_output=True, text=True, env=env,
                       timeout=120, cwd=workdir)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not (workdir / "panorama.png").exists() and not (workdir / "e.png").exists()


def test_replace_rule_for_the_projects_own_json_and_text_files(tmp_path):
    """alis_core.outputs: content decides; JSON and text files we write carry a marker naming their kind."""
    from alis_core import outputs
    index, readme = tmp_path / "index.json", tmp_path / "README.txt"
    outputs.write_json(index, {"tiles": []}, "tiles")
    outputs.write_text(readme, "how to use these files\n", "readme")
    assert outputs.sniff_kind(index) == "tiles" and outputs.sniff_kind(readme) == "readme"
    assert outputs.check_replaceable(index, "tiles") == index  # ours, same kind: replaceable
    assert outputs.check_replaceable(readme, "readme") == readme
    with pytest.raises(alis_core.AlisError, match="already exists and is a tiles"):
        outputs.check_replaceable(index, "sidecar")  # ours, but another kind
    users = tmp_path / "users.json"
    users.write_text('{"alis_outputx": "tiles"}')
    with pytest.raises(alis_core.AlisError, match="a file this command did not write.*--force"):
        outputs.check_replaceable(users, "tiles")
    assert outputs.check_replaceable(users, "tiles", force=True) == users
    ckpt = tmp_path / "c.bin"
    alis_core.save_generator(alis_core.Generator(alis_core.GeneratorConfig.tiny()), ckpt)
    with pytest.raises(alis_core.AlisError, match="is a checkpoint"):
        outputs.check_replaceable(ckpt, "checkpoint")  # even a checkpoint over a checkpoint needs force
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writers leave no temporary files


def test_save_functions_refuse_non_finite_images(tmp_path):
    from alis_core.image import save_float_image, save_image, save_png
    img = torch.full((3, 4, 4), 0.5)
    img[1, 2, 3] = float("nan")
    for save, name in ((save_png, "a.png"), (save_float_image, "a.hdr"), (save_image, "a.jpg")):
        with pytest.raises(alis_core.AlisError, match="1 NaN or infinite values; nothing was written"):
            save(tmp_path / name, img)
    with pytest.raises(alis_core.AlisError, match="8 bits per channel"):
        save_image(tmp_path / "a.webp", img.nan_to_num(), bits=16)
    assert not list(tmp_path.iterdir())
