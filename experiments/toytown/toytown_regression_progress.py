"""How far a regression-trained Toytown generator has come: its images beside their target renders.

For each checkpoint: the mean L1 between its image for a latent and the render of that latent's scene
(rewriting/toytown/latent_scenes.py) over `--samples` latents, beside the L1 of the renders' per-pixel
median image (what a generator that has learned nothing but the average scene scores), the share of
samples the segmenter sees showing each part, how its windows are drawn, and whether it draws each
latent's own parts (`scene_agreement`: of the latents whose scene shows a part, the share whose
image the segmenter sees showing it, beside the same share for latents whose scene lacks it -- equal
shares mean the generator draws that part regardless of the latent's scene). Writes a JSON report
and, for the last checkpoint, a grid of 16 pairs (generated | target), 3x enlarged.

    python experiments/toytown/toytown_regression_progress.py RUN/generator_ema_step*.pt --out report.json --grid pairs.png
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import rewriting
from evaluate_toytown_generator import PARTS, window_pieces
from rewriting.atomic import atomic_path, write_json
from rewriting.deltas import package_version
from rewriting.metrics.success import label_presence, shows_labels
from rewriting.models.download import sha256_file
from rewriting.toytown.labels import LABEL_INDEX, LABELS
from rewriting.toytown.latent_scenes import render_latents
from rewriting.toytown.segmenter import load_segmenter
from rewriting.visualize import image_grid


@torch.no_grad()
def images_for(generator, latents: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """The generator's images (N, 3, H, W) for latents (N, D), with its fixed noise."""
    generator.noise_mode = "fixed"
    return torch.cat([generator(latents[i:i + batch]) for i in range(0, len(latents), batch)])


def scene_agreement(scene_labels: torch.Tensor, image_labels: torch.Tensor) -> dict[str, dict[str, float | None]]:
    """Scene labels and image labels (N, H, W) -> per part, the share of images showing it among scenes with and without it."""
    scene_shows, image_shows = shows_labels(scene_labels, len(LABELS)), shows_labels(image_labels, len(LABELS))
    agreement = {}
    for part in PARTS:
        scene, image = scene_shows[:, LABEL_INDEX[part]], image_shows[:, LABEL_INDEX[part]]
        agreement[part] = {"shown_when_scene_has_it": image[scene].float().mean().item() if scene.any() else None,
                           "shown_when_scene_lacks_it": image[~scene].float().mean().item() if (~scene).any() else None}
    return agreement


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--latent-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", type=Path, default=None)
    args = parser.parse_args(argv)

    segmenter = load_segmenter()
    latents = torch.randn(args.samples, rewriting.load_generator(args.checkpoints[0]).z_dim,
                          generator=torch.Generator().manual_seed(args.latent_seed))
    targets, target_labels = render_latents(latents)
    median_image = targets.median(dim=0).values
    report = {
        "command": "python experiments/toytown/toytown_regression_progress.py " + " ".join(map(str, args.checkpoints))
                   + f" --samples {args.samples} --latent-seed {args.latent_seed} --out {args.out}"
                   + (f" --grid {args.grid}" if args.grid else ""),
        "date": datetime.date.today().isoformat(), "package_version": package_version(), "samples": args.samples,
        "median_image_l1_to_targets": (targets - median_image).abs().mean().item(),
        "checkpoints": {},
    }
    for path in args.checkpoints:
        generator = rewriting.load_generator(path)
        fake = images_for(generator, latents)
        with torch.no_grad():  # one segmenter pass gives both the labels and the cross-entropy
            logits = [segmenter(fake[i:i + 100]) for i in range(0, len(fake), 100)]
        labels = torch.cat([batch.argmax(dim=1) for batch in logits])
        cross_entropy = torch.cat([F.cross_entropy(batch, target_labels[i * 100:(i + 1) * 100], reduction="none")
                                   for i, batch in enumerate(logits)]).mean().item()
        shares = label_presence(labels, list(LABELS))
        agreement = scene_agreement(target_labels, labels)
        step = torch.load(path, map_location="cpu", weights_only=True).get("training", {}).get("step")
        report["checkpoints"][str(path)] = {
            "sha256": sha256_file(path), "step": step, "l1_to_targets": (fake - targets).abs().mean().item(),
            "shares": {part: shares[part] for part in PARTS}, "window_pieces": window_pieces(labels),
            "scene_agreement": agreement, "segmenter_cross_entropy_to_scene_labels": cross_entropy}
        print(path.name, step, round(report["checkpoints"][str(path)]["l1_to_targets"], 4), flush=True)
    if args.grid:
        pairs = torch.stack([fake[:16], targets[:16]], dim=1).flatten(0, 1)
        with atomic_path(args.grid) as temporary:
            image_grid([pairs[i * 8:(i + 1) * 8] for i in range(4)], scale=3).save(temporary, format="PNG")
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "checkpoints"}, indent=2))
    return report


if __name__ == "__main__":
    main()
