"""The extension package: manifest rules, build script, archive contents, Blender's own validator."""
import ast
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile


from blender_addon import build, installer

ADDON = pathlib.Path(build.ADDON_DIR)


def test_manifest_has_the_extension_fields():
    m = build.read_manifest()
    assert m["schema_version"] == "1.0.0"
    assert m["id"] == "alis_sky" and m["id"].isidentifier()
    assert m["type"] == "add-on"
    assert m["blender_version_min"] == "4.2.0"
    assert all(lic.startswith("SPDX:") for lic in m["license"])
    for key in ("version", "name", "tagline", "maintainer"):
        assert m[key].strip()
    assert not m["tagline"].endswith(".") and len(m["tagline"]) <= 64
    # every permission has a short reason, as Blender asks
    assert m["permissions"] == {"files": "Read checkpoints and write generated sky images",
                                "network": "Download models and the backend's packages on a button press"}


def test_package_uses_relative_imports_and_no_bl_info():
    for path in ADDON.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "bl_info" not in names, path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not node.module.startswith("blender_addon"), f"{path.name}: use a relative import"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("blender_addon") for a in node.names), path.name
    assert "bl_idname = __package__" in (ADDON / "preferences.py").read_text()


def test_plain_modules_import_without_bpy_or_torch():
    # params, pixels and backend are the Blender-free layer; registering must not need torch either.
    code = (
        "import sys; sys.modules['bpy'] = None; sys.modules['torch'] = None\n"
        "import blender_addon, blender_addon.params, blender_addon.pixels, blender_addon.backend\n"
        "import blender_addon.installer\n"
        "assert callable(blender_addon.register)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ADDON.parent, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_build_writes_a_reproducible_zip_of_the_extension_files(tmp_path):
    (ADDON / "__pycache__").mkdir(exist_ok=True)  # normally present; must stay out of the archive
    path = build.build(str(tmp_path / "a"))
    version = tomllib.loads((ADDON / "blender_manifest.toml").read_text())["version"]
    assert os.path.basename(path) == f"alis_sky-{version}.zip"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert {"blender_manifest.toml", "__init__.py", "backend.py", "operators.py", "world.py"} <= set(names)
    assert "build.py" not in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    build._wheel_cache.clear()  # build the project wheel again too
    again = build.build(str(tmp_path / "b"))
    assert pathlib.Path(path).read_bytes() == pathlib.Path(again).read_bytes()


def test_zip_carries_the_project_wheel_that_set_up_backend_installs(tmp_path):
    with zipfile.ZipFile(build.build(str(tmp_path / "dist"))) as zf:
        wheels = [n for n in zf.namelist() if n.endswith(".whl")]
        project = tomllib.loads((ADDON.parent / "pyproject.toml").read_text())["project"]
        assert wheels == [f"wheels/alis_panoramas-{project['version']}-py3-none-any.whl"]
        zf.extract(wheels[0], tmp_path / "x")
        names = [i.filename for i in zf.infolist()]
        size = sum(i.compress_size for i in zf.infolist())
    with zipfile.ZipFile(tmp_path / "x" / wheels[0]) as whl:
        inside = whl.namelist()
        metadata = whl.read(next(n for n in inside if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in inside if "/" in n and ".dist-info" not in n} == {"alis_core", "alis_training"}
    assert "alis_core/models/default.safetensors" in inside  # the bundled model, so Generate works at once
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "blender_addon/"))
                   for n in inside)
    # dependencies come from PyPI when the wheel is installed; torch is the only large one
    assert "Requires-Dist: torch" in metadata and "Requires-Dist: safetensors" in metadata
    # what Set Up Backend looks for, where it looks
    (tmp_path / "alis_sky").mkdir()
    with zipfile.ZipFile(build.build(str(tmp_path / "dist"))) as zf:
        zf.extractall(tmp_path / "alis_sky")
    assert installer.project_source(str(tmp_path / "alis_sky")) == str(tmp_path / "alis_sky" / wheels[0])
    # small: the wheel (with the 3.4 MB bundled model) is nearly all of it
    assert size < 8 << 20, names


def test_build_without_the_wheel(tmp_path):
    with zipfile.ZipFile(build.build(str(tmp_path / "dist"), wheel=False)) as zf:
        assert not any(n.endswith(".whl") for n in zf.namelist())


def test_build_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "blender_addon.build", "--out", str(tmp_path)],
        cwd=ADDON.parent, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert pathlib.Path(out.stdout.strip()).is_file()


def test_zip_and_folder_pass_blenders_validator(bpy, extension_zip):
    ok, output = build.validate(extension_zip)
    assert ok, output
    assert "Success" in output
    ok, output = build.validate(str(ADDON))
    assert ok, output


def test_validator_rejects_a_broken_manifest(bpy, tmp_path):
    # guards against a validator call that passes everything
    src = tmp_path / "alis_sky"
    shutil.copytree(ADDON, src, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = (src / "blender_manifest.toml").read_text()
    # an invalid value, not a missing key: Blender 4.2's validator crashes (AssertionError) on a missing one
    broken = manifest.replace('blender_version_min = "4.2.0"', 'blender_version_min = "four point two"')
    assert broken != manifest
    (src / "blender_manifest.toml").write_text(broken)
    ok, output = build.validate(str(src))
    assert not ok and "blender_version_min" in output


def test_zip_carries_alis_core_options_for_a_blender_without_alis_core(tmp_path):
    repo = ADDON.parent
    with zipfile.ZipFile(build.build(str(tmp_path / "dist"))) as zf:
        for rel, src in build.SHARED_FILES.items():
            assert zf.read(rel) == (repo / src).read_bytes(), rel  # verbatim copies
        assert "_alis/__init__.py" in zf.namelist()
        zf.extractall(tmp_path / "alis_sky")
    # the unpacked extension, in a Python where alis_core, torch and bpy do not import
    code = (
        "import sys; sys.modules['alis_core'] = sys.modules['torch'] = sys.modules['bpy'] = None\n"
        "import alis_sky.params, alis_sky.backend, alis_sky.shared, alis_sky.installer\n"
        "o = alis_sky.shared.options\n"
        "assert o.__name__ == 'alis_sky._alis.options', o.__name__\n"
        "assert alis_sky.params.SkyParams().psi == o.BLENDER.psi and alis_sky.backend.DEVICES == o.DEVICES\n"
        "print(o.NOISE_MODES)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["('none',", "'const',", "'random')"]
