"""Weight-free image metrics: sliced Wasserstein distance (SWD) on Laplacian-pyramid patches.

SWD follows ProGAN (Karras et al. 2018, Sec. 5 / App. D): every image is decomposed into a Laplacian
pyramid down to 16 px; at each level, 7x7 neighbourhoods at random positions become descriptors
(3 * 7 * 7 values), normalised per channel over the set; the distance between the real and the fake
descriptor sets is the mean over random unit directions of the 1-D Wasserstein distance of their
projections (sort both, compare). Reported x 1e3 like ProGAN; lower is better; the mean over levels
is the headline number. It needs no pretrained network, so it runs anywhere, but its values are not
comparable with FID and depend on the number of images.

"Infinite" SWD is the analogue of the ALIS paper's infinity-FID: fake images are R x R crops taken at
random positions along long wrapped panoramas (so crops straddle anchors, patch borders and the
360-degree seam) instead of training-style frames. The ratio SWD_inf / SWD shows how much quality
degrades away from the frame geometry the generator was trained on (about 1: no degradation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import alis_core
from alis_core import AlisError

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_LEVEL_RES = 16


def _gauss_kernel(channels: int, dtype, device) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype, device=device)
    k = torch.outer(k, k) / 256.0
    return k.expand(channels, 1, 5, 5).contiguous()


def _blur(x: Tensor) -> Tensor:
    k = _gauss_kernel(x.shape[1], x.dtype, x.device)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(images: Tensor, min_res: int = MIN_LEVEL_RES) -> list[Tensor]:
    """[N, C, H, W] -> levels [N, C, H / 2^i, W / 2^i]: band-pass details, then the low-pass residual
    at the first level whose short side is <= min_res (one level for images at most that small)."""
    levels = []
    x = images.float()
    while min(x.shape[2:]) > min_res and min(x.shape[2:]) >= 2 * NHOOD_SIZE:
        down = F.avg_pool2d(_blur(x), 2)  # blur then subsample (ProGAN's pyr_down)
        up = F.interpolate(down, scale_factor=2, mode="nearest")
        levels.append(x - _blur(up))  # ProGAN's pyr_up = zero-insertion + 4x blur; nearest + blur is close
        x = down
    levels.append(x)
    return levels


def extract_descriptors(level: Tensor, gen: torch.Generator, per_image: int = NHOODS_PER_IMAGE,
                        size: int = NHOOD_SIZE) -> Tensor:
    """Random size x size neighbourhoods of every image: [N * per_image, C * size * size]."""
    n, c, h, w = level.shape
    if h < size or w < size:
        raise AlisError(f"SWD needs images of at least {size} px, got {h}x{w}")
    ys = torch.randint(0, h - size + 1, [n, per_image], generator=gen)
    xs = torch.randint(0, w - size + 1, [n, per_image], generator=gen)
    patches = level.unfold(2, size, 1).unfold(3, size, 1)  # [N, C, h', w', s, s]
    idx_n = torch.arange(n)[:, None].expand(-1, per_image)
    d = patches[idx_n, :, ys, xs]  # [N, P, C, s, s]
    return d.reshape(n * per_image, c, size, size)


def normalize_descriptors(d: Tensor) -> Tensor:
    """Zero mean, unit std per colour channel over the whole set (ProGAN); -> [M, C * s * s]."""
    mean = d.mean(dim=[0, 2, 3], keepdim=True)
    std = d.std(dim=[0, 2, 3], keepdim=True).clamp_min(1e-8)
    return ((d - mean) / std).reshape(d.shape[0], -1)


def sliced_wasserstein(a: Tensor, b: Tensor, gen: torch.Generator, dir_repeats: int = DIR_REPEATS,
                       dirs_per_repeat: int = DIRS_PER_REPEAT) -> float:
    """Mean 1-D Wasserstein distance of two equally sized sets [M, D] along random unit directions."""
    if a.shape != b.shape:
        raise AlisError(f"SWD needs descriptor sets of the same shape, got {list(a.shape)} and {list(b.shape)}")
    dists = []
    for _ in range(dir_repeats):
        dirs = torch.randn([a.shape[1], dirs_per_repeat], generator=gen, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa = (a.double() @ dirs).sort(dim=0).values
        pb = (b.double() @ dirs).sort(dim=0).values
        dists.append((pa - pb).abs().mean())
    return float(torch.stack(dists).mean())


class SWDReference:
    """Descriptors of a fixed set of real images, computed once, compared with any fake set."""

    def __init__(self, real: Tensor, seed: int = 0):
        self.num = real.shape[0]
        self.resolution = real.shape[-1]
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.descriptors = [normalize_descriptors(extract_descriptors(lv, gen)) for lv in laplacian_pyramid(real)]

    def distance(self, fake: Tensor) -> dict:
        """{"levels": [SWD x 1e3 per level, finest first], "mean": their mean} for fakes [N, 3, R, R]."""
        if fake.shape[0] != self.num or fake.shape[-1] != self.resolution:
            raise AlisError(f"SWD: expected {self.num} fake images of {self.resolution} px, "
                            f"got {fake.shape[0]} of {fake.shape[-1]} px")
        gen = torch.Generator().manual_seed(self.seed + 1)
        levels = []
        for ref, lv in zip(self.descriptors, laplacian_pyramid(fake.float().cpu())):
            d = normalize_descriptors(extract_descriptors(lv, gen))
            levels.append(sliced_wasserstein(ref, d, gen) * 1e3)
        return {"levels": levels, "mean": sum(levels) / len(levels)}


def swd(real: Tensor, fake: Tensor, seed: int = 0) -> dict:
    """SWD between two equally sized image sets [N, 3, R, R] (any range; descriptors are normalised)."""
    return SWDReference(real.float().cpu(), seed).distance(fake)


# ---- images from a generator


@torch.no_grad()
def generate_frames(G, num: int, seed: int, batch_size: int = 32) -> Tensor:
    """`num` frames as training renders them (fresh context anchors, random left borders): [N, 3, R, R]."""
    gen = torch.Generator().manual_seed(int(seed))
    cfg = G.config
    high = max(1, 2 * cfg.patches_per_interval - cfg.grid_size)
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        wl, wc, wr = (G.mapping(torch.randn([n, G.z_dim], generator=gen).to(G.device)) for _ in range(3))
        lb = torch.randint(0, high, [n], generator=gen)
        out.append(G.frame(wl, wc, wr, lb, noise_mode="random", generator=gen).float().cpu())
    return torch.cat(out).clamp(-1, 1)


@torch.no_grad()
def panorama_crops(G, num: int, seed: int, anchors_per_panorama: int = 32, context: bool = False) -> Tensor:
    """`num` R x R crops at random positions along wrapped panoramas (crossing the seam allowed);
    `context`: rendered with patch context (alis_core.panorama)."""
    r = G.img_resolution
    gen = torch.Generator().manual_seed(int(seed))
    # Enough panorama width for the crops not to overlap on average: num * R px in all.
    total_anchors = max(2, math.ceil(num * r / G.anchor_spacing))
    num_pano = max(1, math.ceil(total_anchors / anchors_per_panorama))
    k = max(2, math.ceil(total_anchors / num_pano))
    crops = []
    for p in range(num_pano):
        n = num // num_pano + (1 if p < num % num_pano else 0)
        if n == 0:
            continue
        anchors = alis_core.sample_anchors(G, k, seed=int(seed) * 1000 + p)
        strip = alis_core.panorama(G, anchors, wrap=True, noise_mode="random", noise_seed=int(seed) * 1000 + p,
                                   context=context)
        w = strip.shape[2]
        xs = torch.randint(0, w, [n], generator=gen)
        cols = (xs[:, None] + torch.arange(r)[None, :]) % w  # [n, R], wraps around the seam
        crops.append(strip[:, :, cols].permute(2, 0, 1, 3))  # [n, 3, R, R]
    return torch.cat(crops).clamp(-1, 1)


def strip_scores(G, seeds, num_anchors: int = 4, context: bool = False) -> list[tuple[float, float]]:
    """(seam score, patch-grid score) of one wrapped strip per seed; both about 1 when invisible."""
    out = []
    for s in seeds:
        strip = alis_core.panorama(G, alis_core.sample_anchors(G, num_anchors, seed=int(s)), wrap=True,
                                   context=context)
        pw = G.config.patch_width
        out.append((alis_core.seam_score(strip, pw), alis_core.patch_grid_score(strip, pw)))
    return out


@dataclass
class Evaluation:
    swd: float
    swd_inf: float
    swd_levels: list[float]
    swd_inf_levels: list[float]

    @property
    def ratio(self) -> float:
        return self.swd_inf / max(self.swd, 1e-12)


def evaluate_generator(G, reference: SWDReference, seed: int = 0, context: bool = False) -> Evaluation:
    """SWD of frames and of panorama crops of G (rendered with patch context or not) against the real
    reference set."""
    frames = generate_frames(G, reference.num, seed=seed)
    crops = panorama_crops(G, reference.num, seed=seed, context=context)
    a, b = reference.distance(frames), reference.distance(crops)
    return Evaluation(a["mean"], b["mean"], a["levels"], b["levels"])


def real_images(dataset, num: int, seed: int = 0) -> Tensor:
    """`num` distinct frames of a training dataset (as many as it has if fewer), no flips: [N, 3, R, R]."""
    gen = torch.Generator().manual_seed(int(seed))
    n = len(dataset)
    if n >= num:
        idx = torch.randperm(n, generator=gen)[:num]
    else:
        idx = torch.randint(0, n, [num], generator=gen)
    idx = idx.sort().values
    return torch.stack([dataset[int(i)] for i in idx]).float().div(127.5).sub(1.0)
