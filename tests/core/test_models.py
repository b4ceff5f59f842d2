"""Model names and the download cache (alis_core.hub, `alis download`, `alis models`), against a
local HTTP server on 127.0.0.1 (tests/model_server.py) that serves the official-format fixture and
misbehaves on demand. Nothing here reaches outside the machine."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import alis_core
from alis_core import AlisError, cli, hub, outputs
from alis_testing import FIXTURES
from model_server import ModelServer, closed_port_url

PKL = (FIXTURES / "official_tiny64.pkl").read_bytes()
SAFETENSORS = (FIXTURES / "official_tiny64.safetensors").read_bytes()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty cache ($ALIS_HOME), downloading allowed, no URL overrides, no waiting between retries."""
    root = tmp_path / "alis-home"
    monkeypatch.setenv("ALIS_HOME", str(root))
    for var in ("ALIS_OFFLINE", "ALIS_URL_LHQ1024", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "RETRY_WAIT_S", (0.0, 0.0, 0.0))
    return root


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def relaxed_lhq(monkeypatch, url: str) -> None:
    """Point `lhq1024` at the local server (its env variable) and accept the 64 px fixture in place of
    the 1024 px model: the known-model table's expected architecture is narrowed to img_resolution 64."""
    monkeypatch.setenv(hub.KNOWN["lhq1024"].env, url)
    monkeypatch.setitem(hub.KNOWN, "lhq1024", dataclasses.replace(hub.KNOWN["lhq1024"],
                                                                  architecture={"img_resolution": 64}))


def fixture_generator():
    return alis_core.load_generator(FIXTURES / "official_tiny64.safetensors")


def same_weights(path: Path) -> bool:
    a, b = alis_core.load_generator(path).state_dict(), fixture_generator().state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the rule: path or name ------------------------------------------------------------------------

def test_paths_and_names_follow_one_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not hub.is_path("lhq1024") and not hub.is_path("my-model_2")
    for value in ("lhq1024.pkl", "x.safetensors", "runs/x", "./lhq1024", "Foo", "a b", Path("lhq1024")):
        assert hub.is_path(value), value
    (tmp_path / "lhq1024").write_bytes(b"")
    assert hub.is_path("lhq1024")  # an existing file wins over the name


@pytest.mark.parametrize("name, what", [("../x", "not a model name"), ("a/b", "not a model name"),
                                        ("x.pkl", "not a model name"), ("Mine", "not a model name"),
                                        ("default", "reserved"), ("", "not a model name")])
def test_bad_names_are_refused(home, capsys, name, what):
    with ModelServer({"/x.pkl": PKL}) as srv:
        rc, _, err = run_cli(capsys, "download", srv.url("/x.pkl"), "--name", name, "--progress-format", "none")
        assert srv.behaviour.gets() == []
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --name") and what in err
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_only_http_urls_are_downloaded(home, capsys, tmp_path):
    rc, _, err = run_cli(capsys, "download", (tmp_path / "x.pkl").as_uri(), "--name", "mine")
    assert rc == 2 and "only http:// and https://" in err


def test_unknown_name_says_what_is_known(home):
    with pytest.raises(AlisError, match=r"unknown model name 'nope'.*lhq1024.*alis download URL --name nope"):
        alis_core.load_generator("nope")


def test_default_is_the_bundled_model(home):
    assert hub.resolve("default") == alis_core.DEFAULT_CHECKPOINT


# --- downloads ---------------------------------------------------------------------------------------

