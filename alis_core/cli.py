"""The `alis` command line: generate, info, convert (and train / eval from the trainer package)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import AlisError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad options in one line, like every other error of the CLI."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def run_main(run_fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None,
             interrupted: str = "interrupted") -> int:
    """Run a command: AlisError -> one `error:` line and exit code 2; Ctrl-C -> exit code 130."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run_fn(argv)
    except AlisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an unavailable device is a clear error."""
    if name not in DEVICES:
        raise AlisError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AlisError("--device cuda: no CUDA GPU is visible to this PyTorch; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AlisError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


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


def _check_writable(path: Path, what: str) -> None:
    parent = path if what.endswith("folder") else path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise AlisError(f"{what} {path} is not writable (check the folder and its permissions)")


# ---------------------------------------------------------------------------------------------
# alis generate

def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="render a panorama (and skybox files) from a checkpoint",
                       description="Render a panorama from anchors; with --wrap it closes into a 360° loop.")
    p.add_argument("--checkpoint", default=None, help="our .safetensors or an official .pkl (default: the bundled model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor latents (default 0)")
    p.add_argument("--seeds", default=None, help="one seed per anchor, e.g. 12,7,99 (overrides --seed/--anchors)")
    p.add_argument("--anchors", type=int, default=None, help="number of anchors K (default: from --width, else 6)")
    p.add_argument("--width", type=int, default=None, help="panorama width in pixels")
    p.add_argument("--wrap", action="store_true", help="close the panorama into a seamless 360° loop")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi in [0, 2]: lower = tamer scenes (default 1)")
    p.add_argument("--noise", default="none", help="noise mode: none, const or random (default none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default float32)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per forward pass (default 8)")
    p.add_argument("--context", action=argparse.BooleanOptionalAction, default=True,
                   help="compute each batch of patches with its neighbouring columns, so that no patch grid "
                        "shows (default); --no-context: every patch on its own, as in the paper "
                        "(with --exact, the official model's pixels)")
    p.add_argument("--exact", action="store_true",
                   help="float32 in the official order of operations (slower; for parity checks)")
    p.add_argument("--out", default=None, help="panorama strip PNG (default panorama.png if nothing else is asked)")
    p.add_argument("--bits", type=int, default=8, help="bits per channel of PNG outputs: 8 or 16")
    p.add_argument("--equirect", default=None, help="equirectangular skybox: .png, .exr or .hdr (implies --wrap)")
    p.add_argument("--horizon", type=float, default=0.5, help="equirect row of the horizon, 0 = top, 1 = bottom")
    p.add_argument("--cubemap", default=None, help="folder for six cube faces + a cross layout (implies --wrap)")
    p.add_argument("--strip-scale", type=float, default=1.0,
                   help="vertical stretch of the strip in the equirect (1 = square pixels)")
    p.add_argument("--cap-blur", type=float, default=None, help="how fast the sky/ground fill blurs (default 2)")
    p.add_argument("--face-size", type=int, default=None, help="cube face size (default: equirect height / 2)")
    p.add_argument("--tiles", default=None, help="folder to stream the panorama into as tiles + index.json")
    p.add_argument("--progress-format", default="bar", choices=["bar", "lines", "none"],
                   help="progress on stderr: a bar, `progress D/T` lines, or none")
    p.set_defaults(func=cmd_generate)


def cmd_generate(a) -> int:
    from . import anchors as anchors_mod
    from .checkpoint import load_generator
    from .image import save_float_image, save_png, to_unit
    from .panorama import panorama, seam_score

    if a.noise not in ("none", "const", "random"):
        raise AlisError(f"--noise must be none, const or random, got {a.noise!r}")
    if a.dtype not in DTYPES:
        raise AlisError(f"--dtype must be one of {', '.join(DTYPES)}, got {a.dtype!r}")
    if a.width is not None and a.width <= 0:
        raise AlisError(f"--width must be a positive number of pixels, got {a.width}")
    if a.anchors is not None and a.anchors < 1:
        raise AlisError(f"--anchors must be >= 1, got {a.anchors}")
    if a.batch_size < 1:
        raise AlisError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.bits not in (8, 16):
        raise AlisError(f"--bits must be 8 or 16, got {a.bits}")
    if not 0.0 <= a.psi <= 2.0:
        raise AlisError(f"--psi must be within [0, 2] (1 = no truncation, 0.7 = typical), got {a.psi}")
    wrap = a.wrap or a.equirect is not None or a.cubemap is not None
    if a.equirect and Path(a.equirect).suffix.lower() not in (".png", ".exr", ".hdr"):
        raise AlisError(f"--equirect {a.equirect}: use a .png, .exr or .hdr file name")
    out = a.out
    if not any([out, a.equirect, a.cubemap, a.tiles]):
        out = "panorama.png"
    for path, what in ((out, "--out file"), (a.equirect, "--equirect file"),
                       (a.cubemap, "--cubemap folder"), (a.tiles, "--tiles folder")):
        if path:
            _check_writable(Path(path), what)
    device = resolve_device(a.device)
    G = load_generator(a.checkpoint, device=device, dtype=DTYPES[a.dtype], fast=not a.exact)
    spacing = G.anchor_spacing

    if a.seeds is not None:
        seeds = anchors_mod.parse_seed_list(a.seeds)
        anchors = anchors_mod.anchors_from_seeds(G, seeds, a.psi)
    else:
        k = a.anchors
        if k is None:
            k = max(2, math.ceil(a.width / spacing) + (0 if wrap else 1)) if a.width else 6
        anchors = anchors_mod.sample_anchors(G, k, a.seed, a.psi)
    k = anchors.shape[0]
    natural = (k if wrap else k - 1) * spacing
    if a.width is not None and not wrap and a.width > natural:
        raise AlisError(f"--width {a.width} exceeds the {natural} px that {k} anchors give "
                        f"({spacing} px each); raise --anchors or drop it to let --width choose")
    label = "alis generate"
    kwargs = dict(wrap=wrap, noise_mode=a.noise, batch_size=a.batch_size, seed=a.seed, context=a.context)
    written: list[str] = []

    if a.tiles:
        written += _write_tiles(G, anchors, Path(a.tiles), a, kwargs, ProgressReporter(label, a.progress_format))
        if not any([out, a.equirect, a.cubemap]):
            _report(written)
            return 0

    strip = panorama(G, anchors, width=a.width, progress=ProgressReporter(label, a.progress_format), **kwargs)
    strip01 = to_unit(strip)
    meta = {"Software": "alis", "alis": json.dumps({"seed": a.seed, "seeds": a.seeds, "anchors": k, "wrap": wrap,
                                                    "psi": a.psi, "noise": a.noise, "context": a.context,
                                                    "checkpoint": Path(a.checkpoint).name if a.checkpoint else "default"})}
    if out:
        written.append(str(save_png(out, strip01, bits=a.bits, text=meta)))
    if wrap:
        score = seam_score(strip, G.config.patch_width)
        print(f"seam score {score:.3f} (1 = the 360° seam looks like any patch boundary)", file=sys.stderr)
    if a.equirect or a.cubemap:
        from .projection import CUBE_FACE_FILES, cubemap_layout, equirect_to_cubemap, strip_to_equirect
        extra = {} if a.cap_blur is None else {"cap_blur": a.cap_blur}
        eq = strip_to_equirect(strip01, horizon=a.horizon, strip_scale=a.strip_scale, **extra).clamp(0, 1)
        if a.equirect:
            path = Path(a.equirect)
            if path.suffix.lower() == ".png":
                written.append(str(save_png(path, eq, bits=a.bits, text=meta)))
            else:
                written.append(str(save_float_image(path, eq)))
        if a.cubemap:
            face = a.face_size or eq.shape[1] // 2
            faces = equirect_to_cubemap(eq, face).clamp(0, 1)
            folder = Path(a.cubemap)
            for name, f in zip(CUBE_FACE_FILES, faces):
                written.append(str(save_png(folder / f"{name}.png", f, bits=a.bits)))
            written.append(str(save_png(folder / "cross.png", cubemap_layout(faces, "cross"), bits=a.bits)))
    _report(written)
    return 0


def _write_tiles(G, anchors, folder: Path, a, kwargs, progress) -> list[str]:
    """Stream the panorama into PNG tiles; index.json says where each tile goes."""
    from .image import save_png, to_unit
    from .panorama import iter_panorama

    folder.mkdir(parents=True, exist_ok=True)
    tiles, x = [], 0
    for i, tile in enumerate(iter_panorama(G, anchors, width=a.width if not kwargs["wrap"] else None,
                                           progress=progress, **kwargs)):
        name = f"tile_{i:05d}.png"
        save_png(folder / name, to_unit(tile), bits=a.bits)
        tiles.append({"file": name, "x": x, "width": tile.shape[2]})
        x += tile.shape[2]
    index = {"height": G.img_resolution, "width": x, "wrap": kwargs["wrap"], "tiles": tiles}
    tmp = folder / ".index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(folder / "index.json")
    return [str(folder / "index.json")]


def _report(paths: Sequence[str]) -> None:
    for p in paths:
        print(f"wrote {p}")


# ---------------------------------------------------------------------------------------------
# alis info / convert

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print a checkpoint's architecture and panorama geometry")
    p.add_argument("checkpoint", nargs="?", default=None, help="checkpoint file (default: the bundled model)")
    p.set_defaults(func=cmd_info)


def cmd_info(a) -> int:
    from .checkpoint import load_generator
    G = load_generator(a.checkpoint)
    cfg = G.config
    params = sum(p.numel() for p in G.parameters())
    print(f"checkpoint        {a.checkpoint or 'bundled default'}")
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
    p.set_defaults(func=cmd_convert)


def cmd_convert(a) -> int:
    from .checkpoint import convert_official
    dst = Path(a.dst)
    if dst.suffix.lower() != ".safetensors":
        raise AlisError(f"output {dst} must end in .safetensors")
    _check_writable(dst, "output file")
    convert_official(a.src, dst, with_discriminator=a.with_discriminator,
                     dtype=torch.float16 if a.fp16 else None)
    print(f"wrote {dst}")
    return 0


def _delegate(module: str, argv: list[str]) -> int:
    import importlib
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise AlisError(f"this command needs the trainer package ({e.name} is missing); install the project "
                        "from a clone with `pip install -e .`") from None
    return int(mod.main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="alis", description="ALIS panoramas: infinite, seamlessly wrapping landscapes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    _add_generate(sub)
    _add_info(sub)
    _add_convert(sub)
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
