"""Photo inversion (alis_core.invert): the fitted anchors redraw the photo inside a closed loop."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alis_core
from alis_core import invert
from alis_core.anchors import load_anchors, sample_anchors, save_anchors
from alis_core.cli import main
from alis_core.panorama import panorama, seam_score
from alis_testing import make_tiny

CAMERA_PHOTO = Path(__file__).resolve().parents[2] / "docs" / "img" / "aitzgorri.jpg"  # docs/img/CREDITS.md


def loop_of(G, anchors):
    return panorama(G, anchors, wrap=True, context=True)


def photo01(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth "landscape" made here: sky gradient, a hill line, textured ground. [3, h, w] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None].expand(h, w)
    ridge = 0.5 + 0.1 * torch.sin(6 * x + float(torch.rand(1, generator=g)) * 6) + 0.05 * torch.sin(17 * x)
    ground = (y > ridge).float()
    tex = torch.nn.functional.avg_pool2d(torch.rand(1, 1, h, w, generator=g), 5, 1, 2)[0, 0]
    sky = torch.stack([0.4 + 0.3 * y, 0.6 + 0.2 * y, 0.9 - 0.1 * y])
    land = torch.stack([0.25 + 0.3 * tex, 0.4 + 0.3 * tex, 0.15 + 0.1 * tex])
    return (sky * (1 - ground) + land * ground).clamp(0, 1)


def test_bundled_model_frame_is_redrawn_at_27_db_and_the_loop_shows_it():
    """The default inversion of a frame the bundled model drew, and the same pixels in the loop."""
    G = alis_core.load_generator(fast=True)
    H = G.img_resolution
    layout = invert.photo_layout(G, H)
    source = loop_of(G, sample_anchors(G, 6, seed=3))
    x0, x1 = layout.columns
    frame01 = (source[:, :, x0:x1] + 1) / 2
    r = invert.invert_image(G, frame01, seed=0)
    assert r.steps == invert.DEFAULT_STEPS and not r.interrupted
    assert r.psnr >= 27.0, r.psnr
    anchors, starts = invert.loop_anchors(G, [r.anchors], 7, seed=5)
    assert starts == [0]
    loop = loop_of(G, anchors)
    window = loop[:, :, x0:x1]
    assert invert.psnr(window, r.target) >= r.psnr - 1.0
    assert torch.allclose(window, r.recon, atol=1e-4)
    assert seam_score(loop, G.config.patch_width) < 1.5  # the photo's context anchors stay in the model's range


def test_camera_photo_inverts_to_the_reported_psnr_and_its_loop_closes_exactly(tmp_path, capsys):
    """The docs' camera photo (a 768 x 512 JPEG) through `alis invert` with the bundled model: the
    PSNR it prints is the one the loop's pixels have at the printed columns, and the loop closes."""
    out = tmp_path / "photo.safetensors"
    assert run(["invert", CAMERA_PHOTO, "--out", out, "--steps", 10, "--seed", 12, "--progress-format", "none"]) == 0
    m = re.search(r"reconstruction PSNR (\d+\.\d+) dB; the photo is columns (\d+)\.\.(\d+)", capsys.readouterr().err)
    assert m, "alis invert printed no PSNR"
    reported, x0, x1 = float(m[1]), int(m[2]), int(m[3])
    G = alis_core.load_generator(fast=True)
    w, info = load_anchors(out, G)
    assert (x0, x1) == tuple(info["columns"]) == (256, 448)  # 3:2 at the model's 128 px: 192 px from anchor 1
    photo = invert.read_photo(CAMERA_PHOTO)
    target, _ = invert.photo_to_target(G, photo)
    start = invert.invert_image(G, photo, steps=0, seed=12).psnr  # the starting code, before any step
    assert reported > start + 1.0, (reported, start)  # the fit moved the anchors towards the photo
    anchors, starts = invert.loop_anchors(G, [w], 6, seed=3)
    assert starts == [0]
    loop = loop_of(G, anchors)
    assert invert.psnr(loop[:, :, x0:x1], target) == pytest.approx(reported, abs=0.01)
    rolled = loop_of(G, torch.roll(anchors, 1, dims=0))  # the 360° seam is like any anchor boundary
    assert torch.allclose(rolled, torch.roll(loop, G.anchor_spacing, dims=2), atol=1e-5)


