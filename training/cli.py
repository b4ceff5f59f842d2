"""`alis train`: train or fine-tune an ALIS generator (see docs/TRAINING.md).

    alis train --data photos/ --preset tiny --out runs/tiny
    alis train --out runs/tiny --resume --kimg 20
    alis train --data photos/ --out runs/tiny --force          # replace the run in runs/tiny
    torchrun --nproc_per_node 4 -m training --data lhq/ --preset lhq256 --out runs/lhq256 --device cuda
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from alis_core import AlisError
from alis_core.cli import OneLineParser, resolve_checkpoint_arg, run_main
from alis_core.options import DTYPE_NAMES, check_seed

from .config import PRESETS, TrainConfig, preset
from .runfolder import STATE_NAME, RunLock, check_run_folder

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="alis train", description="Train or fine-tune an ALIS generator on landscape frames.")
    p.add_argument("--data", help="folder or .zip of photos, or 'synthetic[:N[:SEED]]' (procedural landscapes); "
                                  "on --resume the saved source is the default")
    p.add_argument("--out", help="run folder (stats.jsonl, samples, snapshots, state.pt); required to train")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="hyper-parameter preset (default: tiny)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    p.add_argument("--force", action="store_true",
                   help="replace the run that --out holds (without --resume), or resume it on other --data")
    p.add_argument("--init", metavar="CKPT", help="fine-tune from our .safetensors or an official .pkl "
                                                  "(its D too when present; the model geometry comes from it)")
    p.add_argument("--kimg", type=float, help="total length in thousands of images (0.064 = 64 images)")
    p.add_argument("--batch", type=int, help="global batch size (all processes together)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="compute dtype: float32, bfloat16 (CPU/CUDA) or float16 (CUDA)")
    p.add_argument("--seed", type=int)
    p.add_argument("--snap-kimg", type=float, help="write a snapshot and state.pt every N kimg")
    p.add_argument("--sample-kimg", type=float, help="write sample panoramas every N kimg")
    p.add_argument("--metric-kimg", type=float, help="measure SWD every N kimg (0: at the end only)")
    p.add_argument("--tick-kimg", type=float, help="one stats.jsonl line every N kimg")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field, e.g. --set r1_gamma=2 (repeatable)")
    p.add_argument("--cache-dir", help="where prepared datasets are cached (default: the user cache)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    return p


def _explicit(a: argparse.Namespace) -> dict:
    names = {"kimg": "kimg", "batch": "batch", "dtype": "dtype", "seed": "seed", "snap_kimg": "snap_kimg",
             "sample_kimg": "sample_kimg", "metric_kimg": "metric_kimg", "tick_kimg": "tick_kimg"}
    return {field: getattr(a, attr) for attr, field in names.items() if getattr(a, attr) is not None}


def resolve_config(a: argparse.Namespace) -> TrainConfig:
    """Preset (or the saved run on --resume), then --set overrides, then explicit flags."""
    from .loop import config_for_init, load_state

    if a.resume:
        state = load_state(Path(a.out) / STATE_NAME)
        cfg = TrainConfig.from_dict(state["config"])
        if a.data is None:
            a.data = state.get("data_source") or None
    else:
        cfg = preset(a.preset or "tiny")
        if a.init:
            cfg = config_for_init(cfg, a.init)
    cfg = cfg.with_overrides(a.overrides)
    return cfg.replace(**_explicit(a))


def _device(name: str) -> str:
    """auto, cpu, cuda or cuda:N -> a device string; unavailable or malformed is one clear error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if name != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise AlisError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise AlisError(f"--device {name}: CUDA is not available in this PyTorch install; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise AlisError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


def check_args(a: argparse.Namespace) -> None:
    """The numbers of the command line: finite, in range; one error line naming the option."""
    for opt in ("kimg", "snap_kimg", "sample_kimg", "metric_kimg", "tick_kimg"):
        v = getattr(a, opt)
        if v is not None and not (math.isfinite(v) and (v > 0 if opt == "kimg" else v >= 0)):
            flag = "--" + opt.replace("_", "-")
            raise AlisError(f"{flag} must be a finite number {'> 0' if opt == 'kimg' else '>= 0'}, got {v}")
    if a.batch is not None and not 1 <= a.batch <= 1 << 16:
        raise AlisError(f"--batch must be in [1, 65536], got {a.batch}")
    if a.threads is not None and not 1 <= a.threads <= 4096:
        raise AlisError(f"--threads must be in [1, 4096] (leave it out for torch's choice), got {a.threads}")
    if a.seed is not None:
        check_seed(a.seed, "--seed")


def _on_main_first(info, fn, others: bool = True):
    """Run `fn` on rank 0, then (if it succeeded and `others`) on the other ranks; an AlisError on
    rank 0 is raised on every rank, so that none waits forever for a rank that gave up."""
    if not info.active:
        return fn()
    import torch.distributed as dist
    result, message = None, [None]
    if info.is_main:
        try:
            result = fn()
        except AlisError as e:
            message = [str(e)]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise AlisError(message[0])
    return result if info.is_main or not others else fn()


def _leave_process_group() -> None:
    """Every rank waits for the others before the process group goes: a gloo rank whose peer closes
    its sockets while a message is still on its way aborts (SIGABRT) instead of returning."""
    import datetime

    import torch.distributed as dist
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":  # gives up (raises) if a rank died, instead of waiting 30 min
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60), wait_all_ranks=True)
        else:
            dist.barrier()
    except RuntimeError:
        pass  # a rank is gone: nothing left to wait for
    dist.destroy_process_group()


