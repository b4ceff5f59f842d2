"""The optional compiled kernels of the bfloat16 CPU path (`alis_core.kernels`, numba) against the
PyTorch operations they replace. CI installs numba; without it these tests skip and the PyTorch
path (tested everywhere else) is what runs."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import alis_core
from alis_core import kernels
from alis_core.context import CHANNELS_LAST
from alis_core.cpu.fused import conv_act
from alis_core.layers import _filter_2d

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba (the `fast` extra) is not installed")
BF16 = torch.bfloat16


def _bf16_nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.to(BF16).contiguous(memory_format=CHANNELS_LAST)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns, NaNs anywhere as long as both have them (their payloads may differ)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.view(torch.int16)[~nan], b.view(torch.int16)[~nan])


@pytest.mark.parametrize("act", [True, False])
@pytest.mark.parametrize("clamp", [256.0, None])
@pytest.mark.parametrize("noise", [None, "per image", "shared"])
@pytest.mark.parametrize("scaled", [False, True])
def test_epilogue_equals_the_pytorch_operations_bit_for_bit(act, clamp, noise, scaled):
    g = torch.Generator().manual_seed(0)
    b, c, h, w = 3, 24, 5, 7
    x = _bf16_nhwc(400 * torch.randn(b, c, h, w, generator=g))  # the clamp binds on both sides
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, -3e38, 1e-40])
    x.permute(0, 2, 3, 1).reshape(-1)[: len(special)] = special.to(BF16)
    nz = None if noise is None else (50 * torch.randn(b if noise == "per image" else 1, 1, h, w, generator=g)).to(BF16)
    sc = _bf16_nhwc(torch.randn(b, c, 1, w, generator=g)) if scaled else None
    ref = x.clone()
    if nz is not None:
        ref.add_(nz)
    if act:
        F.leaky_relu_(ref, 0.2)
    if clamp is not None:
        ref.clamp_(-clamp, clamp)
    if sc is not None:
        ref.mul_(sc)
    y = x.clone()
    out = kernels.epilogue_bf16_(y, clamp, act, nz, sc)
    assert out is y and y.is_contiguous(memory_format=CHANNELS_LAST)  # in place
    assert _same_bits(y, ref)
    if act or clamp or nz is not None or sc is not None:
        assert not _same_bits(x, ref)  # there was something to do


@pytest.mark.parametrize("noise", [None, "shared"])
def test_epilogue_also_writes_the_next_blocks_modulated_input(noise):
    """`also`: the same pass writes the result times the next block's modulation into the first
    channels of its input buffer (bit for bit `torch.mul`), leaving the other channels alone."""
    g = torch.Generator().manual_seed(1)
    b, c, d, h, w = 2, 16, 5, 4, 6
    x = _bf16_nhwc(3 * torch.randn(b, c, h, w, generator=g))
    nz = None if noise is None else torch.randn(1, 1, h, w, generator=g).to(BF16)
    buf = _bf16_nhwc(torch.full((b, c + d, h, w), 7.0))
    mod = _bf16_nhwc(torch.randn(b, c + d, 1, w, generator=g))
    ref = kernels.epilogue_bf16_(x.clone(), 1.0, True, nz)
    out = kernels.epilogue_bf16_(x, 1.0, True, nz, also=(buf, mod))
    assert _same_bits(out, ref)
    assert _same_bits(buf[:, :c], torch.mul(ref, mod[:, :c])) and (buf[:, c:] == 7).all()
    with pytest.raises(ValueError, match="also must be"):
        kernels.epilogue_bf16_(x, 1.0, also=(buf[:, :c - 1].contiguous(memory_format=CHANNELS_LAST), mod))
    with pytest.raises(ValueError, match="channels-last"):
        kernels.epilogue_bf16_(x, 1.0, also=(buf.contiguous(), mod))


def _interleave_reference(even, odd, bias, clamp, noise, scale):
    """The upsampling layer's second half in float64 from the same bfloat16 phases."""
    b, c2, h1, w1 = even.shape
    c, h, w = c2 // 2, h1 - 1, w1 - 1
    grid = torch.zeros(b, 2 * h + 3, 2 * w + 3, c, dtype=torch.float64)
    grid[:, 1::2][:, : h + 1, 1:] = even.double().permute(0, 2, 3, 1).reshape(b, h + 1, 2 * w + 2, c)
    grid[:, 2::2][:, :h, 1:] = odd.double().permute(0, 2, 3, 1).reshape(b, h, 2 * w + 2, c)
    y = F.conv2d(grid.permute(0, 3, 1, 2), _filter_2d(c, 4.0, torch.float64, "cpu"), groups=c)
    y = y + bias.double().view(1, -1, 1, 1) + (0 if noise is None else noise.double())
    y = F.leaky_relu(y, 0.2)
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y if scale is None else y * scale.double()