def test_recon_is_what_the_loop_renders_for_a_photo_wider_than_a_frame(tiny_G):
    G = tiny_G
    img = photo01(48, 200)  # 267 px at 64 px high: more than one anchor interval (128 px)
    r = invert.invert_image(G, img, steps=3, seed=1, candidates=2)
    width = round(200 * G.img_resolution / 48)
    assert r.recon.shape == r.target.shape == (3, G.img_resolution, width)
    assert r.columns[1] - r.columns[0] == width
    layout = invert.photo_layout(G, width)
    assert r.anchors.shape == (layout.num_anchors, G.w_dim)
    i0, i1 = layout.fitted  # the anchors interpolated across the photo; the context ones keep the start code
    assert (i0, i1) == (1, 5) and layout.num_anchors == 6  # columns 128..395, anchors every 128 px
    assert torch.equal(r.anchors[0], r.anchors[5]) and not torch.equal(r.anchors[0], r.anchors[1])
    anchors, starts = invert.loop_anchors(G, [sample_anchors(G, 2, 9), r.anchors], 12, seed=4)
    x0, x1 = invert.photo_columns(G, r.columns, starts[1])
    loop = loop_of(G, anchors)
    assert torch.allclose(loop[:, :, x0:x1], r.recon, atol=1e-5)
    # the loop closes as any loop does: rotating its anchors by one rolls it by one interval
    rolled = loop_of(G, torch.roll(anchors, 1, dims=0))
    assert torch.allclose(rolled, torch.roll(loop, G.anchor_spacing, dims=2), atol=1e-5)


def test_inversion_is_deterministic_for_a_seed_and_improves_the_fit(tiny_G):
    img = photo01(64, 64, seed=2)
    a = invert.invert_image(tiny_G, img, steps=6, seed=7, candidates=3)
    b = invert.invert_image(tiny_G, img, steps=6, seed=7, candidates=3)
    assert torch.equal(a.anchors, b.anchors) and a.psnr == b.psnr
    assert a.psnr >= a.history[0]  # never worse than the start: the best iterate is kept
    assert a.psnr == pytest.approx(invert.psnr(a.recon, a.target))


def test_ctrl_c_keeps_the_best_anchors_so_far_and_other_errors_cancel(tiny_G):
    img = photo01(64, 64, seed=3)
    flags = [p.requires_grad for p in tiny_G.parameters()]

    def stop_at_3(done, total):
        if done == 3:
            raise KeyboardInterrupt

    r = invert.invert_image(tiny_G, img, steps=50, seed=0, progress=stop_at_3, candidates=0)
    assert r.interrupted and r.steps == 3
    assert r.psnr == pytest.approx(max(r.history), abs=1e-3)  # the best scored iterate, rendered again

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        invert.invert_image(tiny_G, img, steps=5, progress=cancel, candidates=0)
    assert [p.requires_grad for p in tiny_G.parameters()] == flags  # the model is left as it was


