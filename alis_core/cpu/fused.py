"""The CPU engine: the synthesis network's fast formulation without gradients, on the CPU.

It computes what `alis_core.generator.SynthesisNetwork` computes on its fast path (NHWC
activations, demodulation and leaky-ReLU gain folded into the weights), from the same modules'
weights, with fewer and cheaper PyTorch operations:
- convolutions through oneDNN with bias and activation inside (inside the low-pass filter's
  depthwise convolution for the upsampling layers), weights reordered once into oneDNN's blocked
  layout; wide float32 3x3 convolutions as Winograd F(4x4, 3x3) or F(2x2, 3x3); bfloat16 upsampling
  convolutions as two polyphase convolutions; small transposed convolutions as one matmul;
- every layer's styles by one matrix product when all layers share their anchors (`style_table`);
- each block's input (features ++ coordinates, SA-AdaIN-scaled) assembled by the block before it,
  as that block computes its output (`_NextInput`);
- toRGB without touching the activations: a patch lies between two anchors, whose styles fold
  into two 3-output weight matrices; one matmul gives both images and the column weights blend them;
- on models large enough (`plan.kernels`), the compiled kernels (`alis_core.kernels`) for what
  oneDNN cannot fuse.
Which implementation each operator takes is the render plan's choice (`alis_core.cpu.plan`).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..context import CHANNELS_LAST, ColumnStyles, RenderContext
from ..layers import (LRELU_ALPHA, LRELU_GAIN, _filter_2d, _version, conv3x3_winograd, upsample2d,
                      winograd_weight)

EPILOGUE_CHUNK_BYTES = 1 << 19  # noise, leaky ReLU and clamp in blocks of rows this large
EPILOGUE_CHUNK_DTYPES = (torch.bfloat16,)  # float32's passes are cheap enough whole


def conv_act(x: Tensor, weight: Tensor, bias: Tensor | None, padding, groups: int = 1,
             act: bool = True, add: Tensor | None = None) -> Tensor:
    """oneDNN convolution (CPU only) with bias and either the leaky ReLU or the addition of `add`
    (a tensor of the output's shape; oneDNN fuses no activation after an addition but ReLU).
    `padding`: one int for both sides, or (rows, columns)."""
    padding = [padding] * 2 if isinstance(padding, int) else list(padding)
    if add is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, weight, bias, padding, [1, 1], [1, 1],
                                                              groups, "add", None, None, [], None)
    attr, scalars = ("leaky_relu", [LRELU_ALPHA]) if act else ("none", [])
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, [1, 1], [1, 1], groups,
                                                   attr, scalars, "")


def leaky_clamp_(x: Tensor, clamp: float | None, noise: Tensor | None = None) -> Tensor:
    """In place: + noise * LRELU_GAIN (noise [B, 1, H, W]), leaky ReLU, then the clamp, on a
    channels-last tensor. A large tensor goes in blocks of rows of one image (about
    EPILOGUE_CHUNK_BYTES each) so that the later passes find their block still in cache."""
    b, c, h, w = x.shape
    rows = max(1, EPILOGUE_CHUNK_BYTES // (w * c * x.element_size()))
    if rows >= h or not x.is_contiguous(memory_format=CHANNELS_LAST) or x.dtype not in EPILOGUE_CHUNK_DTYPES:
        if noise is not None:
            x = x.add_(noise, alpha=LRELU_GAIN)
        x = F.leaky_relu_(x, LRELU_ALPHA)
        return x if clamp is None else x.clamp_(-clamp, clamp)
    v = x.permute(0, 2, 3, 1)  # [B, H, W, C] view: one image's rows are contiguous
    nv = None if noise is None else noise.expand(b, 1, h, w).permute(0, 2, 3, 1)  # [B, H, W, 1]
    for i in range(b):
        for r in range(0, h, rows):
            block = v[i, r: r + rows]
            if nv is not None:
                block.add_(nv[i, r: r + rows], alpha=LRELU_GAIN)
            F.leaky_relu_(block, LRELU_ALPHA)
            if clamp is not None:
                block.clamp_(-clamp, clamp)
    return x


def fold_rgb(styles: Tensor, weight: Tensor) -> Tensor:
    """Anchor styles [B, C, A] folded into toRGB weights [C, 3]: [B, C, A, 3], each anchor's RGB
    weights (one matmul with them gives every anchor's image); contiguous if the styles are."""
    return styles.unsqueeze(3) * weight.unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# Weights derived once per layer (kept in the layer's scratch, emptied when its weights change)

def packed(layer, weight: Tensor, shape, padding=(1, 1), tag: str = "") -> Tensor:
    """`weight` reordered once into oneDNN's blocked layout for inputs of this shape (the reorder
    otherwise runs on every call, a large share of the time of the small, weight-heavy layers). Two
    shapes are kept per weight (a frame and a panorama batch, say); `tag` names a weight derived
    from the layer's (the polyphase halves)."""
    key = (weight.dtype, tuple(shape))
    cache = layer._packed_cache.setdefault(("onednn", tag), OrderedDict())  # emptied when the weights change
    if key not in cache:
        cache[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), list(padding), [1, 1], [1, 1], 1,
                                                              list(shape))
        while len(cache) > 2:
            cache.popitem(last=False)
    return cache[key]


def polyphase_halves(layer, weight: Tensor, shape) -> tuple[Tensor, Tensor]:
    """The polyphase weight [4*O, I, 2, 2] (output channel o*4 + 2a + b: phase row parity a,
    column parity b) split by row parity, phase-major: even output rows need both kernel rows,
    [2*O, I, 2, 2]; odd rows only the second, [2*O, I, 1, 2]. 12 of the 16 taps the single 2x2
    convolution multiplies (9 are nonzero)."""
    key = ("polyphase-halves", weight.dtype)
    if key not in layer._packed_cache:
        i = weight.shape[1]
        k = weight.view(-1, 2, 2, i, 2, 2)  # [O, a, b, I, u, v]
        even = k[:, 0].transpose(0, 1).reshape(-1, i, 2, 2)
        odd = k[:, 1, :, :, 1:].transpose(0, 1).reshape(-1, i, 1, 2)
        layer._packed_cache[key] = tuple(t.contiguous(memory_format=CHANNELS_LAST) for t in (even, odd))
    even, odd = layer._packed_cache[key]
    return packed(layer, even, shape, tag="even"), packed(layer, odd, shape, (0, 1), tag="odd")


def winograd(layer, weight: Tensor, m: int) -> Tensor:
    """The layer's weight in the Winograd domain of F(m x m, 3x3) (`layers.winograd_weight`)."""
    key = ("winograd", m, weight.dtype)
    if key not in layer._packed_cache:  # emptied whenever the prepared weights change
        layer._packed_cache[key] = winograd_weight(weight, m)
    return layer._packed_cache[key]


def deconv_matrix(layer, weight: Tensor) -> Tensor:
    """The transposed convolution's kernel [I, O, 3, 3] as a matrix [I, 3*3*O] ((ky, kx, o) columns)."""
    key = ("matmul", weight.dtype)
    if key not in layer._packed_cache:
        layer._packed_cache[key] = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()
    return layer._packed_cache[key]


def conv_transpose_small(layer, x: Tensor, weight: Tensor) -> Tensor:
    """F.conv_transpose2d(x, weight, stride=2) for inputs of a few pixels: every input pixel times
    the whole kernel in one matmul, then nine strided additions. NHWC in and out."""
    b, i, h, w = x.shape
    o = weight.shape[1]
    y = (x.permute(0, 2, 3, 1).reshape(-1, i) @ deconv_matrix(layer, weight)).view(b, h, w, 3, 3, o)
    out = torch.zeros([b, 2 * h + 1, 2 * w + 1, o], dtype=x.dtype)
    for ky in range(3):
        for kx in range(3):
            out[:, ky: ky + 2 * h: 2, kx: kx + 2 * w: 2] += y[:, :, :, ky, kx]
    return out.permute(0, 3, 1, 2)


def style_table(net) -> tuple[Tensor, Tensor, dict[int, slice], tuple[int, Tensor]]:
    """Every affine layer's scaled weights side by side: (weights [w_dim, sum C], biases [1, sum C],
    id(module) -> its columns, (the first toRGB column, the toRGB weights [sum C_rgb, 3])); the
    toRGB layers come last, their weight gain folded in. Cached in `net._table` while the weights
    are frozen (rebuilt when any changes)."""
    blocks = net.blocks
    rgb = [block.torgb for block in blocks]
    modules = [m for block in blocks for m in (block.input if block.res == 4 else block.conv0, block.conv1)] + rgb
    key = tuple((_version(m.affine.weight), _version(m.affine.bias)) for m in modules) + tuple(
        _version(m.weight) for m in rgb) + (net.b4.conv1.weight.device, torch.is_inference_mode_enabled())
    if net._table.get("key") != key:
        ws, bs, slices, start = [], [], {}, 0
        for m in modules:
            wt, b = m.affine.scaled(torch.float32, keep=False)  # (the table is the copy kept)
            gain = getattr(m, "weight_gain", 1.0)
            ws.append(wt * gain if gain != 1 else wt)
            bs.append(b * gain if gain != 1 else b)
            slices[id(m)] = slice(start, start + wt.shape[1])
            start += wt.shape[1]
        rgb_weight = torch.cat([m.rgb_weight for m in rgb]).float()  # [sum C_rgb, 3]
        net._table.update(key=key, value=(torch.cat(ws, dim=1), torch.cat(bs, dim=1), slices,
                                          (slices[id(rgb[0])].start, rgb_weight)))
    return net._table["value"]


# ---------------------------------------------------------------------------------------------
# One pass

@dataclass
class _NextInput:
    """A block's input assembled by the block before it: `buffer` [B, C + D, h, w] (channels-last)
    holds the modulated coordinate features in its last D channels, and its first C receive the
    previous block's output times `scale`'s first C channels ([B, C + D, 1, w]: the conv0
    modulation) as that output is computed."""

    buffer: Tensor
    scale: Tensor
    written: bool = False


class _Pass:
    """The engine's state of one pass: the model's render context and what the style table gives."""

    def __init__(self, ctx: RenderContext):
        self.ctx, self.plan = ctx, ctx.plan
        self.table_rgb: tuple[int, Tensor] | None = None  # where the toRGB layers' columns start, their weights
        self._ends: dict[bytes, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        self._rgb: dict = {}

    def table_ends(self, cols: ColumnStyles) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The table's rows at each element's two anchors (`cols.single`): [B, sum C] each, then the
        same as [B, 1, sum C]."""
        key = cols.k_key  # every resolution of a patch lies between the same anchors: index the table once
        if key not in self._ends:
            sa, sb = cols.ends(self.ctx.table)  # [B, sum C] each
            self._ends[key] = (sa, sb, sa.unsqueeze(1), sb.unsqueeze(1))
        return self._ends[key]

    def modulation(self, module, w3: Tensor, res: int, width: int, dtype) -> Tensor:
        """SA-AdaIN input scales [B, C, 1, width] (`dtype`, channels-last memory) of a layer whose
        inputs are [B, C, res, width]. Between two anchors, [B, width, C] from the two ends."""
        ctx = self.ctx
        cols = ctx.column_styles(res, width)
        if not cols.single:
            return ctx.modulation(module, w3, res, width, dtype)
        sl = ctx.table_slices.get(id(module))
        if sl is None:
            sa, sb = (e.unsqueeze(1) for e in cols.ends(module.styles(w3)))
        else:
            sa, sb = (e[:, :, sl] for e in self.table_ends(cols)[2:])
        b, _, c = sa.shape
        mod = torch.empty([b, width, c], dtype=dtype, device=sa.device)
        torch.addcmul(sa * cols.coef_a_t, sb, cols.coef_b_t, out=mod)
        return mod.view(b, 1, width, c).permute(0, 3, 1, 2)

    def rgb_weights(self, module, w3: Tensor, cols: ColumnStyles, dtype) -> Tensor:
        """A toRGB layer's weights with the styles at each element's two anchors folded in (`single`
        only): [B, C, 6] (`dtype`), from the pass's table for every toRGB layer at once if it has one."""
        sl = self.ctx.table_slices.get(id(module))
        if sl is None:
            ends = torch.stack(cols.ends(module.styles(w3)), dim=2)  # [B, C, 2]
            return fold_rgb(ends, module.rgb_weight).to(dtype).view(ends.shape[0], -1, 6)
        start, weight = self.table_rgb
        key = (cols.k_key, dtype)
        if key not in self._rgb:
            sa, sb = self.table_ends(cols)[:2]
            ends = torch.stack([sa[:, start:], sb[:, start:]], dim=2)  # [B, C, 2]: every toRGB layer's channels
            self._rgb[key] = fold_rgb(ends, weight).to(dtype).view(ends.shape[0], -1, 6)
        return self._rgb[key][:, sl.start - start: sl.stop - start]

    def input_buffer(self, block, ws0: Tensor, shape, dtype) -> _NextInput:
        """`block`'s conv0 input for the previous block's output of `shape` [B, C, h, w]: a
        [B, C + D, h, w] buffer with the modulated coordinate features written into its last D
        channels, and the conv0 modulation [B, C + D, 1, w] for the first C."""
        b, c, h, w = shape
        coords = self.ctx.coords(block.res, h, w, block.basis, block.use_cosine, stacked=True)  # [B, D, h, w]
        buf = torch.empty([b, c + coords.shape[1], h, w], dtype=dtype, device=coords.device,
                          memory_format=CHANNELS_LAST)
        mod = self.modulation(block.conv0, ws0, h, w, dtype)
        torch.mul(coords, mod[:, c:], out=buf[:, c:])
        return _NextInput(buf, mod)


def synthesize(net, ws3: Tensor, ctx: RenderContext) -> Tensor:
    """The synthesis network's pass (`SynthesisNetwork.forward`'s fast formulation) on the CPU
    without gradients: ws3 [B, num_ws, A, w_dim] -> [B, C, H, span * Wp]."""
    p = _Pass(ctx)
    if torch.equal(ws3, ws3[:, :1].expand_as(ws3)):
        # every layer has the same anchors (a frame or panorama of [N, w_dim] latents): all the
        # styles by one matrix product instead of one per layer
        wt, b, ctx.table_slices, p.table_rgb = style_table(net)
        n, a, w_dim = ws3.shape[0], ws3.shape[2], ws3.shape[3]
        # a frame's patches share their anchors: one element's rows (the product reads all the affine weights)
        w = ws3[:1, 0] if n > 1 and torch.equal(ws3[1:, 0], ws3[:1, 0].expand(n - 1, a, w_dim)) else ws3[:, 0]
        ctx.table = torch.addmm(b, w.reshape(-1, w_dim), wt).view(w.shape[0], a, -1).expand(n, a, -1)
    x = img = prepared = None
    blocks = net.blocks
    for i, block in enumerate(blocks):
        # each block's input is assembled as the block before computes it (not across context
        # columns, which the next block crops first)
        nxt = blocks[i + 1] if not ctx.pos.margin and i + 1 < len(blocks) else None
        x, img, prepared = _block(p, block, x, img, ws3[:, 2 * i: 2 * i + 3], prepared, nxt,
                                  None if nxt is None else ws3[:, 2 * i + 2])
    m = ctx.pos.margin
    return img[:, :, :, m: img.shape[3] - m] if m else img


def _block(p: _Pass, block, x: Tensor | None, img: Tensor | None, ws3: Tensor, prepared: _NextInput | None,
           nxt, ws_nxt: Tensor | None) -> tuple[Tensor, Tensor, _NextInput | None]:
    """`SynthesisBlock.forward`: ws3 [B, 3 layers, A anchors, w_dim] -> (x, img, the next block's
    input if `nxt` is given: its conv0's anchors ws_nxt [B, A, w_dim])."""
    ctx = p.ctx
    also = None
    if block.res == 4:
        x = block.input(ws3[:, 0], ctx).to(ctx.dtype).contiguous(memory_format=CHANNELS_LAST)  # [B, C, 4, W]
        if nxt is not None:
            also = p.input_buffer(nxt, ws_nxt, (x.shape[0], block.conv1.bias.shape[0]) + x.shape[2:], x.dtype)
        x = _layer(p, block.conv1, x, ws3[:, 1], also=also)
    else:
        if ctx.pos.margin:  # the upsampling doubles the context columns: keep half of them
            half = ctx.pos.margin // 2
            x, img = x[:, :, :, half: x.shape[3] - half], img[:, :, :, half: img.shape[3] - half]
        b, c, h, w = x.shape
        if prepared is None:  # assemble and modulate in one pass
            prepared = p.input_buffer(block, ws3[:, 0], x.shape, x.dtype)
            torch.mul(x, prepared.scale[:, :c], out=prepared.buffer[:, :c])
        scale = p.modulation(block.conv1, ws3[:, 1], 2 * h, 2 * w, x.dtype)  # conv0 scales its output for conv1
        x = _layer(p, block.conv0, prepared.buffer, ws3[:, 0], True, scale)
        if nxt is not None:
            also = p.input_buffer(nxt, ws_nxt, x.shape, x.dtype)
        x = _layer(p, block.conv1, x, ws3[:, 1], premodulated=True, also=also)
    return x, _torgb(p, block.torgb, x, ws3[:, 2], img), also


def _layer(p: _Pass, layer, x: Tensor, w3: Tensor, premodulated: bool = False, out_scale: Tensor | None = None,
           also: _NextInput | None = None) -> Tensor:
    """`SynthesisLayer.forward`, overwriting x: x [B, I, h, w], w3 [B, A, w_dim] -> [B, O, h * up, w * up].
    `premodulated`: x is already scaled by the layer's modulation. `out_scale`: the next layer's
    modulation, applied to the output. `also`: the next block's input buffer, whose first O channels
    receive the output times their scale."""
    if not premodulated:
        x = x.mul_(p.modulation(layer, w3, x.shape[2], x.shape[3], x.dtype))
    weight, bias, _ = layer.prepared_weights(x.dtype, True, p.plan.polyphase(x.dtype))
    x = _conv_layer(p, layer, x, weight, bias, out_scale, also)
    if also is not None and not also.written:
        o = x.shape[1]
        torch.mul(x, also.scale[:, :o], out=also.buffer[:, :o])
    return x


def _epilogue(layer, x: Tensor, act: bool, noise: Tensor | None, out_scale: Tensor | None,
              also: _NextInput | None) -> Tensor:
    """The compiled bfloat16 epilogue (`kernels.epilogue_bf16_`), writing `also` in the same pass."""
    if also is None:
        return kernels.epilogue_bf16_(x, layer.conv_clamp, act, noise, out_scale, LRELU_ALPHA)
    x = kernels.epilogue_bf16_(x, layer.conv_clamp, act, noise, out_scale, LRELU_ALPHA, (also.buffer, also.scale))
    also.written = True
    return x


def _conv_layer(p: _Pass, layer, x: Tensor, weight: Tensor, bias: Tensor, out_scale: Tensor | None = None,
                also: _NextInput | None = None) -> Tensor:
    """The modulated input x's convolution, noise, bias, leaky ReLU and clamp (and `out_scale`):
    bias and leaky ReLU inside the oneDNN convolution (inside the low-pass filter's convolution for
    the upsampling layers). With `plan.kernels`: in bfloat16, everything oneDNN cannot fuse in one
    pass after the convolution goes to the compiled kernels; in float32, their Winograd convolution
    and their upsampling tail."""
    plan, up = p.plan, layer.up
    b, _, h, w = x.shape
    reduced = x.dtype != torch.float32
    # reduced precision: the noise comes with its gain applied, for the convolution to add
    noise = p.ctx.noise(layer, (b, 1, h * up, w * up), LRELU_GAIN if reduced else 1.0)
    act = noise is None  # noise goes in between the bias and the activation
    add = gained = None
    use_kernels = plan.kernels_bf16(x)
    if noise is not None and reduced:
        gained, noise = noise, None  # [B, 1, H, W]
        if not use_kernels:  # bfloat16 element-wise passes are slow on CPUs: let the convolution add the
            # noise (in float32 the separate in-place addition is faster)
            add = gained.expand(b, bias.shape[0], h * up, w * up)
    if up == 1 and plan.kernels_winograd(x, weight):  # float32: the epilogue in its output transform
        x = kernels.conv3x3_winograd_f32(x, winograd(layer, weight, 4), bias, noise, LRELU_GAIN, layer.conv_clamp,
                                         LRELU_ALPHA)
        return x if out_scale is None else x.mul_(out_scale)
    tile = plan.winograd_tile(x, weight) if up == 1 else 0
    if tile:
        x = F.leaky_relu_(conv3x3_winograd(x, winograd(layer, weight, tile), bias, noise, LRELU_GAIN), LRELU_ALPHA)
        noise = None
    elif up == 1:
        if use_kernels and gained is not None:  # the kernel's pass adds the noise: no [B, O, H, W] copy of it
            x = conv_act(x, packed(layer, weight, x.shape), bias, 1, act=False)
            return _epilogue(layer, x, True, gained, out_scale, also)
        x = conv_act(x, packed(layer, weight, x.shape), bias, 1, act=act, add=add)
    else:
        o = bias.shape[0]
        filt = _filter_2d(o, 4.0, x.dtype, "cpu")  # [O, 1, 4, 4]: already oneDNN's layout
        if weight.shape[2] == 2:  # polyphase: the 4 phases by two convolutions, shuffled into a buffer
            even, odd = polyphase_halves(layer, weight, x.shape)
            y0 = conv_act(x, even, None, (1, 1), act=False)  # [B, 2*O, h+1, w+1]: phases (0, b)
            y1 = conv_act(x, odd, None, (0, 1), act=False)  # [B, 2*O, h, w+1]: phases (1, b)
            if use_kernels:  # interleave, filter, bias, noise, activation, clamp, scale: one pass
                if ("bias32",) not in layer._packed_cache:
                    layer._packed_cache["bias32",] = bias.float()
                return kernels.upsample_epilogue_bf16(y0, y1, layer._packed_cache["bias32",], layer.conv_clamp,
                                                      gained, out_scale, LRELU_ALPHA)
            buf = torch.empty([b, o, 2 * h + 3, 2 * w + 3], dtype=x.dtype, memory_format=CHANNELS_LAST)
            bv = buf.permute(0, 2, 3, 1)  # [B, H, W, O] view of the NHWC memory
            bv[:, 0].zero_()
            bv[:, :, 0].zero_()
            bv[:, -1].zero_()  # phase (1, b) of row h reads only the zero padding
            phases = bv[:, 1:, 1:].view(b, h + 1, 2, w + 1, 2, o)
            phases[:, :, 0].copy_(y0.permute(0, 2, 3, 1).view(b, h + 1, w + 1, 2, o))
            phases[:, :h, 1].copy_(y1.permute(0, 2, 3, 1).view(b, h, w + 1, 2, o))
            x = conv_act(buf, filt, bias, 0, groups=o, act=act, add=add)
        else:
            small = b * h * w <= plan.small_deconv_pixels  # one matmul beats oneDNN's deconvolution there
            if plan.kernels_upsampling(x):  # the products, then everything else in one compiled pass
                if small:  # (which also sums the products into the transposed convolution's output)
                    return kernels.deconv_up2_f32(x, deconv_matrix(layer, weight), bias, layer.conv_clamp, noise,
                                                  LRELU_GAIN, out_scale, LRELU_ALPHA)
                return kernels.upsample_epilogue_f32(F.conv_transpose2d(x, weight, stride=2), bias, layer.conv_clamp,
                                                     noise, LRELU_GAIN, out_scale, LRELU_ALPHA)
            y = conv_transpose_small(layer, x, weight) if small else F.conv_transpose2d(x, weight, stride=2)
            x = conv_act(y, filt, bias, 1, groups=o, act=act, add=add)
    if use_kernels and kernels.enabled_for(x):  # the activation (unless fused), clamp and scale: one pass
        return _epilogue(layer, x, not act, None, out_scale, also)
    if noise is not None or add is not None:  # the activation was not fused into the convolution
        x = leaky_clamp_(x, layer.conv_clamp, noise)
    elif layer.conv_clamp is not None:
        x = x.clamp_(-layer.conv_clamp, layer.conv_clamp)
    return x if out_scale is None else x.mul_(out_scale)


def _torgb(p: _Pass, module, x: Tensor, w3: Tensor, img: Tensor | None) -> Tensor:
    """`ToRGB.forward` without scaling x: x [B, C, h, w] -> the block's skip image, float32
    [B, 3, h, w]. The styles at the anchors fold into one weight matrix per anchor, one matmul per
    element gives every anchor's RGB image, and the per-column weights (SA-AdaIN) blend them."""
    ctx, plan = p.ctx, p.plan
    cols = ctx.column_styles(x.shape[2], x.shape[3])
    b, c, h, w = x.shape
    # the blend, clamp and skip sum in one compiled pass
    kernel = plan.kernels and x.dtype in (torch.bfloat16, torch.float32) and not torch.is_autocast_enabled("cpu")
    if cols.single:  # a patch: between two anchors
        wm = p.rgb_weights(module, w3, cols, x.dtype)  # [B, C, 6]
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), wm).view(b, h, w, 6)
        if kernel:
            return kernels.torgb_skip(y, cols.coef_a, cols.coef_b, module.bias, module.conv_clamp, img)
        y = y.float()
        ca, cb = cols.coef_a[:, :, :, None], cols.coef_b[:, :, :, None]  # [B, 1, w, 1]
        y = torch.addcmul(torch.addcmul(module.bias, y[..., :3], ca), y[..., 3:], cb).permute(0, 3, 1, 2)
        if module.conv_clamp is not None:
            y = y.clamp_(-module.conv_clamp, module.conv_clamp)
    else:  # a strip across anchors (context rendering)
        styles = ctx.styles(module, w3)  # [B, A, C]
        a = styles.shape[1]
        if kernel and a <= plan.torgb_kernel_max_anchors:  # every anchor's RGB by one product
            wm = fold_rgb(styles.transpose(1, 2), module.rgb_weight).to(x.dtype).reshape(b, c, 3 * a)
            y = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), wm).view(b, h, w, 3 * a)
            return kernels.torgb_skip(y, cols.coef_a, cols.coef_b, module.bias, module.conv_clamp, img, cols.k)
        y = _torgb_strip(module, x, styles, cols)
    return y if img is None else upsample2d(img) + y


