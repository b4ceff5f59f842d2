"""Every bad input to `alis train` and `alis eval`: exit code 2, one `error:` line, nothing touched.

One table, run in-process through the commands' main functions. Each row names the option or
file at fault (the expected text); around each call the whole folder of inputs (a real finished
run, hostile data files, a locked folder) is fingerprinted file by file and must be unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from hostile_files import bomb_png, fuzzed_tiff, make_png, zip_declaring
from training.cli import main as train_main
from training.cli_eval import main as eval_main

CKPT = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny64.safetensors"
SMALL = ["--set", "resolution=16", "--set", "z_dim=32", "--set", "w_dim=32", "--set", "channel_base=512",
         "--set", "channel_max=64", "--set", "metric_num=0", "--batch", "4", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished one-step run and hostile inputs, shared read-only by every row."""
    base = tmp_path_factory.mktemp("world")
    assert train_main(["--data", "synthetic:16", "--out", str(base / "run"), "--kimg", "0.004", *SMALL]) == 0
    assert not (base / "run" / "train.lock").exists()
    (base / "afile.txt").write_text("not a folder")
    for name, payload in (("fuzz", fuzzed_tiff()), ("bomb", bomb_png())):
        (base / name).mkdir()
        (base / name / ("x.tif" if name == "fuzz" else "x.png")).write_bytes(payload)
    (base / "fifo").mkdir()
    os.mkfifo(base / "fifo" / "pipe.png")
    os.mkfifo(base / "pipe.zip")
    zip_declaring(base / "bomb.zip", "big.png", 1_500_000_000, make_png())
    (base / "good").mkdir()
    (base / "good" / "a.png").write_bytes(make_png(40, 30))
    (base / "locked").mkdir()  # held by a live process of this host: our parent
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00Z", "token": "t"}
    (base / "locked" / "train.lock").write_text(json.dumps(holder) + "\n")
    return base


