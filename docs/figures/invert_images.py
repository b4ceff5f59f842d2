"""Make docs/img/invert.png: a photo, its reconstruction, and the 360° loop around it.

    python docs/figures/invert_images.py [--seed 12] [--steps 50]

The "photo" is a procedural landscape made by training/synthetic.py (seed --photo-seed, 3:2,
192 x 128), not a camera photo. It is inverted with the bundled model as `alis invert` does
(default steps), and the loop is `alis generate --anchors-file ... --wrap --anchors 6 --seed SEED`.
Rows: photo | reconstruction (side by side), then the loop with the photo's columns outlined.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import alis_core  # noqa: E402
from alis_core import invert, options  # noqa: E402
from alis_core.image import save_png, to_unit  # noqa: E402
from training.synthetic import render_panorama  # noqa: E402


def outline(img: torch.Tensor, x0: int, x1: int, color=(1.0, 0.85, 0.1), t: int = 2) -> torch.Tensor:
    img = img.clone()
    c = torch.tensor(color)[:, None, None]
    img[:, :t, x0:x1] = c
    img[:, -t:, x0:x1] = c
    img[:, :, x0:x0 + t] = c
    img[:, :, x1 - t:x1] = c
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo-seed", type=int, default=5)
    ap.add_argument("--seed", type=int, default=12, help="seed of the loop's new scenes")
    ap.add_argument("--steps", type=int, default=options.INVERT_STEPS)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "invert.png"))
    a = ap.parse_args()
    G = alis_core.load_generator(fast=True)
    H = G.img_resolution
    photo = torch.from_numpy(render_panorama(a.photo_seed, H, 3 * H // 2, periodic=False)).permute(2, 0, 1).float() / 255
    r = invert.invert_image(G, photo, steps=a.steps, seed=0)
    anchors, starts = invert.loop_anchors(G, [r.anchors], 6, seed=a.seed)
    loop = to_unit(alis_core.panorama(G, anchors, wrap=True, context=True))  # [3, H, 6 * spacing]
    x0, x1 = invert.photo_columns(G, r.columns, starts[0])
    seam = alis_core.seam_score(loop * 2 - 1, G.config.patch_width)
    print(f"PSNR {r.psnr:.2f} dB, columns {x0}..{x1}, loop {loop.shape[2]} px, seam score {seam:.3f}")
    gap = 8
    top = torch.ones(3, H, loop.shape[2])
    top[:, :, : photo.shape[2]] = photo
    top[:, :, photo.shape[2] + gap: 2 * photo.shape[2] + gap] = to_unit(r.recon)
    pic = torch.cat([top, torch.ones(3, gap, loop.shape[2]), outline(loop, x0, x1)], dim=1)
    save_png(a.out, pic.clamp(0, 1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