@pytest.mark.parametrize("shape,block", [((2, 4, 3, 16), 8), ((1, 1, 1, 5), 8), ((3, 6, 5, 8), 1), ((2, 7, 2, 64), 3)])
@pytest.mark.parametrize("with_noise", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_upsample_epilogue_equals_interleave_filter_and_epilogue(shape, block, with_noise, scaled):
    """Within one bfloat16 rounding of the exact result everywhere (the kernel sums in float32 and
    rounds once), and within a rounding of the PyTorch path almost everywhere."""
    b, h, w, c = shape
    g = torch.Generator().manual_seed(1)
    even = _bf16_nhwc(300 * torch.randn(b, 2 * c, h + 1, w + 1, generator=g))
    odd = _bf16_nhwc(300 * torch.randn(b, 2 * c, h, w + 1, generator=g))
    bias = torch.randn(c, generator=g).to(BF16)
    noise = (3 * torch.randn(b, 1, 2 * h, 2 * w, generator=g)).to(BF16) if with_noise else None
    scale = _bf16_nhwc(torch.randn(b, c, 1, 2 * w, generator=g)) if scaled else None
    out = kernels.upsample_epilogue_bf16(even, odd, bias, 256.0, noise, scale, block=block)
    assert out.shape == (b, c, 2 * h, 2 * w) and out.is_contiguous(memory_format=CHANNELS_LAST)
    ref = _interleave_reference(even, odd, bias, 256.0, noise, scale)
    assert _interleave_reference(even, odd, bias, None, noise, None).abs().max() > 256  # the clamp bound
    err = (out.double() - ref).abs()
    assert (err <= ref.abs() * 2 ** -8 + 1e-5 * ref.abs().max()).all()
    assert err.max() > 0  # bfloat16 did round


def test_upsampling_layer_with_kernels_matches_the_pytorch_path(tiny_G, monkeypatch):
    """Whole bfloat16 frames: the kernels ran, and the frames agree to bfloat16 precision with the
    PyTorch path's (which rounds at other places: the noise inside oneDNN's convolution, every
    step of the upsampling layers)."""
    monkeypatch.setattr(alis_core.cpu.plan, "KERNEL_MIN_WORK", 0)  # the tiny model too
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast, G.compute_dtype = True, BF16
    w = alis_core.sample_anchors(G, 3, seed=2)
    calls = []
    for name in ("epilogue_bf16_", "upsample_epilogue_bf16", "torgb_skip"):
        f = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, f=f, name=name, **k: calls.append(name) or f(*a, **k))
    impl = kernels._load()
    frames = {}
    with torch.no_grad():
        for path in ("kernels", "pytorch"):
            monkeypatch.setattr(kernels, "_impl", impl if path == "kernels" else False)
            frames[path] = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="const")
    n_blocks = len(G.config.block_resolutions)
    assert calls.count("upsample_epilogue_bf16") == n_blocks - 1 and calls.count("epilogue_bf16_") == n_blocks
    assert calls.count("torgb_skip") == n_blocks
    a, b = frames["kernels"], frames["pytorch"]
    assert (a - b).abs().max() <= 0.03 * b.abs().max() and (a - b).abs().mean() <= 0.003 * b.abs().mean()


