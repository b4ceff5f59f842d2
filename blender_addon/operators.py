"""Operators: Generate (modal in the UI, blocking in scripts/background), New Seed, Save Image, Check Backend.

The operators stay thin: backend.py runs the generator off the main thread, world.py touches
the datablocks. Only the main thread touches bpy data; the job hands back a file path or pixels.
"""
import functools
import os
import random
import shutil
import tempfile
import types

import bpy
from bpy_extras.io_utils import ExportHelper

from . import backend, params, pixels, world
from .preferences import get_preferences

_DEFAULT_PREFS = types.SimpleNamespace(
    backend="AUTO", python_path="", checkpoint="", device="auto", output_dir="", file_format=".hdr",
)


def _prefs(context):
    prefs = get_preferences(context)
    return prefs if prefs is not None else _DEFAULT_PREFS


def _redraw_properties(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


class ALIS_OT_generate_world(bpy.types.Operator):
    """Generate a 360° landscape sky with ALIS and show it as this scene's World"""

    bl_idname = "alis.generate_world"
    bl_label = "Generate Sky"
    bl_options = {"REGISTER"}

    _job = None  # backend.Job while the modal operator runs
    _timer = None

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.window_manager.alis_sky_status.running

    # -- shared by execute() and the modal path ---------------------------------------------

    def _start(self, context) -> backend.Job:
        prefs = _prefs(context)
        sky_world = world.ensure_world(context.scene)
        settings = sky_world.alis_sky
        p = settings.to_params()
        p.validate()
        kind = backend.choose_backend(prefs.backend, bpy.path.abspath(prefs.python_path))
        checkpoint = bpy.path.abspath(prefs.checkpoint) if prefs.checkpoint else ""
        if checkpoint and not os.path.isfile(checkpoint):
            raise backend.BackendError(f"checkpoint {checkpoint!r} does not exist: fix it in the ALIS Sky preferences")
        self._world_name = sky_world.name
        self._params = p
        self._output_dir = prefs.output_dir
        self._temp_dir = None
        if kind == "SUBPROCESS":
            # The CLI writes into a temporary folder; _apply then packs the image or saves the
            # final EXR into the output folder, the same as for the in-process backend.
            python = bpy.path.abspath(prefs.python_path)
            name = p.file_name(prefs.file_format)
            backend.build_generate_command(python, p, name, checkpoint=checkpoint, device=prefs.device)  # validates
            self._temp_dir = tempfile.mkdtemp(prefix="alis_sky_", dir=bpy.app.tempdir or None)
            out = os.path.join(self._temp_dir, name)
            argv = backend.build_generate_command(python, p, out, checkpoint=checkpoint, device=prefs.device)
            return backend.SubprocessJob(argv, out)
        return backend.InProcessJob(
            functools.partial(backend.generate_in_process, p, checkpoint=checkpoint, device=prefs.device)
        )

    def _apply(self, context, job: backend.Job) -> bpy.types.Image:
        """Main thread: turn the job's result into the world's sky image and wire the nodes."""
        sky_world = bpy.data.worlds.get(self._world_name) or world.ensure_world(context.scene)
        p = self._params
        if job.result_path is not None:
            image = world.image_from_file(job.result_path)
            if tuple(image.size) != (p.width, p.height):
                # The CLI writes the strip's natural width; resize with the seam kept closed.
                native = world.image_to_hwc(image)[:, :, :3]
                bpy.data.images.remove(image)
                image = world.image_from_pixels(pixels.resize_equirect(native, p.width))
        else:
            image = world.image_from_pixels(job.result_pixels)
        world.store_image(image, self._output_dir, p.file_name(".exr"))
        settings = sky_world.alis_sky
        world.show_sky(sky_world, image, rotation=settings.rotation, strength=settings.strength)
        world.sync_sun_lamp(context.scene, sky_world, backend.sky_sun(job.result_sky), p.sun_lamp,
                            rotation=settings.rotation, strength=settings.strength)
        return image

    def _finish(self, context, job: backend.Job) -> set[str]:
        try:
            if job.state == backend.DONE:
                image = self._apply(context, job)
                self.report({"INFO"}, f"ALIS sky: {image.name} ({image.size[0]}x{image.size[1]})")
                return {"FINISHED"}
            if job.state == backend.CANCELLED:
                self.report({"WARNING"}, "ALIS sky: cancelled")
                return {"CANCELLED"}
            hint = " (set Checkpoint in the ALIS Sky preferences)" if "--checkpoint" in job.error else ""
            self.report({"ERROR"}, f"ALIS sky: {job.error}{hint}")
            return {"CANCELLED"}
        finally:
            if self._temp_dir:
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- blocking (scripts, background mode) --------------------------------------------------

    def execute(self, context):
        try:
            job = self._start(context)
        except (backend.BackendError, ValueError) as ex:
            self.report({"ERROR"}, f"ALIS sky: {ex}")
            return {"CANCELLED"}
        job.wait()
        return self._finish(context, job)

    # -- modal (interactive UI) ---------------------------------------------------------------

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        return self._start_modal(context)

    def _start_modal(self, context) -> set[str]:
        try:
            self._job = self._start(context)
        except (backend.BackendError, ValueError) as ex:
            self.report({"ERROR"}, f"ALIS sky: {ex}")
            return {"CANCELLED"}
        wm = context.window_manager
        status = wm.alis_sky_status
        status.running, status.progress, status.text = True, 0.0, "Starting..."
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0.0, 1.0)
        context.workspace.status_text_set("ALIS sky: generating (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        status = context.window_manager.alis_sky_status
        status.progress, status.text = job.fraction, job.message
        context.window_manager.progress_update(job.fraction)
        _redraw_properties(context)
        if job.poll() == backend.RUNNING:
            return {"PASS_THROUGH"}
        self._end_modal(context)
        result = self._finish(context, job)
        status.text = job.message
        return result

    def _end_modal(self, context) -> None:
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        wm.alis_sky_status.running = False
        context.workspace.status_text_set(None)
        _redraw_properties(context)

    def cancel(self, context):
        # Blender calls this when the window closes mid-run: stop the job, leave data untouched.
        if self._job is not None:
            self._job.cancel()
        self._end_modal(context)


class ALIS_OT_new_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "alis.new_seed"
    bl_label = "New Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        world.ensure_world(context.scene).alis_sky.seed = random.randint(0, params.MAX_SEED)
        return {"FINISHED"}


class ALIS_OT_save_image(bpy.types.Operator, ExportHelper):
    """Save the generated sky image to a file (.exr, .hdr or .png)"""

    bl_idname = "alis.save_image"
    bl_label = "Save Sky Image"

    filename_ext = ".exr"
    filter_glob: bpy.props.StringProperty(default="*.exr;*.hdr;*.png", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.world is not None \
            and world.sky_image(context.scene.world) is not None

    def invoke(self, context, event):
        if not self.filepath:
            folder = bpy.path.abspath(_prefs(context).output_dir) if _prefs(context).output_dir else ""
            name = context.scene.world.alis_sky.to_params().file_name(".exr")
            self.filepath = os.path.join(folder, name) if folder else name
        return super().invoke(context, event)

    def execute(self, context):
        image = world.sky_image(context.scene.world)
        try:
            path = world.save_image_as(image, bpy.path.abspath(self.filepath))
        except (ValueError, RuntimeError) as ex:
            self.report({"ERROR"}, f"ALIS sky: {ex}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"ALIS sky: saved {path}")
        return {"FINISHED"}


class ALIS_OT_check_backend(bpy.types.Operator):
    """Check that the Backend Python can import alis_core and torch"""

    bl_idname = "alis.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        prefs = get_preferences(context)
        if prefs is None:
            return {"CANCELLED"}
        try:
            prefs.check_result = backend.check_python(bpy.path.abspath(prefs.python_path))
        except backend.BackendError as ex:
            prefs.check_result = ""
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self.report({"INFO"}, prefs.check_result)
        return {"FINISHED"}


classes = (ALIS_OT_generate_world, ALIS_OT_new_seed, ALIS_OT_save_image, ALIS_OT_check_backend)
