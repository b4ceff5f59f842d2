"""Trainer tests: a few CPU steps, outputs, Ctrl-C + bit-exact resume, fine-tuning, bad inputs, SWD drop."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

import alis_core
from alis_core import AlisError
from training.cli import main as train_main
from training.config import PRESETS, TrainConfig, preset
from training.data import prepare_dataset
from training.loop import TIMING_KEYS, Trainer, load_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# A 16 px model: the tiny preset's objective and schedule, smaller geometry, so steps take ~0.1 s.
SMALL = dict(resolution=16, z_dim=32, w_dim=32, channel_base=512, channel_max=64, batch=4,
             metric_num=0, tick_kimg=0.004, snap_kimg=0.008, sample_kimg=1.0)


@pytest.fixture(scope="module")
def data16():
    return prepare_dataset("synthetic:64", 16)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_presets_build_and_override():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.generator_config().img_resolution == cfg.resolution
    cfg = preset("tiny").with_overrides(["r1_gamma=2.5", "ema_rampup=none", "betas=[0,0.9]", "flip=false"])
    assert (cfg.r1_gamma, cfg.ema_rampup, cfg.betas, cfg.flip) == (2.5, None, (0.0, 0.9), False)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(AlisError, match="r1_gama"):
        preset("tiny").with_overrides(["r1_gama=1"])
    with pytest.raises(AlisError, match="whole number"):
        preset("tiny").with_overrides(["batch=2.5"])
    with pytest.raises(AlisError, match="power of two"):
        preset("tiny", resolution=48)


def test_default128_release_fits_25mb(tmp_path):
    cfg = preset("default128")
    G = alis_core.Generator(cfg.generator_config())
    path = alis_core.save_generator(G, tmp_path / "g.safetensors", dtype=torch.float16)
    assert path.stat().st_size <= 25 * 2 ** 20
    assert alis_core.load_generator(path).img_resolution == 128


def test_tiny_preset_steps_write_outputs(tmp_path):
    out = tmp_path / "run"
    rc = train_main(["--data", "synthetic:16", "--preset", "tiny", "--out", str(out), "--kimg", "0.016",
                     "--batch", "8", "--tick-kimg", "0.008", "--set", "metric_num=16", "--quiet"])
    assert rc == 0
    records = _records(out / "stats.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        for k in ("loss_G", "loss_D", "loss_D_real", "loss_D_fake"):
            assert math.isfinite(r[k]), (k, r)
    assert "loss_r1" in records[0] and math.isfinite(records[0]["r1_penalty"])
    assert records[-1]["swd"] > 0 and records[-1]["swd_inf"] > 0
    assert (out / "samples-000000.png").stat().st_size > 0
    G = alis_core.load_generator(out / "latest.safetensors")
    assert G.img_resolution == 32
    assert alis_core.load_discriminator(out / "network-snapshot-000000.safetensors").config.img_resolution == 32
    final = alis_core.load_generator(out / "final.safetensors")
    strip = alis_core.panorama(final, alis_core.sample_anchors(final, 2, seed=0), wrap=True)
    assert strip.shape == (3, 32, 2 * final.anchor_spacing) and torch.isfinite(strip).all()
    state = load_state(out / "state.pt")
    assert state["step"] == 2 and state["cur_nimg"] == 16


def test_ctrl_c_then_resume_equals_uninterrupted(tmp_path, data16):
    """SIGINT after 3 steps saves the state; --resume finishes; stats and weights match a straight run."""
    cfg = preset("tiny", **SMALL, kimg=0.024, pl_weight=2.0, pl_interval=2, r1_interval=2, ema_kimg=0.01)
    straight = Trainer(cfg, data16, tmp_path / "a", progress=False).run()
    assert straight.status == "done" and straight.step == 6

    def interrupt(trainer):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    first = Trainer(cfg, data16, tmp_path / "b", progress=False).run(on_step=interrupt)
    assert first.status == "interrupted" and first.step == 3
    assert load_state(tmp_path / "b" / "state.pt")["step"] == 3
    assert not (tmp_path / "b" / "final.safetensors").exists()
    rc = train_main(["--out", str(tmp_path / "b"), "--resume", "--quiet"])  # data source comes from the state
    assert rc == 0

    a, b = _records(tmp_path / "a" / "stats.jsonl"), _records(tmp_path / "b" / "stats.jsonl")
    assert len(a) == 6 and "loss_pl" in a[0] and "loss_r1" in a[0]
    assert _without_timings(a) == _without_timings(b)
    sa, sb = load_state(tmp_path / "a" / "state.pt"), load_state(tmp_path / "b" / "state.pt")
    for key in ("G", "D", "G_ema"):
        for name, t in sa[key].items():
            assert torch.equal(t, sb[key][name]), (key, name)
    assert torch.equal(sa["pl_mean"], sb["pl_mean"])
    fa = alis_core.load_generator(tmp_path / "a" / "final.safetensors").state_dict()
    fb = alis_core.load_generator(tmp_path / "b" / "final.safetensors").state_dict()
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_kimg_stop_then_resume_longer(tmp_path, data16):
    cfg = preset("tiny", **SMALL, kimg=0.008)
    assert Trainer(cfg, data16, tmp_path, progress=False).run().step == 2
    rc = train_main(["--out", str(tmp_path), "--resume", "--kimg", "0.016", "--quiet"])
    assert rc == 0
    assert load_state(tmp_path / "state.pt")["step"] == 4
    assert (tmp_path / "network-snapshot-000000.safetensors").is_file()


def test_resume_rejects_changed_model(tmp_path, data16, capsys):
    Trainer(preset("tiny", **SMALL, kimg=0.004), data16, tmp_path, progress=False).run()
    rc = train_main(["--out", str(tmp_path), "--resume", "--batch", "8", "--quiet"])
    assert rc == 2 and "batch differ" in capsys.readouterr().err


def test_fine_tune_from_snapshot_with_d_and_official(tmp_path, data16):
    run = tmp_path / "base"
    Trainer(preset("tiny", **SMALL, kimg=0.004), data16, run, progress=False).run()
    rc = train_main(["--data", "synthetic:16", "--init", str(run / "latest.safetensors"), "--out",
                     str(tmp_path / "ft"), "--kimg", "0.004", "--quiet", "--set", "metric_num=0"])
    assert rc == 0
    base_d = alis_core.load_discriminator(run / "latest.safetensors").state_dict()
    ft_state = load_state(tmp_path / "ft" / "state.pt")
    assert ft_state["config"]["resolution"] == 16 and ft_state["config"]["batch"] == 8  # geometry from CKPT
    changed = [k for k in base_d if not torch.equal(base_d[k], ft_state["D"][k])]
    assert changed  # trained ...
    assert all((ft_state["D"][k] - base_d[k]).abs().max() < 0.05 for k in base_d)  # ... from the base D
    # An official snapshot (64 px, converted on the fly; with its D), one step at batch 4.
    official = FIXTURES / "official_tiny64.pkl"
    rc = train_main(["--data", "synthetic:4", "--init", str(official), "--out", str(tmp_path / "off"),
                     "--kimg", "0.004", "--batch", "4", "--quiet", "--set", "metric_num=0",
                     "--set", "pl_weight=0"])
    assert rc == 0
    G = alis_core.load_generator(tmp_path / "off" / "final.safetensors")
    assert G.config.to_dict() == alis_core.load_generator(official).config.to_dict()
    # The fine-tuned run resumes: its state rebuilds the checkpoint's architecture, D included.
    assert train_main(["--out", str(tmp_path / "off"), "--resume", "--kimg", "0.008", "--quiet"]) == 0
    assert load_state(tmp_path / "off" / "state.pt")["step"] == 2
    # final.safetensors has no D: fine-tuning from it starts a fresh D.
    assert train_main(["--data", "synthetic:16", "--init", str(run / "final.safetensors"), "--out",
                       str(tmp_path / "ft2"), "--kimg", "0.004", "--quiet", "--set", "metric_num=0"]) == 0


def test_bad_datasets_give_clear_errors(tmp_path, capsys, data16):
    def err(*args):
        rc = train_main([*args, "--out", str(tmp_path / "run"), "--quiet", "--cache-dir", str(tmp_path / "cache")])
        assert rc == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "dataset not found" in err("--data", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no images" in err("--data", str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.png").write_bytes(b"\x89PNG broken")
    assert "no usable images" in err("--data", str(bad))
    assert "--resume" in err("--data", "synthetic:4", "--resume")
    assert "--data is required" in err()
    with pytest.raises(AlisError, match="prepare the data at 32 px"):
        Trainer(preset("tiny", kimg=0.004), data16, tmp_path / "x", progress=False)
    with pytest.raises(AlisError, match="mbstd_group_size"):
        Trainer(preset("tiny", **{**SMALL, "batch": 6}), data16, tmp_path / "x", progress=False)


def test_bfloat16_autocast_steps(tmp_path, data16):
    cfg = preset("tiny", **SMALL, kimg=0.008, dtype="bfloat16", r1_interval=1, pl_weight=2.0, pl_interval=1)
    assert Trainer(cfg, data16, tmp_path, progress=False).run().status == "done"
    for r in _records(tmp_path / "stats.jsonl"):
        assert all(math.isfinite(r[k]) for k in ("loss_G", "loss_D", "loss_r1", "loss_pl"))


def test_swd_drops_on_procedural_landscapes(tmp_path):
    """~30 s: a 16 px model on procedural landscapes gets clearly closer to them than at initialisation."""
    data = prepare_dataset("synthetic:256", 16)
    cfg = preset("tiny", resolution=16, z_dim=32, w_dim=32, channel_base=512, channel_max=64, batch=8,
                 kimg=0.8, metric_num=128, metric_kimg=0.0, tick_kimg=0.2, snap_kimg=1.0, sample_kimg=1.0)
    trainer = Trainer(cfg, data, tmp_path, progress=False)
    start = trainer.measure()
    trainer.run()
    end = _records(tmp_path / "stats.jsonl")[-1]
    assert end["swd"] < 0.8 * start["swd"], (start, end)
    assert end["swd_inf"] < 0.8 * start["swd_inf"], (start, end)


def test_every_parameter_trains(tmp_path, data16):
    """Each step's G phase must reach every G weight, also after frozen-G passes (D phase, samples)."""
    trainer = Trainer(preset("tiny", **SMALL, kimg=2.0, pl_weight=0.0), data16, tmp_path, progress=False)
    g0 = {k: v.clone() for k, v in trainer.G.named_parameters()}
    d0 = {k: v.clone() for k, v in trainer.D.named_parameters()}
    trainer.cur_nimg = 1000  # past kimg_to_reach_max_shift_strength: frames move inside their windows
    assert trainer.train_step()["shift_strength"] == 1.0
    g1 = {k: v.clone() for k, v in trainer.G.named_parameters()}
    trainer.train_step()
    trainer.train_step()
    stuck = [k for k, v in trainer.G.named_parameters() if torch.equal(v, g1[k]) or torch.equal(v, g0[k])]
    assert not stuck
    assert not [k for k, v in trainer.D.named_parameters() if torch.equal(v, d0[k])]


