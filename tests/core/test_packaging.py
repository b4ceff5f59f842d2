"""`pip install .` installs namespaced names only: alis_core and the trainer as alis_training.

Nothing generic (`nodes`, `training`) may land at the top of site-packages, where it would shadow
or be shadowed by other projects' folders of the same name. The wheel is built from a copy of the
sources, so the checkout gets no build/ or egg-info folders.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "__init__.py", "alis_core", "training", "nodes")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = src / "wheelhouse"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_installs_only_namespaced_packages(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}
    packages = {t for t in top if not t.endswith(".dist-info")}
    assert packages == {"alis_core", "alis_training"}  # no nodes, no training, no root __init__.py


def test_wheel_carries_the_trainer_and_the_default_model(wheel):
    names = set(wheel.namelist())
    # the trainer's folder, renamed: `python -m alis_training` is what torchrun starts
    assert {"alis_training/__main__.py", "alis_training/cli.py", "alis_training/cli_eval.py"} <= names
    assert {p.name for p in (ROOT / "training").glob("*.py")} == {
        n.split("/", 1)[1] for n in names if n.startswith("alis_training/") and n.endswith(".py")}
    assert "alis_core/models/default.safetensors" in names


def test_wheel_carries_every_module_of_the_library(wheel):
    """Subpackages are listed by hand in pyproject.toml: a new one (alis_core.cpu) must not be left out."""
    names = set(wheel.namelist())
    modules = {f"alis_core/{p.relative_to(ROOT / 'alis_core').as_posix()}"
               for p in (ROOT / "alis_core").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)


def test_alis_command_goes_through_the_tuning_entry(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    lines = [line.replace(" ", "") for line in wheel.read(entry_points).decode().splitlines()]
    assert "alis=alis_core.entry:main" in lines


def test_wheel_carries_the_viewer_and_vendored_three(wheel):
    names = set(wheel.namelist())
    web = ROOT / "alis_core" / "web"
    shipped = {f"alis_core/{p.relative_to(ROOT / 'alis_core').as_posix()}" for p in web.rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)
