"""Extension preferences: backend (and Set Up Backend), checkpoint, models and their downloads, device, output."""
import os
import sys

import bpy

from . import backend, installer
from .shared import options

_BACKEND_ITEMS = [
    ("AUTO", "Automatic", "Use the Backend Python when set, else alis_core inside Blender's Python when it imports"),
    ("SUBPROCESS", "External Python", "Run the alis CLI in the Backend Python (recommended)"),
    ("IN_PROCESS", "Blender's Python", "Import alis_core and torch inside Blender (they must be installed there)"),
]
_DEVICE_LABELS = {
    "auto": ("Auto", "CUDA, then Apple MPS, then CPU"),
    "cpu": ("CPU", ""),
    "cuda": ("CUDA", "NVIDIA GPU"),
    "mps": ("MPS", "Apple GPU"),
}
_DEVICE_ITEMS = [(d, *_DEVICE_LABELS.get(d, (d.upper(), ""))) for d in options.DEVICES]
_FORMAT_ITEMS = [
    (".hdr", "Radiance HDR", "Works with every install of the backend"),
    (".exr", "OpenEXR", "Needs the OpenEXR package in the Backend Python (pip install OpenEXR)"),
]


_TORCH_ITEMS = [(key, label, description) for key, (label, description, _) in installer.TORCH_BUILDS.items()]

# What the backend's hub said at the last Refresh Models (alis_core.hub.list_models, as dicts):
# the extension's own Python has no alis_core, so the list comes from the backend (backend.list_models).
models_state: dict = {"python": "", "cache": "", "models": [], "error": ""}


OFFLINE_TEXT = "Online access is off (Preferences > System > Network): no downloads, no Set Up Backend"


def online_access() -> bool:
    """Blender's "Allow Online Access" (Preferences > System > Network, or --online-mode): downloads need it."""
    return bool(getattr(bpy.app, "online_access", True))


def get_preferences(context=None) -> "ALIS_AddonPreferences | None":
    """Our preferences, or None when the extension is not enabled (e.g. modules imported directly)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def backend_problem(prefs) -> str | None:
    """None if a backend is usable with these preferences, else a one-line reason with the fix."""
    try:
        backend.choose_backend(prefs.backend, bpy.path.abspath(prefs.python_path))
    except backend.BackendError as ex:
        return str(ex)
    return None


def backend_python(context=None) -> str:
    """The Python that runs `python -m alis_core` for models and downloads: the Backend Python, or
    Blender's own when the backend is in-process. Raises BackendError naming the fix."""
    prefs = get_preferences(context)
    if prefs is None:
        raise backend.BackendError("the ALIS Sky extension is not enabled")
    python = bpy.path.abspath(prefs.python_path)
    if backend.choose_backend(prefs.backend, python) == "SUBPROCESS":
        return python
    return sys.executable


def refresh_models(context=None) -> str:
    """Ask the backend for its models (into models_state); '' or the one-line error."""
    try:
        python = backend_python(context)
        cache, models = backend.list_models(python)
    except backend.BackendError as ex:
        models_state.update(python="", cache="", models=[], error=str(ex))
        return str(ex)
    models_state.update(python=python, cache=cache, models=models, error="")
    return ""


def model_names() -> list[str]:
    """Names the World's Model field suggests: the bundled default, then the known and cached models."""
    names = [m["name"] for m in models_state["models"]]
    return names if "default" in names else ["default", *names]


def setup_paths(create: bool = True) -> tuple[str, str]:
    """(venv folder, log file) of Set Up Backend, in the extension's user folder (kept across updates)."""
    try:
        folder = bpy.utils.extension_path_user(__package__, path="backend", create=create)
    except ValueError:  # loaded as a legacy add-on (a checkout), not as an extension
        folder = os.path.join(bpy.utils.user_resource("CONFIG"), "alis_sky", "backend")
        if create:
            os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, installer.VENV_FOLDER), os.path.join(folder, installer.LOG_NAME)


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size else ""


