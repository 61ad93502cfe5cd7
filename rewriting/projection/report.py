"""What a projection is worth: reconstruction PSNR / LPIPS / segmenter agreement, the edit's effect, the picture.

Images are (N, 3, H, W) in [-1, 1]; distances are on the [0, 1] scale, as in rewriting.metrics.distance.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import WeightsUnavailableError
from ..metrics.distance import l1_map, load_lpips, lpips_map, masked_l1, source_region
from ..metrics.success import edit_success
from ..visualize import image_grid


def psnr(reference: torch.Tensor, image: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of `image` against `reference` (both in [-1, 1]), on the [0, 1] scale."""
    error = ((image.float() - reference.float()) / 2).pow(2).mean().item()
    return math.inf if error == 0 else 10 * math.log10(1 / error)


def lpips_or_reason(net: str | None) -> tuple[object | None, str | None]:
    """The LPIPS metric model, or None and why (its weights are absent offline, or it was turned off)."""
    if not net:
        return None, "lpips=null"
    try:
        return load_lpips(net), None
    except WeightsUnavailableError as error:
        return None, str(error)


def reconstruction_metrics(photo: torch.Tensor, reconstruction: torch.Tensor, segmenter=None,
                           lpips_model=None) -> dict:
    """PSNR, LPIPS (with a model) and, with a segmenter, the share of pixels labelled alike in both."""
    metrics = {"reconstruction_psnr": psnr(photo, reconstruction),
               "reconstruction_l1": l1_map(photo.cpu(), reconstruction.cpu()).mean().item()}
    if lpips_model is not None:
        metrics["reconstruction_lpips"] = lpips_map(photo, reconstruction, lpips_model).mean().item()
    if segmenter is not None:
        labels_photo, labels_reconstruction = segmenter.segment(photo), segmenter.segment(reconstruction)
        metrics["segmenter_agreement"] = (labels_photo == labels_reconstruction).float().mean().item()
    return metrics


def edit_metrics(reconstruction: torch.Tensor, edited: torch.Tensor, segmenter=None,
                 source: Sequence[int] | None = None, target: Sequence[int] | None = None) -> dict:
    """How an edit changed the reconstruction: L1 overall, and with a segmenter and source classes, L1 outside the
    (1-px dilated) source region and the share of source pixels now labelled a target class."""
    reconstruction, edited = reconstruction.cpu(), edited.cpu()
    metrics = {"edit_l1": l1_map(reconstruction, edited).mean().item()}
    if segmenter is None or not source:
        return metrics
    labels_before, labels_after = segmenter.segment(reconstruction).cpu(), segmenter.segment(edited).cpu()
    region = source_region(labels_before, list(source))
    metrics["edit_source_pixels"] = int(torch.isin(labels_before, torch.tensor(list(source))).sum())
    metrics["edit_masked_l1_outside"] = masked_l1(reconstruction, edited, 1 - region)
    if target:
        share = edit_success(labels_before, labels_after, list(source), list(target))
        metrics["edit_success"] = None if math.isnan(share) else share
    return metrics


def before_after_picture(photo: torch.Tensor, reconstruction: torch.Tensor, edited: torch.Tensor | None = None,
                         segmenter=None):
    """PIL picture: photo | reconstruction | edited reconstruction; with a segmenter, their label maps below."""
    images = [photo, reconstruction] + ([edited] if edited is not None else [])
    images = torch.cat([image.detach().float().cpu().clamp(-1, 1) for image in images])
    rows = [images]
    from ..toytown.labels import NUM_LABELS, colorize_labels
    if segmenter is not None and getattr(segmenter, "num_labels", None) == NUM_LABELS:  # Toytown's palette
        rows.append(colorize_labels(segmenter.segment(images)).cpu())
    return image_grid(rows, scale=max(1, 256 // images.shape[-1]))
