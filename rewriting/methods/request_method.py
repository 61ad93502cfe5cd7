"""Base of methods that work from the request itself (its images and masks), not from a layer's (k*, v*).

The paper's baselines are of this kind: fine-tuning the whole generator on the pasted RGB image,
and GAN-dissection unit zeroing. They may change several tensors, so their fit carries every
changed tensor by state-dict name.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch

from ..edits.resolve import ResolvedRequest
from ..edits.spec import EditSpec
from .rank_one import LayerFit


@dataclass
class RequestFit(LayerFit):
    """A LayerFit whose method may change more than the layer: `deltas` holds every changed tensor."""
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # state-dict name -> change, its shape
    units: list[int] = field(default_factory=list)  # key channels a unit method zeroed
    notes: dict = field(default_factory=dict)  # what the method chose (e.g. its perceptual loss), for metrics.json


class RequestMethod(abc.ABC):
    """A method `rewrite` calls with the resolved request instead of context directions and a layer target."""
    name = "request"
    uses_directions = False
    context_images: int | None = None

    def __init__(self, tight_paste: bool = True):
        self.rank = 1  # the spec and the delta record a rank >= 1; these methods have no rank constraint
        self.tight_paste = bool(tight_paste)

    @abc.abstractmethod
    def fit_request(self, generator, layer: int, request: ResolvedRequest, spec: EditSpec,
                    second_moment: torch.Tensor, segmenter=None, trainer_options: dict | None = None) -> RequestFit:
        """Every tensor change (by state-dict name) that makes `generator` follow the request."""

    def describe(self) -> dict:
        return {"name": self.name, "rank_constrained": False, "tight_paste": self.tight_paste}
