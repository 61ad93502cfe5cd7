"""Train the Toytown segmenter on an endless stream of fresh renders, augmented to look like GAN samples.

Seeds start at 2_000_000_000, disjoint from evaluation (0..999) and the GAN trainer (10_000_000+).
Augmentation (random Gaussian blur, colour jitter, pixel noise) makes it label blurrier GAN
samples well. The learning rate follows a cosine over the wall-clock budget.

Resumable: the training state (weights, optimizer, stream position, time spent) is saved
atomically to --state every --save-every seconds; running the same command again continues
from it until the budget is spent. The final weights go atomically to --out (the package path).

Example (CPU, ~25 minutes):  python experiments/toytown/train_toytown_segmenter.py --minutes 25
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rewriting.atomic import atomic_path
from rewriting.toytown.labels import LABELS, NUM_LABELS
from rewriting.toytown.renderer import RenderedStream, render_seeds
from rewriting.toytown.segmenter import DEFAULT_WEIGHTS, DEFAULT_WIDTHS, ToytownSegmenter, segmenter_checkpoint

FIRST_TRAINING_SEED = 2_000_000_000
FREQUENCY_IMAGES = 512  # renders used to estimate label frequencies for the class weights


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="where the final weights go")
    parser.add_argument("--state", type=Path, default=Path("training_runs/toytown_segmenter/state.pt"))
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget, summed over resumes")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--widths", type=int, nargs=3, default=list(DEFAULT_WIDTHS))
    parser.add_argument("--clean-share", type=float, default=0.25, help="share of images left unaugmented")
    parser.add_argument("--max-blur", type=float, default=1.2, help="largest blur sigma in pixels")
    parser.add_argument("--save-every", type=float, default=120.0, help="seconds between state saves")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (it costs ~40 s once, then trains ~4x faster on CPU)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def class_weights(images_count: int) -> torch.Tensor:
    """Square-root inverse-frequency weights (NUM_LABELS,), mean 1: small parts count more, not overwhelmingly."""
    _, labels = render_seeds(range(FIRST_TRAINING_SEED - images_count, FIRST_TRAINING_SEED))
    counts = torch.bincount(labels.flatten(), minlength=NUM_LABELS).double().clamp(min=1)
    weights = (counts.sum() / counts).sqrt()
    return (weights / weights.mean()).float()


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image (N, C, H, W) with its own sigma (N,) in pixels; sigma 0 leaves it unchanged."""
    count, channels, height, width = images.shape
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    safe = sigmas.clamp(min=1e-3)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    # sigma 0 -> a delta kernel, exactly the identity
    delta = (offsets == 0).to(images.dtype)[None].expand_as(kernels)
    kernels = torch.where((sigmas > 0)[:, None], kernels, delta)
    kernels = kernels.repeat_interleave(channels, dim=0)  # (N*C, taps)
    flat = images.reshape(1, count * channels, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=count * channels)
    flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=count * channels)
    return flat.reshape(count, channels, height, width)


def augment(images: torch.Tensor, clean_share: float, max_blur: float, generator: torch.Generator) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> blurred, colour-jittered, noisy copies; labels stay valid."""
    count = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, *shape, generator=generator)

    augmented = gaussian_blur(images, uniform(0.0, max_blur))
    pixels = (augmented + 1) / 2
    gain = uniform(0.85, 1.15, 1, 1, 1) * uniform(0.95, 1.05, 3, 1, 1)
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = mean + (pixels - mean) * uniform(0.85, 1.15, 1, 1, 1)  # contrast
    pixels = pixels * gain + uniform(-0.06, 0.06, 1, 1, 1)  # brightness and colour balance
    pixels = pixels + torch.randn(pixels.shape, generator=generator) * uniform(0.0, 0.04, 1, 1, 1)
    augmented = (pixels * 2 - 1).clamp(-1, 1)
    keep_clean = (torch.rand(count, generator=generator) < clean_share)[:, None, None, None]
    return torch.where(keep_clean, images, augmented)


def learning_rate(base: float, progress: float) -> float:
    """Short linear warm-up, then cosine decay to 2% of `base` at the end of the budget."""
    warmup = 0.02
    if progress < warmup:
        return base * max(progress / warmup, 0.05)
    cosine = 0.5 * (1 + math.cos(math.pi * min((progress - warmup) / (1 - warmup), 1.0)))
    return base * (0.02 + 0.98 * cosine)


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    segmenter = ToytownSegmenter(widths=args.widths)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=args.lr)
    stream = RenderedStream(args.batch, first_seed=FIRST_TRAINING_SEED)
    generator = torch.Generator().manual_seed(args.seed)
    step, spent_seconds = 0, 0.0
    if args.state.is_file():
        state = torch.load(args.state, map_location="cpu", weights_only=True)
        segmenter = ToytownSegmenter(widths=state["widths"])
        segmenter.load_state_dict(state["model"])
        optimizer = torch.optim.Adam(segmenter.parameters(), lr=args.lr)
        optimizer.load_state_dict(state["optimizer"])
        stream.next_seed = state["next_seed"]
        generator.set_state(state["generator"])
        step, spent_seconds = state["step"], state["spent_seconds"]
        print(f"resumed at step {step}, {spent_seconds / 60:.1f} min spent, next seed {stream.next_seed}")
    budget_seconds = args.minutes * 60
    segmenter = segmenter.to(memory_format=torch.channels_last).train()
    # The compiled module shares the segmenter's parameters; states and weights are saved from the segmenter.
    forward = segmenter if args.no_compile else torch.compile(segmenter)
    weights = class_weights(FREQUENCY_IMAGES)
    print("class weights:", {name: round(float(w), 2) for name, w in zip(LABELS, weights)})
    log_path = args.state.parent / "log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def snapshot() -> dict:
        return {
            "widths": list(segmenter.widths),
            "model": {name: tensor.contiguous() for name, tensor in segmenter.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "next_seed": stream.next_seed,
            "generator": generator.get_state(),
            "step": step,
            "spent_seconds": spent_seconds,
        }

    run_start = time.monotonic()
    spent_at_start = spent_seconds
    last_save = last_log = run_start
    running_loss = running_accuracy = 0.0
    images_seen = 0
    while spent_seconds < budget_seconds:
        progress = spent_seconds / budget_seconds
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, progress)
        images, labels = next(stream)
        images = augment(images, args.clean_share, args.max_blur, generator)
        logits = forward(images.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        images_seen += images.shape[0]
        running_loss = 0.98 * running_loss + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
        accuracy = float((logits.argmax(dim=1) == labels).float().mean())
        running_accuracy = 0.98 * running_accuracy + 0.02 * accuracy if step > 1 else accuracy
        now = time.monotonic()
        spent_seconds = spent_at_start + (now - run_start)
        if now - last_log > 30:
            record = {
                "step": step,
                "minutes": round(spent_seconds / 60, 2),
                "lr": optimizer.param_groups[0]["lr"],
                "loss": round(running_loss, 4),
                "pixel_accuracy": round(running_accuracy, 4),
                "images_per_second": round(images_seen / (now - run_start), 1),
            }
            print(json.dumps(record), flush=True)
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
            last_log = now
        if now - last_save > args.save_every:
            save_state(args.state, snapshot())
            last_save = now
    save_state(args.state, snapshot())
    segmenter = segmenter.to(memory_format=torch.contiguous_format).eval()
    with atomic_path(args.out) as temporary:
        torch.save(segmenter_checkpoint(segmenter), temporary)
        temporary.chmod(0o644)  # shipped package data: readable by everyone, unlike mkstemp's 0600
    print(f"saved {args.out} after {step} steps ({spent_seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
