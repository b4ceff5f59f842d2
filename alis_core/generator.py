"""The ALIS generator (Skorokhodov, Sotnikov and Elhoseiny, ICCV 2021), top to bottom as the paper
describes it: a mapping network z -> w, then a StyleGAN2 synthesis network made patch-wise and
equivariant.

- Anchors: latents w placed on a horizontal grid, one every `anchor_spacing` pixels; a window is
  three consecutive anchors (left, centre, right), spanning two anchor intervals.
- Patch-wise generation (Sec. 3.2): a frame is `grid_size` patches of `patch_width` columns; every
  patch is computed on its own (every convolution zero-pads it), from its window and its position
  in that window (`left_border`, `slot`), so that a panorama of any width is a row of patches.
- Spatially-Aligned AdaIN (Sec. 3.2): every layer's style is interpolated column by column between
  the two anchors around the column; the input is scaled per column, and the weights are
  demodulated by themselves (a per-column style cannot be folded into them).
- Coordinates (Sec. 3.3): Fourier features of x relative to the window (so, to the anchors) and y,
  concatenated to the input of every block's first convolution.

What a pass shares across layers (positions, column styles, coordinate features, noise) lives in
`alis_core.context`. How a pass runs is a render plan (`alis_core.cpu.plan`), chosen once per call
from the config, the device, the dtype and the exactness asked for: on the CPU without gradients
the engine in `alis_core.cpu` runs the same network from these modules' weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu
from .config import GeneratorConfig
from .context import CHANNELS_LAST, CONTEXT_MARGIN, FeatureCache, PatchPositions, RenderContext, Scratch
from .errors import AlisError
from .layers import (LRELU_ALPHA, LRELU_GAIN, FullyConnected, _version, conv_transpose3x3_up2, conv_up2_polyphase,
                     logarithmic_basis, normalize_2nd_moment, polyphase_weight, upsample2d)
from .options import check_noise_mode

__all__ = ["CONTEXT_MARGIN", "Generator", "GridInput", "MappingNetwork", "PatchPositions", "SynthesisBlock",
           "SynthesisLayer", "SynthesisNetwork", "ToRGB", "exact_cuda"]


@contextlib.contextmanager
def exact_cuda(device: torch.device, weights: Tensor):
    """Rendering on CUDA in true float32 with deterministic cuDNN algorithms. cuDNN convolutions
    default to TF32 (10-bit mantissas, about 1e-3 relative), too coarse for parity with the official
    model, and picked algorithms whose sums differed from call to call (2e-5 on an H200), so that the
    same seed gave other pixels on every call and the loop did not close bit-exactly. cuDNN's
    heuristics also picked an FFT algorithm that made large panoramas far slower: benchmark mode
    times the deterministic ones once per shape (panorama tiles share one) and keeps the fastest.
    Training (gradients for `weights`) keeps PyTorch's global settings."""
    if device.type != "cuda" or (weights.requires_grad and torch.is_grad_enabled()):
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, False, True, True
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


