"""Make docs/img/invert.png: a photo, its reconstruction, and the 360° loop around it.

    python docs/figures/invert_images.py [--photo docs/img/aitzgorri.jpg] [--seed 12] [--anchors 6]

The photo is a camera photograph vendored in docs/img (credit in docs/img/CREDITS.md). The loop is
what `alis generate --from-photo PHOTO --wrap --anchors 6 --seed 12` renders with the bundled model:
the photo inverted (default steps, seed --seed), new scenes from --seed after it. The script prints
the reconstruction PSNR and the photo's columns as that command does.
Rows: the photo at the model's height | its reconstruction (the loop's pixels at the photo's
columns), then the loop with the photo's columns outlined.
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
    ap.add_argument("--photo", default=str(ROOT / "docs" / "img" / "aitzgorri.jpg"))
    ap.add_argument("--seed", type=int, default=12, help="seed of the inversion's start and the loop's new scenes")
    ap.add_argument("--anchors", type=int, default=options.CLI.anchors)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "invert.png"))
    a = ap.parse_args()
    G = alis_core.load_generator(fast=True)
    H = G.img_resolution
    photo = to_unit(invert.photo_to_target(G, invert.read_photo(a.photo))[0])  # [3, H, w] as the fit sees it
    # what `alis generate --from-photo PHOTO --wrap --anchors K --seed S` does before rendering
    anchors, infos = invert.photo_loop_anchors(G, photos=[a.photo], num_anchors=a.anchors, seed=a.seed)
    loop = to_unit(alis_core.panorama(G, anchors, wrap=True, context=True))  # [3, H, K * spacing]
    x0, x1 = infos[0]["columns"]
    seam = alis_core.seam_score(loop * 2 - 1, G.config.patch_width)
    print(f"{Path(a.photo).name}: columns {x0}..{x1} of the loop, reconstruction PSNR {infos[0]['psnr']:.2f} dB; "
          f"loop {loop.shape[2]} px, seam score {seam:.3f}")
    gap, w = 8, photo.shape[2]
    top = torch.ones(3, H, loop.shape[2])
    top[:, :, :w] = photo
    top[:, :, w + gap: 2 * w + gap] = loop[:, :, x0:x1]  # the reconstruction, as the loop shows it
    pic = torch.cat([top, torch.ones(3, gap, loop.shape[2]), outline(loop, x0, x1)], dim=1)
    save_png(a.out, pic.clamp(0, 1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
