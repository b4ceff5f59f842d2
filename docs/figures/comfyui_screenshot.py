"""Screenshot of the 360° skybox example workflow in a real ComfyUI, for docs/img/comfyui_workflow.png.

Starts ComfyUI (127.0.0.1 only, CPU, a temporary base directory whose custom_nodes/ links to this
repo), opens its frontend in headless Chromium driven over the DevTools pipe (no extra Python
packages), loads example_workflows/alis_360_skybox.json, queues it so the previews fill in, and
saves a screenshot. Needs Chromium (Debian: apt-get install chromium).

    python docs/figures/comfyui_screenshot.py --comfyui-dir /path/to/ComfyUI \
        [--checkpoint CKPT.safetensors] [--out docs/img/comfyui_workflow.png]

Without --checkpoint the bundled default model is used; when that is missing too, a small random
model is made (the previews then show noise). The command line that made the picture is printed.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PACK_NAME = "ALIS-Panoramas"
BUNDLED = "default (bundled)"
# Frontend settings that keep first-run dialogs, the minimap and release toasts out of the picture.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Toast.DisableReconnectingToast": True,
    "Comfy.Release.Status": "skipped",
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.NodeBadge.NodeSourceBadgeMode": "None",
    "Comfy.NodeBadge.NodeIdBadgeMode": "None",
    "Comfy.Workflow.WorkflowTabsPosition": "Sidebar",  # the menu bar still names the workflow
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"),
                   help="ComfyUI checkout (default: $COMFYUI_DIR)")
    p.add_argument("--python", default=None,
                   help="interpreter for ComfyUI (default: COMFYUI_DIR/.venv/bin/python, else this one)")
    p.add_argument("--checkpoint", default=None,
                   help="ALIS checkpoint to show (default: the bundled model, else a small random one)")
    p.add_argument("--workflow", default=str(REPO / "example_workflows" / "alis_360_skybox.json"))
    p.add_argument("--out", default=str(REPO / "docs" / "img" / "comfyui_workflow.png"))
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--seed", type=int, default=7, help="anchor seed written into the workflow")
    p.add_argument("--no-queue", action="store_true", help="do not run the workflow (no previews)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed for each wait")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else {}


def wait_until(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)


def prepare_checkpoint(arg: str | None, models: Path) -> str:
    """The combo entry to pick in the loader: the bundled default, or a file linked into `models`."""
    import alis_core

    if arg is None and Path(alis_core.DEFAULT_CHECKPOINT).is_file():
        return BUNDLED
    if arg is None:
        import torch

        torch.manual_seed(0)
        path = models / "random_tiny.safetensors"
        alis_core.save_generator(alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval(), path)
        print("no bundled model: using a small random one (previews show noise)", flush=True)
        return path.name
    src = Path(arg).resolve()
    if not src.is_file():
        sys.exit(f"error: --checkpoint {arg} does not exist")
    shutil.copy2(src, models / src.name)  # a copy: the loader refuses links that leave its folder
    return src.name


class ComfyUI:
    """A ComfyUI server in a temporary base directory, stopped by close()."""

    def __init__(self, root: Path, python: str, base: Path, models: Path, timeout: float):
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
        settings = base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps(SETTINGS))
        extra = base / "extra_model_paths.yaml"
        extra.write_text(f"alis_figures:\n    alis: {models}\n")
        self.log = base / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(base), "--output-directory", str(base / "output"),
               "--extra-model-paths-config", str(extra), "--disable-auto-launch"]
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(cmd, cwd=root, stdout=log_file, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return http_json(self.url + "/system_stats", timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return None

        wait_until("ComfyUI start-up", ready, timeout, interval=1)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def idle(self) -> bool:
        q = http_json(self.url + "/queue")
        return not q.get("queue_running") and not q.get("queue_pending")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


class Chromium:
    """Headless Chromium driven through the DevTools protocol on a pipe (fds 3 and 4 of the child)."""

    def __init__(self, exe: str, width: int, height: int, profile: Path, webgl: bool = False):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds():  # the child reads commands on fd 3 and writes replies on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            os.dup2(high[0], 3)  # dup2 leaves the copies inheritable
            os.dup2(high[1], 4)

        # WebGL (the ALIS Preview 360 node's three.js view) runs on SwiftShader: no GPU needed
        gpu = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"] if webgl else ["--disable-gpu"]
        flags = ["--headless", "--no-sandbox", *gpu, "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen([exe, *flags], preexec_fn=wire_fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.session = None
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True,
                                 session=None)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _read_message(self, timeout: float = 120) -> dict:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_child], [], [], timeout)
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: object = "current", **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        sid = self.session if session == "current" else session
        if sid:
            msg["sessionId"] = sid
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        """Value of a JS expression (awaited when it is a promise); JS exceptions raise."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JS error: {text}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=None)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_child)
        os.close(self._from_child)


