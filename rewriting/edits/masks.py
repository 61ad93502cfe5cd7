"""Masks: soft weights in [0, 1] over an image, as float tensors (H, W).

A mask travels as a PNG, either inline as a ``data:image/png;base64,...`` URL or as
a file. The original requests are white strokes on a transparent background with
anti-aliased (soft) alpha, so a mask with transparency is read from its alpha
channel; a fully opaque image is read from its luminance (white = marked).
"""

import base64
import binascii
import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rewriting.errors import MaskError

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def _describe_source(source: str) -> str:
    """A short human name for a mask source: the path, or the start of a data URL."""
    if _DATA_URL.match(source):
        return f"data URL ({len(source)} characters)"
    return repr(source)


def _read_image(source: str, base_dir: Path | None, origin: str) -> Image.Image:
    url_prefix = _DATA_URL.match(source)
    if url_prefix:
        try:
            payload = base64.b64decode(source[url_prefix.end():])
        except (binascii.Error, ValueError) as error:
            raise MaskError(
                f"mask {origin} is a data URL whose base64 payload is corrupt ({error}); "
                "re-export the mask"
            ) from error
        stream, where = io.BytesIO(payload), "data URL"
    elif source.startswith("data:"):
        raise MaskError(
            f"mask {origin} is a data URL but not a base64 image "
            "(expected 'data:image/png;base64,...')"
        )
    else:
        path = Path(source)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise MaskError(
                f"mask {origin}: file {str(path)!r} does not exist; give a data URL or a path "
                "relative to the edit spec's folder"
            )
        stream, where = path, f"file {str(path)!r}"
    try:
        image = Image.open(stream)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise MaskError(f"mask {origin}: {where} is not a readable image ({error})") from error
    return image


def _luminance(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0.0, 1.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def _weights(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        alpha = np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float64) / 255.0
        # An opaque image carries its mask in the colours, not in the alpha channel.
        if alpha.min() < 1.0:
            return alpha
        return _luminance(image.convert("RGB"))
    return _luminance(image)


def decode_mask(
    source: str, base_dir: Path | None = None, origin: str | None = None
) -> torch.Tensor:
    """Decode a data URL or image file (relative to base_dir) into a mask, float32 (H, W).

    origin names where the mask came from in error messages (e.g. "request.paste").
    """
    if not isinstance(source, str) or not source:
        raise MaskError(
            f"mask {origin or 'source'} must be a data URL or a file path, got {source!r}"
        )
    origin = origin or _describe_source(source)
    weights = _weights(_read_image(source, base_dir, origin))
    if not np.any(weights > 0):
        raise MaskError(
            f"mask {origin} marks nothing (every pixel is zero); paint the region to edit"
        )
    return torch.from_numpy(weights.astype(np.float32))


def encode_mask(mask: torch.Tensor) -> str:
    """Encode a mask (H, W) in [0, 1] as a white-on-transparent PNG data URL."""
    values = _checked_mask(mask).detach().cpu().to(torch.float64).numpy()
    if values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise MaskError(
            f"mask values must lie in [0, 1], got [{values.min():.4g}, {values.max():.4g}]"
        )
    alpha = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    # Colour is white wherever anything is drawn, black elsewhere, like the original
    # requests, so tools that read only the colour see the same region.
    luminance = np.where(alpha > 0, 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([luminance, alpha], axis=-1), mode="LA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _checked_mask(mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if hasattr(mask, "shape") else type(mask).__name__
        raise ValueError(f"a mask is a 2-D tensor (H, W), got {shape}")
    if not torch.isfinite(mask).all():
        raise MaskError("mask contains NaN or infinite values")
    return mask


def _area_weights(source_size: int, target_size: int) -> torch.Tensor:
    """Row-stochastic (target_size, source_size) matrix of pixel overlaps, float64.

    Output cell i covers [i, i + 1) * source_size / target_size in source pixels; each
    source pixel contributes the length of its overlap with that interval.
    """
    edges = torch.arange(target_size + 1, dtype=torch.float64) * source_size / target_size
    pixels = torch.arange(source_size, dtype=torch.float64)[None, :]
    overlap = torch.minimum(edges[1:, None], pixels + 1) - torch.maximum(edges[:-1, None], pixels)
    overlap = overlap.clamp(min=0.0)
    return overlap / overlap.sum(dim=1, keepdim=True)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a mask (H, W) to size (h, w): each output cell is the mean over its footprint.

    Exact area averaging for any ratio, down or up; upsampling by a whole factor equals
    nearest-neighbour, so a 256 mask on 512 features keeps hard edges.
    """
    _checked_mask(mask)
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"resize_mask size must be positive, got {size}")
    if (height, width) == tuple(mask.shape):
        return mask.clone()
    rows = _area_weights(mask.shape[0], height).to(mask.device)
    columns = _area_weights(mask.shape[1], width).to(mask.device)
    resized = rows @ mask.to(torch.float64) @ columns.T
    out_dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    return resized.to(out_dtype)


def bounding_box(mask: torch.Tensor, threshold: float = 0.0) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of pixels above threshold; bottom and right are exclusive."""
    marked = _checked_mask(mask) > threshold
    if not marked.any():
        raise MaskError(f"mask marks nothing above {threshold}; it has no bounding box")
    marked_rows = marked.any(dim=1).nonzero()[:, 0]
    marked_columns = marked.any(dim=0).nonzero()[:, 0]
    return (
        int(marked_rows[0]),
        int(marked_columns[0]),
        int(marked_rows[-1]) + 1,
        int(marked_columns[-1]) + 1,
    )


def mask_centre(mask: torch.Tensor) -> tuple[float, float]:
    """Weighted centre (row, column) of a mask, in pixel index coordinates."""
    weights = _checked_mask(mask).to(torch.float64)
    total = weights.sum()
    if total <= 0:
        raise MaskError("mask marks nothing; it has no centre")
    rows = torch.arange(weights.shape[0], dtype=torch.float64, device=weights.device)
    columns = torch.arange(weights.shape[1], dtype=torch.float64, device=weights.device)
    row = (weights.sum(dim=1) * rows).sum() / total
    column = (weights.sum(dim=0) * columns).sum() / total
    return float(row), float(column)
