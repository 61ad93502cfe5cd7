"""The unedited side of a metric pass, cached on disk: the same for every edit of one generator.

Every edit of a generator is measured on the same seeded latents, so the unedited generator's
images, their segmentations and the FID reference statistics repeat from run to run. They are
stored once, keyed (like the second moment) by everything they depend on, and a later pass
computes only the edited side; the metrics it gives are identical to a full pass.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..atomic import atomic_path
from ..models.checkpoints import state_dict_sha256
from ..models.download import cache_dir as cache_root

# 3: images made in per-layer CPU chunks (CPU_CHUNK_BYTES); 4: channels-last upsampling;
# 5: demodulation, noise and bias in one pass
CACHE_FORMAT = 5
DEFAULT_MAX_MEGABYTES = 2048  # larger samples (e.g. 10,000 256-px images) are recomputed, not stored
# The unedited synthesis's states before an edited layer: one entry per layer, so a smaller limit.
STATES_FORMAT = 1
STATES_MAX_MEGABYTES = 1024


def _module_hash(module) -> str | None:
    """The weights hash of an nn.Module; None for anything else (its output is then not cached)."""
    return state_dict_sha256(module) if isinstance(module, nn.Module) else None


def can_cache(segmenter=None, fid_features=None) -> bool:
    """Whether the unedited side can be keyed: a segmenter or feature module must have weights to hash."""
    return all(part is None or isinstance(part, nn.Module) for part in (segmenter, fid_features))


def unedited_key(generator: nn.Module, num_samples: int, batch_size: int, seed: int, segmenter=None,
                 fid_features=None) -> dict:
    """Everything the unedited side depends on; any change gives another cache entry."""
    parameter = next(generator.parameters())
    return {"format": CACHE_FORMAT, "family": getattr(generator, "family", type(generator).__name__),
            "weights_sha256": state_dict_sha256(generator),
            "truncation": float(getattr(generator, "truncation", 1.0)),
            "noise_mode": getattr(generator, "noise_mode", "none"), "num_samples": int(num_samples),
            # Convolutions may round differently at another batch size, dtype or device.
            "batch_size": int(batch_size), "seed": int(seed), "dtype": str(parameter.dtype),
            "device": parameter.device.type, "torch": torch.__version__,
            "segmenter_sha256": _module_hash(segmenter), "fid_features_sha256": _module_hash(fid_features)}


def default_cache_dir() -> Path:
    return cache_root() / "metrics"


@dataclass
class UneditedSide:
    """Per-sample images (N, 3, H, W) float32 and labels (N, H, W), with the FID reference states."""

    images: list[torch.Tensor] = field(default_factory=list)  # one tensor per batch, as generated
    labels: list[torch.Tensor] = field(default_factory=list)
    fid_reference: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


class UneditedCache:
    """One cache entry: `load()` gives the stored side or None; `save(side)` stores it atomically."""

    def __init__(self, key: dict, cache_dir: str | os.PathLike | None = None,
                 max_megabytes: float = DEFAULT_MAX_MEGABYTES) -> None:
        self.key_text = json.dumps(key, sort_keys=True)
        digest = hashlib.sha256(self.key_text.encode()).hexdigest()[:24]
        self.path = Path(cache_dir or default_cache_dir()) / f"unedited_{digest}.pt"
        self.max_bytes = max_megabytes * 2**20

    def fits(self, image_shape: tuple[int, ...], num_samples: int) -> bool:
        """Whether the images of num_samples samples of image_shape (C, H, W) stay under the size limit."""
        pixels = num_samples * int(torch.tensor(image_shape).prod())
        return pixels * 4 <= self.max_bytes

    def load(self) -> UneditedSide | None:
        if not self.path.is_file():
            return None
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:
            return None  # a corrupt or foreign file is recomputed and replaced
        if stored.get("key") != self.key_text:
            return None
        labels = [label.to(getattr(torch, stored["labels_dtype"])) for label in stored["labels"]]
        return UneditedSide(stored["images"], labels, stored["fid_reference"])

    def save(self, side: UneditedSide) -> None:
        with atomic_path(self.path) as temporary:
            torch.save({"key": self.key_text, "images": [image.cpu() for image in side.images],
                        # Class indices fit a byte; they are given back in the segmenter's own dtype.
                        "labels": [label.cpu().to(torch.uint8) if label.numel() == 0 or int(label.max()) < 256
                                   else label.cpu()
                                   for label in side.labels],
                        "labels_dtype": str(side.labels[0].dtype).removeprefix("torch.") if side.labels else "int64",
                        "fid_reference": {name: {state: value.cpu() for state, value in states.items()}
                                          for name, states in side.fid_reference.items()}}, temporary)


class SynthesisStatesCache:
    """The unedited generator's synthesis states before one layer, per batch of a metric pass.

    The layers before an edited one are the same in the edited generator, so a later edit of that
    layer runs only the layers from there on. `load()` gives the states or None; `save(states)` stores them.
    """

    def __init__(self, key: dict, layer: int, cache_dir: str | os.PathLike | None = None,
                 max_megabytes: float = STATES_MAX_MEGABYTES) -> None:
        self.key_text = json.dumps({**key, "states_format": STATES_FORMAT, "layer": int(layer)}, sort_keys=True)
        digest = hashlib.sha256(self.key_text.encode()).hexdigest()[:24]
        self.path = Path(cache_dir or default_cache_dir()) / f"states_layer{int(layer)}_{digest}.pt"
        self.max_bytes = max_megabytes * 2**20

    def fits(self, bytes_per_batch: int, batches: int) -> bool:
        return bytes_per_batch * batches <= self.max_bytes

    def load(self) -> list | None:
        from ..models.stylegan2 import SynthesisState
        if not self.path.is_file():
            return None
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
            if stored.get("key") != self.key_text:
                return None
            return [SynthesisState.from_stored(state) for state in stored["states"]]
        except Exception:
            return None  # a corrupt or foreign file is recomputed and replaced

    def save(self, states: list) -> None:
        with atomic_path(self.path) as temporary:
            torch.save({"key": self.key_text,
                        "states": [{name: value.cpu() if isinstance(value, torch.Tensor) else value
                                    for name, value in state.stored().items()} for state in states]}, temporary)
