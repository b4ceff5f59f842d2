"""Parity with the official implementation, equivariance, and the generator's contracts."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from alis_testing import FIXTURES, check_official_outputs, make_tiny
from safetensors import safe_open
from safetensors.torch import load_file

import alis_core
from alis_core import AlisError, GeneratorConfig
from alis_core.layers import logarithmic_basis

OFFICIAL = sorted(FIXTURES.glob("official_*.safetensors"))


@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: p.stem)
def test_parity_with_official_fixture_weights(path):
    t = load_file(str(path))
    G = alis_core.load_generator(path)
    meta = safe_open(str(path), "pt").metadata()
    assert G.num_ws == int(meta["num_ws"])
    check_official_outputs(G, t)


def test_parity_through_official_pickle(official_fixture):
    G = alis_core.load_generator(FIXTURES / "official_tiny64.pkl")
    check_official_outputs(G, official_fixture)


def test_converted_pickle_round_trips(tmp_path, official_fixture):
    dst = alis_core.convert_official(FIXTURES / "official_tiny64.pkl", tmp_path / "tiny.safetensors")
    check_official_outputs(alis_core.load_generator(dst), official_fixture)


def test_pickle_weights_equal_fixture_weights(official_fixture):
    G = alis_core.load_generator(FIXTURES / "official_tiny64.pkl")
    ours = G.state_dict()
    for name, t in official_fixture.items():
        if name.startswith("G.") and not name.endswith(("resample_filter", ".basis")):
            assert torch.equal(ours[name[2:].replace(".input.input.", ".input.")], t), name


def test_fourier_bases_equal_official_buffers(official_fixture):
    G = alis_core.load_generator(FIXTURES / "official_tiny64.safetensors")
    for name, t in official_fixture.items():
        if name.endswith(".basis"):
            res = int(name.split(".")[2][1:])
            ours = G.synthesis.b4.input.basis if res == 4 else getattr(G.synthesis, f"b{res}").basis
            assert torch.equal(ours, t), name


def test_basis_drops_diagonals_when_they_do_not_fit():
    assert logarithmic_basis(64, 128).shape == (20, 2)  # 4 directions x 5 octaves
    assert logarithmic_basis(64, 12).shape == (10, 2)  # 6 * 4 > 12 and 6 * 3 > 12: only 2 directions
    assert logarithmic_basis(64, 18).shape == (15, 2)  # anti-diagonal dropped


def test_truncation_lerps_towards_w_avg(tiny_G):
    z = torch.randn(4, tiny_G.z_dim, generator=torch.Generator().manual_seed(1))
    w, w0 = tiny_G.map(z), tiny_G.map(z, truncation_psi=0.0)
    assert torch.allclose(w0, tiny_G.mapping.w_avg.expand_as(w0))
    assert torch.allclose(tiny_G.map(z, truncation_psi=0.5), (w + w0) / 2, atol=1e-6)


def test_frame_accepts_per_layer_ws(tiny_G):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 2, tiny_G.w_dim, generator=g)
    lb = torch.tensor([0, 6])
    a = tiny_G.frame(w[0], w[1], w[2], lb)
    per_layer = [x.unsqueeze(1).expand(-1, tiny_G.num_ws, -1) for x in w]
    assert torch.equal(a, tiny_G.frame(*per_layer, lb))
    assert a.shape == (2, 3, 64, 64)
    with pytest.raises(AlisError, match="w_center"):
        tiny_G.frame(w[0], torch.randn(2, 5), w[2], lb)
    with pytest.raises(AlisError, match="left_border"):
        tiny_G.frame(w[0], w[1], w[2], torch.tensor([0, 7]))


def test_patch_depends_only_on_its_two_anchors_and_position(tiny_G):
    """ALIS equivariance: the patch between anchors B and C is the same whether it is rendered in
    the right half of window (A, B, C) or the left half of window (B, C, D)."""
    g = torch.Generator().manual_seed(3)
    a, b, c, d = torch.randn(4, 1, tiny_G.w_dim, generator=g)
    ppi = tiny_G.config.patches_per_interval
    for q in range(ppi):
        right_half = tiny_G.patches(torch.stack([a, b, c], 1), [q + ppi - (q + ppi) % 2], [(q + ppi) % 2])
        left_half = tiny_G.patches(torch.stack([b, c, d], 1), [q - q % 2], [q % 2])
        assert torch.equal(right_half, left_half)
    # Through the official frame path (coordinates not folded) the patches agree to float32 rounding.
    right = tiny_G.frame(a, b, c, torch.tensor([ppi]))
    left = tiny_G.frame(b, c, d, torch.tensor([0]))
    assert (right - left).abs().max() <= 1e-3 * right.abs().max()


def test_frame_equals_its_patches(tiny_G):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(3, 1, tiny_G.w_dim, generator=g)
    frame = tiny_G.frame(w[0], w[1], w[2], torch.tensor([3]), noise_mode="const")
    patches = tiny_G.patches(torch.stack(list(w), 1).expand(2, -1, -1), [3, 3], [0, 1],
                             noise_mode="const", canonical=False)
    assert torch.equal(frame, torch.cat(list(patches), dim=2)[None])


def test_random_noise_is_seeded_and_changes_pixels(tiny_G):
    w = torch.randn(3, 1, tiny_G.w_dim, generator=torch.Generator().manual_seed(5))
    f = lambda s: tiny_G.frame(*w, torch.tensor([0]), noise_mode="random",  # noqa: E731
                               generator=torch.Generator().manual_seed(s))
    assert torch.equal(f(1), f(1))
    assert not torch.equal(f(1), f(2))
    with pytest.raises(AlisError, match="noise_mode"):
        tiny_G.frame(*w, torch.tensor([0]), noise_mode="loud")


@pytest.mark.parametrize("overrides", [
    dict(img_resolution=16, grid_size=1, w_coord_dist=2.0, channel_base=256, channel_max=32),
    dict(img_resolution=32, grid_size=4, w_coord_dist=4.0, z_dim=16, w_dim=24, mapping_layers=1),
    dict(img_resolution=128, channel_base=256, channel_max=16, conv_clamp=None),
])
def test_other_architectures_run_and_are_equivariant(overrides):
    G = make_tiny(7, **overrides)
    cfg = G.config
    a = alis_core.sample_anchors(G, 3, seed=1)
    pano = alis_core.panorama(G, a, wrap=True)
    assert pano.shape == (3, cfg.img_resolution, 3 * cfg.anchor_spacing)
    rolled = alis_core.panorama(G, torch.roll(a, -1, 0), wrap=True)
    assert (torch.roll(pano, -cfg.anchor_spacing, 2) - rolled).abs().max() <= 1e-5
    frame = G.frame(a[0:1], a[1:2], a[2:3], torch.tensor([1]))
    assert frame.shape == (1, 3, cfg.img_resolution, cfg.img_resolution)
    assert torch.isfinite(frame).all()


def test_config_json_round_trip():
    cfg = GeneratorConfig.tiny(w_coord_dist=2.0)
    assert GeneratorConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(AlisError, match="power of two"):
        GeneratorConfig.tiny(img_resolution=48)
    with pytest.raises(AlisError, match="unsupported generator config keys"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "fmm": True})


def test_discriminator_scores_frames():
    D = alis_core.Discriminator(alis_core.DiscriminatorConfig(img_resolution=32, channel_base=256, channel_max=32))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = D(x)
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    # minibatch stddev makes each score depend on the other samples of its group
    assert not torch.allclose(D(x[:2])[0], out[0])
    out.sum().backward()
    assert all(p.grad is not None for p in D.parameters())


def _r1_gradients(D, x):
    """The R1 penalty's gradients for D's weights: a double backward, as training runs it."""
    from torch.profiler import profile
    D.zero_grad()
    with profile() as prof:
        grad, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        grad.square().sum().backward()
    convs = sum(e.count for e in prof.key_averages() if e.key == "aten::convolution")
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in D.parameters()], convs


def test_pooled_lowpass_avoids_per_channel_double_backward(monkeypatch):
    """On GPUs the low-pass filters run as poolings when gradients are recorded: the same R1
    gradients without the double backward of a grouped convolution, which PyTorch runs channel
    by channel (one convolution per channel)."""
    with torch.random.fork_rng():  # the same weights whatever ran before
        torch.manual_seed(0)
        D = alis_core.Discriminator(alis_core.DiscriminatorConfig(img_resolution=32, channel_base=512, channel_max=64))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    grouped, grouped_convs = _r1_gradients(D, x)
    monkeypatch.setattr(alis_core.layers, "POOLED_LOWPASS_DEVICES", ("cpu",))
    pooled, pooled_convs = _r1_gradients(D, x)
    assert pooled_convs < 40 < grouped_convs
    # against the largest gradient: a parameter whose gradient nearly vanishes has a relative error
    # of whatever float rounding leaves (up to 5% in 1 of 10 random discriminators)
    scale = max(b.abs().max() for b in pooled)
    for a, b in zip(grouped, pooled):
        assert (a - b).abs().max() <= 1e-5 * scale


def test_generator_is_differentiable(tiny_G):
    G = make_tiny(1).requires_grad_(True)
    w = G.map(torch.randn(2, G.z_dim))
    img = G.frame(w, w, w, torch.tensor([0, 2]), noise_mode="random", generator=torch.Generator().manual_seed(0))
    img.square().mean().backward()
    grads = {n: p.grad for n, p in G.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert np.mean([float(g.abs().sum() > 0) for g in grads.values()]) == 1.0


def test_weights_loaded_under_inference_mode(tiny_checkpoint):
    """Hosts such as ComfyUI load and run models under torch.inference_mode()."""
    with torch.inference_mode():
        G = alis_core.load_generator(tiny_checkpoint, fast=True)
        a = alis_core.sample_anchors(G, 2, seed=0)
        assert torch.isfinite(alis_core.panorama(G, a)).all()


def test_weights_get_gradients_after_a_frozen_pass():
    """Training alternates phases: a pass with G frozen must not leave G's next step gradient-less."""
    G = make_tiny(2)
    w = G.map(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        G.frame(w, w, w, torch.tensor([0]))  # frozen pass fills the prepared-weight cache
    G.requires_grad_(True)
    G.frame(w, w, w, torch.tensor([0])).square().mean().backward()
    assert G.synthesis.b8.conv1.weight.grad is not None and G.synthesis.b8.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fast", [False, True])
def test_cached_weights_noise_and_styles_follow_weight_updates(fast):
    """Inference caches what it derives from weights and positions (scaled affine weights, "const"
    noise, column styles): an in-place update (an optimiser step, an EMA) must reach the pixels,
    under inference_mode (as in ComfyUI) and after it with gradients on (as in training)."""
    G = make_tiny(6)
    G.fast = fast
    w = alis_core.sample_anchors(G, 3, seed=1)
    lb = torch.tensor([1])
    with torch.no_grad():
        before = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
        assert torch.equal(before, G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const"))
        G.synthesis.b16.conv1.noise_strength.add_(1.0)
        G.synthesis.b16.conv1.affine.weight.mul_(1.5)
        G.mapping.fc0.bias.add_(0.5)
    w2 = alis_core.sample_anchors(G, 3, seed=1)
    assert not torch.equal(w2, w)
    with torch.no_grad():
        after = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
    fresh = copy.deepcopy(G)
    for m in fresh.modules():  # nothing cached
        for name in ("_scaled", "_prepared"):
            if hasattr(m, name):
                setattr(m, name, None)
        if hasattr(m, "noise_cache"):
            m.noise_cache.clear()
    fresh.synthesis.feature_cache = type(G.synthesis.feature_cache)()
    with torch.no_grad():
        ref = fresh.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
    assert (after - before).abs().max() > 1e-3
    assert torch.equal(after, ref)
    G = make_tiny(6)  # caches filled under inference_mode first
    G.fast = fast
    with torch.inference_mode():
        G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
    wg = w.clone().requires_grad_(True)  # frozen weights, gradients for the anchors (an inversion)
    G.frame(wg[:1], wg[1:2], wg[2:], lb, noise_mode="const").square().mean().backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0
    G.requires_grad_(True)  # inference tensors cached above must not enter a training graph
    G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const").square().mean().backward()
    assert G.synthesis.b16.conv1.noise_strength.grad is not None


@pytest.mark.parametrize("fast", [False, True])
def test_weights_swapped_in_reach_the_pixels(fast):
    """`load_state_dict(..., assign=True)` puts new tensors in place of the old (no in-place update,
    version counters as fresh as the old ones'): nothing cached from the old weights may stay."""
    G, other = make_tiny(8), make_tiny(9)
    G.fast = fast
    w = alis_core.sample_anchors(G, 3, seed=1)
    lb = torch.tensor([1])
    with torch.no_grad():
        before = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
        G.load_state_dict(other.state_dict(), assign=True)
        after = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
        other.fast = fast
        ref = other.frame(w[:1], w[1:2], w[2:], lb, noise_mode="const")
    assert (after - before).abs().max() > 1e-3 and torch.equal(after, ref)


def test_moving_the_generator_drops_its_caches():
    """Hosts move models between devices between runs (ComfyUI offloads them): nothing derived from
    the weights may stay behind holding the old device's memory, and the pixels stay the same."""
    G = make_tiny(7)
    G.fast = True
    a = alis_core.sample_anchors(G, 3, seed=0)

    def cached():
        return sum(getattr(m, "_prepared", None) is not None or getattr(m, "_scaled", None) is not None
                   or bool(getattr(m, "noise_cache", None)) or bool(getattr(m, "_packed_cache", None))
                   or bool(getattr(m, "_table", None)) for m in G.modules()) + len(G.synthesis.feature_cache._d)

    with torch.no_grad():
        before = alis_core.panorama(G, a, noise_mode="const")
        assert cached() > 0
        G.to("cpu")
        assert cached() == 0
        assert torch.equal(alis_core.panorama(G, a, noise_mode="const"), before)


def test_style_table_equals_every_layers_own_affine(tiny_G):
    """The fused path computes every layer's styles by one matrix product when all layers share their
    anchors: its columns equal each layer's own affine (the toRGB weight gain included), and a
    frame through it equals the exact path."""
    syn = tiny_G.synthesis
    w = torch.randn(5, tiny_G.w_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        wt, b, slices, (rgb_start, rgb_weight) = alis_core.cpu.fused.style_table(syn)
        table = torch.addmm(b, w, wt)
        layers = [m for m in syn.modules() if hasattr(m, "affine")]
        assert len(layers) == len(slices) == 3 * len(tiny_G.config.block_resolutions)
        for m in layers:
            own = m.styles(w[None])[0]
            assert (table[:, slices[id(m)]] - own).abs().max() <= 1e-5 * own.abs().max()
        rgb = [m for m in layers if hasattr(m, "weight_gain")]
        assert rgb_start == min(slices[id(m)].start for m in rgb)  # the toRGB layers' columns last
        assert torch.equal(rgb_weight, torch.cat([m.weight[:, :, 0, 0].t() for m in rgb]))
        assert alis_core.cpu.fused.style_table(syn)[0] is wt  # cached while the weights stay
    G = copy.deepcopy(tiny_G)
    a = alis_core.sample_anchors(G, 3, seed=3)
    lb = torch.tensor([1])
    exact = G.frame(a[:1], a[1:2], a[2:], lb)
    G.fast = True
    with torch.no_grad():
        fused = G.frame(a[:1], a[1:2], a[2:], lb)
    assert G.synthesis._table and (fused - exact).abs().max() <= 1e-5 * exact.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_path_with_per_layer_styles(tiny_G, dtype, monkeypatch, bf16_path):
    """Style mixing (other anchors from some layer on): no shared style table, each layer's own
    affine, through the fused path and (bfloat16) the compiled kernels; against the exact path."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 2, tiny_G.w_dim, generator=g)
    mixed = [x.unsqueeze(1).repeat(1, tiny_G.num_ws, 1) for x in w]
    for m in mixed:
        m[:, 5:] += 0.5 * torch.randn(m[:, 5:].shape, generator=g)
    lb = torch.tensor([0, 3])
    G = copy.deepcopy(tiny_G)
    exact = G.frame(*mixed, lb, noise_mode="const")
    G.fast, G.compute_dtype = True, dtype
    with torch.no_grad():
        fused = G.frame(*mixed, lb, noise_mode="const")
        shared = G.frame(*(m[:, :1].expand_as(m) for m in mixed), lb, noise_mode="const")
    scale = exact.abs().max()
    if dtype == torch.float32:
        assert (fused - exact).abs().max() <= 1e-5 * scale
    else:
        assert (fused - exact).abs().max() <= 0.1 * scale and (fused - exact).abs().mean() <= 0.01 * scale
    assert (shared - fused).abs().max() > 1e-2 * scale  # the mixed layers mattered


def test_polyphase_upsampling_equals_transposed_convolution():
    from alis_core.layers import conv_transpose3x3_up2, conv_up2_polyphase, polyphase_weight
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 4, generator=g, dtype=torch.float64)
    wt = torch.randn(5, 7, 3, 3, generator=g, dtype=torch.float64)
    ref = conv_transpose3x3_up2(x, wt)
    assert ref.shape == (2, 7, 12, 8)
    assert (conv_up2_polyphase(x, polyphase_weight(wt)) - ref).abs().max() < 1e-12


@pytest.mark.parametrize("context", [False, True])
@pytest.mark.parametrize("noise", ["none", "const"])
def test_fast_and_bfloat16_paths_match_exact(tiny_G, context, noise, monkeypatch, bf16_path):
    """With and without patch context; bfloat16 with its activation passes in small row blocks."""
    monkeypatch.setattr(alis_core.cpu.fused, "EPILOGUE_CHUNK_BYTES", 2048)
    a = alis_core.sample_anchors(tiny_G, 3, seed=1)
    exact = alis_core.panorama(tiny_G, a, wrap=True, context=context, noise_mode=noise)
    try:
        tiny_G.fast = True
        fast = alis_core.panorama(tiny_G, a, wrap=True, context=context, noise_mode=noise)
        tiny_G.compute_dtype = torch.bfloat16
        bf16 = alis_core.panorama(tiny_G, a, wrap=True, context=context, noise_mode=noise)
    finally:
        tiny_G.fast, tiny_G.compute_dtype = False, torch.float32
    scale = exact.abs().max()
    assert (fast - exact).abs().max() < 1e-5 * scale
    assert (bf16 - exact).abs().max() < 0.1 * scale and (bf16 - exact).abs().mean() < 0.01 * scale


@pytest.mark.parametrize("dtype,small_deconv,winograd", [(torch.float32, 4096, None), (torch.float32, 0, None),
                                                          (torch.float32, 4096, 4), (torch.float32, 4096, 2),
                                                          (torch.bfloat16, 4096, 4), (torch.bfloat16, 4096, 2)])
@pytest.mark.parametrize("noise", ["none", "const"])
def test_fused_cpu_inference_matches_the_unfused_fast_path(tiny_G, noise, dtype, small_deconv, winograd, monkeypatch,
                                                          bf16_path):
    """Without gradients the CPU runs oneDNN convolutions with bias and activation fused, prepacked
    weights and the toRGB matmul; with gradients enabled (weights frozen) the plain fast path runs.
    small_deconv 0: every float32 transposed convolution through oneDNN instead of the matmul;
    winograd 4 or 2: every float32 3x3 convolution whose size allows it by Winograd F(4x4) or F(2x2)
    (never bfloat16); None: none by Winograd (the tiny model's layers are below both thresholds)."""
    monkeypatch.setattr(alis_core.cpu.plan, "SMALL_DECONV_PIXELS", small_deconv)
    monkeypatch.setattr(alis_core.cpu.plan, "KERNEL_WINOGRAD_MIN_CHANNELS", 10 ** 9)  # the compiled kernels'
    # Winograd (tests/core/test_kernels.py) would take these layers whatever the PyTorch thresholds
    for m, name in ((4, "WINOGRAD"), (2, "WINOGRAD2")):
        on = 0 if winograd == m else 10 ** 9
        monkeypatch.setattr(alis_core.cpu.plan, name + "_MIN_CHANNELS", on)
        monkeypatch.setattr(alis_core.cpu.plan, name + "_MIN_PIXELS", on)
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast, G.compute_dtype = True, dtype
    w = alis_core.sample_anchors(G, 3, seed=2)
    lb = torch.tensor([1])
    plain = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode=noise)
    with torch.no_grad():
        fused = G.frame(w[:1], w[1:2], w[2:], lb, noise_mode=noise)
        again = copy.deepcopy(G).frame(w[:1], w[1:2], w[2:], lb, noise_mode=noise)  # caches do not copy
    assert any(len(m._packed_cache) for m in G.modules() if hasattr(m, "_packed_cache"))  # the fused path ran
    used = {k[1] for m in G.modules() if hasattr(m, "_packed_cache") for k in m._packed_cache if k[0] == "winograd"}
    assert used == ({winograd} if winograd and dtype == torch.float32 else set())
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert (fused - plain).abs().max() <= tol * plain.abs().max()
    assert torch.equal(fused, again)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_noise", [False, True])
def test_activation_in_row_blocks_equals_whole_passes(dtype, with_noise, monkeypatch):
    """The fused path's epilogue (noise, leaky ReLU, clamp) in blocks of rows of one image gives
    the same values, bit for bit, as whole-tensor passes, a shorter last block included."""
    from alis_core.cpu import fused as gen
    from alis_core.layers import LRELU_GAIN
    g = torch.Generator().manual_seed(3)
    x = (300 * torch.randn(2, 8, 13, 5, generator=g)).to(dtype).contiguous(memory_format=torch.channels_last)
    noise = torch.randn(2, 1, 13, 5, generator=g).to(dtype) if with_noise else None
    monkeypatch.setattr(gen, "EPILOGUE_CHUNK_DTYPES", (dtype,))
    monkeypatch.setattr(gen, "EPILOGUE_CHUNK_BYTES", 1 << 40)
    whole = gen.leaky_clamp_(x.clone(), 256.0, noise)
    monkeypatch.setattr(gen, "EPILOGUE_CHUNK_BYTES", 3 * 5 * 8 * x.element_size())  # blocks of 3 rows
    blocks = gen.leaky_clamp_(x.clone(), 256.0, noise)
    ref = x.float() + (0 if noise is None else noise.float() * LRELU_GAIN)
    ref = torch.nn.functional.leaky_relu(ref, 0.2).clamp(-256, 256)
    assert torch.equal(blocks, whole) and blocks.is_contiguous(memory_format=torch.channels_last)
    assert (blocks.float() - ref).abs().max() <= (2.0 if dtype == torch.bfloat16 else 1e-4)
    assert blocks.float().abs().max() == 256  # the clamp was reached
    assert gen.leaky_clamp_(x.clone(), None, noise).float().abs().max() > 256  # ... and mattered


def test_fused_bfloat16_frame_with_activation_blocks(tiny_G, monkeypatch):
    """A bfloat16 frame whose epilogues run in blocks of rows equals the one in whole passes
    (the PyTorch path: the compiled kernels run no such blocks)."""
    from alis_core.cpu import fused as gen
    monkeypatch.setattr(alis_core.kernels, "_impl", False)
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast, G.compute_dtype = True, torch.bfloat16
    w = alis_core.sample_anchors(G, 3, seed=2)
    calls = []
    leaky = torch.nn.functional.leaky_relu_
    monkeypatch.setattr(gen.F, "leaky_relu_", lambda t, a: calls.append(t.shape) or leaky(t, a))
    with torch.no_grad():
        whole = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="const")
        n_whole = len(calls)
        monkeypatch.setattr(gen, "EPILOGUE_CHUNK_BYTES", 1)  # one row per block
        blocks = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="const")
    assert len(calls) - n_whole > 3 * n_whole  # the blocks ran
    assert torch.equal(blocks, whole)


def test_fused_path_falls_back_when_onednn_refuses(tiny_G, monkeypatch):
    """A CPU whose oneDNN build lacks a fused operator gets the plain fast path, same pixels."""
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)
    plain = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="random",
                    generator=torch.Generator().manual_seed(5))  # gradients on: never fused

    def refuse(*args, **kwargs):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(alis_core.cpu.fused, "conv_act", refuse)
    monkeypatch.setattr(alis_core.cpu.plan, "HAS_FUSED_CONV", True)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="fused CPU path does not run float32"):
        out = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]), noise_mode="random",
                      generator=torch.Generator().manual_seed(5))
    assert alis_core.cpu.plan.FAILED == {("fused", torch.float32)}
    assert (out - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_the_render_plan_is_chosen_from_config_device_dtype_and_exactness(tiny_G):
    """Reduced dtypes are always fast; GPUs render float32 in the official order whatever `fast`
    says; the CPU engine runs only without gradients, on the CPU, where oneDNN fuses."""
    from alis_core.cpu import plan as p
    cfg = tiny_G.config
    assert not p.choose_plan(cfg, "cpu", torch.float32, fast=True).fused  # gradients on: training
    with torch.no_grad():
        assert not p.choose_plan(cfg, "cpu", torch.float32).fast
        assert p.choose_plan(cfg, "cpu", torch.float32, fast=True).fused == p.HAS_FUSED_CONV
        assert p.choose_plan(cfg, "cpu", torch.bfloat16).fast
        assert not p.choose_plan(cfg, "cuda", torch.float32, fast=True).fast
        gpu = p.choose_plan(cfg, "cuda", torch.bfloat16)
        assert gpu.fast and not gpu.fused and not gpu.kernels
        assert not p.choose_plan(cfg, "cpu", torch.bfloat16).kernels  # the tiny model: too little work


def test_running_out_of_memory_leaves_the_fused_path_on(tiny_G, monkeypatch):
    """Running out of memory is no operator this CPU lacks: the error reaches the caller, and no
    dtype leaves the fused path for it."""
    if not alis_core.cpu.plan.HAS_FUSED_CONV:
        pytest.skip("this PyTorch build has no fused oneDNN convolution")
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CPU out of memory")

    monkeypatch.setattr(alis_core.cpu.fused, "conv_act", out_of_memory)
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
        G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
    assert not alis_core.cpu.plan.FAILED


def _fused_calls(monkeypatch) -> list:
    """Spies on the fused path's convolution: the dtypes of the calls it makes."""
    gen = alis_core.cpu.fused
    conv, calls = gen.conv_act, []
    monkeypatch.setattr(gen, "conv_act", lambda x, *a, **k: calls.append(x.dtype) or conv(x, *a, **k))
    return calls


def test_a_dtype_the_fused_path_refuses_leaves_the_other_dtypes_on_it(tiny_G, monkeypatch):
    """One warning, and only that dtype leaves the fused path: float32 and bfloat16 frames rendered
    after a float16 frame failed in it still take it (on any CPU: the failure is forced here)."""
    gen, plan = alis_core.cpu.fused, alis_core.cpu.plan
    if not plan.HAS_FUSED_CONV:
        pytest.skip("this PyTorch build has no fused oneDNN convolution")
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)
    conv = gen.conv_act

    def no_float16(x, *args, **kwargs):
        if x.dtype == torch.float16:
            raise RuntimeError("fp16 path needs the cpu support avx_ne_convert or avx512_fp16")
        return conv(x, *args, **kwargs)

    monkeypatch.setattr(gen, "conv_act", no_float16)
    calls = _fused_calls(monkeypatch)
    with torch.no_grad():
        G.compute_dtype = torch.float16
        with pytest.warns(RuntimeWarning, match="float16") as record:
            half = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
            G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))  # no second warning
        assert len([r for r in record if "fused CPU path" in str(r.message)]) == 1
        assert half.dtype == torch.float32 and torch.isfinite(half).all()
        for dtype in (torch.float32, torch.bfloat16):
            G.compute_dtype = dtype
            calls.clear()
            G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
            assert calls and set(calls) == {dtype}, (dtype, calls)
    assert plan.FAILED == {("fused", torch.float16)}


