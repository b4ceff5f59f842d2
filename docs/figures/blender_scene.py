"""Render of a small scene lit by an ALIS sky and its sun, for docs/img/blender_scene.png.

Runs with Blender as a Python module (pip install bpy==5.0.1) from the repository root. The World
and the "ALIS Sun" lamp are set up by the extension's own code (blender_addon.world), so the
picture shows what the extension builds. Make a sky first, its sun's disk left out for the lamp, e.g.

    python -m alis_core generate --wrap --anchors 4 --sun 150,25 --no-sun-disk --equirect sky.hdr
    python docs/figures/blender_scene.py --sky sky.hdr --out docs/img/blender_scene.png

The sun lamp takes its direction, size, colour and strength from the sky.json the CLI writes
beside the image (--no-sun-lamp: none; make the sky without --no-sun-disk then, so the world
image holds the sun). Cycles on the CPU: a few minutes on two cores at the defaults (960x540,
48 samples, denoised). By default the ground is a shadow catcher, so the objects stand in the
sky's own landscape and cast the sun's shadows onto it. The command line that made the picture is printed.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sky", required=True, help="equirect sky: .hdr or .exr (linear light)")
    p.add_argument("--out", default=str(REPO / "docs" / "img" / "blender_scene.png"))
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=540)
    p.add_argument("--samples", type=int, default=48, help="Cycles samples per pixel (denoised)")
    p.add_argument("--rotation", type=float, default=0.0, help="sky rotation about Z in degrees")
    p.add_argument("--strength", type=float, default=1.0, help="sky strength")
    p.add_argument("--sun-lamp", action=argparse.BooleanOptionalAction, default=True,
                   help="light the scene with a Sun lamp synced to the sky's sun (from the sky.json beside --sky)")
    p.add_argument("--exposure", type=float, default=0.0, help="the view's exposure in EV (Color Management)")
    p.add_argument("--ground", choices=("catcher", "disc"), default="catcher",
                   help="catcher: an invisible plane that only takes shadows, so the objects stand in the "
                        "sky's landscape; disc: a visible grey disc")
    p.add_argument("--max-kb", type=int, default=400,
                   help="re-save with a 256-colour palette when the PNG is larger than this (0: never)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for Cycles")
    return p.parse_args(argv)


def material(bpy, name: str, color, roughness: float, metallic: float = 0.0, coat: float = 0.0):
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Coat Weight"].default_value = coat
    return mat


def add_object(bpy, op, mat, location, rotation=(0.0, 0.0, 0.0), smooth=True, subdivide=0, **kwargs):
    op(location=location, rotation=rotation, **kwargs)
    obj = bpy.context.active_object
    obj.data.materials.append(mat)
    if subdivide:
        mod = obj.modifiers.new("Subdivision", "SUBSURF")
        mod.levels = mod.render_levels = subdivide
    if smooth:
        bpy.ops.object.shade_smooth()
    return obj


def build_scene(bpy, args) -> None:
    """Ground, a glossy sphere, a rough cube and a metallic Suzanne, a camera that also sees the sky."""
    from mathutils import Vector

    scene = bpy.context.scene
    ground = material(bpy, "Ground", (0.55, 0.55, 0.52), 0.45)
    glossy = material(bpy, "Glossy", (0.75, 0.05, 0.04), 0.04, coat=1.0)
    rough = material(bpy, "Rough", (0.85, 0.45, 0.12), 0.9)
    metal = material(bpy, "Metal", (1.0, 0.78, 0.38), 0.12, metallic=1.0)

    floor = add_object(bpy, bpy.ops.mesh.primitive_circle_add, ground, (0.0, 0.0, 0.0), smooth=False,
                       radius=6.0 if args.ground == "disc" else 60.0, vertices=96, fill_type="NGON")
    floor.is_shadow_catcher = args.ground == "catcher"
    add_object(bpy, bpy.ops.mesh.primitive_uv_sphere_add, glossy, (-1.9, 0.4, 0.75), radius=0.75,
               segments=64, ring_count=32)
    add_object(bpy, bpy.ops.mesh.primitive_cube_add, rough, (1.9, 0.6, 0.6), (0.0, 0.0, math.radians(25)),
               smooth=False, size=1.2)
    add_object(bpy, bpy.ops.mesh.primitive_monkey_add, metal, (0.0, -0.3, 0.78),
               (math.radians(-10), 0.0, math.radians(-8)), subdivide=2, size=1.4)

    camera_data = bpy.data.cameras.new("Camera")
    camera_data.lens = 24
    camera = bpy.data.objects.new("Camera", camera_data)
    scene.collection.objects.link(camera)
    camera.location = Vector((0.0, -6.0, 1.2))
    target = Vector((0.0, 0.0, 1.15))
    camera.rotation_euler = (target - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera


def wire_sky(bpy, args) -> None:
    from blender_addon import backend
    from blender_addon import world as alis_world

    scene = bpy.context.scene
    sky = Path(args.sky).resolve()
    image = alis_world.image_from_file(str(sky))
    world = alis_world.ensure_world(scene)
    rotation = math.radians(args.rotation)
    alis_world.show_sky(world, image, rotation=rotation, strength=args.strength)
    sun = backend.sky_sun(backend.read_sky_json(backend.sky_json_path(str(sky))))
    if args.sun_lamp and sun is None:
        sys.exit(f"error: {backend.sky_json_path(str(sky))} holds no sun; make the sky with --sun AZ,EL "
                 "or pass --no-sun-lamp")
    alis_world.sync_sun_lamp(scene, world, sun, args.sun_lamp, rotation=rotation, strength=args.strength)


def configure_render(bpy, args, out: Path) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 6
    scene.cycles.seed = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = args.threads
    scene.render.resolution_x, scene.render.resolution_y = args.width, args.height
    scene.render.resolution_percentage = 100
    # "Standard" shows the sky's pixels as generated (AgX would tone them down).
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.exposure = args.exposure
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.render.image_settings.compression = 100
    scene.render.filepath = str(out)


def shrink_png(path: Path) -> None:
    """Re-save a PNG with an adaptive 256-colour palette (dithered), to keep docs pictures small."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    small.save(path, optimize=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not Path(args.sky).is_file():
        sys.exit(f"error: --sky {args.sky} does not exist; make one with "
                 "python -m alis_core generate --wrap --equirect sky.hdr")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # bpy reads its user folders on import: keep them out of the home directory.
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="alis_blender_figure_"))
    sys.path.insert(0, str(REPO))
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    build_scene(bpy, args)
    wire_sky(bpy, args)
    configure_render(bpy, args, out)
    start = time.monotonic()
    bpy.ops.render.render(write_still=True)
    if args.max_kb and out.stat().st_size > args.max_kb * 1000:
        shrink_png(out)
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()),
                          *(argv if argv is not None else sys.argv[1:])])
    print(f"wrote {out} in {time.monotonic() - start:.0f} s with: {command}")


if __name__ == "__main__":
    main()