class ALIS_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend: bpy.props.EnumProperty(name="Backend", items=_BACKEND_ITEMS, default="AUTO")
    python_path: bpy.props.StringProperty(
        name="Backend Python",
        description="Python executable that has the alis-panoramas project installed; "
        "it runs `python -m alis_core generate` outside Blender",
        subtype="FILE_PATH",
        default="",
    )
    checkpoint: bpy.props.StringProperty(
        name="Checkpoint",
        description="Generator checkpoint (.safetensors or official .pkl); empty = the bundled default model",
        subtype="FILE_PATH",
        default="",
    )
    device: bpy.props.EnumProperty(name="Device", items=_DEVICE_ITEMS, default="auto")
    output_dir: bpy.props.StringProperty(
        name="Output Folder",
        description="Folder for generated sky images; empty = pack them into the .blend file",
        subtype="DIR_PATH",
        default="",
    )
    file_format: bpy.props.EnumProperty(
        name="Backend File Format", items=_FORMAT_ITEMS, default=".hdr",
        description="File the external Python writes and Blender reads back (both hold linear light)",
    )
    check_result: bpy.props.StringProperty(name="Check Result", default="", options={"SKIP_SAVE"})
    torch_build: bpy.props.EnumProperty(
        name="PyTorch", items=_TORCH_ITEMS, default="CPU",
        description=f"Which build of torch {installer.TORCH_VERSION} Set Up Backend installs",
    )
    setup_python: bpy.props.StringProperty(
        name="Base Python", subtype="FILE_PATH", default="",
        description="The Python that Set Up Backend makes the environment from; empty = Blender's own Python",
    )
    setup_result: bpy.props.StringProperty(name="Setup Result", default="", options={"SKIP_SAVE"})
    download_url: bpy.props.StringProperty(
        name="URL", default="", options={"SKIP_SAVE"},
        description="An http(s) URL of an official .pkl or a .safetensors checkpoint to download into the cache",
    )
    download_name: bpy.props.StringProperty(
        name="Name", default="", options={"SKIP_SAVE"},
        description="The name to cache the URL's model under (lower-case letters, digits, - and _)",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend")
        col = layout.column()
        col.active = self.backend != "IN_PROCESS"
        row = col.row(align=True)
        row.prop(self, "python_path")
        row.operator("alis.check_backend", text="", icon="CHECKMARK")
        col.prop(self, "file_format")
        layout.prop(self, "checkpoint")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")

        box = layout.box()
        problem = backend_problem(self)
        if problem is None:
            box.label(text="Backend ready", icon="CHECKMARK")
        else:
            draw_backend_help(box, problem)
        if self.check_result:
            box.label(text=self.check_result, icon="INFO")
        self.draw_setup(layout.box(), context)
        self.draw_models(layout.box(), problem)

    def draw_setup(self, box, context) -> None:
        """Set Up Backend: the torch build, the base Python, the button, the log."""
        box.label(text="Set Up Backend", icon="CONSOLE")
        col = box.column(align=True)
        col.label(text=f"Makes a Python environment with torch {installer.TORCH_VERSION} and alis-panoramas in the "
                       "extension's user folder and sets Backend Python to it")
        box.prop(self, "torch_build")
        box.label(text=installer.TORCH_BUILDS[self.torch_build][1])
        box.prop(self, "setup_python")
        online = online_access()
        row = box.row(align=True)
        row.enabled = online
        row.operator("alis.setup_backend", icon="IMPORT")
        row.operator("alis.open_setup_log", text="Open Log", icon="TEXT")
        if not online:
            box.label(text=OFFLINE_TEXT, icon="INFO")
        _, log_path = setup_paths(create=False)
        box.label(text=f"Log: {log_path}")
        status = context.window_manager.alis_sky_status
        if status.running:
            box.label(text=status.text or "Starting...", icon="TIME")
        elif self.setup_result:
            ok = self.setup_result.startswith("Backend ready")
            box.label(text=self.setup_result, icon="CHECKMARK" if ok else "ERROR")

    def draw_models(self, box, problem) -> None:
        """The models of the backend's cache, a Download button for each known one not cached yet."""
        row = box.row()
        row.label(text="Models", icon="FILE_BLEND")
        sub = row.row()
        sub.enabled = problem is None
        sub.operator("alis.refresh_models", text="Refresh", icon="FILE_REFRESH")
        online = online_access()
        if not online:
            box.label(text=OFFLINE_TEXT, icon="INFO")
        if models_state["error"]:
            box.label(text=models_state["error"], icon="ERROR")
        elif not models_state["models"]:
            box.label(text="Press Refresh to list the bundled, known and cached models" if problem is None
                      else "Models are listed once a backend works")
        else:
            box.label(text=f"Cache: {models_state['cache']}")
        col = box.column(align=True)
        for m in models_state["models"]:
            row = col.row(align=True)
            row.label(text=m["name"])
            row.label(text=m["status"])
            row.label(text=_size_text(m["size"]))
            if m["status"] == "download":
                sub = row.row(align=True)
                sub.enabled = online
                op = sub.operator("alis.download_model", text="Download", icon="IMPORT")
                op.name, op.url = m["name"], ""
            else:
                row.label(text="")
        col = box.column(align=True)
        col.label(text="Download a checkpoint from a URL into the cache:")
        col.prop(self, "download_url")
        row = col.row(align=True)
        row.prop(self, "download_name")
        sub = row.row(align=True)
        sub.enabled = online and bool(self.download_url.strip() and self.download_name.strip())
        op = sub.operator("alis.download_model", text="Download", icon="IMPORT")
        op.name, op.url = self.download_name.strip(), self.download_url.strip()
        box.label(text="Nothing is downloaded until you press a Download button", icon="INFO")




def draw_backend_help(layout, problem: str) -> None:
    """Explain how to get a backend (used by the preferences and the World panel)."""
    layout.label(text=problem, icon="ERROR")
    col = layout.column(align=True)
    col.label(text="To generate skies, press Set Up Backend in the ALIS Sky preferences, or install")
    col.label(text="the alis-panoramas project into a separate Python yourself:")
    col.label(text="  python -m venv alis-env")
    col.label(text="  alis-env/bin/pip install <alis-panoramas folder>   (Windows: alis-env\\Scripts\\pip)")
    col.label(text="then set Backend Python to alis-env/bin/python and press the check button.")
    col.label(text="See docs/BLENDER.md in the project for details.")


classes = (ALIS_AddonPreferences,)
