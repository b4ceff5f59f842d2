"""Set Up Backend: a venv with torch and this project, made by the extension itself (no bpy).

The steps, each one command whose output goes to a log file:

1. `<base python> -m venv <user folder>/backend/venv` (the base is Blender's own Python by default);
2. `pip install torch==TORCH_VERSION`, from the index of the chosen build (TORCH_BUILDS);
3. `pip install <the project wheel>` (its dependencies: numpy, safetensors, pillow), then the same
   wheel again with `--no-deps --force-reinstall`, so that an updated extension replaces an older
   alis_core of the same version;
4. `python -c "import alis_core, torch"`: the backend works.

The wheel is the one `build.py` put into the extension zip (`wheels/`); in a checkout, the
repository itself. `SetupJob` runs the steps in a thread, one child at a time, so the UI stays
free and Esc (cancel) terminates the running child.
"""
from __future__ import annotations

import collections
import glob
import os
import subprocess
import threading
import time
from dataclasses import dataclass

from . import backend
from .backend import CANCELLED, DONE, FAILED, RUNNING

TORCH_VERSION = "2.13.0"  # = the version .ci/run installs and the tests use
# id -> (label, description, pip index URL or None for pip's own configuration, i.e. PyPI)
TORCH_BUILDS = {
    "CPU": ("CPU", "PyTorch's CPU build (about 200 MB): runs everywhere, slowest",
            "https://download.pytorch.org/whl/cpu"),
    "CU126": ("CUDA 12.6", "NVIDIA GPUs, drivers for CUDA 12.6 or newer (about 3 GB)",
              "https://download.pytorch.org/whl/cu126"),
    "CU128": ("CUDA 12.8", "NVIDIA GPUs, drivers for CUDA 12.8 or newer; needed by RTX 50xx (about 3 GB)",
              "https://download.pytorch.org/whl/cu128"),
    "CU130": ("CUDA 13.0", "NVIDIA GPUs, drivers for CUDA 13.0 or newer (about 3 GB)",
              "https://download.pytorch.org/whl/cu130"),
    "PYPI": ("PyPI", "torch as pip finds it on PyPI (or pip's configured index): CPU on Windows, "
             "Apple GPU on macOS, CUDA on Linux", None),
}
WHEEL_FOLDER = "wheels"  # inside the extension: build.py writes the project wheel here
WHEEL_GLOB = "alis_panoramas-*.whl"
VENV_FOLDER = "venv"
LOG_NAME = "setup.log"
CHECK_CODE = "import alis_core, torch, sys; print('alis_core', alis_core.__version__, 'torch', torch.__version__)"

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Step:
    label: str  # one line for the status bar and the log
    argv: list[str]


def venv_python(venv_dir: str) -> str:
    """The venv's python executable (Scripts\\python.exe on Windows, bin/python elsewhere)."""
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def project_source(addon_dir: str = ADDON_DIR) -> str:
    """What pip installs as this project: the wheel in the extension's wheels/ (the newest), else, in a
    checkout, the repository folder. Raises BackendError when there is neither."""
    wheels = sorted(glob.glob(os.path.join(addon_dir, WHEEL_FOLDER, WHEEL_GLOB)))
    if wheels:
        return wheels[-1]
    repo = os.path.dirname(addon_dir)
    if os.path.isfile(os.path.join(repo, "pyproject.toml")) and os.path.isdir(os.path.join(repo, "alis_core")):
        return repo
    raise backend.BackendError(f"this extension carries no alis-panoramas wheel ({WHEEL_FOLDER}/{WHEEL_GLOB}): "
                               "install a zip built by `python -m blender_addon.build`")


def setup_steps(base_python: str, venv_dir: str, project: str, torch_build: str = "CPU") -> list[Step]:
    """The commands that make (or update) the backend venv; see the module docstring."""
    if torch_build not in TORCH_BUILDS:
        raise backend.BackendError(f"torch build {torch_build!r} is unknown: use one of {', '.join(TORCH_BUILDS)}")
    if not base_python:
        raise backend.BackendError("no Python to make the backend from: choose one in the ALIS Sky preferences")
    label, _, index = TORCH_BUILDS[torch_build]
    py = venv_python(venv_dir)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    torch_args = [f"torch=={TORCH_VERSION}"] + (["--index-url", index] if index else [])
    return [
        Step("Creating the backend's virtual environment", [base_python, "-m", "venv", venv_dir]),
        Step(f"Installing torch {TORCH_VERSION} ({label})", pip + torch_args),
        Step("Installing alis-panoramas and its dependencies", pip + [project]),
        Step("Installing this extension's alis-panoramas", pip + ["--no-deps", "--force-reinstall", project]),
        Step("Checking the backend", [py, "-c", CHECK_CODE]),
    ]


