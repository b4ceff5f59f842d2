"""Blender-free parts of models, downloads and Set Up Backend: commands, parsing, the setup job. No bpy needed."""
import json
import os
import pathlib
import sys
import time

import pytest

from blender_addon import backend, installer
from blender_addon.params import SkyParams

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_generate_passes_a_model_name_with_no_download_and_a_path_as_it_is():
    p = SkyParams(anchors=2, width=128)
    argv = backend.build_generate_command("py", p, "out.hdr", checkpoint="lhq1024")
    i = argv.index("--checkpoint")
    assert argv[i + 1] == "lhq1024" and "--no-download" in argv  # the extension downloads only from its buttons
    for path in ("/skies/m.safetensors", "m.pkl", "C:\\models\\m.safetensors"):
        argv = backend.build_generate_command("py", p, "out.hdr", checkpoint=path)
        assert argv[argv.index("--checkpoint") + 1] == path and "--no-download" not in argv
    argv = backend.build_generate_command("py", p, "out.hdr")
    assert "--checkpoint" not in argv and "--no-download" not in argv  # the bundled model


def test_download_command_for_a_known_name_and_for_a_url():
    assert backend.build_download_command("py", "lhq1024") == [
        "py", "-m", "alis_core", "download", "lhq1024", "--progress-format", "lines"]
    assert backend.build_download_command("py", "http://h/x.pkl", "mine") == [
        "py", "-m", "alis_core", "download", "http://h/x.pkl", "--name", "mine", "--progress-format", "lines"]
    with pytest.raises(backend.BackendError, match="a name"):
        backend.build_download_command("py", "http://h/x.pkl")
    with pytest.raises(backend.BackendError, match="no model"):
        backend.build_download_command("py", "")


def test_models_come_from_the_backends_hub(tmp_path, monkeypatch):
    # the same query the preferences' Refresh runs, against this Python's alis_core and an empty cache
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIS_URL_LHQ1024", "http://127.0.0.1:9/lhq.pkl")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cache, models = backend.list_models(sys.executable)
    assert cache == str(tmp_path / "home")
    by_name = {m["name"]: m for m in models}
    assert by_name["default"]["status"] == "bundled" and by_name["default"]["size"] > 0
    assert by_name["lhq1024"]["status"] == "download" and by_name["lhq1024"]["url"] == "http://127.0.0.1:9/lhq.pkl"
    with pytest.raises(backend.BackendError, match="no models"):
        backend.parse_models("Traceback: nothing useful")


def test_list_models_names_a_backend_without_alis_core(tmp_path):
    if os.name != "posix":
        pytest.skip("the stand-in Python is a shell script")
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'alis_core'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(backend.BackendError,
                       match=r"cannot list models \(ModuleNotFoundError: No module named 'alis_core'\)"):
        backend.list_models(str(fake))


