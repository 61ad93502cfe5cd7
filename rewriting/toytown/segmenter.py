"""A compact U-Net that labels Toytown parts: the domain's stand-in for the paper's scene parser.

It measures edit success (which pixels are spires, which became trees), turns labels into
masks, and supplies the features of a "segmenter FID" for Toytown samples. The shipped
weights were trained by `experiments/toytown/train_toytown_segmenter.py` on renders augmented with
blur, colour jitter and noise, so that blurrier GAN samples are labelled well too.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rewriting.errors import CheckpointError, MaskError, RewritingError
from rewriting.toytown.labels import LABEL_INDEX, LABELS, NUM_LABELS

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "toytown_segmenter.pt"
DEFAULT_WIDTHS = (32, 48, 96)
HEAD_WIDTH = 16  # channels of the full-resolution head


def _conv_block(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ToytownSegmenter(nn.Module):
    """U-Net over three scales (1/2, 1/4, 1/8) plus a full-resolution head.

    images (N, 3, H, W) in [-1, 1] -> part logits (N, num_labels, H, W); H and W must be
    divisible by 8. The stem folds each 2x2 pixel block into channels (lossless), so most
    work happens at half resolution, which keeps the net fast on a CPU; the head sees the
    image at full resolution again so that part boundaries stay pixel-exact.
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, num_labels: int = NUM_LABELS) -> None:
        super().__init__()
        if len(widths) != 3 or any(int(width) < 1 for width in widths):
            raise RewritingError(f"ToytownSegmenter needs three positive widths (one per scale); got {tuple(widths)}.")
        fine, middle, coarse = (int(width) for width in widths)
        self.widths = (fine, middle, coarse)
        self.num_labels = int(num_labels)
        self.encode_fine = nn.Sequential(_conv_block(3 * 4, fine), _conv_block(fine, fine))
        self.encode_middle = nn.Sequential(_conv_block(fine, middle), _conv_block(middle, middle))
        # Dilation at the coarsest scale lets a pixel see a whole roof, which tells spire from dome.
        self.encode_coarse = nn.Sequential(_conv_block(middle, coarse), _conv_block(coarse, coarse, dilation=2))
        self.decode_middle = nn.Sequential(_conv_block(coarse + middle, middle), _conv_block(middle, middle))
        self.decode_fine = _conv_block(middle + fine, fine)
        self.unfold_to_pixels = nn.Conv2d(fine, 4 * HEAD_WIDTH // 2, 1)
        self.head = nn.Sequential(
            _conv_block(HEAD_WIDTH // 2 + 3, HEAD_WIDTH), nn.Conv2d(HEAD_WIDTH, self.num_labels, 1)
        )

    @property
    def num_features(self) -> int:
        """Length D of the vector `features` returns."""
        return sum(self.widths)

    def _encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2] % 8 or images.shape[-1] % 8:
            raise RewritingError(
                f"ToytownSegmenter takes images (N, 3, H, W) with H and W divisible by 8; got {tuple(images.shape)}."
            )
        fine = self.encode_fine(F.pixel_unshuffle(images, 2))
        middle = self.encode_middle(F.max_pool2d(fine, 2))
        coarse = self.encode_coarse(F.max_pool2d(middle, 2))
        return fine, middle, coarse

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> logits (N, num_labels, H, W)."""
        fine, middle, coarse = self._encode(images)
        up = F.interpolate(coarse, scale_factor=2.0, mode="nearest")
        middle = self.decode_middle(torch.cat([up, middle], dim=1))
        up = F.interpolate(middle, scale_factor=2.0, mode="nearest")
        fine = self.decode_fine(torch.cat([up, fine], dim=1))
        pixels = F.pixel_shuffle(self.unfold_to_pixels(fine), 2)
        return self.head(torch.cat([pixels, images], dim=1))

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode and no grad for the duration, restoring the caller's mode after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def segment(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> labels (N, H, W) int64, computed in batches without grad."""
        device = next(self.parameters()).device
        with self._inference():
            chunks = [
                self(_prepared(images[start : start + batch_size], device)).argmax(dim=1)
                for start in range(0, images.shape[0], batch_size)
            ]
        if not chunks:
            return torch.zeros(0, *images.shape[-2:], dtype=torch.int64, device=device)
        return torch.cat(chunks)

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> (N, num_features): encoder features, averaged over space.

        All three scales are pooled so that both fine texture (blur, noise) and layout count.
        """
        device = next(self.parameters()).device
        with self._inference():
            chunks = []
            for start in range(0, images.shape[0], batch_size):
                levels = self._encode(_prepared(images[start : start + batch_size], device))
                chunks.append(torch.cat([level.mean(dim=(2, 3)) for level in levels], dim=1))
        if not chunks:
            return torch.zeros(0, self.num_features, device=device)
        return torch.cat(chunks)


def _prepared(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 on `device`, channels-last: oneDNN's convolutions run ~1.6x faster on CPU that way."""
    return images.to(device, torch.float32).contiguous(memory_format=torch.channels_last)


class SegmenterFeatures(nn.Module):
    """Feature extractor for torchmetrics' `FrechetInceptionDistance(feature=SegmenterFeatures(...))`.

    Takes uint8 images (N, 3, H, W) in [0, 255] (torchmetrics' `normalize=False`) or float
    images in [0, 1] (`normalize=True`) and returns float features (N, num_features).
    It always runs the segmenter in eval mode: a metric must not update BatchNorm statistics.
    """

    def __init__(self, segmenter: ToytownSegmenter) -> None:
        super().__init__()
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.num_features = segmenter.num_features

    def train(self, mode: bool = True) -> "SegmenterFeatures":
        """Stay in eval mode whatever a parent module asks."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) in [0, 255] or float in [0, 1] -> features (N, num_features) float32."""
        if images.dtype == torch.uint8:
            scaled = images.float() / 127.5 - 1.0
        elif images.is_floating_point():
            scaled = images.float() * 2.0 - 1.0
        else:
            raise RewritingError(f"SegmenterFeatures takes uint8 or float images; got dtype {images.dtype}.")
        return self.segmenter.features(scaled)


def load_segmenter(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> ToytownSegmenter:
    """The trained segmenter in eval mode with frozen weights; `path` defaults to the shipped weights."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise CheckpointError(
            f"Toytown segmenter weights not found at {path}. Train them with "
            "`python experiments/toytown/train_toytown_segmenter.py` or pass the path of a saved segmenter."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        segmenter = ToytownSegmenter(widths=checkpoint["widths"], num_labels=len(checkpoint["labels"]))
        segmenter.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError, RewritingError) as error:
        raise CheckpointError(
            f"{path} is not a Toytown segmenter checkpoint ({error}). Re-save it with "
            "`experiments/toytown/train_toytown_segmenter.py`."
        ) from error
    if tuple(checkpoint["labels"]) != LABELS:
        raise CheckpointError(
            f"{path} was trained for labels {tuple(checkpoint['labels'])}, but this package uses {LABELS}. "
            "Retrain it with `experiments/toytown/train_toytown_segmenter.py`."
        )
    return segmenter.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


def segmenter_checkpoint(segmenter: ToytownSegmenter) -> dict:
    """What `load_segmenter` reads: float32 weights, widths and label names."""
    return {
        "widths": list(segmenter.widths),
        "labels": list(LABELS),
        "state_dict": {
            name: tensor.detach().cpu().contiguous().clone() for name, tensor in segmenter.state_dict().items()
        },
    }


def label_mask(labels: torch.Tensor, names: str | Sequence[str]) -> torch.Tensor:
    """Labels (H, W) or (N, H, W) -> float mask(s) of the same shape, 1 where the label is one of `names`."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in LABEL_INDEX]
    if unknown or not names:
        raise MaskError(f"label_mask got unknown part names {unknown or names}; use names from {LABELS}.")
    indices = torch.tensor([LABEL_INDEX[name] for name in names], device=labels.device)
    return torch.isin(labels, indices).float()
