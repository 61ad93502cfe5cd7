"""A labelled edit request's regions, found once: later runs on the same generator and segmenter read them.

Finding "the first 8 images showing a spire" means generating and segmenting dozens of images;
the answer depends only on the generator's weights and sampling, the segmenter's weights, the
request config and (for `pick: reachable`) the layer and statistics, so it is stored under a key
made of all of them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..atomic import write_json
from ..errors import EditSpecError
from ..models.checkpoints import state_dict_sha256
from ..models.download import cache_dir as cache_root
from .spec import EditSpec

log = logging.getLogger("rewriting")

# 2: the images searched are made in per-layer CPU chunks; 3: channels-last upsampling;
# 4: demodulation, noise and bias in one pass
CACHE_FORMAT = 4


def default_cache_dir() -> Path:
    return cache_root() / "edits"


def resolved_spec_key(request_config: dict, generator: nn.Module, segmenter: nn.Module, context: dict) -> dict:
    """Everything a labelled request's resolution depends on; `context`: layer, statistics, method rank, version."""
    # The weights in memory, not the checkpoint file's hash: the generator may carry applied deltas.
    return {"format": CACHE_FORMAT, "request": request_config, "generator_sha256": state_dict_sha256(generator),
            "generator_family": getattr(generator, "family", type(generator).__name__),
            "truncation": float(getattr(generator, "truncation", 1.0)),
            "noise_mode": getattr(generator, "noise_mode", "none"),
            "device": next(generator.parameters()).device.type,
            "segmenter_sha256": state_dict_sha256(segmenter), "torch": torch.__version__, **context}


def cached_resolved_spec(key: dict, make: Callable[[], EditSpec], cache_dir: str | os.PathLike | None = None
                         ) -> EditSpec:
    """The spec stored under `key`, or `make()`'s, stored for next time."""
    text = json.dumps(key, sort_keys=True, default=str)
    path = Path(cache_dir or default_cache_dir()) / f"spec_{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if json.dumps(stored["key"], sort_keys=True, default=str) == text:
                return EditSpec.from_dict(stored["spec"], origin=str(path))
        except (OSError, ValueError, KeyError, EditSpecError) as error:
            log.warning("ignoring the unreadable resolved-edit cache entry %s (%s); resolving again", path, error)
    spec = make()
    try:
        write_json(path, {"key": key, "spec": spec.to_dict()})
    except OSError as error:
        log.warning("could not store the resolved edit under %s (%s); the next run resolves it again", path, error)
    return spec
