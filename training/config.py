"""Training configuration: one dataclass (stored in every run's state) and named presets.

Every field can be overridden from the command line (`--set key=value`) or by explicit flags.
Hyper-parameters follow StyleGAN2(-ADA), which ALIS trains with: non-saturating logistic loss,
lazy R1 on D, lazy path-length regularisation on G, an EMA of G, Adam with betas (0, 0.99).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from alis_core import AlisError, DiscriminatorConfig, GeneratorConfig
from alis_core.config import config_from_dict
from alis_core.options import DTYPE_NAMES, MAX_SEED, NOISE_MODES

DTYPES = DTYPE_NAMES  # the trainer's compute dtypes are the library's

# Ranges of the numeric fields: (low, high, low end included). Upper bounds keep a typo from asking
# for terabytes or a run of centuries; the lhq1024 preset is far inside every one of them.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "resolution": (8, 4096), "z_dim": (1, 4096), "w_dim": (1, 4096), "mapping_layers": (1, 64),
    "channel_base": (1, 1 << 20), "channel_max": (1, 4096), "d_channel_base": (1, 1 << 20),
    "d_channel_max": (1, 4096), "grid_size": (1, 4), "mbstd_group_size": (0, 1024), "batch": (1, 1 << 16),
    "r1_interval": (1, 1 << 20), "pl_interval": (1, 1 << 20), "pl_batch_shrink": (1, 1 << 16),
    "metric_num": (0, 1 << 20), "sample_rows": (1, 64), "sample_anchors": (2, 64), "seed": (0, MAX_SEED),
}
_FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "w_coord_dist": (0.0, 64.0, False), "g_lr": (0.0, 10.0, False), "d_lr": (0.0, 10.0, False),
    "r1_gamma": (0.0, 1e6, True), "pl_weight": (0.0, 1e6, True), "pl_decay": (0.0, 1.0, True),
    "seam_weight": (0.0, 1e6, True), "style_mixing_prob": (0.0, 1.0, True), "ema_kimg": (0.0, 1e7, True),
    "ema_rampup": (0.0, 1.0, False), "kimg_to_reach_max_shift_strength": (0.0, 1e7, True),
    "kimg": (0.0, 1e7, False), "tick_kimg": (0.0, 1e7, True), "snap_kimg": (0.0, 1e7, True),
    "sample_kimg": (0.0, 1e7, True), "metric_kimg": (0.0, 1e7, True),
}
_OPTIONAL = ("d_channel_base", "d_channel_max", "ema_rampup")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Model fields build GeneratorConfig/DiscriminatorConfig."""

    # --- model (G and D); see alis_core.GeneratorConfig
    resolution: int = 64  # frame height = width, px
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384  # G channels per block: min(channel_base // res, channel_max)
    channel_max: int = 512
    d_channel_base: int | None = None  # None: same as G
    d_channel_max: int | None = None
    grid_size: int = 2  # patches per frame
    w_coord_dist: float = 4.0
    mbstd_group_size: int = 4
    g_kwargs: dict[str, Any] = field(default_factory=dict)  # other GeneratorConfig fields (e.g. from --init)
    d_kwargs: dict[str, Any] = field(default_factory=dict)  # other DiscriminatorConfig fields

    # --- objective
    batch: int = 8  # global batch (all processes together)
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    r1_interval: int = 16  # lazy regularisation: R1 every 16 D steps
    pl_weight: float = 2.0  # 0 disables path-length regularisation
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    # Not in the paper: penalise how much fake frames show their patches (loss.seam_discontinuity:
    # breaks at the boundaries, bands locked to patch positions; zero-padded patches draw lines
    # there until G learns to hide them). 0 is the paper's objective.
    seam_weight: float = 0.0
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0  # EMA half-life in thousands of images
    ema_rampup: float | None = None  # e.g. 0.05: half-life <= 5% of the images seen so far
    kimg_to_reach_max_shift_strength: float = 1.0  # ALIS: frames move inside their window after this
    flip: bool = True  # mirror real frames left-right with probability 1/2
    noise_mode: str = "random"

    # --- schedule and outputs
    kimg: float = 1000.0  # total length, thousands of images (fractions allowed)
    tick_kimg: float = 4.0  # one stats.jsonl line (and progress line without a TTY) per tick
    snap_kimg: float = 50.0  # release snapshot + resumable state
    sample_kimg: float = 50.0  # sample panoramas PNG
    metric_kimg: float = 0.0  # SWD / infinite SWD in stats.jsonl (0: only at the end of the run)
    metric_num: int = 256  # frames (and panorama crops) per SWD measurement; 0 disables metrics
    sample_rows: int = 4
    sample_anchors: int = 4
    seed: int = 0
    dtype: str = "float32"  # compute dtype: float32, bfloat16 (CPU/CUDA), float16 (CUDA)

    # Fields that may change when resuming; everything else must match the saved run.
    RESUMABLE_OVERRIDES = ("kimg", "tick_kimg", "snap_kimg", "sample_kimg", "metric_kimg", "metric_num",
                           "sample_rows", "sample_anchors", "dtype", "seam_weight")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse any field of the wrong type, NaN, infinite or out of range, naming it (one line)."""
        def bad(msg: str) -> AlisError:
            return AlisError(f"training config: {msg}")

        for name, (lo, hi) in _INT_RANGES.items():
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            if isinstance(v, float) and v.is_integer():  # JSON and --set may give 8.0 for 8
                v = int(v)
                setattr(self, name, v)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(f"{name} must be a whole number in [{lo}, {hi}], got {v!r}")
        for name, (lo, hi, closed) in _FLOAT_RANGES.items():
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and (lo <= v if closed else lo < v) and v <= hi
            if not ok:
                raise bad(f"{name} must be a finite number in {'[' if closed else '('}{lo:g}, {hi:g}], got {v!r}")
            setattr(self, name, float(v))
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):  # also False for NaN
            raise bad(f"betas must be two numbers in [0, 1), such as [0,0.99], got {self.betas!r}")
        self.betas = betas  # type: ignore[assignment]
        for name in ("flip",):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, cls in (("g_kwargs", GeneratorConfig), ("d_kwargs", DiscriminatorConfig)):
            if not isinstance(getattr(self, name), dict):
                raise bad(f"{name} must be a JSON object of generator/discriminator fields, got {getattr(self, name)!r}")
            _check_model_kwargs(name, getattr(self, name), cls)
        for name, choices in (("dtype", DTYPE_NAMES), ("noise_mode", NOISE_MODES)):
            if getattr(self, name) not in choices:
                raise bad(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.metric_num != 0 and self.metric_num < 8:
            raise bad(f"metric_num must be 0 (no metrics) or >= 8, got {self.metric_num}")
        for name in ("channel_base", "d_channel_base"):
            if (getattr(self, name) or self.channel_base) < self.resolution:
                raise bad(f"{name} must be at least the resolution ({self.resolution}) so that every block "
                          f"has channels, got {getattr(self, name)}")
        self.generator_config()  # architecture errors surface here, naming the bad value
        self.discriminator_config()

    def generator_config(self) -> GeneratorConfig:
        kw = dict(self.g_kwargs)
        kw.update(z_dim=self.z_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                  mapping_layers=self.mapping_layers, channel_base=self.channel_base,
                  channel_max=self.channel_max, grid_size=self.grid_size, w_coord_dist=self.w_coord_dist)
        try:
            return GeneratorConfig(**kw)
        except (TypeError, ValueError, AttributeError) as e:
            raise AlisError(f"training config: g_kwargs holds an unknown or malformed generator field ({e})") from None

    def discriminator_config(self) -> DiscriminatorConfig:
        kw = dict(self.d_kwargs)
        kw.update(img_resolution=self.resolution, channel_base=self.d_channel_base or self.channel_base,
                  channel_max=self.d_channel_max or self.channel_max, mbstd_group_size=self.mbstd_group_size)
        try:
            return DiscriminatorConfig(**kw)
        except (TypeError, ValueError, AttributeError) as e:
            raise AlisError(f"training config: d_kwargs holds an unknown or malformed discriminator field ({e})") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, d, "training config: unknown keys {}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def with_overrides(self, pairs: list[str]) -> "TrainConfig":
        """Apply `key=value` strings (values parsed as JSON, else kept as strings)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in fields:
                close = ", ".join(sorted(fields))
                raise AlisError(f"--set {pair!r}: expected key=value with a key among: {close}")
            changes[key] = parse_value(text.strip(), getattr(self, key), key)
        return self.replace(**changes)


