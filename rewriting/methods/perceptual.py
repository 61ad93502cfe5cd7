"""Perceptual distances to a fixed target image, with gradients, for the fine-tuning baseline.

LPIPS-VGG is the paper's choice; its ImageNet backbone may be absent offline, so the domain's
segmenter can stand in: an LPIPS-like distance on its encoder features (unit-normalized over
channels, squared difference summed over channels, averaged over scales). Both return a
per-pixel map (N, 1, H, W) so the loss can be restricted to the paste box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RewritingError, WeightsUnavailableError

SEGMENTER_STAGES = ("encode_fine", "encode_middle", "encode_coarse")


class FrozenDistance(nn.Module):
    """A distance module that stays in eval mode (no dropout, no BatchNorm updates) inside a training module."""

    def train(self, mode: bool = True) -> "FrozenDistance":
        return super().train(False)


def _normalized(features: torch.Tensor) -> torch.Tensor:
    return features / features.pow(2).sum(1, keepdim=True).add(1e-20).sqrt()


class SegmenterPerceptual(FrozenDistance):
    """Distance map (N, 1, H, W) between images and fixed targets on the segmenter's encoder features."""

    def __init__(self, segmenter: nn.Module, targets: torch.Tensor):
        super().__init__()
        missing = [name for name in SEGMENTER_STAGES if not hasattr(segmenter, name)]
        if missing:
            raise RewritingError(f"the segmenter has no encoder stages {missing}, which the segmenter perceptual loss "
                                 f"reads; use method.perceptual=none or lpips_vgg")
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.register_buffer("targets", targets.detach().clone())
        with torch.no_grad():
            self.target_features = [f.detach() for f in self.stage_features(targets)]

    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalized outputs of the segmenter's encoder stages for images (N, 3, H, W)."""
        captured: list[torch.Tensor] = []
        handles = [getattr(self.segmenter, name).register_forward_hook(lambda m, i, o: captured.append(o))
                   for name in SEGMENTER_STAGES]
        try:
            self.segmenter(images)
        finally:
            for handle in handles:
                handle.remove()
        return [_normalized(f) for f in captured]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        maps = [F.interpolate((f - t.to(f)).pow(2).sum(1, keepdim=True), size=size, mode="bilinear",
                              align_corners=False)
                for f, t in zip(self.stage_features(images), self.target_features)]
        return torch.stack(maps).mean(0)


class LpipsPerceptual(FrozenDistance):
    """Spatial LPIPS map (N, 1, H, W) between images and fixed targets; small images are upsampled first."""

    def __init__(self, model: nn.Module, targets: torch.Tensor, min_size: int = 64):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.min_size = int(min_size)
        self.register_buffer("targets", targets.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        targets = self.targets.to(images)
        if min(size) < self.min_size:
            scale = self.min_size / min(size)
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
            targets = F.interpolate(targets, scale_factor=scale, mode="bilinear", align_corners=False)
        distance = self.model(images, targets)
        return distance if distance.shape[-2:] == size else F.interpolate(distance, size=tuple(size), mode="area")


def perceptual_distance(choice: str, targets: torch.Tensor, segmenter: nn.Module | None
                        ) -> tuple[nn.Module | None, str, list[str]]:
    """The perceptual distance to `targets` a config asks for: (module or None, its name, warnings).

    choice: auto (LPIPS-VGG if its weights are present, else the segmenter's features, else none),
    lpips_vgg, segmenter or none.
    """
    choices = ("auto", "lpips_vgg", "segmenter", "none")
    if choice not in choices:
        raise RewritingError(f"method.perceptual={choice!r}: use one of {', '.join(choices)}")
    warnings: list[str] = []
    if choice in ("auto", "lpips_vgg"):
        from ..metrics.distance import LPIPS_MIN_SIZE, load_lpips
        try:
            model = load_lpips("vgg", targets.device)
            return LpipsPerceptual(model, targets, LPIPS_MIN_SIZE), "lpips_vgg", warnings
        except WeightsUnavailableError as error:
            if choice == "lpips_vgg":
                raise
            warnings.append(f"LPIPS-VGG unavailable, so the fine-tuning loss does not use it: {error}")
    if choice in ("auto", "segmenter"):
        if segmenter is not None:
            return SegmenterPerceptual(segmenter, targets), "segmenter_features", warnings
        if choice == "segmenter":
            raise RewritingError("method.perceptual=segmenter needs a segmenter for this generator "
                                 "(metrics.segmenter); use method.perceptual=none")
        warnings.append("no segmenter for this generator either: the fine-tuning loss is L1 only")
    return None, "none", warnings
