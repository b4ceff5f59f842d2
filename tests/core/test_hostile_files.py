"""Hostile or careless files: every one is refused with one line naming the file, quickly, without
allocating what it declares, running anything it names or changing the process for later loads."""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import signal
import struct
import sys
import types
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from alis_testing import FIXTURES, check_official_outputs
from safetensors import safe_open
from safetensors.torch import save_file

import alis_core
from alis_core import AlisError, legacy
from alis_core.config import GeneratorConfig


def _one_line_error(fn, path, *needles):
    """fn() raises one AlisError line that names `path` and contains every needle."""
    with pytest.raises(AlisError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@contextmanager
def _no_hang(seconds: int = 10):
    """Turn a hang (a blocking FIFO read) into a test failure instead of a stuck suite."""
    def fail(*_):
        raise TimeoutError("blocked")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _rewrite(src: Path, dst: Path, edit_meta=None, edit_tensors=None) -> Path:
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


# ---------------------------------------------------------------------------------------------
# 1. Config values are typed and bounded before any tensor is built.

_BAD_CONFIG_VALUES = [
    ("w_dim", 12000, "w_dim must be an integer in [1, 4096]"),
    ("w_dim", 10 ** 12, "w_dim must be an integer"),
    ("w_dim", "64", "w_dim must be an integer"),
    ("w_dim", [64], "w_dim must be an integer"),
    ("w_dim", True, "w_dim must be an integer"),
    ("w_dim", {"w_dim": 64}, "w_dim must be an integer"),
    ("z_dim", -1, "z_dim must be an integer"),
    ("img_resolution", 2 ** 40, "img_resolution must be an integer"),
    ("mapping_layers", 10 ** 6, "mapping_layers must be an integer"),
    ("channel_max", 64.5, "channel_max must be an integer"),
    ("conv_clamp", float("nan"), "conv_clamp must be a number"),
    ("conv_clamp", "256", "conv_clamp must be a number"),
    ("w_coord_dist", float("inf"), "w_coord_dist must be a number"),
    ("w_avg_beta", float("-inf"), "w_avg_beta must be a number"),
    ("coord_dims", {"8": "32", "16": 32, "32": 64, "64": 128}, "coord_dims[8] must be an integer"),
    ("coord_dims", "${coord_dims}", "coord_dims must be an object"),
    ("coord_dims", {"8": 1, "16": 32, "32": 64, "64": 128}, "coord_dims[8] must be at least"),
    ("coord_dims", {"\u00b2": 32, "8": 32, "16": 32, "32": 64, "64": 128}, "coord_dims keys must be resolutions"),
    ("coord_dims", {"9" * 5000: 32, "8": 32, "16": 32, "32": 64, "64": 128}, "coord_dims keys must be resolutions"),
    ("coord_use_cosine", "yes", "coord_use_cosine must be true or false"),
    ("coord_use_diagonal", 1, "coord_use_diagonal must be true or false"),
    # each value in bounds, together more than MAX_PARAMETERS (with channel_base 2**20)
    ("channel_max", 2048, "more than the 200 M"),
    # in bounds, but a model far larger than the file holds: refused before it is built
    ("w_dim", 4096, "describes a generator of about"),
]


@pytest.mark.parametrize("key,value,needle", _BAD_CONFIG_VALUES)
def test_config_values_are_typed_and_bounded(tmp_path, tiny_checkpoint, key, value, needle):
    def edit(meta):
        cfg = json.loads(meta["generator_config"])
        cfg[key] = value
        if key == "channel_max":
            cfg["channel_base"] = 1 << 20
        meta["generator_config"] = json.dumps(cfg)  # NaN and Infinity as Python's json writes them
    path = _rewrite(tiny_checkpoint, tmp_path / "bad.safetensors", edit_meta=edit)
    _one_line_error(lambda: alis_core.load_generator(path), path, needle)


def test_bounds_admit_the_official_lhq_1024_model():
    cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=1024, mapping_layers=8, channel_base=32768,
                          channel_max=512, conv_clamp=256, grid_size=2, w_coord_dist=4,
                          coord_dims={"8": 32, "16": 32, "32": 64, "64": 128, "128": 256, "256": 256,
                                      "512": 256, "1024": 256})
    G = alis_core.Generator(cfg)
    n = sum(v.numel() for v in G.state_dict().values())
    assert n <= cfg.num_parameters() <= 1.3 * n  # the size check's estimate is an upper bound
    assert 5 * cfg.num_parameters() < alis_core.config.MAX_PARAMETERS


