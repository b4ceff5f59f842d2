"""Architecture configs as dataclasses; they are stored as JSON in every checkpoint."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import AlisError

# Fourier coordinate features per block resolution, as in the paper's LHQ configs (ALIS Sec. 3.3).
DEFAULT_COORD_DIMS = {"8": 32, "16": 32, "32": 64, "64": 128, "128": 128, "256": 64, "512": 64, "1024": 64}


def config_from_dict(cls, d: dict[str, Any], unknown_message: str):
    """Build dataclass `cls` from a dict, refusing unknown keys with `unknown_message.format(keys)`."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
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
        self.coord_dims = {str(k): int(v) for k, v in self.coord_dims.items()}
        self.validate()

    def validate(self) -> None:
        res = self.img_resolution
        if res < 8 or res & (res - 1):
            raise AlisError(f"img_resolution must be a power of two >= 8, got {res}")
        if self.grid_size < 1 or 4 % self.grid_size:
            raise AlisError(f"grid_size must divide 4 (the 4x4 input), got {self.grid_size}")
        for r in self.block_resolutions[1:]:
            if str(r) not in self.coord_dims:
                raise AlisError(f"coord_dims has no entry for resolution {r}")
        if (0.5 * self.w_coord_dist * self.grid_size) % 1:
            raise AlisError(f"0.5 * w_coord_dist * grid_size must be whole (patches per anchor interval), "
                            f"got w_coord_dist={self.w_coord_dist}, grid_size={self.grid_size}")

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

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiscriminatorConfig":
        return config_from_dict(cls, d, "unsupported discriminator config keys {}")
