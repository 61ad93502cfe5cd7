"""`rewrite`: one edit request applied to one layer of a generator, step by step.

request → masks → keys/values at the layer → context directions D (whitened by C) → target
(copy/paste composite or erase) → method fit (ΔW) → ΔW added to the generator (revertible).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from .deltas import add_delta
from .edits.reach import LOW_REACH, region_directions, regions_reach
from .edits.resolve import ResolvedRequest, resolve_request, stacked_masks
from .edits.loading import load_edit, validate_image_ids
from .edits.spec import EditSpec
from .edits.targets import RewriteTarget, copy_paste_target, erase_target
from .errors import EditSpecError, OptimizationError
from .features import trace_images
from .methods.rank_one import ConstrainedRewrite, LayerFit, LayerMethod
from .methods.request_method import RequestFit, RequestMethod
from .statistics import second_moment as compute_or_load_second_moment
from .statistics_batches import SecondMoment

log = logging.getLogger("rewriting")

MAX_IMAGE_ID = 10_000_000  # the original sampled ids from a fixed-size table; ours is unbounded but sane


@dataclass
class RewriteResult:
    spec: EditSpec
    layer: int
    weight_name: str
    delta: torch.Tensor  # in the state-dict shape of `weight_name`
    directions: torch.Tensor | None  # (r, in)
    fit: LayerFit
    second_moment: SecondMoment
    edit_seconds: float
    request: ResolvedRequest | None = None
    erased_units: list[int] = field(default_factory=list)
    deltas: dict[str, torch.Tensor] | None = None  # every changed tensor, when a method changes more than the layer
    paste_reach: float | None = None  # see rewriting.edits.reach; None without directions or paste

    def delta_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.deltas) if self.deltas is not None else {self.weight_name: self.delta}


def build_target(generator, layer: int, request: ResolvedRequest, spec: EditSpec, method: LayerMethod,
                 second_moment: torch.Tensor) -> tuple[RewriteTarget, list[int]]:
    if request.erase:
        regions = request.context_images(method.context_images)
        trace = trace_images(generator, layer, [r.image_id for r in regions], spec.seed)
        masks = stacked_masks(regions)
        target, units = erase_target(generator, layer, trace, masks, second_moment, request.drank,
                                     method.tight_paste, request.erase_fill)
        return target, units.tolist()
    copy_trace = trace_images(generator, layer, [request.copy.image_id], spec.seed)
    paste_trace = trace_images(generator, layer, [request.paste.image_id], spec.seed)
    return copy_paste_target(copy_trace, request.copy.mask, paste_trace, request.paste.mask,
                             method.tight_paste, request.paste_anchor), []


def rewrite(generator, spec: EditSpec | str, method: LayerMethod | RequestMethod | None = None,
            layer: int | None = None, second_moment: SecondMoment | None = None, statistics_samples: int = 1000,
            statistics_seed: int = 0, statistics_cache: str | None = None, segmenter=None,
            trainer_options: dict | None = None, apply: bool = True, progress: bool = True) -> RewriteResult:
    """Fit the edit and (by default) add ΔW to `generator` in place; `revert_deltas` undoes it."""
    if not isinstance(spec, EditSpec):
        spec = load_edit(spec)
    method = method or ConstrainedRewrite()
    layer = spec.layer if layer is None else layer
    if layer is None:
        raise EditSpecError("no layer given: pass layer=N (the paper's numbering) or set it in the edit spec")
    generator.layer(layer)  # raises LayerError naming the valid range
    spec.layer = layer
    validate_image_ids(spec, MAX_IMAGE_ID)
    started = time.perf_counter()
    request = resolve_request(spec, generator, segmenter)
    if second_moment is None:
        second_moment = compute_or_load_second_moment(generator, layer, statistics_samples, statistics_seed,
                                                      cache_dir=statistics_cache, progress=progress)
    started = time.perf_counter() if not second_moment.from_cache else started
    matrix = second_moment.matrix.to(next(generator.parameters()).device)

    directions = None
    paste_reach = None
    if isinstance(method, RequestMethod):
        # Baselines (fine-tune all, unit zeroing) work from the request's images and masks, not from k*, v*.
        fit = method.fit_request(generator, layer, request, spec, matrix, segmenter, trainer_options)
        units = fit.units
    else:
        if method.uses_directions:
            regions = [(r.image_id, r.mask) for r in request.context_images(method.context_images)]
            directions = region_directions(generator, layer, regions, spec.seed, matrix, method.rank).to(matrix.device)
            if request.paste is not None and not request.erase:
                paste_reach = regions_reach(generator, layer, [(request.paste.image_id, request.paste.mask)],
                                            spec.seed, directions, matrix)[0]
                if paste_reach < LOW_REACH:
                    log.warning("the context directions reach the paste region (image %d) only %.2f times as "
                                "strongly as an average key: the rewrite can change it only by changing every "
                                "image as much, so expect the edit to spill or do nothing. Paste onto an object "
                                "like the context's (pick: reachable for a labelled paste), or mark context "
                                "regions like the paste.", request.paste.image_id, paste_reach)
        target, units = build_target(generator, layer, request, spec, method, matrix)
        fit = method.fit(generator, layer, target, directions, trainer_options)
    several = fit.deltas if isinstance(fit, RequestFit) and fit.deltas else None
    changes = list(several.values()) if several else [fit.delta]
    if not all(torch.isfinite(c).all() for c in changes) or not torch.isfinite(torch.tensor(fit.final_loss)):
        raise OptimizationError("the rewrite produced a non-finite weight change; lower method.lr. Nothing was "
                                "written.")
    weight_name = generator.layer_weight_name(layer)
    stored = dict(generator.named_parameters())[weight_name]
    delta = fit.delta.detach().to(stored.dtype).reshape(stored.shape).cpu()
    deltas = {name: change.detach().cpu() for name, change in several.items()} if several else None
    result = RewriteResult(spec, layer, weight_name, delta, directions, fit, second_moment,
                           time.perf_counter() - started, request, units, deltas, paste_reach)
    if apply:
        add_delta(generator, result.delta_tensors(), label=f"{spec.name} (layer {layer})")
    return result