def test_environment_switch_and_refusals(monkeypatch):
    monkeypatch.setattr(kernels, "_impl", None)
    monkeypatch.setenv(kernels.ENV, "0")
    assert not kernels.available()
    assert not kernels.enabled_for(torch.zeros(1, 1, 1, 1, dtype=BF16))
    monkeypatch.setattr(kernels, "_impl", None)
    monkeypatch.delenv(kernels.ENV)
    assert kernels.available()
    x = torch.zeros(1, 2, 3, 4, dtype=BF16)
    assert not kernels.enabled_for(x)  # NCHW memory
    assert not kernels.enabled_for(x.float().contiguous(memory_format=CHANNELS_LAST))
    with pytest.raises(ValueError, match="scale must be"):
        kernels.epilogue_bf16_(x.contiguous(memory_format=CHANNELS_LAST), 1.0, scale=torch.ones(1, 2, 1, 3))
    with pytest.raises(ValueError, match="even must be"):
        kernels.upsample_epilogue_bf16(_bf16_nhwc(torch.zeros(1, 4, 2, 3)), _bf16_nhwc(torch.zeros(1, 4, 2, 3)),
                                       torch.zeros(2), None)
    with pytest.raises(ValueError, match="dense"):
        kernels._flat(torch.zeros(4, 8, dtype=BF16)[:, ::2])
    with pytest.raises(ValueError, match="channels-last"):
        kernels.epilogue_bf16_(torch.zeros(1, 2, 3, 4, dtype=BF16), 1.0)
    with pytest.raises(ValueError, match="channels-last"):
        kernels.upsample_epilogue_bf16(torch.zeros(1, 4, 3, 3, dtype=BF16), torch.zeros(1, 4, 2, 3, dtype=BF16),
                                       torch.zeros(2), None)
    with pytest.raises(ValueError, match="y must be"):
        kernels.torgb_skip(torch.zeros(1, 2, 2, 3), torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(3), None,
                           None)
    with pytest.raises(ValueError, match="coef_a and coef_b must be"):
        kernels.torgb_skip(torch.zeros(4, 2, 8, 6), torch.ones(1, 1, 8), torch.zeros(1, 1, 8), torch.zeros(3), None,
                           None)
    with pytest.raises(ValueError, match="say which"):
        kernels.torgb_skip(torch.zeros(1, 2, 2, 9), torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(3), None,
                           None)
    with pytest.raises(ValueError, match="left must be"):
        kernels.torgb_skip(torch.zeros(1, 2, 2, 9), torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(3), None,
                           None, torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="prev must be"):
        kernels.torgb_skip(torch.zeros(1, 2, 2, 6), torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(3), None,
                           torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("dtype", [BF16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 4, 6), (3, 16, 10)])
@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("clamp", [0.8, None])
@pytest.mark.parametrize("anchors", [2, 4])
def test_torgb_skip_equals_blend_clamp_and_the_upsampled_skip_image(dtype, shape, with_prev, clamp, anchors):
    """The fused toRGB layer's end: the RGB by the styles of the anchors on each column's left and
    right blended by the column weights, + bias, clamped, plus the previous block's image through
    `layers.upsample2d` (float64 reference). Two anchors: a patch; more: a strip across anchors."""
    from alis_core.layers import upsample2d
    b, h, w = shape
    g = torch.Generator().manual_seed(h * w + anchors)
    y = torch.randn(b, h, w, 3 * anchors, generator=g).to(dtype)
    ca = torch.rand(b, 1, w, generator=g)
    cb, bias = 1 - ca, torch.randn(3, generator=g)
    prev = torch.randn(b, 3, h // 2, w // 2, generator=g) if with_prev else None
    left = None if anchors == 2 else torch.randint(0, anchors - 1, (b, w), generator=g)
    k = torch.zeros(b, w, dtype=torch.int64) if left is None else left
    y64 = y.double().view(b, h, w, anchors, 3)
    rows = torch.arange(b)[:, None, None]
    cols = torch.arange(w)[None, None, :]
    ya = y64[rows, torch.arange(h)[None, :, None], cols, k[:, None, :]]  # [B, h, w, 3]
    yb = y64[rows, torch.arange(h)[None, :, None], cols, k[:, None, :] + 1]
    ref = (bias.double() + ya * ca[..., None].double() + yb * cb[..., None].double()).permute(0, 3, 1, 2)
    if clamp is not None:
        assert (ref.abs() > clamp).any()  # the clamp matters
        ref = ref.clamp(-clamp, clamp)
    if with_prev:
        ref = ref + upsample2d(prev.double())
    out = kernels.torgb_skip(y, ca, cb, bias, clamp, prev, left)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=CHANNELS_LAST)
    assert (out.double() - ref).abs().max() <= 1e-5


def test_conv_act_leaves_the_kernels_a_channels_last_tensor():
    """What the fused path hands the kernels: oneDNN's outputs in channels-last memory (else the
    PyTorch path would silently run)."""
    x = _bf16_nhwc(torch.randn(1, 8, 6, 5))
    y = conv_act(x, _bf16_nhwc(torch.randn(16, 8, 2, 2)), None, (1, 1), act=False)
    assert kernels.enabled_for(y)


