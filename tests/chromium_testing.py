"""Headless Chromium for the browser tests (the 360° viewer, the three.js preset, the ComfyUI extension).

Chromium missing: the caller's test is skipped, except under CI (env CI set), where it fails:
.ci/run installs it. WebGL runs on SwiftShader, so no GPU is needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium); the browser tests need it")


def screenshots(pages, tmp_path: Path, size=(160, 160), extra=()) -> list[np.ndarray]:
    """[(url, png path)] -> headless Chromium on all of them at once -> the images [H, W, 3] in [0, 1]."""
    exe = chromium()
    procs = []
    for i, (url, png) in enumerate(pages):
        cmd = [exe, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--mute-audio",
               f"--user-data-dir={tmp_path / f'profile{i}'}", f"--window-size={size[0]},{size[1]}",
               "--virtual-time-budget=4000", f"--screenshot={png}", *extra, url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    out = []
    for p, (url, png) in zip(procs, pages):
        _, err = p.communicate(timeout=120)
        assert Path(png).is_file(), f"no screenshot of {url}: {err.decode(errors='replace')[-800:]}"
        with Image.open(png) as im:
            out.append(np.asarray(im.convert("RGB"), np.float64) / 255)
    return out


def centre(img: np.ndarray, x=None, y=None, r: int = 3) -> np.ndarray:
    """Mean colour of the (2r)^2 pixels around (x, y), the image's centre by default."""
    h, w, _ = img.shape
    x, y = (w // 2 if x is None else x), (h // 2 if y is None else y)
    return img[y - r:y + r, x - r:x + r].reshape(-1, 3).mean(0)
