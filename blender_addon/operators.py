"""Operators: Generate, Download Model, Set Up Backend (modal in the UI, blocking in scripts and
background mode), New Seed, Save Image, Check Backend, Refresh Models, Open Setup Log.

The operators stay thin: backend.py and installer.py run the work off the main thread, world.py
touches the datablocks. Only the main thread touches bpy data; a job hands back a file path or pixels.
"""
import functools
import json
import os
import random
import shutil
import sys
import tempfile
import types

import bpy
from bpy_extras.io_utils import ExportHelper

from . import backend, installer, params, pixels, world
from .shared import options
from .preferences import (OFFLINE_TEXT, backend_python, get_preferences, online_access, refresh_models,
                          setup_paths)

_DEFAULT_PREFS = types.SimpleNamespace(
    backend="AUTO", python_path="", checkpoint="", device="auto", output_dir="", file_format=".hdr",
)
_TARGET_LABELS = {"threejs": "three.js", "babylon": "Babylon.js"}
_TARGET_ITEMS = [("NONE", "None", "Save the equirect image itself (.exr, .hdr or .png)")] + [
    (t, _TARGET_LABELS.get(t, t.title()), f"Write the {_TARGET_LABELS.get(t, t.title())} preset (cube map, "
     "panorama, README.txt) into the chosen folder, as `alis export --target` does") for t in options.EXPORT_TARGETS]
_NOT_DOWNLOADED_HINT = " (press Download next to it in the ALIS Sky preferences)"


def _prefs(context):
    prefs = get_preferences(context)
    return prefs if prefs is not None else _DEFAULT_PREFS


def _redraw_properties(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


class JobOperator:
    """The modal plumbing of the operators that run a backend.Job: `_start(context)` makes the job,
    a timer polls it (progress in the status bar and wm.alis_sky_status), Esc cancels it, and
    `_finish(context, job)` reports. execute() runs the same job blocking (scripts, background mode).
    One job at a time: the status's `running` greys the other job operators out."""

    _job = None  # backend.Job while the modal operator runs
    _timer = None
    _status_line = "ALIS: working (Esc to cancel)"

    def _start(self, context) -> backend.Job:
        raise NotImplementedError

    def _finish(self, context, job: backend.Job) -> set[str]:
        raise NotImplementedError

    # -- blocking (scripts, background mode) --------------------------------------------------

    def execute(self, context):
        try:
            job = self._start(context)
        except (backend.BackendError, ValueError) as ex:
            self.report({"ERROR"}, f"{self._report_prefix}: {ex}")
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
            self.report({"ERROR"}, f"{self._report_prefix}: {ex}")
            return {"CANCELLED"}
        wm = context.window_manager
        status = wm.alis_sky_status
        status.running, status.progress, status.text = True, 0.0, "Starting..."
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0.0, 1.0)
        context.workspace.status_text_set(self._status_line)
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


def _not_running(context) -> bool:
    return not context.window_manager.alis_sky_status.running


def checkpoint_choice(context, settings) -> tuple[str, str]:
    """(checkpoint, where it was set): the World's Model when set, else the preference's Checkpoint.

    A path comes back absolute ('//' resolved against the .blend); a model name as it is. '' = the
    bundled default model.
    """
    model = settings.model.strip()
    if model:
        return os.path.abspath(bpy.path.abspath(model)) if backend.looks_like_path(model) else model, \
            "the World's ALIS Sky panel (Model)"
    value = _prefs(context).checkpoint.strip()
    if value and backend.looks_like_path(value):
        value = os.path.abspath(bpy.path.abspath(value))  # the backend runs in another folder
    return value, "the ALIS Sky preferences (Checkpoint)"


def resolve_in_process(checkpoint: str) -> str:
    """A model name -> its cached file through alis_core.hub (never downloading); paths stay as they are."""
    if not checkpoint or backend.looks_like_path(checkpoint):
        return checkpoint
    from alis_core import hub
    from alis_core.errors import AlisError

    try:
        path = hub.resolve(checkpoint, download=False)
    except AlisError as ex:
        hint = _NOT_DOWNLOADED_HINT if "not downloaded yet" in str(ex) else ""
        raise backend.BackendError(f"{ex}{hint}") from None
    return str(path) if path is not None else ""


