"""The run folder: what counts as a run, who may write it (the lock), replacing a run, tidy stats.

A folder holds a run when it has a resumable state (state.pt) or snapshots (network-snapshot-*,
latest, final .safetensors). Such a folder is only written with --resume (continue it) or --force
(replace it), so a forgotten flag never costs a run.

One trainer at a time writes a run folder: rank 0 creates the lock file ``train.lock`` there with
O_CREAT | O_EXCL and writes one JSON line naming the holder::

    {"host": "gpu-node-3", "pid": 41523, "started": "2026-12-07T00:20:15Z", "token": "9f0c..."}

A second trainer is refused with that holder in its error line. A lock whose host is this host and
whose process is gone (a SIGKILL, a power cut) is stale: it is reported in one warning and taken
over. A lock from another host cannot be checked from here and is refused; the error says which
file to delete once that trainer is known to be gone. The lock is removed when the trainer exits,
also on an error or Ctrl-C, and only if it is still the one this process wrote.
"""
from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path

from alis_core import AlisError

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
STATE_NAME = "state.pt"
STATS_NAME = "stats.jsonl"
# What the trainer writes into a run folder (and what --force replaces); other files are left alone.
_OUTPUT_NAMES = ("state.pt", "stats.jsonl", "config.json", "latest.safetensors", "final.safetensors")
_OUTPUT_PATTERNS = ("network-snapshot-*.safetensors", "samples-*.png")


def run_contents(out: Path) -> list[str]:
    """The files that make `out` hold a run: state.pt and snapshots (empty if it holds none)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [n for n in (STATE_NAME, "latest.safetensors", "final.safetensors") if (out / n).is_file()]
    found += sorted(p.name for p in out.glob("network-snapshot-*.safetensors"))
    return found


def check_run_folder(out: Path, resume: bool, force: bool) -> None:
    """Refuse an --out that is not a usable folder, or that holds a run without --resume or --force."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = f"--out {out}" if p == out else f"--out {out}: {p}"
                raise AlisError(f"{where} is a file, not a folder; give a folder for the run")
            break
    if resume:
        if not (out / STATE_NAME).is_file():
            raise AlisError(f"no resumable state at {out / STATE_NAME}; start without --resume, "
                            "or point --out at the run folder")
        return
    held = run_contents(out)
    if held and not force:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise AlisError(f"--out {out} already holds a run ({shown}); continue it with --resume, "
                        "or replace it with --force")


def clear_outputs(out: Path) -> list[str]:
    """Delete what the trainer writes in `out` (a replaced run); other files stay. -> removed names"""
    removed = []
    paths = [out / n for n in _OUTPUT_NAMES] + [p for pat in _OUTPUT_PATTERNS for p in out.glob(pat)]
    for p in paths:
        if p.is_file():
            p.unlink()
            removed.append(p.name)
    return sorted(removed)


def trim_stats(path: Path, step: int) -> int:
    """Keep the stats.jsonl lines at or before `step` (a resumed state's step), atomically.

    A run killed after its last state.pt logged steps that the resumed run logs again; a line cut
    short by the kill is dropped too. -> the number of lines removed
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", step + 1)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(k + "\n" for k in kept))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines) - len(kept)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def _describe(holder: dict) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('started', '?')}"


class RunLock:
    """The run folder's lock (see the module docstring). Use as a context manager or acquire()/release()."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.held = False
        self._created: list[Path] = []  # folders this lock created, deepest first
        self._content = ""

    def acquire(self) -> "RunLock":
        missing = []
        for p in (self.out, *self.out.parents):
            if p.exists():
                break
            missing.append(p)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._created = missing
        except OSError as e:
            raise AlisError(f"cannot create the run folder {self.out}: {e.strerror or e}") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "token": uuid.uuid4().hex}
        self._content = json.dumps(holder) + "\n"
        for _ in range(3):  # a stale lock taken over by someone else between our tries: look again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as e:
                self._undo_dir()
                raise AlisError(f"cannot write the lock {self.path}: {e.strerror or e}") from None
            try:
                os.write(fd, self._content.encode())
            finally:
                os.close(fd)
            self.held = True
            return self
        self._undo_dir()
        raise AlisError(f"cannot take the lock {self.path}: other trainers keep taking it; "
                        "run one trainer per --out")

    def _take_over_if_stale(self) -> None:
        """Return if the lock at self.path is stale and was removed; raise AlisError if it is held."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return  # released meanwhile
        except OSError as e:
            self._undo_dir()
            raise AlisError(f"cannot read the lock {self.path}: {e.strerror or e}") from None
        try:
            holder = json.loads(text)
            pid = int(holder["pid"])
            host = str(holder["host"])
        except (ValueError, TypeError, KeyError):
            self._undo_dir()
            raise AlisError(f"{self.out} is locked by {self.path}, which names no trainer; if no trainer "
                            f"writes this folder, delete {self.path}") from None
        if host != socket.gethostname() or _pid_alive(pid):
            self._undo_dir()
            where = "" if host == socket.gethostname() else " (on another host: cannot check it from here)"
            raise AlisError(f"{self.out} is in use by another trainer ({_describe(holder)}){where}; wait for it "
                            f"to finish, or if that trainer is gone, delete {self.path}")
        # Stale. Move it aside under a unique name, then check that it is the lock we judged (another
        # trainer may have taken over and written its own meanwhile); put back anything else.
        aside = self.path.with_name(f".{LOCK_NAME}.{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text(encoding="utf-8") != text:
            try:
                os.link(aside, self.path)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise
            aside.unlink()
            return
        aside.unlink()
        log.warning("taking over the stale lock %s (%s: that process is gone)", self.path, _describe(holder))

    def release(self) -> None:
        if not self.held:
            self._undo_dir()
            return
        self.held = False
        try:
            if self.path.read_text(encoding="utf-8") == self._content:
                self.path.unlink()
        except OSError:
            pass  # already gone: nothing to release
        self._undo_dir()

    def _undo_dir(self) -> None:
        """Remove the folders this lock created again, as long as nothing else was written there."""
        for p in self._created:
            try:
                p.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