def run(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    if a.list_presets:
        for name, values in PRESETS.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return 0
    if not a.out:
        raise AlisError("--out is required: the run folder (created if missing)")
    check_args(a)
    if a.resume and a.init:
        raise AlisError("--resume and --init exclude each other: --resume continues a run, --init starts a new one")
    check_run_folder(Path(a.out), a.resume, a.force)  # before anything is read or written
    a.init = resolve_checkpoint_arg(a.init)  # a model name -> its cached file (downloaded on first use)
    cfg = resolve_config(a)
    if not a.data:
        raise AlisError("--data is required: a folder or .zip of images, or 'synthetic'")
    device_name = _device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)

    from .data import prepare_dataset
    from .loop import Trainer, init_distributed

    info, device = init_distributed(device_name)
    lock = RunLock(Path(a.out))
    try:
        def take_lock():
            lock.acquire()
            check_run_folder(Path(a.out), a.resume, a.force)  # again, now that no other trainer can change it

        _on_main_first(info, take_lock, others=False)  # rank 0 writes the run folder, so it holds the lock
        dataset = _on_main_first(info, lambda: prepare_dataset(a.data, cfg.resolution, cache_dir=a.cache_dir))
        trainer = Trainer(cfg, dataset, a.out, device=device, resume=a.resume, init=a.init, dist_info=info,
                          progress=not a.quiet, data_source=str(a.data), force=a.force)
        if info.is_main:
            print(f"training on {len(dataset)} frames of {dataset.resolution} px from {a.data}; "
                  f"{info.world_size} process(es) on {device}; output {a.out}", file=sys.stderr)
        result = trainer.run()
    finally:
        lock.release()
        if info.active:
            _leave_process_group()
    if result.status == "interrupted":
        if info.is_main:
            print(f"interrupted at kimg {result.cur_nimg / 1000:.3f}; state saved to {Path(a.out) / STATE_NAME}; "
                  f"continue with: alis train --out {a.out} --resume", file=sys.stderr)
        return 130
    if info.is_main:
        print(f"done: {result.cur_nimg / 1000:.3f} kimg; {Path(a.out) / 'final.safetensors'} (float16 G_ema), "
              f"{Path(a.out) / 'latest.safetensors'} (with D)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv, "interrupted; the last state.pt written (if any) is intact, continue with --resume")
