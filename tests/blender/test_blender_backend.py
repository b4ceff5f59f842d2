"""Blender-free parts of the extension: parameters, pixel layout, CLI protocol, jobs. No bpy needed."""
import dataclasses
import os
import sys
import textwrap

import numpy as np
import pytest

from blender_addon import backend, pixels
from blender_addon.params import SkyParams

# ---------------------------------------------------------------------------------------------
# params


def test_params_defaults_validate_and_wrap_by_default():
    p = SkyParams()
    p.validate()
    assert p.wrap is True
    assert p.height * 2 == p.width


@pytest.mark.parametrize(
    "change, word",
    [
        ({"seed": -1}, "seed"),
        ({"anchors": 1}, "anchors"),
        ({"psi": 2.5}, "psi"),
        ({"width": 1001}, "resolution"),
        ({"width": 32}, "resolution"),
        ({"horizon": 1.2}, "horizon"),
        ({"strip_scale": 0.0}, "strip scale"),
        ({"cap_blur": -1.0}, "blur"),
    ],
)
def test_params_reject_bad_values_naming_them(change, word):
    with pytest.raises(ValueError, match=word):
        SkyParams(**change).validate()


def test_file_name_names_pixel_settings_only():
    a = SkyParams(seed=7, anchors=5, psi=0.5, width=1024)
    assert a.file_name() == "alis_sky_s7_k5_psi0.50_1024_wrap_h0.50_x1.00_b2.00.exr"
    assert a.file_name("hdr").endswith(".hdr")
    # rotation and strength are applied by nodes: same pixels, same file
    assert SkyParams(seed=7, anchors=5, psi=0.5, width=1024, rotation=1.0, strength=3.0).file_name() == a.file_name()
    assert SkyParams(seed=8, anchors=5, psi=0.5, width=1024).file_name() != a.file_name()
    assert SkyParams(seed=7, anchors=5, psi=0.5, width=1024, wrap=False).file_name() != a.file_name()


def test_file_name_names_the_sky_and_sun_settings():
    base = SkyParams(seed=7, anchors=5, psi=0.5, width=1024)
    plain = "alis_sky_s7_k5_psi0.50_1024_wrap_h0.50_x1.00_b2.00"
    assert base.file_stem() == plain  # the default sky (physical, auto sun, sun lamp on) keeps its name

    def stem(**kw):
        return SkyParams(seed=7, anchors=5, psi=0.5, width=1024, **kw).file_stem()

    assert stem(sky="blur") == plain + "_blur"
    assert stem(sun_mode="none") == plain + "_sunnone"
    assert stem(sun_mode="manual", sun_azimuth_deg=60, sun_elevation_deg=30) == plain + "_sun60.0_30.0"
    assert stem(sun_lamp=False) == plain + "_disk"  # the sun's disk is in the image
    assert stem(sun_lamp=False, sun_mode="none") == stem(sun_mode="none")  # no sun, no disk: same pixels
    assert stem(exposure=-1.5) == plain + "_ev-1.5"
    # different suns, different files; the manual angles count only in manual mode
    suns = {stem(sun_mode="manual", sun_azimuth_deg=a, sun_elevation_deg=e) for a, e in [(60, 30), (-60, 30), (60, 45)]}
    assert len(suns) == 3
    assert stem(sun_azimuth_deg=90) == plain


def test_file_name_names_the_worlds_model():
    plain = SkyParams(seed=7, anchors=5, psi=0.5, width=1024).file_stem()
    assert SkyParams(seed=7, anchors=5, psi=0.5, width=1024, model="lhq1024").file_stem() == plain + "_mlhq1024"
    assert SkyParams(seed=7, anchors=5, psi=0.5, width=1024, model="//ckpt/My Sky.v2.safetensors").file_stem() \
        == plain + "_mMy-Sky-v2"
    assert SkyParams(model="C:\\models\\mine.pkl").model_label == "mine"
    assert SkyParams(model="  ").file_stem() == SkyParams().file_stem()  # empty: the preference's, unnamed


