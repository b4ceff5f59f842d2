"""ComfyUI node functions on a tiny model, node specs as data, and the pack root without ComfyUI.

IMAGE tensors follow ComfyUI: [B, H, W, 3] float32 in [0, 1].
"""
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import alis_core
from alis_core import image as alis_image
from nodes import NODE_SPECS, anchors, loaders, panorama, skybox
from nodes.spec import PARAM_TYPES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def G(request):
    try:
        return request.getfixturevalue("tiny_G")
    except pytest.FixtureLookupError:
        torch.manual_seed(0)
        return alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval()


@pytest.fixture
def model(G):
    return loaders.AlisModel(generator=G, name="tiny", device=torch.device("cpu"), offload_device=torch.device("cpu"))


def assert_comfy_image(x, batch=None):
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert x.ndim == 4 and x.shape[-1] == 3
    assert batch is None or x.shape[0] == batch
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def gradient_strip(h=16, w=64, batch=1):
    """A smooth, exactly periodic test panorama [B, H, W, 3] in [0, 1]."""
    t = torch.arange(w) / w * 2 * torch.pi
    rows = torch.linspace(0, 1, h)[:, None]
    red, blue = 0.5 + 0.4 * torch.sin(t).expand(h, w), 0.5 + 0.4 * torch.cos(t).expand(h, w)
    img = torch.stack([red, rows.expand(h, w), blue], -1)
    return img[None].repeat(batch, 1, 1, 1).float()


# --- specs as data (no ComfyUI needed) ---------------------------------------------------------

def test_node_ids_unique_prefixed_and_categorised():
    ids = [s.node_id for s in NODE_SPECS]
    assert len(ids) == len(set(ids)) == 13
    assert all(i.startswith("ALIS") for i in ids)
    assert all(s.category.startswith("ALIS/") for s in NODE_SPECS)
    assert len({s.display_name for s in NODE_SPECS}) == len(NODE_SPECS)


def test_every_input_and_output_has_a_tooltip_and_a_known_type():
    for spec in NODE_SPECS:
        assert spec.description
        for p in spec.inputs:
            assert p.tooltip.strip(), f"{spec.node_id}.{p.name} has no tooltip"
            assert p.type in PARAM_TYPES, f"{spec.node_id}.{p.name}: {p.type}"
            if p.type == "COMBO" and not p.options_from:
                assert p.default in p.options, f"{spec.node_id}.{p.name} default not an option"
            if p.min is not None and p.default is not None:
                assert p.min <= p.default <= p.max
        for o in spec.outputs:
            assert o.tooltip.strip() and o.type in PARAM_TYPES


def test_spec_inputs_match_node_function_signature():
    for spec in NODE_SPECS:
        params = inspect.signature(spec.function).parameters
        assert list(params)[:len(spec.inputs)] == spec.input_names(), spec.node_id
        rest = list(params)[len(spec.inputs):]
        assert set(rest) <= set(spec.extras), f"{spec.node_id}: unexpected parameters {rest}"
        for name in spec.extras:
            assert name in params, f"{spec.node_id}: extra '{name}' is not a parameter"
        for p in spec.inputs:  # widget defaults equal the function defaults, where it has one
            default = params[p.name].default
            if default is not inspect.Parameter.empty and p.default is not None:
                assert default == p.default, f"{spec.node_id}.{p.name}: {default!r} != {p.default!r}"


def test_input_and_output_names_differ():
    """ComfyUI refuses a node whose input and output share a name (the whole pack fails to load)."""
    for spec in NODE_SPECS:
        clash = set(spec.input_names()) & {o.name for o in spec.outputs}
        assert not clash, f"{spec.node_id}: {clash}"


