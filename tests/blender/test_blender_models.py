"""Models in real Blender: the preferences' list and Download buttons, online access, the World's Model field.

Downloads run `alis download` in the backend Python (this Python, with the repository on PYTHONPATH)
against a local HTTP server, into an ALIS_HOME in a temporary folder. The known model's architecture
check (lhq1024 is 1024 px) cannot be relaxed from outside the backend, so a successful download goes
through the same operator with a URL and a name (`alis download URL --name mine`); the known name's
own button is tested up to that check.
"""
import importlib
import os
import pathlib
import re
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from test_blender_extension import FakeLayout, _draw, _interactive, _Proxy, _pump, _texts, assert_sky_wiring

REPO = pathlib.Path(__file__).resolve().parents[2]
PKL = (REPO / "tests" / "fixtures" / "official_tiny64.pkl").read_bytes()  # an official-format snapshot, 3.3 MB
FIRST_PART = 1536 * 1024  # a paused server sends this much, then waits: the hub writes its first 1 MiB chunk


class PausingServer:
    """Serves PKL at /x.pkl on 127.0.0.1, honouring Range; while `paused` is set, a full GET sends
    FIRST_PART bytes and then waits until it is cleared (or the client goes away)."""

    def __init__(self):
        self.requests = []  # Range header of every GET (None for a whole file)
        self.paused = threading.Event()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path != "/x.pkl":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng[6:-1]) if rng and rng.startswith("bytes=") and rng.endswith("-") else 0
                body = PKL[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PKL) - 1}/{len(PKL)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                try:
                    if server.paused.is_set() and not start:
                        self.wfile.write(body[:FIRST_PART])
                        self.wfile.flush()
                        while server.paused.is_set() and not server.stop.wait(0.05):
                            pass
                        body = body[FIRST_PART:]
                    self.wfile.write(body)
                except OSError:  # the client was terminated mid-transfer
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path="/x.pkl"):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _module(alis_extension, name):
    return importlib.import_module(f"{alis_extension}.{name}")


@pytest.fixture
def online(bpy):
    """Blender's Allow Online Access, on for the test (the bpy module starts with it off), restored after."""
    system = bpy.context.preferences.system
    saved = system.use_online_access
    system.use_online_access = True
    assert bpy.app.online_access
    yield system
    system.use_online_access = saved


@pytest.fixture
def home(alis_extension, addon_prefs, tmp_path, monkeypatch):
    """An empty model cache (ALIS_HOME), the backend = this Python with the repository's alis_core;
    the extension's model list is emptied afterwards (it named this cache)."""
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "alis_home"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("ALIS_OFFLINE", raising=False)
    addon_prefs.backend = "SUBPROCESS"
    addon_prefs.python_path = sys.executable
    addon_prefs.device = "cpu"
    yield tmp_path / "alis_home"
    state = _module(alis_extension, "preferences").models_state
    state.update(python="", cache="", models=[], error="")


@pytest.fixture
def server():
    with PausingServer() as srv:
        yield srv


def _download_ops(calls):
    """(layout, properties) of every Download button a draw made."""
    return [(c[2], c[3]) for c in calls if c[0] == "operator" and c[1] == "alis.download_model"]


def _draw_prefs(bpy, addon_prefs):
    """The preferences' draw calls; an operator call records the properties the draw code sets on it."""
    calls = []

    def operator(self, idname, **kwargs):
        group, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, group), name), f"no operator {idname}"
        props = types.SimpleNamespace()
        calls.append(("operator", idname, self, props))
        return props

    layout_cls = type("PrefsLayout", (FakeLayout,), {"operator": operator})
    type(addon_prefs).draw(_Proxy(addon_prefs, layout_cls(bpy, calls)), bpy.context)
    return calls


def test_download_button_caches_a_url_model_and_generate_uses_its_name(
        bpy, alis_extension, addon_prefs, online, home, server, fresh_world):
    assert bpy.ops.alis.download_model(name="mine", url=server.url()) == {"FINISHED"}
    cached = home / "models" / "mine.safetensors"
    assert cached.is_file() and (home / "index.json").is_file()
    assert [r[1] for r in server.requests] == [None]  # one whole-file GET
    # the list was refreshed from the backend's hub: the new model is there, with its size
    models = {m["name"]: m for m in _module(alis_extension, "preferences").models_state["models"]}
    assert models["mine"]["status"] == "cached" and models["mine"]["size"] == cached.stat().st_size
    calls = _draw_prefs(bpy, addon_prefs)
    assert "mine" in _texts(calls) and str(home) in _texts(calls)
    # the World's Model field suggests it ...
    settings = fresh_world.alis_sky
    search = _module(alis_extension, "properties")._search_models
    assert {"default", "mine", "lhq1024"} <= set(search(settings, bpy.context, ""))
    assert search(settings, bpy.context, "mi") == ["mine"]
    # ... and Generate passes the name (no download) to the backend, whose hub finds the cached file
    settings.model = "mine"
    settings.anchors, settings.resolution = 2, 128
    assert bpy.ops.alis.generate_world() == {"FINISHED"}
    image = assert_sky_wiring(fresh_world, 0.0)["ALIS Environment"].image
    got = np.array(image.pixels[:], np.float32).reshape(64, 128, 4)[::-1, :, :3]
    backend = _module(alis_extension, "backend")
    expected, _ = backend.generate_in_process(settings.to_params(), checkpoint=str(cached), device="cpu")
    tolerance = 0.02 * expected.max(axis=2, keepdims=True) + 1e-3  # Radiance HDR's shared exponent
    assert (np.abs(got - expected) <= tolerance).all()
    default, _ = backend.generate_in_process(settings.to_params(), checkpoint="", device="cpu")
    assert np.abs(default - expected).mean() > 1e-3  # not the bundled model


