"""The 360° viewer in a real browser: headless Chromium opens pages from disk and screenshots them.

The sky is coloured by direction (RGB = (d + 1) / 2, d the Blender-world unit vector), so the
colour at the centre of a screenshot says where the camera looked. Chromium missing: skipped,
except under CI (env CI set), where it fails: .ci/run installs it.
"""
import json
import math
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from alis_core import export, viewer
from alis_core.image import save_float_image, save_png, linear_to_srgb
from chromium_testing import centre, screenshots
from alis_testing import direction_sky as coloured_by_direction

H = 64
TOL = 10 / 255  # 8-bit PNG -> three.js cube render target -> 8-bit screenshot


def direction_sky(h=H):
    return coloured_by_direction(h)


def look(yaw, pitch):
    y, p = math.radians(yaw), math.radians(pitch)
    return np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p)])


@pytest.fixture(scope="module")
def sky_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer_sky")
    save_png(folder / "sky.png", direction_sky())
    return folder


VIEWS = [(0, 0), (90, 0), (180, 0), (270, 0), (0, 90), (30, 20)]


def test_exported_viewer_from_disk_looks_where_the_hash_says(sky_files, tmp_path):
    out = viewer.export_viewer(sky_files / "sky.png", tmp_path / "page")
    assert out == tmp_path / "page" / "sky.html"
    html = out.read_text()
    remote = ("src=\"http", "src='http", "\"https://", "\"http://", "//cdn")
    assert not any(r in html for r in remote), "the page must not load anything from the network"
    pages = [(f"{out.as_uri()}#yaw={y}&pitch={p}", tmp_path / f"y{y}p{p}.png") for y, p in VIEWS]
    # and off the centre: a 90° field of view puts (1, -0.5, 0) half way to the right edge (the camera's
    # right is -Y when it looks along +X) and (1, 0, 0.5) half way to the top edge
    pages.append((f"{out.as_uri()}#yaw=0&pitch=0&fov=90", tmp_path / "fov90.png"))
    *shots, wide = screenshots(pages, tmp_path)
    for (yaw, pitch), img in zip(VIEWS, shots):
        want = (look(yaw, pitch) + 1) / 2
        np.testing.assert_allclose(centre(img), want, atol=TOL, err_msg=f"yaw {yaw} pitch {pitch}")
    for (x, y), d in [((120, 80), (1, -0.5, 0)), ((80, 40), (1, 0, 0.5)), ((120, 120), (1, -0.5, -0.5))]:
        want = (np.asarray(d) / np.linalg.norm(d) + 1) / 2
        np.testing.assert_allclose(centre(wide, x, y, r=2), want, atol=TOL, err_msg=f"pixel {x, y}")


def test_threejs_preset_shows_the_right_way_round_in_three(sky_files, tmp_path):
    # A page next to the six files loads them with three.js's CubeTextureLoader as the three.js docs
    # show, sets them as scene.background, and renders six views looking at off-axis directions.
    folder = tmp_path / "three"
    export.export_sky(sky_files / "sky.png", folder, "threejs")
    probes = [(1, 0.5, 0.25), (-1, -0.7, 0.35), (-0.3, 1, -0.6), (0.6, -1, 0.15), (0.2, -0.4, 0.9), (0.5, 0.3, -0.9)]
    # three.js axes from Blender's: (x, z, -y) (glTF's); the camera looks at that point.
    targets = [[b[0], b[2], -b[1]] for b in probes]
    page = folder / "cube.html"
    page.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>cube</title>
<script type="importmap">{viewer._import_map()}</script>
<style>html,body{{margin:0;background:#000;overflow:hidden}}</style></head><body><script type="module">
import * as THREE from "three";
const renderer = new THREE.WebGLRenderer({{preserveDrawingBuffer: true}});
renderer.setPixelRatio(1); renderer.setSize(300, 200); document.body.appendChild(renderer.domElement);
renderer.setScissorTest(true);
const scene = new THREE.Scene();
scene.background = await new THREE.CubeTextureLoader()
    .loadAsync(["px.png", "nx.png", "py.png", "ny.png", "pz.png", "nz.png"]);
const camera = new THREE.PerspectiveCamera(40, 1, 0.1, 10);
const targets = {json.dumps(targets)};
targets.forEach((t, i) => {{
  const x = (i % 3) * 100, y = 100 - Math.floor(i / 3) * 100;  // viewports count from the bottom
  renderer.setViewport(x, y, 100, 100); renderer.setScissor(x, y, 100, 100);
  camera.lookAt(new THREE.Vector3(...t)); renderer.render(scene, camera);
}});
document.title = "ready";
</script></body></html>""")
    [img] = screenshots([(page.as_uri(), tmp_path / "cube.png")], tmp_path, size=(300, 200),
                        extra=["--allow-file-access-from-files"])  # the page reads images beside it
    for i, b in enumerate(probes):
        want = (np.asarray(b) / np.linalg.norm(b) + 1) / 2
        got = centre(img, x=(i % 3) * 100 + 50, y=(i // 3) * 100 + 50)
        np.testing.assert_allclose(got, want, atol=TOL, err_msg=f"probe {b}")


def test_float_sky_is_tone_mapped_for_the_page(tmp_path):
    linear = torch.full((3, 8, 16), 4.0)  # far above 1: the page shows the tone map's white, not garbage
    save_float_image(tmp_path / "bright.hdr", linear_to_srgb(linear))
    sky = export.load_sky(tmp_path / "bright.hdr")
    assert float(sky.linear.min()) > 3.9 and 0.95 < float(sky.display01.min()) <= 1.0


def test_served_page_is_the_viewer(sky_files):
    html = viewer.viewer_html(direction_sky(8), title="probe <b>")
    server = viewer.make_server(html, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
        assert body == html and "<title>probe b</title>" in body
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "etc/passwd", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_vendored_three_is_pinned_and_licensed():
    three = Path(viewer.__file__).parent / "web" / "three"
    assert viewer.THREE_VERSION == "0.187.0"
    assert "REVISION = '187'" in (three / "three.core.js").read_text()
    assert "MIT" in (three / "LICENSE").read_text() or "Permission is hereby granted" in (three / "LICENSE").read_text()


def test_view_export_refuses_to_replace_a_foreign_file(sky_files, tmp_path, capsys):
    from alis_core.cli import main
    (tmp_path / "sky.html").write_text("<p>my notes</p>")
    assert main(["view", str(sky_files / "sky.png"), "--export", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "sky.html").read_text() == "<p>my notes</p>"
    assert main(["view", str(sky_files / "sky.png"), "--export", str(tmp_path), "--force"]) == 0
    assert main(["view", str(sky_files / "sky.png"), "--export", str(tmp_path)]) == 0  # our own page: replaced
    assert main(["view", str(tmp_path / "missing.png"), "--no-browser"]) == 2
    assert "does not exist" in capsys.readouterr().err