def test_pack_root_imports_without_comfyui_under_another_name(tmp_path):
    # As ComfyUI does it: by folder path, under a name that is not "nodes" or the repo's name,
    # from a directory where neither the repo nor alis_core is on sys.path.
    code = f"""
import importlib.util, sys
sys.path = [p for p in sys.path if p not in ("", {str(REPO)!r})]
spec = importlib.util.spec_from_file_location("alis_pack_probe", {str(REPO / '__init__.py')!r},
                                              submodule_search_locations=[{str(REPO)!r}])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
ids = [s.node_id for s in pack.NODE_SPECS]
print(len(ids), hasattr(pack, "comfy_entrypoint"), "comfy" in sys.modules, "comfy_api" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    count, has_entry, comfy_loaded, comfy_api_loaded = done.stdout.split()
    assert count == "13" and comfy_loaded == "False"
    assert has_entry == str(comfy_api_loaded == "True")  # registered only where comfy_api imports


# --- Load ALIS Checkpoint ---------------------------------------------------------------------

def test_load_checkpoint_lists_loads_and_reuses(G, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "empty-cache"))
    (tmp_path / "sub").mkdir()
    alis_core.save_generator(G, tmp_path / "sub" / "tiny.safetensors")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    names = loaders.checkpoint_names([tmp_path, tmp_path / "missing"])
    assert names == [loaders.BUNDLED, "lhq1024 (download)", "sub/tiny.safetensors"]
    m1 = loaders.load_named_checkpoint("sub/tiny.safetensors", "float32", folders=[tmp_path], device="cpu")
    m2 = loaders.load_named_checkpoint("sub/tiny.safetensors", "float32", folders=[tmp_path], device="cpu")
    assert m1 is m2  # no duplicate copy while the first is alive
    assert m1.img_resolution == G.img_resolution and m1.w_dim == G.config.w_dim
    sd1, sd0 = m1.generator.state_dict(), G.state_dict()
    assert all(torch.equal(sd1[k], sd0[k]) for k in sd0)


def test_model_loaded_under_inference_mode_generates(G, tmp_path):
    # ComfyUI executes every node inside torch.inference_mode().
    alis_core.save_generator(G, tmp_path / "tiny.safetensors")
    with torch.inference_mode():
        model = loaders.load_checkpoint(tmp_path / "tiny.safetensors", device="cpu")
        img = panorama.make_panorama(model, anchors.make_anchors(model, 0, 2), batch_size=4)
    with torch.no_grad():
        again = panorama.make_panorama(model, anchors.make_anchors(model, 0, 2), batch_size=4)
    assert torch.equal(img, again)


def test_load_official_pkl_fixture():
    pkl = REPO / "tests" / "fixtures" / "official_tiny64.pkl"
    model = loaders.load_checkpoint(pkl, device="cpu")
    assert model.img_resolution == 64 and model.name == pkl.name


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pkl"])
def test_corrupt_checkpoint_names_the_input(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"Load ALIS Checkpoint: input 'ckpt_name'"):
        loaders.load_named_checkpoint(name, folders=[tmp_path])


def test_checkpoint_name_outside_the_folder_is_refused(G, tmp_path):
    alis_core.save_generator(G, tmp_path / "outside.safetensors")
    (tmp_path / "models").mkdir()
    with pytest.raises(ValueError, match="ckpt_name.*models/alis"):
        loaders.load_named_checkpoint("../outside.safetensors", folders=[tmp_path / "models"])


# --- ALIS Anchors / Join Anchors ---------------------------------------------------------------

def test_anchors_from_seed_are_deterministic(model, G):
    a = anchors.make_anchors(model, seed=3, num_anchors=5, psi=0.7)
    b = anchors.make_anchors(model, seed=3, num_anchors=5, psi=0.7)
    c = anchors.make_anchors(model, seed=4, num_anchors=5, psi=0.7)
    assert a.w.shape == (5, G.config.w_dim) and len(a) == 5
    assert torch.equal(a.w, b.w) and not torch.equal(a.w, c.w)
    assert torch.equal(a.w, alis_core.sample_anchors(G, 5, 3, truncation_psi=0.7).cpu())


def test_explicit_seed_list_overrides_seed_and_count(model, G):
    a = anchors.make_anchors(model, seed=0, num_anchors=9, psi=1.0, seeds="12, 7,99")
    assert len(a) == 3
    assert torch.equal(a.w, alis_core.anchors_from_seeds(G, [12, 7, 99], truncation_psi=1.0).cpu())
    with pytest.raises(ValueError, match=r"ALIS Anchors: input 'seeds'.*12,7,99"):
        anchors.make_anchors(model, 0, 4, 1.0, seeds="12, seven")


def test_join_anchors_is_scene_a_then_scene_b(model):
    a = anchors.make_anchors(model, 1, 3)
    b = anchors.make_anchors(model, 2, 2)
    ab = anchors.join_anchors(a, b)
    assert len(ab) == 5 and torch.equal(ab.w, torch.cat([a.w, b.w])) and torch.equal((a + b).w, ab.w)
    bad = anchors.AlisAnchors(torch.zeros(2, a.w.shape[1] + 1))
    with pytest.raises(ValueError, match="ALIS Join Anchors: input 'anchors_b'"):
        anchors.join_anchors(a, bad)


# --- ALIS Panorama ------------------------------------------------------------------------------

def test_panorama_is_a_comfy_image_of_the_natural_width(model):
    a = anchors.make_anchors(model, 0, 3)
    calls = []
    img = panorama.make_panorama(model, a, wrap=True, noise_mode="const", batch_size=2,
                                 progress=lambda done, total: calls.append((done, total)))
    assert_comfy_image(img, batch=1)
    assert img.shape[1:3] == (model.img_resolution, 3 * model.anchor_spacing)
    assert calls and calls[-1][0] == calls[-1][1]  # progress reached the end
    open_img = panorama.make_panorama(model, a, wrap=False)
    assert open_img.shape[2] == 2 * model.anchor_spacing
    cropped = panorama.make_panorama(model, a, wrap=False, width=model.anchor_spacing + 8)
    assert cropped.shape[2] == model.anchor_spacing + 8


def test_panorama_patch_context_is_on_by_default(model):
    a = anchors.make_anchors(model, 0, 2)
    img = panorama.make_panorama(model, a)
    with torch.no_grad(), model.on_device() as G:
        ref = alis_core.panorama(G, a.w, wrap=True, context=True)
        official = alis_core.panorama(G, a.w, wrap=True, context=False)
    assert torch.allclose(img, alis_image.chw_to_hwc(alis_image.to_unit(ref))[None], atol=1e-6)
    off = panorama.make_panorama(model, a, patch_context=False)
    assert torch.allclose(off, alis_image.chw_to_hwc(alis_image.to_unit(official))[None], atol=1e-6)
    assert (img - off).abs().max() > 1e-2


def test_panorama_cancel_stops_and_keeps_the_model_usable(model):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    a = anchors.make_anchors(model, 0, 4)
    with pytest.raises(Cancelled):
        panorama.make_panorama(model, a, batch_size=1, progress=cancel)
    assert model.generator.device == model.offload_device


@pytest.mark.parametrize("kwargs, where", [
    (dict(width=0), "width"),
    (dict(width=-5), "width"),
    (dict(width=10_000, wrap=False), "width"),
    (dict(noise_mode="loud"), "noise_mode"),
])
def test_panorama_bad_inputs_name_the_input(model, kwargs, where):
    a = anchors.make_anchors(model, 0, 3)
    with pytest.raises(ValueError, match=rf"ALIS Panorama: input '{where}'"):
        panorama.make_panorama(model, a, **kwargs)


def test_panorama_too_few_anchors_for_wrap(model):
    one = anchors.make_anchors(model, 0, 1)
    with pytest.raises(ValueError, match=r"input 'anchors'.*at least 2.*num_anchors"):
        panorama.make_panorama(model, one, wrap=True)


# --- Seam Check / Scroll Frames -------------------------------------------------------------------

def test_seam_check_preview_puts_the_seam_in_the_middle():
    img = gradient_strip(batch=2)
    score, preview = panorama.seam_check(img, columns=5)
    assert isinstance(score, float) and score == score  # not NaN
    assert_comfy_image(preview, batch=2)
    assert torch.equal(preview[:, :, :5], img[:, :, -5:]) and torch.equal(preview[:, :, 5:], img[:, :, :5])
    with pytest.raises(ValueError, match="ALIS Seam Check: input 'columns'"):
        panorama.seam_check(img, columns=40)


def test_seam_score_is_lower_for_a_closed_loop():
    loop = gradient_strip(h=32, w=128)
    torn = torch.cat([loop[:, :, 64:], 1 - loop[:, :, 64:]], dim=2)  # hard jump at the wrap
    assert panorama.seam_check(loop, 4)[0] < panorama.seam_check(torn, 4)[0]


def test_scroll_frames_wrap_around_a_loop():
    img = gradient_strip(h=8, w=32)
    frames = panorama.scroll_frames(img, frame_width=12, num_frames=8, loop=True)
    assert_comfy_image(frames, batch=8)
    assert frames.shape[1:3] == (8, 12)
    for i in range(8):  # camera moves 32 / 8 = 4 px per frame, wrapping past the right edge
        assert torch.equal(frames[i], torch.roll(img[0], -4 * i, dims=1)[:, :12])


def test_scroll_frames_without_loop_end_at_the_right_edge():
    img = gradient_strip(h=8, w=32)
    frames = panorama.scroll_frames(img, frame_width=10, num_frames=5, loop=False)
    assert torch.equal(frames[0], img[0, :, :10]) and torch.equal(frames[-1], img[0, :, -10:])
    with pytest.raises(ValueError, match="ALIS Scroll Frames: input 'frame_width'"):
        panorama.scroll_frames(img, frame_width=33)


# --- Equirect / cube map / Save Skybox ------------------------------------------------------------

def test_panorama_to_equirect_is_two_to_one():
    eq, sky = skybox.panorama_to_equirect(gradient_strip(h=16, w=64, batch=2))
    assert_comfy_image(eq, batch=2)
    assert len(sky.hdr) == 2 and sky.hdr[0].shape == (3, 32, 64)
    assert eq.shape[1:3] == (32, 64)
    with pytest.raises(ValueError, match="ALIS Panorama to Equirect: input 'image'.*even"):
        skybox.panorama_to_equirect(gradient_strip(h=16, w=63))


def test_equirect_to_cubemap_faces_and_cross():
    eq, _ = skybox.panorama_to_equirect(gradient_strip(h=16, w=64))
    faces, cross = skybox.equirect_to_cubemap(eq, face_size=0)
    assert_comfy_image(faces, batch=6)
    assert_comfy_image(cross, batch=1)
    assert faces.shape[1:3] == (16, 16) and cross.shape[1:3] == (48, 64)
    assert torch.equal(cross[0, 16:32, 32:48], faces[0])  # +X sits right of centre in the cross


def test_equirect_to_cubemap_rejects_non_2_to_1():
    with pytest.raises(ValueError, match=r"ALIS Equirect to Cubemap: input 'image'.*2:1.*Panorama to Equirect"):
        skybox.equirect_to_cubemap(gradient_strip(h=16, w=64))


def test_save_skybox_writes_numbered_files_with_metadata(tmp_path):
    eq, _ = skybox.panorama_to_equirect(gradient_strip(h=16, w=64))
    text = {"prompt": json.dumps({"1": {"class_type": "ALISPanorama"}}), "workflow": json.dumps({"nodes": []})}
    first = skybox.save_skybox(eq, "sky/test", "hdr", "faces + cross", 0, output_dir=str(tmp_path), text=text)
    second = skybox.save_skybox(eq, "sky/test", "none", "cross", 8, output_dir=str(tmp_path))
    names = [f["filename"] for f in first]
    assert names == ["test_00001_.png", "test_00001_.hdr", *[f"test_00001_{n}.png" for n in skybox.FACE_NAMES],
                     "test_00001_cross.png"]
    assert [f["filename"] for f in second] == ["test_00002_.png", "test_00002_cross.png"]
    assert all(f["subfolder"] == "sky" and (tmp_path / "sky" / f["filename"]).is_file() for f in first + second)
    with Image.open(tmp_path / "sky" / "test_00001_.png") as png:
        assert png.size == (64, 32) and json.loads(png.text["prompt"])["1"]["class_type"] == "ALISPanorama"
        assert "workflow" in png.text
    with Image.open(tmp_path / "sky" / "test_00002_cross.png") as png:
        assert png.size == (32, 24)
    hdr = alis_core.image.load_float_image(tmp_path / "sky" / "test_00001_.hdr")
    assert hdr.shape == (3, 32, 64)


def test_equirect_sky_travels_as_hdr_to_save_skybox(tmp_path):
    """The node's image is tone-mapped (0..1), its sky output the radiance with the sun's true
    range; Save Skybox writes that radiance as the float file and the sun into a .json beside it."""
    strip = gradient_strip(h=16, w=64)
    eq, sky = skybox.panorama_to_equirect(strip, sun="manual", sun_azimuth=90.0, sun_elevation=40.0)
    assert float(eq.max()) <= 1 and float(sky.hdr[0].max()) > 100  # an HDR sun
    assert sky.info[0].sun.azimuth_deg == 90 and sky.info[0].sun.elevation_deg == 40
    files = skybox.save_skybox(eq, "sky/s", "hdr", "none", output_dir=str(tmp_path), sky=sky)
    assert [f["kind"] for f in files] == ["equirect", "float", "sky"]
    hdr = alis_core.image.load_float_image(tmp_path / "sky" / "s_00001_.hdr")
    ref = sky.hdr[0]  # RGBE: one exponent per pixel, so about 1% of the pixel's largest channel
    assert float(hdr.max()) > 100 and bool(((hdr - ref).abs() <= 0.01 * ref.amax(0) + 1e-4).all())
    info = json.loads((tmp_path / "sky" / "s_00001_.json").read_text())
    assert info["sun"]["azimuth_deg"] == 90 and info["sun"]["irradiance"] > 0
    # a sky of another batch is refused, naming the input
    with pytest.raises(ValueError, match="Save Skybox: input 'sky'"):
        skybox.save_skybox(torch.cat([eq, eq]), "sky/t", "hdr", "none", output_dir=str(tmp_path), sky=sky)
    # blur: today's fill, no sun
    blur, bsky = skybox.panorama_to_equirect(strip, sky="blur", sun="none")
    old = alis_core.strip_to_equirect(alis_core.image.hwc_to_chw(strip[0])).clamp(0, 1)
    assert (alis_core.image.hwc_to_chw(blur[0]) - old).abs().max() <= 2e-3 and bsky.info[0].sun is None


def test_save_skybox_refuses_paths_outside_the_output_folder(tmp_path):
    eq, _ = skybox.panorama_to_equirect(gradient_strip(h=16, w=64))
    with pytest.raises(ValueError, match="Save Skybox: input 'filename_prefix'"):
        skybox.save_skybox(eq, "../escape", output_dir=str(tmp_path / "out"))


def test_save_skybox_exr_without_openexr_names_the_input(tmp_path):
    try:
        import OpenEXR  # noqa: F401
        pytest.skip("OpenEXR is installed")
    except ImportError:
        pass
    eq, _ = skybox.panorama_to_equirect(gradient_strip(h=16, w=64))
    with pytest.raises(ValueError, match="Save Skybox: input 'float_format'"):
        skybox.save_skybox(eq, "x", "exr", "none", output_dir=str(tmp_path))


# --- V3 schemas (need ComfyUI) ---------------------------------------------------------------------

SCHEMA_PROBE = """
import asyncio, importlib.util, json, sys
repo, sys.argv = sys.argv[1], [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()  # so comfy.model_management sees --cpu
spec = importlib.util.spec_from_file_location("alis_pack_schema_probe", repo + "/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
extension = asyncio.run(pack.comfy_entrypoint())
out = []
for cls in asyncio.run(extension.get_node_list()):
    schema = cls.GET_SCHEMA()
    info = schema.get_v1_info(cls)
    out.append({"id": schema.node_id, "category": schema.category, "output_node": schema.is_output_node,
                "inputs": {k: v[1] if len(v) > 1 else {} for kind in ("required", "optional")
                           for k, v in info.input.get(kind, {}).items()},
                "outputs": info.output, "hidden": sorted(info.input.get("hidden", {}))})
print("SCHEMAS" + json.dumps(out))

# Progress and Cancel through ComfyUI's own hooks: the hook presses Cancel after the first batch.
import torch, alis_core, comfy.utils, comfy.model_management as mm
v3, loaders = sys.modules[spec.name + ".nodes.v3"], sys.modules[spec.name + ".nodes.loaders"]
calls = []
def hook(value, total, preview, node_id=None):
    calls.append([value, total])
    mm.interrupt_current_processing(True)
torch.manual_seed(0)
G = alis_core.Generator(alis_core.GeneratorConfig.tiny()).eval()
model = loaders.AlisModel(G, "tiny", torch.device("cpu"), torch.device("cpu"))
anchors = v3.ALISAnchors.execute(model=model, seed=0, num_anchors=3, psi=0.7, seeds="")[0]
options = dict(wrap=True, width=-1, noise_mode="const", batch_size=2, noise_seed=0)
full = v3.ALISPanorama.execute(model=model, anchors=anchors, **options)[0]
comfy.utils.set_progress_bar_global_hook(hook)
try:
    v3.ALISPanorama.execute(model=model, anchors=anchors, **options)
    cancelled = False
except mm.InterruptProcessingException:
    cancelled = True
print("CANCEL" + json.dumps({"shape": list(full.shape), "calls": calls, "cancelled": cancelled}))
"""


def comfy_python_and_dir():
    """(python, cwd) able to import comfy_api: this interpreter, or $COMFYUI_DIR's."""
    try:
        import comfy_api.latest  # noqa: F401
        return sys.executable, None
    except ImportError:
        pass
    root = os.environ.get("COMFYUI_DIR")
    if not root:
        pytest.skip("ComfyUI not importable; set COMFYUI_DIR to check the V3 schemas")
    venv_python = Path(root, ".venv", "bin", "python")
    return os.environ.get("COMFYUI_PYTHON") or (str(venv_python) if venv_python.exists() else sys.executable), root


@pytest.mark.comfyui
def test_v3_schemas_progress_and_cancel(tmp_path):
    python, cwd = comfy_python_and_dir()
    done = subprocess.run([python, "-c", SCHEMA_PROBE, str(REPO)], cwd=cwd or tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    schemas = json.loads(done.stdout.split("SCHEMAS", 1)[1].split("CANCEL", 1)[0])
    assert [s["id"] for s in schemas] == [s.node_id for s in NODE_SPECS]
    for got, spec in zip(schemas, NODE_SPECS):
        assert got["category"] == spec.category and got["output_node"] == spec.output_node
        assert list(got["inputs"]) == spec.input_names()
        for name, options in got["inputs"].items():
            assert options.get("tooltip"), f"{got['id']}.{name} has no tooltip in ComfyUI"
        assert got["outputs"] == [o.type for o in spec.outputs]
    save = schemas[-1]
    assert save["hidden"] == ["extra_pnginfo", "prompt"]
    assert schemas[0]["inputs"]["ckpt_name"]["options"][0] == loaders.BUNDLED
    cancel = json.loads(done.stdout.split("CANCEL", 1)[1])
    assert cancel["shape"][0] == 1 and cancel["shape"][3] == 3
    assert cancel["cancelled"], "Cancel did not stop ALIS Panorama"
    assert len(cancel["calls"]) == 1 and cancel["calls"][0][0] < cancel["calls"][0][1]  # stopped mid-way


# --- bad inputs: every node names the input at fault ---------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_NODE_INPUTS = [  # (node function, its arguments, node name, input the error must name)
    ("anchors", dict(seed=0, num_anchors=3, psi=NAN), "ALIS Anchors", "psi"),
    ("anchors", dict(seed=0, num_anchors=3, psi=INF), "ALIS Anchors", "psi"),
    ("anchors", dict(seed=0, num_anchors=3, psi=-0.5), "ALIS Anchors", "psi"),
    ("anchors", dict(seed=-1, num_anchors=3), "ALIS Anchors", "seed"),
    ("anchors", dict(seed=2 ** 64, num_anchors=3), "ALIS Anchors", "seed"),
    ("anchors", dict(seed=0, num_anchors=0), "ALIS Anchors", "num_anchors"),
    ("anchors", dict(seed=0, num_anchors=10 ** 6), "ALIS Anchors", "num_anchors"),
    ("anchors", dict(seed=0, num_anchors=3, seeds="1, x"), "ALIS Anchors", "seeds"),
    ("anchors", dict(seed=0, num_anchors=3, seeds=f"1, {2 ** 64}"), "ALIS Anchors", "seeds"),
    ("anchors", dict(seed=0, num_anchors=3, seeds=",".join(["1"] * 5000)), "ALIS Anchors", "seeds"),
    ("panorama", dict(width=0), "ALIS Panorama", "width"),
    ("panorama", dict(width=-5), "ALIS Panorama", "width"),
    ("panorama", dict(width=10 ** 9), "ALIS Panorama", "width"),
    ("panorama", dict(width=10_000, wrap=False), "ALIS Panorama", "width"),
    ("panorama", dict(noise_mode="loud"), "ALIS Panorama", "noise_mode"),
    ("panorama", dict(batch_size=0), "ALIS Panorama", "batch_size"),
    ("panorama", dict(batch_size=10 ** 6), "ALIS Panorama", "batch_size"),
    ("panorama", dict(noise_seed=-1), "ALIS Panorama", "noise_seed"),
    ("panorama", dict(noise_seed=2 ** 64), "ALIS Panorama", "noise_seed"),
    ("equirect", dict(horizon=NAN), "ALIS Panorama to Equirect", "horizon"),
    ("equirect", dict(horizon=1.5), "ALIS Panorama to Equirect", "horizon"),
    ("equirect", dict(strip_horizon=INF), "ALIS Panorama to Equirect", "strip_horizon"),
    ("equirect", dict(strip_scale=NAN), "ALIS Panorama to Equirect", "strip_scale"),
    ("equirect", dict(strip_scale=0.0), "ALIS Panorama to Equirect", "strip_scale"),
    ("equirect", dict(cap_blur=NAN), "ALIS Panorama to Equirect", "cap_blur"),
    ("equirect", dict(cap_blur=-1.0), "ALIS Panorama to Equirect", "cap_blur"),
    ("equirect", dict(image=gradient_strip(w=63)), "ALIS Panorama to Equirect", "image"),
    ("equirect", dict(image=gradient_strip().fill_(NAN)), "ALIS Panorama to Equirect", "image"),
    ("cubemap", dict(face_size=16384), "ALIS Equirect to Cubemap", "face_size"),
    ("cubemap", dict(face_size=-1), "ALIS Equirect to Cubemap", "face_size"),
    ("cubemap", dict(image=gradient_strip(h=16, w=64)), "ALIS Equirect to Cubemap", "image"),
    ("save", dict(face_size=16384), "Save Skybox", "face_size"),
    ("save", dict(float_format="tiff"), "Save Skybox", "float_format"),
    ("save", dict(cubemap="sphere"), "Save Skybox", "cubemap"),
    ("save", dict(filename_prefix="../escape"), "Save Skybox", "filename_prefix"),
    ("seam", dict(columns=0), "ALIS Seam Check", "columns"),
    ("seam", dict(image=torch.zeros(1, 8, 8)), "ALIS Seam Check", "image"),
    ("scroll", dict(num_frames=0), "ALIS Scroll Frames", "num_frames"),
    ("scroll", dict(frame_width=-1), "ALIS Scroll Frames", "frame_width"),
]


def _call_node(kind, kwargs, model, tmp_path):
    eq = torch.full((1, 16, 32, 3), 0.5)
    if kind == "anchors":
        return anchors.make_anchors(model, **kwargs)
    if kind == "panorama":
        return panorama.make_panorama(model, anchors.make_anchors(model, 0, 3), **kwargs)
    if kind == "equirect":
        return skybox.panorama_to_equirect(**{"image": gradient_strip(), **kwargs})
    if kind == "cubemap":
        return skybox.equirect_to_cubemap(**{"image": eq, **kwargs})
    if kind == "save":
        return skybox.save_skybox(**{"image": eq, **kwargs}, output_dir=str(tmp_path / "out"))
    if kind == "seam":
        return panorama.seam_check(**{"image": gradient_strip(), **kwargs})
    return panorama.scroll_frames(**{"image": gradient_strip(), **kwargs})


@pytest.mark.parametrize("kind, kwargs, node, where", BAD_NODE_INPUTS,
                         ids=[f"{k}-{'-'.join(f'{n}={str(v)[:12]}' for n, v in kw.items())}"
                              for k, kw, _, _ in BAD_NODE_INPUTS])
def test_bad_node_input_names_the_input(kind, kwargs, node, where, model, tmp_path):
    with pytest.raises(ValueError) as e:
        _call_node(kind, kwargs, model, tmp_path)
    message = str(e.value)
    assert message.startswith(f"{node}: input '{where}': ") and "\n" not in message, message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing saved


def test_large_outputs_are_bounded_by_memory(model, monkeypatch):
    from alis_core import outputs
    monkeypatch.setattr(outputs, "available_memory", lambda: 2 ** 20)  # 1 MiB to spare
    with pytest.raises(ValueError, match=r"ALIS Equirect to Cubemap: input 'face_size': .*needs about .* of memory"):
        skybox.equirect_to_cubemap(torch.full((1, 16, 32, 3), 0.5), face_size=2048)
    with pytest.raises(ValueError, match=r"ALIS Panorama: input 'width': .*needs about"):
        panorama.make_panorama(model, anchors.make_anchors(model, 0, 3), width=100_000)


def test_nan_weights_are_an_error_not_a_black_panorama(G):
    broken = alis_core.Generator(G.config).eval()
    broken.load_state_dict(G.state_dict())
    with torch.no_grad():
        for p in broken.synthesis.parameters() if hasattr(broken, "synthesis") else broken.parameters():
            p.fill_(float("nan"))
    m = loaders.AlisModel(generator=broken, name="nan", device=torch.device("cpu"), offload_device=torch.device("cpu"))
    a = anchors.make_anchors(loaders.AlisModel(G, "tiny", torch.device("cpu"), torch.device("cpu")), 0, 2)
    with pytest.raises(ValueError, match=r"ALIS Panorama: input 'model': .*NaN"):
        panorama.make_panorama(m, a)


def test_symlinked_checkpoints_are_listed_and_loaded_alike(G, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIS_HOME", str(tmp_path / "empty-cache"))
    store, models = tmp_path / "store", tmp_path / "models"
    store.mkdir()
    models.mkdir()
    alis_core.save_generator(G, store / "real.safetensors")
    try:
        (models / "linked.safetensors").symlink_to(store / "real.safetensors")
        (models / "dangling.safetensors").symlink_to(store / "gone.safetensors")
    except OSError:
        pytest.skip("no symlinks here")
    names = loaders.checkpoint_names([models])
    assert names == [loaders.BUNDLED, "lhq1024 (download)", "linked.safetensors"]  # the dangling link is not listed...
    for name in names[2:]:  # ...and every file listed loads
        assert loaders.load_named_checkpoint(name, folders=[models]).img_resolution == G.img_resolution
    with pytest.raises(ValueError, match="ckpt_name"):
        loaders.load_named_checkpoint("dangling.safetensors", folders=[models])


def test_node_defaults_are_the_comfyui_defaults():
    from alis_core import options
    params = {(s.node_id, p.name): p.default for s in NODE_SPECS for p in s.inputs}
    assert params[("ALISAnchors", "psi")] == options.COMFYUI.psi == 0.7
    assert params[("ALISAnchors", "num_anchors")] == options.COMFYUI.anchors == 8
    assert params[("ALISPanorama", "patch_context")] is options.COMFYUI.context is True
    assert params[("ALISLoadCheckpoint", "fast")] is options.COMFYUI.fast is True
    assert set(dict((p.name, p.options) for p in panorama.PANORAMA.inputs)["noise_mode"]) == set(options.NOISE_MODES)


def test_save_skybox_never_replaces_a_file_that_is_not_an_image(tmp_path):
    eq = torch.full((1, 16, 32, 3), 0.5)
    out = tmp_path / "out"
    (out / "sky").mkdir(parents=True)
    notes = out / "sky" / "x_00001_cross.png"  # not picked by the counter (no "x_00001_.png")
    notes.write_text("notes")

    def fixed_counter(prefix, output_dir, width, height):  # a save path that picks a taken name
        return str(out / "sky"), "x", 1, "sky", prefix
    with pytest.raises(ValueError, match=r"Save Skybox: input 'filename_prefix': .*x_00001_cross.png already exists"):
        skybox.save_skybox(eq, "sky/x", "none", "cross", output_dir=str(out), save_path=fixed_counter)
    assert notes.read_text() == "notes" and not (out / "sky" / "x_00001_.png").exists()
