"""Package the Blender extension: `python -m blender_addon.build [--out dist] [--validate]`.

Writes `dist/alis_sky-<version>.zip` with the files at the archive root (the layout Blender's own
`blender --command extension build` produces), plus copies of alis_core/options.py and
alis_core/errors.py in `_alis/` (SHARED_FILES): the UI takes its choices from them without needing
alis_core installed in Blender's Python, and the project's own wheel in `wheels/`
(`pip wheel --no-deps` of the repository, no torch in it), which the preferences' Set Up Backend
button installs into the backend's venv. `--validate` then runs Blender's validator
(`blender --command extension validate`, i.e. bl_pkg's blender_ext.py) using the `bpy` module
when it is installed (`pip install bpy`), or a `blender` executable given with `--blender`.
The build needs the standard library and pip (setuptools for the wheel: the running Python's own
when it has setuptools >= 68, else pip fetches it as a build dependency).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(ADDON_DIR)
MANIFEST = "blender_manifest.toml"
# Files of the library the extension carries (archive path -> repository path): torch-free.
SHARED_FILES = {
    "_alis/options.py": os.path.join("alis_core", "options.py"),
    "_alis/errors.py": os.path.join("alis_core", "errors.py"),
}
SHARED_INIT = '"""Copies of alis_core/options.py and alis_core/errors.py, written by build.py."""\n'
# Reproducible archives: every entry gets this timestamp (the wheel's too, via SOURCE_DATE_EPOCH).
ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)
SOURCE_DATE_EPOCH = "1704067200"  # = ZIP_DATE_TIME in UTC
WHEEL_FOLDER = "wheels"  # = installer.WHEEL_FOLDER: where Set Up Backend looks for the project wheel
# What the project wheel is built from (pyproject.toml's packages, its readme and licence).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "alis_core", "training")
_wheel_cache: dict[str, tuple[str, bytes]] = {}  # sources digest -> (file name, bytes): one build per process


def _wheel_source_files(repo_dir: str) -> list[str]:
    """The repository files the wheel is built from (no caches, no compiled files), sorted."""
    files = []
    for top in WHEEL_SOURCES:
        path = os.path.join(repo_dir, top)
        if os.path.isfile(path):
            files.append(top)
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            files += [os.path.relpath(os.path.join(root, n), repo_dir) for n in names
                      if not n.endswith((".pyc", ".pyo")) and not n.startswith(".")]
    return sorted(files)


def project_wheel(repo_dir: str = REPO_DIR) -> tuple[str, bytes]:
    """(file name, bytes) of `pip wheel --no-deps` of the project, built from a clean copy of its sources
    (a stale build/ folder in the repository cannot leak into it) and reproducibly (SOURCE_DATE_EPOCH)."""
    files = _wheel_source_files(repo_dir)
    digest = hashlib.sha256()
    for rel in files:
        with open(os.path.join(repo_dir, rel), "rb") as fh:
            digest.update(rel.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    key = digest.hexdigest()
    if key in _wheel_cache:
        return _wheel_cache[key]
    with tempfile.TemporaryDirectory(prefix="alis_wheel_") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        for rel in files:
            os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(repo_dir, rel), os.path.join(src, rel))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", out]
        if _has_setuptools(68):
            cmd.append("--no-build-isolation")  # no index needed
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        run = subprocess.run(cmd + [src], capture_output=True, text=True, env=env)
        wheels = [n for n in os.listdir(out) if n.endswith(".whl")] if os.path.isdir(out) else []
        if run.returncode != 0 or len(wheels) != 1:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip wheel of {repo_dir} failed: {last}")
        with open(os.path.join(out, wheels[0]), "rb") as fh:
            _wheel_cache[key] = (wheels[0], fh.read())
    return _wheel_cache[key]


def _has_setuptools(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    try:
        return int(setuptools.__version__.split(".")[0]) >= major
    except ValueError:
        return False


def read_manifest(addon_dir: str = ADDON_DIR) -> dict:
    with open(os.path.join(addon_dir, MANIFEST), "rb") as fh:
        return tomllib.load(fh)


def _excluded(rel_path: str, patterns: list[str]) -> bool:
    """Blender-style exclude patterns: 'dir/' matches a folder anywhere, '/x' anchors at the root."""
    parts = rel_path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            name = pattern.strip("/")
            if pattern.startswith("/"):
                if parts[0] == name and len(parts) > 1:
                    return True
            elif name in parts[:-1]:
                return True
        elif pattern.startswith("/"):
            if fnmatch.fnmatch(rel_path, pattern[1:]):
                return True
        elif fnmatch.fnmatch(parts[-1], pattern):
            return True
    return False


def package_files(addon_dir: str = ADDON_DIR) -> list[str]:
    """Relative paths (with '/') of the files that go into the extension archive, sorted."""
    manifest = read_manifest(addon_dir)
    patterns = list(manifest.get("build", {}).get("paths_exclude_pattern", [])) + ["*.pyc", "*.pyo", ".*"]
    files = []
    for root, dirs, names in os.walk(addon_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), addon_dir).replace(os.sep, "/")
            if not _excluded(rel, patterns):
                files.append(rel)
    return sorted(files)


def build(out_dir: str | None = None, addon_dir: str = ADDON_DIR, wheel: bool = True) -> str:
    """Write `<out_dir>/<id>-<version>.zip` (out_dir defaults to the repository's dist/); return its path.

    wheel: bundle the project wheel (Set Up Backend needs it; without it the button says so).
    """
    manifest = read_manifest(addon_dir)
    out_dir = out_dir or os.path.join(REPO_DIR, "dist")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{manifest['id']}-{manifest['version']}.zip")
    tmp = path + ".tmp"
    entries = {}
    for rel in package_files(addon_dir):
        with open(os.path.join(addon_dir, rel), "rb") as fh:
            entries[rel] = fh.read()
    entries["_alis/__init__.py"] = SHARED_INIT.encode()
    for rel, src in SHARED_FILES.items():
        with open(os.path.join(REPO_DIR, src), "rb") as fh:
            entries[rel] = fh.read()
    if wheel:
        name, data = project_wheel(REPO_DIR)
        entries[f"{WHEEL_FOLDER}/{name}"] = data
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(entries):
            info = zipfile.ZipInfo(rel, date_time=ZIP_DATE_TIME)
            # a wheel is a zip already: storing it again saves the time of a useless deflate
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(".whl") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, entries[rel])
    os.replace(tmp, path)
    return path


def blender_validate_command(target: str, blender: str | None = None) -> list[str]:
    """argv that runs Blender's extension validator on a zip or folder.

    With `blender` (an executable): `blender --command extension validate target`. Without: the
    validator script from the installed `bpy` module, run by this Python with Blender's tag list.
    """
    if blender:
        return [blender, "--factory-startup", "--command", "extension", "validate", target]
    import bpy  # noqa: F401 - only to locate Blender's scripts folder

    scripts = bpy.utils.system_resource("SCRIPTS")
    script = os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py")
    tags = os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py")
    return [sys.executable, script, "validate", target, "--valid-tags", tags]


def validate(target: str, blender: str | None = None) -> tuple[bool, str]:
    """Run Blender's validator on target; (ok, output)."""
    out = subprocess.run(blender_validate_command(target, blender), capture_output=True, text=True)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blender_addon.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: dist/ in the repository)")
    parser.add_argument("--validate", action="store_true", help="validate the zip with Blender's own rules")
    parser.add_argument("--blender", default=None, help="Blender executable for --validate (default: the bpy module)")
    parser.add_argument("--no-wheel", action="store_true",
                        help="leave the project wheel out (the preferences' Set Up Backend then cannot work)")
    args = parser.parse_args(argv)
    path = build(args.out, wheel=not args.no_wheel)
    print(path)
    if args.validate:
        try:
            ok, output = validate(path, args.blender)
        except ImportError:
            print("error: --validate needs `pip install bpy` or --blender PATH", file=sys.stderr)
            return 2
        print(output)
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
