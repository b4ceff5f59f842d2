"""The `alis` command line: generate, info, convert, export, view (and train / eval from the trainer package)."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from . import options, outputs
from .errors import AlisError

# The CLI's defaults (options.CLI): psi 1, 6 anchors, the fast formulation, patch context on.
DEFAULTS = options.CLI
MAX_BATCH = 1024  # patches per forward pass; more only asks for memory


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad options in one line, like every other error of the CLI."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def run_main(run_fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None,
             interrupted: str = "interrupted") -> int:
    """Run a command: AlisError -> one `error:` line and exit code 2; Ctrl-C -> exit code 130."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    shown = warnings.formatwarning
    # Warnings as one `warning:` line each, like errors (not a source path and a line of code).
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        return run_fn(argv)
    except AlisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown


def resolve_device(name: str):
    """'auto' picks CUDA, then Apple MPS, then the CPU (options.resolve_device, naming --device)."""
    return options.resolve_device(name, "--device")


class ProgressReporter:
    """A progress bar on stderr ("bar"), machine-readable lines ("lines": `progress D/T`), or nothing."""

    def __init__(self, label: str, style: str = "bar", stream=None):
        self.label, self.style = label, style
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.interactive = style == "bar" and getattr(self.stream, "isatty", lambda: False)()
        self._last_pct = -1

    def __call__(self, done: int, total: int) -> None:
        if self.style == "none" or total <= 0:
            return
        if self.style == "lines":
            print(f"progress {done}/{total}", file=self.stream, flush=True)
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        pct = int(100 * done / total)
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        line = f"{self.label} [{bar}] {done}/{total} {elapsed:5.1f}s eta {eta:5.1f}s"
        if self.interactive:
            print("\r" + line, end="\n" if done >= total else "", file=self.stream, flush=True)
        elif pct // 25 != self._last_pct // 25 or done >= total:  # logs: a line per quarter
            print(line, file=self.stream, flush=True)
        self._last_pct = pct


class DownloadProgress:
    """Bytes, rate and ETA of a download on stderr, in the styles of ProgressReporter."""

    def __init__(self, label: str, style: str = "bar", stream=None):
        self.label, self.style = label, style
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.first: int | None = None  # bytes already there when this run started (a resumed download)
        self.interactive = style == "bar" and getattr(self.stream, "isatty", lambda: False)()
        self._last = -1.0

    def __call__(self, done: int, total: int) -> None:
        if self.style == "none":
            return
        if self.first is None:  # the first call reports where this run starts
            self.first = done
        now = time.perf_counter()
        final = total > 0 and done >= total
        if self.style == "lines":
            if final or now - self._last >= 1.0:
                print(f"progress {done}/{total}", file=self.stream, flush=True)
                self._last = now
            return
        elapsed = max(now - self.start, 1e-6)
        rate = (done - self.first) / elapsed
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        eta = f" eta {(total - done) / rate:4.0f}s" if total and rate > 0 and not final else ""
        pct = int(100 * done / total) if total else 0
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        line = f"{self.label} [{bar}] {size} {rate / 1e6:.1f} MB/s{eta}"
        if self.interactive:
            if final or now - self._last >= 0.1:
                print("\r" + line, end="\n" if final else "", file=self.stream, flush=True)
                self._last = now
        elif final or now - self._last >= 10.0:  # logs: a line every 10 s
            print(line, file=self.stream, flush=True)
            self._last = now


def resolve_checkpoint_arg(value: str | None, no_download: bool = False, progress_format: str = "bar") -> str | None:
    """A checkpoint option (a path or a model name, alis_core.hub's rule) -> a file path; a known
    model not cached yet is downloaded first, with a progress bar (unless --no-download or
    ALIS_OFFLINE=1). None stays None (the bundled model)."""
    from . import hub
    if value is None or hub.is_path(value):
        return value
    progress = DownloadProgress(f"downloading {value}", progress_format)
    return str(hub.resolve(value, download=False if no_download else None, progress=progress))


# ---------------------------------------------------------------------------------------------
# alis generate

