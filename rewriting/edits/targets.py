"""Turn a request into what the rewrite fits: context directions D, and target keys/values.

copy/paste: the copy image's values inside its mask's box are alpha-composited at the paste
location into the target image's own values; the keys are the target image's own keys.
erase: the target values are the layer's output with the masked region's keys changed: the key
channels most specific to it zeroed there (`zero_units`, the paper's), or every key there set to
the mean key of a ring around it (`surroundings`, ours: the region is filled in from what
surrounds it, so small parts such as windows become the wall around them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import MaskError
from ..features import LayerTrace, layer_values
from ..statistics import whitening
from .masks import bounding_box, mask_centre, resize_mask
from .spec import ERASE_FILLS

# Key positions around the region whose mean fills it. On the Toytown windows a ring of 1 erased
# clearly less; 3 erased a little more than 2 but with more change around the windows.
SURROUNDINGS_RING = 2


@dataclass
class RewriteTarget:
    """Examples the edited layer must map: keys in `trace`, wanted values, where the loss counts."""
    trace: LayerTrace  # n examples
    target_values: torch.Tensor  # (n, out, H, W)
    loss_weights: torch.Tensor  # (n, 1, H, W) in [0, 1]


def masked_keys(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keys at positions a mask marks, weighted by it. keys (in, h, w), mask (any size) -> (m, in)."""
    weights = resize_mask(mask.float(), tuple(keys.shape[-2:])).to(keys.device).flatten()
    flat = keys.flatten(1).t()  # (h*w, in)
    selected = weights > 0
    if not selected.any():
        raise MaskError("a context mask covers no position at this layer's resolution; draw a larger mask "
                        "or choose a layer with finer features")
    return flat[selected] * weights[selected, None].to(flat.dtype)


def context_directions(context_keys: list[torch.Tensor], second_moment: torch.Tensor, rank: int) -> torch.Tensor:
    """Rank-r context directions, orthonormal rows (r, in).

    context_keys: per context image, its mask-weighted keys (m_i, in). The keys are whitened
    with Z = C^(-1/2), the top-r right singular vectors v of all of them are mapped back
    (d = Z v, so rank 1 gives d ∝ C⁻¹k* for the dominant key k*), then orthonormalized.
    """
    whitener = whitening(second_moment).to(torch.float64)
    stacked = torch.cat([k.to(torch.float64).cpu() for k in context_keys], 0) @ whitener.cpu()
    _, _, right = torch.linalg.svd(stacked, full_matrices=False)
    rank = min(rank, right.shape[0])
    directions = right[:rank] @ whitener.cpu()  # rows d_j = Z v_j (Z is symmetric)
    orthonormal, _ = torch.linalg.qr(directions.t())
    return orthonormal.t().to(torch.float32)


def paste_box(copy_box: tuple[int, int, int, int], paste_mask: torch.Tensor,
              anchor: str = "centre") -> tuple[int, int]:
    """Top-left of a box the copy box's size on the paste mask, clamped inside.

    anchor "centre": centred on the mask's centre; "bottom": centred across it, its bottom edge on
    the mask's lowest marked row.
    """
    height, width = copy_box[2] - copy_box[0], copy_box[3] - copy_box[1]
    centre_row, centre_column = mask_centre(paste_mask)
    if anchor == "bottom":
        top = bounding_box(paste_mask)[2] - height
    else:
        top = int(round(centre_row + 0.5 - height / 2))
    left = int(round(centre_column + 0.5 - width / 2))
    top = min(max(top, 0), paste_mask.shape[0] - height)
    left = min(max(left, 0), paste_mask.shape[1] - width)
    return top, left


def copy_paste_target(copy_trace: LayerTrace, copy_mask: torch.Tensor, target_trace: LayerTrace,
                      paste_mask: torch.Tensor, tight_paste: bool = True, anchor: str = "centre") -> RewriteTarget:
    """Composite target: copy values in the copy mask's box, alpha-blended at the paste location.

    copy_trace / target_trace: traces of one image each; masks any size (resized to the values');
    anchor: where the box goes on the paste mask (see paste_box).
    """
    value_size = tuple(target_trace.values.shape[-2:])
    alpha = resize_mask(copy_mask.float(), value_size).to(target_trace.values.device)
    where = resize_mask(paste_mask.float(), value_size)
    top, left, bottom, right = bounding_box(alpha)
    paste_top, paste_left = paste_box((top, left, bottom, right), where, anchor)
    height, width = bottom - top, right - left
    target = target_trace.values.clone()
    region = (slice(None), slice(None), slice(paste_top, paste_top + height), slice(paste_left, paste_left + width))
    copied = copy_trace.values[:, :, top:bottom, left:right]
    crop_alpha = alpha[top:bottom, left:right]
    target[region] = crop_alpha * copied + (1 - crop_alpha) * target[region]
    weights = torch.zeros(1, 1, *value_size, device=target.device)
    if tight_paste:
        weights[region] = 1.0
    else:
        weights[:] = 1.0
    return RewriteTarget(target_trace, target, weights)


