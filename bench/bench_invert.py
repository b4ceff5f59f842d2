"""Speed and fit of photo inversion (alis_core.invert.invert_image), printed as a table.

    python bench/bench_invert.py                       # the bundled model, 1 and 2 threads, default steps
    python bench/bench_invert.py --threads 2 --steps 25,50,100

Two photos per row set: a frame the bundled model drew (the columns where the inversion puts a
photo, taken from a loop of seed 3) and a procedural landscape made here (training/synthetic.py),
both 128 x 128. Wall clock and process CPU time are reported (on a shared machine the CPU time
says more); PSNR is of the reconstruction the loop shows.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alis_core.entry import tune_process_memory  # noqa: E402

tune_process_memory()  # as the `alis` command does, before torch loads

import torch  # noqa: E402

import alis_core  # noqa: E402
from alis_core import invert, options  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)
from training.synthetic import render_panorama  # noqa: E402


def photos(G) -> dict[str, torch.Tensor]:
    x0, x1 = invert.photo_layout(G, G.img_resolution).columns
    loop = alis_core.panorama(G, alis_core.sample_anchors(G, 6, 3), wrap=True, context=True)
    land = torch.from_numpy(render_panorama(5, G.img_resolution, G.img_resolution)).permute(2, 0, 1).float() / 255
    return {"model's own frame": (loop[:, :, x0:x1] + 1) / 2, "synthetic landscape": land}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None, help="default: the bundled model")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", default=str(options.INVERT_STEPS))
    a = ap.parse_args()
    G = alis_core.load_generator(a.checkpoint, fast=options.CLI.fast)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads available, torch {torch.__version__}")
    print(f"{'photo':<20} {'threads':>7} {'steps':>5} {'wall s':>8} {'cpu s':>8} {'PSNR dB':>8}")
    for name, img in photos(G).items():
        for threads in (int(v) for v in a.threads.split(",")):
            torch.set_num_threads(threads)
            for steps in (int(v) for v in a.steps.split(",")):
                wall, cpu = time.perf_counter(), time.process_time()
                r = invert.invert_image(G, img, steps=steps, seed=0)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"{name:<20} {threads:>7} {steps:>5} {wall:8.1f} {cpu:8.1f} {r.psnr:8.2f}", flush=True)


if __name__ == "__main__":
    main()
