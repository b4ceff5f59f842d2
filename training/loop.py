"""The training loop: phases, EMA, schedules, outputs, resumable state, DDP.

Each step runs StyleGAN2's four phases on one global batch (split across processes):
Gmain, Greg (every pl_interval steps), Dmain, Dreg (every r1_interval steps), then updates G_ema
and the ALIS max-shift-strength schedule. Outputs in the run folder:

- stats.jsonl: one JSON line per tick (losses averaged over the tick, timings, SWD when measured);
- samples-KIMG.png: wrapped panoramas of G_ema from fixed seeds;
- network-snapshot-KIMG.safetensors (G_ema + D, float32) and latest.safetensors: release snapshots,
  loadable by alis_core.load_generator and usable with --init;
- final.safetensors: G_ema alone in float16, the file to ship, written when the run completes;
- state.pt: the resumable state (G, D, G_ema, optimisers, counters, RNG states, the data's
  identity), replaced atomically.

A fresh run refuses a folder that holds a run unless `force` (then the old outputs are deleted
when it starts); a resumed run first trims stats.jsonl to the lines at or before its state, so a
run killed between two states logs every tick exactly once. See training.runfolder.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

import alis_core
from alis_core import AlisError, Discriminator, Generator
from alis_core.image import save_png, to_unit

from . import metrics
from .config import TrainConfig
from .loss import AlisLoss
from .runfolder import STATE_NAME, STATS_NAME, check_run_folder, clear_outputs, trim_stats

log = logging.getLogger(__name__)

STATE_FORMAT = "alis-train-state"
STATE_VERSION = 1
Tensor = torch.Tensor
TIMING_KEYS = ("sec_per_kimg", "sec_per_step", "images_per_sec", "time_total", "time_tick", "peak_mem_mb")


# ---------------------------------------------------------------------------------------------
# Distributed helpers.


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> tuple[DistInfo, str]:
    """Join the process group that torchrun describes in the environment (no-op for one process).

    Returns the process's rank/world size and its device (cuda:LOCAL_RANK on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return DistInfo(dist.get_rank(), dist.get_world_size()), device


def _all_reduce_mean(t: Tensor, info: DistInfo) -> Tensor:
    if not info.active:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size



def _sync_grads(module: torch.nn.Module, info: DistInfo, sanitize: bool) -> None:
    """Average gradients over processes (StyleGAN2-ADA style: one flat all-reduce, no DDP wrapper,
    which R1 and path-length double backward need) and replace NaN/inf like the official loop."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if info.active and params:
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= info.world_size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
    if sanitize:
        for p in params:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


# ---------------------------------------------------------------------------------------------
# Progress and Ctrl-C.


class ProgressBar:
    """One status line on stderr: kimg done/total, sec/kimg, ETA and the latest losses."""

    def __init__(self, total_nimg: int, stream=None, enabled: bool = True):
        self.total = total_nimg
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0

    def update(self, nimg: int, sec_per_kimg: float, extra: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and (not self.tty or now - self._last < 0.2):
            return
        self._last = now
        eta = max(0.0, (self.total - nimg) / 1000 * sec_per_kimg) if sec_per_kimg > 0 else 0.0
        frac = nimg / max(self.total, 1)
        width = 20
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = (f"[{bar}] kimg {nimg / 1000:.3f}/{self.total / 1000:.3f}  {sec_per_kimg:.1f} s/kimg  "
                f"ETA {_hms(eta)}  {extra}")
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _hms(sec: float) -> str:
    sec = int(round(sec))
    return f"{sec // 3600}:{sec // 60 % 60:02d}:{sec % 60:02d}"


class _StopFlag:
    """SIGINT sets a flag that the loop checks between steps, so the saved state is consistent.
    A second Ctrl-C falls back to Python's KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ---------------------------------------------------------------------------------------------