def unit_specificity(keys: torch.Tensor, masks: torch.Tensor, second_moment_diagonal: torch.Tensor) -> torch.Tensor:
    """Per key channel: mask-weighted mean of k² / E[k²], averaged over images. -> (in,)."""
    weights = torch.stack([resize_mask(m.float(), tuple(keys.shape[-2:])) for m in masks]).to(keys.device)
    energy = keys.pow(2) / second_moment_diagonal.to(keys)[None, :, None, None].clamp_min(1e-12)
    per_image = (energy * weights[:, None]).sum((2, 3)) / weights.sum((1, 2))[:, None].clamp_min(1e-12)
    return per_image.mean(0)


def fill_from_surroundings(features: torch.Tensor, masks: torch.Tensor, ring: int = SURROUNDINGS_RING
                            ) -> torch.Tensor:
    """Features (n, c, h, w) set, at every position each mask (n, S, S) touches, to the mean of a ring around it.

    Every touched position is replaced outright, not blended by mask coverage: parts smaller than
    one key position (windows at 16x16) would otherwise hardly change.
    """
    weights = torch.stack([resize_mask(m.float(), tuple(features.shape[-2:])) for m in masks]).to(features)[:, None]
    inside = (weights > 0).to(features)
    ring_mask = F.max_pool2d(inside, 2 * ring + 1, stride=1, padding=ring) - inside
    count = ring_mask.sum((2, 3), keepdim=True)
    if (count == 0).any():
        raise MaskError("an erase region covers the whole image at this layer's resolution, so nothing surrounds "
                        "it to fill it from; mark a smaller region or use erase_fill: zero_units")
    surroundings = (features * ring_mask).sum((2, 3), keepdim=True) / count
    return features * (1 - inside) + surroundings * inside


def erase_target(generator, layer: int, trace: LayerTrace, masks: torch.Tensor, second_moment: torch.Tensor,
                 drank: int | None, tight_paste: bool = True, fill: str = "zero_units"
                 ) -> tuple[RewriteTarget, torch.Tensor]:
    """Target values with each mask's keys erased: top-`drank` specific channels zeroed, or filled from around.

    trace: n images; masks (n, H_img, W_img). Returns the target and the zeroed channel indices
    (none for fill="surroundings").
    """
    if fill == "surroundings":
        units = torch.zeros(0, dtype=torch.long)
        erased_keys = fill_from_surroundings(trace.keys, masks)
    elif fill == "zero_units":
        units = zeroed_units(trace.keys, masks, second_moment, drank)
        key_size = tuple(trace.keys.shape[-2:])
        key_masks = torch.stack([resize_mask(m.float(), key_size) for m in masks]).to(trace.keys.device)
        suppress = torch.ones_like(trace.keys)
        suppress[:, units] = 1 - key_masks[:, None]
        erased_keys = trace.keys * suppress
    else:
        raise ValueError(f"erase fill {fill!r}: use one of {', '.join(ERASE_FILLS)}")
    erased = LayerTrace(erased_keys, trace.style, trace.noise, trace.values)
    target_values = layer_values(generator, layer, erased)
    value_size = tuple(trace.values.shape[-2:])
    weights = torch.zeros(masks.shape[0], 1, *value_size, device=trace.values.device)
    for i, mask in enumerate(masks):
        value_mask = resize_mask(mask.float(), value_size)
        if tight_paste:
            top, left, bottom, right = bounding_box(value_mask)
            weights[i, :, top:bottom, left:right] = 1.0
        else:
            weights[i] = 1.0
    return RewriteTarget(trace, target_values, weights), units


def zeroed_units(keys: torch.Tensor, masks: torch.Tensor, second_moment: torch.Tensor, drank: int) -> torch.Tensor:
    """The `drank` key channels most specific to the masked regions. keys (n, in, h, w) -> (drank,)."""
    scores = unit_specificity(keys, masks, second_moment.diagonal())
    return scores.topk(min(int(drank), scores.numel())).indices


def crop_to_loss_region(target: RewriteTarget, kernel_size: int = 3) -> RewriteTarget:
    """The same loss on fewer positions: keys cut to the loss box plus the conv's reach.

    Exact for 3x3 convs, plain (values at key resolution) or upsampling (values at 2x, after a
    4-tap blur), because every value inside the box sees only keys inside the cut.
    """
    keys, values = target.trace.keys, target.target_values
    factor = values.shape[-1] // keys.shape[-1]
    if kernel_size != 3 or factor not in (1, 2) or values.shape[-1] != factor * keys.shape[-1]:
        return target
    marked = target.loss_weights.expand(values.shape[0], 1, *values.shape[-2:]).amax(dim=(0, 1)) > 0
    if not marked.any():
        return target
    top, left, bottom, right = bounding_box(marked.float())
    halo = 1 if factor == 1 else 2
    key_box = [max(top // factor - halo, 0), max(left // factor - halo, 0),
               min(-(-bottom // factor) + halo, keys.shape[-2]), min(-(-right // factor) + halo, keys.shape[-1])]
    value_box = [key_box[0] * factor, key_box[1] * factor, key_box[2] * factor, key_box[3] * factor]
    rows, columns = slice(value_box[0], value_box[2]), slice(value_box[1], value_box[3])
    noise = target.trace.noise
    if noise is not None:
        noise = noise[..., rows, columns]
    trace = LayerTrace(keys[..., key_box[0]:key_box[2], key_box[1]:key_box[3]], target.trace.style, noise,
                       target.trace.values[..., rows, columns])
    weights = target.loss_weights.expand(values.shape[0], 1, *values.shape[-2:])[..., rows, columns]
    return RewriteTarget(trace, values[..., rows, columns], weights)
