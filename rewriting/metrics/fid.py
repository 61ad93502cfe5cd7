"""Realism: Fréchet distances between two image sets, in Inception or any module's feature space.

Both use torchmetrics' FrechetInceptionDistance, which keeps float64 sums of features and
of their outer products, so image sets stream through in batches and never sit in memory.
Images come in the generators' [-1, 1] range; they are clamped to [0, 1] (torchmetrics'
`normalize=True`) before features are taken.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn as nn
from torchmetrics.image.fid import FrechetInceptionDistance

from rewriting.metrics.distance import to_unit_range
from rewriting.metrics.weights import require_weights

ImageBatches = torch.Tensor | Iterable[torch.Tensor]
# The metric's float64 sums and counts: what a multi-device run adds up across ranks.
FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples",
              "fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")


def iterate_batches(images: ImageBatches, batch_size: int = 50) -> Iterator[torch.Tensor]:
    """A tensor (N, 3, H, W) split into batches, or an iterable of such batches passed through."""
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
    else:
        yield from images


class _PooledFeatures(nn.Module):
    """Wraps a feature module: images [0, 1] -> (N, D), averaging any spatial dims; stays in eval mode."""

    def __init__(self, module: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.module = module.eval()
        with torch.no_grad():
            self.num_features = int(self(example[:1]).shape[1])

    def train(self, mode: bool = True) -> "_PooledFeatures":
        # A metric must not update BatchNorm statistics, whatever a parent module asks.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.module(images)
        return features.flatten(2).mean(2) if features.dim() > 2 else features


def inception_fid_metric(device: torch.device | str = "cpu") -> FrechetInceptionDistance:
    """torchmetrics' Inception FID (pool3, 2048 features) from the torch-fidelity weights in the hub cache.

    Raises WeightsUnavailableError naming the file and where to put it when the weights are absent.
    """
    path = require_weights("inception")
    # sync_on_compute=False: multi-device runs reduce FID_STATES themselves, exactly once.
    return FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path),
                                     sync_on_compute=False).to(device)


def feature_fid_metric(feature_module: nn.Module, example: torch.Tensor) -> FrechetInceptionDistance:
    """FID in the feature space of `feature_module` (takes float images in [0, 1], as torchmetrics' normalize=True).

    `example`: one batch of images (N, 3, H, W) in [-1, 1], used to size the features.
    """
    device = next(iter(feature_module.parameters()), example).device
    example = to_unit_range(example[:1].to(device)).clamp(0, 1)
    wrapped = _PooledFeatures(feature_module, example)
    return FrechetInceptionDistance(feature=wrapped, normalize=True, input_img_size=tuple(example.shape[1:]),
                                     sync_on_compute=False).to(device)


def add_images(metric: FrechetInceptionDistance, images: torch.Tensor, reference: bool) -> None:
    """Add a batch (N, 3, H, W) in [-1, 1] to the reference (`real`) or compared (`fake`) set."""
    device = metric.fake_features_sum.device
    with torch.no_grad():
        metric.update(to_unit_range(images.to(device, torch.float32)).clamp(0, 1), real=reference)


def fid_value(metric: FrechetInceptionDistance) -> float:
    """The Fréchet distance between the two accumulated sets (each needs at least 2 images), >= 0."""
    counts = int(metric.real_features_num_samples), int(metric.fake_features_num_samples)
    if min(counts) < 2:
        raise ValueError(f"FID needs at least 2 images in each set; got {counts[0]} and {counts[1]}")
    # Rounding can leave identical sets a hair below zero (about -1e-9).
    return max(float(metric.compute()), 0.0)


def _fid(metric: FrechetInceptionDistance, images_a: ImageBatches, images_b: ImageBatches, batch_size: int) -> float:
    for batch in iterate_batches(images_a, batch_size):
        add_images(metric, batch, reference=True)
    for batch in iterate_batches(images_b, batch_size):
        add_images(metric, batch, reference=False)
    return fid_value(metric)


def inception_fid(images_a: ImageBatches, images_b: ImageBatches, batch_size: int = 50,
                  device: torch.device | str = "cpu") -> float:
    """Inception FID between two image sets in [-1, 1] (tensors or iterables of batches)."""
    return _fid(inception_fid_metric(device), images_a, images_b, batch_size)


def feature_fid(images_a: ImageBatches, images_b: ImageBatches, feature_module: nn.Module,
                batch_size: int = 50) -> float:
    """FID in `feature_module`'s feature space between two image sets in [-1, 1] ("segmenter FID" with its features).

    The module takes float images in [0, 1] and returns (N, D) or feature maps (N, D, h, w), averaged over space.
    """
    batches_a = iterate_batches(images_a, batch_size)
    first = next(batches_a, None)
    if first is None:
        raise ValueError("FID needs at least 2 images in each set; the first set is empty")
    metric = feature_fid_metric(feature_module, first)

    def with_first() -> Iterator[torch.Tensor]:
        yield first
        yield from batches_a

    return _fid(metric, with_first(), images_b, batch_size)