def test_fresh_model_is_not_aligned_with_sample_seeds(tmp_path, data16):
    """The init seed is derived, so z from sample_anchors(seed=cfg.seed) is an ordinary latent."""
    from alis_core.anchors import sample_latents

    trainer = Trainer(preset("tiny", **SMALL, kimg=0.004), data16, tmp_path, progress=False)
    with torch.no_grad():
        norms = [trainer.G.mapping(sample_latents(32, 64, s)).norm(dim=1).mean() for s in range(4)]
    assert max(norms) < 1.3 * min(norms), norms


def test_seam_discontinuity_measures_breaks_at_patch_boundaries():
    from training.loss import seam_discontinuity
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 32)
    ramp = x.expand(64, 3, 8, 32).clone()  # continues linearly across the boundary at column 16
    assert seam_discontinuity(ramp, 2).abs().max() < 1e-8
    step = ramp.clone()
    step[..., 16:] += 0.5  # a jump exactly at the boundary, in every frame
    assert (seam_discontinuity(step, 2) > 0.1).all()
    band = ramp.clone()
    band[..., 14:18] -= 0.05  # a faint darker band at the boundary of every frame: the visible grid
    assert (seam_discontinuity(band, 2) > 0.05).all()
    # the same jump at a different place in every frame (content, not the grid) barely counts
    anywhere = ramp.clone()
    for i, c in enumerate(torch.randint(4, 28, [64], generator=g).tolist()):
        anywhere[i, :, :, c:] += 0.5 if c != 16 else 0.0
    locked = ramp.clone()
    locked[..., 10:] += 0.5
    assert seam_discontinuity(anywhere, 2).mean() < 0.1 * seam_discontinuity(locked, 2).mean()
    noisy = torch.stack([ramp[0] + 0.3 * torch.randn(3, 8, 32, generator=g), ramp[1]])
    assert seam_discontinuity(noisy, 2)[1] < seam_discontinuity(noisy, 2)[0]  # frames differ, the batch term is shared


def test_seam_weight_adds_the_seam_term_and_may_change_on_resume(tmp_path, data16):
    cfg = preset("tiny", **SMALL, kimg=0.008, seam_weight=5.0)
    assert Trainer(cfg, data16, tmp_path, progress=False).run().status == "done"
    records = _records(tmp_path / "stats.jsonl")
    assert all(r["seam_G"] > 0 for r in records)
    assert train_main(["--out", str(tmp_path), "--resume", "--kimg", "0.016", "--set", "seam_weight=0",
                       "--quiet"]) == 0
    assert "seam_G" not in _records(tmp_path / "stats.jsonl")[-1]