def test_grey_alpha_cmyk_and_16_bit_photos_are_converted(tiny_G, tmp_path):
    img = photo01(40, 60, seed=4)
    rgb, alpha = invert.photo_to_target(tiny_G, img)
    assert alpha is None and rgb.shape == (3, 64, 96)
    grey, _ = invert.photo_to_target(tiny_G, img[:1])
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    opaque, a = invert.photo_to_target(tiny_G, torch.cat([img, torch.ones(1, 40, 60)]))
    assert a is None and torch.equal(opaque, rgb)
    half = torch.cat([img, (torch.arange(60) < 30).float().expand(1, 40, 60)])
    _, a = invert.photo_to_target(tiny_G, half)
    assert a is not None and float(a[0, :, :40].min()) == 1.0 and float(a[0, :, 56:].max()) == 0.0
    # alpha weights the error: changing transparent pixels changes nothing
    t, a = invert.photo_to_target(tiny_G, half)
    other = t.clone()
    other[:, :, 70:] = -1
    assert invert.psnr(other, t, a) > 60
    # files: CMYK JPEG and 16-bit PNG read as RGB
    u8 = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(u8).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    alis_core.save_png(tmp_path / "deep.png", img, bits=16)
    cmyk = invert.read_photo(tmp_path / "cmyk.jpg")
    deep = invert.read_photo(tmp_path / "deep.png")
    assert cmyk.shape == deep.shape == (3, 40, 60)
    assert (cmyk - img).abs().mean() < 0.05 and (deep - img).abs().max() < 1e-4


def test_anchors_file_round_trip_and_other_models_are_refused(tiny_G, tmp_path):
    w = sample_anchors(tiny_G, 5, seed=2)
    path = save_anchors(tmp_path / "a.safetensors", w, tiny_G, {"columns": [128, 192], "psnr": 21.5})
    back, info = load_anchors(path, tiny_G)
    assert torch.equal(back, w) and info == {"columns": [128, 192], "psnr": 21.5}
    save_anchors(path, w[:3], tiny_G)  # an anchors file is replaced without --force
    assert load_anchors(path)[0].shape[0] == 3
    other = make_tiny(0, w_coord_dist=2.0)
    with pytest.raises(alis_core.AlisError, match="another model.*w_coord_dist"):
        load_anchors(path, other)
    ckpt = tmp_path / "model.safetensors"
    alis_core.save_generator(tiny_G, ckpt)
    with pytest.raises(alis_core.AlisError, match="not an anchors file"):
        load_anchors(ckpt, tiny_G)
    with pytest.raises(alis_core.AlisError, match="already exists and is a checkpoint"):
        save_anchors(ckpt, w, tiny_G)


def test_loop_through_two_blocks_spreads_new_scenes_between_them(tiny_G):
    a, b = sample_anchors(tiny_G, 4, 1), sample_anchors(tiny_G, 3, 2)
    anchors, starts = invert.loop_anchors(tiny_G, [a, b], 11, seed=3)
    assert starts == [0, 6] and anchors.shape[0] == 11
    assert torch.equal(anchors[:4], a) and torch.equal(anchors[6:9], b)
    assert torch.equal(anchors[4:6], sample_anchors(tiny_G, 4, 3)[:2])
    with pytest.raises(alis_core.AlisError, match="needs 7.."):
        invert.loop_anchors(tiny_G, [a, b], 6)


def test_multiscale_ssim_and_psnr():
    a = photo01(64, 64, 1)
    assert float(invert.multiscale_ssim(a, a)) == pytest.approx(1.0)
    assert float(invert.multiscale_ssim(a, a.flip(2))) < 0.9
    assert invert.psnr(a * 2 - 1, (a * 2 - 1) + 0.02) == pytest.approx(10 * np.log10(4 / 0.02 ** 2), rel=1e-4)


# ------------------------------------------------------------------------------------------------
# The command line

