"""Dataset preparation: formats, crops, zip, skipped files, errors, cache, sampling."""
import json
import logging
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from alis_core.errors import AlisError
from training import data
from training.data import ImageDataset, prepare_dataset
from training.synthetic import SyntheticLandscapes

R = 24


def _pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    """An asymmetric test picture: uint8 [h, w, 3] (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                    (xx * 7 + yy * 3) % 256], axis=-1)
    return np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)


def _save(path, w, h, seed=0, mode="RGB", **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pattern(w, h, seed)).convert(mode).save(path, **kw)
    return path


def test_every_mode_and_format_becomes_rgb_frames(tmp_path):
    src = tmp_path / "photos"
    _save(src / "rgb.jpg", 40, 30)
    _save(src / "sub" / "cmyk.jpg", 40, 30, mode="CMYK")
    _save(src / "grey.png", 40, 30, mode="L")
    _save(src / "pal.png", 40, 30, mode="P")
    _save(src / "photo.webp", 40, 30)
    rgba = np.dstack([_pattern(40, 30), np.full((30, 40), 255, np.uint8)])
    rgba[:, :20, 3] = 0                                     # left half transparent
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray((np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)).save(src / "deep.png")
    (src / "notes.txt").write_text("not an image")          # ignored, not "skipped"
    ds = prepare_dataset(src, R, cache_dir=tmp_path / "cache")

    names = [f["name"] for f in ds.manifest["files"]]
    assert names == ["alpha.png", "deep.png", "grey.png", "pal.png", "photo.webp", "rgb.jpg", "sub/cmyk.jpg"]
    assert ds.manifest["skipped"] == [] and ds.manifest["files_total"] == 7
    assert len(ds) == 14                                    # 40x30 -> 32x24: two crops each
    assert all(ds[i].shape == (3, R, R) and ds[i].dtype == torch.uint8 for i in range(len(ds)))
    alpha, deep, grey = ds[0], ds[2], ds[4]
    assert (alpha[:, :, :4] >= 250).all()                   # transparency composited over white
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert deep.float().std() > 20                          # 16-bit greyscale scaled, not clipped


def test_exif_orientation_is_applied(tmp_path):
    # Stored 30 wide x 60 tall, top half red, bottom half blue; EXIF 6 = rotate 90 deg clockwise,
    # so it shows 60 x 30 with blue on the left and red on the right: two crops at R = 30.
    stored = np.zeros((60, 30, 3), np.uint8)
    stored[:30, :, 0] = 255
    stored[30:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "exif"
    src.mkdir()
    Image.fromarray(stored).save(src / "turned.jpg", exif=exif, quality=95)
    ds = prepare_dataset(src, 30, cache_dir=tmp_path / "cache")
    assert len(ds) == 2
    left, right = ds[0].float().mean(dim=(1, 2)), ds[1].float().mean(dim=(1, 2))
    assert left[2] > 200 and left[0] < 50                   # blue
    assert right[0] > 200 and right[2] < 50                 # red


def test_wide_photo_gives_evenly_spaced_crops(tmp_path):
    img = _pattern(100, R, seed=3)                          # already R tall: no resampling
    src = tmp_path / "wide"
    src.mkdir()
    Image.fromarray(img).save(src / "wide.png")
    Image.fromarray(_pattern(R + 5, R, seed=4)).save(src / "nearly_square.png")
    Image.fromarray(_pattern(R, 3 * R, seed=5)).save(src / "tall.png")
    ds = prepare_dataset(src, R, cache_dir=tmp_path / "cache")
    assert [f["crops"] for f in ds.manifest["files"]] == [1, 1, 4]  # nearly_square, tall, wide
    # 100 px wide -> 4 crops from the left edge to the right edge.
    for k, x0 in enumerate([0, 25, 51, 76]):
        assert np.array_equal(ds[2 + k].numpy(), img[:, x0:x0 + R].transpose(2, 0, 1)), k
    tall = _pattern(R, 3 * R, seed=5)
    assert np.array_equal(ds[1].numpy(), tall[R:2 * R].transpose(2, 0, 1))  # centre of a portrait


def test_large_photo_is_resized_on_the_short_side(tmp_path):
    src = tmp_path / "big"
    _save(src / "big.jpg", 400, 100)                        # -> 96 x 24: four crops
    ds = prepare_dataset(src, R, cache_dir=tmp_path / "cache")
    assert len(ds) == 4
    # The red channel is a horizontal ramp: crops go left to right.
    reds = [ds[i][0].float().mean().item() for i in range(4)]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 120


def test_zip_source(tmp_path):
    zpath = tmp_path / "photos.zip"
    a = _save(tmp_path / "a.png", 48, R, seed=1)
    b = _save(tmp_path / "b.jpg", R, R, seed=2)
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(a, "set/a.png")
        zf.write(b, "b.jpg")
        zf.writestr("readme.md", "hello")
        zf.writestr("__MACOSX/set/._a.png", b"junk")
        zf.writestr("set/.hidden.png", b"junk")
    ds = prepare_dataset(zpath, R, cache_dir=tmp_path / "cache")
    assert ds.manifest["kind"] == "zip"
    assert [f["name"] for f in ds.manifest["files"]] == ["b.jpg", "set/a.png"]
    assert len(ds) == 3                                     # 1 + 2 crops
    assert np.array_equal(ds[1].numpy(), _pattern(48, R, seed=1)[:, :R].transpose(2, 0, 1))


def test_bad_files_are_skipped_with_one_summary_line(tmp_path, caplog):
    src = tmp_path / "mixed"
    _save(src / "good1.png", R, R)
    _save(src / "good2.jpg", 2 * R, R)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    full = (src / "good1.png").read_bytes()
    (src / "truncated.png").write_bytes(full[: len(full) // 2])
    _save(src / "tiny.webp", R // 2 - 1, R // 2 - 1)          # short side < R / 2
    with caplog.at_level(logging.WARNING, logger="training.data"):
        ds = prepare_dataset(src, R, cache_dir=tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["skipped 3 of 5 files (2 unreadable, 1 too small): "
                        "broken.jpg, tiny.webp, truncated.png"]
    assert len(ds) == 3
    kinds = {s["name"]: s["kind"] for s in ds.manifest["skipped"]}
    assert kinds == {"broken.jpg": "unreadable", "truncated.png": "unreadable", "tiny.webp": "too small"}
    assert all(s["reason"] for s in ds.manifest["skipped"])


def test_source_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(AlisError, match="no images in .*empty"):
        prepare_dataset(empty, R, cache_dir=tmp_path / "cache")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"nope")
    _save(bad / "y.png", 4, 4)
    with pytest.raises(AlisError, match=r"no usable images in .*bad: skipped 2 of 2 files \(1 unreadable, 1 too small\): x.png, y.png"):
        prepare_dataset(bad, R, cache_dir=tmp_path / "cache")
    with pytest.raises(AlisError, match="dataset not found: .*missing"):
        prepare_dataset(tmp_path / "missing", R, cache_dir=tmp_path / "cache")
    (tmp_path / "list.txt").write_text("a.jpg")
    with pytest.raises(AlisError, match="neither a folder nor a .zip"):
        prepare_dataset(tmp_path / "list.txt", R, cache_dir=tmp_path / "cache")
    with pytest.raises(AlisError, match="resolution"):
        prepare_dataset("synthetic:4", 2)
    with pytest.raises(AlisError, match="synthetic:N"):
        prepare_dataset("synthetic:0", R)
    assert not list((tmp_path / "cache").glob("*.npy"))     # nothing half-written left behind


def test_cache_is_reused_until_the_folder_changes(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    _save(src / "a.png", 2 * R, R, seed=1)
    _save(src / "b.png", R, R, seed=2)
    cache = tmp_path / "cache"
    first = prepare_dataset(src, R, cache_dir=cache)
    (npy,) = cache.glob("*.npy")
    (manifest,) = cache.glob("*.json")
    stamps = (npy.stat().st_mtime_ns, manifest.stat().st_mtime_ns)
    assert json.loads(manifest.read_text())["frames"] == len(first) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(data, "_decode_frames", no_decoding)
    again = prepare_dataset(src, R, cache_dir=cache)
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))
    assert (npy.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == stamps
    monkeypatch.undo()

    _save(src / "c.png", R, R, seed=3)                      # a new photo: prepared again
    assert len(prepare_dataset(src, R, cache_dir=cache)) == 4
    assert len(prepare_dataset(src, R + 2, cache_dir=cache)) == 4  # another resolution: own cache
    assert len(list(cache.glob("*.npy"))) == 2
    assert not [p for p in cache.iterdir() if p.suffix not in (".npy", ".json")]  # no temp files


def test_sample_batch_is_seeded_and_flips(tmp_path):
    frames = np.stack([_pattern(R, R, seed=s).transpose(2, 0, 1) for s in range(5)])
    ds = ImageDataset(frames)
    a = ds.sample_batch(16, torch.Generator().manual_seed(7))
    b = ds.sample_batch(16, torch.Generator().manual_seed(7))
    c = ds.sample_batch(16, torch.Generator().manual_seed(8))
    assert a.shape == (16, 3, R, R) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    originals = torch.from_numpy(frames).float() / 127.5 - 1

    def matches(x, flipped):
        refs = originals.flip(-1) if flipped else originals
        return any(torch.allclose(x, r) for r in refs)

    big = ds.sample_batch(64, torch.Generator().manual_seed(1))
    n_flipped = sum(matches(x, True) for x in big)
    assert all(matches(x, False) or matches(x, True) for x in big)
    assert 16 < n_flipped < 48
    plain = ds.sample_batch(32, torch.Generator().manual_seed(1), flip=False)
    assert all(matches(x, False) for x in plain)


def test_synthetic_source(tmp_path):
    ds = prepare_dataset("synthetic:5", R)
    assert len(ds) == 5 and ds.resolution == R
    ref = SyntheticLandscapes(R, 5, seed=0)
    assert np.array_equal(ds[2].numpy(), ref.frame_uint8(2).transpose(2, 0, 1))
    other = prepare_dataset("synthetic:5:9", R)
    assert not np.array_equal(np.asarray(other.images), np.asarray(ds.images))
    cached = prepare_dataset("synthetic:5", R, cache_dir=tmp_path)
    assert np.array_equal(np.asarray(cached.images), np.asarray(ds.images))
    (npy,) = tmp_path.glob("*.npy")
    stamp = os.stat(npy).st_mtime_ns
    prepare_dataset("synthetic:5", R, cache_dir=tmp_path)
    assert os.stat(npy).st_mtime_ns == stamp


def test_embedded_srgb_profile_keeps_colours(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc"
    src.mkdir()
    Image.fromarray(_pattern(R, R, seed=6)).save(src / "tagged.png", icc_profile=srgb)
    ds = prepare_dataset(src, R, cache_dir=tmp_path / "cache")
    diff = ds[0].int() - torch.from_numpy(_pattern(R, R, seed=6).transpose(2, 0, 1)).int()
    assert diff.abs().max() <= 1


def _with_alarm(seconds, fn, *args, **kw):
    """Run fn, failing (not hanging) if it blocks, e.g. on opening a FIFO."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        return fn(*args, **kw)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_hostile_files_are_skipped_and_named(tmp_path, caplog, capfd):
    """A FIFO (never opened), fuzzed TIFFs (TypeError/OverflowError inside Pillow, libtiff's errors),
    a 169 Mpx PNG (over Pillow's bomb limit, refused before decoding) next to one good photo: one
    warning and nothing else on stderr, no hang."""
    from hostile_files import bomb_png, damaged_lzw_tiff, fuzzed_tiff, make_png

    src = tmp_path / "photos"
    src.mkdir()
    (src / "good.png").write_bytes(make_png(40, 30))
    os.mkfifo(src / "pipe.jpg")
    (src / "fuzz-a.tif").write_bytes(fuzzed_tiff(2))
    (src / "fuzz-b.tif").write_bytes(fuzzed_tiff(16))
    (src / "lzw.tif").write_bytes(damaged_lzw_tiff())
    (src / "bomb.png").write_bytes(bomb_png())
    with caplog.at_level(logging.WARNING, logger="training.data"):
        ds = _with_alarm(30, prepare_dataset, src, R, cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and [f["name"] for f in ds.manifest["files"]] == ["good.png"]
    kinds = {s["name"]: s["kind"] for s in ds.manifest["skipped"]}
    assert kinds == {"bomb.png": "too large", "fuzz-a.tif": "unreadable", "fuzz-b.tif": "unreadable",
                     "lzw.tif": "unreadable", "pipe.jpg": "not a regular file"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["skipped 5 of 6 files (3 unreadable, 1 too large, 1 not a regular file): "
                        "bomb.png, fuzz-a.tif, fuzz-b.tif, lzw.tif, pipe.jpg"]
    assert capfd.readouterr().err == ""  # neither Pillow's bomb warning nor libtiff's own lines


def test_zip_member_over_the_size_bound_is_skipped_unread(tmp_path, monkeypatch):
    from hostile_files import make_png, zip_declaring

    zip_declaring(tmp_path / "bomb.zip", "big.png", 1_500_000_000, make_png())
    with pytest.raises(AlisError, match=r"bomb.zip: skipped 1 of 1 files \(1 too large\): big.png"):
        prepare_dataset(tmp_path / "bomb.zip", R, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing written for a source without frames
    # The bound applies to what a member really expands to: lowered under an honest member's size.
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as zf:
        zf.writestr("a.png", make_png(40, 30))
        zf.writestr("b.png", make_png(40, 30, seed=1))
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", len(make_png(40, 30)) - 1)
    with pytest.raises(AlisError, match=r"skipped 2 of 2 files \(2 too large\)"):
        prepare_dataset(tmp_path / "ok.zip", R, cache_dir=tmp_path / "cache")


def test_a_fifo_as_the_source_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.zip")
    with pytest.raises(AlisError, match="neither a folder nor a regular file"):
        _with_alarm(30, prepare_dataset, tmp_path / "pipe.zip", R, cache_dir=tmp_path / "cache")


def test_identity_ignores_path_and_mtime_but_not_content(tmp_path):
    from hostile_files import make_png

    a = tmp_path / "a"
    a.mkdir()
    (a / "x.png").write_bytes(make_png(40, 30))
    (a / "y.png").write_bytes(make_png(48, 30))
    first = prepare_dataset(a, R, cache_dir=tmp_path / "cache").manifest["identity"]
    assert first.startswith("files:2:")
    assert prepare_dataset(a, R, cache_dir=tmp_path / "cache").manifest["identity"] == first  # cached
    b = tmp_path / "moved"
    os.rename(a, b)
    os.utime(b / "x.png", (0, 0))
    assert prepare_dataset(b, R, cache_dir=tmp_path / "cache").manifest["identity"] == first
    (b / "z.png").write_bytes(make_png(40, 30, seed=3))
    assert prepare_dataset(b, R, cache_dir=tmp_path / "cache").manifest["identity"] != first
    s4 = prepare_dataset("synthetic:4", R).manifest["identity"]
    assert s4 == prepare_dataset("synthetic:4:0", R, cache_dir=tmp_path / "cache").manifest["identity"]
    assert s4 != prepare_dataset("synthetic:4:1", R).manifest["identity"]
