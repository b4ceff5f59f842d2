"""Make the README's panorama and skybox pictures with the README's own main command, and the
model card's sample strips.

    python docs/figures/readme_images.py [--checkpoint CKPT] [--seed 7]

Runs `alis generate --wrap --seed SEED --out ... --equirect ... --cubemap ...` (the Quickstart
command), then writes docs/img/panorama.png (the strip shown twice side by side, so the 360° seam
sits in the middle of the picture) and docs/img/skybox.png (the equirect, scaled to 1024 px wide).
docs/img/default_samples.png: wrapped 4-anchor strips of seeds 0-3, one per row, noise off.
docs/img/sky_before_after.png: the cube cross of the same strip with `--sky blur` (the strip's rows
blurred, top) and the default full-sphere sky (bottom).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import alis_core  # noqa: E402
from alis_core.image import load_image, save_png  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "img"))
    a = ap.parse_args()
    out = Path(a.out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "alis_core", "generate", "--wrap", "--seed", str(a.seed)]
        if a.checkpoint:
            base += ["--checkpoint", a.checkpoint]
        cmd = base + ["--out", f"{tmp}/panorama.png", "--equirect", f"{tmp}/skybox.png", "--cubemap", f"{tmp}/cubemap"]
        print(" ".join(cmd[1:]))
        subprocess.run(cmd, check=True, cwd=ROOT)
        strip = load_image(f"{tmp}/panorama.png")  # [3, H, W]
        twice = torch.cat([strip, strip], dim=2)  # the seam sits in the middle
        save_png(out / "panorama.png", twice)
        sky = load_image(f"{tmp}/skybox.png")
        w = min(1024, sky.shape[2])
        sky = F.interpolate(sky[None], size=(w // 2, w), mode="bilinear", antialias=True, align_corners=False)[0]
        save_png(out / "skybox.png", sky.clamp(0, 1))
        subprocess.run(base + ["--cubemap", f"{tmp}/blur", "--sky", "blur", "--sun", "none"], check=True, cwd=ROOT)
        crosses = [load_image(f"{tmp}/{d}/cross.png") for d in ("blur", "cubemap")]
        pair = torch.cat([crosses[0], torch.ones(3, 8, crosses[0].shape[2]), crosses[1]], dim=1)
        w = min(768, pair.shape[2])
        pair = F.interpolate(pair[None], size=(round(pair.shape[1] * w / pair.shape[2]), w), mode="bilinear",
                             antialias=True, align_corners=False)[0]
        save_png(out / "sky_before_after.png", pair.clamp(0, 1))
    G = alis_core.load_generator(a.checkpoint, fast=True)
    rows = [alis_core.panorama(G, alis_core.sample_anchors(G, 4, seed=s), wrap=True, context=True) for s in range(4)]
    save_png(out / "default_samples.png", alis_core.to_unit(torch.cat(rows, dim=1)))
    # the same anchors with every patch computed on its own (the paper) and with patch context, 2x
    a = alis_core.sample_anchors(G, 2, seed=a.seed)
    pair = [alis_core.panorama(G, a, wrap=True, context=c)[:, :, :384] for c in (False, True)]
    pair = torch.cat([pair[0], torch.ones(3, 4, 384), pair[1]], dim=1)
    pair = F.interpolate(pair[None], scale_factor=2, mode="nearest")[0]
    save_png(out / "patch_context.png", alis_core.to_unit(pair))
    print(f"wrote {out / 'panorama.png'}, {out / 'skybox.png'}, {out / 'default_samples.png'} "
          f"and {out / 'patch_context.png'}")


if __name__ == "__main__":
    main()