class ALIS_OT_generate_world(JobOperator, bpy.types.Operator):
    """Generate a 360° landscape sky with ALIS and show it as this scene's World"""

    bl_idname = "alis.generate_world"
    bl_label = "Generate Sky"
    bl_options = {"REGISTER"}

    _status_line = "ALIS sky: generating (Esc to cancel)"
    _report_prefix = "ALIS sky"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and _not_running(context)

    def _start(self, context) -> backend.Job:
        prefs = _prefs(context)
        sky_world = world.ensure_world(context.scene)
        settings = sky_world.alis_sky
        p = settings.to_params()
        p.validate()
        kind = backend.choose_backend(prefs.backend, bpy.path.abspath(prefs.python_path))
        checkpoint, where = checkpoint_choice(context, settings)
        if checkpoint and backend.looks_like_path(checkpoint) and not os.path.isfile(checkpoint):
            raise backend.BackendError(f"checkpoint {checkpoint!r} does not exist: fix it in {where}")
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
            functools.partial(backend.generate_in_process, p, checkpoint=resolve_in_process(checkpoint),
                              device=prefs.device)
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
        if job.result_sky:
            image[world.SKY_INFO] = json.dumps(job.result_sky)  # Save Image's engine presets read the sun here
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
            if "not downloaded yet" in job.error:
                hint = _NOT_DOWNLOADED_HINT
            self.report({"ERROR"}, f"ALIS sky: {job.error}{hint}")
            return {"CANCELLED"}
        finally:
            if self._temp_dir:
                shutil.rmtree(self._temp_dir, ignore_errors=True)


class ALIS_OT_new_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "alis.new_seed"
    bl_label = "New Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        world.ensure_world(context.scene).alis_sky.seed = random.randint(0, params.MAX_SEED)
        return {"FINISHED"}


