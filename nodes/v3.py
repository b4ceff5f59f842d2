"""ComfyUI V3 node classes (comfy_api.latest). Imported only inside ComfyUI.

Each class builds its schema from the spec in NODE_SPECS and calls one node function;
the only ComfyUI-specific work here is devices, progress/cancel, folders and file metadata.
"""
from __future__ import annotations

import json
import os
import random
import string

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy.cli_args import args
from comfy_api.latest import ComfyExtension, io, ui

from . import anchors, invert, loaders, panorama, preview, skybox
from .spec import ALIS_ANCHORS, ALIS_MODEL, ALIS_SKY, NodeSpec, Param

MODEL_FOLDER = "alis"  # models/alis/, plus any "alis:" entries of extra_model_paths.yaml

AlisModelIO = io.Custom(ALIS_MODEL)
AlisAnchorsIO = io.Custom(ALIS_ANCHORS)
AlisSkyIO = io.Custom(ALIS_SKY)
_CUSTOM_IO = {ALIS_MODEL: AlisModelIO, ALIS_ANCHORS: AlisAnchorsIO, ALIS_SKY: AlisSkyIO, "IMAGE": io.Image,
              "STRING": io.String}


def register_model_folder() -> None:
    """Add models/alis/ after any paths extra_model_paths.yaml gave, and set our file types."""
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    paths, _ = folder_paths.folder_names_and_paths[MODEL_FOLDER]
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(loaders.CHECKPOINT_EXTENSIONS))


def _input(p: Param, options: dict[str, list[str]]) -> io.Input:
    common = dict(tooltip=p.tooltip, optional=p.optional)
    if p.type == "INT":
        return io.Int.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step,
                            control_after_generate=p.control_after_generate, **common)
    if p.type == "FLOAT":
        return io.Float.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step, **common)
    if p.type == "BOOLEAN":
        return io.Boolean.Input(p.name, default=p.default, **common)
    if p.type == "STRING":
        return io.String.Input(p.name, default=p.default, multiline=p.multiline, **common)
    if p.type == "COMBO":
        choices = options[p.options_from] if p.options_from else list(p.options)
        return io.Combo.Input(p.name, options=choices, default=p.default, **common)
    return _CUSTOM_IO[p.type].Input(p.name, **common)


def schema_from_spec(spec: NodeSpec, **options: list[str]) -> io.Schema:
    """io.Schema for a NodeSpec; `options` fills dynamic combos by their `options_from` name."""
    outputs = []
    for o in spec.outputs:
        kind = io.Float if o.type == "FLOAT" else _CUSTOM_IO[o.type]
        outputs.append(kind.Output(o.name, display_name=o.name, tooltip=o.tooltip))
    return io.Schema(node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
                     description=spec.description, inputs=[_input(p, options) for p in spec.inputs],
                     outputs=outputs, is_output_node=spec.output_node)


def _progress_callback():
    """progress(done, total) for alis_core: updates ComfyUI's bar and raises if the user cancelled."""
    bar = comfy.utils.ProgressBar(1)

    def progress(done: int, total: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)
    return progress


def _png_text(hidden) -> dict[str, str] | None:
    """Workflow metadata for PNG text chunks, as ComfyUI's SaveImage writes it."""
    if args.disable_metadata or hidden is None:
        return None
    text = {}
    if hidden.prompt is not None:
        text["prompt"] = json.dumps(hidden.prompt)
    for key, value in (hidden.extra_pnginfo or {}).items():
        text[key] = json.dumps(value)
    return text


class ALISLoadCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = loaders.checkpoint_names(folder_paths.get_folder_paths(MODEL_FOLDER))
        return schema_from_spec(loaders.LOAD_CHECKPOINT, alis_checkpoints=names)

    @classmethod
    def validate_inputs(cls, ckpt_name):  # naming ckpt_name here replaces ComfyUI's combo check for it
        return loaders.check_choice(ckpt_name, folder_paths.get_folder_paths(MODEL_FOLDER))

    @classmethod
    def execute(cls, ckpt_name, dtype, fast) -> io.NodeOutput:
        model = loaders.load_named_checkpoint(
            ckpt_name, dtype, fast, folders=folder_paths.get_folder_paths(MODEL_FOLDER),
            device=mm.get_torch_device(), offload_device=mm.unet_offload_device(), progress=_progress_callback())
        return io.NodeOutput(model)


class ALISAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(anchors.ANCHORS)

    @classmethod
    def execute(cls, model, seed, num_anchors, psi, seeds="") -> io.NodeOutput:
        return io.NodeOutput(anchors.make_anchors(model, seed, num_anchors, psi, seeds))


class ALISJoinAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(anchors.JOIN)

    @classmethod
    def execute(cls, anchors_a, anchors_b) -> io.NodeOutput:
        return io.NodeOutput(anchors.join_anchors(anchors_a, anchors_b))


class ALISPanorama(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(panorama.PANORAMA)

    @classmethod
    def execute(cls, model, anchors, **options) -> io.NodeOutput:
        mm.throw_exception_if_processing_interrupted()
        if model.device != model.offload_device:  # make room on the GPU like ComfyUI's upscaler does
            frame = model.img_resolution ** 2 * 3 * 4 * 64  # rough activation bytes per frame
            mm.free_memory(mm.module_size(model.generator) + options["batch_size"] * frame, model.device)
        image = panorama.make_panorama(model, anchors, progress=_progress_callback(), **options)
        return io.NodeOutput(image)


class ALISPanoramaToEquirect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(skybox.EQUIRECT)

    @classmethod
    def execute(cls, image, **options) -> io.NodeOutput:
        return io.NodeOutput(*skybox.panorama_to_equirect(image, **options))


class ALISEquirectToCubemap(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(skybox.CUBEMAP)

    @classmethod
    def execute(cls, image, face_size) -> io.NodeOutput:
        return io.NodeOutput(*skybox.equirect_to_cubemap(image, face_size))


class ALISSeamCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(panorama.SEAM_CHECK)

    @classmethod
    def execute(cls, image, columns) -> io.NodeOutput:
        return io.NodeOutput(*panorama.seam_check(image, columns))


class ALISScrollFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(panorama.SCROLL)

    @classmethod
    def execute(cls, image, **options) -> io.NodeOutput:
        return io.NodeOutput(panorama.scroll_frames(image, **options))


class ALISPreview360(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(preview.PREVIEW)

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        suffix = "_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))  # as PreviewImage does
        return io.NodeOutput(ui=preview.preview_360(image, output_dir=folder_paths.get_temp_directory(),
                                                    suffix=suffix, save_path=folder_paths.get_save_image_path))


class ALISSaveSkybox(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(skybox.SAVE)

    @classmethod
    def execute(cls, image, **options) -> io.NodeOutput:
        files = skybox.save_skybox(image, output_dir=folder_paths.get_output_directory(),
                                   text=_png_text(cls.hidden), save_path=folder_paths.get_save_image_path,
                                   **options)
        shown = [ui.SavedResult(f["filename"], f["subfolder"], io.FolderType.output)
                 for f in files if f["kind"] in ("equirect", "cross")]
        return io.NodeOutput(ui=ui.SavedImages(shown))


class ALISInvertImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(invert.INVERT)

    @classmethod
    def execute(cls, model, image, **options) -> io.NodeOutput:
        mm.throw_exception_if_processing_interrupted()
        return io.NodeOutput(*invert.invert_photo(model, image, progress=_progress_callback(), **options))


class ALISSaveAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema_from_spec(invert.SAVE)

    @classmethod
    def execute(cls, model, anchors, filename_prefix) -> io.NodeOutput:
        invert.save_anchors_file(model, anchors, filename_prefix, output_dir=folder_paths.get_output_directory())
        return io.NodeOutput()


class ALISLoadAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = invert.anchors_file_names(folder_paths.get_input_directory())
        return schema_from_spec(invert.LOAD, alis_anchor_files=names)

    @classmethod
    def execute(cls, model, anchors_file) -> io.NodeOutput:
        return io.NodeOutput(invert.load_anchors_file(model, anchors_file,
                                                      input_dir=folder_paths.get_input_directory()))


NODES: list[type[io.ComfyNode]] = [
    ALISLoadCheckpoint, ALISAnchors, ALISJoinAnchors, ALISPanorama, ALISPanoramaToEquirect,
    ALISEquirectToCubemap, ALISSeamCheck, ALISScrollFrames, ALISPreview360, ALISInvertImage, ALISSaveAnchors,
    ALISLoadAnchors, ALISSaveSkybox,
]


class AlisExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> AlisExtension:
    register_model_folder()  # before get_node_list builds the checkpoint combo
    return AlisExtension()