# float32: Winograd F(4x4, 3x3) with compiled transforms, and the upsampling layers after their products

@pytest.mark.parametrize("shape", [(1, 3, 5, 4, 8), (2, 16, 8, 12, 20), (3, 7, 9, 8, 4)])
@pytest.mark.parametrize("noise", [None, "per image", "shared"])
@pytest.mark.parametrize("chunk", ["whole", "one tile row"])
def test_winograd_f32_equals_the_direct_convolution(shape, noise, chunk, monkeypatch):
    from alis_core.layers import winograd_weight
    b, c, o, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=g).contiguous(memory_format=CHANNELS_LAST)
    weight, bias = torch.randn(o, c, 3, 3, generator=g), torch.randn(o, generator=g)
    nz = None if noise is None else torch.randn(b if noise == "per image" else 1, 1, h, w, generator=g)
    if chunk != "whole":
        monkeypatch.setattr(kernels, "WINOGRAD_CHUNK_BYTES", 1)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1) + (0 if nz is None else 1.4 * nz.double())
    ref = F.leaky_relu(ref, 0.2).clamp(-2, 2)
    out = kernels.conv3x3_winograd_f32(x, winograd_weight(weight, 4), bias, nz, 1.4, 2.0)
    assert out.shape == (b, o, h, w) and out.is_contiguous(memory_format=CHANNELS_LAST)
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max() * c  # F(4x4)'s float32 error grows with I
    assert (ref.abs() == 2).any() and (ref < 0).any()  # the clamp and the activation mattered
    with pytest.raises(ValueError, match="multiples of 4|4m"):
        kernels.conv3x3_winograd_f32(x[:, :, :, :3], winograd_weight(weight, 4), bias)


def _upsampled_reference(x, weight_t, bias, clamp, noise, gain, scale):
    from alis_core.layers import conv_transpose3x3_up2
    y = conv_transpose3x3_up2(x.double(), weight_t.double()) + bias.double().view(1, -1, 1, 1)
    y = F.leaky_relu(y + (0 if noise is None else gain * noise.double()), 0.2).clamp(-clamp, clamp)
    return y if scale is None else y * scale.double()


@pytest.mark.parametrize("shape", [(2, 6, 16, 3, 5), (1, 5, 8, 1, 1), (3, 7, 5, 4, 2), (2, 4, 3, 9, 4)])
@pytest.mark.parametrize("extras", ["none", "noise", "noise and scale"])
def test_float32_upsampling_kernels_equal_the_layer(shape, extras, monkeypatch):
    """deconv_up2_f32 (products, then the rest compiled) in several chunkings and blocks, and
    upsample_epilogue_f32 after PyTorch's transposed convolution, against float64."""
    b, i, o, h, w = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, i, h, w, generator=g).contiguous(memory_format=CHANNELS_LAST)
    weight_t, bias = 3 * torch.randn(i, o, 3, 3, generator=g), torch.randn(o, generator=g)
    noise = torch.randn(b, 1, 2 * h, 2 * w, generator=g) if extras != "none" else None
    scale = torch.randn(b, o, 1, 2 * w, generator=g) if extras == "noise and scale" else None
    clamp = 0.7 * float(_upsampled_reference(x, weight_t, bias, float("inf"), noise, 1.3, None).abs().max())
    ref = _upsampled_reference(x, weight_t, bias, clamp, noise, 1.3, scale)
    tol = 1e-6 * ref.abs().max()
    for block, chunk in ((1, 16 << 20), (3, 16 << 20), (8, 1), (2, w * 9 * o * 4 * 4)):
        monkeypatch.setattr(kernels, "DECONV_CHUNK_BYTES", chunk)
        out = kernels.deconv_up2_f32(x, weight_t.permute(0, 2, 3, 1).reshape(i, -1), bias, clamp, noise, 1.3, scale,
                                     block=block)
        assert out.shape == (b, o, 2 * h, 2 * w) and (out.double() - ref).abs().max() <= tol
    y = F.conv_transpose2d(x, weight_t, stride=2)
    for block in (1, 8):
        out = kernels.upsample_epilogue_f32(y, bias, clamp, noise, 1.3, scale, block=block)
        assert (out.double() - ref).abs().max() <= tol
    assert scale is not None or (ref.abs() == clamp).any()  # the clamp mattered