def _torgb_strip(module, x: Tensor, styles: Tensor, cols: ColumnStyles) -> Tensor:
    """toRGB for strips across anchors (context rendering), run by run of columns:
    x [B, C, h, w] (NHWC memory), styles [B, A, C] -> [B, 3, h, w] float32 (NHWC memory)."""
    b, c, h, w = x.shape
    wm = fold_rgb(styles.transpose(1, 2), module.rgb_weight).to(x.dtype)  # [B, C, A, 3]
    xs = x.permute(0, 2, 3, 1)  # [B, h, w, C] view of the NHWC memory
    y = torch.empty([b, h, w, 3])
    ca, cb = cols.coef_a[:, 0, :, None], cols.coef_b[:, 0, :, None]  # [B, w, 1]
    for i, j0, j1, k in cols.runs:
        wr = wm[i, :, k: k + 2].reshape(c, 6)
        if x.dtype == torch.float32 or 4 * (j1 - j0) < w:  # [h, n, C] @ [C, 6] from the strided columns
            yr = torch.matmul(xs[i, :, j0:j1], wr).view(h, j1 - j0, 2, 3)
        else:  # strided bfloat16 matmuls are slow: all columns (contiguous), then this run's
            yr = torch.matmul(xs[i].reshape(h * w, c), wr).view(h, w, 2, 3)[:, j0:j1]
        yr = yr.float()  # the blend is faster in float32 than in bfloat16 mixed with float32
        torch.addcmul(torch.addcmul(module.bias, yr[..., 0, :], ca[i, j0:j1]), yr[..., 1, :], cb[i, j0:j1],
                      out=y[i, :, j0:j1])
    y = y.permute(0, 3, 1, 2)  # [B, 3, h, w]
    return y if module.conv_clamp is None else y.clamp_(-module.conv_clamp, module.conv_clamp)
