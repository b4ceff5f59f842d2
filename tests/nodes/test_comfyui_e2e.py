"""End to end in a real ComfyUI: start a server with this pack, queue a skybox workflow, check the files.

Skipped unless COMFYUI_DIR points at a ComfyUI checkout (0.3.6x or later). The server runs with
COMFYUI_PYTHON, else $COMFYUI_DIR/.venv/bin/python, else this interpreter, on 127.0.0.1 only,
with a temporary base directory (custom_nodes/ holds a symlink to this repo), a temporary output
folder and an extra_model_paths.yaml that points "alis" at a tiny random checkpoint:

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/nodes/test_comfyui_e2e.py
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image

import alis_core
from model_server import ModelServer

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "ALIS-Panoramas"
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300
NODE_IDS = ["ALISLoadCheckpoint", "ALISAnchors", "ALISJoinAnchors", "ALISPanorama", "ALISPanoramaToEquirect",
            "ALISEquirectToCubemap", "ALISSeamCheck", "ALISScrollFrames", "ALISPreview360", "ALISInvertImage",
            "ALISSaveAnchors", "ALISLoadAnchors", "ALISSaveSkybox"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def get(self, path: str, timeout: float = 10):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
                return json.loads(data) if data.strip() else {}
        except urllib.error.HTTPError as e:  # validation errors come back as 400 with JSON
            pytest.fail(f"POST {path} -> {e.code}: {e.read().decode()[:3000]}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        body = {"prompt": prompt, "client_id": uuid.uuid4().hex}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", body)["prompt_id"]

    def run(self, prompt: dict, workflow: dict | None = None) -> dict:
        """Queue an API-format prompt and wait for its /history entry."""
        return self.wait(self.queue(prompt, workflow))

    def wait(self, prompt_id: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                pytest.fail("ComfyUI exited while running the prompt:\n" + self.log_tail())
            time.sleep(0.5)
        pytest.fail(f"prompt not finished after {RUN_TIMEOUT_S} s:\n" + self.log_tail())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = os.environ.get("COMFYUI_DIR")
    if not root:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run the end-to-end test")
    root = Path(root)
    venv_python = root / ".venv" / "bin" / "python"
    python = os.environ.get("COMFYUI_PYTHON") or (str(venv_python) if venv_python.exists() else sys.executable)

    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    models = tmp_path_factory.mktemp("alis_models")
    torch.manual_seed(0)
    G = alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval()
    alis_core.save_generator(G, models / "tiny64.safetensors")
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"alis_e2e:\n    alis: {models}\n")
    out = tmp_path_factory.mktemp("comfy_output")
    log = base / "server.log"
    # `lhq1024` served from this machine: a model of its architecture (1024 px, w_dim 512, two
    # patches per frame) with few channels, so that a frame renders in a second
    lhq = alis_core.Generator(alis_core.GeneratorConfig(img_resolution=1024, z_dim=512, w_dim=512,
                                                        channel_base=2048, channel_max=16)).eval()
    alis_core.save_generator(lhq, models.parent / "lhq1024.safetensors")
    models_server = ModelServer({"/lhq1024.safetensors": (models.parent / "lhq1024.safetensors").read_bytes()})
    models_server.__enter__()
    env = dict(os.environ, ALIS_HOME=str(tmp_path_factory.mktemp("alis_home")),
               ALIS_URL_LHQ1024=models_server.url("/lhq1024.safetensors"))
    env.pop("ALIS_OFFLINE", None)

    port = free_port()
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           "--output-directory", str(out), "--extra-model-paths-config", str(extra)]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    srv.output_dir, srv.alis_home, srv.models_server = out, Path(env["ALIS_HOME"]), models_server
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} during start-up:\n" + srv.log_tail())
            try:
                srv.get("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n" + srv.log_tail())
                time.sleep(1)
        yield srv
    finally:
        models_server.__exit__(None, None, None)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def skybox_prompt(width=-1, prefix="ALIS/e2e"):
    """API format: checkpoint -> anchors -> 360° panorama -> equirect -> Save Skybox, plus previews."""
    return {
        "1": {"class_type": "ALISLoadCheckpoint", "inputs": {"ckpt_name": "tiny64.safetensors", "dtype": "float32",
                                                              "fast": True}},
        "2": {"class_type": "ALISAnchors", "inputs": {"model": ["1", 0], "seed": 5, "num_anchors": 4, "psi": 0.7,
                                                       "seeds": ""}},
        "3": {"class_type": "ALISPanorama", "inputs": {"model": ["1", 0], "anchors": ["2", 0], "wrap": True,
                                                        "width": width, "noise_mode": "const", "batch_size": 4,
                                                        "noise_seed": 0}},
        "4": {"class_type": "ALISPanoramaToEquirect", "inputs": {"image": ["3", 0], "horizon": 0.5,
                                                                  "strip_horizon": 0.5, "strip_scale": 1.0,
                                                                  "cap_blur": 0.5}},
        "5": {"class_type": "ALISSaveSkybox", "inputs": {"image": ["4", 0], "filename_prefix": prefix,
                                                          "float_format": "hdr", "cubemap": "faces + cross",
                                                          "face_size": 0}},
        "6": {"class_type": "ALISSeamCheck", "inputs": {"image": ["3", 0], "columns": 8}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 1]}},
        "8": {"class_type": "ALISScrollFrames", "inputs": {"image": ["3", 0], "frame_width": 0, "num_frames": 4,
                                                            "loop": True}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def test_pack_loads_with_all_nodes_and_tooltips(server):
    info = server.get("/object_info")
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, f"nodes not registered: {missing}\n" + server.log_tail()
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"].startswith("ALIS/")
        for name, spec in node["input"]["required"].items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    ckpts = info["ALISLoadCheckpoint"]["input"]["required"]["ckpt_name"]
    assert "tiny64.safetensors" in ckpts[1]["options"]  # found through extra_model_paths.yaml


def test_example_workflows_are_served_as_templates(server):
    templates = server.get("/workflow_templates")
    names = sorted(templates.get(PACK_NAME, []))
    assert names == sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    for name in names:
        workflow = server.get(f"/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert {n["type"] for n in workflow["nodes"]} <= set(NODE_IDS) | {"PreviewImage", "SaveAnimatedWEBP",
                                                                             "SaveImage", "Note"}


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow -> API prompt, as the frontend does it (widgets_values in widget order;
    INT widgets with control_after_generate, or named seed/noise_seed by default, carry one extra value)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] == "Note":
            continue
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {}
        order = [("required", n) for n in info["input_order"]["required"]]
        order += [("optional", n) for n in info["input_order"].get("optional", [])]
        for kind, name in order:
            spec = info["input"][kind][name]
            if name in linked:
                link = links[linked[name]]
                assert link[3] == node["id"], f"link {link} does not end at node {node['id']}"
                inputs[name] = [str(link[1]), link[2]]
            elif isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
                assert values, f"node {node['id']} {node['type']}: no widget value left for '{name}'"
                inputs[name] = values.pop(0)
                options = spec[1] if len(spec) > 1 else {}
                if spec[0] == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
                    assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            else:
                pytest.fail(f"node {node['id']} {node['type']}: socket input '{name}' is not connected")
        assert not values, f"node {node['id']} {node['type']}: unused widget values {values}"
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "example_workflows").glob("*.json")))
def test_example_workflow_runs(server, name):
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    assert workflow["version"] == 0.4 and workflow["last_link_id"] == len(workflow["links"])
    prompt = ui_to_api(workflow, server.get("/object_info"))
    for node in prompt.values():  # the bundled default may not be installed: use the test model
        if node["class_type"] == "ALISLoadCheckpoint":
            node["inputs"]["ckpt_name"] = "tiny64.safetensors"
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"examples/{name}"
    entry = server.run(prompt, workflow)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert any((server.output_dir / "examples").glob(f"{name}_00001_*.png"))


def test_skybox_workflow_saves_files_with_metadata(server):
    workflow = {"nodes": [], "links": [], "version": 0.4, "extra": {"test": "alis-e2e"}}
    entry = server.run(skybox_prompt(), workflow)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    saved = entry["outputs"]["5"]["images"]
    assert [s["filename"] for s in saved] == ["e2e_00001_.png", "e2e_00001_cross.png"]
    folder = server.output_dir / "ALIS"
    for name in ["e2e_00001_.png", "e2e_00001_.hdr", "e2e_00001_cross.png",
                 *[f"e2e_00001_{f}.png" for f in ("px", "nx", "py", "ny", "pz", "nz")]]:
        assert (folder / name).is_file(), f"missing {name}; have {sorted(p.name for p in folder.iterdir())}"
    spacing = alis_core.GeneratorConfig.tiny().anchor_spacing
    with Image.open(folder / "e2e_00001_.png") as png:
        assert png.size == (4 * spacing, 2 * spacing)  # 360° strip of 4 anchors -> 2:1 equirect
        assert json.loads(png.text["prompt"])["3"]["class_type"] == "ALISPanorama"
        assert json.loads(png.text["workflow"])["extra"]["test"] == "alis-e2e"
    assert len(entry["outputs"]["9"]["images"]) == 4  # scroll frames reached a preview node


def test_bad_input_fails_naming_the_input(server):
    entry = server.run(skybox_prompt(width=0, prefix="ALIS/bad"))
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "ALISPanorama"
    assert "input 'width'" in errors[0]["exception_message"]
    assert not (server.output_dir / "ALIS" / "bad_00001_.png").exists()


def test_cancel_stops_a_long_panorama_promptly(server):
    prompt = skybox_prompt()
    prompt["2"]["inputs"]["num_anchors"] = 2000  # about a minute of patches, one per batch
    prompt["3"]["inputs"]["batch_size"] = 1
    prompt = {k: prompt[k] for k in ("1", "2", "3")}
    prompt["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    prompt_id = server.queue(prompt)
    deadline = time.monotonic() + 60
    while not any(item[1] == prompt_id for item in server.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.2)
    time.sleep(3)  # well inside the panorama by now
    server.post("/interrupt", {})
    pressed = time.monotonic()
    entry = server.wait(prompt_id)
    assert time.monotonic() - pressed < 15, "Cancel took too long"
    assert entry["status"]["status_str"] == "error"
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds


def test_a_known_model_name_downloads_on_first_use(server):
    """The loader offers `lhq1024 (download)`; picking it downloads the model once (from this
    machine's server, ALIS_URL_LHQ1024) into ALIS_HOME, and the graph renders with it."""
    info = server.get("/object_info/ALISLoadCheckpoint")
    names = info["ALISLoadCheckpoint"]["input"]["required"]["ckpt_name"]
    names = names[1]["options"] if isinstance(names[0], str) and names[0] == "COMBO" else names[0]
    assert "lhq1024 (download)" in names
    prompt = {
        "1": {"class_type": "ALISLoadCheckpoint", "inputs": {"ckpt_name": "lhq1024 (download)", "dtype": "float32",
                                                              "fast": True}},
        "2": {"class_type": "ALISAnchors", "inputs": {"model": ["1", 0], "seed": 1, "num_anchors": 2, "psi": 0.7,
                                                       "seeds": ""}},
        "3": {"class_type": "ALISPanorama", "inputs": {"model": ["1", 0], "anchors": ["2", 0], "wrap": False,
                                                        "width": 64, "noise_mode": "none", "batch_size": 1,
                                                        "noise_seed": 0}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log_tail()
    assert (server.alis_home / "models" / "lhq1024.safetensors").is_file()
    assert len(server.models_server.behaviour.gets()) == 1
    server.run(prompt)  # cached: nothing fetched again
    assert len(server.models_server.behaviour.gets()) == 1
