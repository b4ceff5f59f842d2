"""Checkpoint format: bit-exact round trips, strict loading, one-line errors, safe official import."""
from __future__ import annotations

import io
import json
import pickle

import pytest
import torch
from alis_testing import FIXTURES
from safetensors.torch import save_file

import alis_core
from alis_core import AlisError


def test_save_load_is_bit_exact(tmp_path, tiny_G):
    path = alis_core.save_generator(tiny_G, tmp_path / "g.safetensors")
    G = alis_core.load_generator(path)
    assert G.config == tiny_G.config
    a, b = tiny_G.state_dict(), G.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    w = alis_core.sample_anchors(G, 3, seed=0)
    assert torch.equal(alis_core.panorama(G, w), alis_core.panorama(tiny_G, w))


def test_fp16_checkpoint_is_half_the_size_and_close(tmp_path, tiny_G):
    full = alis_core.save_generator(tiny_G, tmp_path / "f32.safetensors")
    half = alis_core.save_generator(tiny_G, tmp_path / "f16.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    G = alis_core.load_generator(half)
    w = alis_core.sample_anchors(tiny_G, 2, seed=0)
    ref = tiny_G.frame(w[:1], w[:1], w[1:], torch.tensor([0]))
    assert (G.frame(w[:1], w[:1], w[1:], torch.tensor([0])) - ref).abs().max() < 2e-2 * ref.abs().max()


def test_generator_and_discriminator_in_one_file(tmp_path, tiny_G):
    D = alis_core.Discriminator(alis_core.DiscriminatorConfig(img_resolution=64, channel_base=256, channel_max=32))
    path = alis_core.save_generator(tiny_G, tmp_path / "gd.safetensors", D=D)
    D2 = alis_core.load_discriminator(path)
    assert all(torch.equal(x, y) for x, y in zip(D.state_dict().values(), D2.state_dict().values()))
    with pytest.raises(AlisError, match="holds no discriminator"):
        alis_core.load_discriminator(alis_core.save_generator(tiny_G, tmp_path / "g.safetensors"))


def test_bad_files_give_one_line_errors(tmp_path, tiny_checkpoint):
    cases = {}
    cases["missing"] = (tmp_path / "nope.safetensors", "not found")
    trunc = tmp_path / "truncated.safetensors"
    trunc.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    cases["truncated"] = (trunc, "truncated or corrupt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    cases["garbage"] = (garbage, "not a readable")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    cases["foreign"] = (foreign, "not an ALIS checkpoint")
    cases["folder"] = (tmp_path, "is a folder")
    for name, (path, needle) in cases.items():
        with pytest.raises(AlisError) as e:
            alis_core.load_generator(path)
        msg = str(e.value)
        assert needle in msg and "\n" not in msg and str(path) in msg, (name, msg)


def _rewrite(tiny_checkpoint, tmp_path, edit_tensors=None, edit_meta=None):
    from safetensors import safe_open
    with safe_open(str(tiny_checkpoint), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def test_strict_loading(tmp_path, tiny_checkpoint):
    path = _rewrite(tiny_checkpoint, tmp_path, edit_tensors=lambda t: t.pop("G.mapping.fc0.weight"))
    with pytest.raises(AlisError, match="missing 1 tensors .*mapping.fc0.weight"):
        alis_core.load_generator(path)
    path = _rewrite(tiny_checkpoint, tmp_path, edit_tensors=lambda t: t.update({"G.extra": torch.zeros(1)}))
    with pytest.raises(AlisError, match="unexpected 1 tensors"):
        alis_core.load_generator(path)
    path = _rewrite(tiny_checkpoint, tmp_path,
                    edit_tensors=lambda t: t.update({"G.mapping.fc0.bias": torch.zeros(3)}))
    with pytest.raises(AlisError, match="has shape"):
        alis_core.load_generator(path)


def test_unsupported_config_and_version(tmp_path, tiny_checkpoint):
    def newer(meta):
        meta["format_version"] = "99"
    with pytest.raises(AlisError, match="format 99"):
        alis_core.load_generator(_rewrite(tiny_checkpoint, tmp_path, edit_meta=newer))

    def odd_config(meta):
        cfg = json.loads(meta["generator_config"])
        cfg["img_resolution"] = 96
        meta["generator_config"] = json.dumps(cfg)
    with pytest.raises(AlisError, match="power of two"):
        alis_core.load_generator(_rewrite(tiny_checkpoint, tmp_path, edit_meta=odd_config))


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > evil_marker",))


def test_malicious_pickle_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(AlisError, match="refusing to load (posix|nt).system"):
        alis_core.load_generator(path)
    assert not (tmp_path / "evil_marker").exists()


def test_pickle_with_embedded_source_is_not_executed(tmp_path, monkeypatch):
    """A persistence record's module_src is never run, whatever it says."""
    monkeypatch.chdir(tmp_path)
    data = (FIXTURES / "official_tiny64.pkl").read_bytes()
    placeholder = b"# module source omitted from this fixture\n"
    assert placeholder in data
    evil_src = b"open('src_marker','w').write('x')".ljust(len(placeholder) - 1, b"#") + b"\n"
    path = tmp_path / "src.pkl"
    path.write_bytes(data.replace(placeholder, evil_src))
    G = alis_core.load_generator(path)
    assert G.config.img_resolution == 64
    assert not (tmp_path / "src_marker").exists()


def test_official_pickle_errors(tmp_path):
    no_g = tmp_path / "no_g.pkl"
    no_g.write_bytes(pickle.dumps({"G": None}))
    with pytest.raises(AlisError, match="holds no G_ema"):
        alis_core.load_generator(no_g)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes((FIXTURES / "official_tiny64.pkl").read_bytes()[:20000])
    with pytest.raises(AlisError, match="trunc.pkl"):
        alis_core.load_generator(trunc)
    with pytest.raises(AlisError, match="holds no discriminator"):
        alis_core.convert_official(FIXTURES / "official_tiny64.pkl", tmp_path / "x.safetensors",
                                   with_discriminator=True)


def test_unsupported_official_options_are_named(official_fixture):
    from alis_core.legacy import generator_config_from_official
    from safetensors import safe_open
    kw = json.loads(safe_open(str(FIXTURES / "official_tiny64.safetensors"), "pt").metadata()["init_kwargs"])
    for path, value, needle in [(("fmm", "enabled"), True, "fmm.enabled"),
                                (("num_modes",), 4, "num_modes"),
                                (("input", "type"), "const", "input.type")]:
        bad = json.loads(json.dumps(kw))
        d = bad["synthesis_cfg"]
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        with pytest.raises(AlisError, match=needle):
            generator_config_from_official(bad)


@pytest.mark.parametrize("obj", [print, eval, __import__])
def test_restricted_unpickler_refuses_callables(obj):
    from alis_core.legacy import _RestrictedUnpickler
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins"):
        _RestrictedUnpickler(io.BytesIO(pickle.dumps(obj))).load()


def test_load_official_is_one_call_for_config_and_state():
    """legacy.load_official(path) -> (config, state): what the loader builds from, in our names,
    equal to the same network recorded as official-names safetensors."""
    from alis_core.legacy import load_official
    cfg, state = load_official(FIXTURES / "official_tiny64.pkl")
    G = alis_core.load_generator(FIXTURES / "official_tiny64.safetensors")
    ours = G.state_dict()
    assert cfg == G.config and state.keys() == ours.keys()
    assert all(torch.equal(state[k].to(torch.float32), ours[k]) for k in state)


def test_torch_save_zip_is_not_an_official_snapshot(tmp_path):
    path = tmp_path / "model.pkl"
    torch.save({"G_ema": torch.zeros(2)}, path)
    with pytest.raises(AlisError, match="torch.save zip"):
        alis_core.load_generator(path)
