"""Checkpoints: one `.safetensors` file with G_ema (optionally D), the architecture as JSON metadata
and a format version. Loading is strict; every failure is one AlisError line naming the file."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import DiscriminatorConfig, GeneratorConfig
from .discriminator import Discriminator
from .errors import AlisError
from .generator import Generator
from .image import atomic_path, regular_file
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


def _named(path: Path, e: AlisError) -> AlisError:
    """The error with the file's name in front (config checks do not know the file)."""
    msg = str(e)
    return AlisError(msg if msg.startswith(str(path)) else f"{path}: {msg}")


def _check_names_and_shapes(expected: dict[str, tuple], shapes: dict[str, tuple], path: Path, what: str) -> None:
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(legacy.one_line(k, 80) for k in unexpected[:3])})")
        raise AlisError(f"{path}: {what} does not match its config: {'; '.join(parts)}")
    for k, shape in shapes.items():
        if tuple(shape) != tuple(expected[k]):
            raise AlisError(f"{path}: tensor {what}.{k} has shape {list(shape)}, "
                            f"the config implies {list(expected[k])}")


def _check_size(cfg: GeneratorConfig, shapes: dict[str, tuple], path: Path) -> None:
    """Before building the model: the file must hold about as many values as its config describes
    (a few bytes of metadata can describe gigabytes; num_parameters is an upper bound within 30%)."""
    held = sum(math.prod(s) for s in shapes.values())
    if 2 * held < cfg.num_parameters():
        raise AlisError(f"{path}: its config describes a generator of about {cfg.num_parameters() / 1e6:.1f} M values "
                        f"but the file holds {held / 1e6:.1f} M; it is truncated or its config was edited")


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    _check_names_and_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path, what)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise AlisError(f"{path}: tensor {what}.{k} holds NaN or infinite values; the checkpoint is damaged "
                            "(download or convert it again)")
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _safetensors_error(path: Path, e: Exception) -> AlisError:
    return AlisError(f"{path} is not a readable .safetensors checkpoint (truncated or corrupt?): "
                     f"{legacy.one_line(e) if str(e) else type(e).__name__}")


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple]]:
    """Metadata and tensor shapes of a .safetensors file; no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _safetensors_error(path, e) from None
    return meta, shapes


def _read_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, the prefix removed."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _safetensors_error(path, e) from None


def _resolve(path: str | Path | None) -> Path:
    if isinstance(path, str) and path:  # a model name (hub.is_path's rule) -> its cached file,
        from . import hub               # downloaded on first use unless ALIS_OFFLINE=1
        path = hub.resolve(path)
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
    regular_file(path, "checkpoint")  # a FIFO would block and a device never end
    return path


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return path.suffix.lower() == ".pkl" or (len(head) == 2 and head[0] == 0x80 and head[1] <= 5)


def _prefixed(shapes: dict[str, tuple], prefix: str) -> dict[str, tuple]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def load_official_pickle(path: str | Path, with_discriminator: bool = False):
    """Official snapshot pickle -> (G_ema, D or None), read with a restricted unpickler."""
    path = _resolve(path)
    cfg, state = legacy.load_official(path)
    _check_size(cfg, {k: tuple(v.shape) for k, v in state.items()}, path)
    G = Generator(cfg)
    _load_strict(G, state, path, "G")
    D = None
    if with_discriminator:  # a second read of the file: converting with D is a one-off
        dcfg, dstate = legacy.load_official(path, network="D")
        D = Discriminator(dcfg)
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
    Every value of the file's config is typed and bounded, and the file's tensor shapes checked
    against it, before the model is built or tensor data read.
    """
    path = _resolve(path)
    if _is_pickle(path):
        return _finish(load_official_pickle(path)[0], device, dtype, fast)
    meta, shapes = _read_header(path)
    g_shapes = _prefixed(shapes, "G.")
    if "init_kwargs" in meta:  # official tensor names with official constructor arguments
        cfg = legacy.official_config_from_json(meta["init_kwargs"], path)
        _check_size(cfg, g_shapes, path)
        state = legacy.official_state(cfg, _read_tensors(path, "G."), path)
        G = Generator(cfg)
        _load_strict(G, state, path, "G")
        return _finish(G, device, dtype, fast)
    if meta.get("format") != FORMAT_NAME:
        raise AlisError(f"{path} is a .safetensors file but not an ALIS checkpoint (no '{FORMAT_NAME}' metadata)")
    version = meta.get("format_version", "0") or "0"
    if not (version.isascii() and version.isdigit() and len(version) <= 6):
        raise AlisError(f"{path}: format_version must be a whole number, got {version[:20]!r}")
    if int(version) > FORMAT_VERSION:
        raise AlisError(f"{path} uses checkpoint format {version}; this alis reads up to {FORMAT_VERSION}: upgrade alis")
    cfg = _config_from_meta(meta, "generator_config", GeneratorConfig, path)
    _check_size(cfg, g_shapes, path)
    G = Generator(cfg)
    _check_names_and_shapes({k: tuple(v.shape) for k, v in G.state_dict().items()}, g_shapes, path, "G")
    _load_strict(G, _read_tensors(path, "G."), path, "G")
    return _finish(G, device, dtype, fast)


def _config_from_meta(meta: dict[str, str], key: str, cls, path: Path):
    if key not in meta:
        raise AlisError(f"{path}: missing {key} metadata; save the checkpoint again with alis")
    try:
        d = json.loads(meta[key])
    except (ValueError, RecursionError):
        raise AlisError(f"{path}: its {key} metadata is not valid JSON (or nested too deeply)") from None
    try:
        return cls.from_dict(d)
    except AlisError as e:
        raise _named(path, e) from None
    except TypeError as e:  # a required field missing
        raise AlisError(f"{path}: invalid {key} metadata ({legacy.one_line(e, 120)})") from None


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """Load D from one of our checkpoints (written with D) or an official snapshot pickle."""
    path = _resolve(path)
    if _is_pickle(path):
        return load_official_pickle(path, with_discriminator=True)[1].to(device)
    meta, shapes = _read_header(path)
    if "discriminator_config" not in meta:
        raise AlisError(f"{path} holds no discriminator; train from scratch or convert with --with-discriminator")
    D = Discriminator(_config_from_meta(meta, "discriminator_config", DiscriminatorConfig, path))
    _check_names_and_shapes({k: tuple(v.shape) for k, v in D.state_dict().items()}, _prefixed(shapes, "D."), path, "D")
    _load_strict(D, _read_tensors(path, "D."), path, "D")
    return D.to(device)


def convert_official(src: str | Path, dst: str | Path, with_discriminator: bool = False,
                     dtype: torch.dtype | None = None) -> Path:
    """Official snapshot .pkl -> our .safetensors (G_ema, optionally D)."""
    G, D = load_official_pickle(src, with_discriminator)
    return save_generator(G, dst, D=D, dtype=dtype, metadata={"converted_from": Path(src).name})
