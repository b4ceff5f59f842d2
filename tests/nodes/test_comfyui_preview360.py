"""ALIS Preview 360 in the real ComfyUI frontend: the node's three.js canvas shows the equirect it was given.

Skipped unless COMFYUI_DIR is set (the `server` fixture of test_comfyui_e2e.py starts ComfyUI with
this pack) and Chromium is installed. A direction-coloured equirect (red = longitude, green =
latitude, blue constant) goes into ComfyUI's input folder; the page loads a LoadImage -> ALIS
Preview 360 workflow through `app.loadGraphData`, queues it with `app.queuePrompt`, and the test
reads the node's WebGL canvas back (the viewer keeps its drawing buffer) and screenshots the page:

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/nodes/test_comfyui_preview360.py
"""
import base64
import importlib.util
import io
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium_testing import chromium
from test_comfyui_e2e import PACK_NAME, REPO, server  # noqa: F401  (the module-scoped ComfyUI fixture)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

RENDER_TIMEOUT_S = 90
IMAGE_NAME = "alis_direction_equirect.png"
BLUE = 64  # the constant blue channel of the test equirect


def _figure_script():
    """docs/figures/comfyui_screenshot.py: its DevTools-pipe Chromium driver (no extra packages)."""
    spec = importlib.util.spec_from_file_location("alis_comfyui_screenshot",
                                                  REPO / "docs" / "figures" / "comfyui_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def direction_equirect(width: int = 512) -> Image.Image:
    h = width // 2
    x = (np.arange(width) + 0.5) / width
    y = (np.arange(h) + 0.5) / h
    rgb = np.empty((h, width, 3), np.uint8)
    rgb[..., 0] = np.round(255 * x)[None, :]
    rgb[..., 1] = np.round(255 * y)[:, None]
    rgb[..., 2] = BLUE
    return Image.fromarray(rgb)


def preview_workflow(image_name: str) -> dict:
    """UI format (what the frontend loads): LoadImage -> ALIS Preview 360."""
    return {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [300, 320], "flags": {}, "order": 0,
             "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
                         {"name": "MASK", "type": "MASK", "links": None}],
             "properties": {"Node name for S&R": "LoadImage"}, "widgets_values": [image_name, "image"]},
            {"id": 2, "type": "ALISPreview360", "pos": [380, 60], "size": [480, 360], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}], "outputs": [],
             "properties": {"Node name for S&R": "ALISPreview360"}, "widgets_values": []},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }


# The Preview 360 node's canvas: whether it is in the page, its box, and its pixels read back.
CANVAS_JS = """
(() => {
  const node = app.graph.getNodeById(2);
  const sky = node && node.alisSky;
  if (!sky) return null;
  const c = sky.renderer.domElement, r = c.getBoundingClientRect();
  const probe = document.createElement('canvas');
  probe.width = c.width; probe.height = c.height;
  const ctx = probe.getContext('2d');
  ctx.drawImage(c, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  return {connected: c.isConnected, rect: [r.left, r.top, r.width, r.height], w: c.width, h: c.height,
          pixels: Array.from(px)};
})()
"""


def canvas_state(browser):
    state = browser.evaluate(CANVAS_JS)
    if state is None:
        return None
    state["image"] = np.asarray(state.pop("pixels"), np.uint8).reshape(state["h"], state["w"], 4)[..., :3]
    return state


def looks_like_the_equirect(img: np.ndarray) -> bool:
    """Not blank, blue constant as in the file, and green (latitude) mid-grey at the centre (pitch 0)."""
    h, w, _ = img.shape
    centre = img[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].reshape(-1, 3).astype(float).mean(0)
    return (img.reshape(-1, 3).std(0).max() > 5 and abs(centre[2] - BLUE) < 12 and abs(centre[1] - 128) < 16)


def test_preview360_node_renders_in_the_comfyui_frontend(server, tmp_path):  # noqa: F811
    exe = chromium()
    base = server.log.parent  # the fixture's --base-directory
    (base / "input").mkdir(exist_ok=True)
    direction_equirect().save(base / "input" / IMAGE_NAME)

    # the frontend serves the extension from the pack's WEB_DIRECTORY
    with urllib.request.urlopen(f"{server.url}/extensions/{PACK_NAME}/comfyui/preview360.js", timeout=10) as r:
        assert b"ALISPreview360" in r.read()

    fig = _figure_script()
    settings = base / "user" / "default" / "comfy.settings.json"  # no first-run dialogs over the canvas
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(fig.SETTINGS))
    browser = fig.Chromium(exe, 1280, 800, tmp_path / "profile", webgl=True)
    try:
        browser.send("Page.navigate", url=server.url + "/")
        fig.wait_until("frontend load", lambda: browser.evaluate(
            "!!(window.app && window.app.graph && window.app.canvas)"), RENDER_TIMEOUT_S)
        time.sleep(2)  # let start-up dialogs appear, then close them
        browser.evaluate(fig.CLOSE_DIALOGS_JS)
        browser.evaluate(f"app.loadGraphData({json.dumps(preview_workflow(IMAGE_NAME))}, true, true, "
                         "'alis_preview360').then(() => true)")
        assert browser.evaluate("app.graph.getNodeById(2)?.type") == "ALISPreview360"
        assert browser.evaluate("app.graph.getNodeById(2).alisSky === undefined")  # no canvas before a run
        browser.evaluate("app.queuePrompt(0).then(() => true)")

        deadline = time.monotonic() + RENDER_TIMEOUT_S
        state = None
        while time.monotonic() < deadline:
            state = canvas_state(browser)
            if state and looks_like_the_equirect(state["image"]):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the node's three.js canvas never showed the equirect (state: "
                        f"{None if state is None else {k: v for k, v in state.items() if k != 'image'}}):\n"
                        + server.log_tail())
        img = state["image"].astype(float)
        assert state["connected"] and state["rect"][2] > 100 and state["rect"][3] > 100
        # red is longitude: it changes across the view, green (latitude) grows downwards
        h, w, _ = img.shape
        row = img[h // 2, :, 0]
        assert abs(row[w // 8] - row[-w // 8]) > 20, "red (longitude) does not vary across the view"
        col = img[:, w // 2, 1]
        assert col[h // 8] < col[h // 2] < col[-h // 8], "green (latitude) does not grow downwards"

        # and the composited page shows it where the canvas is
        browser.evaluate(fig.CLOSE_DIALOGS_JS)
        shot = Image.open(io.BytesIO(base64.b64decode(
            browser.send("Page.captureScreenshot", format="png")["data"]))).convert("RGB")
        shot.save(tmp_path / "page.png")
        x, y, cw, ch = state["rect"]
        crop = np.asarray(shot.crop((int(x) + 2, int(y) + 2, int(x + cw) - 2, int(y + ch) - 2)))
        assert looks_like_the_equirect(crop), f"the page screenshot ({tmp_path / 'page.png'}) does not show the node's view at {state['rect']}"
    finally:
        browser.close()
