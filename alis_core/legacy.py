"""Safe import of official ALIS checkpoints (StyleGAN2-ADA style `network-snapshot-*.pkl`).

The official pickles rebuild modules through `torch_utils.persistence`, whose records carry the
module's Python source. We never run it: a restricted unpickler resolves only an allowlist of
tensor-rebuild functions and inert containers, and turns every persistent-module record into a
plain `PersistentRecord` holding the class name, constructor arguments and tensors. It sets state
(BUILD) only on its own stand-ins, parses tensor storages itself (a declared size never allocates
more than the file holds) and bounds its work, so a hostile file costs at most its own size.
`load_official(path) -> (config, state)` is the one entry point of the checkpoint loader.
"""
from __future__ import annotations

import collections
import io
import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DiscriminatorConfig, GeneratorConfig
from .errors import AlisError
from .image import read_regular_file
from .layers import logarithmic_basis

log = logging.getLogger(__name__)


# Bounds for what a snapshot may make the unpickler do. The 64 px official fixture takes 107 k
# operations, 17 k memo entries and 201 argument values 5 levels deep; these grow with the number
# of modules (an LHQ 1024 snapshot has a few times more), not with the weights, and a hostile
# file stays far below a machine's memory. Weights are bytes: MAX_PICKLE_BYTES bounds them.
MAX_PICKLE_BYTES = 4 << 30
MAX_OPS = 20_000_000  # pickle operations (each creates at most one object)
MAX_MEMO = 2_000_000  # memo entries (objects a pickle may refer to again)
MAX_NODES = 200_000  # values in a network's constructor arguments once shared references are unfolded
MAX_DEPTH = 64  # nesting of those arguments, and of modules inside modules
MAX_DIMS = 8  # tensor dimensions


class _TooComplex(Exception):
    """Constructor arguments that unfold past MAX_NODES / MAX_DEPTH (e.g. 'billion laughs')."""


class PersistentRecord:
    """Stands in for an official module: its class name, init arguments and state, nothing run."""

    def __init__(self, meta: Any = None):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = str(meta.get("class_name", "?"))[:100]
        self.state = meta.get("state", {}) or {}
        state = self.state if isinstance(self.state, dict) else {}
        self.init_args = state.get("_init_args", meta.get("init_args", ())) or ()
        self.init_kwargs = state.get("_init_kwargs", meta.get("init_kwargs", {})) or {}

    def __setstate__(self, state):  # plain objects pickled without persistence
        self.state = state

    def tensors(self, prefix: str = "", depth: int = 0, seen: set | None = None) -> dict[str, torch.Tensor]:
        """Flatten parameters and buffers of this record and its children, like state_dict()."""
        seen = set() if seen is None else seen
        if depth > MAX_DEPTH or id(self) in seen:
            raise _TooComplex(f"modules nested deeper than {MAX_DEPTH} or inside themselves")
        seen.add(id(self))
        out: dict[str, torch.Tensor] = {}
        state = self.state if isinstance(self.state, dict) else {}
        for key in ("_parameters", "_buffers"):
            group = state.get(key)
            for name, t in (group.items() if isinstance(group, dict) else ()):
                if isinstance(t, torch.Tensor):
                    out[prefix + str(name)] = t
        children = state.get("_modules")
        for name, child in (children.items() if isinstance(children, dict) else ()):
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(prefix + str(name) + ".", depth + 1, seen))
        return out


class _Inert(dict):
    """Any allowlisted plain container class (EasyDict, omegaconf nodes) becomes an inert dict."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_python(self, budget: list[int], depth: int):
        state = getattr(self, "state", None)
        return _to_python(state if state is not None else dict(self), budget, depth)


class _DType:
    """Stands in for numpy.dtype(...): the real dtype objects are process-wide singletons that a
    pickle's BUILD (dtype.__setstate__) would change for everyone, so only the name is kept."""

    _NAMES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}

    def __init__(self, name: Any = None, *rest):
        self.name, self.state = name, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.dtype:
        if self.name not in self._NAMES:
            raise pickle.UnpicklingError(f"refusing numpy dtype {str(self.name)[:20]!r}: not a plain number type")
        order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else "<"
        return np.dtype(self.name).newbyteorder(">" if order == ">" else "<")