def _check_model_kwargs(name: str, kw: dict[str, Any], cls) -> None:
    """Each value of g_kwargs/d_kwargs has the type of its GeneratorConfig/DiscriminatorConfig field
    and a sane value (whole numbers >= 1, finite numbers >= 0, RGB images), else one clear error."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}
    for key, v in kw.items():
        if key not in defaults:
            continue  # the config itself names unknown fields
        d = defaults[key]
        if key == "img_channels":
            ok = v == 3 and not isinstance(v, bool)  # the trainer's frames are RGB
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20
        elif isinstance(d, float) or key == "conv_clamp":
            ok = (v is None and key == "conv_clamp") or (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
        elif isinstance(d, dict):
            ok = isinstance(v, dict) and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096
                                             for x in v.values())
        else:
            ok = True
        if not ok:
            raise AlisError(f"training config: {name} {key}={v!r} is not a valid value for that field")


def parse_value(text: str, current: Any, key: str) -> Any:
    """Parse one `--set` value, checking it against the type of the current value."""
    if text.lower() in ("none", "null"):
        return None
    try:
        value = json.loads(text.replace("(", "[").replace(")", "]"))
    except json.JSONDecodeError:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        value = text
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise AlisError(f"--set {key}={text}: expected true or false")
    elif isinstance(current, (int, float)) and not isinstance(current, bool):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise AlisError(f"--set {key}={text}: expected a number")
        if not math.isfinite(value):
            raise AlisError(f"--set {key}={text}: expected a finite number")
        if isinstance(current, int) and key not in ("ema_rampup",) and float(value) != int(value):
            raise AlisError(f"--set {key}={text}: expected a whole number")
        value = type(current)(value) if current is not None else value
    elif isinstance(current, tuple) and not isinstance(value, list):
        raise AlisError(f"--set {key}={text}: expected a list such as [0,0.99]")
    return value


# Presets. lhq256 follows StyleGAN2-ADA's `paper256` configuration (the one ALIS trains LHQ 256 with:
# half the feature maps, batch 64, gamma 1, EMA 20 kimg, minibatch-std groups of 8); lhq1024 has the
# geometry of the released LHQ 1024 checkpoint with StyleGAN2's 1024 hyper-parameters.
PRESETS: dict[str, dict[str, Any]] = {
    # Trains visibly on 2 CPU cores in minutes.
    "tiny": dict(resolution=32, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=128,
                 batch=8, r1_gamma=0.1, pl_weight=0.0, ema_kimg=0.5, ema_rampup=0.05,
                 kimg=10.0, tick_kimg=0.256, snap_kimg=2.0, sample_kimg=1.0, metric_kimg=2.0,
                 metric_num=256),
    # The project's bundled default model: 128 px frames, small enough to train on a CPU.
    "default128": dict(resolution=128, z_dim=128, w_dim=128, mapping_layers=4, channel_base=4096,
                       channel_max=128, batch=16, r1_gamma=0.4, pl_weight=2.0, ema_kimg=5.0, ema_rampup=0.05,
                       kimg=2000.0, tick_kimg=1.0, snap_kimg=20.0, sample_kimg=10.0, metric_kimg=20.0,
                       metric_num=512),
    "lhq256": dict(resolution=256, z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512,
                   batch=64, mbstd_group_size=8, g_lr=0.0025, d_lr=0.0025, r1_gamma=1.0, pl_weight=2.0,
                   ema_kimg=20.0, ema_rampup=None, kimg=25000.0, tick_kimg=4.0, snap_kimg=200.0,
                   sample_kimg=200.0, metric_kimg=200.0, metric_num=2048),
    "lhq1024": dict(resolution=1024, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768,
                    channel_max=512, batch=32, mbstd_group_size=4, g_lr=0.002, d_lr=0.002, r1_gamma=10.0,
                    pl_weight=2.0, ema_kimg=10.0, ema_rampup=None, kimg=25000.0, tick_kimg=4.0,
                    snap_kimg=200.0, sample_kimg=200.0, metric_kimg=200.0, metric_num=2048),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with optional field overrides."""
    if name not in PRESETS:
        raise AlisError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})