@pytest.mark.parametrize(
    "change, word",
    [
        ({"sky": "cloudy"}, "sky 'cloudy' is unknown: use one of physical, blur"),
        ({"sun_mode": "moon"}, "sun 'moon' is unknown: use one of auto, none, manual"),
        ({"sun_elevation_deg": 91.0}, "sun elevation"),
        ({"sun_azimuth_deg": float("nan")}, "sun azimuth"),
        ({"exposure": 25.0}, "exposure 25.0 is out of range"),
    ],
)
def test_params_reject_bad_sky_settings_naming_them(change, word):
    with pytest.raises(ValueError, match=word):
        SkyParams(**change).validate()


def test_generate_command_passes_sky_sun_and_exposure():
    default = backend.build_generate_command("/py", SkyParams(), "/o.exr")
    # the defaults are the CLI's, except the disk: the default sun lamp gives that light
    assert "--sky" not in default and not any(a.startswith("--sun=") for a in default)
    assert "--no-sun-disk" in default and not any(a.startswith("--exposure") for a in default)
    assert "--no-sun-disk" not in backend.build_generate_command("/py", SkyParams(sun_lamp=False), "/o.exr")
    p = SkyParams(sky="blur", sun_mode="manual", sun_azimuth_deg=-60, sun_elevation_deg=30.5, exposure=-1)
    cmd = backend.build_generate_command("/py", p, "/o.exr")
    assert cmd[cmd.index("--sky") + 1] == "blur"
    assert "--sun=-60,30.5" in cmd and "--exposure=-1" in cmd  # one token each: "-60" is no option
    assert "--sun=none" in backend.build_generate_command("/py", SkyParams(sun_mode="none"), "/o.exr")


def test_cli_parses_the_sun_the_extension_passes():
    cli = pytest.importorskip("alis_core.cli")
    from alis_core import options

    p = SkyParams(sun_mode="manual", sun_azimuth_deg=-60, sun_elevation_deg=30.5, exposure=-1, sky="blur")
    argv = backend.build_generate_command("/py", p, "/o.exr")[3:]  # from "generate" on
    a = cli.build_parser().parse_args(argv)
    assert options.parse_sun(a.sun) == (-60.0, 30.5) and a.exposure == -1 and a.sky == "blur"
    assert a.sun_disk is False


def test_read_sky_json(tmp_path):
    assert backend.sky_json_path(str(tmp_path / "a.b" / "sky.exr")) == str(tmp_path / "a.b" / "sky.json")
    assert backend.read_sky_json(str(tmp_path / "missing.json")) is None  # a CLI that writes no sidecar
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(backend.BackendError, match="not an alis-sky sidecar"):
        backend.read_sky_json(str(bad))
    bad.write_text("{")
    with pytest.raises(backend.BackendError, match="cannot read the sky's sidecar"):
        backend.read_sky_json(str(bad))
    assert backend.sky_sun(None) is None and backend.sky_sun({"sun": None}) is None


def test_in_process_sky_is_complete_sky_and_returns_its_sun(tiny_G):
    sky = pytest.importorskip("alis_core.sky")
    p = SkyParams(anchors=4, width=128, strip_scale=0.5, sun_mode="manual", sun_azimuth_deg=60, sun_elevation_deg=30)
    lamp, info = backend.generate_in_process(p, generator=tiny_G)
    disk, info_disk = backend.generate_in_process(dataclasses.replace(p, sun_lamp=False), generator=tiny_G)
    sun = backend.sky_sun(info)
    assert sky.SkyInfo.from_dict(info).sun.elevation_deg == sun["elevation_deg"] == 30.0
    assert sun["azimuth_deg"] == 60.0 and sun["irradiance"] > 0 and sun["visible"]
    assert info_disk["sun"] == sun
    # the disk is the only difference: its pixels are far brighter than the sky, and only there
    diff = (disk - lamp).max(axis=2)
    assert diff.max() > 100 * lamp.max()
    row, col = np.unravel_index(diff.argmax(), diff.shape)
    u, v = (col + 0.5) / 128, (row + 0.5) / 64
    assert abs((0.5 - u) * 360 - 60) < 5 and abs((0.5 - v) * 180 - 30) < 5  # where Blender shows az 60, el 30
    assert (diff > 1e-3).sum() <= 9
    lower, info_ev = backend.generate_in_process(dataclasses.replace(p, exposure=1), generator=tiny_G)
    np.testing.assert_allclose(lower, lamp / 2, rtol=1e-5, atol=1e-6)
    assert info_ev["sun"]["irradiance"] == pytest.approx(sun["irradiance"] / 2)


