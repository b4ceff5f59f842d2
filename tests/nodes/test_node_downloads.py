"""Load ALIS Checkpoint and the model cache: the combo lists cached and known models, and picking a
known one downloads it through alis_core.hub (the CLI's code) with progress and Cancel. The
download comes from a local server on 127.0.0.1 (tests/model_server.py); nothing leaves the machine."""
import dataclasses

import pytest
import torch

import alis_core
from alis_core import hub
from alis_testing import FIXTURES
from model_server import ModelServer
from nodes import loaders

PKL = (FIXTURES / "official_tiny64.pkl").read_bytes()


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException (not an AlisError, not an OSError)."""


@pytest.fixture
def lhq_served(tmp_path, monkeypatch):
    """`lhq1024` pointed at the local server by its env variable, serving the 64 px fixture pickle; the
    known-model table's expected architecture is narrowed to img_resolution 64 to accept it."""
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ALIS_OFFLINE", raising=False)
    monkeypatch.setitem(hub.KNOWN, "lhq1024", dataclasses.replace(hub.KNOWN["lhq1024"],
                                                                  architecture={"img_resolution": 64}))
    with ModelServer({"/lhq.pkl": PKL}) as srv:
        monkeypatch.setenv("ALIS_URL_LHQ1024", srv.url("/lhq.pkl"))
        yield srv


def test_choosing_a_known_model_downloads_it_once_with_progress(lhq_served, tmp_path):
    folders = [tmp_path / "models-alis"]
    assert loaders.checkpoint_names(folders) == [loaders.BUNDLED, "lhq1024 (download)"]
    calls = []
    model = loaders.load_named_checkpoint("lhq1024 (download)", folders=folders, device="cpu",
                                          progress=lambda done, total: calls.append((done, total)))
    assert model.img_resolution == 64 and len(lhq_served.behaviour.gets()) == 1
    assert calls[-1] == (len(PKL), len(PKL))
    ref = alis_core.load_generator(FIXTURES / "official_tiny64.safetensors").state_dict()
    got = model.generator.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    # Now cached: listed by its plain name, and the saved "(download)" spelling still loads, offline.
    assert loaders.checkpoint_names(folders) == [loaders.BUNDLED, "lhq1024"]
    assert loaders.check_choice("lhq1024 (download)", folders) is True
    again = loaders.load_named_checkpoint("lhq1024", folders=folders, device="cpu")
    assert again is model and len(lhq_served.behaviour.gets()) == 1
    assert isinstance(loaders.check_choice("nope", folders), str)


def test_cancel_stops_the_download_and_the_next_run_resumes(lhq_served, tmp_path):
    def cancel(done, total):
        if done >= 1_000_000:
            raise Interrupted()

    with pytest.raises(Interrupted):
        loaders.load_named_checkpoint("lhq1024 (download)", folders=[], device="cpu", progress=cancel)
    kept = (tmp_path / "cache" / "downloads" / "lhq1024.part").stat().st_size
    assert kept >= 1_000_000
    model = loaders.load_named_checkpoint("lhq1024 (download)", folders=[], device="cpu")
    assert model.img_resolution == 64
    assert lhq_served.behaviour.gets()[-1][2] == f"bytes={kept}-"


def test_a_failed_download_names_the_input(lhq_served, monkeypatch):
    lhq_served.behaviour.files.clear()  # 404
    with pytest.raises(ValueError, match=r"Load ALIS Checkpoint: input 'ckpt_name': download of .* HTTP 404"):
        loaders.load_named_checkpoint("lhq1024 (download)", folders=[], device="cpu")
    monkeypatch.setenv("ALIS_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"input 'ckpt_name': model lhq1024 is not downloaded yet.*ALIS_OFFLINE"):
        loaders.load_named_checkpoint("lhq1024", folders=[], device="cpu")
