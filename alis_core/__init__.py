"""ALIS panoramas: a faithful, pure-PyTorch implementation of ALIS (Skorokhodov et al., ICCV 2021).

    G = alis_core.load_generator()                      # the bundled default model
    anchors = alis_core.sample_anchors(G, 8, seed=1)    # 8 scenes
    strip = alis_core.panorama(G, anchors, wrap=True)   # [3, H, 8 * G.anchor_spacing], a 360° loop

See docs/ARCHITECTURE.md for how the paper's terms map to the code.
"""
import os as _os
import sys as _sys


MALLOC_TUNED = False  # whether this import tuned glibc's malloc (see _keep_freed_memory)


def _keep_freed_memory() -> None:
    """Let glibc keep freed blocks for the next frame instead of unmapping them (above 32 MB it
    always does) or trimming the heap: without this, every frame of a large model page-faults its
    activations in again (measured: 1024 px frames 10-15% faster and without 2x outliers). The
    price: the process keeps its peak memory until it exits. A user's own malloc settings win."""
    if not _sys.platform.startswith("linux") or any(k in _os.environ for k in (
            "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks up to 1 GiB come from the heap
        ok &= libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):  # not glibc
        return
    global MALLOC_TUNED
    MALLOC_TUNED = bool(ok)


if "torch" not in _sys.modules:
    # This process is ours (the CLI, a script), not a host application's: tune its memory.
    # Large activations (100+ MB at 1024 px) are fresh allocations; on transparent huge pages their
    # first touch faults 512x less often: about 20% faster frames on a CPU. PyTorch reads this
    # switch once, when it first allocates, so it only takes effect before torch is imported.
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    _keep_freed_memory()

from .anchors import anchors_from_seeds, latents_to_anchors, parse_seed_list, sample_anchors, sample_latents
from .checkpoint import (DEFAULT_CHECKPOINT, convert_official, load_discriminator, load_generator,
                         save_generator)
from .config import DiscriminatorConfig, GeneratorConfig
from .discriminator import Discriminator
from .errors import AlisError
from .generator import Generator
from .image import (from_unit, linear_to_srgb, load_float_image, load_image, save_float_image, save_png,
                    srgb_to_linear, to_unit)
from .panorama import iter_panorama, panorama, patch_grid_score, resample_loop, seam_score
from .projection import (CUBE_FACE_FILES, CUBE_FACES, cubemap_layout, cubemap_to_equirect, equirect_to_cubemap,
                         layout_to_cubemap, strip_to_equirect)

__version__ = "0.1.0"

__all__ = [
    "CUBE_FACES", "CUBE_FACE_FILES", "cubemap_layout", "cubemap_to_equirect", "equirect_to_cubemap",
    "layout_to_cubemap", "strip_to_equirect", "from_unit", "linear_to_srgb", "load_float_image", "load_image",
    "save_float_image", "save_png", "srgb_to_linear", "to_unit",
    "AlisError", "DEFAULT_CHECKPOINT", "Discriminator", "DiscriminatorConfig", "Generator", "GeneratorConfig",
    "anchors_from_seeds", "convert_official", "iter_panorama", "latents_to_anchors", "load_discriminator",
    "load_generator", "panorama", "parse_seed_list", "patch_grid_score", "resample_loop", "sample_anchors", "sample_latents",
    "save_generator", "seam_score",
]