class _Storage:
    """A storage read from a torch.save blob: its dtype and its elements as a flat tensor."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


# Storage types of the legacy torch.save format (the one tensors inside official pickles use).
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _refuse_build(self):
    raise pickle.UnpicklingError("refusing to set an object's state inside a tensor's data")


class _BlobUnpickler(pickle._Unpickler):
    """The pickles inside a legacy torch.save blob: plain data, storage types, one storage id."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _refuse_build

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, tuple[torch.dtype, int]] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} inside a tensor's data")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], torch.dtype)
                or not isinstance(pid[2], str) or isinstance(pid[4], bool) or not isinstance(pid[4], int) or pid[4] < 0):
            raise pickle.UnpicklingError("malformed storage reference inside a tensor's data")
        self.storages[pid[2]] = (pid[1], pid[4])
        return pid[2]


def _load_storage(blob: Any) -> _Storage:
    """torch.storage._load_from_bytes, re-implemented: parse the blob's torch.save format ourselves
    and allocate only what the blob holds (a declared size never allocates more than its bytes)."""
    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor's data is not bytes")
    if blob[:2] == b"PK":
        return _load_storage_zip(bytes(blob))
    f = io.BytesIO(blob)
    header = [_BlobUnpickler(f).load() for _ in range(3)]  # magic number, protocol, system info
    if header[0] != _LEGACY_MAGIC or header[1] != 1001 or not isinstance(header[2], dict) \
            or header[2].get("little_endian") is not True:
        raise pickle.UnpicklingError("a tensor's data is not a little-endian torch.save blob")
    u = _BlobUnpickler(f)
    key = u.load()
    keys = _BlobUnpickler(f).load()
    if not isinstance(key, str) or keys != [key] or key not in u.storages:
        raise pickle.UnpicklingError("a tensor's data holds no single storage")
    dtype, numel = u.storages[key]
    head = f.read(8)
    if len(head) != 8 or int.from_bytes(head, "little") != numel:
        raise pickle.UnpicklingError("a tensor's data does not hold the size it declares")
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    if nbytes > len(blob) - f.tell():
        raise pickle.UnpicklingError(f"a tensor's data declares {nbytes} bytes but holds {len(blob) - f.tell()}")
    data = bytearray(memoryview(blob)[f.tell():f.tell() + nbytes])  # one copy, writable for torch
    return _Storage(torch.frombuffer(data, dtype=dtype) if numel else torch.empty(0, dtype=dtype))


