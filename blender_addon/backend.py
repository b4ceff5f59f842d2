"""The only place that reaches the generator (no bpy).

Two backends run the generator outside Blender's UI thread:

- SUBPROCESS (preferred): a separate Python that has this project installed runs the `alis` CLI,
  `<python> -m alis_core generate ... --equirect out.exr --progress-format lines`. Torch never has
  to be installed into Blender's bundled Python, a crash or out-of-memory kills only the child,
  cancel = terminate the child, and progress comes from `progress <done>/<total>` lines on stderr.
- IN_PROCESS: when `import alis_core` (and torch) works inside Blender's own Python, a worker
  thread calls alis_core directly and hands back the pixels.

Both are `Job`s: start them, `poll()` from a timer on the main thread (or `wait()` when blocking),
`cancel()` to stop. Downloads run only as a DownloadJob (the preferences' Download buttons).
"""
from __future__ import annotations

import collections
import importlib.util
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
from typing import Callable

import numpy as np

from . import pixels
from .params import DEFAULTS, SkyParams
from .shared import options

log = logging.getLogger(__name__)

BACKENDS = ("AUTO", "SUBPROCESS", "IN_PROCESS")
DEVICES = options.DEVICES

# `progress <done>/<total>`: one line per finished batch, printed by the CLI to stderr with
# `--progress-format lines`. Anything else on stderr is kept only for error messages.
PROGRESS_RE = re.compile(r"^\s*progress\s+(\d+)\s*/\s*(\d+)\s*$")
ERROR_PREFIX = "error:"

RUNNING, DONE, FAILED, CANCELLED = "RUNNING", "DONE", "FAILED", "CANCELLED"


class BackendError(Exception):
    """A one-line, user-facing problem with the backend setup (shown in the panel / operator report)."""


class GenerationCancelled(Exception):
    """Raised from the progress callback to stop an in-process generation."""


# ---------------------------------------------------------------------------------------------
# Subprocess protocol (pure functions)


