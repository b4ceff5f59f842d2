"""Generator speed and panorama memory, printed as a table.

    python bench/bench_generator.py                  # 256 and 1024 frames; exact/fast float32, bfloat16
    python bench/bench_generator.py --sizes 256 --modes float32-exact,bfloat16 --repeats 5
    python bench/bench_generator.py --memory         # peak memory of streamed panoramas 4k/16k/64k px

Frames use random weights (every parameter randomised), noise "const", batch 1, the paper's
geometry: 256 px with channel_base 16384, 1024 px with channel_base 32768 (LHQ1024).
Ratios are against this machine's matmul peak, measured in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import alis_core  # noqa: E402
MALLOC_TUNED = alis_core.entry.tune_process_memory()  # before torch, as the `alis` command does
import torch  # noqa: E402
from alis_core import Generator, GeneratorConfig  # noqa: E402
from alis_core.layers import logarithmic_basis  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# name -> (dtype, fast): "exact" keeps the official order of float32 operations (parity 1e-4)
MODES = {"float32-exact": (torch.float32, False), "float32": (torch.float32, True), "bfloat16": (torch.bfloat16, True),
         "bfloat16-pytorch": (torch.bfloat16, True), "float32-pytorch": (torch.float32, True),
         "float16": (torch.float16, True)}
DEFAULT_MODES = "float32-exact,float32,bfloat16,bfloat16-pytorch"
PYTORCH_ONLY = {"bfloat16-pytorch", "float32-pytorch"}  # without the compiled kernels (alis_core.kernels)


@contextlib.contextmanager
def kernels_for(mode: str):
    """The compiled kernels off while a PYTORCH_ONLY mode runs."""
    saved = alis_core.kernels._impl
    if mode in PYTORCH_ONLY:
        alis_core.kernels._impl = False
    try:
        yield
    finally:
        alis_core.kernels._impl = saved


def kernels_line() -> str:
    if not alis_core.kernels.available():
        return "compiled kernels: off (numba not installed, or ALIS_KERNELS=0)"
    import numba
    return f"compiled kernels: numba {numba.__version__} (modes *-pytorch: without them)"
GEOMETRY = {256: 16384, 512: 32768, 1024: 32768}


def model_flops(cfg: GeneratorConfig) -> float:
    """Multiply-adds x 2 of every convolution of one frame (transposed convs at input size)."""
    total = 0
    for res in cfg.block_resolutions:
        c = cfg.channels(res)
        if res == 4:
            total += 2 * (c + 8) * c * 9 * 16
        else:
            nb = 2 * logarithmic_basis(res, cfg.coord_dims[str(res)]).shape[0]
            total += 2 * (cfg.channels(res // 2) + nb) * c * 9 * (res // 2) ** 2
            total += 2 * c * c * 9 * res * res
        total += 2 * c * 3 * res * res
    return float(total)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times)


def random_generator(res: int, seed: int = 0, device: str | torch.device = "cpu") -> Generator:
    from alis_testing import randomize
    cfg = GeneratorConfig(img_resolution=res, channel_base=GEOMETRY[res], z_dim=512, w_dim=512)
    return randomize(Generator(cfg), seed).eval().requires_grad_(False).to(device)


def time_frames(G: Generator, mode: str, repeats: int) -> tuple[float, float]:
    with kernels_for(mode):
        return _time_frames(G, mode, repeats)


def _time_frames(G: Generator, mode: str, repeats: int) -> tuple[float, float]:
    dtype, G.fast = MODES[mode]
    G.compute_dtype = dtype
    w = alis_core.sample_anchors(G, 3, seed=0)
    lb = torch.tensor([1])
    with torch.inference_mode():
        G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")  # warm-up: prepared weights, feature cache
        times = []
        for _ in range(repeats):
            sync(G.device)
            t = time.perf_counter()
            out = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
            sync(G.device)
            times.append(time.perf_counter() - t)
        G.compute_dtype, G.fast = torch.float32, False
        ref32 = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
    err = float((out.float() - ref32).abs().max() / ref32.abs().max())
    return statistics.median(times), err


def time_panorama(G: Generator, mode: str, anchors: int, batch: int, context: bool = False,
                  repeats: int = 3) -> float:
    with kernels_for(mode):
        return _time_panorama(G, mode, anchors, batch, context, repeats)


def _time_panorama(G: Generator, mode: str, anchors: int, batch: int, context: bool, repeats: int) -> float:
    dtype, G.fast = MODES[mode]
    G.compute_dtype = dtype
    w = alis_core.sample_anchors(G, anchors, seed=0)
    with torch.inference_mode():
        times = []
        for _ in range(repeats + 1):  # the first run warms up: prepared weights, coordinate features
            t = time.perf_counter()
            pano = alis_core.panorama(G, w, wrap=True, batch_size=batch, noise_mode="const", context=context)
            times.append(time.perf_counter() - t)
        dt = statistics.median(times[1:])  # this machine has outliers of +30% now and then
    G.compute_dtype, G.fast = torch.float32, False
    return dt / (pano.shape[2] / G.img_resolution)  # seconds per frame-equivalent


def memory_child(width: int, res: int, context: int) -> None:
    """Run in a subprocess: stream a panorama of `width` px and report the peak RSS."""
    from alis_testing import randomize
    G = randomize(Generator(GeneratorConfig.tiny(img_resolution=res, channel_base=4096, channel_max=128)), 0).eval()
    k = width // G.anchor_spacing
    w = alis_core.sample_anchors(G, k, seed=0)
    n = 0
    with torch.inference_mode():
        for tile in alis_core.iter_panorama(G, w, wrap=True, batch_size=8, context=bool(context)):
            n += tile.shape[2]  # a real caller writes the tile to disk here
    print(n, peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux VmHWM of /proc/self/status: getrusage's
    ru_maxrss survives exec, so a child started by a large parent would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def after_float16(res: int, device: torch.device, repeats: int) -> None:
    """float32 and bfloat16 frames, then one float16 frame, then the same frames again."""
    import warnings
    G = random_generator(res, device=device)
    modes = ("float32", "bfloat16")
    before = {m: time_frames(G, m, repeats)[0] for m in modes}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t16 = time_frames(G, "float16", 1)[0]
    refused = [str(w.message) for w in caught if "fused CPU path" in str(w.message)]
    after = {m: time_frames(G, m, repeats)[0] for m in modes}
    print()
    print(f"float16 frame: {t16:.3f} s ({'fused path refused it: ' + refused[0] if refused else 'fused path ran it'})")
    print()
    print(f"| {res} px frame | before a float16 frame (s) | after (s) | after / before |")
    print("|---|---|---|---|")
    for m in modes:
        print(f"| {m} | {before[m]:.3f} | {after[m]:.3f} | {after[m] / before[m]:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--modes", default=DEFAULT_MODES,
                    help="float32-exact, float32 (fast), bfloat16, and bfloat16-pytorch or float32-pytorch (the same "
                         "without the compiled kernels)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (frames and panoramas; memory is CPU-only)")
    ap.add_argument("--batch", type=int, default=4, help="patches per forward pass in panoramas (default 4)")
    ap.add_argument("--panorama", action="store_true", help="also time whole wrapped panoramas")
    ap.add_argument("--memory", action="store_true", help="peak memory of streamed panoramas")
    ap.add_argument("--after-float16", action="store_true",
                    help="float32 and bfloat16 frames of the first size before and after a float16 frame (on CPUs "
                         "whose oneDNN refuses float16, that frame leaves the fused path for float16 only)")
    ap.add_argument("--memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(*a.memory_child)
        return

    threads = torch.get_num_threads()
    device = torch.device(a.device)
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus{gpu}, torch {torch.__version__}, threads {threads}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}, "
          f"malloc keeps freed blocks: {'yes' if MALLOC_TUNED else 'no'}")
    print(kernels_line())
    peaks = {name: matmul_peak(DTYPES[name], device) for name in ("float32", "bfloat16")}
    print(f"matmul peak on {device.type} (float32 IEEE): float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    print()
    print("| frame | mode | s/frame | MP/s | GFLOP/s | % fp32 peak | % bf16 peak | max rel. err vs exact |")
    print("|---|---|---|---|---|---|---|---|")
    for res in [int(s) for s in a.sizes.split(",")]:
        G = random_generator(res, device=device)
        flops = model_flops(G.config)
        for name in a.modes.split(","):
            t, err = time_frames(G, name, a.repeats)
            gf = flops / t / 1e9
            print(f"| {res}x{res} ({flops / 1e9:.0f} GFLOP) | {name} | {t:.3f} | {res * res / t / 1e6:.2f} | "
                  f"{gf:.0f} | {100 * flops / t / peaks['float32']:.0f}% | {100 * flops / t / peaks['bfloat16']:.0f}% | "
                  f"{err:.1e} |", flush=True)
            if a.panorama:
                for context in (False, True):
                    tp = time_panorama(G, name, anchors=3, batch=a.batch, context=context, repeats=a.repeats)
                    what = "with patch context" if context else "patches apart"
                    print(f"| {res} panorama (wrap, 3 anchors, batch {a.batch}, {what}) | {name} | {tp:.3f} per frame | "
                          f"{res * res / tp / 1e6:.2f} | {flops / tp / 1e9:.0f} | | | |", flush=True)
    if a.after_float16:
        after_float16(int(a.sizes.split(",")[0]), device, a.repeats)
    if a.memory:
        print()
        print("| panorama width | frame | peak RSS (MiB), patches apart | with patch context |")
        print("|---|---|---|---|")
        for width in (4096, 16384, 65536):
            rss = []
            for context in (0, 1):
                r = subprocess.run([sys.executable, __file__, "--memory-child", str(width), "128", str(context)],
                                   capture_output=True, text=True, check=True)
                n, peak = r.stdout.split()
                rss.append(float(peak))
            print(f"| {int(n)} px | 128 px | {rss[0]:.0f} | {rss[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
