"""Anchor sequences: the latent codes placed along the panorama, one per anchor interval border.

Anchors are plain w tensors [K, w_dim]; joining two sequences ("scene A, then scene B") is torch.cat.
Latents z are always drawn on the CPU from a seeded torch.Generator, so a seed gives the same
anchors on every device.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .errors import AlisError
from .options import MAX_ANCHORS, check_psi


def sample_latents(z_dim: int, num: int, seed: int) -> Tensor:
    """z [num, z_dim] ~ N(0, I) from one seed, drawn on the CPU."""
    try:
        g = torch.Generator("cpu").manual_seed(int(seed))
    except (RuntimeError, OverflowError, TypeError, ValueError):  # torch takes 64-bit seeds only
        raise AlisError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}") from None
    return torch.randn([num, z_dim], generator=g)


@torch.no_grad()
def latents_to_anchors(G, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
    """z [K, z_dim] -> anchors w [K, w_dim] (CPU float32)."""
    psi = check_psi(truncation_psi)
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise AlisError(f"latents must be [K, {G.z_dim}], got {list(z.shape)}")
    return G.map(z.to(G.device), truncation_psi=psi).float().cpu()


def sample_anchors(G, num_anchors: int, seed: int, truncation_psi: float = 1.0) -> Tensor:
    """K anchors from one seed: [K, w_dim]."""
    if not 1 <= int(num_anchors) <= MAX_ANCHORS:
        raise AlisError(f"the number of anchors must be within 1..{MAX_ANCHORS}, got {num_anchors}")
    return latents_to_anchors(G, sample_latents(G.z_dim, int(num_anchors), seed), truncation_psi)


def anchors_from_seeds(G, seeds: Sequence[int], truncation_psi: float = 1.0) -> Tensor:
    """One anchor per seed, in order ("scene 12, then 7, then 99"): [len(seeds), w_dim]."""
    if len(seeds) == 0:
        raise AlisError("the seed list is empty; give at least one seed, e.g. --seeds 12,7,99")
    if len(seeds) > MAX_ANCHORS:
        raise AlisError(f"the seed list holds {len(seeds)} seeds, more than {MAX_ANCHORS} anchors")
    z = torch.cat([sample_latents(G.z_dim, 1, s) for s in seeds])
    return latents_to_anchors(G, z, truncation_psi)


def parse_seed_list(text: str) -> list[int]:
    """'12, 7,99' -> [12, 7, 99]; a clear error names the bad entry."""
    seeds = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            seeds.append(int(part))
        except ValueError:
            raise AlisError(f"seed list entry {part!r} is not an integer; write seeds like 12,7,99") from None
    if not seeds:
        raise AlisError(f"seed list {text!r} holds no seeds; write seeds like 12,7,99")
    return seeds


ANCHORS_FORMAT = "alis-anchors"


def save_anchors(path, anchors: Tensor, G, info: dict | None = None, force: bool = False):
    """Write anchors [K, w_dim] to a .safetensors file with the model's config (checked on load)
    and `info` (JSON: e.g. the photo's columns and PSNR). Atomic; refuses to replace a file that
    is not an anchors file unless `force`. -> the Path written."""
    import json

    from safetensors.torch import save_file

    from .image import atomic_path
    from .outputs import check_replaceable
    if not isinstance(anchors, Tensor) or anchors.ndim != 2 or anchors.shape[1] != G.w_dim:
        raise AlisError(f"anchors must be [K, {G.w_dim}] w codes of this model, got "
                        f"{list(anchors.shape) if isinstance(anchors, Tensor) else type(anchors).__name__}")
    path = check_replaceable(path, "anchors", force, "anchors file")
    meta = {"format": ANCHORS_FORMAT, "format_version": "1", "generator_config": G.config.to_json(),
            "alis_output": "anchors", "info": json.dumps(info or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({"anchors": anchors.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    return path


def load_anchors(path, G=None) -> tuple[Tensor, dict]:
    """Read an anchors file -> (anchors [K, w_dim] CPU float32, its info dict). With G, refuses
    (one clear line) a file made for a model of another architecture."""
    import json
    from pathlib import Path

    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise AlisError(f"anchors file {path} is not a file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != ANCHORS_FORMAT:
                raise AlisError(f"{path} is not an anchors file (write one with `alis invert PHOTO --out {path.name}`)")
            if int(meta.get("format_version", "0")) > 1:
                raise AlisError(f"anchors file {path} has a newer format version; update alis")
            w = f.get_tensor("anchors")
            config = json.loads(meta.get("generator_config", "{}"))
            info = json.loads(meta.get("info", "{}"))
    except AlisError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise AlisError(f"cannot read anchors file {path}: {str(e).splitlines()[0][:160]}") from None
    if w.ndim != 2 or w.shape[0] < 1:
        raise AlisError(f"anchors file {path} holds a tensor of shape {list(w.shape)}, not [K, w_dim]")
    if G is not None and config != G.config.to_dict():
        ours = json.loads(G.config.to_json())
        diff = sorted(k for k in set(config) | set(ours) if config.get(k) != ours.get(k))
        raise AlisError(f"anchors file {path} was made for another model (its config differs in "
                        f"{', '.join(diff[:4])}); invert the photo again with this checkpoint")
    return w.float(), info