def _load_storage_zip(blob: bytes) -> _Storage:
    """The zip format of torch.save: every member's declared size is checked against the blob's
    before anything is inflated (a deflated member can expand a thousandfold)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            for info in z.infolist():
                if info.file_size > len(blob):
                    raise pickle.UnpicklingError(f"a tensor's zip member {info.filename[:60]!r} expands to "
                                                 f"{info.file_size} bytes, more than its {len(blob)}-byte archive")
    except zipfile.BadZipFile as e:
        raise pickle.UnpicklingError(f"a tensor's data is a damaged zip ({e})") from None
    st = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    if not isinstance(st, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("a tensor's zip data holds no storage")
    dtype = st.dtype if isinstance(st, torch.TypedStorage) else torch.uint8
    untyped = st.untyped() if isinstance(st, torch.TypedStorage) else st
    return _Storage(torch.empty(0, dtype=dtype).set_(untyped))


def _int_tuple(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or len(v) > MAX_DIMS \
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise pickle.UnpicklingError("a tensor's size or stride is not a short tuple of non-negative integers")
    return tuple(v)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest) -> torch.Tensor:
    """torch._utils._rebuild_tensor(_v2), re-implemented: a view of the storage, checked to lie
    inside it; requires_grad, backward hooks and Python state (`rest`) are dropped."""
    if not isinstance(storage, _Storage) or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise pickle.UnpicklingError("malformed tensor (storage or offset)")
    size, stride = _int_tuple(size), _int_tuple(stride)
    if len(size) != len(stride):
        raise pickle.UnpicklingError("malformed tensor (size and stride differ in length)")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.flat.numel():
        raise pickle.UnpicklingError(f"a tensor of size {list(size)} reaches past its storage")
    return torch.as_strided(storage.flat, size, stride, offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter holds no tensor")
    return data


def _reconstruct_persistent_obj(meta):
    return PersistentRecord(meta)


def _scalar(dtype, data=None):
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    dt = dtype.resolve()
    if len(data) != dt.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dt)[0].item()


def _defaultdict(*args):
    return {}  # omegaconf's resolver cache; the default factory is never kept (nor called)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("typing", "Any"): None,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "dtype"): _DType,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}
_INERT_MODULES = ("dnnlib.util", "omegaconf.dictconfig", "omegaconf.listconfig", "omegaconf.nodes",
                  "omegaconf.base", "omegaconf.basecontainer", "omegaconf")
# BUILD (setting state on an object) only reaches these stand-ins: on anything else (a function
# found by find_class, a dict, a tensor) it could change objects the whole process shares.
_BUILDABLE = (PersistentRecord, _Inert, _DType)


def _counted(op):
    def run(self):
        self.ops += 1
        if self.ops > MAX_OPS:
            raise pickle.UnpicklingError(f"more than {MAX_OPS} pickle operations")
        op(self)
    return run


def _memo_bounded(op):
    def run(self):
        op(self)
        if len(self.memo) > MAX_MEMO:
            raise pickle.UnpicklingError(f"more than {MAX_MEMO} memo entries")
    return run


def _load_build(self):
    if not isinstance(self.stack[-2], _BUILDABLE):
        raise pickle.UnpicklingError(f"refusing to set the state of a {type(self.stack[-2]).__name__}: "
                                     "only plain data and tensors are read")
    pickle._Unpickler.load_build(self)


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's own unpickler (not the C one, whose BUILD cannot be intercepted) with an allowlist
    of callables, BUILD restricted to our stand-ins, and bounded operations and memo."""

    dispatch = {k: _counted(v) for k, v in pickle._Unpickler.dispatch.items()}
    for _op in (pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE):
        dispatch[_op[0]] = _memo_bounded(dispatch[_op[0]])
    dispatch[pickle.BUILD[0]] = _counted(_load_build)
    del _op

    def __init__(self, file):
        super().__init__(file)
        self.ops = 0

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in _INERT_MODULES or module.startswith("omegaconf."):
            return _Inert
        raise pickle.UnpicklingError(f"refusing to load {one_line(module, 60)}.{one_line(name, 60)}: "
                                     "not a tensor or a plain container")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("unexpected persistent id in an official snapshot")