def test_download_resumes_after_a_drop_and_the_name_works_everywhere(home, capsys, tmp_path):
    cut = 1_000_000
    with ModelServer({"/x.pkl": PKL}) as srv:
        srv.behaviour.drop_after = cut
        rc, out, err = run_cli(capsys, "download", srv.url("/x.pkl"), "--name", "mine", "--progress-format", "none")
        assert rc == 0, err
        gets = srv.behaviour.gets()
        assert [g[2] for g in gets] == [None, f"bytes={cut}-"]  # the retry asked only for the remainder
        final = home / "models" / "mine.safetensors"
        assert out.strip() == f"mine: {final}"
        assert outputs.sniff_kind(final) == "checkpoint" and same_weights(final)
        assert not any((home / "downloads").iterdir()) and not (home / "models" / "mine.pkl").exists()
        entry = hub.read_index()["mine"]
        assert entry["sha256"] == hub.file_sha256(final) and entry["size"] == final.stat().st_size
        assert entry["source_size"] == len(PKL) and entry["url"] == srv.url("/x.pkl")

        rc, out, err = run_cli(capsys, "info", "mine")
        assert rc == 0, err
        assert f"mine ({final})" in out and "64 x 64 px" in out
        png = tmp_path / "pano.png"
        rc, out, err = run_cli(capsys, "generate", "--checkpoint", "mine", "--anchors", "2", "--out", png,
                               "--progress-format", "none", "--device", "cpu")
        assert rc == 0, err
        assert png.is_file()

        rc, out, _ = run_cli(capsys, "download", srv.url("/x.pkl"), "--name", "mine")
        assert rc == 0 and len(srv.behaviour.gets()) == 2  # cached: nothing transferred


def test_a_rerun_continues_a_partial_file(home, monkeypatch):
    monkeypatch.setattr(hub, "RETRY_WAIT_S", ())  # no retries: the drop ends the first run
    cut = 700_000
    with ModelServer({"/m.safetensors": SAFETENSORS}) as srv:
        srv.behaviour.drop_after = cut
        with pytest.raises(AlisError, match=r"broke off after 0 bytes.*run the same command again"):
            hub.download(srv.url("/m.safetensors"), "mine")
        part = home / "downloads" / "mine.part"
        assert part.stat().st_size == cut and not (home / "models" / "mine.safetensors").exists()
        seen = []
        path = hub.download(srv.url("/m.safetensors"), "mine", progress=lambda d, t: seen.append((d, t)))
        assert srv.behaviour.gets()[-1][2] == f"bytes={cut}-"
    assert path.read_bytes() == SAFETENSORS  # a .safetensors download is installed as it is
    assert seen[0] == (cut, len(SAFETENSORS)) and seen[-1] == (len(SAFETENSORS), len(SAFETENSORS))
    assert not part.exists()


def test_a_server_that_ignores_range_restarts_the_download(home):
    with ModelServer({"/x.pkl": PKL}) as srv:
        srv.behaviour.drop_after, srv.behaviour.honour_range = 500_000, False
        path = hub.download(srv.url("/x.pkl"), "mine")
        gets = srv.behaviour.gets()
    assert len(gets) == 2 and gets[1][2] == "bytes=500000-"  # asked for the rest, got the whole file again
    assert same_weights(path) and hub.read_index()["mine"]["source_size"] == len(PKL)


@pytest.mark.parametrize("served, expected", [(b"<html>hello</html>" * 5000, "neither an official .pkl"),
                                              (None, "HTTP 404")])
def test_garbage_and_404_are_one_error_line_and_install_nothing(home, capsys, served, expected):
    files = {"/x.pkl": served} if served is not None else {}
    with ModelServer(files) as srv:
        rc, out, err = run_cli(capsys, "download", srv.url("/x.pkl"), "--name", "mine", "--progress-format", "none")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: download of http://127.0.0.1:") and expected in err
    assert not (home / "models" / "mine.safetensors").exists()
    assert not [p for p in (home / "downloads").iterdir()]  # a bad file is not kept to be resumed
    assert "mine" not in hub.read_index()


