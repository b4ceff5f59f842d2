"""The render plan: how one synthesis pass runs, chosen once per call from the model's config, the
device, the compute dtype and the exactness asked for, and handed to the model.

The model (`alis_core.generator`) reads only the plan's answers: the formulation (`fast`: NHWC
activations, demodulation and gain folded into the weights; or the official order of operations),
whether gradients are off (activations may be overwritten), and whether the CPU engine
(`alis_core.cpu.fused`) runs the pass. Every threshold of the engine lives here and travels in the
plan value, so a pass takes one consistent set of choices.

An operator that fails on this machine (this CPU's oneDNN build refusing float16 convolutions, say)
is switched off for its dtype only, with one warning: the same call runs again without it, and
every other (operator, dtype) keeps its fast implementation.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .. import kernels

# The CPU engine needs oneDNN's convolutions with fused bias and activation (PyTorch builds with mkldnn).
HAS_FUSED_CONV = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()

# Float32 layers of the engine (PyTorch operations).
SMALL_DECONV_PIXELS = 4096  # transposed convolutions of inputs this small (batch x pixels) run as one matmul
WINOGRAD_MIN_CHANNELS = 128  # 3x3 convolutions this wide (in and out) and
WINOGRAD_MIN_PIXELS = 1024  # this large (batch x height x width) run as Winograd F(4x4, 3x3)
WINOGRAD2_MIN_CHANNELS = 256  # smaller ones this wide and large as F(2x2, 3x3)
WINOGRAD2_MIN_PIXELS = 128
# The compiled kernels (alis_core.kernels, numba) run the models whose largest layer, in one frame,
# has at least this many pixels x input channels x output channels (a 256 px model: 2.7e8; the
# bundled 128 px model: 1.7e7, too little work to pay for the half second loading them costs a
# process). Decided per model, so that every frame and tile of a model takes the same path.
# Of such a model's layers, float32 3x3 convolutions of 64+ channels and 1024+ pixels run as their
# Winograd F(4x4, 3x3) (narrower, oneDNN's direct convolution stays faster; smaller, the PyTorch
# path's F(2x2) with its smaller weights), float32 upsampling layers of 128+ input pixels through
# them; bfloat16 layers all.
KERNEL_MIN_WORK = 1 << 27
KERNEL_WINOGRAD_MIN_CHANNELS = 64
KERNEL_WINOGRAD_MIN_PIXELS = 1024
KERNEL_UPSAMPLING_MIN_PIXELS = 128
# A strip across anchors (context rendering) with at most this many anchors gets every anchor's
# RGB by one matrix product and the compiled toRGB pass (more: interval by interval, in PyTorch).
TORGB_KERNEL_MAX_ANCHORS = 8

FUSED = "fused"  # the operator name of the CPU engine's oneDNN path (fused convolutions, packed weights)
# (operator, dtype) pairs that failed on this machine: they take the plain path from then on
FAILED: set[tuple[str, torch.dtype]] = set()


def kernel_model(cfg) -> bool:
    """Whether a model is large enough for the compiled kernels (KERNEL_MIN_WORK)."""
    work = max(cfg.grid_size * res * (res // cfg.grid_size) * cfg.channels(res) ** 2 for res in cfg.block_resolutions)
    return work >= KERNEL_MIN_WORK


@dataclass(frozen=True)
class RenderPlan:
    """How one synthesis pass runs (see the module's docstring)."""

    dtype: torch.dtype  # the compute dtype of the activations
    fast: bool = False  # the fast formulation (NHWC, folded weights); False: the official order of operations
    inference: bool = False  # no gradients: activations may be overwritten in place
    fused: bool = False  # the CPU engine (`alis_core.cpu.fused`) runs the pass
    kernels: bool = False  # ... and may hand layers to the compiled kernels (a model large enough, numba here)
    small_deconv_pixels: int = SMALL_DECONV_PIXELS
    winograd4: tuple[int, int] = (WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS)  # (min channels, min pixels)
    winograd2: tuple[int, int] = (WINOGRAD2_MIN_CHANNELS, WINOGRAD2_MIN_PIXELS)
    kernel_winograd: tuple[int, int] = (KERNEL_WINOGRAD_MIN_CHANNELS, KERNEL_WINOGRAD_MIN_PIXELS)
    kernel_upsampling_pixels: int = KERNEL_UPSAMPLING_MIN_PIXELS
    torgb_kernel_max_anchors: int = TORGB_KERNEL_MAX_ANCHORS

    @staticmethod
    def polyphase(dtype: torch.dtype) -> bool:
        """Whether upsampling layers of activations in `dtype` run their transposed convolution as
        one 2x2 convolution of its four phases: the bfloat16 and float16 matrix units of CPUs run
        ordinary convolutions much faster than transposed ones."""
        return dtype != torch.float32

    def winograd_tile(self, x: torch.Tensor, weight: torch.Tensor) -> int:
        """The Winograd tile size for a float32 3x3 convolution of x [B, I, H, W] (engine path), 0
        for none. F(4x4, 3x3) pays for its tile transforms only on wide layers (from about 128
        channels on), and for its 4x larger weights only from about 64 tiles on (below, reading the
        weights from memory costs more than the multiplications saved). Below that, on the wide
        layers of a few hundred pixels, F(2x2, 3x3) (16/9 the weights) is the better one. Float32
        only (the transforms would lose bfloat16's few bits of precision)."""
        b, i, h, w = x.shape
        if x.dtype != torch.float32:
            return 0
        c, n = min(i, weight.shape[0]), b * h * w
        if c >= self.winograd4[0] and n >= self.winograd4[1] and h % 4 == 0 and w % 4 == 0:
            return 4
        if c >= self.winograd2[0] and n >= self.winograd2[1] and h % 2 == 0 and w % 2 == 0:
            return 2
        return 0

    def kernels_f32(self, x: torch.Tensor) -> bool:
        """Whether the compiled float32 kernels take this layer: float32 and no CPU autocast (which
        asks for bfloat16 products: the PyTorch path honours it)."""
        return self.kernels and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")

    def kernels_winograd(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether this float32 3x3 convolution runs as the compiled kernels' Winograd F(4x4, 3x3)
        (faster than the best PyTorch path from 64 channels on; narrower, oneDNN's direct
        convolution is)."""
        b, i, h, w = x.shape
        return (min(i, weight.shape[0]) >= self.kernel_winograd[0] and b * h * w >= self.kernel_winograd[1]
                and h % 4 == 0 and w % 4 == 0 and self.kernels_f32(x))

    def kernels_upsampling(self, x: torch.Tensor) -> bool:
        """Whether this float32 upsampling layer (input x) ends in the compiled kernels."""
        b, _, h, w = x.shape
        return b * h * w >= self.kernel_upsampling_pixels and self.kernels_f32(x)

    def kernels_bf16(self, x: torch.Tensor) -> bool:
        """Whether the compiled bfloat16 kernels take this activation (bfloat16, channels-last memory)."""
        return self.kernels and kernels.enabled_for(x)

    def run(self, render: Callable[[RenderPlan], torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        """render(self), and where an operator of the CPU engine fails on this machine, the same
        call again (with the same random noise) without it: a oneDNN refusal switches the engine
        off for this dtype (one warning), a failed compiled kernel switches the kernels off
        (`alis_core.kernels` warns)."""
        if not self.fused:
            return render(self)
        rng_state = generator.get_state() if generator is not None else None
        try:
            return render(self)
        except (MemoryError, torch.OutOfMemoryError):
            raise  # not this machine's operators: the same call would run out again
        except kernels.KernelFailure:
            retry = dataclasses.replace(self, kernels=False)
        except RuntimeError as e:
            disable(FUSED, self.dtype, e)
            retry = dataclasses.replace(self, fused=False, kernels=False)
        if rng_state is not None:
            generator.set_state(rng_state)
        return render(retry)


def disable(operator: str, dtype: torch.dtype, error: Exception) -> None:
    """Switch `operator` off for `dtype` for the rest of the process, with one warning."""
    if (operator, dtype) in FAILED:
        return
    FAILED.add((operator, dtype))
    name = str(dtype).removeprefix("torch.")
    what = "the fused CPU path" if operator == FUSED else f"the CPU operator {operator!r}"
    advice = "; float32 renders faster on this CPU" if dtype == torch.float16 else ""
    warnings.warn(f"{what} does not run {name} on this CPU ({str(error).splitlines()[0][:160]}); "
                  f"using the plain path for it{advice}", RuntimeWarning, stacklevel=4)


def choose_plan(cfg, device, dtype: torch.dtype = torch.float32, fast: bool = False) -> RenderPlan:
    """The plan for rendering a model of config `cfg` on `device` in `dtype`: `fast` False asks for
    the official order of operations (float32 only: reduced dtypes are always fast). Gradients
    enabled (training) keep activations intact and skip the CPU engine."""
    device = torch.device(device)
    inference = not torch.is_grad_enabled()
    fast = fast or dtype != torch.float32
    if inference and device.type == "cuda" and dtype == torch.float32:
        # the fast formulation is built for CPUs (NHWC for oneDNN, folded weights); on a GPU the
        # official order of operations renders float32 as fast or faster
        fast = False
    # CPU inference on the fast path: oneDNN convolutions with bias and activation fused in, block
    # inputs assembled and modulated in one pass, toRGB as one small matmul per patch
    fused = fast and inference and device.type == "cpu" and HAS_FUSED_CONV and (FUSED, dtype) not in FAILED
    return RenderPlan(
        dtype=dtype, fast=fast, inference=inference, fused=fused,
        kernels=fused and kernel_model(cfg) and kernels.available(),
        small_deconv_pixels=SMALL_DECONV_PIXELS,
        winograd4=(WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS),
        winograd2=(WINOGRAD2_MIN_CHANNELS, WINOGRAD2_MIN_PIXELS),
        kernel_winograd=(KERNEL_WINOGRAD_MIN_CHANNELS, KERNEL_WINOGRAD_MIN_PIXELS),
        kernel_upsampling_pixels=KERNEL_UPSAMPLING_MIN_PIXELS,
        torgb_kernel_max_anchors=TORGB_KERNEL_MAX_ANCHORS)
