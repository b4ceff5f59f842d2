"""Checkpoints: one `.safetensors` file with G_ema (optionally D), the architecture as JSON metadata
and a format version. Loading is strict; every failure is one AlisError line naming the file."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import DiscriminatorConfig, GeneratorConfig
from .discriminator import Discriminator
from .errors import AlisError
from .generator import Generator
from .image import atomic_path
from . import legacy

log = logging.getLogger(__name__)

FORMAT_NAME = "alis-panoramas"
FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "models" / "default.safetensors"


def _export(module: torch.nn.Module, prefix: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[prefix + k] = v.contiguous().clone()
    return out


def save_generator(G: Generator, path: str | Path, D: Discriminator | None = None,
                   dtype: torch.dtype | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write G (and optionally D) to `path` atomically. dtype=torch.float16 halves the file size."""
    path = Path(path)
    tensors = _export(G, "G.", dtype)
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
            "generator_config": G.config.to_json()}
    if D is not None:
        tensors.update(_export(D, "D.", dtype))
        meta["discriminator_config"] = json.dumps(D.config.to_dict(), sort_keys=True)
    meta.update(metadata or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates its files private (0600)
    return path


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
        raise AlisError(f"{path}: {what} does not match its config: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise AlisError(f"{path}: tensor {what}.{k} has shape {list(v.shape)}, "
                            f"the config implies {list(expected[k].shape)}")
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AlisError(f"{path} is not a readable .safetensors checkpoint (truncated or corrupt?): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return meta, tensors


def _resolve(path: str | Path | None) -> Path:
    if path is None or str(path) == "":
        path = DEFAULT_CHECKPOINT
        if not path.is_file():
            raise AlisError(f"the bundled default checkpoint {path.name} is missing from this install; "
                            "pass --checkpoint FILE (e.g. a converted official LHQ checkpoint)")
    path = Path(path).expanduser()
    if not path.exists():
        raise AlisError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise AlisError(f"checkpoint {path} is a folder; pass a .safetensors or official .pkl file")
    return path


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return path.suffix.lower() == ".pkl" or (len(head) == 2 and head[0] == 0x80 and head[1] <= 5)


def _generator_from_official_tensors(init_kwargs: dict, tensors: dict[str, torch.Tensor], path: Path) -> Generator:
    cfg = legacy.generator_config_from_official(init_kwargs, path)
    G = Generator(cfg)
    state, derived = legacy.generator_state_from_official(tensors)
    _load_strict(G, state, path, "G")
    legacy.check_derived_buffers(G, derived, path)
    return G


def load_official_pickle(path: str | Path, with_discriminator: bool = False):
    """Official snapshot pickle -> (G_ema, D or None), read with a restricted unpickler."""
    path = _resolve(path)
    snap = legacy.read_official_pickle(path)
    rec = snap["G_ema"]
    G = _generator_from_official_tensors(legacy.official_init_kwargs(rec), rec.tensors(), path)
    D = None
    if with_discriminator:
        drec = snap.get("D")
        if not isinstance(drec, legacy.PersistentRecord):
            raise AlisError(f"{path} holds no discriminator (D is None); convert without --with-discriminator")
        dcfg = legacy.discriminator_config_from_official(legacy.official_init_kwargs(drec), path)
        D = Discriminator(dcfg)
        dstate = {k: v for k, v in drec.tensors().items() if not k.endswith("resample_filter")}
        _load_strict(D, dstate, path, "D")
    return G, D


def _finish(G: Generator, device, dtype, fast: bool) -> Generator:
    G = G.eval().requires_grad_(False).to(device)
    G.compute_dtype = dtype
    G.fast = fast
    return G


def load_generator(path: str | Path | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, fast: bool = False) -> Generator:
    """Load G_ema from our .safetensors, an official .pkl snapshot, or (path=None) the bundled default.

    `dtype` is the compute dtype (float32, bfloat16 or float16); weights are kept in float32.
    `fast` trades the official order of float32 operations (parity to 1e-4) for speed
    (about 1e-6 relative difference); reduced dtypes are always fast.
    """
    path = _resolve(path)
    if _is_pickle(path):
        return _finish(load_official_pickle(path)[0], device, dtype, fast)
    meta, tensors = _read_safetensors(path)
    if "init_kwargs" in meta:  # official tensor names with official constructor arguments
        try:
            init_kwargs = json.loads(meta["init_kwargs"])
        except json.JSONDecodeError:
            raise AlisError(f"{path}: its init_kwargs metadata is not valid JSON") from None
        init_kwargs["synthesis_cfg"] = legacy._resolve_interpolations(init_kwargs.get("synthesis_cfg", {}))
        g_tensors = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
        return _finish(_generator_from_official_tensors(init_kwargs, g_tensors, path), device, dtype, fast)
    if meta.get("format") != FORMAT_NAME:
        raise AlisError(f"{path} is a .safetensors file but not an ALIS checkpoint (no '{FORMAT_NAME}' metadata)")
    version = int(meta.get("format_version", "0") or 0)
    if version > FORMAT_VERSION:
        raise AlisError(f"{path} uses checkpoint format {version}; this alis reads up to {FORMAT_VERSION}: upgrade alis")
    try:
        cfg = GeneratorConfig.from_dict(json.loads(meta["generator_config"]))
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise AlisError(f"{path}: missing or invalid generator_config metadata ({e})") from None
    G = Generator(cfg)
    _load_strict(G, {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}, path, "G")
    return _finish(G, device, dtype, fast)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """Load D from one of our checkpoints (written with D) or an official snapshot pickle."""
    path = _resolve(path)
    if _is_pickle(path):
        return load_official_pickle(path, with_discriminator=True)[1].to(device)
    meta, tensors = _read_safetensors(path)
    if "discriminator_config" not in meta:
        raise AlisError(f"{path} holds no discriminator; train from scratch or convert with --with-discriminator")
    D = Discriminator(DiscriminatorConfig.from_dict(json.loads(meta["discriminator_config"])))
    _load_strict(D, {k[2:]: v for k, v in tensors.items() if k.startswith("D.")}, path, "D")
    return D.to(device)


def convert_official(src: str | Path, dst: str | Path, with_discriminator: bool = False,
                     dtype: torch.dtype | None = None) -> Path:
    """Official snapshot .pkl -> our .safetensors (G_ema, optionally D)."""
    G, D = load_official_pickle(src, with_discriminator)
    return save_generator(G, dst, D=D, dtype=dtype, metadata={"converted_from": Path(src).name})
