"""`alis eval CKPT --data DIR|synthetic`: SWD, infinite SWD, their ratio, the wrap-seam and patch-grid scores.

    alis eval runs/tiny/latest.safetensors --data synthetic --num 512
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Sequence


import alis_core
from alis_core import AlisError
from alis_core.cli import OneLineParser, resolve_checkpoint_arg, run_main
from alis_core.options import MAX_SEED, check_seed

from . import metrics
from .cli import _device

MAX_NUM = 1 << 16  # frames per side of the SWD comparison; 65536 is already hours of generation
MAX_SEAM_SEEDS = 4096

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="alis eval", description="Weight-free quality metrics of a checkpoint against real frames.")
    p.add_argument("checkpoint", help="our .safetensors or an official .pkl")
    p.add_argument("--data", required=True, help="folder or .zip of photos, or 'synthetic[:N[:SEED]]'")
    p.add_argument("--num", type=int, default=1024, help="real frames, fake frames and panorama crops (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seam-seeds", type=int, default=8, help="wrapped strips for the seam score (default 8)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--cache-dir", help="where prepared datasets are cached")
    p.add_argument("--context", action="store_true",
                   help="render the panoramas with patch context, as `alis generate` does by default "
                        "(default: every patch on its own, as in the paper)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def run(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    if not 8 <= a.num <= MAX_NUM:
        raise AlisError(f"--num must be in [8, {MAX_NUM}], got {a.num}")
    if not 0 <= a.seam_seeds <= MAX_SEAM_SEEDS:
        raise AlisError(f"--seam-seeds must be in [0, {MAX_SEAM_SEEDS}] (0: no seam score), got {a.seam_seeds}")
    check_seed(a.seed, "--seed")
    if a.seed > MAX_SEED - MAX_SEAM_SEEDS - 1:  # the fakes use seed + 1, the strips seed .. seed + seam_seeds
        raise AlisError(f"--seed must be at most {MAX_SEED - MAX_SEAM_SEEDS - 1}, got {a.seed}")
    device = _device(a.device)
    a.checkpoint = resolve_checkpoint_arg(a.checkpoint)  # a model name -> its cached file
    G = alis_core.load_generator(a.checkpoint, device=device)
    from .data import prepare_dataset
    dataset = prepare_dataset(a.data, G.img_resolution, cache_dir=a.cache_dir)
    t0 = time.perf_counter()
    real = metrics.real_images(dataset, a.num, seed=a.seed)
    ref = metrics.SWDReference(real, seed=a.seed)
    ev = metrics.evaluate_generator(G, ref, seed=a.seed + 1, context=a.context)
    scores = metrics.strip_scores(G, range(a.seed, a.seed + a.seam_seeds), context=a.context) if a.seam_seeds > 0 else []
    seams, grids = [s for s, _ in scores], [g for _, g in scores]
    result = {"checkpoint": str(a.checkpoint), "data": str(a.data), "num": a.num, "resolution": G.img_resolution, "context": a.context,
              "swd": ev.swd, "swd_inf": ev.swd_inf, "swd_ratio": ev.ratio,
              "swd_levels": ev.swd_levels, "swd_inf_levels": ev.swd_inf_levels,
              "seam_mean": statistics.fmean(seams) if seams else None, "seam_max": max(seams) if seams else None,
              "grid_mean": statistics.fmean(grids) if grids else None,
              "seconds": time.perf_counter() - t0}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"checkpoint  {a.checkpoint}  ({G.img_resolution} px; {len(dataset)} real frames from {a.data}; "
          f"{a.num} samples; panoramas {'with' if a.context else 'without'} patch context)")
    print(f"{'metric':<28}{'value':>10}")
    print(f"{'SWD x1e3 (frames)':<28}{ev.swd:>10.2f}")
    print(f"{'SWD x1e3 (panorama crops)':<28}{ev.swd_inf:>10.2f}")
    print(f"{'ratio inf / frames':<28}{ev.ratio:>10.3f}")
    if seams:
        print(f"{'seam score mean (~1 ideal)':<28}{result['seam_mean']:>10.3f}")
        print(f"{'seam score max':<28}{result['seam_max']:>10.3f}")
        print(f"{'patch-grid score (~1 ideal)':<28}{result['grid_mean']:>10.3f}")
    levels = ", ".join(f"{x:.1f}" for x in ev.swd_levels)
    print(f"SWD per pyramid level, finest first: {levels}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv)
