"""Range/layout conversions, sRGB transfer functions and the PNG / HDR / EXR writers."""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alis_core.errors import AlisError
from alis_core.image import (
    atomic_path, chw_to_hwc, from_unit, hwc_to_chw, linear_to_srgb, load_float_image, load_image,
    read_png_text, save_float_image, save_png, srgb_to_linear, to_unit,
)


def test_unit_range_conversions_torch_and_numpy():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5])
    torch.testing.assert_close(to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    np.testing.assert_allclose(to_unit(x.numpy()), [0.0, 0.0, 0.5, 1.0, 1.0])
    y = torch.rand(3, 4, 5) * 2 - 1
    torch.testing.assert_close(from_unit(to_unit(y)), y)
    assert isinstance(to_unit(y.numpy()), np.ndarray)


def test_layout_conversions_single_and_batched():
    x = torch.rand(3, 4, 5)
    assert chw_to_hwc(x).shape == (4, 5, 3)
    torch.testing.assert_close(chw_to_hwc(x)[1, 2], x[:, 1, 2])
    torch.testing.assert_close(hwc_to_chw(chw_to_hwc(x)), x)
    b = np.random.default_rng(0).random((2, 3, 4, 5))
    assert chw_to_hwc(b).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(hwc_to_chw(chw_to_hwc(b)), b)
    with pytest.raises(AlisError, match="shape"):
        chw_to_hwc(torch.rand(4, 5))


def test_srgb_transfer_functions():
    # Reference values of IEC 61966-2-1 (piecewise curve, knee at 0.04045 / 0.0031308).
    x = torch.tensor([0.0, 0.04045, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(srgb_to_linear(x), torch.tensor([0.0, 0.0031308, 0.2140411, 1.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    v = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(v)), v)
    np.testing.assert_allclose(srgb_to_linear(v.numpy()), srgb_to_linear(v).numpy())
    np.testing.assert_allclose(linear_to_srgb(v.numpy()), linear_to_srgb(v).numpy())
    assert torch.all(srgb_to_linear(v).diff() > 0)  # monotonic, continuous across the knee


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png8_round_trip(tmp_path, channels):
    img = torch.rand(channels, 9, 13, generator=torch.Generator().manual_seed(channels))
    path = save_png(tmp_path / "a.png", img)
    back = load_image(path)
    assert back.shape == img.shape
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6


def test_png16_round_trip_text_and_independent_decoder(tmp_path):
    img = torch.rand(3, 7, 11, generator=torch.Generator().manual_seed(0))
    text = {"alis:seed": 42, "note": "Δ landscape"}  # non-Latin-1 value goes into iTXt
    path = save_png(tmp_path / "deep" / "a16.png", img, bits=16, text=text)
    back = load_image(path)
    assert back.shape == img.shape
    assert (back - img).abs().max() <= 0.5 / 65535 + 1e-6  # 256x finer than 8 bits
    assert read_png_text(path) == {"alis:seed": "42", "note": "Δ landscape"}
    # Pillow decodes our encoder's file independently (reduced to 8 bits for RGB).
    with Image.open(path) as im:
        assert im.size == (11, 7)
        pil = np.asarray(im.convert("RGB"))
    expected = np.rint(img.numpy() * 65535).astype(np.uint16).transpose(1, 2, 0) >> 8
    np.testing.assert_array_equal(pil, expected)


def test_png16_rgba_and_grey(tmp_path):
    for c in (1, 4):
        img = torch.rand(c, 5, 6)
        assert (load_image(save_png(tmp_path / f"c{c}.png", img, bits=16)) - img).abs().max() <= 0.5 / 65535 + 1e-6


def test_png_clamps_and_validates(tmp_path):
    img = torch.tensor([[[-0.5, 0.5, 1.5]]]).expand(3, 1, 3)
    back = load_image(save_png(tmp_path / "c.png", img))
    torch.testing.assert_close(back[0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    with pytest.raises(AlisError, match="bits"):
        save_png(tmp_path / "b.png", img, bits=12)
    with pytest.raises(AlisError, match=r"\[C, H, W\]"):
        save_png(tmp_path / "b.png", torch.rand(2, 4, 4))


def test_hdr_round_trip_is_linear_light(tmp_path):
    img = torch.rand(3, 6, 200, generator=torch.Generator().manual_seed(1))  # 200 = 128 + 72 columns
    path = save_float_image(tmp_path / "sky.hdr", img)
    back = load_float_image(path)
    linear = srgb_to_linear(img)
    assert back.shape == img.shape
    # RGBE shares one exponent per pixel: error relative to the pixel's brightest channel.
    rel = (back - linear).abs() / linear.max(dim=0, keepdim=True).values
    assert rel.max() < 0.01
    assert (back - img).abs().mean() > 0.05  # really stored as linear, not as the sRGB values


def test_hdr_reader_handles_run_length_scanlines(tmp_path):
    # One scanline of 8 pixels in the run-length format: every pixel (128, 64, 32, e=129),
    # i.e. 1.0, 0.5, 0.25 (+ half a step) -- each component written as a run of 8.
    w = 8
    data = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 8\n" + bytes([2, 2, 0, w])
    for value in (128, 64, 32, 129):
        data += bytes([128 + w, value])
    path = tmp_path / "rle.hdr"
    path.write_bytes(data)
    back = load_float_image(path)
    expected = torch.tensor([128.5, 64.5, 32.5]) / 128
    torch.testing.assert_close(back[:, 0, :], expected[:, None].expand(3, w))


def test_exr_without_package_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # makes `import OpenEXR` fail
    with pytest.raises(AlisError, match="pip install OpenEXR"):
        save_float_image(tmp_path / "sky.exr", torch.rand(3, 4, 8))
    assert not (tmp_path / "sky.exr").exists()


def test_exr_round_trip(tmp_path):
    pytest.importorskip("OpenEXR")
    img = torch.rand(3, 5, 10)
    back = load_float_image(save_float_image(tmp_path / "sky.exr", img))
    torch.testing.assert_close(back, srgb_to_linear(img))


def test_float_image_rejects_other_suffixes(tmp_path):
    with pytest.raises(AlisError, match=r"\.hdr or \.exr"):
        save_float_image(tmp_path / "sky.png", torch.rand(3, 4, 8))


def test_unwritable_path_raises_alis_error_naming_it(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a folder should be")
    target = blocker / "out" / "pano.png"
    with pytest.raises(AlisError, match="not_a_dir"):
        save_png(target, torch.rand(3, 4, 4))
    with pytest.raises(AlisError, match="pano.hdr"):
        save_float_image(blocker / "pano.hdr", torch.rand(3, 4, 8))


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "pano.png"
    save_png(path, torch.zeros(3, 4, 4))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == before  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pano.png"]  # no temporary left behind
    save_png(path, torch.ones(3, 4, 4), bits=16)
    assert load_image(path).min() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pano.png"]


def test_load_image_decodes_16_bit_png_from_another_encoder(tmp_path):
    # Pillow writes 16-bit grey with adaptive per-row filters (Sub, Up, Average, Paeth).
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 60000, 24)[None, :] + np.linspace(0, 3000, 16)[:, None]
    values = (ramp + rng.integers(0, 500, (16, 24))).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    back = load_image(tmp_path / "grey16.png")
    assert back.shape == (1, 16, 24)
    np.testing.assert_array_equal(np.rint(back[0].numpy() * 65535).astype(np.uint16), values)


def test_large_png8_is_deflated_on_every_core_and_reads_back_exactly(tmp_path, monkeypatch):
    """8-bit PNGs of 4 M pixels and more take the built-in encoder (Sub filter, the deflate
    stream cut in pieces compressed at once): Pillow and zlib read them back as written, text
    chunks included, with one thread or several."""
    from alis_core import image
    rng = np.random.default_rng(3)
    smooth = np.kron(rng.random((3, 16, 32), dtype=np.float32), np.ones((1, 128, 80), np.float32))  # [3, 2048, 2560]
    img = np.clip(smooth + 0.02 * rng.random(smooth.shape, dtype=np.float32), 0, 1)
    assert img.shape[1] * img.shape[2] >= image._PARALLEL_PNG_MIN_PIXELS
    want = np.moveaxis(np.rint(img * 255).astype(np.uint8), 0, -1)
    written = set()
    monkeypatch.setattr(image, "_write_png8_pillow", lambda *a: written.add("pillow"))
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            path = save_png(tmp_path / f"big{threads}.png", img, text={"alis": "sky", "note": "ü"})
        finally:
            torch.set_num_threads(old)
        with Image.open(path) as im:
            im.load()
            assert np.array_equal(np.asarray(im), want)
            assert im.text == {"alis": "sky", "note": "ü"}
    assert not written
    # Pieces start without their predecessor's window: a little larger, not much.
    assert (tmp_path / "big2.png").stat().st_size < 1.02 * (tmp_path / "big1.png").stat().st_size


def test_exr_radiance_round_trips_exactly_in_piz_planes_and_leaves_openexr_threads_as_they_were(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    from alis_core.image import save_radiance
    hdr = torch.rand(3, 6, 12) * 10
    hdr[0, 1, 2] = 2.5e5  # a sun above half-float range
    before = OpenEXR.global_thread_count()
    path = save_radiance(tmp_path / "sky.exr", hdr)
    assert OpenEXR.global_thread_count() == before
    assert torch.equal(load_float_image(path), hdr)
    with OpenEXR.File(str(path), header_only=True) as f:
        assert f.header()["compression"] == OpenEXR.PIZ_COMPRESSION


@pytest.mark.parametrize("width", [8, 129, 256, 300])
def test_hdr_fast_reader_matches_the_general_decoder(tmp_path, monkeypatch, width):
    """Our own .hdr files (literal runs only) are read by slicing, others by the general
    decoder: both give the same values."""
    from alis_core import image
    hdr = (torch.rand(3, 5, width, generator=torch.Generator().manual_seed(width)) ** 3) * 40
    hdr[:, 0, :3] = 0
    path = image.save_radiance(tmp_path / "sky.hdr", hdr)
    fast = load_float_image(path)
    calls = []
    monkeypatch.setattr(image, "_literal_scanlines", lambda *a: calls.append(1))
    slow = load_float_image(path)
    assert calls and torch.equal(fast, slow)
    assert bool(((fast - hdr).abs() <= hdr.amax(0) / 100 + 1e-6).all())  # RGBE: 8 bits below each pixel's peak


def test_flipped_and_read_only_arrays_save_like_any_other(tmp_path):
    """A view with negative strides (an image flipped with a[:, ::-1], as hosts do with bottom-up
    buffers) or a read-only one saves as its values, in every format."""
    from alis_core.image import save_radiance
    a = np.random.default_rng(5).random((3, 8, 12), dtype=np.float32)
    flipped, read_only = a[:, ::-1], np.broadcast_to(a, a.shape)
    for name, img in (("flipped", flipped), ("read_only", read_only)):
        png = save_png(tmp_path / f"{name}.png", img)
        assert np.array_equal(np.asarray(Image.open(png)), np.moveaxis(np.rint(img * 255).astype(np.uint8), 0, -1))
        back = load_float_image(save_radiance(tmp_path / f"{name}.hdr", img))
        assert bool(((back - torch.from_numpy(img.copy())).abs() <= 0.01).all())


def test_concurrent_exr_writes_leave_openexr_threads_as_they_were(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    import threading
    from alis_core.image import save_radiance
    before = OpenEXR.global_thread_count()
    x = torch.rand(3, 32, 64)

    def write(i):
        for j in range(5):
            save_radiance(tmp_path / f"t{i}_{j}.exr", x)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert OpenEXR.global_thread_count() == before
    assert all(torch.equal(load_float_image(p), x) for p in tmp_path.glob("*.exr"))
