"""Undesired change: how far an edit moves pixels outside the edited region (L1 and spatial LPIPS).

Images come in the generators' [-1, 1] range; distances are reported on the [0, 1] scale.
Masks ("keep") are float (N, 1, H, W) in [0, 1]: 1 where a pixel counts, soft values weigh it.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from rewriting.errors import RewritingError
from rewriting.metrics.success import class_mask
from rewriting.metrics.weights import require_weights

LPIPS_NETS = ("alex", "vgg")
# AlexNet's pooling needs >= 31 px input; smaller images are upsampled to this size for LPIPS.
LPIPS_MIN_SIZE = 64


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1]."""
    return (images + 1) / 2


def _as_keep(keep: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    keep = keep.unsqueeze(1) if keep.dim() == 3 else keep
    n, _, h, w = images.shape
    if keep.shape != (n, 1, h, w):
        raise ValueError(f"keep mask must be (N, 1, H, W) = {(n, 1, h, w)} for these images; got {tuple(keep.shape)}")
    return keep.to(device=images.device, dtype=torch.float32)


def _check_images(before: torch.Tensor, after: torch.Tensor) -> None:
    if before.shape != after.shape or before.dim() != 4:
        raise ValueError(
            f"images before and after must both be (N, C, H, W) of one shape; got {tuple(before.shape)} "
            f"and {tuple(after.shape)}"
        )


class MaskedMean:
    """Mean of a per-pixel distance map over kept pixels, accumulated in float64 across batches."""

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def add(self, distance_map: torch.Tensor, keep: torch.Tensor) -> "MaskedMean":
        """Add a batch: distance_map (N, 1, H, W), keep (N, 1, H, W) weights."""
        keep = _as_keep(keep, distance_map)
        self.total += float((distance_map.double() * keep.double()).sum())
        self.weight += float(keep.double().sum())
        return self

    @property
    def value(self) -> float:
        """The weighted mean so far; NaN while no pixel was kept."""
        return self.total / self.weight if self.weight > 0 else float("nan")


def l1_map(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> (N, 1, H, W) absolute difference on the [0, 1] scale, channel mean."""
    _check_images(before, after)
    return ((after.float() - before.float()).abs() / 2).mean(dim=1, keepdim=True)


def masked_l1(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean absolute difference over kept pixels and all channels, images mapped to [0, 1] (NaN if none kept)."""
    return MaskedMean().add(l1_map(before, after), keep).value


def source_region(labels_before: torch.Tensor, source: Sequence[int], dilate: int = 1) -> torch.Tensor:
    """Labels (N, H, W) -> float (N, 1, H, W): pixels of the source classes, grown by `dilate` px (a square).

    This is "the edited region"; undesired change is measured on 1 - region.
    """
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels; got {dilate}")
    region = class_mask(labels_before, source).unsqueeze(1).float()
    if dilate > 0:
        region = F.max_pool2d(region, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    return region


def load_lpips(net: str = "alex", device: torch.device | str = "cpu"):
    """The real LPIPS metric (ImageNet backbone + the package's calibrated linear layers), spatial output.

    Raises WeightsUnavailableError, naming the file and where to put it, when the backbone is absent.
    """
    if net not in LPIPS_NETS:
        raise RewritingError(f"LPIPS net {net!r} is not supported; use one of {LPIPS_NETS} (or disable LPIPS).")
    require_weights(net)
    import lpips

    with warnings.catch_warnings():
        # torchvision deprecates the `pretrained=` argument lpips still passes.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, spatial=True, verbose=False)
    return model.to(device).eval().requires_grad_(False)


def lpips_map(before: torch.Tensor, after: torch.Tensor, model) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> spatial LPIPS (N, 1, H, W) of a spatial lpips.LPIPS model."""
    _check_images(before, after)
    if not getattr(model, "spatial", False):
        raise ValueError("masked LPIPS needs a spatial LPIPS model: build it with lpips.LPIPS(..., spatial=True)")
    size = before.shape[-2:]
    device = next(model.parameters()).device
    before, after = before.to(device, torch.float32), after.to(device, torch.float32)
    if min(size) < LPIPS_MIN_SIZE:
        scale = LPIPS_MIN_SIZE / min(size)
        before = F.interpolate(before, scale_factor=scale, mode="bilinear", align_corners=False)
        after = F.interpolate(after, scale_factor=scale, mode="bilinear", align_corners=False)
    with torch.no_grad():
        distance = model(before, after)
    if distance.shape[-2:] != size:
        distance = F.interpolate(distance, size=tuple(size), mode="area")
    return distance


def masked_lpips(
    before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor, net: str = "alex", model=None
) -> float:
    """Spatial LPIPS averaged over kept pixels (images in [-1, 1]); loads the `net` model unless one is given."""
    model = model if model is not None else load_lpips(net, before.device)
    return MaskedMean().add(lpips_map(before, after, model), keep.to(next(model.parameters()).device)).value