# Closes whatever dialog the frontend opened on start (templates browser, what's new, toasts).
CLOSE_DIALOGS_JS = """
(() => {
  let n = 0;
  for (const sel of ['.p-dialog-close-button', '.p-dialog-header-close', '.p-toast-icon-close',
                     'button[aria-label="Close"]']) {
    for (const b of document.querySelectorAll(sel)) { b.click(); n++; }
  }
  return n;
})()
"""


# Zooms and pans the canvas so that every node fits the area right of the sidebar and below the menu bar.
FIT_VIEW_JS = """
(() => {
  const title = LiteGraph.NODE_TITLE_HEIGHT, c = app.canvas;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const left = 90, top = 100, right = 30, bottom = 30;
  const w = c.canvas.clientWidth - left - right, h = c.canvas.clientHeight - top - bottom;
  const scale = Math.min(1.2, w / (x1 - x0), h / (y1 - y0));
  c.ds.scale = scale;
  c.ds.offset = [left / scale - x0 + (w / scale - (x1 - x0)) / 2, top / scale - y0 + (h / scale - (y1 - y0)) / 2];
  c.setDirty(true, true);
  return scale;
})()
"""


def load_workflow(path: str, ckpt_name: str, seed: int) -> dict:
    workflow = json.loads(Path(path).read_text())
    for node in workflow["nodes"]:
        if node["type"] == "ALISLoadCheckpoint":
            node["widgets_values"][0] = ckpt_name
        if node["type"] == "ALISAnchors":
            node["widgets_values"][0] = seed
            node["widgets_values"][1] = "fixed"  # keep the seed shown in the picture
    return workflow


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.comfyui_dir:
        sys.exit("error: pass --comfyui-dir (or set COMFYUI_DIR) to a ComfyUI checkout")
    root = Path(args.comfyui_dir).resolve()
    venv_python = root / ".venv" / "bin" / "python"
    python = args.python or (str(venv_python) if venv_python.exists() else sys.executable)
    if not Path(args.chromium).exists():
        sys.exit(f"error: no Chromium at {args.chromium}; install it (apt-get install chromium) or pass --chromium")
    out = Path(args.out).resolve()

    with tempfile.TemporaryDirectory(prefix="alis_comfy_figure_") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        models.mkdir()
        ckpt_name = prepare_checkpoint(args.checkpoint, models)
        workflow = load_workflow(args.workflow, ckpt_name, args.seed)
        (tmp / "base").mkdir()
        print(f"starting ComfyUI from {root} ...", flush=True)
        server = ComfyUI(root, python, tmp / "base", models, args.timeout)
        browser = None
        try:
            browser = Chromium(args.chromium, args.width, args.height, tmp / "profile")
            browser.send("Page.navigate", url=server.url + "/")
            wait_until("frontend load", lambda: browser.evaluate(
                "!!(window.app && window.app.graph && window.app.canvas)"), args.timeout)
            time.sleep(3)  # let start-up dialogs appear, then close them
            browser.evaluate(CLOSE_DIALOGS_JS)
            name = json.dumps(Path(args.workflow).stem)
            browser.evaluate(f"app.loadGraphData({json.dumps(workflow)}, true, true, {name}).then(() => true)")
            if not args.no_queue:
                browser.evaluate("app.queuePrompt(0).then(() => true)")
                wait_until("workflow run", lambda: server.idle(), args.timeout, interval=1)
                for entry in http_json(server.url + "/history").values():
                    status = entry.get("status", {})
                    if status.get("status_str") != "success":
                        errors = [m[1].get("exception_message", m) for m in status.get("messages", [])
                                  if m[0] == "execution_error"]
                        raise RuntimeError(f"the workflow failed in ComfyUI: {errors or status}")
                time.sleep(3)  # previews are fetched after the run ends
            browser.evaluate(CLOSE_DIALOGS_JS)
            browser.evaluate(FIT_VIEW_JS)
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