def error_line(lines: list[str]) -> str:
    """The line that says what went wrong: pip's last `ERROR:` line, else the last non-empty one."""
    text = [line.strip() for line in lines if line.strip()]
    for line in reversed(text):
        if line.startswith("ERROR:") or line.lower().startswith("error:"):
            return line.split(":", 1)[1].strip()
    return text[-1] if text else "no output"


class SetupJob(backend.Job):
    """Runs `steps` one after the other in a thread, appending their output to `log_path`.

    state/fraction/message as for a generation (fraction = steps done / steps); FAILED with the
    failing step and its last error line; `python` is the backend python once DONE.
    """

    def __init__(self, steps: list[Step], log_path: str, python: str) -> None:
        super().__init__()
        self.steps = list(steps)
        self.log_path = log_path
        self.python = python
        self.total = len(self.steps)
        self.step_label = ""
        self.result_text = ""  # the check step's output: versions of alis_core and torch
        self._proc: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alis-setup-backend", daemon=True)
        self._thread.start()

    @property
    def message(self) -> str:
        with self._lock:
            if self.state == RUNNING:
                return f"Setting up backend ({self.done + 1}/{self.total}): {self.step_label}..."
            if self.state == FAILED:
                return f"Setup failed: {self.error}"
            if self.state == CANCELLED:
                return "Setup cancelled"
            return f"Backend ready: {self.result_text}"

    def _log(self, f, text: str) -> None:
        f.write(text + "\n")
        f.flush()

    def _run(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
            f = open(self.log_path, "a", encoding="utf-8", errors="replace")
        except OSError as ex:
            self._finish(FAILED, f"cannot write the log {self.log_path}: {ex.strerror or ex}")
            return
        with f:
            self._log(f, f"== ALIS Sky: Set Up Backend, {time.strftime('%Y-%m-%d %H:%M:%S')}")
            for i, step in enumerate(self.steps):
                with self._lock:
                    self.done, self.step_label = i, step.label
                self._log(f, f"== {step.label}\n$ {subprocess.list2cmdline(step.argv)}")
                tail = self._run_step(step, f)
                if self._cancel.is_set():
                    self._log(f, "== cancelled")
                    self._finish(CANCELLED)
                    return
                if tail is not None:
                    message = f"{step.label} failed: {error_line(tail)} (see {self.log_path})"
                    self._log(f, "== " + message)
                    self._finish(FAILED, message)
                    return
                if i == len(self.steps) - 1 and self._last_output:
                    self.result_text = self._last_output[-1].strip()
            with self._lock:
                self.done = self.total
            self._log(f, f"== done: {self.result_text}")
            self._finish(DONE)

    def _run_step(self, step: Step, f) -> list[str] | None:
        """Run one command, copying its output into the log; None on success, else its last lines."""
        self._last_output: collections.deque[str] = collections.deque(maxlen=40)
        try:
            proc = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                    env=backend.subprocess_env(),
                                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0), cwd=backend.neutral_cwd())
        except OSError as ex:
            return [f"error: could not start {step.argv[0]!r}: {ex.strerror or ex}"]
        with self._lock:
            self._proc = proc
        if self._cancel.is_set():  # cancelled between two steps
            backend.stop_process(proc)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            self._last_output.append(line.rstrip())
        f.flush()
        rc = proc.wait()
        with self._lock:
            self._proc = None
        if rc == 0 or self._cancel.is_set():
            return None
        lines = list(self._last_output)
        return lines if any(line.strip() for line in lines) else [f"error: exit code {rc} and no output"]

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.state

    def cancel(self) -> None:
        """Stop after terminating the running command; what it installed so far stays in the venv."""
        self._cancel.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            backend.stop_process(proc)