def test_known_model_has_a_download_button_that_online_access_off_disables(
        bpy, alis_extension, addon_prefs, online, home, server, monkeypatch):
    monkeypatch.setenv("ALIS_URL_LHQ1024", server.url())
    assert bpy.ops.alis.refresh_models() == {"FINISHED"}
    calls = _draw_prefs(bpy, addon_prefs)
    (known,) = [layout for layout, props in _download_ops(calls) if props.name == "lhq1024" and not props.url]
    assert known.enabled
    assert "Online access is off" not in _texts(calls)
    setup = [c for c in calls if c[0] == "operator" and c[1] == "alis.setup_backend"]
    assert setup and setup[0][2].enabled

    online.use_online_access = False
    assert not bpy.app.online_access
    calls = _draw_prefs(bpy, addon_prefs)
    assert all(not layout.enabled for layout, _ in _download_ops(calls))
    assert not [c for c in calls if c[1] == "alis.setup_backend"][0][2].enabled
    assert "Online access is off" in _texts(calls) and "Preferences > System > Network" in _texts(calls)
    assert not bpy.ops.alis.download_model.poll() and not bpy.ops.alis.setup_backend.poll()
    with pytest.raises(RuntimeError):
        bpy.ops.alis.download_model(name="lhq1024")
    op, context = _interactive(bpy, "ALIS_OT_download_model", name="lhq1024", url="")
    assert op.execute(context) == {"CANCELLED"}  # a script that skips poll() still downloads nothing
    assert "Online access is off" in op.reports[-1][1]
    assert server.requests == [] and not (home / "models").exists()

    # online again: the known model's button reaches its (overridden) URL; the tiny snapshot is not lhq1024
    online.use_online_access = True
    with pytest.raises(RuntimeError, match="is not the lhq1024 model"):
        bpy.ops.alis.download_model(name="lhq1024")
    assert [r[0] for r in server.requests] == ["/x.pkl"]
    assert not (home / "models" / "lhq1024.safetensors").exists()


def test_generate_never_downloads_a_model_name(bpy, alis_extension, addon_prefs, online, home, server, fresh_world,
                                               monkeypatch):
    monkeypatch.setenv("ALIS_URL_LHQ1024", server.url())
    fresh_world.alis_sky.model = "lhq1024"
    fresh_world.alis_sky.anchors, fresh_world.alis_sky.resolution = 2, 64
    with pytest.raises(RuntimeError, match="not downloaded yet.*press Download next to it"):
        bpy.ops.alis.generate_world()
    addon_prefs.backend = "IN_PROCESS"  # the same rule in Blender's own Python
    with pytest.raises(RuntimeError, match="not downloaded yet.*press Download next to it"):
        bpy.ops.alis.generate_world()
    assert server.requests == []
    assert fresh_world.node_tree is None or "ALIS Environment" not in fresh_world.node_tree.nodes


def test_modal_download_shows_bytes_and_esc_keeps_the_partial_file_for_the_next_one(
        bpy, alis_extension, addon_prefs, online, home, server):
    server.paused.set()
    op, context = _interactive(bpy, "ALIS_OT_download_model", name="mine", url=server.url())
    status = context.window_manager.alis_sky_status
    assert op._start_modal(context) == {"RUNNING_MODAL"}
    part = home / "downloads" / "mine.part"
    deadline = time.monotonic() + 60
    while not (part.is_file() and part.stat().st_size >= 1 << 20 and op._job.total) and time.monotonic() < deadline:
        assert op.modal(context, types.SimpleNamespace(type="TIMER", value="NOTHING")) == {"PASS_THROUGH"}
        time.sleep(0.05)
    op.modal(context, types.SimpleNamespace(type="TIMER", value="NOTHING"))
    # the backend's `progress D/T` lines count bytes (the CLI prints one a second at most)
    assert op._job.total == len(PKL) and status.running
    assert re.fullmatch(rf"Downloading mine: \d+\.\d/{len(PKL) / 1e6:.1f} MB", status.text), status.text
    assert op.modal(context, types.SimpleNamespace(type="ESC", value="PRESS")) == {"RUNNING_MODAL"}
    assert _pump(op, context, timeout=30) == {"CANCELLED"}
    assert op._job._proc.poll() is not None and not status.running
    assert "resumes next time" in status.text
    kept = part.stat().st_size
    assert kept >= 1 << 20 and not (home / "models" / "mine.safetensors").exists()

    server.paused.clear()
    assert bpy.ops.alis.download_model(name="mine", url=server.url()) == {"FINISHED"}
    assert server.requests[-1] == ("/x.pkl", f"bytes={kept}-")  # resumed, not restarted
    assert (home / "models" / "mine.safetensors").is_file() and not part.exists()


def test_world_panel_shows_the_model_field(bpy, addon_prefs, fresh_world):
    context = types.SimpleNamespace(
        world=fresh_world, window_manager=bpy.context.window_manager, preferences=bpy.context.preferences,
    )
    calls = _draw(bpy, bpy.types.WORLD_PT_alis_sky, None, context)
    assert "model" in {c[1] for c in calls if c[0] == "prop"}
    assert fresh_world.alis_sky.model == ""  # empty = the preference's Checkpoint
