"""Load ALIS Checkpoint: list and load generators (.safetensors or official .pkl) for the nodes."""
from __future__ import annotations

import logging
import os
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

import alis_core
from alis_core import hub, options
from alis_core.errors import AlisError

from .errors import input_error
from .spec import ALIS_MODEL, NodeSpec, Out, Param

log = logging.getLogger(__name__)

NODE = "Load ALIS Checkpoint"
BUNDLED = "default (bundled)"  # combo entry for alis_core.DEFAULT_CHECKPOINT
DOWNLOAD_MARK = " (download)"  # a known model not cached yet: "lhq1024 (download)" downloads it on first run
CHECKPOINT_EXTENSIONS = (".safetensors", ".pkl")
DEFAULTS = options.COMFYUI
Progress = Callable[[int, int], None]


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
    """Combo entries: the bundled default, the models of alis_core.hub's cache (known ones not
    cached yet marked "NAME (download)"), then checkpoints under `folders` as relative paths."""
    names: set[str] = set()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if _loadable(root, path):
                names.add(path.relative_to(root).as_posix())
    cached = hub.cached_names()
    models = [*cached, *(name + DOWNLOAD_MARK for name in hub.KNOWN if name not in cached)]
    return [BUNDLED, *sorted(models), *sorted(names)]


def _model_name(ckpt_name: str) -> str | None:
    """The hub model a combo entry names ("lhq1024" or "lhq1024 (download)"), else None. The marked
    spelling stays valid once the model is cached, so a saved workflow keeps loading."""
    name = ckpt_name[:-len(DOWNLOAD_MARK)] if ckpt_name.endswith(DOWNLOAD_MARK) else ckpt_name
    if hub.NAME_PATTERN.fullmatch(name) and (name in hub.KNOWN or hub.model_path(name).is_file()):
        return name
    return None


def check_choice(ckpt_name: str, folders: Sequence[str | os.PathLike]) -> bool | str:
    """ComfyUI's validate_inputs: True for an entry `checkpoint_names` lists or a model's marked
    spelling, else the reason (the combo check is skipped for ckpt_name so that both spellings pass)."""
    if ckpt_name in checkpoint_names(folders) or _model_name(ckpt_name) is not None:
        return True
    return f"'{ckpt_name}' is not in models/alis/ nor a model name; pick an entry of the list (refresh it first)"


def _loadable(root: Path, path: Path) -> bool:
    """A checkpoint file inside `root` by name: a regular file, or a symlink placed there that points
    to one (a common way to share model files). Names that climb out ("../x.pkl") are not."""
    inside = os.path.normpath(root / path).startswith(os.path.normpath(root) + os.sep)
    return inside and path.suffix.lower() in CHECKPOINT_EXTENSIONS and path.is_file()


def resolve_checkpoint(ckpt_name: str, folders: Sequence[str | os.PathLike],
                       progress: Progress | None = None) -> Path:
    """The file behind a combo entry; only names that `checkpoint_names` lists are accepted.
    A model name is downloaded on first use (alis_core.hub) unless ALIS_OFFLINE=1; progress(done,
    total) sees its bytes and may raise to cancel (the partial file is kept and resumed later)."""
    name = _model_name(ckpt_name)
    if name is not None:
        try:
            return hub.resolve(name, progress=progress)
        except AlisError as e:
            raise input_error(NODE, "ckpt_name", str(e)) from e
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
                          offload_device: str | torch.device | None = None,
                          progress: Progress | None = None) -> AlisModel:
    """Node function: resolve a combo entry under `folders` (downloading a model name on first
    use, with `progress`) and load it."""
    return load_checkpoint(resolve_checkpoint(ckpt_name, folders, progress), device, dtype, offload_device, fast)


LOAD_CHECKPOINT = NodeSpec(
    node_id="ALISLoadCheckpoint",
    display_name=NODE,
    category="ALIS/loaders",
    description="Loads an ALIS generator from models/alis/ (.safetensors, or an official .pkl read safely).",
    function=load_named_checkpoint,
    inputs=(
        Param("ckpt_name", "COMBO", options_from="alis_checkpoints",
              tooltip="Generator file from models/alis/ (or an 'alis:' path in extra_model_paths.yaml), or a "
                      "model of the alis cache; 'default (bundled)' is the checkpoint shipped with the pack; "
                      "'lhq1024 (download)' downloads the authors' photographic model (once, resumable; "
                      "the same cache as the `alis` command)."),
        Param("dtype", "COMBO", options=options.DTYPE_NAMES, default="float32",
              tooltip="Compute precision (weights stay float32). float32 works everywhere; "
                      "float16/bfloat16 are faster on GPUs."),
        Param("fast", "BOOLEAN", default=DEFAULTS.fast,
              tooltip="Faster float32 maths (channels-last, folded weights), about 1e-6 from the official "
                      "order of operations. Off: the exact official order. Reduced dtypes are always fast."),
    ),
    outputs=(Out("model", ALIS_MODEL, "The ALIS generator, on ComfyUI's device."),),
    extras=("folders", "device", "offload_device", "progress"),
)