def _to_python(obj: Any, budget: list[int] | None = None, depth: int = 0) -> Any:
    """Unwrap inert containers (EasyDict, omegaconf) into dicts/lists/scalars; at most MAX_NODES
    values (shared references count every time they are reached) and MAX_DEPTH levels."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _TooComplex(f"constructor arguments with more than {MAX_NODES} values or {MAX_DEPTH} levels")
    if isinstance(obj, _Inert):
        return obj.to_python(budget, depth + 1)
    if isinstance(obj, PersistentRecord):
        return obj
    if isinstance(obj, dict):
        # omegaconf DictConfig state keeps its items under '_content'
        if "_content" in obj and isinstance(obj.get("_content"), (dict, list)):
            return _to_python(obj["_content"], budget, depth + 1)
        if "_val" in obj and "_metadata" in obj:
            return _to_python(obj["_val"], budget, depth + 1)
        return {str(_to_python(k, budget, depth + 1))[:200]: _to_python(v, budget, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_python(v, budget, depth + 1) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def one_line(text: Any, limit: int = 200) -> str:
    """`text` as a short single line: names and messages from a file may hold newlines or controls."""
    text = "".join(c if c.isprintable() else "?" for c in str(text)[:limit])
    return text


def _short(v: Any) -> str:
    """A bad value for an error line: short whatever it holds."""
    if isinstance(v, (dict, list, tuple, set)):
        return f"a {type(v).__name__} of {len(v)} items"
    text = repr(v)
    return text[:40] + "..." if len(text) > 40 else text


def read_official_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an official snapshot without executing anything it names."""
    path = Path(path)
    data = read_regular_file(path, "checkpoint", MAX_PICKLE_BYTES)
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        raise AlisError(f"{path} is a torch.save zip, not an official ALIS snapshot pickle")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise AlisError(f"{path}: {one_line(e, 300)}; it is not a safe official ALIS snapshot") from None
    except Exception as e:  # truncated or corrupt data raises many exception types
        raise AlisError(f"{path} is not a readable official ALIS snapshot ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("G_ema"), PersistentRecord):
        raise AlisError(f"{path} holds no G_ema network; is it an official ALIS network-snapshot pickle?")
    return obj


def load_official(path: str | Path, network: str = "G_ema"):
    """An official snapshot pickle -> (config, state) of one of its networks, ready for our module.

    network "G_ema": (GeneratorConfig, G state with our tensor names; derived buffers checked
    against the config and left out). "D": (DiscriminatorConfig, D state). The file is read
    with the restricted unpickler; every failure is one AlisError line naming it."""
    path = Path(path)
    snap = read_official_pickle(path)
    rec = snap.get(network)
    if not isinstance(rec, PersistentRecord):
        if network == "D":
            raise AlisError(f"{path} holds no discriminator (D is None); convert without --with-discriminator")
        raise AlisError(f"{path} holds no {network} network; is it an official ALIS network-snapshot pickle?")
    try:
        kwargs, tensors = official_init_kwargs(rec), rec.tensors()
    except _TooComplex as e:
        raise AlisError(f"{path}: {one_line(e)}; it is not a plain official ALIS snapshot") from None
    if network == "D":
        cfg = discriminator_config_from_official(kwargs, path)
        return cfg, {k: v for k, v in tensors.items() if not k.endswith("resample_filter")}
    return official_generator(kwargs, tensors, path)


def official_generator(init_kwargs: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path):
    """Official constructor arguments and G tensors (official names) -> (GeneratorConfig, state
    with our names), the derived buffers (Fourier bases) checked against the config."""
    cfg = generator_config_from_official(init_kwargs, path)
    return cfg, official_state(cfg, tensors, path)


def official_state(cfg: GeneratorConfig, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """G tensors with official names -> our names; the derived buffers are checked and left out."""
    state, derived = generator_state_from_official(tensors)
    check_derived_buffers(cfg, derived, path)
    return state


def official_config_from_json(init_kwargs_json: str, path: Path) -> GeneratorConfig:
    """The GeneratorConfig of an official-names .safetensors (its `init_kwargs` JSON metadata)."""
    try:
        kw = json.loads(init_kwargs_json)
    except (ValueError, RecursionError):
        raise AlisError(f"{path}: its init_kwargs metadata is not valid JSON (or nested too deeply)") from None
    if not isinstance(kw, dict):
        raise AlisError(f"{path}: its init_kwargs metadata must be a JSON object, got {_short(kw)}")
    try:
        if "synthesis_cfg" in kw:
            kw["synthesis_cfg"] = _resolve_interpolations(kw["synthesis_cfg"])
    except _TooComplex as e:
        raise AlisError(f"{path}: init_kwargs: {e}") from None
    return generator_config_from_official(kw, path)


# ---------------------------------------------------------------------------------------------
# Official constructor arguments -> our configs

def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise AlisError(f"{path}: unsupported official option: {what}")


def generator_config_from_official(kwargs: dict[str, Any], path: Path = Path("?")) -> GeneratorConfig:
    """Official Generator constructor arguments -> our GeneratorConfig; unsupported options are
    refused by name, wrong types and out-of-range values by key (GeneratorConfig's bounds)."""
    try:
        return _generator_config_from_official(_to_python(kwargs), path)
    except _TooComplex as e:
        raise AlisError(f"{path}: {e}") from None
    except AlisError as e:
        msg = str(e)
        raise AlisError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as e:  # a value of the wrong kind
        raise AlisError(f"{path}: malformed official constructor arguments ({type(e).__name__}: "
                        f"{one_line(e, 120)})") from None


def _generator_config_from_official(kw: Any, path: Path) -> GeneratorConfig:
    if not isinstance(kw, dict):
        raise AlisError(f"the generator's constructor arguments are {_short(kw)}, not a mapping")
    syn = _mapping(kw, "synthesis_kwargs")
    mapk = _mapping(kw, "mapping_kwargs")
    cfg = _mapping(kw, "synthesis_cfg")
    get = lambda d, *keys, default=None: _dig(d, keys, default)  # noqa: E731
    _require(kw.get("c_dim", 0) in (0, None), path, "c_dim > 0 (conditional models)")
    _require(get(cfg, "patchwise", "enabled", default=False), path, "patchwise.enabled = false")
    _require(get(cfg, "input", "type") == "grid", path, f"input.type = {_short(get(cfg, 'input', 'type'))} (only 'grid')")
    _require(get(cfg, "input", "resolution", default=4) == 4, path, "input.resolution != 4")
    _require(not get(cfg, "fmm", "enabled", default=False), path, "fmm.enabled")
    _require(get(cfg, "num_modes", default=1) == 1, path, "num_modes > 1")
    _require(get(cfg, "style", "is_spatial", default=True), path, "style.is_spatial = false")
    _require(not get(cfg, "style", "fallback_to_mean", default=False), path, "style.fallback_to_mean")
    _require(not get(cfg, "patchwise", "instance_norm", default=False), path, "patchwise.instance_norm")
    _require(not get(cfg, "force_zero_padding", default=False), path, "force_zero_padding")
    _require(get(cfg, "upsampling_mode") in (None, "null"), path, f"upsampling_mode = {_short(get(cfg, 'upsampling_mode'))}")
    coords = _mapping(cfg, "coords")
    _require(coords.get("enabled", True), path, "coords.enabled = false")
    _require(coords.get("logarithmic", True), path, "coords.logarithmic = false")
    _require(not coords.get("fallback", False), path, "coords.fallback")
    _require(not coords.get("no_fourier_fallback", False), path, "coords.no_fourier_fallback")
    _require(not coords.get("use_cips_embs", False), path, "coords.use_cips_embs")
    _require(not get(coords, "growth_schedule", "enabled", default=False), path, "coords.growth_schedule")
    _require(coords.get("remove_lowest_freq", True), path, "coords.remove_lowest_freq = false")
    _require(coords.get("kernel_size", 3) == 3, path, "coords.kernel_size != 3")
    _require(coords.get("coord_dim", 2) == 2, path, "coords.coord_dim != 2")
    _require(syn.get("architecture", "skip") == "skip", path, f"architecture = {_short(syn.get('architecture'))}")
    _require(mapk.get("activation", "lrelu") == "lrelu", path, "mapping activation other than lrelu")
    _require(mapk.get("h_dim") in (None, kw.get("w_dim")), path, "mapping h_dim != w_dim")
    chd = _mapping(coords, "channels_dict")
    if not all(isinstance(v, dict) for v in chd.values()):
        raise AlisError("coords.channels_dict entries must be mappings with a 'dim'")
    diag = {v.get("use_diagonal", True) for v in chd.values()}  # GeneratorConfig checks they are booleans
    cos = {v.get("use_cosine", True) for v in chd.values()}
    _require(len(diag) <= 1 and len(cos) <= 1, path, "per-resolution use_diagonal/use_cosine differ")
    missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in kw]
    if missing:
        raise AlisError(f"the generator's constructor arguments lack {missing[0]!r}")
    # Values go to GeneratorConfig as stored: it checks their types and bounds by key.
    return GeneratorConfig(
        z_dim=kw["z_dim"], w_dim=kw["w_dim"], img_resolution=kw["img_resolution"],
        img_channels=kw.get("img_channels", 3),
        mapping_layers=mapk.get("num_layers", 8),
        mapping_lr_multiplier=mapk.get("lr_multiplier", 0.01),
        w_avg_beta=mapk.get("w_avg_beta", 0.995),
        channel_base=syn.get("channel_base", 32768), channel_max=syn.get("channel_max", 512),
        conv_clamp=syn.get("conv_clamp"),
        grid_size=get(cfg, "patchwise", "grid_size", default=2),
        w_coord_dist=get(cfg, "patchwise", "w_coord_dist", default=4),
        w_lerp_multiplier=get(cfg, "patchwise", "w_lerp_multiplier", default=1.0),
        coord_dims={str(k)[:20]: v.get("dim") for k, v in chd.items()},
        coord_use_diagonal=diag.pop() if diag else True,
        coord_use_cosine=cos.pop() if cos else True,
    )


def _mapping(d: dict, key: str) -> dict:
    v = d.get(key) or {}
    if not isinstance(v, dict):
        raise AlisError(f"official option {key} must be a mapping, got {_short(v)}")
    return v


def discriminator_config_from_official(kwargs: dict[str, Any], path: Path = Path("?")) -> DiscriminatorConfig:
    try:
        kw = _to_python(kwargs)
        if not isinstance(kw, dict) or "img_resolution" not in kw:
            raise AlisError("the discriminator's constructor arguments lack 'img_resolution'")
        _require(kw.get("c_dim", 0) in (0, None), path, "conditional discriminator")
        _require(kw.get("architecture", "resnet") == "resnet", path, f"D architecture {_short(kw.get('architecture'))}")
        ep = _mapping(kw, "epilogue_kwargs")
        return DiscriminatorConfig(
            img_resolution=kw["img_resolution"], img_channels=kw.get("img_channels", 3),
            channel_base=kw.get("channel_base", 32768), channel_max=kw.get("channel_max", 512),
            conv_clamp=kw.get("conv_clamp"),
            mbstd_group_size=ep.get("mbstd_group_size", 4),
            mbstd_num_channels=ep.get("mbstd_num_channels", 1))
    except _TooComplex as e:
        raise AlisError(f"{path}: {e}") from None
    except AlisError as e:
        msg = str(e)
        raise AlisError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as e:
        raise AlisError(f"{path}: malformed discriminator arguments ({type(e).__name__}: {one_line(e, 120)})") from None


def _dig(d: Any, keys: tuple, default: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _resolve_interpolations(cfg: Any) -> Any:
    """Resolve omegaconf '${a.b}' references (relative to the config's root) into values.

    A reference to itself (directly or through others) is refused, and so is a result of more
    than MAX_NODES values or MAX_DEPTH levels (references may fan out exponentially)."""
    budget = [MAX_NODES]

    def resolve(v: Any, depth: int, chain: tuple) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_DEPTH:
            raise _TooComplex(f"interpolations that unfold past {MAX_NODES} values or {MAX_DEPTH} levels")
        if isinstance(v, str) and v.startswith("${") and v.endswith("}"):
            ref = v[2:-1]
            if ref in chain:
                raise _TooComplex(f"interpolation {_short(v)} refers to itself")
            target = _dig(cfg, tuple(ref.split(".")), v)
            return v if target is v else resolve(target, depth + 1, chain + (ref,))
        if isinstance(v, dict):
            return {k: resolve(x, depth + 1, chain) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x, depth + 1, chain) for x in v]
        return v

    return resolve(cfg, 0, ())


def official_init_kwargs(record: PersistentRecord) -> dict[str, Any]:
    budget = [MAX_NODES]
    kw = _to_python(record.init_kwargs, budget)
    if not isinstance(kw, dict):
        raise _TooComplex(f"constructor arguments that are {_short(kw)}, not a mapping")
    if record.init_args:
        names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
        args = _to_python(record.init_args, budget)
        kw.update(dict(zip(names, args if isinstance(args, list) else [])))
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


def check_derived_buffers(cfg: GeneratorConfig, derived: dict[str, torch.Tensor], path: Path) -> None:
    """The official checkpoint stores Fourier bases; they must equal the ones our config implies
    (computed as generator.SynthesisBlock does, without building the model)."""
    for name, t in derived.items():
        if not name.endswith(".basis"):
            continue
        block = name.split(".")[1] if name.count(".") >= 2 else ""
        res = int(block[1:]) if block[:1] == "b" and block[1:].isascii() and block[1:].isdigit() and len(block) <= 6 else -1
        if res == 4:
            ours = logarithmic_basis(4, cfg.channels(4), remove_lowest_freq=True, use_diagonal=True)
        elif res in cfg.block_resolutions:
            ours = logarithmic_basis(res, cfg.coord_dims[str(res)], remove_lowest_freq=True,
                                     use_diagonal=cfg.coord_use_diagonal)
        else:
            raise AlisError(f"{path}: {one_line(name, 80)} belongs to no block of this config")
        if (not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ours.shape)
                or not np.allclose(t.double().numpy(), ours.double().numpy(), rtol=1e-5, atol=1e-5)):
            raise AlisError(f"{path}: coordinate basis {one_line(name, 80)} differs from this config's; unsupported variant")
