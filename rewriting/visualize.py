"""Image grids: the same latents through the unedited and the edited generator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, 3, H, W)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def image_grid(rows: list[torch.Tensor], scale: int = 1, gap: int = 2) -> Image.Image:
    """Rows of images (each (N, 3, H, W) in [-1, 1], same N) as one picture with white gaps."""
    columns, _, height, width = rows[0].shape
    height, width = height * scale, width * scale
    canvas = torch.full((3, len(rows) * (height + gap) - gap, columns * (width + gap) - gap), 255, dtype=torch.uint8)
    for r, row in enumerate(rows):
        if scale != 1:
            row = F.interpolate(row.float(), scale_factor=scale, mode="nearest")
        pixels = to_uint8(row)
        for c in range(columns):
            top, left = r * (height + gap), c * (width + gap)
            canvas[:, top:top + height, left:left + width] = pixels[c]
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def outline(images: torch.Tensor, masks: torch.Tensor, colour=(1.0, -1.0, 1.0)) -> torch.Tensor:
    """Images (N, 3, H, W) with the boundary of each mask (N, H, W) drawn in `colour`."""
    masks = F.interpolate(masks[:, None].float(), size=images.shape[-2:], mode="area")[:, 0] > 0.25
    inner = -F.max_pool2d(-masks[:, None].float(), 3, 1, 1)[:, 0] > 0
    border = masks & ~inner
    out = images.clone()
    for channel, value in enumerate(colour):
        out[:, channel][border] = value
    return out