def test_setup_steps_make_a_venv_install_torch_from_the_chosen_index_then_the_project(tmp_path):
    venv = str(tmp_path / "venv")
    steps = installer.setup_steps("/blender/python", venv, "/x/alis_panoramas-0.1.0-py3-none-any.whl", "CU128")
    py = installer.venv_python(venv)
    assert py.startswith(venv) and os.path.basename(py).startswith("python")
    assert steps[0].argv == ["/blender/python", "-m", "venv", venv]
    torch = steps[1].argv
    assert torch[:4] == [py, "-m", "pip", "install"]
    assert f"torch=={installer.TORCH_VERSION}" in torch
    assert torch[torch.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu128"
    assert steps[2].argv[-1].endswith(".whl") and "--no-deps" not in steps[2].argv  # numpy, pillow, safetensors
    assert {"--no-deps", "--force-reinstall"} <= set(steps[3].argv)  # this extension's alis_core wins
    assert steps[-1].argv[:2] == [py, "-c"] and "import alis_core, torch" in steps[-1].argv[2]
    pypi = installer.setup_steps("/blender/python", venv, "w.whl", "PYPI")[1].argv
    assert "--index-url" not in pypi  # pip's own configuration (PyPI, or the mirror pip is set up with)
    cpu = installer.setup_steps("/blender/python", venv, "w.whl", "CPU")[1].argv
    assert cpu[cpu.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    with pytest.raises(backend.BackendError, match="torch build 'ROCM' is unknown"):
        installer.setup_steps("/blender/python", venv, "w.whl", "ROCM")


def test_project_source_is_the_bundled_wheel_else_the_checkout(tmp_path):
    addon = tmp_path / "alis_sky"
    (addon / "wheels").mkdir(parents=True)
    with pytest.raises(backend.BackendError, match="no alis-panoramas wheel"):
        installer.project_source(str(addon))
    wheel = addon / "wheels" / "alis_panoramas-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert installer.project_source(str(addon)) == str(wheel)
    assert installer.project_source(installer.ADDON_DIR) == str(REPO)  # a checkout without a built zip


def test_error_line_is_pips_error_else_the_last_line():
    assert installer.error_line(["Collecting torch", "ERROR: No matching distribution found for torch==9",
                                 "", "[notice] pip is old"]) == "No matching distribution found for torch==9"
    assert installer.error_line(["a", "Traceback ...", "ValueError: bad"]) == "ValueError: bad"
    assert installer.error_line([]) == "no output"


def _py(code):
    return [sys.executable, "-c", code]


def test_setup_job_runs_the_steps_logs_them_and_reports_the_check(tmp_path):
    log = tmp_path / "setup.log"
    steps = [installer.Step("One", _py("print('first step output')")),
             installer.Step("Check", _py("print('alis_core 0.1.0 torch 2.13.0')"))]
    job = installer.SetupJob(steps, str(log), "/venv/bin/python")
    assert job.wait(60) == backend.DONE
    assert job.fraction == 1.0 and job.result_text == "alis_core 0.1.0 torch 2.13.0"
    assert job.message == "Backend ready: alis_core 0.1.0 torch 2.13.0"
    text = log.read_text()
    assert "== One" in text and "first step output" in text and "== Check" in text and "== done" in text


def test_setup_job_stops_at_the_failing_step_with_pips_error_line(tmp_path):
    log = tmp_path / "setup.log"
    marker = tmp_path / "third_ran"
    steps = [installer.Step("Creating", _py("print('ok')")),
             installer.Step("Installing torch", _py(
                 "import sys; print('Looking in indexes: x'); "
                 "print('ERROR: Could not find a version that satisfies the requirement torch==2.13.0'); "
                 "print('[notice] A new release of pip is available'); sys.exit(1)")),
             installer.Step("Never", _py(f"open({str(marker)!r}, 'w')"))]
    job = installer.SetupJob(steps, str(log), "/venv/bin/python")
    assert job.wait(60) == backend.FAILED
    assert job.error == ("Installing torch failed: Could not find a version that satisfies the requirement "
                         f"torch==2.13.0 (see {log})")
    assert not marker.exists()  # no step after the failing one
    assert job.error in log.read_text()
    # a step whose program cannot start fails the same way
    job = installer.SetupJob([installer.Step("Creating", [str(tmp_path / "no_python"), "-m", "venv", "v"])],
                             str(log), "")
    assert job.wait(60) == backend.FAILED and "could not start" in job.error


def test_setup_job_cancel_terminates_the_running_step(tmp_path):
    marker = tmp_path / "second_ran"
    steps = [installer.Step("Slow", _py("import time; print('start', flush=True); time.sleep(60)")),
             installer.Step("Never", _py(f"open({str(marker)!r}, 'w')"))]
    log = tmp_path / "setup.log"
    job = installer.SetupJob(steps, str(log), "")
    deadline = time.monotonic() + 30
    while not (log.is_file() and "start" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "start" in log.read_text()
    started = time.monotonic()
    job.cancel()
    assert job.wait(30) == backend.CANCELLED and time.monotonic() - started < 10
    assert not marker.exists() and job.message == "Setup cancelled"


def test_download_job_reads_byte_progress_and_the_error_line(tmp_path):
    ok = backend.DownloadJob(_py("import sys; print('progress 0/2000000', file=sys.stderr); "
                                 "print('progress 2000000/2000000', file=sys.stderr)"), "mine")
    assert ok.wait(60) == backend.DONE and ok.fraction == 1.0 and ok.message == "Downloaded mine"
    bad = backend.DownloadJob(_py("import sys; print('error: download of http://x failed: HTTP 404 Not Found; "
                                  "check the URL', file=sys.stderr); sys.exit(2)"), "mine")
    assert bad.wait(60) == backend.FAILED
    assert bad.message == "Download of mine failed: download of http://x failed: HTTP 404 Not Found; check the URL"


def test_parse_models_reads_the_query_output():
    out = json.dumps({"cache": "/c", "models": [{"name": "default", "status": "bundled", "path": "/d",
                                                  "size": 3, "url": "", "description": "d"}]})
    assert backend.parse_models("some warning\n" + out) == ("/c", [
        {"name": "default", "status": "bundled", "path": "/d", "size": 3, "url": "", "description": "d"}])
