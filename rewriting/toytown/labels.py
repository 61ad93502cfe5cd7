"""The Toytown part labels, their display colours, and per-image part presence."""

from __future__ import annotations

import torch

LABELS: tuple[str, ...] = (
    "sky",
    "ground",
    "building",
    "spire",
    "dome",
    "flat_roof",
    "window",
    "door",
    "tree",
    "watermark",
)
LABEL_INDEX: dict[str, int] = {name: index for index, name in enumerate(LABELS)}
NUM_LABELS = len(LABELS)
# The parts whose share of samples a Toytown generator must match to its renderer's.
SHARE_PARTS: tuple[str, ...] = ("spire", "dome", "flat_roof", "window", "tree", "watermark")

# One distinct colour per label (RGB in [0, 1]) for looking at label maps.
LABEL_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.55, 0.75, 1.00),  # sky
    (0.45, 0.30, 0.15),  # ground
    (0.85, 0.85, 0.85),  # building
    (0.90, 0.10, 0.10),  # spire
    (0.10, 0.30, 0.95),  # dome
    (1.00, 0.60, 0.00),  # flat_roof
    (1.00, 1.00, 0.00),  # window
    (0.60, 0.00, 0.70),  # door
    (0.05, 0.65, 0.10),  # tree
    (1.00, 0.00, 1.00),  # watermark
)


def colorize_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label maps (N, H, W) int -> colour images (N, 3, H, W) float in [-1, 1]."""
    palette = torch.tensor(LABEL_COLORS, dtype=torch.float32, device=labels.device)
    return (palette[labels.long()] * 2 - 1).permute(0, 3, 1, 2).contiguous()


def scene_summary(labels: torch.Tensor, min_pixels: int = 4) -> dict[str, torch.Tensor]:
    """Which parts each image shows: name -> bool (N,), true where the part covers > min_pixels."""
    flat = labels.reshape(labels.shape[0], -1).long()
    counts = torch.zeros(flat.shape[0], NUM_LABELS, dtype=torch.long, device=labels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    return {name: counts[:, index] > min_pixels for index, name in enumerate(LABELS)}