def test_a_real_float16_frame_on_a_cpu_without_float16_keeps_float32_fused(tiny_G, monkeypatch):
    """The same on this CPU's own oneDNN, unforced: needs a CPU whose oneDNN refuses float16
    convolutions (no avx512_fp16 or avx_ne_convert, e.g. AMD EPYC before Zen 5); skipped elsewhere."""
    gen = alis_core.cpu.fused
    x = torch.zeros(1, 8, 4, 4, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    try:
        gen.conv_act(x, torch.zeros(8, 8, 3, 3, dtype=torch.float16), None, 1)
    except RuntimeError:
        pass
    else:
        pytest.skip("this CPU runs float16 convolutions in oneDNN")
    G = copy.deepcopy(tiny_G).requires_grad_(False)
    G.fast = True
    w = alis_core.sample_anchors(G, 3, seed=2)
    calls = _fused_calls(monkeypatch)
    with torch.no_grad():
        G.compute_dtype = torch.float32
        ref = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
        G.compute_dtype = torch.float16
        with pytest.warns(RuntimeWarning, match="float16"):
            half = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
        assert (half - ref).abs().max() <= 0.02 * ref.abs().max()
        G.compute_dtype = torch.float32
        calls.clear()
        again = G.frame(w[:1], w[1:2], w[2:], torch.tensor([1]))
    assert calls and set(calls) == {torch.float32}
    assert torch.equal(again, ref)


@pytest.mark.parametrize("m", [4, 2])
@pytest.mark.parametrize("shape", [(2, 24, 8, 4), (1, 16, 12, 20)])
def test_winograd_convolution_equals_direct(shape, m):
    """Winograd F(4x4, 3x3) and F(2x2, 3x3) against F.conv2d(padding=1), both memory layouts; bias
    optional; sizes that are not multiples of the tile are refused, not silently cropped."""
    from alis_core.layers import conv3x3_winograd, winograd_weight
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    w = torch.randn(32, shape[1], 3, 3, generator=g)
    b = torch.randn(32, generator=g)
    ref = torch.nn.functional.conv2d(x, w, b, padding=1)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        out = conv3x3_winograd(xx, winograd_weight(w, m), b)
        assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    nobias = conv3x3_winograd(x, winograd_weight(w, m))
    assert torch.allclose(nobias + b.reshape(1, -1, 1, 1), out, atol=1e-5 * ref.abs().max().item())
    noise = torch.randn(shape[0], 1, shape[2], shape[3], generator=g)
    noisy = conv3x3_winograd(x, winograd_weight(w, m), b, noise, alpha=0.5)
    assert (noisy - (ref + 0.5 * noise)).abs().max() <= 1e-5 * ref.abs().max()
    with pytest.raises(ValueError, match=f"multiples of {m}"):
        conv3x3_winograd(x[..., :3], winograd_weight(w, m))


@pytest.mark.parametrize("m", [4, 2])
def test_winograd_in_chunks_equals_winograd_at_once(m, monkeypatch):
    """Layers with many tiles run Winograd chunk by chunk (whole tile rows of one image, the last
    chunk of an image shorter): the same sums as all tiles at once, noise and bias included."""
    import alis_core.layers as layers
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 28, 12, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(6, 8, 3, 3, generator=g), torch.randn(6, generator=g)
    noise = torch.randn(2, 1, 28, 12, generator=g)
    ww = layers.winograd_weight(w, m)
    monkeypatch.setattr(layers, "WINOGRAD_CHUNK_MIN_RATIO", 10 ** 9)
    whole = layers.conv3x3_winograd(x, ww, b, noise, alpha=0.7)
    calls = []
    monkeypatch.setattr(layers.torch, "bmm", lambda a, bb: calls.append(a.shape[1]) or torch.matmul(a, bb))
    monkeypatch.setattr(layers, "WINOGRAD_CHUNK_MIN_RATIO", 4)
    monkeypatch.setattr(layers, "WINOGRAD_CHUNK_TILES", 19)
    chunked = layers.conv3x3_winograd(x, ww, b, noise, alpha=0.7)
    tx, ty = 12 // m, 28 // m
    rows = max(1, 19 // tx)
    assert calls == [tx * min(rows, ty - r0) for _ in range(2) for r0 in range(0, ty, rows)]
    assert ty % rows  # a shorter last chunk is among them
    assert chunked.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    ref = torch.nn.functional.conv2d(x, w, b, padding=1) + 0.7 * noise
    assert (chunked - ref).abs().max() <= 1e-5 * ref.abs().max()
