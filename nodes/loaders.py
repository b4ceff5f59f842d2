"""Load ALIS Checkpoint: list and load generators (.safetensors or official .pkl) for the nodes."""
from __future__ import annotations

import logging
import os
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

import alis_core
from alis_core import options
from alis_core.errors import AlisError

from .errors import input_error
from .spec import ALIS_MODEL, NodeSpec, Out, Param

log = logging.getLogger(__name__)

NODE = "Load ALIS Checkpoint"
BUNDLED = "default (bundled)"  # combo entry for alis_core.DEFAULT_CHECKPOINT
CHECKPOINT_EXTENSIONS = (".safetensors", ".pkl")
DEFAULTS = options.COMFYUI


@dataclass(eq=False)
class AlisModel:
    """ALIS_MODEL: a generator, the device it runs on and the device it rests on between runs."""

    generator: torch.nn.Module  # alis_core Generator, kept on `offload_device`
    name: str
    device: torch.device
    offload_device: torch.device

    @property
    def img_resolution(self) -> int:
        return int(self.generator.img_resolution)

    @property
    def anchor_spacing(self) -> int:
        return int(self.generator.anchor_spacing)

    @property
    def w_dim(self) -> int:
        return int(self.generator.config.w_dim)

    @contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        """Move the generator to `device` for one run and back to `offload_device` after it."""
        moved = self.device != self.offload_device
        if moved:
            with _normal_tensors():
                self.generator.to(self.device)
        try:
            yield self.generator
        finally:
            if moved:
                with _normal_tensors():
                    self.generator.to(self.offload_device)


def _normal_tensors():
    """ComfyUI runs nodes under torch.inference_mode(); weights made there would be inference
    tensors, which lack the version counters alis_core's weight cache reads. Make them normal."""
    return torch.inference_mode(False)


# One AlisModel per (file, dtype, devices) while anything (ComfyUI's node cache) still holds it:
# loading the same file twice returns the same object, and dropping it frees the memory.
_cache: "weakref.WeakValueDictionary[tuple, AlisModel]" = weakref.WeakValueDictionary()
_cache_lock = threading.Lock()


def checkpoint_names(folders: Sequence[str | os.PathLike]) -> list[str]:
    """Combo entries: the bundled default, then checkpoints under `folders` as relative paths."""
    names: set[str] = set()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if _loadable(root, path):
                names.add(path.relative_to(root).as_posix())
    return [BUNDLED, *sorted(names)]


def _loadable(root: Path, path: Path) -> bool:
    """A checkpoint file inside `root` by name: a regular file, or a symlink placed there that points
    to one (a common way to share model files). Names that climb out ("../x.pkl") are not."""
    inside = os.path.normpath(root / path).startswith(os.path.normpath(root) + os.sep)
    return inside and path.suffix.lower() in CHECKPOINT_EXTENSIONS and path.is_file()


def resolve_checkpoint(ckpt_name: str, folders: Sequence[str | os.PathLike]) -> Path:
    """The file behind a combo entry; only names that `checkpoint_names` lists are accepted."""
    if ckpt_name == BUNDLED:
        path = Path(alis_core.DEFAULT_CHECKPOINT)
        if not path.is_file():
            raise input_error(NODE, "ckpt_name", f"the bundled default checkpoint is missing ({path.name}); "
                              "put an ALIS .safetensors or .pkl into models/alis/ and pick it")
        return path
    for folder in folders:
        root = Path(folder)
        path = root / ckpt_name
        if _loadable(root, path):  # exactly what checkpoint_names lists
            return path
    raise input_error(NODE, "ckpt_name", f"'{ckpt_name}' is not in models/alis/; "
                      "put the file there (or in an 'alis:' entry of extra_model_paths.yaml) and refresh")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str = "float32",
                    offload_device: str | torch.device | None = None, fast: bool = DEFAULTS.fast) -> AlisModel:
    """Load a generator file once (later calls reuse it while it is alive); returns ALIS_MODEL.

    path: .safetensors or official .pkl (read by alis_core.load_generator without running pickled code).
    device: where generation runs; offload_device: where the weights rest (default: `device`).
    fast: quicker float32 maths, about 1e-6 from the official order of operations.
    """
    if dtype not in options.DTYPE_NAMES:
        raise input_error(NODE, "dtype", f"unknown dtype '{dtype}'; choose one of {', '.join(options.DTYPE_NAMES)}")
    device = torch.device(device)
    offload_device = torch.device(offload_device) if offload_device is not None else device
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise input_error(NODE, "ckpt_name", f"cannot read {path.name} ({e.strerror}); pick another file") from e
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, dtype, fast, str(device), str(offload_device))
    with _cache_lock:
        model = _cache.get(key)
        if model is not None:
            return model
        try:
            with _normal_tensors():
                generator = alis_core.load_generator(path, device=offload_device, dtype=options.torch_dtype(dtype),
                                                     fast=fast)
        except AlisError as e:
            raise input_error(NODE, "ckpt_name", f"{e}") from e
        except Exception as e:  # a truncated or foreign file can fail inside torch/safetensors/pickle
            raise input_error(NODE, "ckpt_name", f"{path.name} is not a readable ALIS checkpoint "
                              f"({type(e).__name__}: {e}); re-download it or pick another file") from e
        generator.eval().requires_grad_(False)
        model = AlisModel(generator=generator, name=path.name, device=device, offload_device=offload_device)
        _cache[key] = model
        log.info("loaded ALIS checkpoint %s (%d px frames) for %s", path.name, model.img_resolution, device)
        return model


def load_named_checkpoint(ckpt_name: str, dtype: str = "float32", fast: bool = DEFAULTS.fast, *,
                          folders: Sequence[str | os.PathLike] = (),
                          device: str | torch.device = "cpu",
                          offload_device: str | torch.device | None = None) -> AlisModel:
    """Node function: resolve a combo entry under `folders` and load it."""
    return load_checkpoint(resolve_checkpoint(ckpt_name, folders), device, dtype, offload_device, fast)


LOAD_CHECKPOINT = NodeSpec(
    node_id="ALISLoadCheckpoint",
    display_name=NODE,
    category="ALIS/loaders",
    description="Loads an ALIS generator from models/alis/ (.safetensors, or an official .pkl read safely).",
    function=load_named_checkpoint,
    inputs=(
        Param("ckpt_name", "COMBO", options_from="alis_checkpoints",
              tooltip="Generator file from models/alis/ (or an 'alis:' path in extra_model_paths.yaml); "
                      "'default (bundled)' is the checkpoint shipped with the pack."),
        Param("dtype", "COMBO", options=options.DTYPE_NAMES, default="float32",
              tooltip="Compute precision (weights stay float32). float32 works everywhere; "
                      "float16/bfloat16 are faster on GPUs."),
        Param("fast", "BOOLEAN", default=DEFAULTS.fast,
              tooltip="Faster float32 maths (channels-last, folded weights), about 1e-6 from the official "
                      "order of operations. Off: the exact official order. Reduced dtypes are always fast."),
    ),
    outputs=(Out("model", ALIS_MODEL, "The ALIS generator, on ComfyUI's device."),),
    extras=("folders", "device", "offload_device"),
)