# (command, arguments with {placeholders} for paths in `world`, text the error line must contain)
TRAIN, EVAL = "train", "eval"
CASES = [
    # the run folder
    (TRAIN, "--data synthetic:16 --out {w}/run", "already holds a run (state.pt"),
    (TRAIN, "--data synthetic:16 --out {w}/afile.txt", "is a file, not a folder"),
    (TRAIN, "--data synthetic:16 --out {w}/afile.txt/run", "afile.txt is a file, not a folder"),
    (TRAIN, "--data synthetic:16 --out {w}/nothing --resume", "no resumable state"),
    (TRAIN, "--out {w}/run --resume --init {ckpt}", "--resume and --init exclude each other"),
    (TRAIN, "--out {w}/run --resume --batch 8", "batch differ from the saved run"),
    (TRAIN, "--out {w}/run --resume --data synthetic:32", "holds other frames than the run was trained on"),
    (TRAIN, "--data synthetic:16 --out {w}/locked", "in use by another trainer (host "),
    (TRAIN, "--data synthetic:16", "--out is required"),
    (TRAIN, "--out {w}/new", "--data is required"),
    # numbers of the command line
    *[(TRAIN, f"--data synthetic:16 --out {{w}}/new {opt} {v}", f"{opt} must be a finite number")
      for opt in ("--kimg", "--snap-kimg", "--sample-kimg", "--metric-kimg", "--tick-kimg")
      for v in ("nan", "inf", "-1")],
    (TRAIN, "--data synthetic:16 --out {w}/new --kimg 0", "--kimg must be a finite number > 0"),
    (TRAIN, "--data synthetic:16 --out {w}/new --threads -1", "--threads must be in [1, 4096]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --threads 0", "--threads must be in [1, 4096]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --batch 0", "--batch must be in [1, 65536]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --batch 1000000000", "--batch must be in [1, 65536]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --seed -1", "--seed must be an integer in [0, 2**63 - 1]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --kimg 1e30", "kimg must be a finite number in (0, 1e+07]"),
    (TRAIN, "--data synthetic:16 --out {w}/new --dtype float64", "argument --dtype: invalid choice"),
    (TRAIN, "--data synthetic:16 --out {w}/new --batch 1e3", "argument --batch: invalid int value"),
    (TRAIN, "--data synthetic:16 --out {w}/new --device tpu", "--device must be auto, cpu, cuda or cuda:N"),
    (TRAIN, "--data synthetic:16 --out {w}/new --device cuda:x", "--device must be auto, cpu, cuda or cuda:N"),
    # every float field of the config through --set: NaN, infinite, negative
    *[(TRAIN, f"--data synthetic:16 --out {{w}}/new --set {field}={v}", f"{field}")
      for field in ("g_lr", "d_lr", "r1_gamma", "pl_weight", "pl_decay", "seam_weight", "style_mixing_prob",
                    "ema_kimg", "ema_rampup", "kimg_to_reach_max_shift_strength", "w_coord_dist")
      for v in ("NaN", "Infinity", "-1")],
    (TRAIN, "--data synthetic:16 --out {w}/new --set betas=[0,NaN]", "betas must be two numbers in [0, 1)"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set betas=[0,1]", "betas must be two numbers in [0, 1)"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set betas=[\"a\"]", "betas must be two numbers"),
    # out-of-range and malformed whole numbers and choices
    *[(TRAIN, f"--data synthetic:16 --out {{w}}/new --set {field}={v}", f"{field} must be a whole number in")
      for field, v in (("z_dim", 100000), ("w_dim", 0), ("mapping_layers", 1000), ("channel_max", -1),
                       ("batch", 1 << 20), ("r1_interval", 0), ("pl_interval", -3), ("metric_num", -1),
                       ("sample_rows", 1000), ("sample_rows", 0), ("sample_anchors", 1), ("mbstd_group_size", -1),
                       ("resolution", 1 << 20), ("seed", -5))],
    (TRAIN, "--data synthetic:16 --out {w}/new --set resolution=48", "power of two"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set batch=1e400", "--set batch=1e400: expected a finite number"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set batch=2.5", "expected a whole number"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set ema_rampup=abc", "--set ema_rampup=abc: expected a number"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set noise_mode=loud", "noise_mode must be one of none, const, random"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set dtype=float64", "dtype must be one of float32, bfloat16"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set g_kwargs=5", "g_kwargs must be a JSON object"),
    (TRAIN, '--data synthetic:16 --out {w}/new --set g_kwargs={{"conv_clamp":"x"}}', "g_kwargs conv_clamp='x' is not"),
    (TRAIN, '--data synthetic:16 --out {w}/new --set g_kwargs={{"coord_dims":5}}', "g_kwargs coord_dims=5 is not"),
    (TRAIN, '--data synthetic:16 --out {w}/new --set d_kwargs={{"mbstd_num_channels":-1}}', "d_kwargs mbstd_num"),
    (TRAIN, '--data synthetic:16 --out {w}/new --set d_kwargs={{"img_channels":0}}', "d_kwargs img_channels=0"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set flip=1", "expected true or false"),
    (TRAIN, "--data synthetic:16 --out {w}/new --set nope=1", "--set 'nope=1': expected key=value with a key among"),
    # data
    (TRAIN, "--data {w}/missing --out {w}/new", "dataset not found"),
    (TRAIN, "--data {w}/fifo --out {w}/new", "(1 not a regular file): pipe.png"),
    (TRAIN, "--data {w}/pipe.zip --out {w}/new", "neither a folder nor a regular file"),
    (TRAIN, "--data {w}/fuzz --out {w}/new", "(1 unreadable): x.tif"),
    (TRAIN, "--data {w}/bomb --out {w}/new", "(1 too large): x.png"),
    (TRAIN, "--data {w}/bomb.zip --out {w}/new", "(1 too large): big.png"),
    (TRAIN, "--data {w}/afile.txt --out {w}/new", "neither a folder nor a .zip"),
    (TRAIN, "--data {w}/good --out {w}/new --cache-dir {w}/afile.txt", "cannot write the dataset cache"),
    (TRAIN, "--data synthetic:16 --out {w}/new --init {w}/missing.safetensors", "checkpoint not found"),
    # eval
    (EVAL, "{w}/missing.safetensors --data synthetic:8", "checkpoint not found"),
    (EVAL, "{w}/afile.txt --data synthetic:8", "afile.txt"),
    (EVAL, "{w} --data synthetic:8", "is a folder"),
    (EVAL, "{ckpt} --data synthetic:8 --num 7", "--num must be in [8, 65536]"),
    (EVAL, "{ckpt} --data synthetic:8 --num 100000000000", "--num must be in [8, 65536]"),
    (EVAL, "{ckpt} --data synthetic:8 --seed -1", "--seed must be an integer"),
    (EVAL, "{ckpt} --data synthetic:8 --seam-seeds -1", "--seam-seeds must be in [0, 4096]"),
    (EVAL, "{ckpt} --data synthetic:8 --device foo", "--device must be auto, cpu, cuda or cuda:N"),
    (EVAL, "{ckpt} --data {w}/missing", "dataset not found"),
    (EVAL, "{ckpt} --data {w}/fifo", "(1 not a regular file): pipe.png"),
    (EVAL, "{ckpt} --data {w}/fuzz", "(1 unreadable): x.tif"),
    (EVAL, "{ckpt} --num 8", "the following arguments are required: --data"),
    (EVAL, "{ckpt} --data synthetic:8 --num many", "argument --num: invalid int value"),
]


def _tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under root: kind, size, mtime and a content hash (FIFOs: kind only)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_fifo():
                out[str(p.relative_to(root))] = ("fifo",)
            elif p.is_dir():
                out[str(p.relative_to(root))] = ("dir",)
            else:
                out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _run(main, argv: list[str]) -> int:
    def timeout(signum, frame):
        raise TimeoutError("the command blocked (a FIFO opened?)")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("command,args,expected", CASES, ids=[f"{c}:{a}" for c, a, _ in CASES])
def test_bad_input_is_one_error_line_and_touches_nothing(world, command, args, expected, capsys, caplog,
                                                         monkeypatch):
    monkeypatch.setenv("ALIS_CACHE_DIR", str(world / "cache"))  # any cache write would show in the tree
    argv = args.format(w=world, ckpt=CKPT).split()
    if command == TRAIN:
        argv += ["--quiet"]
    before = _tree(world)
    with caplog.at_level(logging.WARNING):
        rc = _run(train_main if command == TRAIN else eval_main, argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert out == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert _tree(world) == before


def test_list_presets_needs_no_out(capsys):
    assert train_main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny: resolution=32") and "lhq1024:" in out


def test_a_real_process_prints_exactly_one_line(tmp_path):
    """Through `python -m training` (file descriptor 2 itself, logging as the command sets it up): a
    folder of nothing but hostile files is one error line, with no libtiff or Pillow chatter."""
    import subprocess
    import sys

    from hostile_files import damaged_lzw_tiff

    src = tmp_path / "photos"
    src.mkdir()
    (src / "a.tif").write_bytes(fuzzed_tiff())
    (src / "b.tif").write_bytes(damaged_lzw_tiff())
    (src / "c.png").write_bytes(bomb_png())
    os.mkfifo(src / "d.jpg")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "training", "--data", str(src), "--out", str(tmp_path / "run"),
                           "--cache-dir", str(tmp_path / "cache")], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: no usable images in {src.resolve()}: skipped 4 of 4 files (2 unreadable, 1 too large, "
        "1 not a regular file): a.tif, b.tif, c.png, d.jpg; add readable JPEG/PNG/WebP images of at least "
        "16 px on the short side, or lower the resolution"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
