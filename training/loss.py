"""The ALIS training objective: StyleGAN2's losses applied to frames that sit inside anchor windows.

A fake frame is rendered from three anchors (left context, centre, right context), each mapped from
its own z and style-mixed on its own, at a random `left_border` inside the window (ALIS Sec. 3.2;
the official loss draws left_borders_idx ~ randint(0, 2 * ppi - grid_size)). D sees whole frames.

- G: non-saturating logistic loss softplus(-D(G(z))), plus lazy path-length regularisation with
  gradients taken with respect to the centre anchor's per-layer ws.
- D: softplus(D(G(z))) + softplus(-D(x)), plus lazy R1 = gamma / 2 * |grad_x D(x)|^2.

Every random draw comes from the `torch.Generator` passed in (a CPU generator that is part of the
resumable training state), so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alis_core import Discriminator, Generator

from .config import TrainConfig


@dataclass
class FakeBatch:
    img: Tensor  # [N, 3, R, R]
    ws_center: Tensor  # [N, num_ws, w_dim]


def seam_discontinuity(img: Tensor, grid_size: int) -> Tensor:
    """How much the frames show their patches, [N]; about zero for real frames. Two parts:
    - per frame: the squared second differences at the two columns beside each interior patch
      boundary (a step, a line or a narrow valley there), averaged over the boundaries;
    - per batch, weighted 1000x: the high frequencies (the profile minus its 9-column running
      mean) of the batch's mean column profile. Bands or stripes locked to positions inside the
      patches, the visible grid, show there; content at random offsets averages out (real batches
      of 16 score about 4e-7 before the 1000x, a young generator 100x more), so it constrains no
      single image."""
    pw = img.shape[-1] // grid_size
    if grid_size < 2 or pw < 4:
        return img.new_zeros(img.shape[0])
    frame = []
    for k in range(1, grid_size):
        x = img[..., k * pw - 2: k * pw + 2]
        d2 = x[..., :2] - 2 * x[..., 1:3] + x[..., 2:]  # second differences beside the boundary
        frame.append(d2.square().mean(dim=[1, 2, 3]))
    profile = img.mean(dim=[0, 2])  # [C, W]
    smooth = F.avg_pool1d(profile[None], 9, stride=1)[0]  # centred on columns 4 .. W-5
    return torch.stack(frame).mean(0) + 1000 * (profile[:, 4:-4] - smooth).square().mean()


def _randn(shape, gen: torch.Generator, device) -> Tensor:
    return torch.randn(shape, generator=gen).to(device)


class AlisLoss:
    """Loss terms for one process; the training loop owns the optimisers and the phase schedule."""

    def __init__(self, G: Generator, D: Discriminator, cfg: TrainConfig, device: torch.device,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 reduce_mean: Callable[[Tensor], Tensor] | None = None):
        self.G, self.D, self.cfg, self.device = G, D, cfg, device
        self.autocast = autocast or contextlib.nullcontext
        self.reduce_mean = reduce_mean or (lambda t: t)  # mean over processes (DDP)
        self.pl_mean = torch.zeros([], device=device)

    # ---- generator side

    def _map(self, n: int, gen: torch.Generator, update_w_avg: bool) -> Tensor:
        """z -> per-layer ws [N, num_ws, w_dim], style-mixed with probability style_mixing_prob."""
        G = self.G
        z = _randn([n, G.z_dim], gen, self.device)
        ws = G.mapping(z, update_w_avg=update_w_avg).unsqueeze(1).repeat(1, G.num_ws, 1)
        # As StyleGAN2: one coin and one cutoff per batch, drawn always so the RNG stream is fixed.
        coin = float(torch.rand([], generator=gen))
        cutoff = int(torch.randint(1, G.num_ws, [], generator=gen)) if G.num_ws > 1 else 1
        z2 = _randn([n, G.z_dim], gen, self.device)
        if coin < self.cfg.style_mixing_prob and G.num_ws > 1:
            w2 = G.mapping(z2, update_w_avg=False)
            ws = torch.cat([ws[:, :cutoff], w2.unsqueeze(1).expand(-1, G.num_ws - cutoff, -1)], dim=1)
        return ws

    def left_borders(self, n: int, gen: torch.Generator) -> Tensor:
        cfg = self.G.config
        high = 2 * cfg.patches_per_interval - cfg.grid_size  # exclusive, as the official loss
        if high <= 0:
            return torch.zeros([n], dtype=torch.int64)
        return torch.randint(0, high, [n], generator=gen)

    def generate(self, n: int, gen: torch.Generator, update_w_avg: bool = False) -> FakeBatch:
        """Render n training frames: fresh centre and context anchors, random left borders."""
        ws_center = self._map(n, gen, update_w_avg)
        ws_left = self._map(n, gen, False)
        ws_right = self._map(n, gen, False)
        lb = self.left_borders(n, gen)
        img = self.G.frame(ws_left, ws_center, ws_right, lb, noise_mode=self.cfg.noise_mode, generator=gen)
        return FakeBatch(img, ws_center)

    def g_main(self, n: int, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        with self.autocast():
            fake = self.generate(n, gen, update_w_avg=True)
            logits = self.D(fake.img).float()
        loss = F.softplus(-logits).mean()
        stats = {"loss_G": float(loss.detach())}
        if self.cfg.seam_weight > 0:
            seam = seam_discontinuity(fake.img.float(), self.G.config.grid_size).mean()
            loss = loss + seam * self.cfg.seam_weight
            stats["seam_G"] = float(seam.detach())
        return loss, stats

    def g_pl(self, n: int, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Path-length penalty (StyleGAN2 Sec. 3.2) in float32; the caller scales it by pl_interval."""
        cfg = self.cfg
        n = max(1, n // cfg.pl_batch_shrink)
        fake = self.generate(n, gen, update_w_avg=True)
        img = fake.img.float()
        h, w = img.shape[2:]
        pl_noise = _randn(img.shape, gen, self.device) / np.sqrt(h * w)
        (grads,) = torch.autograd.grad((img * pl_noise).sum(), fake.ws_center, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()  # [N]
        batch_mean = self.reduce_mean(lengths.mean().detach())
        self.pl_mean.copy_(self.pl_mean.lerp(batch_mean, cfg.pl_decay))
        penalty = (lengths - self.pl_mean).square()
        loss = penalty.mean() * cfg.pl_weight
        return loss, {"loss_pl": float(loss.detach()), "pl_mean": float(self.pl_mean)}

    # ---- discriminator side

    def d_main(self, real: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad(), self.autocast():
            fake = self.generate(real.shape[0], gen).img
        with self.autocast():
            fake_logits = self.D(fake.detach()).float()
            real_logits = self.D(real).float()
        loss_fake = F.softplus(fake_logits).mean()
        loss_real = F.softplus(-real_logits).mean()
        loss = loss_fake + loss_real
        return loss, {"loss_D": float(loss.detach()), "loss_D_fake": float(loss_fake.detach()),
                      "loss_D_real": float(loss_real.detach()),
                      "score_real": float(real_logits.detach().mean()),
                      "score_fake": float(fake_logits.detach().mean())}

    def d_r1(self, real: Tensor) -> tuple[Tensor, dict[str, float]]:
        """R1 penalty on reals, in float32; the caller scales it by r1_interval."""
        x = real.detach().requires_grad_(True)
        logits = self.D(x)
        (grads,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = grads.square().sum([1, 2, 3])
        loss = (penalty * (self.cfg.r1_gamma / 2)).mean()
        return loss, {"r1_penalty": float(penalty.detach().mean()), "loss_r1": float(loss.detach())}
