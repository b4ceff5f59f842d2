"""Architecture configs as dataclasses; they are stored as JSON in every checkpoint."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import AlisError

# Fourier coordinate features per block resolution, as in the paper's LHQ configs (ALIS Sec. 3.3).
DEFAULT_COORD_DIMS = {"8": 32, "16": 32, "32": 64, "64": 128, "128": 128, "256": 64, "512": 64, "1024": 64}


# Bounds on every architecture value, checked before any tensor is built: a checkpoint's metadata
# is a few bytes, the model it describes is not (w_dim = 12000 alone means gigabytes). They admit
# the official LHQ 1024 model (z_dim = w_dim = 512, img_resolution 1024, channel_base 32768,
# channel_max 512, 8 mapping layers, coordinate dims up to 256: 34 M parameters) with room
# to spare; MAX_PARAMETERS bounds what the combination of them builds (~6x LHQ 1024, 800 MB).
INT_BOUNDS = {"z_dim": (1, 4096), "w_dim": (1, 4096), "img_resolution": (4, 4096), "img_channels": (1, 4),
              "mapping_layers": (1, 32), "channel_base": (1, 1 << 20), "channel_max": (1, 2048),
              "grid_size": (1, 4), "coord_dim": (1, 1024),
              "mbstd_group_size": (0, 256), "mbstd_num_channels": (0, 64)}
FLOAT_BOUNDS = {"mapping_lr_multiplier": (1e-6, 100.0), "w_avg_beta": (0.0, 1.0), "conv_clamp": (1e-6, 1e6),
                "w_coord_dist": (1e-6, 64.0), "w_lerp_multiplier": (-1e3, 1e3)}
MAX_PARAMETERS = 200_000_000


def _check_int(what: str, key: str, v: Any, bounds: str | None = None) -> int:
    lo, hi = INT_BOUNDS[bounds or key]
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)  # 512.0 from a hand-edited JSON file means 512
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise AlisError(f"{what} {key} must be an integer in [{lo}, {hi}], got {_show(v)}")
    return v


def _check_float(what: str, key: str, v: Any, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    lo, hi = FLOAT_BOUNDS[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:  # NaN fails too
        none = " or null" if optional else ""
        raise AlisError(f"{what} {key} must be a number in [{lo:g}, {hi:g}]{none}, got {_show(v)}")
    return float(v)


def _check_bool(what: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise AlisError(f"{what} {key} must be true or false, got {_show(v)}")
    return v


def _show(v: Any) -> str:
    """A short, one-line description of a (possibly huge or nested) bad value."""
    if isinstance(v, (dict, list, tuple)):
        return f"a {type(v).__name__} of {len(v)} items"
    text = repr(v)
    return (text[:40] + "...") if len(text) > 40 else text


def config_from_dict(cls, d: dict[str, Any], unknown_message: str):
    """Build dataclass `cls` from a dict, refusing unknown keys with `unknown_message.format(keys)`."""
    if not isinstance(d, dict):
        raise AlisError(f"{cls.__name__} must be a JSON object, got {_show(d)}")
    unknown = sorted(str(k)[:40] for k in set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise AlisError(unknown_message.format(unknown))
    return cls(**d)


@dataclass
class GeneratorConfig:
    """The ALIS generator's architecture. Field names follow StyleGAN2's vocabulary."""

    z_dim: int = 512
    w_dim: int = 512
    img_resolution: int = 256  # frame height H = frame width; a frame is `grid_size` patches
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995
    channel_base: int = 16384
    channel_max: int = 512
    conv_clamp: float | None = 256.0
    grid_size: int = 2  # patches per frame
    w_coord_dist: float = 4.0  # anchor spacing, in half-frames: anchors sit 0.5 * w_coord_dist frames apart
    w_lerp_multiplier: float = 1.0
    coord_dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COORD_DIMS))
    coord_use_diagonal: bool = True
    coord_use_cosine: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Type and bound every value (a wrong one is one AlisError naming its key), normalising
        integral floats to ints; then the combination's size (MAX_PARAMETERS)."""
        what = "generator config"
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in INT_BOUNDS:
                setattr(self, f.name, _check_int(what, f.name, v))
            elif f.name in FLOAT_BOUNDS:
                setattr(self, f.name, _check_float(what, f.name, v, optional=f.name == "conv_clamp"))
            elif f.type in (bool, "bool"):
                _check_bool(what, f.name, v)
        if not isinstance(self.coord_dims, dict) or len(self.coord_dims) > 16:
            raise AlisError(f"{what} coord_dims must be an object of at most 16 resolution: dim entries, "
                            f"got {_show(self.coord_dims)}")
        dims = {}
        for k, v in self.coord_dims.items():
            key = str(k)
            if isinstance(k, bool) or not (key.isascii() and key.isdigit() and len(key) <= 5):
                raise AlisError(f"{what} coord_dims keys must be resolutions, got {_show(k)}")
            dims[str(int(key))] = _check_int(what, f"coord_dims[{key}]", v, bounds="coord_dim")
        self.coord_dims = dims
        res = self.img_resolution
        if res < 8 or res & (res - 1):
            raise AlisError(f"{what} img_resolution must be a power of two >= 8, got {res}")
        if 4 % self.grid_size:
            raise AlisError(f"{what} grid_size must divide 4 (the 4x4 input), got {self.grid_size}")
        for r in self.block_resolutions[1:]:
            if str(r) not in self.coord_dims:
                raise AlisError(f"{what} coord_dims has no entry for resolution {r}")
            least = 2 * (math.ceil(math.log2(r)) - 1)  # horizontal and vertical octaves (layers.logarithmic_basis)
            if self.coord_dims[str(r)] < least:
                raise AlisError(f"{what} coord_dims[{r}] must be at least {least}, got {self.coord_dims[str(r)]}")
        if (0.5 * self.w_coord_dist * self.grid_size) % 1:
            raise AlisError(f"{what}: 0.5 * w_coord_dist * grid_size must be whole (patches per anchor interval), "
                            f"got w_coord_dist={self.w_coord_dist}, grid_size={self.grid_size}")
        if self.num_parameters() > MAX_PARAMETERS:
            raise AlisError(f"{what} describes a model of about {self.num_parameters() / 1e6:.0f} M parameters, "
                            f"more than the {MAX_PARAMETERS / 1e6:.0f} M this alis builds")

    def num_parameters(self) -> int:
        """Parameters and buffers of the generator this config builds: an upper bound (coordinate
        features counted at their dims' maximum; within 30% for real configs), known before building."""
        w = self.w_dim
        n = self.z_dim * w + (self.mapping_layers - 1) * w * w + self.mapping_layers * w + w
        for res in self.block_resolutions:
            c = self.channels(res)
            if res == 4:
                c_in = c + 2 * 4 * 2  # the input column's channels ++ at most 4 directions x 2 octaves x sin/cos
                n += c * 4 + w * c + c
            else:
                c_in = c
                c0 = self.channels(res // 2) + 2 * self.coord_dims[str(res)]
                n += 9 * c0 * c + w * c0 + c0 + 2 * c + res * res
            n += 9 * c_in * c + w * c_in + c_in + 2 * c + res * res  # conv1 (+ affine, noise)
            n += self.img_channels * c + w * c + c + self.img_channels  # toRGB
        return n

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.img_resolution.bit_length())]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        # b4: input, conv1, torgb; later blocks share their first w with the previous toRGB.
        return 2 * len(self.block_resolutions) + 1

    @property
    def patch_width(self) -> int:
        return self.img_resolution // self.grid_size

    @property
    def anchor_spacing(self) -> int:
        """Pixels between two consecutive anchors (the width of one anchor interval)."""
        return int(0.5 * self.w_coord_dist * self.img_resolution)

    @property
    def patches_per_interval(self) -> int:
        return int(0.5 * self.w_coord_dist * self.grid_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        return config_from_dict(cls, d, "unsupported generator config keys {}; this checkpoint needs a newer alis")

    @classmethod
    def tiny(cls, **overrides: Any) -> "GeneratorConfig":
        """A small 64px model for tests and demos (the shape of the official fixture)."""
        kw: dict[str, Any] = dict(z_dim=64, w_dim=64, img_resolution=64, mapping_layers=2,
                                  channel_base=1024, channel_max=128)
        kw.update(overrides)
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class DiscriminatorConfig:
    """StyleGAN2's residual discriminator, applied by ALIS to whole frames."""

    img_resolution: int = 256
    img_channels: int = 3
    channel_base: int = 16384
    channel_max: int = 512
    conv_clamp: float | None = 256.0
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1

    def __post_init__(self) -> None:
        what = "discriminator config"
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in INT_BOUNDS:
                setattr(self, f.name, _check_int(what, f.name, v))
            else:
                setattr(self, f.name, _check_float(what, f.name, v, optional=f.name == "conv_clamp"))
        res = self.img_resolution
        if res & (res - 1):
            raise AlisError(f"{what} img_resolution must be a power of two, got {res}")
        c = self.channels(4)
        if 9 * c * c * (len(range(2, res.bit_length() - 1)) + 1) + 16 * c * c > MAX_PARAMETERS:
            raise AlisError(f"{what} describes a discriminator larger than this alis builds")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiscriminatorConfig":
        return config_from_dict(cls, d, "unsupported discriminator config keys {}")
