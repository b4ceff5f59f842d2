"""Training throughput: images/s and sec/kimg per preset and compute dtype.

    python bench/bench_train.py                                  # tiny and lhq256, fp32 and bf16, CPU
    python bench/bench_train.py --presets tiny --dtypes float32 --steps 10
    python bench/bench_train.py --device cuda --presets lhq256 --batch 32

The lazy regularisers are amortised as training runs them: one step costs
main + PL / pl_interval + R1 / r1_interval, each part timed on its own after a warm-up step.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import PRESETS, preset  # noqa: E402
from training.data import prepare_dataset  # noqa: E402
from training.loop import Trainer  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)

DEFAULT_BATCH = {"tiny": 8, "default128": 8, "lhq256": 4, "lhq1024": 2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def bench_one(name: str, dtype: str, batch: int, steps: int, device: str) -> dict:
    cfg = preset(name, batch=batch, dtype=dtype, kimg=1e6, metric_num=0,
                 mbstd_group_size=min(PRESETS[name].get("mbstd_group_size", 4), batch))
    data = prepare_dataset(f"synthetic:{max(8, batch)}", cfg.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, data, tmp, device=device, progress=False)
        dev = tr.device
        tr.train_step()  # warm-up, runs every phase once (step 0)
        n = tr.batch_gpu

        def main_step():
            tr.step = 1  # not a regularisation step
            tr.train_step()

        t_main = _timed(main_step, dev, steps)
        t_pl = _timed(lambda: tr._phase(tr.G, tr.opt_G, tr.scaler_G, lambda: tr.loss.g_pl(n, tr.gen),
                                        float(cfg.pl_interval), False), dev, max(1, steps // 2)) \
            if cfg.pl_weight > 0 else 0.0
        real = data.sample_batch(n, tr.data_gen).to(dev)
        t_r1 = _timed(lambda: tr._phase(tr.D, tr.opt_D, tr.scaler_D, lambda: tr.loss.d_r1(real),
                                        float(cfg.r1_interval), False), dev, max(1, steps // 2))
    step = t_main + t_pl / cfg.pl_interval + t_r1 / cfg.r1_interval
    return {"preset": name, "dtype": dtype, "batch": batch, "images_per_sec": batch / step,
            "sec_per_kimg": step * 1000 / batch, "main_s": t_main, "pl_s": t_pl, "r1_s": t_r1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,lhq256")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batch", type=int, help="batch for every preset (default: tiny 8, lhq256 4, ...)")
    p.add_argument("--steps", type=int, default=3, help="timed main steps per configuration")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else cpu_name()
    print(f"machine: {where}; torch {torch.__version__}; threads {torch.get_num_threads()}; device {a.device}")
    header = f"{'preset':<10} {'dtype':<9} {'batch':>5} {'images/s':>9} {'sec/kimg':>9} {'main s':>7} {'PL s':>7} {'R1 s':>7}"
    print(header)
    print("-" * len(header))
    for name in a.presets.split(","):
        for dtype in a.dtypes.split(","):
            r = bench_one(name, dtype, a.batch or DEFAULT_BATCH.get(name, 4), a.steps, a.device)
            print(f"{r['preset']:<10} {r['dtype']:<9} {r['batch']:>5} {r['images_per_sec']:>9.2f} "
                  f"{r['sec_per_kimg']:>9.1f} {r['main_s']:>7.3f} {r['pl_s']:>7.3f} {r['r1_s']:>7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
