"""World node wiring and the sky image datablock (bpy, main thread only).

The sky is wired as
    Texture Coordinate (Generated) -> Mapping (Z rotation) -> Environment Texture (equirectangular)
    -> Background -> World Output.
Our nodes are named with the prefix "ALIS " and carry the custom property "alis_sky", so later
runs find and reuse them; the user's other world nodes are left alone (only the World Output's
Surface link is pointed at our Background).
"""
from __future__ import annotations

import math
import os

import bpy
import numpy as np

from . import pixels

TAG = "alis_sky"
SKY_INFO = "alis_sky_info"  # on the sky image: its sky.json (SkyInfo dict) as a JSON string, for exports
NODE_TEXCOORD = "ALIS Texture Coordinate"
NODE_MAPPING = "ALIS Mapping"
NODE_ENVIRONMENT = "ALIS Environment"
NODE_BACKGROUND = "ALIS Background"
NODE_OUTPUT = "ALIS World Output"
IMAGE_NAME = "ALIS Sky"

# Float image data is linear light; Blender 4.0+ calls that space 'Linear Rec.709', 3.x 'Linear'.
LINEAR_COLORSPACES = ("Linear Rec.709", "Linear")


def ensure_world(scene: bpy.types.Scene) -> bpy.types.World:
    """The scene's world, created (and assigned) if it has none."""
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    return scene.world


def _node_tree(world: bpy.types.World) -> bpy.types.NodeTree:
    # Blender 5 worlds always use nodes (World.use_nodes is deprecated there); 4.x needs the switch.
    if world.node_tree is None or (bpy.app.version < (5, 0, 0) and not world.use_nodes):
        world.use_nodes = True
    return world.node_tree


def _ensure_node(tree: bpy.types.NodeTree, bl_idname: str, name: str, location: tuple[float, float]):
    node = tree.nodes.get(name)
    if node is not None and node.bl_idname != bl_idname:
        tree.nodes.remove(node)
        node = None
    if node is None:
        node = tree.nodes.new(bl_idname)
        node.name = name
        node.label = name
        node.location = location
    node[TAG] = True
    return node


