"""From an edit spec to masks: decode painted masks, or segment generated images for labelled regions.

Labelled regions ("the spire in image 12") are resolved with a segmenter on the generated image and
the resulting mask is recorded in the spec (`resolved_mask`), so the edit replays without it.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import EditSpecError, MaskError
from .latents import latents_for_ids
from .masks import encode_mask, resize_mask
from .spec import EditSpec, Region


@dataclass
class ResolvedRegion:
    image_id: int
    mask: torch.Tensor  # (H, W) float in [0, 1], at the mask's own size
    where: str  # its place in the spec, for messages


@dataclass
class ResolvedRequest:
    context: list[ResolvedRegion]
    copy: ResolvedRegion | None
    paste: ResolvedRegion | None
    erase: bool
    drank: int | None
    erase_fill: str = "zero_units"
    paste_anchor: str = "centre"

    def context_images(self, limit: int | None = None) -> list[ResolvedRegion]:
        """The context regions, the first `limit` of them when a method uses fewer (None: all)."""
        return self.context[:limit] if limit else self.context


def stacked_masks(regions: list[ResolvedRegion]) -> torch.Tensor:
    """The regions' masks (n, S, S), resized to the largest one's size S."""
    size = max(max(r.mask.shape) for r in regions)
    return torch.stack([resize_mask(r.mask, (size, size)) for r in regions])


def label_names(segmenter) -> tuple[str, ...]:
    names = getattr(segmenter, "label_names", None)
    if names is None:
        from ..toytown.labels import LABELS
        names = LABELS
    return tuple(names)


def label_indices(segmenter, names: str | list[str]) -> list[int]:
    """Class indices of label names, with a clear error for unknown names."""
    known = label_names(segmenter)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EditSpecError(f"label(s) {unknown} unknown to the segmenter; known labels: {', '.join(known)}")
    return [known.index(n) for n in names]


@torch.no_grad()
def generated_images(generator, image_ids: list[int], seed: int = 1, batch_size: int = 32) -> torch.Tensor:
    """Images (N, 3, H, W) of the request's image ids, as the edit sees them."""
    from ..features import batched_noise, noise_for
    device = next(generator.parameters()).device
    images = []
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start:start + batch_size]
        z = latents_for_ids(chunk, generator.z_dim, seed).to(device)
        noise = batched_noise([noise_for(generator, 1, seed=image_id, device=device) for image_id in chunk])
        images.append(generator(z, noise=noise))
    return torch.cat(images)


# Within labels_remembered(): segmentations by (generator, segmenter, seed, image id). A request's
# searches (context, copy, paste, then each region's mask) look at the same first images again and again.
_remembered_labels: contextvars.ContextVar[dict | None] = contextvars.ContextVar("remembered_labels", default=None)


@contextlib.contextmanager
def labels_remembered() -> Iterator[None]:
    """While open, label_masks makes and segments each image once; the generator must not change inside."""
    outer = _remembered_labels.get()
    token = _remembered_labels.set({} if outer is None else outer)
    try:
        yield
    finally:
        _remembered_labels.reset(token)


@torch.no_grad()
def image_labels(generator, segmenter, image_ids: list[int], seed: int = 1) -> torch.Tensor:
    """The segmenter's labels (N, H, W) of the request's image ids."""
    known = _remembered_labels.get()
    if known is None:
        return segmenter.segment(generated_images(generator, image_ids, seed)).cpu()
    key = (id(generator), id(segmenter), seed)
    missing = [i for i in dict.fromkeys(image_ids) if (key, i) not in known]
    if missing:
        for image_id, labels in zip(missing, segmenter.segment(generated_images(generator, missing, seed)).cpu()):
            known[key, image_id] = labels
    return torch.stack([known[key, i] for i in image_ids])


@torch.no_grad()
def label_masks(generator, segmenter, image_ids: list[int], names: str | list[str], seed: int = 1) -> torch.Tensor:
    """Masks (N, H, W) of the pixels the segmenter labels as any of `names` in each image."""
    indices = torch.tensor(label_indices(segmenter, names))
    return torch.isin(image_labels(generator, segmenter, image_ids, seed), indices).float()


@torch.no_grad()
def find_images_with_label(generator, segmenter, names: str | list[str], count: int, start: int = 0,
                           search: int = 1000, min_pixels: int = 16, seed: int = 1,
                           exclude: tuple[int, ...] = (), min_piece: int = 1) -> list[int]:
    """The first `count` image ids from `start` whose segmentation shows `names` (≥ min_pixels).

    Pieces under `min_piece` pixels do not count (see without_small_pieces).
    """
    found: list[int] = []
    for first in range(start, start + search, 64):
        ids = [i for i in range(first, min(first + 64, start + search)) if i not in exclude]
        masks = label_masks(generator, segmenter, ids, names, seed)
        found += [i for i, m in zip(ids, masks) if without_small_pieces(m, min_piece).sum() >= min_pixels]
        if len(found) >= count:
            return found[:count]
    raise EditSpecError(f"only {len(found)} of images {start}..{start + search - 1} show {names!r} "
                        f"(≥ {min_pixels} px); need {count}. Lower the count or search more images.")


