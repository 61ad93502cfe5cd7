"""How strongly a rewrite's context directions reach the keys of a region (the paste, say).

A constrained update W + Λ D changes a layer's output at key k by Λ (D k). Where the paste
region's keys have almost no component along the context directions, the fit can only reach its
target there with a huge Λ, and then changes every other image more than the paste region: the
edit spills (or, with the step budget spent, does nothing). Reach puts a number on it: the
energy of the region's keys in the directions, relative to that of an average key under the
second moment (1: like an average key; an edit that works reaches its paste region many times
more strongly than that).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..features import trace_images
from .targets import context_directions, masked_keys

# Below this a paste region is reached no more strongly than a few average keys, and the fit's
# change to it is a change to every image (measured: edits at reach < 1 spilled or did nothing).
LOW_REACH = 2.0


def reach(keys: torch.Tensor, directions: torch.Tensor, second_moment: torch.Tensor) -> float:
    """Mean over keys (m, in) of their energy in the span of directions (r, in), relative to an average key's.

    For one direction d: mean (d·k)² / dᵀCd. For r directions: mean kᵀ Dᵀ(D C Dᵀ)⁻¹ D k / r, so an
    average key (E[k kᵀ] = C) has reach 1 whatever r.
    """
    directions = directions.to(torch.float64).cpu()
    along = keys.to(torch.float64).cpu() @ directions.t()  # (m, r)
    gram = directions @ second_moment.to(torch.float64).cpu() @ directions.t()  # (r, r)
    energy = (along * torch.linalg.solve(gram, along.t()).t()).sum(1)
    return float(energy.mean() / directions.shape[0])


def region_directions(generator, layer: int, regions: Sequence[tuple[int, torch.Tensor]], seed: int,
                      second_moment: torch.Tensor, rank: int) -> torch.Tensor:
    """Context directions (rank, in) of (image id, mask (H, W)) regions: what the rewrite and the scorer both use."""
    trace = trace_images(generator, layer, [image_id for image_id, _ in regions], seed)
    keys = [masked_keys(trace.keys[i], mask) for i, (_, mask) in enumerate(regions)]
    return context_directions(keys, second_moment, rank)


def regions_reach(generator, layer: int, regions: Sequence[tuple[int, torch.Tensor]], seed: int,
                  directions: torch.Tensor, second_moment: torch.Tensor) -> list[float]:
    """Reach of each (image id, mask (H, W)) region along directions (r, in), its images traced in one batch."""
    trace = trace_images(generator, layer, [image_id for image_id, _ in regions], seed)
    return [reach(masked_keys(trace.keys[i], mask), directions, second_moment) for i, (_, mask) in enumerate(regions)]


@dataclass
class ReachScorer:
    """Scores candidate regions by how strongly the context directions at `layer` reach them."""
    generator: torch.nn.Module
    layer: int
    second_moment: Callable[[], torch.Tensor]  # (in, in); called only when a score is needed
    rank: int = 1
    context_images: int | None = None  # the method's limit on context images (None: all)

    def scores(self, context: Sequence[tuple[int, torch.Tensor]], candidates: Sequence[tuple[int, torch.Tensor]],
               seed: int) -> list[float]:
        """Reach of each candidate (image id, mask (H, W)) along the context's directions, as the rewrite computes them."""
        second_moment = self.second_moment()
        context = context[:self.context_images] if self.context_images else context
        directions = region_directions(self.generator, self.layer, context, seed, second_moment, self.rank)
        return regions_reach(self.generator, self.layer, candidates, seed, directions, second_moment)


def default_reach_scorer(generator, layer: int, rank: int = 1) -> ReachScorer:
    """A scorer with the default second moment at `layer` (run.py's defaults: 1,000 samples, seed 0, cached)."""
    from ..statistics import second_moment
    device = next(generator.parameters()).device
    return ReachScorer(generator, layer, lambda: second_moment(generator, layer, progress=False).matrix.to(device), rank)