def _world_output(tree: bpy.types.NodeTree):
    """The active World Output node; one is created when the tree has none."""
    outputs = [n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputWorld"]
    for node in outputs:
        if node.is_active_output:
            return node
    if outputs:
        return outputs[0]
    node = tree.nodes.new("ShaderNodeOutputWorld")
    node.name = NODE_OUTPUT
    node.location = (300.0, 0.0)
    node[TAG] = True
    return node


def _link(tree: bpy.types.NodeTree, from_socket, to_socket) -> None:
    """Link from_socket -> to_socket, replacing whatever fed to_socket before."""
    for link in list(to_socket.links):
        if link.from_socket != from_socket:
            tree.links.remove(link)
    if not to_socket.is_linked:
        tree.links.new(from_socket, to_socket)


def wire_world(
    world: bpy.types.World,
    image: bpy.types.Image | None,
    rotation: float = 0.0,
    strength: float = 1.0,
) -> dict[str, bpy.types.Node]:
    """Create or reuse the ALIS nodes in `world`, show `image`, rotate it by `rotation` radians about Z."""
    tree = _node_tree(world)
    output = _world_output(tree)
    x, y = output.location
    texcoord = _ensure_node(tree, "ShaderNodeTexCoord", NODE_TEXCOORD, (x - 1000.0, y))
    mapping = _ensure_node(tree, "ShaderNodeMapping", NODE_MAPPING, (x - 800.0, y))
    environment = _ensure_node(tree, "ShaderNodeTexEnvironment", NODE_ENVIRONMENT, (x - 550.0, y))
    background = _ensure_node(tree, "ShaderNodeBackground", NODE_BACKGROUND, (x - 250.0, y))

    mapping.vector_type = "POINT"
    environment.projection = "EQUIRECTANGULAR"
    environment.interpolation = "Linear"
    if image is not None:
        environment.image = image

    _link(tree, texcoord.outputs["Generated"], mapping.inputs["Vector"])
    _link(tree, mapping.outputs["Vector"], environment.inputs["Vector"])
    _link(tree, environment.outputs["Color"], background.inputs["Color"])
    _link(tree, background.outputs["Background"], output.inputs["Surface"])
    set_rotation(world, rotation)
    set_strength(world, strength)
    return {
        "texcoord": texcoord, "mapping": mapping, "environment": environment,
        "background": background, "output": output,
    }


def set_rotation(world: bpy.types.World, rotation: float) -> None:
    """Set the Z rotation (radians) of our Mapping node, if the world has one."""
    tree = world.node_tree
    node = tree.nodes.get(NODE_MAPPING) if tree is not None else None
    if node is not None:
        node.inputs["Rotation"].default_value = (0.0, 0.0, rotation)


def set_strength(world: bpy.types.World, strength: float) -> None:
    """Set the strength of our Background node, if the world has one."""
    tree = world.node_tree
    node = tree.nodes.get(NODE_BACKGROUND) if tree is not None else None
    if node is not None:
        node.inputs["Strength"].default_value = strength


def sky_image(world: bpy.types.World) -> bpy.types.Image | None:
    """The image our Environment node shows, or None."""
    tree = world.node_tree
    node = tree.nodes.get(NODE_ENVIRONMENT) if tree is not None else None
    return node.image if node is not None else None


def _set_linear(image: bpy.types.Image) -> None:
    for name in LINEAR_COLORSPACES:
        try:
            image.colorspace_settings.name = name
            return
        except TypeError:
            continue


def _write_image(image: bpy.types.Image, path: str, file_format: str) -> None:
    """Write image's pixels to path: EXR/HDR as linear light (32-bit EXR), PNG as plain sRGB.

    Image.save() is not used: Blender 4.2 writes a generated float image's EXR sRGB-encoded
    (2.5 comes back as 1.49). save_render() with a temporary scene's settings is exact in 4.2 and 5.x.
    """
    scene = bpy.data.scenes.new("ALIS save settings")
    try:
        scene.view_settings.view_transform = "Standard"  # PNG: no AgX/Filmic look; EXR/HDR stay linear
        settings = scene.render.image_settings
        settings.file_format = file_format
        settings.color_mode = "RGB"
        if file_format == "OPEN_EXR":
            settings.color_depth = "32"
        image.save_render(path, scene=scene)
    finally:
        bpy.data.scenes.remove(scene)


def image_from_pixels(linear_hwc: np.ndarray, name: str = IMAGE_NAME) -> bpy.types.Image:
    """New float image datablock from a top-down linear-light array [H, W, 3|4]."""
    h, w = linear_hwc.shape[:2]
    image = bpy.data.images.new(name, w, h, alpha=False, float_buffer=True)
    _set_linear(image)
    image.pixels.foreach_set(pixels.hwc_to_blender_pixels(linear_hwc))
    image.update()
    image[TAG] = True
    return image


def image_to_hwc(image: bpy.types.Image) -> np.ndarray:
    """Pixels of a loaded image as a top-down float32 array [H, W, channels]."""
    w, h = image.size
    flat = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    return pixels.blender_pixels_to_hwc(flat, w, h, image.channels)


def image_from_file(path: str, name: str = IMAGE_NAME) -> bpy.types.Image:
    """New image datablock loaded from a linear-light .exr/.hdr file (pixels read now, not lazily)."""
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    _set_linear(image)
    image[TAG] = True
    _ = image.size[0]  # force the load so a bad file fails here, not at render time
    if not image.has_data:
        image.reload()
    return image


def store_image(image: bpy.types.Image, output_dir: str, file_name: str) -> str | None:
    """Keep the image with the .blend: saved as EXR into output_dir (returned), or packed when output_dir is ''."""
    if output_dir:
        folder = bpy.path.abspath(output_dir)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, file_name)
        _write_image(image, path, "OPEN_EXR")
        image.filepath_raw = path
        image.file_format = "OPEN_EXR"
        image.source = "FILE"
        return path
    image.pack()
    return None


def show_sky(
    world: bpy.types.World, image: bpy.types.Image, rotation: float = 0.0, strength: float = 1.0,
) -> dict[str, bpy.types.Node]:
    """Wire the world to show `image`; the previous ALIS image is removed if nothing else uses it (its name is kept)."""
    old = sky_image(world)
    nodes = wire_world(world, image, rotation, strength)
    if old is not None and old != image and old.get(TAG) and old.users == 0:
        name = old.name
        bpy.data.images.remove(old)
        image.name = name
    return nodes


def save_image_as(image: bpy.types.Image, path: str) -> str:
    """Write a copy of `image` to path (.exr, .hdr or .png by extension) without repointing the datablock."""
    ext = os.path.splitext(path)[1].lower()
    formats = {".exr": "OPEN_EXR", ".hdr": "HDR", ".png": "PNG"}
    if ext not in formats:
        raise ValueError(f"cannot save {path!r}: use a .exr, .hdr or .png file name")
    w, h = image.size
    flat = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    if image.channels != 4:
        flat = pixels.hwc_to_blender_pixels(pixels.blender_pixels_to_hwc(flat, w, h, image.channels)[::-1][:, :, :3])
    # A temporary float image holds the copy, so the datablock keeps its own path and packing.
    copy = bpy.data.images.new(image.name + " (save)", w, h, alpha=False, float_buffer=True)
    try:
        _set_linear(copy)
        copy.pixels.foreach_set(flat)
        _write_image(copy, path, formats[ext])
    finally:
        bpy.data.images.remove(copy)
    return path


