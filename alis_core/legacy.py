"""Safe import of official ALIS checkpoints (StyleGAN2-ADA style `network-snapshot-*.pkl`).

The official pickles rebuild modules through `torch_utils.persistence`, whose records carry the
module's Python source. We never run it: a restricted unpickler resolves only an allowlist of
tensor-rebuild functions and inert containers, and turns every persistent-module record into a
plain `PersistentRecord` holding the class name, constructor arguments and tensors.
"""
from __future__ import annotations

import collections
import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DiscriminatorConfig, GeneratorConfig
from .errors import AlisError

log = logging.getLogger(__name__)


class PersistentRecord:
    """Stands in for an official module: its class name, init arguments and state, nothing run."""

    def __init__(self, meta: Any = None):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = str(meta.get("class_name", "?"))
        self.state = meta.get("state", {}) or {}
        state = self.state if isinstance(self.state, dict) else {}
        self.init_args = state.get("_init_args", meta.get("init_args", ())) or ()
        self.init_kwargs = dict(state.get("_init_kwargs", meta.get("init_kwargs", {})) or {})

    def __setstate__(self, state):  # plain objects pickled without persistence
        self.state = state

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flatten parameters and buffers of this record and its children, like state_dict()."""
        out: dict[str, torch.Tensor] = {}
        state = self.state if isinstance(self.state, dict) else {}
        for key in ("_parameters", "_buffers"):
            for name, t in (state.get(key) or {}).items():
                if isinstance(t, torch.Tensor):
                    out[prefix + name] = t
        for name, child in (state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(prefix + name + "."))
        return out


class _Inert(dict):
    """Any allowlisted plain container class (EasyDict, omegaconf nodes) becomes an inert dict."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_python(self):
        state = getattr(self, "state", None)
        return _to_python(state if state is not None else dict(self))


def _reconstruct_persistent_obj(meta):
    return PersistentRecord(meta)


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    return data


def _load_from_bytes(b: bytes):
    # torch.storage._load_from_bytes calls torch.load; weights_only forbids any code execution.
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def _scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0].item() if isinstance(data, bytes) else data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("typing", "Any"): None,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "dtype"): np.dtype,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}
_ALLOWED.update({("torch", name): getattr(torch, name) for name in (
    "FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "IntStorage", "BoolStorage", "ByteStorage",
    "BFloat16Storage")})
_INERT_MODULES = ("dnnlib.util", "omegaconf.dictconfig", "omegaconf.listconfig", "omegaconf.nodes",
                  "omegaconf.base", "omegaconf.basecontainer", "omegaconf")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in _INERT_MODULES or module.startswith("omegaconf."):
            return _Inert
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a tensor or a plain container")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("unexpected persistent id in an official snapshot")


