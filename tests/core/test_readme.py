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


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_links_between_docs_reach_their_files_and_headings():
    docs = [README, *sorted((README.parent / "docs").glob("*.md"))]
    checked = 0
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.name}: link to missing {path}"
            if anchor and dest.suffix == ".md":
                prose = re.sub(r"```.*?```", "", dest.read_text(encoding="utf-8"), flags=re.S)  # no # comments
                headings = re.findall(r"^#+ (.+)$", prose, flags=re.M)
                assert anchor in {_slug(h) for h in headings}, f"{doc.name}: no heading #{anchor} in {dest.name}"
                checked += 1
    assert checked >= 5  # the README's and the docs' anchor links were found
