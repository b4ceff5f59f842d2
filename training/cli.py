"""`alis train`: train or fine-tune an ALIS generator (see docs/TRAINING.md).

    alis train --data photos/ --preset tiny --out runs/tiny
    alis train --out runs/tiny --resume --kimg 20
    torchrun --nproc_per_node 4 -m training --data lhq/ --preset lhq256 --out runs/lhq256 --device cuda
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from alis_core import AlisError
from alis_core.cli import OneLineParser, run_main

from .config import DTYPES, PRESETS, TrainConfig, preset

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="alis train", description="Train or fine-tune an ALIS generator on landscape frames.")
    p.add_argument("--data", help="folder or .zip of photos, or 'synthetic[:N[:SEED]]' (procedural landscapes); "
                                  "on --resume the saved source is the default")
    p.add_argument("--out", required=True, help="run folder (stats.jsonl, samples, snapshots, state.pt)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="hyper-parameter preset (default: tiny)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    p.add_argument("--init", metavar="CKPT", help="fine-tune from our .safetensors or an official .pkl "
                                                  "(its D too when present; the model geometry comes from it)")
    p.add_argument("--kimg", type=float, help="total length in thousands of images (0.064 = 64 images)")
    p.add_argument("--batch", type=int, help="global batch size (all processes together)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, help="compute dtype: float32, bfloat16 (CPU/CUDA) or float16 (CUDA)")
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
    from .loop import STATE_NAME, config_for_init, load_state

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
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlisError(f"--device {name}: CUDA is not available in this PyTorch install; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise AlisError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def run(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    if a.list_presets:
        for name, values in PRESETS.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.resume and a.init:
        raise AlisError("--resume and --init exclude each other: --resume continues a run, --init starts a new one")
    cfg = resolve_config(a)
    if not a.data:
        raise AlisError("--data is required: a folder or .zip of images, or 'synthetic'")

    from .data import prepare_dataset
    from .loop import Trainer, init_distributed

    info, device = init_distributed(_device(a.device))
    try:
        if info.active:
            import torch.distributed as dist
            if info.is_main:  # one process prepares the cache, the others read it
                dataset = prepare_dataset(a.data, cfg.resolution, cache_dir=a.cache_dir)
                dist.barrier()
            else:
                dist.barrier()
                dataset = prepare_dataset(a.data, cfg.resolution, cache_dir=a.cache_dir)
        else:
            dataset = prepare_dataset(a.data, cfg.resolution, cache_dir=a.cache_dir)
        if info.is_main:
            print(f"training on {len(dataset)} frames of {dataset.resolution} px from {a.data}; "
                  f"{info.world_size} process(es) on {device}; output {a.out}", file=sys.stderr)
        trainer = Trainer(cfg, dataset, a.out, device=device, resume=a.resume, init=a.init, dist_info=info,
                          progress=not a.quiet, data_source=str(a.data))
        result = trainer.run()
    finally:
        if info.active:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    if result.status == "interrupted":
        if info.is_main:
            print(f"interrupted at kimg {result.cur_nimg / 1000:.3f}; state saved to {Path(a.out) / 'state.pt'}; "
                  f"continue with: alis train --out {a.out} --resume", file=sys.stderr)
        return 130
    if info.is_main:
        print(f"done: {result.cur_nimg / 1000:.3f} kimg; {Path(a.out) / 'final.safetensors'} (float16 G_ema), "
              f"{Path(a.out) / 'latest.safetensors'} (with D)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv, "interrupted; the last state.pt written (if any) is intact, continue with --resume")