def _to_python(obj: Any) -> Any:
    """Unwrap inert containers (EasyDict, omegaconf) into dicts/lists/scalars."""
    if isinstance(obj, _Inert):
        return obj.to_python()
    if isinstance(obj, PersistentRecord):
        return obj
    if isinstance(obj, dict):
        # omegaconf DictConfig state keeps its items under '_content'
        if "_content" in obj and isinstance(obj.get("_content"), (dict, list)):
            return _to_python(obj["_content"])
        if "_val" in obj and "_metadata" in obj:
            return _to_python(obj["_val"])
        return {str(_to_python(k)): _to_python(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_python(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def read_official_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an official snapshot without executing anything it names."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AlisError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        raise AlisError(f"{path} is a torch.save zip, not an official ALIS snapshot pickle")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise AlisError(f"{path}: {e}") from None
    except Exception as e:  # truncated or corrupt data raises many exception types
        raise AlisError(f"{path} is not a readable official ALIS snapshot ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("G_ema"), PersistentRecord):
        raise AlisError(f"{path} holds no G_ema network; is it an official ALIS network-snapshot pickle?")
    return obj


# ---------------------------------------------------------------------------------------------
# Official constructor arguments -> our configs

def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise AlisError(f"{path}: unsupported official option: {what}")


def generator_config_from_official(kwargs: dict[str, Any], path: Path = Path("?")) -> GeneratorConfig:
    kw = _to_python(kwargs)
    syn = kw.get("synthesis_kwargs", {}) or {}
    mapk = kw.get("mapping_kwargs", {}) or {}
    cfg = kw.get("synthesis_cfg", {}) or {}
    get = lambda d, *keys, default=None: _dig(d, keys, default)  # noqa: E731
    _require(int(kw.get("c_dim", 0)) == 0, path, "c_dim > 0 (conditional models)")
    _require(get(cfg, "patchwise", "enabled", default=False), path, "patchwise.enabled = false")
    _require(get(cfg, "input", "type") == "grid", path, f"input.type = {get(cfg, 'input', 'type')!r} (only 'grid')")
    _require(int(get(cfg, "input", "resolution", default=4)) == 4, path, "input.resolution != 4")
    _require(not get(cfg, "fmm", "enabled", default=False), path, "fmm.enabled")
    _require(int(get(cfg, "num_modes", default=1)) == 1, path, "num_modes > 1")
    _require(get(cfg, "style", "is_spatial", default=True), path, "style.is_spatial = false")
    _require(not get(cfg, "style", "fallback_to_mean", default=False), path, "style.fallback_to_mean")
    _require(not get(cfg, "patchwise", "instance_norm", default=False), path, "patchwise.instance_norm")
    _require(not get(cfg, "force_zero_padding", default=False), path, "force_zero_padding")
    _require(get(cfg, "upsampling_mode") in (None, "null"), path, f"upsampling_mode = {get(cfg, 'upsampling_mode')!r}")
    coords = get(cfg, "coords", default={}) or {}
    _require(coords.get("enabled", True), path, "coords.enabled = false")
    _require(coords.get("logarithmic", True), path, "coords.logarithmic = false")
    _require(not coords.get("fallback", False), path, "coords.fallback")
    _require(not coords.get("no_fourier_fallback", False), path, "coords.no_fourier_fallback")
    _require(not coords.get("use_cips_embs", False), path, "coords.use_cips_embs")
    _require(not get(coords, "growth_schedule", "enabled", default=False), path, "coords.growth_schedule")
    _require(coords.get("remove_lowest_freq", True), path, "coords.remove_lowest_freq = false")
    _require(int(coords.get("kernel_size", 3)) == 3, path, "coords.kernel_size != 3")
    _require(int(coords.get("coord_dim", 2)) == 2, path, "coords.coord_dim != 2")
    _require(syn.get("architecture", "skip") == "skip", path, f"architecture = {syn.get('architecture')!r}")
    _require(mapk.get("activation", "lrelu") == "lrelu", path, "mapping activation other than lrelu")
    _require(mapk.get("h_dim") in (None, kw.get("w_dim")), path, "mapping h_dim != w_dim")
    chd = coords.get("channels_dict", {}) or {}
    diag = {bool(v.get("use_diagonal", True)) for v in chd.values()}
    cos = {bool(v.get("use_cosine", True)) for v in chd.values()}
    _require(len(diag) <= 1 and len(cos) <= 1, path, "per-resolution use_diagonal/use_cosine differ")
    wcd = float(get(cfg, "patchwise", "w_coord_dist", default=4))
    try:
        return GeneratorConfig(
            z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]), img_resolution=int(kw["img_resolution"]),
            img_channels=int(kw.get("img_channels", 3)),
            mapping_layers=int(mapk.get("num_layers", 8)),
            mapping_lr_multiplier=float(mapk.get("lr_multiplier", 0.01)),
            w_avg_beta=float(mapk.get("w_avg_beta", 0.995)),
            channel_base=int(syn.get("channel_base", 32768)), channel_max=int(syn.get("channel_max", 512)),
            conv_clamp=None if syn.get("conv_clamp") is None else float(syn["conv_clamp"]),
            grid_size=int(get(cfg, "patchwise", "grid_size", default=2)),
            w_coord_dist=wcd,
            w_lerp_multiplier=float(get(cfg, "patchwise", "w_lerp_multiplier", default=1.0)),
            coord_dims={str(k): int(v["dim"]) for k, v in chd.items()},
            coord_use_diagonal=diag.pop() if diag else True,
            coord_use_cosine=cos.pop() if cos else True,
        )
    except KeyError as e:
        raise AlisError(f"{path}: the generator's constructor arguments lack {e}") from None


def discriminator_config_from_official(kwargs: dict[str, Any], path: Path = Path("?")) -> DiscriminatorConfig:
    kw = _to_python(kwargs)
    _require(int(kw.get("c_dim", 0)) == 0, path, "conditional discriminator")
    _require(kw.get("architecture", "resnet") == "resnet", path, f"D architecture {kw.get('architecture')!r}")
    ep = kw.get("epilogue_kwargs", {}) or {}
    return DiscriminatorConfig(
        img_resolution=int(kw["img_resolution"]), img_channels=int(kw.get("img_channels", 3)),
        channel_base=int(kw.get("channel_base", 32768)), channel_max=int(kw.get("channel_max", 512)),
        conv_clamp=None if kw.get("conv_clamp") is None else float(kw["conv_clamp"]),
        mbstd_group_size=int(ep.get("mbstd_group_size", 4)),
        mbstd_num_channels=int(ep.get("mbstd_num_channels", 1)))


def _dig(d: Any, keys: tuple, default: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _resolve_interpolations(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve omegaconf '${a.b}' references (relative to the config's root) into values."""

    def resolve(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("${") and v.endswith("}"):
            return resolve(_dig(cfg, tuple(v[2:-1].split(".")), v))
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    return resolve(cfg)


def official_init_kwargs(record: PersistentRecord) -> dict[str, Any]:
    kw = _to_python(record.init_kwargs)
    if record.init_args:
        names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
        kw.update(dict(zip(names, _to_python(list(record.init_args)))))
    if isinstance(kw.get("synthesis_cfg"), dict):
        kw["synthesis_cfg"] = _resolve_interpolations(kw["synthesis_cfg"])
    return kw


# ---------------------------------------------------------------------------------------------
# Official tensor names -> ours

_DERIVED_SUFFIXES = ("resample_filter", ".basis")


def generator_state_from_official(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename official G tensors to ours. Returns (state, derived) where `derived` holds buffers we
    recompute (filters, Fourier bases) so the caller can check them."""
    state, derived = {}, {}
    for name, t in tensors.items():
        if name.endswith(_DERIVED_SUFFIXES):
            derived[name] = t
            continue
        state[name.replace(".input.input.", ".input.")] = t
    return state, derived


def check_derived_buffers(G, derived: dict[str, torch.Tensor], path: Path) -> None:
    """The official checkpoint stores Fourier bases; they must equal the ones our config implies."""
    syn = G.synthesis
    for name, t in derived.items():
        if not name.endswith(".basis"):
            continue
        res = int(name.split(".")[1][1:])
        ours = syn.b4.input.basis if res == 4 else getattr(syn, f"b{res}").basis
        if tuple(t.shape) != ours.shape or not np.allclose(t.double().numpy(), ours, rtol=1e-5, atol=1e-5):
            raise AlisError(f"{path}: coordinate basis {name} differs from this config's; unsupported variant")
