"""The run folder: --resume / --force, the lock (also under gloo), stats after a SIGKILL, the data identity."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from alis_core import AlisError
from training.cli import main as train_main
from training.config import preset
from training.data import prepare_dataset
from training.loop import TIMING_KEYS, Trainer, load_state
from training.runfolder import LOCK_NAME, RunLock, trim_stats

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(resolution=16, z_dim=32, w_dim=32, channel_base=512, channel_max=64, batch=4,
             metric_num=0, tick_kimg=0.004, snap_kimg=0.008, sample_kimg=1.0)
SMALL_ARGS = ["--set", "resolution=16", "--set", "z_dim=32", "--set", "w_dim=32", "--set", "channel_base=512",
              "--set", "channel_max=64", "--set", "metric_num=0", "--batch", "4", "--tick-kimg", "0.004", "--quiet"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _lock_holder(path: Path) -> dict:
    return json.loads((path / LOCK_NAME).read_text())


def test_force_replaces_a_run_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data", "synthetic:16", "--out", str(out), "--kimg", "0.008", *SMALL_ARGS]) == 0
    assert len(_records(out / "stats.jsonl")) == 2
    (out / "notes.txt").write_text("mine")
    old_state = (out / "state.pt").read_bytes()
    assert train_main(["--data", "synthetic:16", "--out", str(out), "--kimg", "0.004", *SMALL_ARGS]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "state.pt").read_bytes() == old_state
    assert train_main(["--data", "synthetic:16", "--out", str(out), "--kimg", "0.004", "--force", *SMALL_ARGS]) == 0
    assert [r["step"] for r in _records(out / "stats.jsonl")] == [1]  # a new run, not appended to the old one
    assert load_state(out / "state.pt")["step"] == 1
    assert (out / "notes.txt").read_text() == "mine" and not (out / LOCK_NAME).exists()


def test_lock_rules(tmp_path, caplog):
    out = tmp_path / "run"
    with RunLock(out) as lock:
        holder = _lock_holder(out)
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        with pytest.raises(AlisError, match=rf"in use by another trainer \(host {socket.gethostname()}, "
                                            rf"pid {os.getpid()}.*delete .*{LOCK_NAME}"):
            RunLock(out).acquire()
        assert lock.held
    assert not (out / LOCK_NAME).exists() and not out.exists()  # the lock created the folder, nothing else came

    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                             "started": "2026-01-01T00:00:00Z", "token": "x"}))
    with caplog.at_level(logging.WARNING, logger="training.runfolder"):
        with RunLock(out):
            assert _lock_holder(out)["pid"] == os.getpid()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"taking over the stale lock {out / LOCK_NAME} (host {socket.gethostname()}, pid {dead.pid}, "
        "since 2026-01-01T00:00:00Z: that process is gone)"]
    assert list(out.iterdir()) == []

    (out / LOCK_NAME).write_text(json.dumps({"host": "elsewhere.example", "pid": dead.pid, "started": "?"}))
    with pytest.raises(AlisError, match="host elsewhere.example.*on another host: cannot check it from here"):
        RunLock(out).acquire()
    (out / LOCK_NAME).write_text("")
    with pytest.raises(AlisError, match="names no trainer"):
        RunLock(out).acquire()
    # Releasing never removes a lock that another trainer wrote meanwhile.
    (out / LOCK_NAME).unlink()
    lock = RunLock(out).acquire()
    (out / LOCK_NAME).write_text("someone else's\n")
    lock.release()
    assert (out / LOCK_NAME).read_text() == "someone else's\n"


def test_trim_stats_keeps_lines_up_to_the_state(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text("".join(json.dumps({"kimg": s * 0.004, "step": s}) + "\n" for s in range(1, 6)) + '{"kimg": 0.0')
    assert trim_stats(path, 3) == 3  # steps 4 and 5, and the line the kill cut short
    assert [r["step"] for r in _records(path)] == [1, 2, 3]
    assert trim_stats(path, 3) == 0


# A trainer in its own process that holds the lock like `alis train`, then stops after step 5 (its
# last state.pt is from step 4, stats.jsonl has 5 lines) and waits to be killed.
_KILLED_TRAINER = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from training.config import preset
    from training.data import prepare_dataset
    from training.loop import Trainer
    from training.runfolder import RunLock
    out = Path(sys.argv[1])
    cfg = preset("tiny", **{small}, kimg=0.028)
    def hook(trainer):
        if trainer.step == 5:
            (out / "reached-5").write_text("")
            time.sleep(600)
    with RunLock(out):
        Trainer(cfg, prepare_dataset("synthetic:64", 16), out, progress=False, data_source="synthetic:64").run(on_step=hook)
""")