def build_generate_command(
    python: str,
    params: SkyParams,
    output_path: str,
    *,
    checkpoint: str = "",
    device: str = "auto",
    download: bool = False,
) -> list[str]:
    """argv for `<python> -m alis_core generate` writing the equirect sky of `params` to output_path.

    An empty checkpoint means the CLI's bundled default model; a model name (not looks_like_path)
    is resolved by the backend's hub, with `--no-download` unless `download` (the extension downloads
    only from its Download buttons). The CLI writes the equirect at the
    strip's natural width; the extension resizes it to `params.width` (pixels.resize_equirect, which
    keeps the seam closed). Rotation and strength are not passed: Blender applies them with the
    Mapping and Background nodes, so changing them needs no re-run.
    """
    params.validate()
    if device not in DEVICES:
        raise BackendError(f"device {device!r} is unknown: use one of {', '.join(DEVICES)}")
    cmd = [python, "-m", "alis_core", "generate"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
        if not download and not looks_like_path(checkpoint):
            cmd.append("--no-download")
    cmd += [
        "--seed", str(params.seed),
        "--anchors", str(params.anchors),
        "--psi", f"{params.psi:g}",
        "--device", device,
    ]
    if params.wrap:
        cmd.append("--wrap")
    if params.photo:
        cmd += ["--from-photo", params.photo]  # the loop starts with the photo's inversion
    cmd += ["--equirect", output_path, "--horizon", f"{params.horizon:g}"]
    cmd.append("--context" if DEFAULTS.context else "--no-context")  # Blender's default, whatever the CLI's
    if not DEFAULTS.fast:
        cmd.append("--exact")  # the official order of operations (the CLI's default is the fast one)
    # Passed only when changed, so the default settings work with CLIs that lack these flags.
    if params.noise_mode != SkyParams.noise_mode:
        cmd += ["--noise", params.noise_mode]
    if params.strip_scale != SkyParams.strip_scale:
        cmd += ["--strip-scale", f"{params.strip_scale:g}"]
    if params.cap_blur != SkyParams.cap_blur:
        cmd += ["--cap-blur", f"{params.cap_blur:g}"]
    if params.sky != SkyParams.sky:
        cmd += ["--sky", params.sky]
    if params.sun_mode != SkyParams.sun_mode:
        cmd += [f"--sun={params.sun_arg()}"]  # one token: a negative azimuth is not an option
    if not params.sun_disk:
        cmd.append("--no-sun-disk")  # a Sun lamp gives the sun's light instead
    if params.exposure != SkyParams.exposure:
        cmd += [f"--exposure={params.exposure:g}"]
    cmd += ["--progress-format", "lines"]
    return cmd


def build_export_command(python: str, sky_path: str, folder: str, target: str) -> list[str]:
    """argv for `<python> -m alis_core export SKY --target T --out DIR` (an engine preset, docs/ENGINES.md)."""
    if target not in options.EXPORT_TARGETS:
        raise BackendError(f"target {target!r} is unknown: use one of {', '.join(options.EXPORT_TARGETS)}")
    return [python, "-m", "alis_core", "export", sky_path, "--target", target, "--out", folder]


def sky_json_path(image_path: str) -> str:
    """The sidecar the CLI writes beside an equirect: sky.exr -> sky.json (as alis_core.sky.sky_json_path)."""
    return os.path.splitext(image_path)[0] + ".json"


def read_sky_json(path: str) -> dict | None:
    """The sidecar's dict (alis_core.sky.SkyInfo.to_dict), or None when there is none (a CLI that writes none).

    Read as plain JSON: Blender's Python usually has no alis_core.
    """
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as ex:
        raise BackendError(f"cannot read the sky's sidecar {path!r}: {ex}") from None
    if not isinstance(d, dict) or d.get("format") != "alis-sky":
        raise BackendError(f"{path!r} is not an alis-sky sidecar: regenerate the sky")
    return d


def sky_sun(sky: dict | None) -> dict | None:
    """The sun of a sky dict (SkyInfo.to_dict()), or None when the sky has none."""
    sun = (sky or {}).get("sun")
    return sun if isinstance(sun, dict) else None


def parse_progress_line(line: str) -> tuple[int, int] | None:
    """`'progress 3/8'` -> (3, 8); anything else -> None."""
    m = PROGRESS_RE.match(line)
    if m is None:
        return None
    done, total = int(m.group(1)), int(m.group(2))
    if total <= 0 or done > total:
        return None
    return done, total


def parse_error_line(line: str) -> str | None:
    """`'error: checkpoint x not found'` -> 'checkpoint x not found'; anything else -> None."""
    line = line.strip()
    if line.lower().startswith(ERROR_PREFIX):
        return line[len(ERROR_PREFIX):].strip()
    return None


def subprocess_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the backend Python: Blender's own Python settings removed, output unbuffered."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def neutral_cwd() -> str:
    """The folder backend children run in: `python -m` and `-c` put their working folder first on sys.path,
    so Blender's own (a checkout, say) could shadow the backend's installed alis_core."""
    return tempfile.gettempdir()


def check_python(python: str, timeout: float = 120.0) -> str:
    """Run `<python> -c 'import alis_core, torch'`; return a one-line description or raise BackendError."""
    if not python:
        raise BackendError("no backend Python is set: set Backend Python in the ALIS Sky preferences")
    if not os.path.isfile(python):
        raise BackendError(f"backend Python {python!r} does not exist: point it at a python executable")
    code = "import alis_core, torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=timeout, env=subprocess_env(),
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0), cwd=neutral_cwd(),
        )
    except (OSError, subprocess.TimeoutExpired) as ex:
        raise BackendError(f"backend Python {python!r} could not run: {ex}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise BackendError(f"backend Python {python!r} cannot import alis_core ({last}): pip install the project there")
    py, torch_version, cuda = out.stdout.split()
    return f"Python {py}, torch {torch_version}, CUDA {'yes' if cuda == 'True' else 'no'}"


# ---------------------------------------------------------------------------------------------
# Backend choice


def in_process_problem() -> str | None:
    """None if alis_core and torch import in this Python, else a one-line reason."""
    for name in ("torch", "alis_core"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{name} is not installed in Blender's Python"
    return None


def choose_backend(mode: str, python: str) -> str:
    """Resolve the preference `mode` (AUTO / SUBPROCESS / IN_PROCESS) to SUBPROCESS or IN_PROCESS.

    AUTO prefers a configured backend Python, then in-process. Raises BackendError naming the fix.
    """
    if mode not in BACKENDS:
        raise BackendError(f"backend {mode!r} is unknown: use one of {', '.join(BACKENDS)}")
    if mode == "SUBPROCESS" or (mode == "AUTO" and python):
        if not python:
            raise BackendError("no backend Python is set: set Backend Python in the ALIS Sky preferences")
        if not os.path.isfile(python):
            raise BackendError(f"backend Python {python!r} does not exist: point it at a python executable")
        return "SUBPROCESS"
    problem = in_process_problem()
    if problem is not None:
        raise BackendError(
            f"{problem}: set Backend Python in the ALIS Sky preferences to a Python with this project installed"
        )
    return "IN_PROCESS"


# ---------------------------------------------------------------------------------------------
# Jobs


class Job:
    """A generation running off the main thread. Read `state`, `fraction`, `message`; call `poll()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = RUNNING
        self.done = 0
        self.total = 0
        self.error = ""
        self.result_path: str | None = None  # SUBPROCESS: file written by the CLI (linear light)
        self.result_pixels: np.ndarray | None = None  # IN_PROCESS: [H, W, 3] float32, linear light, top-down
        self.result_sky: dict | None = None  # the sky's SkyInfo as a dict (its sun, exposure, ...), if any

    @property
    def fraction(self) -> float:
        with self._lock:
            return self.done / self.total if self.total else 0.0

    @property
    def message(self) -> str:
        with self._lock:
            if self.state == RUNNING:
                return f"Generating {self.done}/{self.total}" if self.total else "Starting..."
            if self.state == FAILED:
                return f"Failed: {self.error}"
            return "Cancelled" if self.state == CANCELLED else "Done"

    def _set_progress(self, done: int, total: int) -> None:
        with self._lock:
            self.done, self.total = done, total

    def _finish(self, state: str, error: str = "") -> None:
        with self._lock:
            if self.state == RUNNING:
                self.state, self.error = state, error

    def poll(self) -> str:
        """Current state (RUNNING, DONE, FAILED or CANCELLED); cheap, call it from a timer."""
        return self.state

    def wait(self, timeout: float | None = None) -> str:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class SubprocessJob(Job):
    """Runs `argv` (normally from build_generate_command) and expects it to write `output_path`."""

    def __init__(self, argv: list[str], output_path: str = "", env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.argv = list(argv)
        self.output_path = output_path
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._cancel_requested = False
        log.info("starting backend: %s", subprocess.list2cmdline(self.argv))
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=subprocess_env(env),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0), cwd=neutral_cwd(),
            )
        except OSError as ex:
            self._proc = None
            self._finish(FAILED, f"could not start {self.argv[0]!r}: {ex}")
            return
        self._reader = threading.Thread(target=self._read_stderr, name="alis-backend-stderr", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            progress = parse_progress_line(line)
            if progress is not None:
                self._set_progress(*progress)
            elif line.strip():
                self._stderr_tail.append(line.rstrip())
                log.debug("backend: %s", line.rstrip())
        rc = self._proc.wait()
        if self._cancel_requested:
            self._finish(CANCELLED)
        else:
            self._exited(rc)

    def _exited(self, rc: int) -> None:
        """The child ended by itself with exit code rc: a generation succeeded if it wrote its file."""
        if rc == 0 and os.path.isfile(self.output_path):
            try:
                self.result_sky = read_sky_json(sky_json_path(self.output_path))
            except BackendError as ex:
                self._finish(FAILED, str(ex))
                return
            self.result_path = self.output_path
            with self._lock:
                if self.total:
                    self.done = self.total
            self._finish(DONE)
        else:
            self._finish(FAILED, self._error_text(rc))

    def _error_text(self, rc: int) -> str:
        for line in reversed(self._stderr_tail):
            msg = parse_error_line(line)
            if msg is not None:
                return msg
        if rc == 0:
            return f"the backend finished but wrote no file {self.output_path!r}"
        tail = self._stderr_tail[-1] if self._stderr_tail else "no output"
        return f"the backend exited with code {rc}: {tail}"

    def wait(self, timeout: float | None = None) -> str:
        if self._proc is not None:
            self._reader.join(timeout)
        return self.state

    def cancel(self) -> None:
        """Terminate the backend process (kill it if it does not stop within 3 s)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._cancel_requested = True
        stop_process(self._proc)


def stop_process(proc: subprocess.Popen, wait_s: float = 3.0) -> None:
    """Terminate a child, and kill it if it has not stopped within wait_s."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class DownloadJob(SubprocessJob):
    """`<python> -m alis_core download ...` (build_download_command): progress in bytes, done when it exits 0.

    Cancel terminates the child; the hub keeps the partial file and the next download resumes it.
    """

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        super().__init__(argv, "", env)

    @property
    def message(self) -> str:
        with self._lock:
            if self.state == RUNNING:
                if not self.total:
                    return f"Downloading {self.name}..."
                return f"Downloading {self.name}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
            if self.state == FAILED:
                return f"Download of {self.name} failed: {self.error}"
            if self.state == CANCELLED:
                return f"Download of {self.name} cancelled (it resumes next time)"
            return f"Downloaded {self.name}"

    def _exited(self, rc: int) -> None:
        if rc == 0:
            with self._lock:
                if self.total:
                    self.done = self.total
            self._finish(DONE)
        else:
            self._finish(FAILED, self._error_text(rc))


# ---------------------------------------------------------------------------------------------
# Models: the backend's hub lists them and downloads them (the extension's Python has no alis_core)

# Prints the backend hub's model list as JSON: alis_core.hub.list_models() and cache_root().
_MODELS_CODE = (
    "import json; from alis_core import hub; "
    "print(json.dumps({'cache': str(hub.cache_root()), 'models': [{'name': m.name, 'status': m.status, "
    "'path': str(m.path) if m.path else '', 'size': m.size or 0, 'url': m.url or '', "
    "'description': m.description} for m in hub.list_models()]}))"
)


def build_models_command(python: str) -> list[str]:
    """argv that prints the backend's models (bundled, known, cached) as JSON; see parse_models."""
    return [python, "-c", _MODELS_CODE]


def parse_models(stdout: str) -> tuple[str, list[dict]]:
    """(cache folder, [{name, status, path, size, url, description}]) from build_models_command's output."""
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
        return str(data["cache"]), [dict(m) for m in data["models"]]
    except (ValueError, IndexError, KeyError, TypeError):
        raise BackendError(f"the backend listed no models ({stdout.strip()[-200:]!r})") from None


def list_models(python: str, timeout: float = 60.0) -> tuple[str, list[dict]]:
    """Ask the backend Python for its models; raise BackendError with the backend's last error line."""
    try:
        out = subprocess.run(build_models_command(python), capture_output=True, text=True, timeout=timeout,
                             env=subprocess_env(), creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                             cwd=neutral_cwd())
    except (OSError, subprocess.TimeoutExpired) as ex:
        raise BackendError(f"backend Python {python!r} could not run: {ex}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise BackendError(f"backend Python {python!r} cannot list models ({last}): update the project there "
                           "(Set Up Backend in the ALIS Sky preferences)")
    return parse_models(out.stdout)


def build_download_command(python: str, source: str, name: str = "") -> list[str]:
    """argv for `<python> -m alis_core download SOURCE [--name NAME] --progress-format lines`.

    source: a known model name (e.g. lhq1024) or an http(s) URL, which needs `name`.
    """
    if not source:
        raise BackendError("no model to download: give a known model name or a URL")
    if "://" in source and not name:
        raise BackendError(f"give the model from {source!r} a name to cache it under")
    cmd = [python, "-m", "alis_core", "download", source]
    if name:
        cmd += ["--name", name]
    return cmd + ["--progress-format", "lines"]


def looks_like_path(value: str) -> bool:
    """A checkpoint value that names a file rather than a model: a path separator or a checkpoint suffix
    (the shape of alis_core.hub.is_path's rule; the backend applies the full rule to anything else)."""
    return any(sep in value for sep in ("/", "\\", os.sep)) or value.lower().endswith((".safetensors", ".pkl"))


class InProcessJob(Job):
    """Runs `generate(progress)` in a worker thread; generate returns pixels [H, W, 3] (linear, top-down),
    or (pixels, sky dict) as generate_in_process does."""

    def __init__(self, generate: Callable[[Callable[[int, int], None]], object]) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(generate,), name="alis-generate", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise GenerationCancelled()
        self._set_progress(done, total)

    def _run(self, generate: Callable[[Callable[[int, int], None]], object]) -> None:
        try:
            result = generate(self._progress)
            pixels, sky = result if isinstance(result, tuple) else (result, None)
        except GenerationCancelled:
            self._finish(CANCELLED)
        except Exception as ex:  # noqa: BLE001 - any failure ends the job with its message
            log.exception("in-process generation failed")
            self._finish(FAILED, str(ex).splitlines()[0] if str(ex) else type(ex).__name__)
        else:
            if self._cancel.is_set():
                self._finish(CANCELLED)
                return
            self.result_pixels, self.result_sky = pixels, sky
            self._finish(DONE)

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.state

    def cancel(self) -> None:
        """Ask the worker to stop at the next batch boundary."""
        self._cancel.set()


# ---------------------------------------------------------------------------------------------
# In-process generation

def export_in_process(sky_path: str, folder: str, target: str) -> list[str]:
    """`alis export SKY --target T --out DIR` in this process (alis_core.export.export_sky): the files written."""
    from alis_core import export

    return export.export_sky(sky_path, folder, target)


_generator_cache: dict[tuple[str, str, float], object] = {}


def load_generator_cached(checkpoint: str, device: str):
    """alis_core.load_generator, cached per (path, device, mtime) so repeated runs skip the load."""
    import alis_core

    path = checkpoint or None
    mtime = os.path.getmtime(checkpoint) if checkpoint and os.path.exists(checkpoint) else 0.0
    key = (checkpoint, device, mtime)
    if key not in _generator_cache:
        _generator_cache.clear()  # keep at most one model in Blender's memory
        _generator_cache[key] = alis_core.load_generator(path, device=device, fast=DEFAULTS.fast)
    return _generator_cache[key]


def generate_in_process(
    params: SkyParams,
    progress: Callable[[int, int], None] | None = None,
    *,
    checkpoint: str = "",
    device: str = "auto",
    generator=None,
) -> tuple[np.ndarray, dict]:
    """Generate the equirect sky for `params` with alis_core in this process.

    -> (radiance [H, W, 3] float32 linear, top-down; the sky's SkyInfo as a dict, as the CLI's sky.json).
    The same steps as `alis generate --equirect` (complete_sky at the strip's own resolution), then
    the resize to params.width that the subprocess path applies to the CLI's file.
    `generator` overrides the checkpoint (tests pass a tiny model). progress(done, total) may raise to cancel.
    """
    import torch

    import alis_core
    from alis_core import image, sky

    params.validate()
    G = generator if generator is not None else load_generator_cached(
        checkpoint, str(options.resolve_device(device, "device")))
    if params.photo:  # fitted with gradients, so outside no_grad; the same call as `alis generate --from-photo`
        from alis_core.invert import photo_loop_anchors

        anchors, _ = photo_loop_anchors(G, None, [params.photo], params.anchors, params.seed, params.psi,
                                        progress=progress)
    with torch.no_grad():
        if not params.photo:
            anchors = alis_core.sample_anchors(G, params.anchors, params.seed, truncation_psi=params.psi)
        # noise_seed (noise mode "random"): the scene seed doubles as it, as in the CLI
        strip = alis_core.panorama(G, anchors, wrap=params.wrap, noise_mode=params.noise_mode, progress=progress,
                                   noise_seed=params.seed, context=DEFAULTS.context)  # [3, H, W]
        hdr, info = sky.complete_sky(
            image.to_unit(strip).float().cpu(), horizon=params.horizon, strip_scale=params.strip_scale,
            sky=params.sky, sun=params.sun, sun_disk=params.sun_disk, exposure=params.exposure,
            cap_blur=params.cap_blur,
        )  # [3, W / 2, W] scene-linear radiance
        linear = image.chw_to_hwc(hdr)  # [W / 2, W, 3]
    info.seeds = [params.seed]
    return np.maximum(pixels.resize_equirect(linear.numpy(), params.width), 0.0), info.to_dict()
