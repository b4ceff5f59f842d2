"""ALIS Preview 360: the node function (temporary PNG, UI dict) and its frontend extension's files."""
import json
import re
from pathlib import Path

import pytest
import torch

from alis_core.image import load_image
from nodes import NODE_SPECS, preview

REPO = Path(__file__).resolve().parents[2]


def equirect(batch=1, h=16):
    x = torch.linspace(0, 1, 2 * h)
    img = torch.stack([x[None].expand(h, -1), torch.linspace(0, 1, h)[:, None].expand(-1, 2 * h),
                       torch.full((h, 2 * h), 0.25)], -1)
    return img[None].repeat(batch, 1, 1, 1)


def test_preview_saves_temp_pngs_and_returns_the_ui_dict(tmp_path):
    image = equirect(batch=2)
    ui = preview.preview_360(image, output_dir=str(tmp_path), suffix="_temp_abcde")
    assert list(ui) == [preview.UI_KEY] == ["alis_360"]
    files = ui["alis_360"]
    assert [f["type"] for f in files] == ["temp", "temp"] and all(f["subfolder"] == "" for f in files)
    assert files[0]["filename"] == "ALIS_preview360_temp_abcde_00001_.png"
    for i, f in enumerate(files):
        saved = load_image(tmp_path / f["subfolder"] / f["filename"])  # [3, H, W] as ComfyUI's /view serves it
        assert torch.allclose(saved, image[i].permute(2, 0, 1), atol=0.5 / 255 + 1e-6)
    again = preview.preview_360(image[:1], output_dir=str(tmp_path), suffix="_temp_abcde")
    assert again["alis_360"][0]["filename"] == "ALIS_preview360_temp_abcde_00003_.png"  # never overwrites


def test_preview_refuses_a_non_equirect_by_input_name(tmp_path):
    with pytest.raises(ValueError, match=r"^ALIS Preview 360: input 'image': .*2:1"):
        preview.preview_360(torch.rand(1, 16, 64, 3), output_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_preview_is_a_registered_output_node():
    spec = next(s for s in NODE_SPECS if s.node_id == "ALISPreview360")
    assert spec.output_node and spec.display_name == "ALIS Preview 360" and spec.outputs == ()


def test_frontend_extension_loads_the_vendored_three_from_the_served_folder():
    # The pack's root __init__ exports WEB_DIRECTORY; ComfyUI serves it at /extensions/<pack>/.
    text = (REPO / "__init__.py").read_text()
    web = (REPO / re.search(r'WEB_DIRECTORY = "([^"]+)"', text).group(1)).resolve()
    js_file = web / "comfyui" / "preview360.js"
    js = js_file.read_text()
    imports = re.findall(r'import .* from "([^"]+)";', js)
    assert "../three/three.module.js" in imports and "../sky_viewer.js" in imports
    for rel in imports:
        if rel.startswith("../../../scripts/"):  # ComfyUI's own app.js / api.js at the site root
            continue
        assert (js_file.parent / rel).resolve().is_file(), rel
    # three.module.js imports its core from beside it, which is served too
    assert "from './three.core.js'" in (web / "three" / "three.module.js").read_text()
    assert (web / "three" / "three.core.js").is_file()
    assert f'const NODE_ID = "{preview.PREVIEW.node_id}"' in js and f'const UI_KEY = "{preview.UI_KEY}"' in js


STUB_APP = "export const app = { extensions: [], registerExtension(e) { this.extensions.push(e); } };\n"
STUB_API = ("export const api = { apiURL(path) { const q = new URLSearchParams(path.split('?')[1]);\n"
            "  return '/view/' + q.get('type') + '/' + q.get('filename'); } };\n")
PAGE = """<!doctype html><html><head><style>html,body{margin:0;background:#000}</style></head><body>
<script type="module">
import { app } from "/scripts/app.js";
await import("/extensions/ALIS-Panoramas/comfyui/preview360.js");
const ext = app.extensions.find((e) => e.name === "alis.preview360");
function NodeType() { this.size = [200, 200]; }
NodeType.prototype.addDOMWidget = function (name, type, el) {
  el.style.width = "200px"; el.style.height = "200px"; document.body.appendChild(el); };
NodeType.prototype.setSize = function (s) { this.size = s; };
await ext.beforeRegisterNodeDef(NodeType, { name: "ALISPreview360" });
new NodeType().onExecuted(UI);
</script></body></html>"""


def test_frontend_extension_shows_the_preview_in_three(tmp_path):
    # The extension as ComfyUI serves it (WEB_DIRECTORY at /extensions/<pack>/, its own app.js and
    # api.js stubbed at /scripts/), run in headless Chromium on the node function's real UI dict.
    import http.server
    import shutil
    import threading
    from functools import partial

    from chromium_testing import centre, screenshots

    site = tmp_path / "site"
    shutil.copytree(REPO / "alis_core" / "web", site / "extensions" / "ALIS-Panoramas")
    (site / "scripts").mkdir()
    (site / "scripts" / "app.js").write_text(STUB_APP)
    (site / "scripts" / "api.js").write_text(STUB_API)
    h = 32  # a sky coloured by direction, (d + 1) / 2: looking along Blender +X shows (1, 0.5, 0.5)
    u = (torch.arange(2 * h) + 0.5) / (2 * h)
    t = (torch.arange(h) + 0.5) / h
    az, el = (0.5 - u)[None] * 2 * torch.pi, (0.5 - t)[:, None] * torch.pi
    d = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin().expand(h, 2 * h)], -1)
    ui = preview.preview_360(((d + 1) / 2)[None].float(), output_dir=str(site / "view" / "temp"))
    (site / "index.html").write_text(PAGE.replace("UI", json.dumps(ui)))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        [img] = screenshots([(url, tmp_path / "node.png")], tmp_path, size=(200, 200))
    finally:
        server.shutdown()
        server.server_close()
    assert abs(centre(img) - [1.0, 0.5, 0.5]).max() < 10 / 255, centre(img)