def test_a_truncated_pickle_fails_the_structural_checks(home):
    with ModelServer({"/x.pkl": PKL[:len(PKL) // 2]}) as srv:
        with pytest.raises(AlisError, match="is not a valid ALIS checkpoint"):
            hub.download(srv.url("/x.pkl"), "mine")
    assert not (home / "models" / "mine.safetensors").exists()


def test_no_network_is_one_line_naming_the_url_and_the_manual_way(home, capsys):
    url = closed_port_url()
    rc, _, err = run_cli(capsys, "download", url, "--name", "mine", "--progress-format", "none")
    assert rc == 2 and err.count("\n") == 1
    assert f"cannot download {url}" in err and "alis convert" in err and "by hand" in err


# --- known names: first use, the architecture check, offline ----------------------------------------

def test_known_name_downloads_on_first_use_from_its_env_url(home, capsys, monkeypatch, tmp_path):
    with ModelServer({"/lhq.pkl": PKL}) as srv:
        relaxed_lhq(monkeypatch, srv.url("/lhq.pkl"))
        rc, out, err = run_cli(capsys, "info", "lhq1024")
        assert rc == 0, err
        assert len(srv.behaviour.gets()) == 1 and "64 x 64 px" in out
        G = alis_core.load_generator("lhq1024")  # the library resolves the name too, from the cache now
        assert len(srv.behaviour.gets()) == 1 and G.img_resolution == 64
    assert "licence" in hub.read_index()["lhq1024"]


def test_known_name_with_another_architecture_is_refused(home, monkeypatch):
    with ModelServer({"/lhq.pkl": PKL}) as srv:
        monkeypatch.setenv("ALIS_URL_LHQ1024", srv.url("/lhq.pkl"))  # the 64 px fixture is not LHQ 1024
        with pytest.raises(AlisError, match=r"is not the lhq1024 model: it has img_resolution 64, .* where "
                                            r"lhq1024 has img_resolution 1024.*ALIS_URL_LHQ1024"):
            hub.download("lhq1024")
    assert not (home / "models" / "lhq1024.safetensors").exists()


def test_no_download_and_offline_never_touch_the_network(home, capsys, monkeypatch, tmp_path):
    with ModelServer({"/lhq.pkl": PKL}) as srv:
        relaxed_lhq(monkeypatch, srv.url("/lhq.pkl"))
        rc, _, err = run_cli(capsys, "generate", "--checkpoint", "lhq1024", "--no-download",
                             "--out", tmp_path / "p.png")
        assert rc == 2 and "--no-download" in err and "alis download lhq1024" in err
        monkeypatch.setenv("ALIS_OFFLINE", "1")
        with pytest.raises(AlisError, match="ALIS_OFFLINE=1"):
            alis_core.load_generator("lhq1024")
        assert srv.behaviour.gets() == []


# --- the cache: index, corruption, listing, lock, cancel ---------------------------------------------

def test_corruption_is_caught_on_load_and_by_verify_and_force_downloads_again(home, capsys):
    with ModelServer({"/m.safetensors": SAFETENSORS}) as srv:
        path = hub.download(srv.url("/m.safetensors"), "mine")
        rc, out, _ = run_cli(capsys, "models", "--verify")
        assert rc == 0 and any(line.startswith("mine") and "verified" in line for line in out.splitlines())
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # same size, new mtime: the full hash runs on load
        path.write_bytes(bytes(data))
        with pytest.raises(AlisError, match=r"cached model mine .* sha256 .*alis download mine --force"):
            alis_core.load_generator("mine")
        rc, _, err = run_cli(capsys, "models", "--verify")
        assert rc == 2 and "damaged" in err
        path.write_bytes(bytes(data[:-10]))
        with pytest.raises(AlisError, match=r"has \d+ bytes, the index recorded \d+"):
            hub.resolve("mine")
        rc, _, err = run_cli(capsys, "download", srv.url("/m.safetensors"), "--name", "mine", "--force",
                             "--progress-format", "none")
        assert rc == 0 and len(srv.behaviour.gets()) == 2, err
    assert path.read_bytes() == SAFETENSORS and hub.resolve("mine") == path


def test_models_lists_bundled_known_and_cached(home, capsys, monkeypatch):
    with ModelServer({"/m.safetensors": SAFETENSORS}) as srv:
        hub.download(srv.url("/m.safetensors"), "mine")
    rc, out, _ = run_cli(capsys, "models")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rc == 0 and out.splitlines()[0] == f"cache {home}"
    assert "bundled" in lines["default"] and str(alis_core.DEFAULT_CHECKPOINT) in lines["default"]
    assert "download" in lines["lhq1024"] and hub.KNOWN["lhq1024"].url in lines["lhq1024"]
    assert "cached" in lines["mine"] and str(home / "models" / "mine.safetensors") in lines["mine"]
    assert f"{len(SAFETENSORS) / 1e6:.1f} MB" in lines["mine"]


def test_a_second_process_waits_for_the_download_in_progress(home, monkeypatch):
    monkeypatch.setattr(hub, "LOCK_POLL_S", 0.05)
    with ModelServer({"/m.safetensors": SAFETENSORS}) as srv:
        (home / "models").mkdir(parents=True)
        result = {}
        with outputs.FolderLock(home / "models", name=".mine.lock"):  # "another process" downloading mine
            t = threading.Thread(target=lambda: result.setdefault("path", hub.download(srv.url("/m.safetensors"),
                                                                                       "mine")))
            t.start()
            time.sleep(0.5)
            assert t.is_alive() and srv.behaviour.gets() == []  # waits, does not download beside it
        t.join(60)
    assert result["path"].read_bytes() == SAFETENSORS


def test_cancel_keeps_the_partial_file_and_the_next_download_resumes(home):
    """The API the Blender preferences use: progress(done, total) and a cancel flag."""
    flag = threading.Event()

    def progress(done, total):
        if done >= 600_000:
            flag.set()  # the user pressed Cancel

    with ModelServer({"/m.safetensors": SAFETENSORS}) as srv:
        with pytest.raises(hub.DownloadCancelled, match="cancelled"):
            hub.download(srv.url("/m.safetensors"), "mine", progress=progress, cancel=flag.is_set)
        kept = (home / "downloads" / "mine.part").stat().st_size
        assert 600_000 <= kept < len(SAFETENSORS)
        path = hub.download(srv.url("/m.safetensors"), "mine")
        assert srv.behaviour.gets()[-1][2] == f"bytes={kept}-"
    assert path.read_bytes() == SAFETENSORS


def test_keep_pickle_keeps_the_official_file(home, capsys):
    with ModelServer({"/x.pkl": PKL}) as srv:
        rc, _, err = run_cli(capsys, "download", srv.url("/x.pkl"), "--name", "mine", "--keep-pickle",
                             "--progress-format", "none")
    assert rc == 0, err
    assert (home / "models" / "mine.pkl").read_bytes() == PKL


def test_cache_root_defaults_per_platform(monkeypatch, tmp_path):
    monkeypatch.delenv("ALIS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.name != "nt" and sys.platform != "darwin":
        assert hub.cache_root() == tmp_path / "alis"
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "h"))
    assert hub.cache_root() == tmp_path / "h" and hub.model_path("x") == tmp_path / "h" / "models" / "x.safetensors"


def test_importing_touches_no_network(tmp_path):
    code = ("import socket\n"
            "def refuse(*a, **k): raise SystemExit('network used at import')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
            "import alis_core.hub, alis_core.cli, alis_core.checkpoint\n")
    env = {**os.environ, "ALIS_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # nor does it create the cache


# --- the trainer: --init and eval take names, prepared data lives in the same cache ------------------

@pytest.mark.parametrize("argv", [["train", "--init", "{name}", "--data", "synthetic:8", "--out", "{out}"],
                                  ["eval", "{name}", "--data", "synthetic:8", "--num", "8"]])
def test_trainer_commands_resolve_names(home, capsys, monkeypatch, tmp_path, argv):
    from training import cli as train_cli, cli_eval  # the checkout's trainer (`alis` may run an installed one)
    main = {"train": train_cli.main, "eval": cli_eval.main}[argv[0]]

    def run(name):
        rc = main([a.format(name=name, out=tmp_path / "run") for a in argv[1:]])
        return rc, capsys.readouterr().err

    with ModelServer({"/lhq.pkl": PKL}) as srv:
        relaxed_lhq(monkeypatch, srv.url("/lhq.pkl"))
        monkeypatch.setenv("ALIS_OFFLINE", "1")
        rc, err = run("lhq1024")
        assert rc == 2 and "model lhq1024 is not downloaded yet" in err and "ALIS_OFFLINE=1" in err
        rc, err = run("nope")
        assert rc == 2 and "unknown model name 'nope'" in err
        assert srv.behaviour.gets() == []


def test_prepared_data_defaults_to_the_same_cache(home, monkeypatch):
    from training.data import default_cache_dir  # the checkout's trainer, as tests/training imports it
    monkeypatch.delenv("ALIS_CACHE_DIR", raising=False)
    assert default_cache_dir() == home / "datasets"
    monkeypatch.setenv("ALIS_CACHE_DIR", str(home / "elsewhere"))
    assert default_cache_dir() == home / "elsewhere"
