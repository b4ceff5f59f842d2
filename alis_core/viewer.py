"""A 360° viewer in the browser: one self-contained HTML page with three.js and the sky inlined.

    html = viewer_html(sky.display01, title="sky.png")      # works from disk (file://) and served
    serve_html(html)                                         # http://127.0.0.1:PORT/, Ctrl-C stops

three.js is vendored (alis_core/web/three/, version ``THREE_VERSION``, MIT licence) and inlined as
data: URL modules behind an import map, so the page needs no network and no server: browsers refuse
module scripts from file:// URLs, not data: URLs. The sky goes in as an 8-bit PNG (float skies
tone-mapped). The view comes from the URL hash, ``#yaw=90&pitch=0&fov=75`` (degrees; yaw
counter-clockwise from Blender +X, as azimuths in the sky sidecar); after the first frame the page
sets ``window.alisReady = true`` and appends " (ready)" to its title.
"""
from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from . import outputs
from .errors import AlisError

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
THREE_DIR = WEB_DIR / "three"
THREE_VERSION = (THREE_DIR / "VERSION").read_text(encoding="ascii").strip() if (THREE_DIR / "VERSION").exists() else ""
MAX_SIDE = 8192  # wider skies are downscaled for the page (WebGL texture limits)

__all__ = ["THREE_VERSION", "viewer_html", "export_viewer", "serve_html", "make_server", "png_data_url"]


def _data_url(data: bytes, mime: str = "text/javascript") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_url(img01) -> str:
    """[3, H, W] sRGB in [0, 1] (torch or numpy) -> a data: URL of an 8-bit PNG."""
    from PIL import Image
    arr = img01.detach().cpu().float().numpy() if hasattr(img01, "detach") else np.asarray(img01, np.float32)
    pixels = np.rint(np.clip(np.moveaxis(arr[:3], 0, -1), 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    if im.width > MAX_SIDE:
        im = im.resize((MAX_SIDE, MAX_SIDE // 2), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return _data_url(buf.getvalue(), "image/png")


def _import_map() -> str:
    try:
        core = (THREE_DIR / "three.core.js").read_bytes()
        module = (THREE_DIR / "three.module.js").read_bytes()
        viewer = (WEB_DIR / "sky_viewer.js").read_bytes()
    except OSError as e:
        raise AlisError(f"the viewer's scripts are missing ({e.filename}); reinstall alis-panoramas") from None
    # three.module.js imports its core by a relative path, which a data: URL cannot resolve.
    module = module.replace(b"from './three.core.js'", b"from 'alis-three-core'")
    return json.dumps({"imports": {"three": _data_url(module), "alis-three-core": _data_url(core),
                                   "alis-sky-viewer": _data_url(viewer)}})


def viewer_html(display01, title: str = "ALIS sky") -> str:
    """The viewer page for an equirect [3, H, 2H] (sRGB [0, 1]) as one HTML string."""
    template = (WEB_DIR / "viewer.html").read_text(encoding="utf-8")
    safe_title = "".join(c for c in str(title) if c.isprintable() and c not in "<>&\"'")[:200] or "ALIS sky"
    return (template.replace("__ALIS_TITLE__", safe_title)
            .replace("__ALIS_IMPORTMAP__", _import_map())
            .replace("__ALIS_SKY__", png_data_url(display01)))


def export_viewer(sky_path, folder, force: bool = False) -> Path:
    """`alis view SKY --export DIR`: write DIR/<stem>.html, a page that works opened from disk."""
    from .export import load_sky
    folder = outputs.check_folder(folder, "--export folder")
    stem = Path(sky_path).name if Path(sky_path).is_dir() else Path(sky_path).stem
    out = folder / f"{stem}.html"
    outputs.check_replaceable(out, "viewer", force, "--export file")
    sky = load_sky(sky_path)
    html = viewer_html(sky.display01, title=Path(sky_path).name)
    # The marker line is an HTML comment (closed on the next line), so the file stays valid HTML.
    return outputs.write_text(out, "-->\n" + html, "viewer", comment="<!--")


def make_server(html: str, port: int = 0):
    """An HTTP server on 127.0.0.1 that answers GET / with `html` (not started)."""
    import http.server

    body = html.encode("utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("#")[0].split("?")[0] not in ("/", "/index.html"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # keep the terminal for the URL
            log.debug(fmt, *args)

    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as e:
        raise AlisError(f"--port {port}: cannot listen on 127.0.0.1 ({e.strerror or e}); choose another port or 0") from None


def serve_html(html: str, port: int = 0, open_browser: bool = True, announce=None) -> None:
    """Serve one page from 127.0.0.1 (port 0: a free one) until Ctrl-C; open it in the browser."""
    import webbrowser

    server = make_server(html, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    (announce or log.warning)(f"serving the viewer at {url} (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def view(sky_path, port: int = 0, open_browser: bool = True, export_dir: Optional[str] = None,
         force: bool = False, announce=None) -> Optional[Path]:
    """`alis view`: export the page (with `export_dir`) or serve it."""
    if export_dir is not None:
        return export_viewer(sky_path, export_dir, force)
    from .export import load_sky
    sky = load_sky(sky_path)
    serve_html(viewer_html(sky.display01, title=Path(sky_path).name), port, open_browser, announce)
    return None