class ALIS_OT_save_image(bpy.types.Operator, ExportHelper):
    """Save the generated sky image to a file (.exr, .hdr or .png), or export it for a game engine"""

    bl_idname = "alis.save_image"
    bl_label = "Save Sky Image"

    filename_ext = ".exr"
    filter_glob: bpy.props.StringProperty(default="*.exr;*.hdr;*.png", options={"HIDDEN"})
    target: bpy.props.EnumProperty(
        name="Target", items=_TARGET_ITEMS, default="NONE",
        description="An engine preset: its files go into the folder of the chosen path (the file name is unused)",
    )

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
        path = os.path.abspath(bpy.path.abspath(self.filepath))
        try:
            if self.target != "NONE":
                folder = path if os.path.isdir(path) else os.path.dirname(path)
                self._export(context, image, folder)
                self.report({"INFO"}, f"ALIS sky: exported for {self.target} into {folder}")
                return {"FINISHED"}
            path = world.save_image_as(image, path)
        except (ValueError, RuntimeError, backend.BackendError) as ex:
            self.report({"ERROR"}, f"ALIS sky: {ex}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"ALIS sky: saved {path}")
        return {"FINISHED"}

    def _export(self, context, image, folder: str) -> None:
        """`alis export SKY --target T --out folder` on the sky as generated: its EXR and sky.json, written
        to a temporary folder (the datablock may be packed), run by the backend that Generate uses."""
        prefs = _prefs(context)
        python = bpy.path.abspath(prefs.python_path)
        kind = backend.choose_backend(prefs.backend, python)
        temp = tempfile.mkdtemp(prefix="alis_export_", dir=bpy.app.tempdir or None)
        try:
            sky = world.save_image_as(image, os.path.join(temp, "sky.exr"))
            if image.get(world.SKY_INFO):
                with open(backend.sky_json_path(sky), "w", encoding="utf-8") as f:
                    f.write(image[world.SKY_INFO])
            if kind == "SUBPROCESS":
                job = backend.SubprocessJob(backend.build_export_command(python, sky, folder, self.target),
                                            os.path.join(folder, "README.txt"))
            else:
                job = backend.InProcessJob(functools.partial(_export_job, sky, folder, self.target))
            if job.wait() != backend.DONE:
                raise backend.BackendError(job.error)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


def _export_job(sky: str, folder: str, target: str, progress) -> None:
    backend.export_in_process(sky, folder, target)


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
        refresh_models(context)
        return {"FINISHED"}


class ALIS_OT_refresh_models(bpy.types.Operator):
    """List the bundled, known and cached models of the backend's model cache"""

    bl_idname = "alis.refresh_models"
    bl_label = "Refresh Models"

    def execute(self, context):
        error = refresh_models(context)
        if error:
            self.report({"ERROR"}, f"ALIS models: {error}")
            return {"CANCELLED"}
        return {"FINISHED"}


class ALIS_OT_download_model(JobOperator, bpy.types.Operator):
    """Download this model into the model cache (resumable: Esc stops it, the next download continues it)"""

    bl_idname = "alis.download_model"
    bl_label = "Download Model"

    name: bpy.props.StringProperty(name="Name", description="A known model's name, or the name to cache the URL under")
    url: bpy.props.StringProperty(name="URL", description="An http(s) .pkl or .safetensors URL; empty = the known "
                                  "model's own URL", default="")

    _status_line = "ALIS: downloading a model (Esc to cancel; the next download resumes it)"
    _report_prefix = "ALIS download"

    @classmethod
    def poll(cls, context):
        if not online_access():
            cls.poll_message_set(OFFLINE_TEXT)
            return False
        return _not_running(context)

    def _start(self, context) -> backend.Job:
        if not online_access():  # scripts can skip poll() through execute(); never download then
            raise backend.BackendError(OFFLINE_TEXT)
        python = backend_python(context)
        name = self.name.strip()
        source, cache_name = (self.url.strip(), name) if self.url.strip() else (name, "")
        argv = backend.build_download_command(python, source, cache_name)
        return backend.DownloadJob(argv, name)

    def _finish(self, context, job: backend.Job) -> set[str]:
        refresh_models(context)
        if job.state == backend.DONE:
            self.report({"INFO"}, f"ALIS: {job.message}")
            return {"FINISHED"}
        self.report({"WARNING"} if job.state == backend.CANCELLED else {"ERROR"}, f"ALIS: {job.message}")
        return {"CANCELLED"}


class ALIS_OT_setup_backend(JobOperator, bpy.types.Operator):
    """Make a Python environment for the generator in the extension's user folder: torch (the build chosen
    below) and this project, then use it as the Backend Python"""

    bl_idname = "alis.setup_backend"
    bl_label = "Set Up Backend"

    _status_line = "ALIS: setting up the backend (Esc to cancel)"
    _report_prefix = "ALIS setup"

    @classmethod
    def poll(cls, context):
        if not online_access():
            cls.poll_message_set(OFFLINE_TEXT)
            return False
        return get_preferences(context) is not None and _not_running(context)

    def _start(self, context) -> backend.Job:
        if not online_access():
            raise backend.BackendError(OFFLINE_TEXT)
        prefs = get_preferences(context)
        if prefs is None:
            raise backend.BackendError("the ALIS Sky extension is not enabled")
        venv_dir, log_path = setup_paths()
        base = bpy.path.abspath(prefs.setup_python) if prefs.setup_python else sys.executable
        steps = installer.setup_steps(base, venv_dir, installer.project_source(), prefs.torch_build)
        return installer.SetupJob(steps, log_path, installer.venv_python(venv_dir))

    def _finish(self, context, job: backend.Job) -> set[str]:
        prefs = get_preferences(context)
        if prefs is not None:
            prefs.setup_result = job.message  # stays in the preferences: the one line that says what failed
        if job.state == backend.DONE and prefs is not None:
            prefs.python_path = job.python
            if prefs.backend == "IN_PROCESS":
                prefs.backend = "AUTO"
            prefs.check_result = job.result_text
            refresh_models(context)
            self.report({"INFO"}, f"ALIS: {job.message}")
            return {"FINISHED"}
        self.report({"WARNING"} if job.state == backend.CANCELLED else {"ERROR"}, f"ALIS: {job.message}")
        return {"CANCELLED"}


class ALIS_OT_open_setup_log(bpy.types.Operator):
    """Open the log of Set Up Backend (every command it ran and its output)"""

    bl_idname = "alis.open_setup_log"
    bl_label = "Open Log"

    @classmethod
    def poll(cls, context):
        return os.path.isfile(setup_paths(create=False)[1])

    def execute(self, context):
        bpy.ops.wm.path_open(filepath=setup_paths(create=False)[1])
        return {"FINISHED"}


classes = (ALIS_OT_generate_world, ALIS_OT_new_seed, ALIS_OT_save_image, ALIS_OT_check_backend,
           ALIS_OT_refresh_models, ALIS_OT_download_model, ALIS_OT_setup_backend, ALIS_OT_open_setup_log)
