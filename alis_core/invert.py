"""Photo inversion: fit anchors so that the generator redraws a photo, then loop or connect it.

The photo is placed in the panorama starting at an anchor (after enough anchors on its left to
hold the patch context) and spans as many patches as its width at the model's height needs. Its
pixels are rendered exactly as a wrapping panorama with patch context renders them (the same
strip of `G.patches` with `CONTEXT_MARGIN` columns, noise off, canonical positions), and every
anchor those columns reach is a w code optimised jointly: the photo's anchors are a plain
anchors tensor [A, w_dim]. Put at the start of a loop (`loop_anchors`), they render the
reconstruction again, to float rounding, at `InversionResult.columns`.

The loss is offline: mean squared error plus a multi-scale SSIM term (both computed here), with
an alpha channel as per-pixel weight (transparent pixels are left to the model).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import options
from .anchors import sample_anchors
from .errors import AlisError
from .generator import CONTEXT_MARGIN

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

DEFAULT_STEPS = options.INVERT_STEPS
DEFAULT_LR = 0.05  # Adam's step on w; w_avg-centred codes of the official models have a spread of about 1
INIT_CANDIDATES = 8  # random z mapped to w, tried (with w_avg) as the starting point
SSIM_WEIGHT = 0.1  # weight of (1 - multi-scale SSIM) next to the mean squared error of [-1, 1] pixels
MIN_PHOTO_SIDE = 16  # pixels: below this a photo holds too little to fit
MAX_PHOTO_PIXELS = 64_000_000  # refused before decoding, so that a typo or a bomb costs nothing
MAX_PHOTO_FRAMES = 8  # widest photo, in frames (aspect 8:1): wider ones are cropped by the user


@dataclass
class PhotoLayout:
    """Where a photo of `width` px (at the model's height) lies among its anchors.

    The photo starts at anchor `first_anchor` (column first_anchor * anchor_spacing) and covers
    patches [start_patch, stop_patch) counted from anchor 0; `num_anchors` anchors reach its
    columns, context included.
    """

    width: int
    num_anchors: int
    first_anchor: int
    start_patch: int
    stop_patch: int
    columns: tuple[int, int]  # the photo's columns, counted from anchor 0
    fitted: tuple[int, int]  # anchors [i0, i1) whose interpolation reaches the photo's columns


def photo_layout(G, width: int) -> PhotoLayout:
    """The anchors and patches a photo `width` px wide (at height G.img_resolution) occupies."""
    cfg = G.config
    ppi, pw = cfg.patches_per_interval, cfg.patch_width
    cols4 = ppi * (4 // cfg.grid_size)  # columns per anchor interval at the 4x4 resolution
    left = math.ceil(CONTEXT_MARGIN / cols4)  # anchors left of the photo that its context reaches
    start = left * ppi
    stop = start + math.ceil(width / pw)
    last = (stop * (4 // cfg.grid_size) + CONTEXT_MARGIN - 1) // cols4 + 1
    x0 = left * G.anchor_spacing
    fitted = (left, math.ceil((x0 + int(width)) / G.anchor_spacing) + 1)
    return PhotoLayout(int(width), last + 1, left, start, stop, (x0, x0 + int(width)), fitted)


def render_photo_columns(G, anchors: Tensor, layout: PhotoLayout) -> Tensor:
    """The photo's columns as a wrapping panorama with context draws them, differentiably.

    anchors [A, w_dim] (or [A, num_ws, w_dim]) with A = layout.num_anchors -> [3, H, width], [-1, 1].
    """
    cfg = G.config
    g = cfg.grid_size
    ws = anchors.to(G.device, torch.float32)
    if ws.ndim == 2:
        ws = ws.unsqueeze(1).expand(-1, G.num_ws, -1)
    ws = ws.transpose(0, 1).unsqueeze(0)  # [1, num_ws, A, w_dim]
    s = layout.start_patch  # the strip starts at anchor 0, as PanoramaPlan.strip lays it out
    out = G.patches(ws, [s - s % g], [s % g], noise_mode="none", canonical=True, margin=CONTEXT_MARGIN,
                    span=layout.stop_patch - s)  # [1, 3, H, span * pw]
    return out[0, :, :, : layout.width].float()


# ----------------------------------------------------------------------------------------------
# Loss

SSIM_WINDOW = 7  # px, a uniform window (avg_pool2d: a Gaussian one cost 20x more CPU time per step)


def _ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """SSIM per pixel of [N, C, H, W] images in [0, 1] (Wang et al. 2004), uniform 'valid' windows."""
    c = a.shape[1]
    # the five local means in one pooling pass
    m = F.avg_pool2d(torch.cat([a, b, a * a, b * b, a * b], dim=1), SSIM_WINDOW, stride=1)
    mu_a, mu_b, aa, bb, ab = m.split(c, dim=1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def multiscale_ssim(a: Tensor, b: Tensor, weight: Tensor | None = None, scales: int = 3) -> Tensor:
    """Mean SSIM over `scales` halvings of two images [C, H, W] in [0, 1] (1 = identical).

    `weight` [1, H, W] in [0, 1] weights each pixel (an alpha channel); scales stop before the
    window (7 px) no longer fits."""
    a, b = a[None], b[None]
    wt = None if weight is None else weight[None]
    values = []
    for _ in range(scales):
        if min(a.shape[-2:]) < SSIM_WINDOW:
            break
        s = _ssim_map(a, b)
        if wt is None:
            values.append(s.mean())
        else:
            m = F.avg_pool2d(wt, SSIM_WINDOW, stride=1)  # the window's share of opaque pixels
            values.append((s * m).sum() / (m.sum() * s.shape[1]).clamp_min(1e-8))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        wt = None if wt is None else F.avg_pool2d(wt, 2)
    if not values:
        return torch.ones((), device=a.device)
    return torch.stack(values).mean()


def psnr(img: Tensor, target: Tensor, weight: Tensor | None = None) -> float:
    """PSNR in dB of two images [3, H, W] in [-1, 1] (peak-to-peak 2), `weight` [1, H, W] per pixel."""
    err = (img.float() - target.float()) ** 2
    if weight is None:
        mse = err.mean()
    else:
        mse = (err * weight).sum() / (weight.sum() * err.shape[0]).clamp_min(1e-12)
    return float(10 * torch.log10(4.0 / mse.clamp_min(1e-12)))


# ----------------------------------------------------------------------------------------------
# Photos

def photo_to_target(G, img01: Tensor) -> tuple[Tensor, Tensor | None]:
    """A photo [C, h, w] in [0, 1] (C = 1 grey, 3 RGB, 4 RGBA, as load_image gives) -> the target
    [3, H, W] in [-1, 1] at the model's height H (aspect kept, antialiased bicubic) and its alpha
    [1, H, W] (None when opaque)."""
    if not isinstance(img01, Tensor) or img01.ndim != 3 or img01.shape[0] not in (1, 2, 3, 4):
        shape = list(img01.shape) if isinstance(img01, Tensor) else type(img01).__name__
        raise AlisError(f"a photo must be an image [C, H, W] with 1 to 4 channels, got {shape}")
    c, h, w = img01.shape
    if min(h, w) < MIN_PHOTO_SIDE:
        raise AlisError(f"the photo is {w}x{h} px; give one at least {MIN_PHOTO_SIDE} px on each side")
    H = G.img_resolution
    width = max(1, round(w * H / h))
    if width > MAX_PHOTO_FRAMES * H:
        raise AlisError(f"the photo is {w}x{h} px, wider than {MAX_PHOTO_FRAMES}:1; crop it to at most "
                        f"{MAX_PHOTO_FRAMES} times its height")
    img = img01.float()
    if not bool(torch.isfinite(img).all()):
        raise AlisError("the photo holds NaN or infinite values")
    img = img.clamp(0, 1)
    alpha = None
    if c in (2, 4):  # grey+alpha or RGBA: alpha becomes the loss's per-pixel weight
        img, alpha = img[:-1], img[-1:]
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = F.interpolate(img[None], size=(H, width), mode="bicubic", align_corners=False,
                        antialias=h > H)[0].clamp(0, 1)
    if alpha is not None:
        alpha = F.interpolate(alpha[None], size=(H, width), mode="bilinear", align_corners=False,
                              antialias=h > H)[0].clamp(0, 1)
        if float(alpha.max()) <= 0:
            raise AlisError("the photo is fully transparent (its alpha channel is 0 everywhere)")
        if bool((alpha >= 1).all()):
            alpha = None
        else:
            img = img * alpha + 0.5 * (1 - alpha)  # transparent pixels: mid grey (they carry no weight)
    return img * 2 - 1, alpha


def read_photo(path) -> Tensor:
    """Read a photo file -> [C, h, w] in [0, 1] (CMYK, palette, 16-bit, grey and alpha photos as
    load_image converts them); refuses huge images before decoding them."""
    from pathlib import Path

    from PIL import Image

    from .image import load_image
    path = Path(path)
    if not path.is_file():
        raise AlisError(f"photo {path} is not a file")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise AlisError(f"cannot read photo {path}: not an image Pillow can open ({str(e).splitlines()[0][:120]})") from None
    if w * h > MAX_PHOTO_PIXELS:
        raise AlisError(f"photo {path} is {w}x{h} px, more than {MAX_PHOTO_PIXELS // 1_000_000} megapixels; "
                        "scale it down first")
    return load_image(path)


# ----------------------------------------------------------------------------------------------
# Inversion

@dataclass
class InversionResult:
    """What `invert_image` fitted. Anchors [A, w_dim] (CPU float32) render `recon` [3, H, W]
    ([-1, 1], what the loop shows) at `columns` when they start a wrapping panorama."""

    anchors: Tensor
    recon: Tensor
    target: Tensor
    psnr: float
    columns: tuple[int, int]
    steps: int  # optimisation steps done
    interrupted: bool = False  # Ctrl-C stopped it early; the best anchors so far are returned
    alpha: Tensor | None = field(default=None, repr=False)
    history: list[float] = field(default_factory=list, repr=False)  # PSNR before each step


def _initial_anchors(G, target: Tensor, alpha: Tensor | None, layout: PhotoLayout, seed: int,
                     candidates: int) -> Tensor:
    """The best of w_avg and `candidates` mapped random z (each as every anchor) -> [A, w_dim]."""
    w_avg = G.mapping.w_avg.detach().float().cpu()[None]
    pool = [w_avg]
    if candidates > 0:
        pool.append(sample_anchors(G, candidates, seed))
    pool = torch.cat(pool)
    best, best_err = pool[0], math.inf
    with torch.no_grad():
        for w in pool:
            recon = render_photo_columns(G, w[None].expand(layout.num_anchors, -1), layout).cpu()
            err = -psnr(recon, target, alpha)
            if err < best_err:
                best, best_err = w, err
    return best[None].repeat(layout.num_anchors, 1)


def invert_image(G, img01: Tensor, steps: int = DEFAULT_STEPS, seed: int = 0,
                 progress: ProgressFn | None = None, lr: float = DEFAULT_LR,
                 ssim_weight: float = SSIM_WEIGHT, candidates: int = INIT_CANDIDATES) -> InversionResult:
    """Fit plain w anchors [A, w_dim] so that a wrapping panorama with context redraws a photo.

    img01 [C, h, w] in [0, 1] (C = 1, 3 or 4, as `load_image` gives); it is resized to the
    model's height. `seed` draws the starting candidates (deterministic for a seed).
    `progress(done, steps)` is called after each step and may raise to cancel; Ctrl-C
    (KeyboardInterrupt) stops early and returns the best anchors so far (`interrupted=True`).
    """
    steps = int(steps)
    if not 0 <= steps <= 100_000:
        raise AlisError(f"steps must be within 0..100000, got {steps}")
    options.check_seed(seed, "seed")
    target, alpha = photo_to_target(G, img01)
    layout = photo_layout(G, target.shape[2])
    flags = [(p, p.requires_grad) for p in G.parameters()]
    G.requires_grad_(False)  # only the anchors learn: no weight gradients (the flags are restored below)
    try:
        return _fit(G, target, alpha, layout, steps, seed, progress, lr, ssim_weight, candidates)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _fit(G, target, alpha, layout, steps, seed, progress, lr, ssim_weight, candidates) -> InversionResult:
    dev = G.device
    target_d = target.to(dev)
    alpha_d = None if alpha is None else alpha.to(dev)
    target01 = (target_d + 1) / 2
    # Only the anchors interpolated across the photo are fitted; those its context columns reach
    # beyond them stay at the start code (left free, they drift off the model's range and draw
    # garbage next to the photo in the loop, for a few hundredths of a dB).
    start = _initial_anchors(G, target, alpha, layout, seed, candidates).to(dev)
    i0, i1 = layout.fitted
    free = start[i0:i1].clone().requires_grad_(True)

    def full():
        return torch.cat([start[:i0], free, start[i1:]])
    opt = torch.optim.Adam([free], lr=lr, betas=(0.9, 0.999))
    v = full()
    best_v, best_psnr, history, done, interrupted = v.detach().clone(), -math.inf, [], 0, False
    try:
        for step in range(steps):
            t = step / max(steps, 1)
            # StyleGAN projector's schedule: short warm-up, cosine ramp-down over the last quarter
            ramp = min(1.0, (1 - t) / 0.25)
            opt.param_groups[0]["lr"] = lr * 0.5 * (1 - math.cos(math.pi * ramp)) * min(1.0, t / 0.05 + 0.05)
            v = full()
            recon = render_photo_columns(G, v, layout)
            err = (recon - target_d) ** 2
            mse = err.mean() if alpha_d is None else (err * alpha_d).sum() / (alpha_d.sum() * 3)
            loss = mse
            if ssim_weight:
                loss = loss + ssim_weight * (1 - multiscale_ssim((recon + 1) / 2, target01, alpha_d))
            value = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-12))
            history.append(value)
            if value > best_psnr:
                best_v, best_psnr = v.detach().clone(), value
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done = step + 1
            if progress is not None:
                progress(done, steps)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("inversion interrupted after %d of %d steps; keeping the best anchors so far", done, steps)
    with torch.no_grad():
        if not interrupted:  # the last step's result is not scored yet
            v = full()
            recon = render_photo_columns(G, v, layout).cpu()
            if psnr(recon, target, alpha) > best_psnr:
                best_v = v.detach().clone()
        anchors = best_v.float().cpu()
        recon = render_photo_columns(G, anchors, layout).cpu()
    return InversionResult(anchors, recon, target, psnr(recon, target, alpha), layout.columns, done, interrupted,
                           alpha, history)


# ----------------------------------------------------------------------------------------------
# Loops through fitted anchors

def loop_anchors(G, fixed: Sequence[Tensor], num_anchors: int | None = None, seed: int = 0,
                 truncation_psi: float = 1.0) -> tuple[Tensor, list[int]]:
    """A wrapping anchor sequence through given anchor blocks: the first block, new scenes, the
    next block, new scenes, ... and back to the first (new scenes drawn from `seed`, spread evenly
    between the blocks).

    fixed: blocks [A_i, w_dim] (e.g. `InversionResult.anchors`); num_anchors: the total K (default:
    the blocks plus 2 new anchors after each). -> (anchors [K, w_dim], the index of each block's
    first anchor). A block's photo lies at its `columns` shifted by index * G.anchor_spacing.
    """
    blocks = [_check_block(G, b, i) for i, b in enumerate(fixed)]
    if not blocks:
        raise AlisError("loop_anchors needs at least one block of anchors")
    need = sum(b.shape[0] for b in blocks)
    k = need + 2 * len(blocks) if num_anchors is None else int(num_anchors)
    if k < need or k > options.MAX_ANCHORS:
        raise AlisError(f"the loop through {len(blocks)} photo(s) needs {need}..{options.MAX_ANCHORS} anchors "
                        f"(their own {need} plus new scenes), got {k}")
    free = k - need
    new = sample_anchors(G, free, seed, truncation_psi) if free else torch.zeros(0, G.w_dim)
    parts, starts, used = [], [], 0
    for i, b in enumerate(blocks):
        starts.append(sum(p.shape[0] for p in parts))
        parts.append(b)
        n = free * (i + 1) // len(blocks) - free * i // len(blocks)
        parts.append(new[used: used + n])
        used += n
    return torch.cat(parts), starts


def _check_block(G, block: Tensor, i: int) -> Tensor:
    if not isinstance(block, Tensor) or block.ndim != 2 or block.shape[1] != G.w_dim:
        shape = list(block.shape) if isinstance(block, Tensor) else type(block).__name__
        raise AlisError(f"anchor block {i} must be [A, {G.w_dim}] (w codes of this model), got {shape}")
    return block.detach().float().cpu()


def photo_columns(G, result_columns: tuple[int, int], start_anchor: int) -> tuple[int, int]:
    """The columns of a loop that hold a photo whose block starts at anchor `start_anchor`."""
    off = int(start_anchor) * G.anchor_spacing
    return result_columns[0] + off, result_columns[1] + off


def photo_loop_anchors(G, anchors_file=None, photos: Sequence = (), num_anchors: int | None = None, seed: int = 0,
                       truncation_psi: float = 1.0, steps: int | None = None,
                       progress: ProgressFn | None = None) -> tuple[Tensor, list[dict]]:
    """The anchors of a loop through an anchors file's block and/or photos (files, or [C, h, w]
    tensors in [0, 1]; inverted here), in order, with new scenes from `seed` between them: what
    `alis generate --anchors-file / --from-photo / --to-photo` renders, and what the Blender
    extension's "From Image" calls before `panorama(G, anchors, wrap=True, context=True)`. -> (anchors [K, w_dim], per block a dict: source, psnr,
    columns (the loop's columns holding it; None if the file does not say))."""
    from pathlib import Path

    from .anchors import load_anchors
    blocks, infos = [], []
    if anchors_file is not None:
        w, info = load_anchors(anchors_file, G)
        cols = info.get("columns")
        blocks.append(w)
        infos.append({"source": str(anchors_file), "psnr": info.get("psnr"),
                      "columns": tuple(cols) if isinstance(cols, list) and len(cols) == 2 else None})
    photos = [p for p in photos if p is not None]
    imgs = [p if isinstance(p, Tensor) else read_photo(p) for p in photos]  # all checked before the first fit
    if num_anchors is not None:  # a count too small for the blocks is refused before any fitting
        need = sum(b.shape[0] for b in blocks) + sum(
            photo_layout(G, photo_to_target(G, img)[0].shape[2]).num_anchors for img in imgs)
        if not need <= int(num_anchors) <= options.MAX_ANCHORS:
            raise AlisError(f"the loop through {len(blocks) + len(imgs)} photo(s) needs {need}..{options.MAX_ANCHORS} "
                            f"anchors (their own {need} plus new scenes), got {num_anchors}")
    for i, (p, img) in enumerate(zip(photos, imgs)):
        def each(done, total, i=i):
            if progress is not None:
                progress(i * total + done, len(imgs) * total)
        r = invert_image(G, img, steps=DEFAULT_STEPS if steps is None else steps, seed=seed, progress=each)
        if r.interrupted:
            raise KeyboardInterrupt
        blocks.append(r.anchors)
        infos.append({"source": "photo" if isinstance(p, Tensor) else Path(p).name, "psnr": r.psnr, "columns": r.columns})
    anchors, starts = loop_anchors(G, blocks, num_anchors, seed, truncation_psi)
    for info, s in zip(infos, starts):
        if info["columns"] is not None:
            info["columns"] = photo_columns(G, info["columns"], s)
    return anchors, infos
