"""ALIS panoramas: a faithful, pure-PyTorch implementation of ALIS (Skorokhodov et al., ICCV 2021).

    G = alis_core.load_generator()                      # the bundled default model
    anchors = alis_core.sample_anchors(G, 8, seed=1)    # 8 scenes
    strip = alis_core.panorama(G, anchors, wrap=True)   # [3, H, 8 * G.anchor_spacing], a 360° loop

See docs/ARCHITECTURE.md for how the paper's terms map to the code.

`import alis_core` imports nothing heavy and changes nothing in the process: each name below is
imported from its module on first use (PEP 562), so torch loads when the first model, tensor or
image function is touched. Tuning the process (malloc, huge pages) is the job of whoever owns it:
the `alis` command does it for itself (alis_core/entry.py).
"""
from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types

from .errors import AlisError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("anchors_from_seeds", "latents_to_anchors", "load_anchors", "parse_seed_list",
                     "sample_anchors", "sample_latents", "save_anchors"), "anchors"),
    **dict.fromkeys(("DEFAULT_CHECKPOINT", "convert_official", "load_discriminator", "load_generator",
                     "save_generator"), "checkpoint"),
    **dict.fromkeys(("DiscriminatorConfig", "GeneratorConfig"), "config"),
    "Discriminator": "discriminator",
    "Generator": "generator",
    **dict.fromkeys(("from_unit", "linear_to_srgb", "load_float_image", "load_image", "save_float_image",
                     "save_image", "save_png", "srgb_to_linear", "to_unit"), "image"),
    **dict.fromkeys(("invert_image", "loop_anchors", "photo_loop_anchors"), "invert"),
    **dict.fromkeys(("iter_panorama", "panorama", "patch_grid_score", "resample_loop", "seam_score"), "panorama"),
    **dict.fromkeys(("CUBE_FACE_FILES", "CUBE_FACES", "cubemap_layout", "cubemap_to_equirect",
                     "equirect_to_cubemap", "layout_to_cubemap", "strip_to_equirect"), "projection"),
}

__all__ = ["AlisError", *_EXPORTS]


def __getattr__(name: str):
    """The public names and the submodules, imported on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule (alis_core.options, alis_core.kernels, ...), as `import alis_core.<name>` gives
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule alis_core.panorama binds the package attribute `panorama` to the
        # module; the public name is the function of the same name.
        if (isinstance(value, _types.ModuleType) and _EXPORTS.get(name) == name
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