# Regions that are one object: copy one tree, paste on one spire. The copy is placed at the paste
# mask's centre, which for two spires would be the sky between them.
ONE_OBJECT_REGIONS = ("request.copy", "request.paste")


def mask_pieces(mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """8-connected pieces of a binary mask (H, W): the piece index per pixel (0: none), and each piece's size."""
    from scipy import ndimage
    marked = mask.numpy() > 0
    components, count = ndimage.label(marked, structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    return components, np.asarray(ndimage.sum(marked, components, index=range(1, count + 1)))


def without_small_pieces(mask: torch.Tensor, min_piece: int) -> torch.Tensor:
    """A binary mask (H, W) without its 8-connected pieces of fewer than `min_piece` pixels.

    Segmenters leave specks of a class in other parts of an image (a few 'spire' pixels in the sky);
    a context or paste region that keeps them also rewrites what lies under them.
    """
    if min_piece <= 1 or not mask.any():
        return mask
    components, sizes = mask_pieces(mask)
    return torch.from_numpy(np.isin(components, 1 + np.flatnonzero(sizes >= min_piece))).to(mask.dtype)


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected region of a binary mask (H, W)."""
    components, sizes = mask_pieces(mask)
    if len(sizes) <= 1:
        return mask
    return torch.from_numpy(components == 1 + int(sizes.argmax())).to(mask.dtype)


def extended_up(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """A binary mask (H, W) that also marks the `pixels` rows above each marked pixel (not past the top)."""
    extended = mask.clone()
    for shift in range(1, min(pixels, mask.shape[0] - 1) + 1):
        extended[:-shift] = torch.maximum(extended[:-shift], mask[shift:])
    return extended


def label_region_mask(where: str, region: Region, generator, segmenter, seed: int, min_piece: int = 1,
                      context_extend_up: int = 0) -> torch.Tensor:
    """The mask (H, W) a labelled region resolves to: its label's pixels in its generated image.

    min_piece: drop the label's pieces under this many pixels first (see without_small_pieces);
    context_extend_up: extend a context mask this many pixels upward (see extended_up).
    """
    if segmenter is None:
        raise EditSpecError(f"{where} names label {region.label!r}, which needs a segmenter for this generator "
                            f"(metrics.segmenter); paint a mask instead")
    mask = without_small_pieces(label_masks(generator, segmenter, [region.image_id], region.label, seed)[0],
                                min_piece)
    if where in ONE_OBJECT_REGIONS:
        mask = largest_component(mask)
    if where.startswith("request.context") and context_extend_up > 0:
        # The space above the region, where a taller pasted object will stand, follows the new rule too.
        mask = extended_up(mask, context_extend_up)
    if mask.sum() == 0:
        pieces = f" piece of {min_piece} pixels or more" if min_piece > 1 else ""
        fix = "lower request.min_piece or choose another image" if min_piece > 1 else "choose another image id"
        raise MaskError(f"{where}: the segmenter finds no {region.label!r}{pieces} in image {region.image_id}; "
                        f"{fix}")
    return mask


def resolve_labels(spec: EditSpec, generator, segmenter, min_piece: int = 1, context_extend_up: int = 0) -> EditSpec:
    """Record a mask for every labelled region (in place), segmenting its generated image (see label_region_mask)."""
    for where, region in spec.request.named_regions():
        if region.label is None or region.resolved_mask is not None:
            continue
        region.resolved_mask = encode_mask(label_region_mask(where, region, generator, segmenter, spec.seed,
                                                             min_piece, context_extend_up))
    return spec


def _resolve(region: Region, where: str, spec: EditSpec) -> ResolvedRegion:
    return ResolvedRegion(region.image_id, region.load_mask(spec.base_dir, origin=where), where)


def resolve_request(spec: EditSpec, generator, segmenter=None) -> ResolvedRequest:
    """Masks of every region of the spec as tensors; labelled regions resolved with the segmenter."""
    resolve_labels(spec, generator, segmenter)
    request = spec.request
    context = [_resolve(r, f"request.context[{i}]", spec) for i, r in enumerate(request.context)]
    copy = _resolve(request.copy, "request.copy", spec) if request.copy is not None else None
    paste = _resolve(request.paste, "request.paste", spec) if request.paste is not None else None
    if not context:
        # Original requests without context use the paste region as the context (as the original did).
        context = [paste if paste is not None else None]
        if context[0] is None:
            raise EditSpecError("the request has neither context regions nor a paste region")
    return ResolvedRequest(context, copy, paste, request.erase, request.drank, request.erase_fill,
                           request.paste_anchor)
