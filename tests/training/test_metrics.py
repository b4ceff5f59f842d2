"""SWD metric: zero on identical sets, seeded, ordered sensibly; panorama crops; `alis eval`."""
from __future__ import annotations

import json

import pytest
import torch

import alis_core
from training import metrics
from training.cli_eval import main as eval_main
from training.data import prepare_dataset


@pytest.fixture(scope="module")
def landscapes():
    return prepare_dataset("synthetic:96", 32)


def test_laplacian_pyramid_levels_and_band_pass():
    x = torch.rand(2, 3, 64, 64)
    levels = metrics.laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    flat = torch.full((1, 3, 32, 32), 0.3)
    band = metrics.laplacian_pyramid(flat)
    assert band[0].abs().max() < 1e-6  # a flat image has no detail
    assert torch.allclose(band[-1], torch.full_like(band[-1], 0.3))


def test_swd_identical_zero_seeded_and_ordered(landscapes):
    a = metrics.real_images(landscapes, 48, seed=0)
    b = metrics.real_images(landscapes, 48, seed=1)
    d_same = metrics.swd(a, a)["mean"]  # not 0: each set draws its own random neighbourhoods
    first = metrics.swd(a, b, seed=3)
    assert first == metrics.swd(a, b, seed=3)  # deterministic for a seed
    assert len(first["levels"]) == 2  # 32 and 16 px
    noise = torch.rand(48, 3, 32, 32) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(a, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    d_real = first["mean"]
    d_blur = metrics.swd(a, blurred)["mean"]
    d_noise = metrics.swd(a, noise)["mean"]
    assert d_same < d_blur and d_real < d_blur < d_noise
    assert d_noise > 4 * d_real


def test_swd_rejects_mismatched_sets():
    ref = metrics.SWDReference(torch.rand(16, 3, 16, 16))
    with pytest.raises(alis_core.AlisError, match="expected 16 fake images"):
        ref.distance(torch.rand(8, 3, 16, 16))


def test_panorama_crops_come_from_wrapped_strips(tiny_G):
    crops = metrics.panorama_crops(tiny_G, 6, seed=0)
    assert crops.shape == (6, 3, 64, 64) and torch.isfinite(crops).all()
    assert crops.abs().max() <= 1.0
    again = metrics.panorama_crops(tiny_G, 6, seed=0)
    assert torch.equal(crops, again)
    frames = metrics.generate_frames(tiny_G, 5, seed=0, batch_size=2)
    assert frames.shape == (5, 3, 64, 64)
    assert torch.equal(frames, metrics.generate_frames(tiny_G, 5, seed=0, batch_size=2))


def test_eval_cli_prints_table_and_json(tmp_path, capsys):
    G = alis_core.Generator(alis_core.GeneratorConfig.tiny(img_resolution=16, channel_base=256, channel_max=32,
                                                           z_dim=16, w_dim=16))
    ckpt = alis_core.save_generator(G, tmp_path / "g.safetensors")
    assert eval_main([str(ckpt), "--data", "synthetic:16", "--num", "16", "--seam-seeds", "2"]) == 0
    out = capsys.readouterr().out
    for label in ("SWD x1e3 (frames)", "SWD x1e3 (panorama crops)", "ratio inf / frames", "seam score mean"):
        assert label in out
    assert eval_main([str(ckpt), "--data", "synthetic:16", "--num", "16", "--seam-seeds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["swd"] > 0 and result["swd_inf"] > 0 and result["seam_mean"] > 0 and result["grid_mean"] > 0
    assert abs(result["swd_ratio"] - result["swd_inf"] / result["swd"]) < 1e-9
    assert eval_main([str(tmp_path / "missing.safetensors"), "--data", "synthetic"]) == 2
    assert "not found" in capsys.readouterr().err