IMAGE_NAMES = ".png, .jpg, .webp, .exr or .hdr"
TILE_NAME = re.compile(r"tile_\d{5}\.png")
TILES_VERSION = 1


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="render a panorama (and skybox files) from a checkpoint",
                       description="Render a panorama from anchors; with --wrap it closes into a 360° loop.")
    p.add_argument("--checkpoint", default=None, help="our .safetensors, an official .pkl, or a model name "
                   "(`alis models`; a known one downloads on first use); default: the bundled model")
    p.add_argument("--no-download", action="store_true", help="never download a model name that is not cached")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor latents, the scene (default 0)")
    p.add_argument("--seeds", default=None, help="one seed per anchor, e.g. 12,7,99 (overrides --seed/--anchors)")
    p.add_argument("--anchors", type=int, default=None,
                   help=f"number of anchors K (default: from --width, else {DEFAULTS.anchors})")
    p.add_argument("--width", type=int, default=None, help="panorama width in pixels")
    p.add_argument("--wrap", action="store_true", help="close the panorama into a seamless 360° loop")
    p.add_argument("--psi", type=float, default=DEFAULTS.psi,
                   help=f"truncation psi in [{options.PSI_MIN:g}, {options.PSI_MAX:g}]: lower = tamer scenes "
                        f"(default {DEFAULTS.psi:g})")
    p.add_argument("--noise", default="none", help=f"noise mode: {', '.join(options.NOISE_MODES)} (default none)")
    p.add_argument("--noise-seed", type=int, default=None, help="seed of --noise random (default: --seed)")
    p.add_argument("--device", default="auto", help=f"{', '.join(options.DEVICES)} (default auto)")
    p.add_argument("--dtype", default="float32", help=f"{', '.join(options.DTYPE_NAMES)} (default float32)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per forward pass (default 8)")
    p.add_argument("--context", action=argparse.BooleanOptionalAction, default=DEFAULTS.context,
                   help="compute each batch of patches with its neighbouring columns, so that no patch grid "
                        "shows (default); --no-context: every patch on its own, as in the paper "
                        "(with --exact, the official model's pixels)")
    p.add_argument("--exact", action="store_true",
                   help="float32 in the official order of operations (slower; for parity checks)")
    p.add_argument("--out", default=None,
                   help=f"panorama strip, format from the extension: {IMAGE_NAMES} (float ones linear light); "
                        "default panorama.png if nothing else is asked")
    p.add_argument("--bits", type=int, default=8, help="bits per channel of PNG outputs: 8 or 16")
    p.add_argument("--equirect", default=None, help=f"equirectangular skybox: {IMAGE_NAMES} (implies --wrap)")
    p.add_argument("--horizon", type=float, default=0.5, help="equirect row of the horizon, 0 = top, 1 = bottom")
    p.add_argument("--cubemap", default=None, help="folder for six cube faces + a cross layout (implies --wrap)")
    p.add_argument("--strip-scale", type=float, default=1.0,
                   help="vertical stretch of the strip in the equirect (1 = square pixels)")
    p.add_argument("--cap-blur", type=float, default=None, help="--sky blur: how fast the fill blurs (default 2)")
    p.add_argument("--sky", default="physical",
                   help="what fills the sphere beyond the strip: physical (a daylight dome fitted to the strip's sky, "
                        "a ground plane, a sun; default) or blur (the strip's rows blurred, no sun)")
    p.add_argument("--sun", default="auto",
                   help="auto (the strip's brightest sky region, if it is bright enough to be a sun; default), none, "
                        "or AZ,EL in degrees (azimuth counter-clockwise from +X, elevation above the horizon), "
                        "which wins over a sun painted in the strip")
    p.add_argument("--sun-disk", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-sun-disk leaves the sun's disk out of the image; the JSON keeps the sun (for a sun lamp)")
    p.add_argument("--exposure", type=float, default=0.0,
                   help="EV: float skies (.exr/.hdr) hold radiance x 2^-EV; 8-bit ones are tone-mapped (default 0)")
    p.add_argument("--face-size", type=int, default=None, help="cube face size (default: equirect height / 2)")
    _export().add_generate_options(p)  # --layout, --target
    p.add_argument("--tiles", default=None, help="folder to stream the panorama into as tiles + index.json")
    p.add_argument("--force", action="store_true",
                   help="replace existing files that are not outputs of this kind (and another panorama's tiles)")
    p.add_argument("--progress-format", default="bar", choices=["bar", "lines", "none"],
                   help="progress on stderr: a bar, `progress D/T` lines, or none")
    p.add_argument("--anchors-file", default=None, help="start the loop with these anchors (from `alis invert`)")
    p.add_argument("--from-photo", default=None, help="invert this photo and start the loop with it (needs --wrap)")
    p.add_argument("--to-photo", default=None, help="with --from-photo: the loop passes this photo half way round")
    p.set_defaults(func=cmd_generate)


def _finite(value: float, option: str, low: float, high: float, low_open: bool = False) -> float:
    """A float option within [low, high] ((low, high] with low_open); NaN and infinities refused."""
    ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise AlisError(f"{option} must be a number within {span}, got {value}")
    return value


def _int_in(value: int | None, option: str, low: int, high: int, what: str = "") -> None:
    if value is not None and not low <= value <= high:
        raise AlisError(f"{option} must be within {low}..{high}{what}, got {value}")


def _check_generate_options(a) -> None:
    """Every option that needs no checkpoint, checked before anything is loaded or written."""
    options.check_noise_mode(a.noise, "--noise")
    options.check_choice(a.dtype, options.DTYPE_NAMES, "--dtype")
    options.check_choice(a.device, options.DEVICES, "--device")
    options.check_psi(a.psi, "--psi")
    options.check_seed(a.seed, "--seed")
    if a.noise_seed is not None:
        options.check_seed(a.noise_seed, "--noise-seed")
    if a.width is not None and a.width <= 0:
        raise AlisError(f"--width must be a positive number of pixels, got {a.width}")
    _int_in(a.anchors, "--anchors", 1, options.MAX_ANCHORS)
    _int_in(a.batch_size, "--batch-size", 1, MAX_BATCH)
    if a.bits not in (8, 16):
        raise AlisError(f"--bits must be 8 or 16, got {a.bits}")
    _finite(a.horizon, "--horizon", 0.0, 1.0)
    _finite(a.strip_scale, "--strip-scale", 0.0, 64.0, low_open=True)
    if a.cap_blur is not None:
        _finite(a.cap_blur, "--cap-blur", 0.0, 1000.0)
    from .sky import sky_json_path
    options.check_choice(a.sky, options.SKY_MODES, "--sky")
    a.sun_value = options.parse_sun(a.sun, "--sun")
    options.check_float(a.exposure, "--exposure", options.EXPOSURE_MIN, options.EXPOSURE_MAX)
    if a.face_size is not None and a.face_size < 1:
        raise AlisError(f"--face-size must be a positive number of pixels, got {a.face_size}")
    if a.seeds is not None:
        from .anchors import parse_seed_list
        a.seed_list = [options.check_seed(s, "--seeds entry") for s in parse_seed_list(a.seeds)]
        _int_in(len(a.seed_list), "the number of --seeds", 1, options.MAX_ANCHORS)
    if a.out:
        outputs.check_image_path(a.out, a.bits, "--out")
        outputs.check_replaceable(a.out, "image", a.force, "--out")
    if a.equirect:
        outputs.check_image_path(a.equirect, a.bits, "--equirect")
        outputs.check_replaceable(a.equirect, "image", a.force, "--equirect")
        outputs.check_replaceable(sky_json_path(a.equirect), "sky", a.force, "--equirect's sky.json")
    _export().check_generate_cubemap(a)  # --cubemap, --layout, --target
    if a.cubemap:
        outputs.check_replaceable(Path(a.cubemap) / "sky.json", "sky", a.force, "--cubemap's sky.json")
    if a.tiles:
        outputs.check_folder(a.tiles, "--tiles folder")
    paths = [Path(p).resolve() for p in (a.out, a.equirect) if p]
    if len(set(paths)) < len(paths):
        raise AlisError(f"--out and --equirect name the same file {a.out}; give each its own name")


def _export():
    from . import export
    return export


def _check_geometry(a, G, k: int, wrap: bool) -> int:
    """Bounds that need the checkpoint: width vs anchors, equirect rows, memory. -> the strip width."""
    spacing, height = G.anchor_spacing, G.img_resolution
    natural = options.natural_width(k, spacing, wrap)
    if a.width is not None and not wrap and a.width > natural:
        raise AlisError(f"--width {a.width} exceeds the {natural} px that {k} anchors give "
                        f"({spacing} px each); raise --anchors or drop it to let --width choose")
    width = natural if a.width is None else a.width
    skybox = a.equirect or a.cubemap
    if skybox:
        if width % 2 or width < 8:
            raise AlisError(f"--width {width}: a skybox needs an even strip width of 8 px or more")
        # strip_to_equirect's own bound, checked before rendering: a pole row must stay free.
        rows, out_h = max(1, round(height * a.strip_scale)), width // 2
        top = round(a.horizon * out_h - 0.5 * rows)
        if top < 1 or top + rows > out_h - 1:
            raise AlisError(f"--strip-scale {a.strip_scale:g} / --horizon {a.horizon:g}: the {rows}-row strip does not "
                            f"fit between the poles of a {out_h}-row equirect; lower --strip-scale, move --horizon "
                            "nearer 0.5 or raise --width")
    needed = 0
    if a.out or skybox:
        needed += outputs.strip_bytes(height, width)
    if skybox:
        needed += outputs.equirect_bytes(width)
    if a.cubemap:
        needed += outputs.cubemap_bytes(a.face_size or width // 4)
    what = f"a {width} x {height} px panorama" + (" with its skybox" if skybox else "")
    if a.face_size:
        what += f" (--face-size {a.face_size})"
    outputs.check_memory(needed, what, "lower --width/--anchors/--face-size, or stream the strip with --tiles DIR")
    return width


def _anchor_count(a, spacing: int, wrap: bool) -> int:
    if a.seeds is not None:
        return len(a.seed_list)
    if a.anchors is not None:
        return a.anchors
    if a.width is None:
        return DEFAULTS.anchors
    k = options.anchors_for_width(a.width, spacing, wrap)
    if k > options.MAX_ANCHORS:
        limit = options.natural_width(options.MAX_ANCHORS, spacing, wrap)
        raise AlisError(f"--width {a.width} needs {k} anchors of {spacing} px, more than {options.MAX_ANCHORS}; "
                        f"use a width up to {limit}")
    return k


def cmd_generate(a) -> int:
    from . import anchors as anchors_mod
    from .checkpoint import load_generator
    from .image import save_image, to_unit
    from .panorama import panorama, seam_score

    wrap = a.wrap or a.equirect is not None or a.cubemap is not None
    if not any([a.out, a.equirect, a.cubemap, a.tiles]):
        a.out = "panorama.png"
    _check_generate_options(a)
    a.checkpoint = resolve_checkpoint_arg(a.checkpoint, a.no_download, a.progress_format)
    noise_seed = a.seed if a.noise_seed is None else a.noise_seed
    device = resolve_device(a.device)
    G = load_generator(a.checkpoint, device=device, dtype=options.torch_dtype(a.dtype, "--dtype"),
                       fast=DEFAULTS.fast and not a.exact)
    spacing = G.anchor_spacing
    photo_anchors = _photo_anchors(a, G, wrap)
    k = _anchor_count(a, spacing, wrap) if photo_anchors is None else photo_anchors.shape[0]
    if k < 2:
        raise AlisError(f"a {'wrapping ' if wrap else ''}panorama needs at least 2 anchors, got {k}; "
                        "raise --anchors or give more --seeds")
    width = _check_geometry(a, G, k, wrap)
    tile_set = _TileSet(Path(a.tiles), _provenance(a, G, k, wrap, noise_seed), a.force) if a.tiles else None

    if photo_anchors is not None:
        anchors = photo_anchors
    elif a.seeds is not None:
        anchors = anchors_mod.anchors_from_seeds(G, a.seed_list, a.psi)
    else:
        anchors = anchors_mod.sample_anchors(G, k, a.seed, a.psi)
    label = "alis generate"
    kwargs = dict(wrap=wrap, noise_mode=a.noise, batch_size=a.batch_size, noise_seed=noise_seed, context=a.context)
    written: list[str] = []

    if tile_set is not None:
        written += tile_set.write(G, anchors, a, kwargs, ProgressReporter(label, a.progress_format))
        if not any([a.out, a.equirect, a.cubemap]):
            _report(written)
            return 0

    strip = panorama(G, anchors, width=a.width, progress=ProgressReporter(label, a.progress_format), **kwargs)
    _check_finite(strip)
    strip01 = to_unit(strip)
    meta = {"Software": "alis", "alis": json.dumps({
        "seed": a.seed, "seeds": a.seeds, "anchors": k, "wrap": wrap, "psi": a.psi, "noise": a.noise,
        "noise_seed": noise_seed, "context": a.context,
        "checkpoint": Path(a.checkpoint).name if a.checkpoint else "default"})}
    if a.out:
        written.append(str(save_image(a.out, strip01, bits=a.bits, text=meta)))
    if wrap and width > 2 * G.config.patch_width:  # the score compares the seam with interior patch edges
        score = seam_score(strip, G.config.patch_width)
        print(f"seam score {score:.3f} (1 = the 360° seam looks like any patch boundary)", file=sys.stderr)
    if a.equirect or a.cubemap:
        written += _write_sky(a, strip01, meta, scene_seeds=a.seed_list if a.seeds is not None else [a.seed],
                              noise_seed=noise_seed)
    _report(written)
    return 0


def _write_sky(a, strip01, meta: dict, scene_seeds: list[int], noise_seed: int) -> list[str]:
    """The full-sphere sky (alis_core.sky) as --equirect and --cubemap files, each with its sky.json."""
    from .image import save_image, save_radiance
    from .sky import complete_sky, tone_map, write_sky_json

    hdr, info = complete_sky(strip01, horizon=a.horizon, strip_scale=a.strip_scale, sky=a.sky, sun=a.sun_value,
                             sun_disk=a.sun_disk, exposure=a.exposure,
                             **({} if a.cap_blur is None else {"cap_blur": a.cap_blur}))
    info.extra["noise_seed"] = noise_seed
    float_eq = bool(a.equirect) and Path(a.equirect).suffix.lower() in (".exr", ".hdr")
    # [3, H, W] in [0, 1]: the strip looks as it did (only PNG-like files and cube maps show it)
    eq = tone_map(hdr, a.exposure) if a.cubemap or (a.equirect and not float_eq) else None
    model = Path(a.checkpoint).name if a.checkpoint else "default"
    written = []
    if a.equirect:
        if float_eq:
            written.append(str(save_radiance(a.equirect, hdr)))
        else:
            written.append(str(save_image(a.equirect, eq, bits=a.bits, text=meta)))
        written.append(str(write_sky_json(a.equirect, info, model=model, seeds=scene_seeds, force=a.force)))
    if a.cubemap:  # the --layout, or the --target preset (its README gives the sun as that engine's light)
        written += _export().write_generate_cubemap(a, eq, hdr, info.to_dict(model, scene_seeds))
        written.append(str(write_sky_json(Path(a.cubemap) / "sky.json", info, model=model, seeds=scene_seeds,
                                          force=a.force)))
    if info.sun is not None:
        where = "" if info.sun.visible else " (hidden by the terrain)"
        print(f"sun at azimuth {info.sun.azimuth_deg:.1f}°, elevation {info.sun.elevation_deg:.1f}°{where}",
              file=sys.stderr)
    return written


def _photo_anchors(a, G, wrap: bool):
    """--anchors-file / --from-photo / --to-photo: the loop's anchors (None without them)."""
    if not (a.anchors_file or a.from_photo or a.to_photo):
        return None
    if a.to_photo and not (a.from_photo or a.anchors_file):
        raise AlisError("--to-photo needs --from-photo (or --anchors-file) for the loop to start from")
    if a.from_photo and a.anchors_file:
        raise AlisError("give either --from-photo or --anchors-file as the loop's start, not both")
    if not wrap or not a.context or a.seeds is not None:
        raise AlisError("--anchors-file / --from-photo make a 360° loop with patch context: add --wrap, "
                        "drop --no-context and --seeds")
    from .invert import photo_loop_anchors
    anchors, infos = photo_loop_anchors(G, a.anchors_file, [a.from_photo, a.to_photo], a.anchors, a.seed, a.psi,
                                        progress=ProgressReporter("alis invert", a.progress_format))
    for info in infos:
        cols = "columns unknown" if info["columns"] is None else "columns {}..{}".format(*info["columns"])
        psnr = "" if info["psnr"] is None else f", reconstruction PSNR {info['psnr']:.2f} dB"
        print(f"{info['source']}: {cols} of the loop{psnr}", file=sys.stderr)
    return anchors


def _check_finite(tile) -> None:
    import torch
    if not bool(torch.isfinite(tile).all()):
        raise AlisError("the rendered panorama holds NaN or infinite values (broken checkpoint weights, or a "
                        "float16 overflow); nothing more was written: try --dtype float32 or another checkpoint")


def _checkpoint_id(path: str | None) -> dict:
    """Which checkpoint made a tile set: its name, size and modification time, hashed (a sha256 of
    the whole file would cost seconds for the official models)."""
    from .checkpoint import DEFAULT_CHECKPOINT
    p = Path(path or DEFAULT_CHECKPOINT)
    try:
        st = p.stat()
        key = f"{p.resolve().name}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        key = str(p)
    return {"name": p.name if path else "default", "id": hashlib.sha256(key.encode()).hexdigest()[:16]}


def _provenance(a, G, k: int, wrap: bool, noise_seed: int) -> dict:
    """What made a tile set: equal provenance, equal tiles (so a rerun may resume or overwrite)."""
    from . import __version__
    return {"checkpoint": _checkpoint_id(a.checkpoint), "seed": a.seed,
            "seeds": a.seed_list if a.seeds is not None else None, "anchors": k, "psi": a.psi, "noise": a.noise,
            "noise_seed": noise_seed, "wrap": wrap, "width": a.width if not wrap else None,
            "context": a.context, "dtype": a.dtype, "exact": a.exact, "batch_size": a.batch_size, "bits": a.bits,
            "height": G.img_resolution, "version": __version__}


class _TileSet:
    """A --tiles folder: one run at a time (a lock file), index.json written incomplete first and
    complete last, and only this project's own tile files (tile_NNNNN.png) replaced or removed."""

    def __init__(self, folder: Path, provenance: dict, force: bool):
        self.folder, self.provenance, self.force = folder, provenance, force
        self.index = folder / "index.json"
        self.old_tiles: set[str] = set()
        if not folder.is_dir():
            return
        old = None
        if self.index.exists():
            if outputs.sniff_kind(self.index) != "tiles" and not force:
                raise AlisError(f"--tiles {folder}: its index.json was not written by alis generate; choose another "
                                "folder, or pass --force to replace it")
            try:
                old = json.loads(self.index.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        on_disk = {p.name for p in folder.iterdir() if TILE_NAME.fullmatch(p.name)}
        listed = {t.get("file") for t in (old or {}).get("tiles", []) if isinstance(t, dict)}
        self.old_tiles = on_disk | {n for n in listed if isinstance(n, str) and TILE_NAME.fullmatch(n)}
        same = isinstance(old, dict) and old.get("provenance") == provenance
        if self.old_tiles and not same and not force:
            raise AlisError(f"--tiles {folder} holds the tiles of another panorama (other checkpoint, seeds or "
                            "options); choose another folder, or pass --force to replace them")
        for name in sorted(on_disk):
            if outputs.sniff_kind(folder / name) != "image" and not force:
                raise AlisError(f"--tiles {folder}: {name} is not an image; move it away, or pass --force")

    def write(self, G, anchors, a, kwargs, progress) -> list[str]:
        from .image import save_png, to_unit
        from .panorama import iter_panorama

        self.folder.mkdir(parents=True, exist_ok=True)
        with outputs.FolderLock(self.folder, "--tiles folder") as lock:
            if lock.stale:
                print(f"warning: --tiles {self.folder}: replaced the lock of a run that is gone ({lock.stale})",
                      file=sys.stderr)
            self._write_index([], 0, complete=False)
            tiles, x = [], 0
            for i, tile in enumerate(iter_panorama(G, anchors, width=a.width if not kwargs["wrap"] else None,
                                                   progress=progress, **kwargs)):
                _check_finite(tile)
                name = f"tile_{i:05d}.png"
                save_png(self.folder / name, to_unit(tile), bits=a.bits)
                tiles.append({"file": name, "x": x, "width": tile.shape[2]})
                x += tile.shape[2]
            for name in sorted(self.old_tiles - {t["file"] for t in tiles}):  # left over from a longer set
                (self.folder / name).unlink(missing_ok=True)
            self._write_index(tiles, x, complete=True)
        return [str(self.index)]

    def _write_index(self, tiles: list[dict], width: int, complete: bool) -> None:
        outputs.write_json(self.index, {
            "complete": complete, "height": self.provenance["height"], "width": width,
            "wrap": self.provenance["wrap"], "tiles": tiles, "provenance": self.provenance}, "tiles")


def _report(paths: Sequence[str]) -> None:
    for p in paths:
        print(f"wrote {p}")


# ---------------------------------------------------------------------------------------------
# alis invert

def _add_invert(sub) -> None:
    p = sub.add_parser("invert", help="fit anchors that redraw a photo (for --anchors-file)",
                       description="Fit anchors so that the model redraws PHOTO; `alis generate --anchors-file` "
                                   "then continues it into a 360° loop.")
    p.add_argument("photo", help="the photo (PNG, JPEG, WebP, TIFF, ...; grey, CMYK, 16-bit and alpha are converted)")
    p.add_argument("--out", required=True, help="anchors file to write (.safetensors)")
    p.add_argument("--checkpoint", default=None, help="our .safetensors or an official .pkl (default: the bundled model)")
    p.add_argument("--steps", type=int, default=options.INVERT_STEPS,
                   help=f"optimisation steps (default {options.INVERT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting codes (default 0)")
    p.add_argument("--preview", default=None, help=f"also write the reconstruction: {IMAGE_NAMES}")
    p.add_argument("--device", default="auto", help=f"{', '.join(options.DEVICES)} (default auto)")
    p.add_argument("--force", action="store_true", help="replace existing files that are not outputs of this kind")
    p.add_argument("--progress-format", default="bar", choices=["bar", "lines", "none"],
                   help="progress on stderr: a bar, `progress D/T` lines, or none")
    p.set_defaults(func=cmd_invert)


def cmd_invert(a) -> int:
    from .anchors import save_anchors
    from .checkpoint import load_generator
    from .image import save_image, to_unit
    from .invert import invert_image, read_photo
    _int_in(a.steps, "--steps", 0, 100_000)
    options.check_seed(a.seed, "--seed")
    options.check_choice(a.device, options.DEVICES, "--device")
    if Path(a.out).suffix.lower() != ".safetensors":
        raise AlisError(f"--out {a.out} must end in .safetensors (an anchors file)")
    outputs.check_replaceable(a.out, "anchors", a.force, "--out")
    if a.preview:
        outputs.check_image_path(a.preview, 8, "--preview")
        outputs.check_replaceable(a.preview, "image", a.force, "--preview")
    photo = read_photo(a.photo)
    G = load_generator(a.checkpoint, device=resolve_device(a.device), fast=DEFAULTS.fast)
    r = invert_image(G, photo, steps=a.steps, seed=a.seed, progress=ProgressReporter("alis invert", a.progress_format))
    info = {"columns": list(r.columns), "psnr": round(r.psnr, 3), "photo": Path(a.photo).name, "steps": r.steps,
            "seed": a.seed, "checkpoint": Path(a.checkpoint).name if a.checkpoint else "default"}
    written = [str(save_anchors(a.out, r.anchors, G, info, force=a.force))]
    if a.preview:
        written.append(str(save_image(a.preview, to_unit(r.recon), text={"Software": "alis"})))
    print(f"reconstruction PSNR {r.psnr:.2f} dB; the photo is columns {r.columns[0]}..{r.columns[1]} of a loop that "
          f"starts with these {r.anchors.shape[0]} anchors (alis generate --anchors-file {a.out} --wrap)", file=sys.stderr)
    _report(written)
    if r.interrupted:
        print(f"error: interrupted after {r.steps} of {a.steps} steps; wrote the best anchors so far", file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------------------------------------
# alis info / convert

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print a checkpoint's architecture and panorama geometry")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint file or model name (default: the bundled model)")
    p.add_argument("--no-download", action="store_true", help="never download a model name that is not cached")
    p.set_defaults(func=cmd_info)


def cmd_info(a) -> int:
    from .checkpoint import load_generator
    path = resolve_checkpoint_arg(a.checkpoint, a.no_download)
    G = load_generator(path)
    cfg = G.config
    params = sum(p.numel() for p in G.parameters())
    shown = a.checkpoint if path == a.checkpoint else f"{a.checkpoint} ({path})"
    print(f"checkpoint        {shown or 'bundled default'}")
    print(f"frame             {cfg.img_resolution} x {cfg.img_resolution} px ({cfg.grid_size} patches of "
          f"{cfg.patch_width} px)")
    print(f"anchor spacing    {cfg.anchor_spacing} px ({cfg.patches_per_interval} patches; w_coord_dist {cfg.w_coord_dist:g})")
    print(f"360° loop         K anchors -> K x {cfg.anchor_spacing} px wide, {cfg.img_resolution} px high")
    print(f"latents           z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, {cfg.num_ws} ws, {cfg.mapping_layers} mapping layers")
    print(f"channels          base {cfg.channel_base}, max {cfg.channel_max}; {params / 1e6:.2f} M parameters")
    print(f"CPU kernels       {_kernels_line(cfg)}")
    return 0


def _kernels_line(cfg) -> str:
    """Whether the optional compiled CPU kernels (alis_core.kernels) run this model."""
    from . import kernels
    from .cpu.plan import kernel_model as _kernel_model
    if not _kernel_model(cfg):
        return "not used: a model this small renders as fast without them"
    if kernels.installed():
        return f"on (numba; {kernels.ENV}=0 turns them off)"
    if os.environ.get(kernels.ENV, "1") == "0":
        return f"off ({kernels.ENV}=0)"
    return "not installed: pip install numba (the 'fast' extra) renders this model 10-40% faster on a CPU"


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert an official ALIS snapshot .pkl to .safetensors (safely)")
    p.add_argument("src", help="official network-snapshot .pkl (e.g. lhq1024-snapshot.pkl)")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--with-discriminator", action="store_true", help="also import D (for fine-tuning)")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_convert)


def cmd_convert(a) -> int:
    import torch

    from .checkpoint import convert_official
    dst = Path(a.dst)
    if dst.suffix.lower() != ".safetensors":
        raise AlisError(f"output {dst} must end in .safetensors")
    src = Path(a.src)
    if not src.is_file():
        raise AlisError(f"source {src} is not a file; pass an official network-snapshot .pkl")
    if dst.exists() and dst.resolve() == src.resolve():
        raise AlisError(f"output {dst} is the source file; give another name")
    outputs.check_replaceable(dst, "checkpoint", a.force, "output")  # a checkpoint is replaced only with --force
    convert_official(src, dst, with_discriminator=a.with_discriminator,
                     dtype=torch.float16 if a.fp16 else None)
    print(f"wrote {dst}")
    return 0


# ---------------------------------------------------------------------------------------------
# alis download / models

def _add_download(sub) -> None:
    p = sub.add_parser("download", help="download a known model (e.g. lhq1024) or a checkpoint URL into the cache",
                       description="Download into the model cache ($ALIS_HOME, else the user cache folder): "
                                   "resumable, verified, official pickles converted safely to .safetensors.")
    p.add_argument("source", help="a known model name (`alis models`) or an http(s) URL of a .pkl/.safetensors")
    p.add_argument("--name", default=None, help="the name to cache a URL under (then --checkpoint NAME)")
    p.add_argument("--force", action="store_true", help="download again even if the name is cached")
    p.add_argument("--keep-pickle", action="store_true", help="keep an official .pkl next to its conversion")
    p.add_argument("--progress-format", default="bar", choices=["bar", "lines", "none"],
                   help="progress on stderr: a bar, `progress D/T` lines (bytes), or none")
    p.set_defaults(func=cmd_download)


def cmd_download(a) -> int:
    from . import hub
    name = a.name or a.source
    if a.name is not None:
        hub.check_name(a.name, "--name")
    path = hub.download(a.source, a.name, force=a.force, keep_pickle=a.keep_pickle,
                        progress=DownloadProgress(f"downloading {name}", a.progress_format))
    known = hub.KNOWN.get(a.source)
    if known:
        print(f"licence: {known.licence}", file=sys.stderr)
    print(f"{name}: {path}")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the bundled, known and cached models with sizes and paths")
    p.add_argument("--verify", action="store_true", help="check every cached model's sha256 against the index")
    p.set_defaults(func=cmd_models)


def cmd_models(a) -> int:
    from . import hub
    bad = 0
    print(f"cache {hub.cache_root()}")
    for m in hub.list_models():
        size = f"{m.size / 1e6:9.1f} MB" if m.size is not None else f"{'-':>12}"
        where = str(m.path) if m.path else f"downloads on first use from {m.url}"
        state = m.status
        if a.verify and m.status == "cached":
            try:
                hub.verify_cached(m.name, full=True)
                state = "verified"
            except AlisError as e:
                state, bad = "DAMAGED", bad + 1
                print(f"error: {e}", file=sys.stderr)
        print(f"{m.name:<16} {state:<9} {size}  {where}")
    return 2 if bad else 0


def _delegate(module: str, argv: list[str]) -> int:
    import importlib.util
    try:
        mod = importlib.import_module(f"alis_{module}" if importlib.util.find_spec("alis_training") else module)
    except ImportError as e:
        raise AlisError(f"this command needs the trainer package ({e.name} is missing); install the project "
                        "from a clone with `pip install -e .`") from None
    return int(mod.main(argv) or 0)


# ---------------------------------------------------------------------------------------------
# alis export / view

def _add_export_view(sub) -> None:
    from .options import CUBEMAP_LAYOUTS, EXPORT_TARGETS
    p = sub.add_parser("export", help="write an equirect sky for a game engine (docs/ENGINES.md)",
                       description="Write an existing 2:1 equirect (.png, .exr, .hdr; its sky JSON if beside it) "
                                   "in the layout, names and formats an engine imports.")
    p.add_argument("sky", help="equirect image (.png/.jpg/.webp sRGB, .exr/.hdr linear) or a cube-map folder")
    p.add_argument("--target", default=None, help=f"engine preset: {', '.join(EXPORT_TARGETS)}")
    p.add_argument("--layout", default=None, help=f"instead of --target: {', '.join(CUBEMAP_LAYOUTS)}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--face-size", type=int, default=None, help="cube face size (default: equirect height / 2)")
    p.add_argument("--force", action="store_true", help="replace files that are not outputs of this kind")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("view", help="look around a sky in the browser (three.js, local)",
                       description="Open a 360° view of an equirect (.png, .exr, .hdr) or a cube-map folder: "
                                   "served from 127.0.0.1, or written as one HTML file with --export.")
    p.add_argument("sky", help="equirect image or cube-map folder")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only serve; open the printed URL yourself")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="write DIR/<name>.html, one self-contained page that works opened from disk")
    p.add_argument("--force", action="store_true", help="replace a file that is not a viewer page")
    p.set_defaults(func=cmd_view)


def cmd_export(a) -> int:
    from . import export
    if (a.target is None) == (a.layout is None):
        raise AlisError("give one of --target (an engine preset) or --layout (a cube-map layout)")
    if a.face_size is not None and not 1 <= a.face_size <= 16384:
        raise AlisError(f"--face-size must be within 1..16384, got {a.face_size}")
    if a.target is not None:
        _report(export.export_sky(a.sky, a.out, a.target, a.face_size, a.force))
        return 0
    export.check_outputs(a.out, export.layout_files(a.layout), a.force, "--out")
    sky = export.load_sky(a.sky)
    _report(export.write_layout(sky.display01, a.out, a.layout, a.face_size))
    return 0


def cmd_view(a) -> int:
    from .viewer import view
    if not 0 <= a.port <= 65535:
        raise AlisError(f"--port must be within 0..65535, got {a.port}")
    out = view(a.sky, a.port, not a.no_browser, a.export, a.force, announce=lambda m: print(m, flush=True))
    if out is not None:
        _report([str(out)])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="alis", description="ALIS panoramas: infinite, seamlessly wrapping landscapes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    _add_generate(sub)
    _add_info(sub)
    _add_convert(sub)
    _add_download(sub)
    _add_models(sub)
    _add_export_view(sub)
    _add_invert(sub)
    sub.add_parser("train", help="train or fine-tune a checkpoint (see docs/TRAINING.md)", add_help=False)
    sub.add_parser("eval", help="measure SWD, infinite SWD and seam scores of a checkpoint", add_help=False)
    return parser


DELEGATED = {"train": "training.cli", "eval": "training.cli_eval"}


def run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:  # the trainer parses its own options
        return _delegate(DELEGATED[argv[0]], argv[1:])
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return a.func(a)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
