"""ALIS Invert Image, ALIS Save Anchors and ALIS Load Anchors, called as plain functions."""
from __future__ import annotations

import pytest
import torch

import alis_core
from alis_testing import make_tiny
from nodes import anchors, invert, loaders, panorama


@pytest.fixture
def model(tiny_G):
    return loaders.AlisModel(generator=tiny_G, name="tiny", device=torch.device("cpu"),
                             offload_device=torch.device("cpu"))


def photo(h=48, w=72):
    y = torch.linspace(0, 1, h)[:, None, None].expand(h, w, 1)
    x = torch.linspace(0, 1, w)[None, :, None].expand(h, w, 1)
    return torch.cat([0.3 + 0.5 * y, 0.5 + 0.3 * torch.sin(9 * x), 0.8 - 0.4 * y], dim=2)[None].float()  # [1, H, W, 3]


def test_invert_then_join_new_scenes_renders_the_reconstruction_in_the_loop(model):
    fitted, recon, psnr, where = invert.invert_photo(model, photo(), steps=2, seed=0)
    assert recon.shape == (1, 64, 96, 3) and 0 <= float(recon.min()) and float(recon.max()) <= 1
    assert "columns 128..224" in where and psnr == pytest.approx(float(where.split("PSNR ")[1].split()[0]), abs=0.01)
    loop = panorama.make_panorama(model, anchors.join_anchors(fitted, anchors.make_anchors(model, 1, 3)), wrap=True)
    assert (loop[0, :, 128:224] - recon[0]).abs().max() < 1e-4


def test_invert_progress_and_cancel(model):
    calls = []

    class Cancelled(Exception):
        pass

    def progress(done, total):
        calls.append((done, total))
        if done == 2:
            raise Cancelled  # what ComfyUI's Cancel raises from the progress callback

    with pytest.raises(Cancelled):
        invert.invert_photo(model, photo(), steps=9, progress=progress)
    assert calls == [(1, 9), (2, 9)]
    invert.invert_photo(model, photo(), steps=1)  # the model still works


def test_save_then_load_anchors_round_trip(model, tmp_path):
    a = anchors.make_anchors(model, 3, 4)
    first = invert.save_anchors_file(model, a, "ALIS/anchors", output_dir=str(tmp_path / "out"))
    second = invert.save_anchors_file(model, a, "ALIS/anchors", output_dir=str(tmp_path / "out"))
    assert first == {"filename": "anchors_00001.safetensors", "subfolder": "ALIS"}
    assert second["filename"] == "anchors_00002.safetensors"
    inp = tmp_path / "out"  # use the output folder as the input folder
    assert invert.anchors_file_names(inp) == ["ALIS/anchors_00001.safetensors", "ALIS/anchors_00002.safetensors"]
    back = invert.load_anchors_file(model, "ALIS/anchors_00001.safetensors", input_dir=str(inp))
    assert torch.equal(back.w, a.w) and back.label == a.label


def _bad(kind, kwargs, model, tmp_path):
    if kind == "invert":
        return invert.invert_photo(model, **{"image": photo(), "steps": 1, **kwargs})
    if kind == "save":
        return invert.save_anchors_file(**{"model": model, "anchors": anchors.make_anchors(model, 0, 3), **kwargs},
                                        output_dir=str(tmp_path / "out"))
    other = make_tiny(1, w_dim=32)
    alis_core.anchors.save_anchors(tmp_path / "in" / "other.safetensors", alis_core.sample_anchors(other, 3, 0), other)
    alis_core.save_generator(model.generator, tmp_path / "in" / "model.safetensors")
    return invert.load_anchors_file(model, **kwargs, input_dir=str(tmp_path / "in"))


BAD = [
    ("invert", dict(image=torch.zeros(1, 8, 8)), "ALIS Invert Image", "image"),
    ("invert", dict(image=torch.zeros(1, 8, 8, 3)), "ALIS Invert Image", "image"),  # too small
    ("invert", dict(image=photo().fill_(float("nan"))), "ALIS Invert Image", "image"),
    ("invert", dict(steps=-1), "ALIS Invert Image", "steps"),
    ("invert", dict(seed=-3), "ALIS Invert Image", "seed"),
    ("save", dict(filename_prefix="../escape"), "ALIS Save Anchors", "filename_prefix"),
    ("save", dict(anchors=anchors.AlisAnchors(torch.zeros(3, 7))), "ALIS Save Anchors", "anchors"),
    ("load", dict(anchors_file="other.safetensors"), "ALIS Load Anchors", "anchors_file"),
    ("load", dict(anchors_file="model.safetensors"), "ALIS Load Anchors", "anchors_file"),
    ("load", dict(anchors_file="../x.safetensors"), "ALIS Load Anchors", "anchors_file"),
    ("load", dict(anchors_file="missing.safetensors"), "ALIS Load Anchors", "anchors_file"),
]


@pytest.mark.parametrize("kind, kwargs, node, where", BAD, ids=[f"{k}-{'-'.join(kw)}-{i}" for i, (k, kw, _, _)
                                                               in enumerate(BAD)])
def test_bad_node_input_names_the_input(kind, kwargs, node, where, model, tmp_path):
    with pytest.raises(ValueError) as e:
        _bad(kind, kwargs, model, tmp_path)
    message = str(e.value)
    assert message.startswith(f"{node}: input '{where}': ") and "\n" not in message, message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.safetensors"))