def test_sigkill_resume_is_exact_and_the_lock_refuses_a_second_trainer(tmp_path, capsys, caplog):
    """A running trainer holds the lock (a second one is refused, naming it); SIGKILL after step 5
    leaves a stale lock and stats beyond the last state; --resume takes the lock over, trims the
    stats and finishes bit for bit like a run never killed."""
    out = tmp_path / "killed"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_TRAINER.format(small=SMALL), str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "reached-5").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the trainer did not reach step 5"
            time.sleep(0.1)
        assert _lock_holder(out)["pid"] == proc.pid
        rc = train_main(["--out", str(out), "--resume", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1
        assert f"in use by another trainer (host {socket.gethostname()}, pid {proc.pid}," in err[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (out / "reached-5").unlink()
    assert [r["step"] for r in _records(out / "stats.jsonl")] == [1, 2, 3, 4, 5]
    assert load_state(out / "state.pt")["step"] == 4

    with caplog.at_level(logging.WARNING):
        assert train_main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert any("taking over the stale lock" in r.getMessage() and str(proc.pid) in r.getMessage()
               for r in caplog.records)
    assert not (out / LOCK_NAME).exists()

    straight = tmp_path / "straight"
    torch.set_num_threads(1)
    Trainer(preset("tiny", **SMALL, kimg=0.028), prepare_dataset("synthetic:64", 16), straight,
            progress=False).run()
    a, b = _records(straight / "stats.jsonl"), _records(out / "stats.jsonl")
    assert [r["step"] for r in b] == list(range(1, 8))
    assert _without_timings(a) == _without_timings(b)
    sa, sb = load_state(straight / "state.pt"), load_state(out / "state.pt")
    for key in ("G", "D", "G_ema"):
        for name, t in sa[key].items():
            assert torch.equal(t, sb[key][name]), (key, name)


def test_resume_checks_the_data_identity(tmp_path, capsys, caplog):
    from hostile_files import make_png

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.png").write_bytes(make_png(40, 30, seed=i))
    out = tmp_path / "run"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert train_main(["--data", str(photos), "--out", str(out), "--kimg", "0.004", *cache, *SMALL_ARGS]) == 0
    identity = load_state(out / "state.pt")["data_identity"]
    assert identity.startswith("files:3:")
    moved = tmp_path / "moved"
    os.rename(photos, moved)  # the same photos elsewhere: the same data
    assert train_main(["--out", str(out), "--resume", "--data", str(moved), "--kimg", "0.008", *cache, "--quiet"]) == 0
    (moved / "3.png").write_bytes(make_png(40, 30, seed=3))
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--data", str(moved), "--kimg", "0.012", *cache, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds other frames than the run was trained on" in err[0] and "--force" in err[0]
    assert load_state(out / "state.pt")["step"] == 2
    with caplog.at_level(logging.WARNING):
        assert train_main(["--out", str(out), "--resume", "--data", str(moved), "--kimg", "0.012", "--force",
                           *cache, "--quiet"]) == 0
    assert any("continuing on it (--force)" in r.getMessage() for r in caplog.records)
    state = load_state(out / "state.pt")
    assert state["step"] == 3 and state["data_identity"].startswith("files:4:")


def _ddp_worker(rank: int, world: int, ports: list[int], base: str) -> None:
    torch.set_num_threads(1)
    import io
    from contextlib import redirect_stderr

    results = {}
    commands = {
        "locked": ["--data", "synthetic:8", "--out", f"{base}/locked"],
        "no_data": ["--data", f"{base}/missing", "--out", f"{base}/new"],
        "ok": ["--data", "synthetic:8", "--out", f"{base}/ok", "--kimg", "0.008", "--device", "cpu"],
    }
    for (name, argv), port in zip(commands.items(), ports):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
        err = io.StringIO()
        with redirect_stderr(err):
            rc = train_main([*argv, *SMALL_ARGS, "--batch", "8", "--set", "mbstd_group_size=4"])
        results[name] = (rc, err.getvalue())
    Path(base, f"rank{rank}.json").write_text(json.dumps(results))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_share_refusals_and_the_lock(tmp_path):
    """Under torch.distributed (gloo, 2 processes) a lock held elsewhere and data that rank 0 cannot
    prepare end both ranks with the same error line (none waits forever); a run takes and frees the lock."""
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                             "started": "2026-01-01T00:00:00Z", "token": "t"}))
    ctx = mp.start_processes(_ddp_worker, args=(2, [_free_port() for _ in range(3)], str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the two-process commands did not finish within 180 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for name, text in (("locked", "in use by another trainer"), ("no_data", "dataset not found")):
        for rank in (r0, r1):
            rc, err = rank[name]
            lines = err.strip().splitlines()
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (name, err)
    assert r0["ok"][0] == r1["ok"][0] == 0
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "ok" / LOCK_NAME).exists() and load_state(tmp_path / "ok" / "state.pt")["step"] == 1


def test_ctrl_c_through_the_cli_frees_the_lock_and_resumes(tmp_path, capsys):
    """SIGINT while `alis train` runs (whenever it lands): exit 130, the lock is gone, --resume finishes."""
    import threading

    out = tmp_path / "run"

    def interrupt_once_training():
        deadline = time.monotonic() + 60
        while not (out / "stats.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt_once_training)
    t.start()
    try:
        rc = train_main(["--data", "synthetic:16", "--out", str(out), "--kimg", "1", *SMALL_ARGS])
    finally:
        t.join()
    assert rc == 130 and "--resume" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()
    step = load_state(out / "state.pt")["step"]
    assert 1 <= step < 250
    assert train_main(["--out", str(out), "--resume", "--kimg", str((step + 1) * 0.004), "--quiet"]) == 0
    assert [r["step"] for r in _records(out / "stats.jsonl")] == list(range(1, step + 2))
