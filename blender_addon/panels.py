"""Properties > World > ALIS Sky panel."""
from __future__ import annotations

import bpy

from . import backend, world
from .preferences import backend_problem, draw_backend_help, get_preferences


class WORLD_PT_alis_sky(bpy.types.Panel):
    bl_label = "ALIS Sky"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "world"

    @classmethod
    def poll(cls, context):
        return context.world is not None

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.world.alis_sky
        status = context.window_manager.alis_sky_status

        prefs = get_preferences(context)
        problem = backend_problem(prefs) if prefs is not None else None
        external = prefs is not None and problem is None and backend.choose_backend(
            prefs.backend, bpy.path.abspath(prefs.python_path)) == "SUBPROCESS"
        if problem is not None:
            box = layout.box()
            draw_backend_help(box, problem)
            box.operator("preferences.addon_show", text="Open Preferences", icon="PREFERENCES").module = __package__

        try:
            layout.prop(settings, "model", icon="FILE_BLEND", placeholder="Preference")
        except TypeError:  # a Blender without placeholder text
            layout.prop(settings, "model", icon="FILE_BLEND")
        layout.prop(settings, "photo")
        row = layout.row(align=True)
        row.prop(settings, "seed")
        row.operator("alis.new_seed", text="", icon="FILE_REFRESH")
        layout.prop(settings, "anchors")
        layout.prop(settings, "psi")
        layout.prop(settings, "noise_mode")
        layout.prop(settings, "resolution")
        row = layout.row()
        row.active = not external and not settings.photo  # the CLI's --equirect and a photo loop always wrap
        row.prop(settings, "wrap")
        col = layout.column(heading="Sky/Ground Fill")
        col.prop(settings, "horizon")
        col.prop(settings, "strip_scale")
        col.prop(settings, "cap_blur")
        col = layout.column(heading="Sky and Sun")
        col.prop(settings, "sky")
        col.prop(settings, "sun_mode")
        if settings.sun_mode == "manual":
            col.prop(settings, "sun_azimuth")
            col.prop(settings, "sun_elevation")
        col.prop(settings, "sun_lamp")
        col.prop(settings, "exposure")
        col = layout.column(heading="Display")
        col.prop(settings, "rotation")
        col.prop(settings, "strength")

        layout.use_property_split = False
        if status.running:
            if hasattr(layout, "progress"):
                layout.progress(factor=status.progress, type="BAR", text=status.text)
            else:
                layout.label(text=status.text)
            layout.label(text="Press Esc to cancel", icon="CANCEL")
        else:
            row = layout.row(align=True)
            row.scale_y = 1.4
            row.enabled = problem is None
            row.operator("alis.generate_world", text="Generate", icon="WORLD")
            if status.text:
                layout.label(text=status.text)
        image = world.sky_image(context.world)
        row = layout.row()
        row.enabled = image is not None
        row.operator("alis.save_image", text="Save Image", icon="FILE_TICK")
        if image is not None:
            layout.label(text=f"{image.name}: {image.size[0]}x{image.size[1]}", icon="IMAGE_DATA")


classes = (WORLD_PT_alis_sky,)