@pytest.mark.parametrize("case", ["string", "nan", "self_reference", "mutual_reference", "fan_out",
                                  "deep_json", "not_an_object", "channels_dict_list", "bool_dim"])
def test_official_init_kwargs_are_typed_and_bounded(tmp_path, case):
    def edit(meta):
        kw = json.loads(meta["init_kwargs"])
        syn = kw["synthesis_cfg"]
        if case == "string":
            kw["w_dim"] = "64"
        elif case == "nan":
            syn["patchwise"]["w_coord_dist"] = float("nan")
        elif case == "self_reference":
            syn["patchwise"]["grid_size"] = "${patchwise.grid_size}"
        elif case == "mutual_reference":
            syn["patchwise"]["grid_size"] = "${a}"
            syn["a"] = "${patchwise.grid_size}"
        elif case == "fan_out":  # 10 levels of 10 references each: 10**10 values if unfolded
            for i in range(10):
                syn[f"l{i}"] = [f"${{l{i + 1}}}"] * 10
            syn["l10"] = 1
        elif case == "deep_json":
            meta["init_kwargs"] = "[" * 100000 + "]" * 100000
            return
        elif case == "not_an_object":
            meta["init_kwargs"] = "[1, 2]"
            return
        elif case == "channels_dict_list":
            syn["coords"]["channels_dict"] = [1, 2]
        elif case == "bool_dim":
            next(iter(syn["coords"]["channels_dict"].values()))["dim"] = True
        meta["init_kwargs"] = json.dumps(kw)
    path = _rewrite(FIXTURES / "official_tiny64.safetensors", tmp_path / "bad.safetensors", edit_meta=edit)
    needle = {"string": "w_dim", "nan": "w_coord_dist", "self_reference": "refers to itself",
              "mutual_reference": "refers to itself", "fan_out": "unfold past", "deep_json": "nested too deeply",
              "not_an_object": "JSON object", "channels_dict_list": "channels_dict",
              "bool_dim": "coord_dims"}[case]
    _one_line_error(lambda: alis_core.load_generator(path), path, needle)


def test_discriminator_config_is_checked(tmp_path, tiny_G):
    D = alis_core.Discriminator(alis_core.DiscriminatorConfig(img_resolution=64, channel_base=256, channel_max=32))
    src = alis_core.save_generator(tiny_G, tmp_path / "gd.safetensors", D=D)
    for value, needle in [("{not json", "not valid JSON"), (json.dumps({**D.config.to_dict(), "channel_max": "32"}),
                                                            "channel_max must be an integer")]:
        path = _rewrite(src, tmp_path / "bad.safetensors", edit_meta=lambda m: m.update(discriminator_config=value))
        _one_line_error(lambda: alis_core.load_discriminator(path), path, needle)


@pytest.mark.parametrize("case", ["tensor_name", "version_superscript", "version_long", "pickle_global"])
def test_names_from_the_file_stay_on_one_line(tmp_path, tiny_checkpoint, case):
    path = tmp_path / "odd.safetensors"
    if case == "tensor_name":
        _rewrite(tiny_checkpoint, path, edit_tensors=lambda t: t.update({"G.a\nb\rc": torch.zeros(1)}))
    elif case.startswith("version"):
        value = "\u00b2" if case == "version_superscript" else "9" * 5000
        _rewrite(tiny_checkpoint, path, edit_meta=lambda m: m.update(format_version=value))
    else:  # STACK_GLOBAL takes any strings, newlines included
        path = tmp_path / "odd.pkl"
        path.write_bytes(b"\x80\x04\x8c\x04os\nx\x8c\x06system\x93.")
    _one_line_error(lambda: alis_core.load_generator(path), path)


# ---------------------------------------------------------------------------------------------
# Official-style pickles made here: a fake torch_utils.persistence module during pickling.

class _Record:
    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


class _Reduce:
    """Pickles as fn(*args) (fn any importable object) and optionally BUILD with `state`."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


@pytest.fixture
def snapshot_pickle(monkeypatch):
    """dumps(G_ema_meta) -> bytes of {'G_ema': record(meta)} as the official pickles hold it."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        return meta
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return lambda meta: pickle.dumps({"G_ema": _Record(meta)}, protocol=4)