class MappingNetwork(nn.Module):
    """z -> w: second-moment normalisation, then leaky-ReLU dense layers; tracks w_avg."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], activation="lrelu",
                                                   lr_multiplier=cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> Tensor:
        trained = self.fc0.weight if self.num_layers else self.w_avg
        with torch.autocast(device_type=z.device.type, enabled=False), exact_cuda(z.device, trained):
            x = normalize_2nd_moment(z.to(torch.float32))
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution with SA-AdaIN styles (ALIS Sec. 3.2), per patch, demodulated by
    the weights alone; `up` 2: on the 2x upsampled input (StyleGAN2's up=2 convolution)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int,
                 conv_clamp: float | None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self._prepared: tuple | None = None
        self._packed_cache = Scratch()  # what the CPU engine derives from the prepared weights
        self.noise_cache = Scratch()  # "const" noise as positions read it, scaled by its strength

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the layer (ComfyUI offloads models between runs) drops what was
        derived from the weights, which would otherwise keep the old device's memory."""
        self._prepared = None
        self._packed_cache.clear()
        self.noise_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, I], one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1)

    def prepared_weights(self, dtype, fast: bool, polyphase: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """(weight, bias, demod) ready for `dtype`; cached while the weights are frozen.

        ALIS demodulates with the weights alone (styles vary along x, so they cannot fold in).
        In fast mode, demodulation and the leaky-ReLU gain (the activation is positively
        homogeneous) fold into the weights, saving two passes over every activation; exact mode
        keeps the official order of operations so that it matches official outputs to 1e-4.
        `polyphase` (an upsampling layer): the transposed convolution as one 2x2 convolution of
        its four phases (`layers.polyphase_weight`).
        """
        frozen = not (self.weight.requires_grad and torch.is_grad_enabled())
        key = (dtype, fast, polyphase, _version(self.weight), _version(self.bias), self.weight.device,
               torch.is_inference_mode_enabled())  # inference tensors cannot enter a graph
        if frozen and self._prepared is not None and self._prepared[0] == key:
            return self._prepared[1]
        demod = (self.weight.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()  # [O]
        if not fast:
            w, b, d = self.weight, self.bias, demod.reshape(1, -1, 1, 1)
        else:
            w, b, d = self.weight * (demod * LRELU_GAIN).reshape(-1, 1, 1, 1), self.bias * LRELU_GAIN, None
        if self.up == 2:
            w = w.transpose(0, 1)  # [I, O, 3, 3] for the transposed convolution
            if polyphase:
                w = polyphase_weight(w)  # [4 * O, I, 2, 2]
        w = w.to(dtype)
        if fast:  # the layout oneDNN uses with NHWC activations: no reorder on every call
            w = w.contiguous(memory_format=CHANNELS_LAST)
        out = (w, b.to(dtype), d)
        if frozen:  # a training step needs the graph through the weights: never cache then
            self._prepared = (key, tuple(t.detach() if t is not None else None for t in out))
            self._packed_cache.clear()
        return out

    def forward(self, x: Tensor, w3: Tensor, ctx: RenderContext) -> Tensor:
        """x [B, I, h, w], w3 [B, A, w_dim] (the layer's anchors) -> [B, O, h * up, w * up].
        Overwrites x when gradients are off (x is never needed again)."""
        ip = ctx.inplace
        mod = ctx.modulation(self, w3, x.shape[2], x.shape[3], x.dtype)  # [B, I, 1, w]: SA-AdaIN, Sec. 3.2
        x = x.mul_(mod) if ip else x * mod
        weight, bias, demod = self.prepared_weights(x.dtype, ctx.fast, ctx.plan.polyphase(x.dtype))
        if self.up == 2:  # [B, O, 2h, 2w]
            x = conv_up2_polyphase(x, weight) if weight.shape[2] == 2 else conv_transpose3x3_up2(x, weight)
        else:
            x = F.conv2d(x, weight, padding=1)  # [B, O, h, w]: zero padding at the patch's edges
        noise = ctx.noise(self, x.shape)  # [B, 1, H, W] or None
        b = bias.reshape(1, -1, 1, 1)
        if demod is not None:  # float32: (x * demod + noise + b) -> lrelu -> * gain -> clamp
            x = torch.addcmul(noise, x, demod) if noise is not None else (x.mul_(demod) if ip else x * demod)
            x = x.add_(b) if ip else x + b
            x = F.leaky_relu_(x, LRELU_ALPHA).mul_(LRELU_GAIN) if ip else F.leaky_relu(x, LRELU_ALPHA) * LRELU_GAIN
        else:  # demod and gain are in the weights
            x = x.add_(b) if ip else x + b
            if noise is not None:
                x = x.add_(noise, alpha=LRELU_GAIN) if ip else x + noise * LRELU_GAIN
            x = F.leaky_relu_(x, LRELU_ALPHA) if ip else F.leaky_relu(x, LRELU_ALPHA)
        if self.conv_clamp is None:
            return x
        return x.clamp_(-self.conv_clamp, self.conv_clamp) if ip else x.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGB(nn.Module):
    """1x1 modulated convolution (no demodulation) to RGB, with SA-AdaIN styles."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, C] (the weight gain included), one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1) * self.weight_gain

    @property
    def rgb_weight(self) -> Tensor:
        """The 1x1 weights as a matrix [C, 3]."""
        return self.weight[:, :, 0, 0].t()

    def forward(self, x: Tensor, w3: Tensor, ctx: RenderContext, img: Tensor | None = None) -> Tensor:
        """x [B, C, h, w] -> the block's skip image, float32 [B, 3, h, w]: this layer's RGB plus `img`
        (the previous block's, [B, 3, h / 2, w / 2]; None for the first block) upsampled."""
        cols = ctx.column_styles(x.shape[2], x.shape[3])
        x = x * cols(self.styles(w3)).to(x.dtype)  # SA-AdaIN; out of place: x is the next block's input
        y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))  # [B, 3, h, w]
        if self.conv_clamp is not None:
            lim = self.conv_clamp
            y = y.clamp_(-lim, lim) if ctx.inplace else y.clamp(-lim, lim)
        y = y.to(torch.float32)
        return y if img is None else upsample2d(img) + y  # StyleGAN2's skip architecture


class GridInput(nn.Module):
    """The 4x4 input: a learned column [C, 4] modulated along x by interpolated anchor styles,
    concatenated with Fourier coordinate features of the 4x4 grid."""

    def __init__(self, cfg: GeneratorConfig, channels: int):
        super().__init__()
        self.input_column = nn.Parameter(torch.randn([channels, 4]))
        self.affine = FullyConnected(cfg.w_dim, channels, bias_init=0.0)
        self.basis = logarithmic_basis(4, channels, remove_lowest_freq=True, use_diagonal=True)
        self.out_channels = channels + 2 * self.basis.shape[0]

    def styles(self, w3: Tensor) -> Tensor:
        """w3 [B, A, w_dim] -> styles [B, A, C], one per anchor."""
        return self.affine(w3.reshape(-1, w3.shape[-1])).reshape(w3.shape[0], w3.shape[1], -1)

    def forward(self, w3: Tensor, ctx: RenderContext) -> Tensor:
        """w3 [B, A, w_dim] -> [B, C + D, 4, W] float32 (W: the patch's columns and its context)."""
        b = w3.shape[0]
        width = ctx.pos.span * (4 // ctx.cfg.grid_size) + 2 * ctx.pos.margin
        x = self.input_column[None, :, :, None].expand(b, -1, -1, width)  # [B, C, 4, W]
        x = x * ctx.column_styles(4, width)(ctx.styles(self, w3))  # scaled per column (Sec. 3.2)
        coords = torch.stack(ctx.coords(4, 4, width, self.basis, True))  # [B, D, 4, W] (Sec. 3.3)
        return torch.cat([x, coords.to(x.dtype)], dim=1)


class SynthesisBlock(nn.Module):
    """One resolution: [x ++ coords] -> conv0 (up 2) -> conv1 -> toRGB, skip-connected images."""

    def __init__(self, cfg: GeneratorConfig, res: int):
        super().__init__()
        self.res = res
        out_ch = cfg.channels(res)
        if res == 4:
            self.input = GridInput(cfg, out_ch)
            conv1_in = self.input.out_channels
        else:
            dim = cfg.coord_dims[str(res)]
            self.basis = logarithmic_basis(res, dim, remove_lowest_freq=True,
                                           use_diagonal=cfg.coord_use_diagonal)
            self.use_cosine = cfg.coord_use_cosine
            n_coord = self.basis.shape[0] * (2 if self.use_cosine else 1)
            self.conv0 = SynthesisLayer(cfg.channels(res // 2) + n_coord, out_ch, cfg.w_dim, res, 2,
                                        cfg.conv_clamp)
            conv1_in = out_ch
        self.conv1 = SynthesisLayer(conv1_in, out_ch, cfg.w_dim, res, 1, cfg.conv_clamp)
        self.torgb = ToRGB(out_ch, cfg.img_channels, cfg.w_dim, cfg.conv_clamp)

    def forward(self, x: Tensor | None, img: Tensor | None, ws3: Tensor, ctx: RenderContext):
        """ws3 [B, 3 layers, A anchors, w_dim]; x [B, C, h / 2, w'] and img [B, 3, h / 2, w'] from
        the block before (None for the first) -> (x [B, C', h, w], img [B, 3, h, w])."""
        layout = CHANNELS_LAST if ctx.fast else torch.contiguous_format  # NHWC: fastest convolutions
        if self.res == 4:
            x = self.input(ws3[:, 0], ctx).to(ctx.dtype).contiguous(memory_format=layout)  # [B, C + D, 4, W]
            x = self.conv1(x, ws3[:, 1], ctx)
        else:
            if ctx.pos.margin:  # the upsampling doubles the context columns: keep half of them
                half = ctx.pos.margin // 2
                x, img = x[:, :, :, half: x.shape[3] - half], img[:, :, :, half: img.shape[3] - half]
            b, c, h, w = x.shape
            coords = ctx.coords(self.res, h, w, self.basis, self.use_cosine)  # B x [D, h, w] (Sec. 3.3)
            xc = torch.empty([b, c + coords[0].shape[0], h, w], dtype=x.dtype, device=x.device,
                             memory_format=layout)  # [B, C + D, h, w]
            xc[:, :c] = x
            for i, feats in enumerate(coords):  # straight from the cache, no intermediate stack
                xc[i, c:] = feats
            x = self.conv1(self.conv0(xc, ws3[:, 0], ctx), ws3[:, 1], ctx)  # [B, C', 2h, 2w]
        return x, self.torgb(x, ws3[:, 2], ctx, img)


class SynthesisNetwork(nn.Module):
    """Blocks of 4, 8, ..., img_resolution px; every patch computed on its own (ALIS Sec. 3.2)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        for res in cfg.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res))
        # Training ramps the shift of frames inside their window from 0 to 1 (official schedule).
        self.register_buffer("max_shift_strength", torch.ones([1]))
        self._table = Scratch()  # the CPU engine's style table (copies and pickles start empty)
        self._check_periodicity()

    @property
    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.cfg.block_resolutions]

    def _check_periodicity(self) -> None:
        """Can patch positions be folded by one anchor interval without changing any feature?"""
        bases = [self.b4.input.basis] + [getattr(self, f"b{r}").basis for r in self.cfg.block_resolutions[1:]]
        phase = torch.cat([b[:, 0] for b in bases]).double().numpy() * self.cfg.w_coord_dist / (2 * math.pi)
        self.periodic = bool(np.all(np.abs(phase - np.round(phase)) < 1e-3))
        self.feature_cache = FeatureCache()

    def _apply(self, fn, *args, **kwargs):
        self.feature_cache = FeatureCache()  # coordinate features and column styles of the old device
        self._table.clear()
        return super()._apply(fn, *args, **kwargs)

    def forward(self, ws3: Tensor, pos: PatchPositions, noise_mode: str = "none",
                generator: torch.Generator | None = None, plan: cpu.RenderPlan | None = None) -> Tensor:
        """ws3 [B, num_ws, A, w_dim] (per layer the anchors from a window's left one on: left, centre,
        right, and for context rendering as many more as its columns reach) -> [B, C, H, span * Wp].
        `plan`: how to run (`cpu.choose_plan`); None: the official order of operations in float32."""
        check_noise_mode(noise_mode)
        if pos.margin % 2:
            raise AlisError(f"the context margin must be even, got {pos.margin}")
        if pos.canonical and not self.periodic and not pos.margin:
            # Folding changes the features of such a model: keep the window's own coordinates. (Strips
            # with context keep folding: every column then gets the same features in every strip,
            # jumping at anchors, as this model's patches do in a loop.)
            pos = dataclasses.replace(pos, canonical=False)
        if plan is None:
            plan = cpu.choose_plan(self.cfg, ws3.device)

        def render(plan: cpu.RenderPlan) -> Tensor:
            ctx = RenderContext(self.cfg, pos, ws3.shape[2], ws3.device, noise_mode, generator, self.feature_cache,
                                plan)
            if plan.fused:  # the CPU engine: the same network from these modules' weights
                return cpu.synthesize(self, ws3, ctx)
            with exact_cuda(ws3.device, self.b4.conv1.weight):
                x = img = None
                for i, block in enumerate(self.blocks):  # block i reads layers 2i (conv0), 2i + 1, 2i + 2 (toRGB)
                    x, img = block(x, img, ws3[:, 2 * i: 2 * i + 3], ctx)
            m = pos.margin
            return img[:, :, :, m: img.shape[3] - m] if m else img  # [B, 3, H, span * Wp]

        return plan.run(render, generator)


class Generator(nn.Module):
    """ALIS generator. `map` turns latents into anchors, `frame` renders the official frame,
    `patches` renders any set of patches (the panorama engine's unit of work)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.config = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        self.compute_dtype = torch.float32
        # fast: NHWC activations and folded weights (about 1e-6 relative from exact); exact: the
        # official order of operations, matching official outputs to 1e-4. Reduced dtypes are fast.
        self.fast = False

    @property
    def img_resolution(self) -> int:
        return self.config.img_resolution

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def anchor_spacing(self) -> int:
        return self.config.anchor_spacing

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def render_plan(self) -> cpu.RenderPlan:
        """How the next call renders: from the config, the device, `compute_dtype` and `fast`."""
        return cpu.choose_plan(self.config, self.device, self.compute_dtype, self.fast)

    def map(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """z [N, z_dim] -> w [N, w_dim]; truncation lerps towards the tracked w_avg."""
        return self.mapping(z.to(self.device), truncation_psi=truncation_psi)

    def _per_layer(self, w: Tensor, name: str) -> Tensor:
        w = w.to(self.device, torch.float32)
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise AlisError(f"{name} must be [N, {self.w_dim}] or [N, {self.num_ws}, {self.w_dim}], "
                            f"got {list(w.shape)}")
        return w

    def frame(self, w_left: Tensor, w_center: Tensor, w_right: Tensor, left_border,
              noise_mode: str = "none", generator: torch.Generator | None = None) -> Tensor:
        """One frame per sample, [N, 3, H, H] in [-1, 1], as the official synthesis computes it for
        ws=w_center, ws_context=(w_left, w_right), left_borders_idx=left_border (patches, [N])."""
        wl, wc, wr = (self._per_layer(w, n) for w, n in
                      ((w_left, "w_left"), (w_center, "w_center"), (w_right, "w_right")))
        n, g = wc.shape[0], self.config.grid_size
        lb = torch.as_tensor(left_border).reshape(-1).cpu()
        if lb.numel() not in (1, n):
            raise AlisError(f"left_border must hold 1 or {n} values, got {lb.numel()}")
        max_lb = 2 * self.config.patches_per_interval - g
        if lb.min() < 0 or lb.max() > max_lb:
            raise AlisError(f"left_border must lie in [0, {max_lb}] (patches inside the window), got {lb.tolist()}")
        lb = lb.expand(n).to(torch.float32)
        lb = (self.synthesis.max_shift_strength.cpu() * lb).to(torch.int64).numpy()
        ws3 = torch.stack([wl, wc, wr], dim=2).repeat_interleave(g, dim=0)  # [N*g, num_ws, 3, w_dim]
        pos = PatchPositions(np.repeat(lb, g), np.tile(np.arange(g), n))
        patches = self.synthesis(ws3, pos, noise_mode, generator, self.render_plan())  # [N*g, C, H, pw]
        c, h, pw = patches.shape[1:]
        return patches.reshape(n, g, c, h, pw).permute(0, 2, 3, 1, 4).reshape(n, c, h, g * pw)

    def patches(self, ws3: Tensor, left_border, slot, noise_mode: str = "none",
                generator: torch.Generator | None = None, canonical: bool = True, margin: int = 0,
                span: int = 1) -> Tensor:
        """Render B independent patches: ws3 [B, 3, w_dim] or [B, num_ws, 3, w_dim] -> [B, 3, H, Wp].

        With `margin` > 0 (context rendering), each element is a strip of `span` consecutive patches
        computed together with `margin` context columns each side at every resolution, and ws3 holds
        every anchor those columns reach ([B, (num_ws,) A, w_dim], from the first one):
        [B, 3, H, span * Wp]. A margin of `CONTEXT_MARGIN` makes every column equal what one
        convolution over the whole panorama would give, so strips join without a seam.
        """
        ws3 = ws3.to(self.device, torch.float32)
        if ws3.ndim == 3:
            ws3 = ws3.unsqueeze(1).expand(-1, self.num_ws, -1, -1)
        pos = PatchPositions(np.asarray(left_border, dtype=np.int64).reshape(-1),
                             np.asarray(slot, dtype=np.int64).reshape(-1), canonical=canonical,
                             margin=int(margin), span=int(span))
        return self.synthesis(ws3, pos, noise_mode, generator, self.render_plan())
