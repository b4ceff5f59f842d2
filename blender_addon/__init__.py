"""ALIS Sky: a Blender extension that generates seamless 360° landscape skies with ALIS.

Blender-free modules (params, pixels, backend) import without bpy, so the tests and other tools
can use them; the bpy modules are imported only in register(). Nothing here imports torch:
the extension registers everywhere and the panel explains how to get a backend.
"""
from __future__ import annotations

_classes: list = []


def register() -> None:
    import bpy

    from . import operators, panels, preferences, properties

    _classes[:] = [*preferences.classes, *properties.classes, *operators.classes, *panels.classes]
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register()


def unregister() -> None:
    import bpy

    from . import properties

    properties.unregister()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    _classes.clear()
