"""Screenshot of the ALIS Preview 360 node in a real ComfyUI, for docs/img/comfyui_preview360.png.

The checkpoint, anchors, panorama and equirect nodes of example_workflows/alis_360_skybox.json feed
an ALIS Preview 360 node; the workflow is loaded and queued in ComfyUI's frontend in headless
Chromium (WebGL on SwiftShader), and the picture is taken once the node's three.js view shows the
sky. The server and browser helpers are those of comfyui_screenshot.py. Needs Chromium.

    python docs/figures/comfyui_preview360.py --comfyui-dir /path/to/ComfyUI \
        [--python COMFYUI_PYTHON] [--checkpoint CKPT.safetensors] [--out docs/img/comfyui_preview360.png]
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfyui_screenshot as shot  # noqa: E402

PREVIEW_ID = 9
# Waits until the Preview 360 node's canvas holds a picture (not one flat colour).
CANVAS_READY_JS = f"""
(() => {{
  const sky = app.graph.getNodeById({PREVIEW_ID})?.alisSky;
  if (!sky) return false;
  const c = sky.renderer.domElement, probe = document.createElement('canvas');
  probe.width = c.width; probe.height = c.height;
  const ctx = probe.getContext('2d');
  ctx.drawImage(c, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  for (let i = 4; i < px.length; i += 4) if (Math.abs(px[i] - px[0]) > 8) return true;
  return false;
}})()
"""


def preview_workflow(path: str, ckpt_name: str, seed: int) -> dict:
    """The skybox example's generating nodes (checkpoint .. equirect) -> ALIS Preview 360."""
    workflow = shot.load_workflow(path, ckpt_name, seed)
    keep = {"ALISLoadCheckpoint", "ALISAnchors", "ALISPanorama", "ALISPanoramaToEquirect"}
    nodes = [n for n in workflow["nodes"] if n["type"] in keep]
    ids = {n["id"] for n in nodes}
    links = [link for link in workflow["links"] if link[1] in ids and link[3] in ids]
    equirect = next(n for n in nodes if n["type"] == "ALISPanoramaToEquirect")
    link_id = max(link[0] for link in workflow["links"]) + 1
    for out in equirect["outputs"]:
        out["links"] = [link_id] if out["name"] == "equirect" else None
    x = max(n["pos"][0] + n["size"][0] for n in nodes) + 50
    nodes.append({"id": PREVIEW_ID, "type": "ALISPreview360", "pos": [x, 40], "size": [760, 500], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": link_id}],
                  "outputs": [], "properties": {"Node name for S&R": "ALISPreview360"}, "widgets_values": []})
    links.append([link_id, equirect["id"], 0, PREVIEW_ID, 0, "IMAGE"])
    workflow.update(nodes=nodes, links=links, last_node_id=PREVIEW_ID, last_link_id=link_id)
    return workflow


def main(argv=None) -> None:
    args = shot.parse_args(argv)
    if args.out == str(shot.REPO / "docs" / "img" / "comfyui_workflow.png"):
        args.out = str(shot.REPO / "docs" / "img" / "comfyui_preview360.png")
    if not args.comfyui_dir:
        sys.exit("error: pass --comfyui-dir (or set COMFYUI_DIR) to a ComfyUI checkout")
    root = Path(args.comfyui_dir).resolve()
    venv_python = root / ".venv" / "bin" / "python"
    python = args.python or os.environ.get("COMFYUI_PYTHON") or (
        str(venv_python) if venv_python.exists() else sys.executable)
    if not Path(args.chromium).exists():
        sys.exit(f"error: no Chromium at {args.chromium}; install it (apt-get install chromium) or pass --chromium")
    out = Path(args.out).resolve()

    with tempfile.TemporaryDirectory(prefix="alis_comfy_preview_") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        models.mkdir()
        ckpt_name = shot.prepare_checkpoint(args.checkpoint, models)
        workflow = preview_workflow(args.workflow, ckpt_name, args.seed)
        (tmp / "base").mkdir()
        print(f"starting ComfyUI from {root} ...", flush=True)
        server = shot.ComfyUI(root, python, tmp / "base", models, args.timeout)
        browser = None
        try:
            browser = shot.Chromium(args.chromium, args.width, args.height, tmp / "profile", webgl=True)
            browser.send("Page.navigate", url=server.url + "/")
            shot.wait_until("frontend load", lambda: browser.evaluate(
                "!!(window.app && window.app.graph && window.app.canvas)"), args.timeout)
            time.sleep(3)  # let start-up dialogs appear, then close them
            browser.evaluate(shot.CLOSE_DIALOGS_JS)
            browser.evaluate(f"app.loadGraphData({json.dumps(workflow)}, true, true, 'alis_preview360')"
                             ".then(() => true)")
            browser.evaluate("app.queuePrompt(0).then(() => true)")
            shot.wait_until("workflow run", lambda: server.idle(), args.timeout, interval=1)
            shot.wait_until("the 360° view", lambda: browser.evaluate(CANVAS_READY_JS), args.timeout)
            browser.evaluate(shot.CLOSE_DIALOGS_JS)
            browser.evaluate(shot.FIT_VIEW_JS)
            # a little above the horizon and turned towards the sun side: sky and landscape share the view
            browser.evaluate(f"app.graph.getNodeById({PREVIEW_ID}).alisSky.setView({{yaw: 30, pitch: 5, fov: 80}})")
            time.sleep(1)
            out.parent.mkdir(parents=True, exist_ok=True)
            browser.screenshot(out)
        except Exception:
            print("ComfyUI log tail:\n" + server.log_tail(), file=sys.stderr)
            raise
        finally:
            if browser is not None:
                browser.close()
            server.close()
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()),
                          *(argv if argv is not None else sys.argv[1:])])
    print(f"wrote {out} with: {command}")


if __name__ == "__main__":
    main()