# ---------------------------------------------------------------------------------------------
# pixels


def test_blender_pixels_are_bottom_up_rgba():
    img = np.zeros((2, 3, 3), np.float32)
    img[0, 0] = (1, 0, 0)  # top-left red
    img[1, 2] = (0, 0, 1)  # bottom-right blue
    flat = pixels.hwc_to_blender_pixels(img)
    assert flat.dtype == np.float32 and flat.shape == (2 * 3 * 4,)
    rows = flat.reshape(2, 3, 4)  # Blender row 0 = bottom
    assert rows[0, 2].tolist() == [0, 0, 1, 1]
    assert rows[1, 0].tolist() == [1, 0, 0, 1]
    back = pixels.blender_pixels_to_hwc(flat, 3, 2)
    np.testing.assert_array_equal(back[:, :, :3], img)
    assert (back[:, :, 3] == 1).all()


def test_blender_pixels_reject_wrong_sizes():
    with pytest.raises(ValueError, match="3x2x4"):
        pixels.blender_pixels_to_hwc(np.zeros(10), 3, 2)
    with pytest.raises(ValueError, match="shape"):
        pixels.hwc_to_blender_pixels(np.zeros((2, 3)))


def test_srgb_to_linear_matches_the_standard():
    x = np.array([0.0, 0.04045, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(pixels.srgb_to_linear(x), [0.0, 0.04045 / 12.92, 0.21404, 1.0], rtol=1e-4)


def test_resize_equirect_keeps_the_seam_closed_and_the_mean():
    rng = np.random.default_rng(0)
    # a smooth periodic image: resizing must not create a discontinuity at u = 0 / 1
    u = (np.arange(64) + 0.5) / 64
    row = np.sin(2 * np.pi * u)[None, :, None] * np.ones((32, 1, 3))
    for width in (32, 96, 128):
        out = pixels.resize_equirect(row, width)
        assert out.shape == (width // 2, width, 3)
        uo = (np.arange(width) + 0.5) / width
        np.testing.assert_allclose(out[0, :, 0], np.sin(2 * np.pi * uo), atol=0.01 if width > 64 else 0.05)
    noise = rng.random((16, 32, 3)).astype(np.float32)
    assert abs(pixels.resize_equirect(noise, 16).mean() - noise.mean()) < 1e-3
    np.testing.assert_array_equal(pixels.resize_equirect(noise, 32), noise)
    with pytest.raises(ValueError, match="even"):
        pixels.resize_equirect(noise, 33)


def test_longitude_bands():
    img = pixels.longitude_bands(8, 4, np.eye(4)[:, :3] + 0.0)
    assert img.shape == (4, 8, 3)
    assert img[:, 0:2, 0].all() and img[:, 6:8].sum() == 0  # band 3 is eye row 3 -> black in RGB


# ---------------------------------------------------------------------------------------------
# CLI protocol


def test_generate_command_matches_the_cli_contract():
    p = SkyParams(seed=3, anchors=6, psi=0.8, width=1024, wrap=True, horizon=0.45, strip_scale=1.5, cap_blur=0.25)
    cmd = backend.build_generate_command("/py", p, "/out/sky.hdr", checkpoint="/m/g.safetensors", device="cpu")
    assert cmd[:4] == ["/py", "-m", "alis_core", "generate"]
    args = cmd[4:]

    def value(flag):
        return args[args.index(flag) + 1]

    assert value("--checkpoint") == "/m/g.safetensors"
    assert value("--seed") == "3" and value("--anchors") == "6" and value("--psi") == "0.8"
    assert value("--device") == "cpu" and value("--equirect") == "/out/sky.hdr"
    assert value("--horizon") == "0.45" and value("--strip-scale") == "1.5" and value("--cap-blur") == "0.25"
    assert value("--progress-format") == "lines"
    assert "--wrap" in args
    # empty checkpoint = the CLI's bundled default; no wrap flag when wrap is off
    cmd = backend.build_generate_command("/py", SkyParams(wrap=False), "/o.hdr")
    assert "--checkpoint" not in cmd and "--wrap" not in cmd
    # fill settings at their defaults are left to the CLI's defaults
    assert "--strip-scale" not in cmd and "--cap-blur" not in cmd
    with pytest.raises(backend.BackendError, match="device"):
        backend.build_generate_command("/py", p, "/o.hdr", device="tpu")
    with pytest.raises(ValueError, match="psi"):
        backend.build_generate_command("/py", SkyParams(psi=3.0), "/o.hdr")


def test_parse_progress_and_error_lines():
    assert backend.parse_progress_line("progress 3/8\n") == (3, 8)
    assert backend.parse_progress_line("  progress 8 / 8") == (8, 8)
    assert backend.parse_progress_line("progress 9/8") is None
    assert backend.parse_progress_line("progress 0/0") is None
    assert backend.parse_progress_line("loading model 3/8") is None
    assert backend.parse_error_line("error: checkpoint x.pt not found\n") == "checkpoint x.pt not found"
    assert backend.parse_error_line("warning: slow") is None


def test_subprocess_env_drops_blenders_python_home():
    env = backend.subprocess_env({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"


def test_choose_backend(tmp_path, monkeypatch):
    python = tmp_path / "python"
    python.write_text("")
    assert backend.choose_backend("AUTO", str(python)) == "SUBPROCESS"
    assert backend.choose_backend("SUBPROCESS", str(python)) == "SUBPROCESS"
    with pytest.raises(backend.BackendError, match="does not exist"):
        backend.choose_backend("SUBPROCESS", str(tmp_path / "missing"))
    with pytest.raises(backend.BackendError, match="Backend Python"):
        backend.choose_backend("SUBPROCESS", "")
    monkeypatch.setattr(backend, "in_process_problem", lambda: None)
    assert backend.choose_backend("AUTO", "") == "IN_PROCESS"
    monkeypatch.setattr(backend, "in_process_problem", lambda: "torch is not installed in Blender's Python")
    with pytest.raises(backend.BackendError, match="torch is not installed.*Backend Python"):
        backend.choose_backend("AUTO", "")
    with pytest.raises(backend.BackendError, match="unknown"):
        backend.choose_backend("MAGIC", "")


def test_in_process_problem_names_a_missing_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # find_spec treats a None entry as missing
    assert backend.in_process_problem() == "torch is not installed in Blender's Python"


def test_check_python_reports_a_python_without_the_project(tmp_path):
    with pytest.raises(backend.BackendError, match="does not exist"):
        backend.check_python(str(tmp_path / "nope"))
    # a python where alis_core is missing (check_python calls it as `python -c CODE`)
    wrapper = tmp_path / "python_without_alis"
    hide = "import sys; sys.modules['alis_core'] = None; exec(sys.argv[1])"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{hide}" "$2"\n')
    wrapper.chmod(0o755)
    if os.name != "posix":
        pytest.skip("shell wrapper needs a POSIX shell")
    with pytest.raises(backend.BackendError, match="cannot import alis_core"):
        backend.check_python(str(wrapper))


# ---------------------------------------------------------------------------------------------
# jobs (a stand-in CLI script that speaks the same protocol)

FAKE_CLI = textwrap.dedent(
    """
    import sys, time
    out, mode = sys.argv[1], sys.argv[2]
    print("loading model", file=sys.stderr)
    for i in range(1, 5):
        print(f"progress {i}/4", file=sys.stderr, flush=True)
        time.sleep(0.05 if mode != "slow" else 1.0)
    if mode == "error":
        print("error: checkpoint bad.safetensors is not a generator: convert it with alis convert", file=sys.stderr)
        sys.exit(2)
    if mode == "crash":
        print("Traceback: boom", file=sys.stderr)
        sys.exit(1)
    open(out, "wb").write(b"sky")
    """
)


def _fake_job(tmp_path, mode):
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)
    out = tmp_path / "sky.hdr"
    return backend.SubprocessJob([sys.executable, str(script), str(out), mode], str(out)), out


def test_subprocess_job_reports_progress_and_result(tmp_path):
    job, out = _fake_job(tmp_path, "ok")
    assert job.wait(30) == backend.DONE
    assert job.result_path == str(out) and out.read_bytes() == b"sky"
    assert (job.done, job.total, job.fraction) == (4, 4, 1.0)
    assert job.message == "Done"


def test_subprocess_job_passes_the_cli_error_line(tmp_path):
    job, _ = _fake_job(tmp_path, "error")
    assert job.wait(30) == backend.FAILED
    assert job.error == "checkpoint bad.safetensors is not a generator: convert it with alis convert"
    assert job.result_path is None
    job, _ = _fake_job(tmp_path, "crash")
    assert job.wait(30) == backend.FAILED
    assert "code 1" in job.error and "boom" in job.error


def test_subprocess_job_cancel_kills_the_process(tmp_path):
    job, out = _fake_job(tmp_path, "slow")
    job.cancel()
    assert job.wait(10) == backend.CANCELLED
    assert not out.exists() and job._proc.poll() is not None


def test_subprocess_job_missing_python_fails_cleanly(tmp_path):
    job = backend.SubprocessJob([str(tmp_path / "no_python"), "-m", "alis_core"], str(tmp_path / "o.hdr"))
    assert job.wait(5) == backend.FAILED and "could not start" in job.error


def test_in_process_job_progress_result_cancel_and_failure():
    import threading

    def generate(progress):
        for i in range(1, 4):
            progress(i, 3)
        return np.ones((2, 4, 3), np.float32)

    job = backend.InProcessJob(generate)
    assert job.wait(10) == backend.DONE and job.result_pixels.shape == (2, 4, 3) and job.fraction == 1.0

    gate = threading.Event()

    def slow(progress):
        progress(1, 3)
        gate.wait(10)
        progress(2, 3)  # raises GenerationCancelled once cancel() was called
        raise AssertionError("not reached")

    job = backend.InProcessJob(slow)
    job.cancel()
    gate.set()
    assert job.wait(10) == backend.CANCELLED and job.result_pixels is None

    def broken(progress):
        raise RuntimeError("CUDA out of memory\nmore details")

    job = backend.InProcessJob(broken)
    assert job.wait(10) == backend.FAILED and job.error == "CUDA out of memory"


# ---------------------------------------------------------------------------------------------
# shared choices (alis_core/options.py)


def test_params_and_backend_take_their_choices_from_alis_core_options():
    from alis_core import options

    from blender_addon import params

    p = SkyParams()
    # the extension's defaults, as they always were (changing one changes the pictures)
    assert (p.psi, p.anchors, p.noise_mode) == (0.7, 8, "none")
    assert (p.psi, p.anchors) == (options.BLENDER.psi, options.BLENDER.anchors)
    assert options.BLENDER.fast and options.BLENDER.context
    assert params.options is options and backend.DEVICES == options.DEVICES
    SkyParams(psi=options.PSI_MAX).validate()
    with pytest.raises(ValueError, match=f"psi .* use {options.PSI_MIN:g}..{options.PSI_MAX:g}"):
        SkyParams(psi=options.PSI_MAX + 0.01).validate()
    for mode in options.NOISE_MODES:
        SkyParams(noise_mode=mode).validate()
    with pytest.raises(ValueError, match="noise 'loud' is unknown: use one of none, const, random"):
        SkyParams(noise_mode="loud").validate()


def test_noise_mode_reaches_both_backends(tiny_G):
    default = backend.build_generate_command("/py", SkyParams(), "/o.hdr")
    assert "--noise" not in default and "--context" in default and "--exact" not in default
    cmd = backend.build_generate_command("/py", SkyParams(noise_mode="random"), "/o.hdr")
    assert cmd[cmd.index("--noise") + 1] == "random"
    # the noise mode is part of the file name only when it is not the default (old names stay)
    assert SkyParams(noise_mode="const").file_name() != SkyParams().file_name()
    assert "_n" not in SkyParams().file_stem()
    small = dict(anchors=2, width=64)
    quiet, _ = backend.generate_in_process(SkyParams(**small), generator=tiny_G)
    const, _ = backend.generate_in_process(SkyParams(noise_mode="const", **small), generator=tiny_G)
    assert quiet.shape == const.shape == (32, 64, 3) and not np.allclose(quiet, const)
    np.testing.assert_array_equal(const, backend.generate_in_process(SkyParams(noise_mode="const", **small),
                                                                     generator=tiny_G)[0])


def test_in_process_device_is_checked_by_alis_core_options():
    from alis_core import AlisError

    with pytest.raises(AlisError, match="device must be one of auto, cpu, cuda, mps, got 'tpu'"):
        backend.generate_in_process(SkyParams(), device="tpu")
