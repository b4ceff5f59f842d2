"""Speed of the sky completion (alis_core.sky.complete_sky), printed as a table.

    python bench/bench_sky.py                          # 2048 and 4096 px wide skies, 1 and 2 threads
    python bench/bench_sky.py --heights 1024 --threads 2 --repeats 7
    python bench/bench_sky.py --heights 4096 --threads 2 --render   # and the render the sky adds to
    python bench/bench_sky.py --heights 4096 --threads 2 --write    # and writing it: PNG, EXR, .hdr

Strips are procedural landscapes (training/synthetic.py), 360° loops shaped like the two usual
sources: the bundled model with 6 anchors (1536 x 128, a 30° band) and the LHQ 1024 checkpoint
with 4 anchors (4096 x 1024, a 45° band). Each row is the median of the repeats after one
warm-up, wall clock and process CPU time (on a shared machine the CPU time says more).
With --render, the LHQ 1024 strip's own render is timed too, as `alis generate --anchors 4 --wrap`
renders it (the LHQ 1024 geometry with random weights, float32 with the compiled fast path,
patch context, batch 8 (the CLI's default), noise "const"), and every LHQ row says what share the sky adds to it.
With --write, each LHQ sky is also tone-mapped and written as the CLI writes it (8-bit PNG, float32
EXR, Radiance .hdr; median of the repeats, to a temporary folder).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alis_core  # noqa: E402
MALLOC_TUNED = alis_core.entry.tune_process_memory()  # before torch, as the `alis` command does
import torch  # noqa: E402
from alis_core.sky import complete_sky  # noqa: E402
from training.synthetic import render_panorama  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)

STRIPS = {"bundled 6 anchors": (128, 1536), "LHQ1024 4 anchors": (1024, 8192)}  # anchors 256 and 2048 px apart


def strip(h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(render_panorama(2, h, w)).permute(2, 0, 1).float().contiguous() / 255  # as a render gives it


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heights", default="1024,2048", help="equirect heights (the width is twice)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sun", default="60,30", help="'auto', 'none' or azimuth,elevation")
    ap.add_argument("--write", action="store_true", help="also time tone mapping and writing the LHQ skies")
    ap.add_argument("--render", action="store_true",
                    help="also time the 4-anchor LHQ 1024 strip's render; print the sky's share of it")
    a = ap.parse_args()
    sun = a.sun if a.sun in ("auto", "none") else tuple(float(v) for v in a.sun.split(","))
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads available, torch {torch.__version__}")
    render = {}
    if a.render:
        for threads in (int(v) for v in a.threads.split(",")):
            torch.set_num_threads(threads)
            render[threads] = render_seconds(a.repeats)
            print(f"render: LHQ1024 geometry, 4 anchors, wrapped (8192 x 1024), {threads} threads: "
                  f"{render[threads]:.2f} s")
    print(f"{'strip':<20} {'size':>11} {'threads':>7} {'wall s':>8} {'cpu s':>8}"
          + (f" {'of render':>9}" if render else ""))
    strips = {name: strip(*hw) for name, hw in STRIPS.items()}
    for name, s in strips.items():
        for height in (int(v) for v in a.heights.split(",")):
            for threads in (int(v) for v in a.threads.split(",")):
                torch.set_num_threads(threads)
                complete_sky(s, height=height, sun=sun)
                wall, cpu = [], []
                for _ in range(a.repeats):
                    t, c = time.perf_counter(), time.process_time()
                    complete_sky(s, height=height, sun=sun)
                    wall.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                size = f"{2 * height}x{height}"
                share = (f" {statistics.median(wall) / render[threads]:>8.1%}"
                         if threads in render and name.startswith("LHQ") else "")
                print(f"{name:<20} {size:>11} {threads:>7} {statistics.median(wall):>8.3f} "
                      f"{statistics.median(cpu):>8.3f}{share}")
                if a.write and name.startswith("LHQ"):
                    print("    " + write_seconds(s, height, sun, a.repeats))


def write_seconds(s: torch.Tensor, height: int, sun, repeats: int) -> str:
    """Median wall seconds of tone_map and of each file the CLI writes for this sky."""
    import tempfile
    from alis_core.image import save_image, save_radiance
    from alis_core.sky import tone_map
    hdr, _ = complete_sky(s, height=height, sun=sun)
    eq = tone_map(hdr)
    steps = {"tone map": lambda d: tone_map(hdr), "png": lambda d: save_image(f"{d}/sky.png", eq),
             "exr": lambda d: save_radiance(f"{d}/sky.exr", hdr), "hdr": lambda d: save_radiance(f"{d}/sky.hdr", hdr)}
    out = []
    with tempfile.TemporaryDirectory() as d:
        for label, step in steps.items():
            times = []
            for _ in range(max(1, min(repeats, 3))):
                t = time.perf_counter()
                step(d)
                times.append(time.perf_counter() - t)
            out.append(f"{label} {statistics.median(times):.2f} s")
    return "written: " + ", ".join(out)


def render_seconds(repeats: int) -> float:
    """Median wall time of the 4-anchor wrapped LHQ 1024 panorama (after one warm-up)."""
    from bench_generator import random_generator  # noqa: E402  (bench/bench_generator.py)
    G = random_generator(1024)
    G.fast, G.compute_dtype = True, torch.float32
    w = alis_core.sample_anchors(G, 4, seed=0)
    times = []
    with torch.inference_mode():
        for _ in range(max(2, min(repeats, 3)) + 1):
            t = time.perf_counter()
            alis_core.panorama(G, w, wrap=True, batch_size=8, noise_mode="const", context=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


if __name__ == "__main__":
    main()