def test_float32_frames_with_kernels_match_the_pytorch_path(tiny_G, monkeypatch):
    """Every float32 layer the kernels can take (thresholds off) against the PyTorch path."""
    for name in ("KERNEL_MIN_WORK", "KERNEL_WINOGRAD_MIN_CHANNELS", "KERNEL_WINOGRAD_MIN_PIXELS",
                 "KERNEL_UPSAMPLING_MIN_PIXELS"):
        monkeypatch.setattr(alis_core.cpu.plan, name, 0)
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)
    calls = []
    for name in ("conv3x3_winograd_f32", "deconv_up2_f32", "upsample_epilogue_f32", "torgb_skip"):
        f = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, f=f, name=name, **k: calls.append(name) or f(*a, **k))
    impl = kernels._load()
    frames = {}
    with torch.no_grad():
        for small_deconv in (10 ** 9, 0):  # products by matmul, or PyTorch's transposed convolution
            monkeypatch.setattr(alis_core.cpu.plan, "SMALL_DECONV_PIXELS", small_deconv)
            for path in ("kernels", "pytorch"):
                monkeypatch.setattr(kernels, "_impl", impl if path == "kernels" else False)
                frames[path, small_deconv] = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="const")
    assert set(calls) == {"conv3x3_winograd_f32", "deconv_up2_f32", "upsample_epilogue_f32", "torgb_skip"}
    for small_deconv in (10 ** 9, 0):
        a, b = frames["kernels", small_deconv], frames["pytorch", small_deconv]
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_float16_frames_take_the_pytorch_path_beside_the_kernels(tiny_G, monkeypatch):
    """The kernels take bfloat16 and float32 only: a float16 model of their size renders through
    the PyTorch operations (to float16 precision of the float32 frame)."""
    monkeypatch.setattr(alis_core.cpu.plan, "KERNEL_MIN_WORK", 0)
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)
    with torch.no_grad():
        ref = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
        G.compute_dtype = torch.float16
        out = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()


def test_warm_up_loads_every_kernel(monkeypatch):
    """`warm_up` compiles or loads every kernel (what a host may call once at start)."""
    assert kernels.warm_up()
    impl = kernels._load()
    names = [n for n in dir(impl) if hasattr(getattr(impl, n), "signatures") and not n.startswith("_")]
    assert len(names) >= 6 and all(getattr(impl, n).signatures for n in names), names
    monkeypatch.setattr(kernels, "_impl", False)
    assert not kernels.warm_up()


def test_a_failing_kernel_switches_them_off_and_the_call_still_renders(tiny_G, monkeypatch):
    """A kernel that fails here (a numba or LLVM problem of this machine) costs a warning, not the
    render: the same call runs again on the PyTorch path, and the kernels stay off."""
    monkeypatch.setattr(alis_core.cpu.plan, "KERNEL_MIN_WORK", 0)
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast, G.compute_dtype = True, BF16
    w = alis_core.sample_anchors(G, 3, seed=2)
    impl = kernels._load()
    gen = torch.Generator()
    with torch.no_grad():
        monkeypatch.setattr(kernels, "_impl", False)
        ref = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="random", generator=gen.manual_seed(5))
        monkeypatch.setattr(kernels, "_impl", impl)

        def boom(*args):
            raise RuntimeError("LLVM ERROR: no such CPU")
        monkeypatch.setattr(impl, "upsample_epilogue_bf16", boom)
        with pytest.warns(RuntimeWarning, match="compiled kernels failed"):
            out = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="random", generator=gen.manual_seed(5))
    assert torch.equal(out, ref)  # the PyTorch path, with the same random noise
    assert kernels._impl is False and not kernels.available()


def test_kernels_called_from_several_threads_under_numbas_workqueue_layer(tmp_path):
    """numba's fallback threading layer (workqueue: no OpenMP or TBB, e.g. some macOS hosts)
    aborts the process when two threads run kernels at once; calls are one at a time."""
    if not kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed")
    code = (
        "import threading, torch\n"
        "from alis_core import sky\n"
        "sky.SKY_KERNEL_MIN_PIXELS = 0\n"
        "x = torch.rand(3, 256, 512) * 3\n"
        "want = sky._tone_curve(x, 0.0)\n"
        "bad = []\n"
        "def work():\n"
        "    for _ in range(10):\n"
        "        if float((sky.tone_map(x) - want).abs().max()) > 2e-6: bad.append(1)\n"
        "ts = [threading.Thread(target=work) for _ in range(3)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "import numba; assert numba.threading_layer() == 'workqueue' and not bad\n"
        "print('ok')\n")
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