def run(args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


@pytest.fixture
def cli_dir(tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.chdir(tmp_path)
    Image.fromarray((photo01(48, 80).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save("a.png")
    Image.fromarray((photo01(60, 60, 5).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save("b.jpg")
    (tmp_path / "notes.png").write_text("my notes, not an image")
    Image.new("RGB", (10, 40)).save("tiny.png")
    Image.new("RGB", (900, 100)).save("wide.png")
    Image.new("1", (9000, 8000)).save("huge.png")
    (tmp_path / "model.safetensors").write_bytes(Path(tiny_checkpoint).read_bytes())
    other = make_tiny(1, w_dim=32)
    save_anchors("other.safetensors", sample_anchors(other, 4, 0), other)
    return tmp_path


def test_cli_invert_then_generate_a_loop_that_holds_the_photo(cli_dir, capsys):
    assert run(["invert", "a.png", "--out", "a.safetensors", "--checkpoint", "model.safetensors", "--steps", 3,
                "--preview", "recon.png", "--progress-format", "none"]) == 0
    err = capsys.readouterr().err
    assert "reconstruction PSNR" in err and "columns 128..235" in err
    w, info = load_anchors("a.safetensors")
    assert info["columns"] == [128, 235] and info["steps"] == 3
    assert Image.open("recon.png").size == (107, 64)
    assert run(["generate", "--anchors-file", "a.safetensors", "--wrap", "--checkpoint", "model.safetensors",
                "--anchors", 8, "--out", "loop.png", "--progress-format", "none"]) == 0
    assert "columns 128..235 of the loop" in capsys.readouterr().err
    loop = alis_core.load_image("loop.png")
    recon = alis_core.load_image("recon.png")
    assert loop.shape == (3, 64, 8 * 128)
    assert (loop[:, :, 128:235] - recon).abs().max() <= 1.5 / 255  # both 8-bit roundings of the same pixels


def test_cli_from_photo_to_photo(cli_dir, capsys, monkeypatch):
    monkeypatch.setattr(invert, "DEFAULT_STEPS", 2)
    assert run(["generate", "--from-photo", "a.png", "--to-photo", "b.jpg", "--anchors", 14, "--wrap",
                "--checkpoint", "model.safetensors", "--out", "ab.png", "--progress-format", "none"]) == 0
    err = capsys.readouterr().err
    # a.png: 4 anchors from 0; 6 new scenes split 3 + 3; b.jpg (64 px wide): 4 anchors from 7
    assert "a.png: columns 128..235 of the loop" in err
    assert "b.jpg: columns 1024..1088 of the loop" in err
    assert alis_core.load_image("ab.png").shape == (3, 64, 14 * 128)


BAD = [
    (["invert", "notes.png", "--out", "x.safetensors"], "cannot read photo notes.png"),
    (["invert", "missing.jpg", "--out", "x.safetensors"], "missing.jpg is not a file"),
    (["invert", "tiny.png", "--out", "x.safetensors"], "at least 16 px"),
    (["invert", "wide.png", "--out", "x.safetensors"], "wider than 8:1"),
    (["invert", "huge.png", "--out", "x.safetensors"], "megapixels"),
    (["invert", "a.png", "--out", "x.png"], "must end in .safetensors"),
    (["invert", "a.png", "--out", "model.safetensors"], "already exists and is a checkpoint"),
    (["invert", "a.png", "--out", "x.safetensors", "--steps", "-1"], "--steps must be within"),
    (["invert", "a.png", "--out", "x.safetensors", "--preview", "p.txt"], "--preview"),
    (["generate", "--anchors-file", "other.safetensors", "--wrap"], "made for another model"),
    (["generate", "--anchors-file", "model.safetensors", "--wrap"], "not an anchors file"),
    (["generate", "--anchors-file", "nothing.safetensors", "--wrap"], "is not a file"),
    (["generate", "--from-photo", "a.png"], "add --wrap"),
    (["generate", "--to-photo", "a.png", "--wrap"], "--to-photo needs --from-photo"),
    (["generate", "--from-photo", "a.png", "--anchors-file", "other.safetensors", "--wrap"], "not both"),
    (["generate", "--from-photo", "notes.png", "--wrap"], "cannot read photo"),
    (["generate", "--from-photo", "a.png", "--wrap", "--anchors", "3"], "needs 4..4096 anchors"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_is_one_error_line(args, needle, cli_dir, capsys):
    before = sorted(p.name for p in cli_dir.iterdir())
    extra = [] if "--checkpoint" in args else ["--checkpoint", "model.safetensors"]
    assert run(args + extra + ["--progress-format", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert sorted(p.name for p in cli_dir.iterdir()) == before
