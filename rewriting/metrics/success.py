"""Editing success as the paper counts it, from segmentations of unedited and edited samples.

Shares are pooled over pixels (every source pixel of every sample weighs the same), so a
sum of per-batch counts gives the same number as one big batch. NaN means "undefined":
no sample had a source (or erased) pixel.
"""

from __future__ import annotations

from typing import Sequence

import torch


def class_mask(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Labels (N, H, W) int -> bool (N, H, W), true where the label is one of `classes`."""
    if len(classes) == 0:
        raise ValueError("class list is empty: name at least one class index")
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype, device=labels.device))


def _check_pair(labels_before: torch.Tensor, labels_after: torch.Tensor) -> None:
    if labels_before.shape != labels_after.shape or labels_before.dim() != 3:
        raise ValueError(
            f"labels before and after must both be (N, H, W) of one shape; got {tuple(labels_before.shape)} "
            f"and {tuple(labels_after.shape)}"
        )


def _share(hits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """hits / total as float64, NaN where total is 0."""
    hits, total = hits.double(), total.double()
    return torch.where(total > 0, hits / total.clamp_min(1), torch.full_like(total, float("nan")))


def edit_success_counts(
    labels_before: torch.Tensor, labels_after: torch.Tensor, source: Sequence[int], target: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (source pixels now labelled a target class, source pixels), both int64 (N,)."""
    _check_pair(labels_before, labels_after)
    was_source = class_mask(labels_before, source)
    now_target = class_mask(labels_after, target)
    return (was_source & now_target).flatten(1).sum(1), was_source.flatten(1).sum(1)


def edit_success(
    labels_before: torch.Tensor, labels_after: torch.Tensor, source: Sequence[int], target: Sequence[int]
) -> float:
    """Among pixels labelled a source class before, the share labelled a target class after (NaN if none)."""
    hits, total = edit_success_counts(labels_before, labels_after, source, target)
    return float(_share(hits.sum(), total.sum()))


def edit_success_per_sample(
    labels_before: torch.Tensor, labels_after: torch.Tensor, source: Sequence[int], target: Sequence[int]
) -> torch.Tensor:
    """Edit success of each sample, float64 (N,), NaN for samples without source pixels."""
    return _share(*edit_success_counts(labels_before, labels_after, source, target))


def erase_success_counts(
    labels_before: torch.Tensor, labels_after: torch.Tensor, erased: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (erased-class pixels no longer labelled any erased class, erased-class pixels), int64 (N,)."""
    _check_pair(labels_before, labels_after)
    was_erased_class = class_mask(labels_before, erased)
    # A window that turns into a door while erasing both is not erased: any erased class counts as still there.
    gone = was_erased_class & ~class_mask(labels_after, erased)
    return gone.flatten(1).sum(1), was_erased_class.flatten(1).sum(1)


def erase_success(labels_before: torch.Tensor, labels_after: torch.Tensor, erased: Sequence[int]) -> float:
    """Share of pixels labelled an erased class before that no erased class labels after (NaN if none)."""
    hits, total = erase_success_counts(labels_before, labels_after, erased)
    return float(_share(hits.sum(), total.sum()))


def erase_success_per_sample(
    labels_before: torch.Tensor, labels_after: torch.Tensor, erased: Sequence[int]
) -> torch.Tensor:
    """Erase success of each sample, float64 (N,), NaN for samples without erased-class pixels."""
    return _share(*erase_success_counts(labels_before, labels_after, erased))


PRESENCE_MIN_PIXELS = 4  # a sample shows a part when more than this many of its pixels carry the label


def shows_labels(labels: torch.Tensor, num_labels: int, min_pixels: int = PRESENCE_MIN_PIXELS) -> torch.Tensor:
    """Labels (N, H, W) -> bool (N, num_labels): whether each sample shows each label on more than min_pixels pixels."""
    flat = labels.reshape(labels.shape[0], -1).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= num_labels):
        raise ValueError(f"labels must lie in 0..{num_labels - 1}; got {int(flat.min())}..{int(flat.max())}")
    pixels = torch.zeros(flat.shape[0], num_labels, dtype=torch.long, device=labels.device)
    pixels.scatter_add_(1, flat, torch.ones_like(flat))
    return pixels > min_pixels


def label_presence_counts(labels: torch.Tensor, num_labels: int, min_pixels: int = PRESENCE_MIN_PIXELS) -> torch.Tensor:
    """Labels (N, H, W) -> int64 (num_labels,): how many samples show each label on more than min_pixels pixels."""
    return shows_labels(labels, num_labels, min_pixels).sum(0)


def label_presence(labels: torch.Tensor, names: Sequence[str], min_pixels: int = PRESENCE_MIN_PIXELS) -> dict[str, float]:
    """Share of samples showing each part (more than min_pixels pixels, as toytown's scene_summary): name -> share.

    `names[i]` is the name of label i. Used e.g. for "the share of samples that still show a watermark".
    """
    counts = label_presence_counts(labels, len(names), min_pixels)
    samples = labels.shape[0]
    return {name: (float(counts[index]) / samples if samples else float("nan")) for index, name in enumerate(names)}