# ---------------------------------------------------------------------------------------------
# The sun lamp: one Sun light that gives the sky's sun (the world image then leaves its disk out).

SUN_NAME = "ALIS Sun"
SUN_TAG = "alis_sun"  # on the lamp object: the sun's azimuth/elevation (degrees, sky frame), irradiance, world


def sun_lamp(world: bpy.types.World | None = None) -> bpy.types.Object | None:
    """Our Sun lamp object (tagged, else named "ALIS Sun"), or None; with `world`, only the one that world made."""
    lamps = [o for o in bpy.data.objects if o.get(SUN_TAG) is not None and o.type == "LIGHT"]
    if not lamps:
        named = bpy.data.objects.get(SUN_NAME)
        lamps = [named] if named is not None and named.type == "LIGHT" and named.data.type == "SUN" else []
    if world is not None:
        lamps = [o for o in lamps if o.get(SUN_TAG, {}).get("world", world.name) == world.name]
    return lamps[0] if lamps else None


def lamp_rotation(azimuth_deg: float, elevation_deg: float, rotation: float) -> tuple[float, float, float]:
    """Euler XYZ of a Sun lamp whose +Z points at the sun (light travels along its -Z).

    The sky's Mapping node looks up direction Rz(rotation) * d, so what the image holds at azimuth
    A shows at A - rotation in the scene: the lamp turns the same way.
    """
    return (0.0, math.pi / 2 - math.radians(elevation_deg), math.radians(azimuth_deg) - rotation)


def remove_sun_lamp(world: bpy.types.World | None = None) -> None:
    """Delete our Sun lamp (and its light data when nothing else uses it)."""
    obj = sun_lamp(world)
    if obj is None:
        return
    light = obj.data
    bpy.data.objects.remove(obj)
    if light is not None and light.users == 0:
        bpy.data.lights.remove(light)


def sync_sun_lamp(
    scene: bpy.types.Scene, world: bpy.types.World, sun: dict | None, enabled: bool,
    rotation: float = 0.0, strength: float = 1.0,
) -> bpy.types.Object | None:
    """Make the scene's "ALIS Sun" match the sky's `sun` (a SkyInfo sun dict), reusing the lamp.

    No lamp (an existing one is removed) when `enabled` is off, when the sky has no sun, or when the
    terrain or the horizon hides it (the world image then holds no disk either). Returns the lamp.
    """
    if not enabled or sun is None or not sun.get("visible", True) or float(sun.get("irradiance", 0.0)) <= 0.0:
        remove_sun_lamp()
        return None
    obj = sun_lamp()
    if obj is None:
        light = bpy.data.lights.new(SUN_NAME, "SUN")
        obj = bpy.data.objects.new(SUN_NAME, light)
    elif obj.data.type != "SUN":
        obj.data.type = "SUN"
    if obj.name not in scene.objects:
        scene.collection.objects.link(obj)
    light = obj.data
    light.angle = math.radians(float(sun["angular_diameter_deg"]))
    light.color = tuple(float(c) for c in sun["color"])
    obj[SUN_TAG] = {
        "azimuth_deg": float(sun["azimuth_deg"]), "elevation_deg": float(sun["elevation_deg"]),
        "irradiance": float(sun["irradiance"]), "world": world.name,
    }
    obj.rotation_mode = "XYZ"
    set_sun_rotation(world, rotation)
    set_sun_strength(world, strength)
    return obj


def set_sun_rotation(world: bpy.types.World, rotation: float) -> None:
    """Turn our Sun lamp with the sky's Rotation (radians), if `world` made one."""
    obj = sun_lamp(world)
    tag = obj.get(SUN_TAG) if obj is not None else None
    if tag is not None:
        obj.rotation_euler = lamp_rotation(tag["azimuth_deg"], tag["elevation_deg"], rotation)


def set_sun_strength(world: bpy.types.World, strength: float) -> None:
    """The lamp's strength = the sun's irradiance x the sky's Background strength (both scale the world)."""
    obj = sun_lamp(world)
    tag = obj.get(SUN_TAG) if obj is not None else None
    if tag is not None:
        obj.data.energy = float(tag["irradiance"]) * strength