# State.


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict:
    """Read a resumable state written by this trainer (tensors and plain containers only)."""
    if not path.is_file():
        raise AlisError(f"no resumable state at {path}; start without --resume, or point --out at the run folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear line
        raise AlisError(f"{path} is not a readable training state ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); delete it or restart without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AlisError(f"{path} is not an ALIS training state")
    if int(state.get("version", 0)) > STATE_VERSION:
        raise AlisError(f"{path} was written by a newer trainer (state version {state['version']})")
    return state


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# The trainer.


@dataclass
class TrainResult:
    status: str  # "done" or "interrupted"
    cur_nimg: int
    step: int
    out_dir: Path


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one random stream of a run ("init", "latents/0", "data/1", ...).

    Streams must not reuse the user's seed directly: sample_anchors(G, K, seed=0) draws z from a
    generator seeded 0, and a mapping network initialised from seed 0 would then have its first
    weight rows equal to those z's, so panoramas from seed 0 would be degenerate forever.
    """
    digest = hashlib.sha256(f"alis-train/{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _nimg(kimg: float) -> int:
    return int(round(kimg * 1000))


def _crossed(prev: int, cur: int, every: int) -> bool:
    return every > 0 and prev // every != cur // every


def _autocast_factory(dtype_name: str, device: torch.device):
    if dtype_name == "float32":
        return contextlib.nullcontext
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    if dtype == torch.float16 and device.type != "cuda":
        raise AlisError("--dtype float16 needs a CUDA device; use bfloat16 on the CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _build_models(cfg: TrainConfig, init: str | None, device: torch.device) -> tuple[Generator, Discriminator]:
    """Fresh G and D from cfg (seeded); with `init`, their weights come from the checkpoint
    (cfg must describe its geometry: see config_for_init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        G = Generator(cfg.generator_config())
        D = Discriminator(cfg.discriminator_config())
    if init is not None:
        src = alis_core.load_generator(init)
        if src.config.to_dict() != G.config.to_dict():
            raise AlisError(f"--init {init}: its generator architecture differs from the training config; "
                            "build the config with training.loop.config_for_init")
        G.load_state_dict(src.state_dict())
        try:
            src_d = alis_core.load_discriminator(init)
        except AlisError:
            log.info("fine-tuning: G from %s; it holds no D, so D starts fresh", init)
        else:
            if src_d.config.to_dict() != D.config.to_dict():
                raise AlisError(f"--init {init}: its discriminator architecture differs from the training config")
            D.load_state_dict(src_d.state_dict())
            log.info("fine-tuning: G and D from %s", init)
    G.synthesis.max_shift_strength.zero_()  # ALIS: frames start at the window's left edge
    return G.to(device), D.to(device)


def _init_has_discriminator(init: str) -> bool:
    try:
        alis_core.load_discriminator(init)
    except AlisError:
        return False
    return True


def config_for_init(cfg: TrainConfig, init: str) -> TrainConfig:
    """Take G's (and D's, when the checkpoint has one) architecture from a checkpoint, keeping the
    optimisation settings of `cfg`."""
    c = alis_core.load_generator(init).config.to_dict()
    mapped = dict(resolution=c.pop("img_resolution"), z_dim=c.pop("z_dim"), w_dim=c.pop("w_dim"),
                  mapping_layers=c.pop("mapping_layers"), channel_base=c.pop("channel_base"),
                  channel_max=c.pop("channel_max"), grid_size=c.pop("grid_size"),
                  w_coord_dist=c.pop("w_coord_dist"))
    d_fields: dict = {}
    if _init_has_discriminator(init):
        d = alis_core.load_discriminator(init).config.to_dict()
        d.pop("img_resolution")
        d_fields = dict(d_channel_base=d.pop("channel_base"), d_channel_max=d.pop("channel_max"),
                        mbstd_group_size=d.pop("mbstd_group_size"), d_kwargs=d)
    else:
        d_fields = dict(d_channel_base=cfg.d_channel_base, d_channel_max=cfg.d_channel_max)
    return cfg.replace(**mapped, g_kwargs=c, **d_fields)


class Trainer:
    """One process of a training run. `run()` trains until cfg.kimg or Ctrl-C."""

    def __init__(self, cfg: TrainConfig, dataset, out_dir: str | Path, device: str = "cpu",
                 resume: bool = False, init: str | None = None, dist_info: DistInfo | None = None,
                 progress: bool = True, data_source: str = "", force: bool = False):
        """`force`: replace the run that `out_dir` holds (fresh run), or resume it on other data."""
        self.info = dist_info or DistInfo()
        self.out = Path(out_dir)
        check_run_folder(self.out, resume, force)
        self.resumed = resume
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # cuDNN times its algorithms once per shape (a run's shapes are fixed), as the official
            # trainer has it: its heuristics chose FFT convolutions 5x slower than the best for some
            # of this model's shapes when rendering on an H200
            torch.backends.cudnn.benchmark = True
        self.dataset = dataset
        self.data_source = data_source or str(getattr(dataset, "manifest", {}).get("source", ""))
        self.data_identity = str(getattr(dataset, "manifest", {}).get("identity", ""))
        state = None
        if resume:
            state = load_state(self.out / STATE_NAME)
            saved = TrainConfig.from_dict(state["config"])
            changed = {k: v for k, v in cfg.to_dict().items()
                       if k not in TrainConfig.RESUMABLE_OVERRIDES and saved.to_dict()[k] != v}
            if changed:
                raise AlisError(f"--resume: {', '.join(sorted(changed))} differ from the saved run "
                                f"({self.out / STATE_NAME}); only {', '.join(TrainConfig.RESUMABLE_OVERRIDES)} "
                                "may change when resuming")
            saved_identity = state.get("data_identity", "")
            if saved_identity and self.data_identity and saved_identity != self.data_identity:
                msg = (f"--resume: {self.data_source or 'this data'} holds other frames than the run was trained on "
                       f"(data identity {self.data_identity}, the run's {saved_identity} from "
                       f"{state.get('data_source') or '?'})")
                if not force:
                    raise AlisError(f"{msg}; resume with the same data, or add --force to continue on this data")
                log.warning("%s; continuing on it (--force)", msg)
            if int(state["world_size"]) != self.info.world_size:
                raise AlisError(f"--resume: the run was trained with {state['world_size']} processes, this one has "
                                f"{self.info.world_size}; resume with the same number of processes")
            init = None
        self.cfg = cfg
        if cfg.batch % self.info.world_size:
            raise AlisError(f"batch {cfg.batch} is not divisible by the {self.info.world_size} processes")
        self.batch_gpu = cfg.batch // self.info.world_size
        group = min(cfg.mbstd_group_size, self.batch_gpu) if cfg.mbstd_group_size else self.batch_gpu
        if group and self.batch_gpu % group:
            raise AlisError(f"the batch per process ({self.batch_gpu}) must be a multiple of "
                            f"mbstd_group_size ({cfg.mbstd_group_size}); change --batch or --set mbstd_group_size=")
        if dataset.resolution != cfg.resolution:
            raise AlisError(f"the dataset holds {dataset.resolution} px frames but the model makes "
                            f"{cfg.resolution} px frames; prepare the data at {cfg.resolution} px")

        self.G, self.D = _build_models(cfg, init, self.device)
        self.G.train().requires_grad_(True)
        self.D.train().requires_grad_(True)
        self.G.fast = True  # NHWC activations, folded weights: same model, faster convolutions
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.autocast = _autocast_factory(cfg.dtype, self.device)
        self.loss = AlisLoss(self.G, self.D, cfg, self.device, self.autocast,
                             reduce_mean=lambda t: _all_reduce_mean(t, self.info))
        self.opt_G = self._optimizer(self.G, cfg.g_lr, cfg.betas, cfg.pl_interval if cfg.pl_weight > 0 else None)
        self.opt_D = self._optimizer(self.D, cfg.d_lr, cfg.betas, cfg.r1_interval if cfg.r1_gamma > 0 else None)
        use_scaler = cfg.dtype == "float16"
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=use_scaler)

        rank = self.info.rank  # latents, noise, left borders, mixing; which real frames, flips
        self.gen = torch.Generator().manual_seed(derive_seed(cfg.seed, f"latents/{rank}"))
        self.data_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, f"data/{rank}"))
        self.cur_nimg = 0
        self.step = 0
        self.time_total = 0.0
        self.acc: dict[str, list[float]] = {}
        self.tick_start_nimg = 0
        if state is not None:
            self._restore(state)
        elif self.info.active:
            self._broadcast_models()
        self.progress = ProgressBar(_nimg(cfg.kimg), enabled=progress and self.info.is_main)
        self._swd_ref: metrics.SWDReference | None = None

    # ---- setup

    @staticmethod
    def _optimizer(module: torch.nn.Module, lr: float, betas, reg_interval: int | None) -> torch.optim.Adam:
        ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0  # StyleGAN2 lazy regularisation
        return torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=tuple(b ** ratio for b in betas), eps=1e-8)

    def _broadcast_models(self) -> None:
        for m in (self.G, self.D, self.G_ema):
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, src=0)

    def _restore(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if state.get("scaler_G"):
            self.scaler_G.load_state_dict(state["scaler_G"])
            self.scaler_D.load_state_dict(state["scaler_D"])
        self.loss.pl_mean.copy_(state["pl_mean"])
        self.cur_nimg = int(state["cur_nimg"])
        self.step = int(state["step"])
        self.time_total = float(state["time_total"])
        self.tick_start_nimg = int(state["tick_start_nimg"])
        self.acc = {k: list(v) for k, v in state["acc"].items()}
        rng = state["rng"][self.info.rank]
        self.gen.set_state(rng["gen"])
        self.data_gen.set_state(rng["data"])
        log.info("resumed %s at kimg %.3f (step %d)", self.out, self.cur_nimg / 1000, self.step)

    # ---- the step

    def _phase(self, module, opt, scaler, loss_fn, gain: float, use_autocast_scaler: bool):
        """zero_grad -> loss * gain -> backward -> sync -> step, training only `module`."""
        others = self.D if module is self.G else self.G
        module.requires_grad_(True)
        others.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        loss, stats = loss_fn()
        scaled = loss * gain
        if use_autocast_scaler and scaler.is_enabled():
            scaler.scale(scaled).backward()
            scaler.unscale_(opt)
            _sync_grads(module, self.info, sanitize=False)
            scaler.step(opt)
            scaler.update()
        else:
            scaled.backward()
            _sync_grads(module, self.info, sanitize=True)
            opt.step()
        return stats

    def train_step(self) -> dict[str, float]:
        cfg, n = self.cfg, self.batch_gpu
        # ALIS: the frame's shift inside its window ramps up with training (official schedule uses whole kimg).
        strength = min((self.cur_nimg // 1000) / max(cfg.kimg_to_reach_max_shift_strength, 1e-8), 1.0)
        self.G.synthesis.max_shift_strength.fill_(strength)
        real = self.dataset.sample_batch(n, self.data_gen, flip=cfg.flip).to(self.device)
        stats: dict[str, float] = {}
        stats.update(self._phase(self.G, self.opt_G, self.scaler_G, lambda: self.loss.g_main(n, self.gen), 1.0, True))
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            stats.update(self._phase(self.G, self.opt_G, self.scaler_G, lambda: self.loss.g_pl(n, self.gen),
                                     float(cfg.pl_interval), False))
        stats.update(self._phase(self.D, self.opt_D, self.scaler_D, lambda: self.loss.d_main(real, self.gen), 1.0, True))
        if cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0:
            stats.update(self._phase(self.D, self.opt_D, self.scaler_D, lambda: self.loss.d_r1(real),
                                     float(cfg.r1_interval), False))
        self.G.requires_grad_(True)
        self.D.requires_grad_(True)
        if self.info.active:  # every process saw different z: average the tracked w_avg
            w_avg = self.G.mapping.w_avg
            w_avg.copy_(_all_reduce_mean(w_avg, self.info))
        stats["ema_beta"] = self._update_ema()
        self.cur_nimg += cfg.batch
        self.step += 1
        stats["shift_strength"] = strength
        return stats

    @torch.no_grad()
    def _update_ema(self) -> float:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        return beta

    # ---- outputs

    def _state(self) -> dict:
        rng = {"gen": self.gen.get_state(), "data": self.data_gen.get_state()}
        if self.info.active:
            gathered = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        return _to_cpu({
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict() if self.scaler_G.is_enabled() else {},
            "scaler_D": self.scaler_D.state_dict() if self.scaler_D.is_enabled() else {},
            "pl_mean": self.loss.pl_mean, "cur_nimg": self.cur_nimg, "step": self.step,
            "time_total": self.time_total, "tick_start_nimg": self.tick_start_nimg,
            "acc": {k: list(v) for k, v in self.acc.items()}, "rng": rngs, "world_size": self.info.world_size,
            "data_source": self.data_source, "data_identity": self.data_identity,
        })

    def save_state(self) -> None:
        state = self._state()  # every process takes part (RNG gather)
        if self.info.is_main:
            _atomic_torch_save(state, self.out / STATE_NAME)

    def save_snapshot(self) -> Path:
        meta = {"kimg": f"{self.cur_nimg / 1000:.3f}", "train_config": self.cfg.to_json()}
        path = self.out / f"network-snapshot-{self.cur_nimg // 1000:06d}.safetensors"
        alis_core.save_generator(self.G_ema, path, D=self.D, metadata=meta)
        alis_core.save_generator(self.G_ema, self.out / "latest.safetensors", D=self.D, metadata=meta)
        return path

    def save_final(self) -> Path:
        meta = {"kimg": f"{self.cur_nimg / 1000:.3f}", "train_config": self.cfg.to_json()}
        return alis_core.save_generator(self.G_ema, self.out / "final.safetensors", dtype=torch.float16, metadata=meta)

    @torch.no_grad()
    def save_samples(self) -> Path:
        cfg = self.cfg
        rows = [alis_core.panorama(self.G_ema, alis_core.sample_anchors(self.G_ema, max(2, cfg.sample_anchors), seed=s),
                                   wrap=True, noise_mode="none") for s in range(cfg.sample_rows)]
        img = torch.cat(rows, dim=1)  # [3, rows * H, K * spacing]
        path = self.out / f"samples-{self.cur_nimg // 1000:06d}.png"
        save_png(path, to_unit(img))
        return path

    def measure(self) -> dict[str, float]:
        if self._swd_ref is None:
            real = metrics.real_images(self.dataset, self.cfg.metric_num, seed=self.cfg.seed)
            self._swd_ref = metrics.SWDReference(real, seed=self.cfg.seed)
        ev = metrics.evaluate_generator(self.G_ema, self._swd_ref, seed=self.cfg.seed + 1)
        return {"swd": ev.swd, "swd_inf": ev.swd_inf, "swd_ratio": ev.ratio}

    def _write_stats(self, extra: dict[str, float]) -> None:
        record = {"kimg": round(self.cur_nimg / 1000, 6), "step": self.step}
        record.update({k: sum(v) / len(v) for k, v in sorted(self.acc.items()) if v})
        record.update(extra)
        if self.info.is_main:
            with open(self.out / STATS_NAME, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.acc = {}
        self.tick_start_nimg = self.cur_nimg

    # ---- the loop

    def run(self, on_step: Callable[["Trainer"], None] | None = None) -> TrainResult:
        cfg = self.cfg
        total = _nimg(cfg.kimg)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.resumed:
                dropped = trim_stats(self.out / STATS_NAME, self.step)
                if dropped:
                    log.info("stats.jsonl: dropped %d line(s) logged after the resumed state", dropped)
            else:
                removed = clear_outputs(self.out)
                if removed:
                    log.warning("replacing the run in %s (%s)", self.out, ", ".join(removed))
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.resumed = True  # a second run() on this trainer continues the run
        status = "done"
        tick_time = time.perf_counter()
        tick_steps = 0
        sec_per_kimg = 0.0
        with _StopFlag() as stop:
            while self.cur_nimg < total:
                t0 = time.perf_counter()
                prev = self.cur_nimg
                stats = self.train_step()
                self.time_total += time.perf_counter() - t0
                tick_steps += 1
                for k, v in stats.items():
                    self.acc.setdefault(k, []).append(v)
                done = self.cur_nimg >= total
                step_time = time.perf_counter() - t0
                sec_per_kimg = step_time / (cfg.batch / 1000) if sec_per_kimg == 0 else \
                    0.9 * sec_per_kimg + 0.1 * step_time / (cfg.batch / 1000)
                measure = bool(cfg.metric_num) and (_crossed(prev, self.cur_nimg, _nimg(cfg.metric_kimg)) or done)
                if _crossed(prev, self.cur_nimg, _nimg(cfg.tick_kimg)) or (done and self.acc) or measure:
                    elapsed = time.perf_counter() - tick_time
                    ticked = max(self.cur_nimg - self.tick_start_nimg, 1)
                    extra = {"sec_per_kimg": elapsed / (ticked / 1000), "sec_per_step": elapsed / max(tick_steps, 1),
                             "images_per_sec": ticked / max(elapsed, 1e-9), "time_total": self.time_total}
                    if self.device.type == "cuda":
                        extra["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
                    if measure:
                        extra.update(self.measure())
                    self._write_stats(extra)
                    self.progress.update(self.cur_nimg, sec_per_kimg, _fmt_losses(stats), force=True)
                    tick_time, tick_steps = time.perf_counter(), 0
                else:
                    self.progress.update(self.cur_nimg, sec_per_kimg, _fmt_losses(stats))
                if self.info.is_main and (_crossed(prev, self.cur_nimg, _nimg(cfg.sample_kimg)) or done):
                    self.save_samples()
                if _crossed(prev, self.cur_nimg, _nimg(cfg.snap_kimg)) or done:
                    if self.info.is_main:
                        self.save_snapshot()
                    self.save_state()
                if on_step is not None:
                    on_step(self)
                if self._stop_requested(stop.requested) and not done:
                    status = "interrupted"
                    self.save_state()
                    break
        if status == "done" and self.info.is_main:
            self.save_final()
        self.progress.close()
        return TrainResult(status, self.cur_nimg, self.step, self.out)

    def _stop_requested(self, local: bool) -> bool:
        if not self.info.active:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def _fmt_losses(stats: dict[str, float]) -> str:
    parts = [f"{k[5:] if k.startswith('loss_') else k} {stats[k]:.3f}" for k in ("loss_G", "loss_D") if k in stats]
    return "  ".join(parts)