def _blob(t: torch.Tensor) -> bytes:
    """A storage's bytes as official pickles hold them (legacy torch.save format)."""
    b = io.BytesIO()
    torch.save(t._typed_storage(), b, _use_new_zipfile_serialization=False)  # as Tensor.__reduce_ex__ does
    return b.getvalue()


def _tensor_reduce(blob: bytes, size=(4,), stride=(1,), offset=0):
    storage = _Reduce(torch.storage._load_from_bytes, (blob,))
    return _Reduce(torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, {}))


def _meta_with(kwargs=None, params=None):
    return {"class_name": "training.networks.Generator",
            "state": {"_init_kwargs": kwargs or {}, "_parameters": params or {}, "_buffers": {}, "_modules": {}}}


def test_billion_laughs_of_keyword_dicts_is_refused(tmp_path, snapshot_pickle):
    d = {"x": 1}
    for _ in range(40):  # 2**40 dicts once unfolded; a few hundred bytes pickled (memo references)
        d = {"a": d, "b": d}
    path = tmp_path / "laughs.pkl"
    path.write_bytes(snapshot_pickle(_meta_with({"synthesis_kwargs": d})))
    assert path.stat().st_size < 2000
    _one_line_error(lambda: alis_core.load_generator(path), path, "more than")


def test_deeply_nested_arguments_are_refused(tmp_path):
    depth = 5000  # EMPTY_LIST x depth, then APPEND: a list nested 5000 deep without recursion in pickle
    nested = b"]" * depth + b"a" * (depth - 1)
    data = (b"\x80\x02}X\x05\x00\x00\x00G_ema" + b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
            + b"}X\x05\x00\x00\x00state}X\x0c\x00\x00\x00_init_kwargs}X\x01\x00\x00\x00k" + nested
            + b"sss\x85Rs.")
    path = tmp_path / "deep.pkl"
    path.write_bytes(data)
    _one_line_error(lambda: alis_core.load_generator(path), path, "levels")


@pytest.mark.parametrize("bound,needle", [("MAX_MEMO", "memo entries"), ("MAX_OPS", "pickle operations"),
                                          ("MAX_PICKLE_BYTES", "bytes, more than")])
def test_unpickler_bounds(tmp_path, monkeypatch, bound, needle):
    monkeypatch.setattr(legacy, bound, 1000)
    path = tmp_path / "many.pkl"
    path.write_bytes(pickle.dumps({"G_ema": [[i] for i in range(2000)]}, protocol=4))
    _one_line_error(lambda: alis_core.load_generator(path), path, needle)


# ---------------------------------------------------------------------------------------------
# 3. Only regular files are read.

def _special_files(tmp_path, suffix):
    fifo = tmp_path / f"fifo{suffix}"
    os.mkfifo(fifo)
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    return {"fifo": fifo, "dev_zero": zero, "folder": folder}


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX special files")
@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
def test_checkpoint_must_be_a_regular_file(tmp_path, suffix):
    for kind, path in _special_files(tmp_path, suffix).items():
        with _no_hang():
            msg = _one_line_error(lambda: alis_core.load_generator(path), path)
        assert ("not a regular file" if kind != "folder" else "is a folder") in msg, msg
        with _no_hang():
            _one_line_error(lambda: alis_core.load_discriminator(path), path)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX special files")
@pytest.mark.parametrize("suffix", [".png", ".hdr", ".exr"])
def test_image_must_be_a_regular_file(tmp_path, suffix):
    load = alis_core.load_image if suffix == ".png" else alis_core.load_float_image
    for kind, path in _special_files(tmp_path, suffix).items():
        with _no_hang():
            msg = _one_line_error(lambda: load(path), path)
        assert ("not a regular file" if kind != "folder" else "is a folder") in msg, msg


# ---------------------------------------------------------------------------------------------
# 4. Tensor data: declared sizes never allocate more than the file holds.

def test_zip_member_expanding_past_its_archive_is_refused(tmp_path, snapshot_pickle):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", b"\x00" * (64 << 20))  # 64 MB that deflate to 64 KB
    blob = buf.getvalue()
    assert len(blob) < (1 << 20)
    path = tmp_path / "zipbomb.pkl"
    path.write_bytes(snapshot_pickle(_meta_with(params={"w": _tensor_reduce(blob)})))
    _one_line_error(lambda: alis_core.load_generator(path), path, "expands to")


