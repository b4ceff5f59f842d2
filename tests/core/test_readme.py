"""The README's library example runs as written (on the bundled default model)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_library_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("OpenEXR")  # the example writes an .exr (the `exr` extra; CI installs it)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    code = blocks[0].replace("    ...\n", "    assert tile.shape[1] == G.img_resolution\n")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "sky.exr").stat().st_size > 0
    assert scope["strip"].shape[2] == 6 * scope["G"].anchor_spacing
    assert scope["faces"].shape[:2] == (6, 3)
