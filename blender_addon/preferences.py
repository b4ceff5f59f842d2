"""Extension preferences: backend, checkpoint, device, output folder."""
import bpy

from . import backend
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


def draw_backend_help(layout, problem: str) -> None:
    """Explain how to get a backend (used by the preferences and the World panel)."""
    layout.label(text=problem, icon="ERROR")
    col = layout.column(align=True)
    col.label(text="To generate skies, install the alis-panoramas project into a separate Python:")
    col.label(text="  python -m venv alis-env")
    col.label(text="  alis-env/bin/pip install <alis-panoramas folder>   (Windows: alis-env\\Scripts\\pip)")
    col.label(text="then set Backend Python to alis-env/bin/python and press the check button.")
    col.label(text="See docs/BLENDER.md in the project for details.")


classes = (ALIS_AddonPreferences,)
