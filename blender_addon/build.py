"""Package the Blender extension: `python -m blender_addon.build [--out dist] [--validate]`.

Writes `dist/alis_sky-<version>.zip` with the files at the archive root (the layout Blender's own
`blender --command extension build` produces), plus copies of alis_core/options.py and
alis_core/errors.py in `_alis/` (SHARED_FILES): the UI takes its choices from them without needing
alis_core installed in Blender's Python. `--validate` then runs Blender's validator
(`blender --command extension validate`, i.e. bl_pkg's blender_ext.py) using the `bpy` module
when it is installed (`pip install bpy`), or a `blender` executable given with `--blender`.
The build itself needs only the standard library.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
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
# Reproducible archives: every entry gets this timestamp.
ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)


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


def build(out_dir: str | None = None, addon_dir: str = ADDON_DIR) -> str:
    """Write `<out_dir>/<id>-<version>.zip` (out_dir defaults to the repository's dist/); return its path."""
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
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(entries):
            info = zipfile.ZipInfo(rel, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
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
    args = parser.parse_args(argv)
    path = build(args.out)
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
