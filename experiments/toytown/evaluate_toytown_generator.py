"""Measure the bundled Toytown generator against its renderer with the shipped segmenter.

Writes experiments/toytown/results/toytown_generator.json (and docs/toytown_samples.png, an 8x8 grid):
  - the share of samples showing each part (spire, dome, flat roof, window, tree, watermark) for
    1,000 generated and 1,000 rendered images, and whether each is within 25% (relative);
  - segmenter FID generated-vs-rendered, beside rendered-vs-rendered (two independent sets);
  - how the windows are drawn: the renderer draws windows as separate squares of 9-25 pixels, so
    specks and smears show as window pieces of other sizes (`window_pieces`).

    python experiments/toytown/evaluate_toytown_generator.py [--samples 1000] [--checkpoint PATH]

`--latent-seed` and `--render-seed-start` give a validation set disjoint from the reported one
(latent seed 0, render seeds 0..2*samples-1), for choosing among training checkpoints without
choosing on the numbers that are then reported.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
import torch

import rewriting
from rewriting.atomic import atomic_path, write_json
from rewriting.deltas import package_version
from rewriting.edits.resolve import mask_pieces
from rewriting.metrics.fid import feature_fid
from rewriting.metrics.success import label_presence
from rewriting.models.download import sha256_file
from rewriting.toytown.labels import LABELS, SHARE_PARTS
from rewriting.toytown.renderer import render_seeds
from rewriting.toytown.segmenter import SegmenterFeatures, load_segmenter
from rewriting.visualize import image_grid

PARTS = SHARE_PARTS
SHARE_BAR = 0.25  # the bar: each part's share within 25% (relative) of the renderer's
# The renderer's windows are squares of 3-5 px a side; a piece of 6-30 px is read as one window,
# allowing a segmenter's ragged edge of a row or column either way.
WINDOW_PIECE_PIXELS = (6, 30)
ROOT = Path(__file__).resolve().parents[2]


@torch.no_grad()
def generated(generator, count: int, seed: int, batch: int = 100) -> torch.Tensor:
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([generator(z[i:i + batch]) for i in range(0, count, batch)])


def relative_share_differences(generated_shares: dict, rendered_shares: dict) -> dict[str, float]:
    """Part -> |generated share - rendered share| / rendered share, for the parts with a bar."""
    return {part: abs(generated_shares[part] - rendered_shares[part]) / max(rendered_shares[part], 1e-12)
            for part in PARTS}


@torch.no_grad()
def segment(segmenter, images: torch.Tensor, batch: int = 200) -> torch.Tensor:
    return torch.cat([segmenter.segment(images[i:i + batch]) for i in range(0, len(images), batch)])


def window_pieces(label_maps: torch.Tensor) -> dict[str, float]:
    """How windows are drawn in label maps (N, H, W): window pieces per image and their sizes.

    Over the images showing any window pixel: the median number of 8-connected window pieces, the
    median piece size, and the share of window pixels that lie in window-sized pieces
    (WINDOW_PIECE_PIXELS): near 1 for a grid of separate windows, low for specks or smears.
    """
    counts, sizes, in_window_sized = [], [], 0.0
    for label_map in label_maps:
        _, piece_pixels = mask_pieces(label_map == LABELS.index("window"))
        if not len(piece_pixels):
            continue
        counts.append(len(piece_pixels))
        sizes += list(piece_pixels)
        low, high = WINDOW_PIECE_PIXELS
        in_window_sized += piece_pixels[(piece_pixels >= low) & (piece_pixels <= high)].sum() / piece_pixels.sum()
    if not counts:
        return {"images_with_windows": 0}
    return {"images_with_windows": len(counts), "median_pieces_per_image": float(np.median(counts)),
            "median_piece_pixels": float(np.median(sizes)),
            "share_of_window_pixels_in_window_sized_pieces": round(float(in_window_sized / len(counts)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled generator")
    parser.add_argument("--latent-seed", type=int, default=0)
    parser.add_argument("--render-seed-start", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/toytown/results/toytown_generator.json")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs/toytown_samples.png")
    args = parser.parse_args()

    generator = rewriting.load_generator(args.checkpoint, name=None if args.checkpoint else "toytown")
    segmenter = load_segmenter()
    fake = generated(generator, args.samples, seed=args.latent_seed)
    first = args.render_seed_start
    real, _ = render_seeds(list(range(first, first + args.samples)))
    real_other, _ = render_seeds(list(range(first + args.samples, first + 2 * args.samples)))

    fake_labels, real_labels = segment(segmenter, fake), segment(segmenter, real)
    fake_shares = label_presence(fake_labels, list(LABELS))
    real_shares = label_presence(real_labels, list(LABELS))
    parts = {part: {"generated": fake_shares[part], "rendered": real_shares[part], "relative_difference": relative,
                    "within_25_percent": relative <= SHARE_BAR}
             for part, relative in relative_share_differences(fake_shares, real_shares).items()}
    features = SegmenterFeatures(segmenter)
    report = {
        "command": "python experiments/toytown/evaluate_toytown_generator.py" + (
            f" --samples {args.samples}" if args.samples != 1000 else "") + (
            f" --checkpoint {args.checkpoint}" if args.checkpoint else "") + (
            f" --latent-seed {args.latent_seed}" if args.latent_seed else "") + (
            f" --render-seed-start {first}" if first else ""),
        "date": datetime.date.today().isoformat(), "package_version": package_version(),
        "generator_sha256": sha256_file(generator.checkpoint_path), "samples": args.samples,
        "parts": parts, "all_parts_within_25_percent": all(p["within_25_percent"] for p in parts.values()),
        "segmenter_fid_generated_vs_rendered": feature_fid(fake, real, features),
        "segmenter_fid_rendered_vs_rendered": feature_fid(real_other, real, features),
        "window_pieces": {"generated": window_pieces(fake_labels), "rendered": window_pieces(real_labels),
                          "window_sized_pixels": list(WINDOW_PIECE_PIXELS)},
    }
    write_json(args.out, report)
    with atomic_path(args.grid) as temporary:
        image_grid([fake[i * 8:(i + 1) * 8] for i in range(8)], scale=2).save(temporary, format="PNG")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
