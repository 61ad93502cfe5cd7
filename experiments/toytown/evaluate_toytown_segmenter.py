"""Evaluate the Toytown segmenter on held-out renders (seeds 0..N-1) and write a JSON report.

Reports mean and per-class IoU on clean renders (the bar: mean IoU >= 0.90), the same on
renders blurred with a Gaussian (sigma 1 px, a stand-in for blurrier GAN samples), CPU
throughput, and the scale of the "segmenter FID" (clean vs other clean renders, vs blurred).

Example:  python experiments/toytown/evaluate_toytown_segmenter.py
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.transforms.v2.functional import gaussian_blur

from rewriting.atomic import write_json
from rewriting.toytown.labels import LABELS, NUM_LABELS
from rewriting.toytown.renderer import render_seeds
from rewriting.toytown.segmenter import DEFAULT_WEIGHTS, SegmenterFeatures, ToytownSegmenter, load_segmenter

MEAN_IOU_BAR = 0.90


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=Path("experiments/toytown/results/toytown_segmenter.json"))
    parser.add_argument("--images", type=int, default=1000, help="held-out renders: seeds 0..images-1")
    parser.add_argument("--blur-sigma", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_labels: int = NUM_LABELS) -> torch.Tensor:
    """(num_labels, num_labels) pixel counts, rows = true label, columns = predicted label."""
    pairs = target.flatten() * num_labels + predicted.flatten()
    return torch.bincount(pairs, minlength=num_labels**2).reshape(num_labels, num_labels)


def iou_report(confusion: torch.Tensor) -> dict:
    """Per-class IoU (classes absent from both truth and prediction are left out of the mean)."""
    true_positive = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
    return {
        "mean_iou": round(float(iou[present].mean()), 4),
        "pixel_accuracy": round(float(true_positive.sum() / confusion.sum()), 4),
        "per_class_iou": {name: round(float(value), 4) for name, value in zip(LABELS, iou)},
    }


def throughput(segmenter: ToytownSegmenter, images: torch.Tensor, repeats: int = 3) -> float:
    """Best of `repeats` images/s of `segment` on `images`."""
    segmenter.segment(images[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.segment(images)
        best = min(best, time.perf_counter() - start)
    return images.shape[0] / best


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def segmenter_fid(segmenter: ToytownSegmenter, real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetInceptionDistance(feature=SegmenterFeatures(segmenter))
    metric.update(to_uint8(real), real=True)
    metric.update(to_uint8(fake), real=False)
    return round(float(metric.compute()), 4)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    segmenter = load_segmenter(args.weights)
    images, labels = render_seeds(range(args.images))
    blurred = gaussian_blur(images, kernel_size=[7, 7], sigma=[args.blur_sigma, args.blur_sigma])

    clean = iou_report(confusion_matrix(segmenter.segment(images), labels))
    blurred_report = iou_report(confusion_matrix(segmenter.segment(blurred), labels))
    images_per_second = throughput(segmenter, images[:512])
    torch.set_num_threads(1)  # a second figure that other jobs on the machine disturb less
    images_per_second_one_thread = throughput(segmenter, images[:512])
    torch.set_num_threads(args.threads)
    other_images, _ = render_seeds(range(args.images, 2 * args.images))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": os.path.relpath(args.weights.resolve()),
        "weights_sha256": sha256(args.weights),
        "weights_bytes": args.weights.stat().st_size,
        "parameters": sum(parameter.numel() for parameter in segmenter.parameters()),
        "widths": list(segmenter.widths),
        "held_out_seeds": f"0..{args.images - 1}",
        "mean_iou_bar": MEAN_IOU_BAR,
        "meets_bar": clean["mean_iou"] >= MEAN_IOU_BAR,
        "clean": clean,
        f"blurred_sigma_{args.blur_sigma:g}": blurred_report,
        "throughput": {
            "images_per_second": round(images_per_second, 1),
            "threads": args.threads,
            "images_per_second_one_thread": round(images_per_second_one_thread, 1),
            "image_size": list(images.shape[-2:]),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "cpu": platform.processor() or platform.machine(),
        },
        "segmenter_fid": {
            "features": segmenter.num_features,
            f"renders_vs_other_renders_{args.images}": segmenter_fid(segmenter, images, other_images),
            f"renders_vs_blurred_sigma_{args.blur_sigma:g}": segmenter_fid(segmenter, other_images, blurred),
        },
        "torch": torch.__version__,
    }
    write_json(args.out, report)
    print(f"mean IoU {clean['mean_iou']:.4f} (bar {MEAN_IOU_BAR}), blurred {blurred_report['mean_iou']:.4f}, "
          f"{images_per_second:.0f} images/s; wrote {args.out}")
    for name in LABELS:
        print(f"  {name:10s} {clean['per_class_iou'][name]:.4f}  blurred {blurred_report['per_class_iou'][name]:.4f}")


if __name__ == "__main__":
    main()