@pytest.mark.parametrize("case", ["declared_numel", "view_past_storage", "negative_offset", "many_dims"])
def test_storage_and_view_sizes_are_checked(tmp_path, snapshot_pickle, case):
    blob = _blob(torch.arange(4, dtype=torch.float32))
    size, stride, offset = (4,), (1,), 0
    if case == "declared_numel":  # the storage claims 10**12 elements, holds 4
        blob = blob.replace(b"K\x04N", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00N")
    elif case == "view_past_storage":
        size = (10 ** 6, 10 ** 6)
        stride = (10 ** 6, 1)
    elif case == "negative_offset":
        offset = -4
    else:
        size, stride = (1,) * 20, (1,) * 20
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(snapshot_pickle(_meta_with(params={"w": _tensor_reduce(blob, size, stride, offset)})))
    _one_line_error(lambda: alis_core.load_generator(path), path)


def test_storage_blob_parser_equals_torch_load():
    t = torch.randn(7, 3).to(torch.float16)
    ours = legacy._load_storage(_blob(t)).flat
    assert ours.dtype == torch.float16 and torch.equal(ours, t.flatten())


# ---------------------------------------------------------------------------------------------
# 5. Images: dimensions bounded before decoding; Pillow's limit stays on.

def _png_header_only(w: int, h: int, bits: int, color_type: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    idat = zlib.compress(b"\x00" * 1000)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", ["png8_169mpx", "png16_169mpx", "png8_huge", "hdr_169mpx"])
def test_image_dimensions_are_bounded_before_decoding(tmp_path, case):
    from PIL import Image
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / ("big.hdr" if case.startswith("hdr") else "big.png")
    if case == "png8_169mpx":  # over MAX_IMAGE_PIXELS, under twice it: Pillow would only warn
        path.write_bytes(_png_header_only(13000, 13000, 8, 0))
    elif case == "png16_169mpx":
        path.write_bytes(_png_header_only(13000, 13000, 16, 2))
    elif case == "png8_huge":
        path.write_bytes(_png_header_only(100000, 100000, 8, 2))
    else:
        path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 13000 +X 13000\n" + b"\x00" * 100)
    load = alis_core.load_float_image if path.suffix == ".hdr" else alis_core.load_image
    _one_line_error(lambda: load(path), path)
    assert Image.MAX_IMAGE_PIXELS == before and before is not None


def test_nothing_disables_pillows_decompression_bomb_limit():
    root = Path(__file__).resolve().parents[2]
    for folder in ("alis_core", "nodes", "training", "blender_addon"):
        for src in (root / folder).rglob("*.py"):
            text = src.read_text(encoding="utf-8")
            assert "MAX_IMAGE_PIXELS =" not in text and "MAX_IMAGE_PIXELS=" not in text, src


# ---------------------------------------------------------------------------------------------
# 6. The unpickler builds plain data and tensors only: nothing it loads changes the process.

_BUILD_ATTACKS = {
    # BUILD on the allow-listed rebuild function itself (GLOBAL, then BUILD): its defaults change
    "rebuild_defaults": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__"
                        b"K\x01\x85s\x86b.",
    "own_function_defaults": b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\nN}X\x0c\x00\x00\x00"
                             b"__defaults__K\x01\x85s\x86b.",
    "dict_state": b"\x80\x02cbuiltins\ndict\n)R}X\x01\x00\x00\x00aK\x01sb.",
    "ordered_dict_class": b"\x80\x02ccollections\nOrderedDict\nN}X\x08\x00\x00\x00__init__K\x01s\x86b.",
}


def test_build_is_refused_and_later_loads_are_unaffected(tmp_path, official_fixture):
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    for attack, data in sorted(_BUILD_ATTACKS.items()):
        path = tmp_path / f"{attack}.pkl"
        path.write_bytes(data)
        _one_line_error(lambda: alis_core.load_generator(path), path, "refusing")
        assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults, attack
    # in the same process, a genuine official snapshot still loads, and exactly
    check_official_outputs(alis_core.load_generator(FIXTURES / "official_tiny64.pkl"), official_fixture)


def test_numpy_dtype_state_stays_with_the_stand_in(tmp_path, snapshot_pickle):
    """Official pickles BUILD numpy dtypes; on the real (shared) dtype a '>' would flip every
    float64 in the process. Here it only affects the value it describes."""
    # copy=False: numpy hands out its process-wide float64 dtype itself
    dtype = _Reduce(np.dtype, ("f8", False, False), state=(3, ">", None, None, None, -1, -1, 0))
    scalar = np.float64(1.0).__reduce__()[0]  # numpy's own scalar rebuild function, as pickles name it
    value = _Reduce(scalar, (dtype, struct.pack(">d", 2.5)))
    path = tmp_path / "dtype.pkl"
    path.write_bytes(snapshot_pickle(_meta_with({"w_avg_beta_probe": value})))
    kw = legacy.official_init_kwargs(legacy.read_official_pickle(path)["G_ema"])
    assert kw["w_avg_beta_probe"] == 2.5
    assert np.dtype("f8").byteorder in ("=", "<") and np.frombuffer(struct.pack("<d", 1.5), "f8")[0] == 1.5


# ---------------------------------------------------------------------------------------------
# 7. NaN or inf weights are refused at load.

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("source", ["ours", "official"])
def test_non_finite_weights_are_refused(tmp_path, tiny_checkpoint, source, bad):
    src, key = ((tiny_checkpoint, "G.synthesis.b8.conv0.weight") if source == "ours"
                else (FIXTURES / "official_tiny64.safetensors", "G.mapping.fc0.weight"))

    def poison(tensors):
        t = tensors[key].clone()
        t.view(-1)[3] = bad
        tensors[key] = t
    path = _rewrite(src, tmp_path / "poisoned.safetensors", edit_tensors=poison)
    _one_line_error(lambda: alis_core.load_generator(path), path, key, "NaN or infinite")


def test_non_finite_weights_in_an_official_pickle_are_refused(tmp_path):
    data = bytearray((FIXTURES / "official_tiny64.pkl").read_bytes())
    # the first float32 storage's first element: after the blob's header, its 8-byte size
    blob_at = data.index(legacy._LEGACY_MAGIC.to_bytes(10, "little"))
    keys_at = data.index(b"\x80\x02]q\x00X", blob_at)
    first = data.index(b"a.", keys_at) + 2 + 8
    data[first:first + 4] = struct.pack("<f", math.nan)
    path = tmp_path / "nan.pkl"
    path.write_bytes(bytes(data))
    _one_line_error(lambda: alis_core.load_generator(path), path, "NaN or infinite")


# ---------------------------------------------------------------------------------------------
# 8. What held stays held: hostile pickles run nothing; malformed safetensors headers, one line.

@pytest.mark.parametrize("module,name", [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "getattr"),
    ("builtins", "__import__"), ("subprocess", "Popen"), ("torch", "load"), ("numpy", "load"),
    ("torch", "FloatStorage"),  # callable with a size: would allocate whatever it is told
    ("torch._utils", "_set_obj_state"), ("pickle", "loads"), ("torch.serialization", "load"),
    ("numpy.core.multiarray", "_reconstruct"), ("torch", "device"),
])
def test_hostile_globals_are_refused_without_running(tmp_path, monkeypatch, module, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00echo\x85R.")
    _one_line_error(lambda: alis_core.load_generator(path), path, f"refusing to load {module}.{name}")


def _safetensors_bytes(header: dict | bytes, data: bytes = b"", declared_len: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if declared_len is None else declared_len) + h + data


_BAD_HEADERS = {
    "huge_header_length": _safetensors_bytes(b"{}", declared_len=1 << 62),
    "not_json": _safetensors_bytes(b"{not json"),
    "offsets_past_end": _safetensors_bytes({"G.x": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
                                           b"\x00" * 16),
    "shape_disagrees": _safetensors_bytes({"G.x": {"dtype": "F32", "shape": [10 ** 9], "data_offsets": [0, 16]}},
                                          b"\x00" * 16),
    "unknown_dtype": _safetensors_bytes({"G.x": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}},
                                        b"\x00" * 16),
    "metadata_not_strings": _safetensors_bytes({"__metadata__": {"format": ["x"]}}),
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(_BAD_HEADERS))
def test_malformed_safetensors_headers_are_one_line(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(_BAD_HEADERS[case])
    _one_line_error(lambda: alis_core.load_generator(path), path)
