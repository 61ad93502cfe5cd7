"""GAN-dissection baseline for erase: switch off the key channels most specific to the marked region.

The `drank` input units of the layer with the highest specificity to the context masks (the
mask-weighted mean of k² / E[k²], the score the erase target uses) are zeroed everywhere, as a
weight delta ΔW[:, units] = -W[:, units]. Unlike the constrained rewrite, nothing limits the
change to the context: every image loses those units.
"""
from __future__ import annotations

import time

import torch

from ..edits.resolve import ResolvedRequest, stacked_masks
from ..edits.spec import EditSpec
from ..edits.targets import RewriteTarget, erase_target
from ..errors import EditSpecError
from ..features import trace_images
from .rank_one import measured_loss
from .request_method import RequestFit, RequestMethod


def zeroing_delta(weight: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """ΔW that zeroes input channels `units` of a weight (out, in, k, k): -W on those columns, 0 elsewhere."""
    delta = torch.zeros_like(weight)
    delta[:, units] = -weight[:, units]
    return delta


def resolve_drank(method_drank: int | None, request: ResolvedRequest, method_name: str) -> int:
    """The number of units to zero: the method's setting, else the request's drank."""
    drank = method_drank if method_drank is not None else request.drank
    if drank is None:
        raise EditSpecError(f"method {method_name} needs a number of units to zero: set method.drank=N, or use an "
                            f"erase request with a drank")
    if int(drank) < 1:
        raise EditSpecError(f"drank={drank} must be >= 1 (the number of units to zero)")
    return int(drank)


def context_erase_target(generator, layer: int, request: ResolvedRequest, spec: EditSpec,
                         second_moment: torch.Tensor, drank: int, context_images: int | None = None,
                         tight_paste: bool = True) -> tuple[RewriteTarget, torch.Tensor, torch.Tensor]:
    """The layer's erase target on the context images, the zeroed units (drank,) and the masks (n, S, S)."""
    regions = request.context_images(context_images)
    trace = trace_images(generator, layer, [r.image_id for r in regions], spec.seed)
    masks = stacked_masks(regions)
    target, units = erase_target(generator, layer, trace, masks, second_moment, drank, tight_paste)
    return target, units, masks


class UnitZeroing(RequestMethod):
    """Zero the top-`drank` context-specific input units of the layer (a global, unconstrained change)."""
    name = "unit_zeroing"

    def __init__(self, drank: int | None = None, context_images: int | None = None, tight_paste: bool = True):
        super().__init__(tight_paste)
        self.drank = None if drank is None else int(drank)  # None: the request's drank
        self.context_images = context_images

    def describe(self) -> dict:
        return {**super().describe(), "drank": self.drank, "context_images": self.context_images}

    def fit_request(self, generator, layer, request, spec, second_moment, segmenter=None,
                    trainer_options=None) -> RequestFit:
        started = time.perf_counter()
        drank = resolve_drank(self.drank, request, self.name)
        target, units, _ = context_erase_target(generator, layer, request, spec, second_moment, drank,
                                                self.context_images, self.tight_paste)
        module = generator.layer(layer)
        weight = module.weight.detach()
        delta = zeroing_delta(weight, units)
        units = sorted(int(u) for u in units)
        # The loss of the rank-one erase's own target, so the two erase methods read on one scale.
        return RequestFit(delta, measured_loss(module, target, weight), measured_loss(module, target, weight + delta),
                          [], time.perf_counter() - started, units=units, notes={"drank": drank})
