"""Pretrained backbone files the metrics need, where they are expected, and the presence check.

LPIPS and Inception FID load their backbones through `torch.hub.load_state_dict_from_url`,
which looks in `torch.hub.get_dir()/checkpoints/` and otherwise downloads. Our machines
are offline, so a missing file must be caught before the library tries the download and
fails with an opaque DNS error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from rewriting.errors import RewritingError, WeightsUnavailableError


@dataclass(frozen=True)
class BackboneWeights:
    """One pretrained file: who uses it, where it comes from, and how to skip the metric without it."""

    name: str
    used_by: str
    url: str
    filename: str
    sha256_prefix: str | None  # torch.hub's naming convention: first hex digits of the file's sha256
    skip_option: str

    @property
    def path(self) -> Path:
        """Where torch.hub looks for the file now (follows TORCH_HOME and torch.hub.set_dir)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


BACKBONE_WEIGHTS: dict[str, BackboneWeights] = {
    "alex": BackboneWeights(
        name="alex",
        used_by="LPIPS (alex)",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        filename="alexnet-owt-7be5be79.pth",
        sha256_prefix="7be5be79",  # torchvision checks it on load
        skip_option="metrics.lpips=false",
    ),
    "vgg": BackboneWeights(
        name="vgg",
        used_by="LPIPS (vgg)",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        filename="vgg16-397923af.pth",
        sha256_prefix="397923af",  # torchvision checks it on load
        skip_option="metrics.lpips=false",
    ),
    "inception": BackboneWeights(
        name="inception",
        used_by="Inception FID (torchmetrics / torch-fidelity)",
        url=(
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth"
        ),
        filename="weights-inception-2015-12-05-6726825d.pth",
        sha256_prefix=None,  # torch-fidelity does not check the hash; we have not confirmed what the suffix is
        skip_option="metrics.inception_fid=false",
    ),
}


def _lookup(name: str) -> BackboneWeights:
    if name not in BACKBONE_WEIGHTS:
        raise RewritingError(f"unknown metric backbone {name!r}; choose one of {sorted(BACKBONE_WEIGHTS)}.")
    return BACKBONE_WEIGHTS[name]


def missing_weights_message(name: str) -> str:
    """The fix for an absent backbone file: what it is, where to get it, where to put it, how to skip."""
    weights = _lookup(name)
    return (
        f"{weights.used_by} needs the pretrained file {weights.filename}, which is not at {weights.path} "
        f"(and this machine may be offline, so it cannot be downloaded now). Download {weights.url} "
        f"on a machine with internet and save it as {weights.path} (the folder follows TORCH_HOME), "
        f"or skip this metric with {weights.skip_option}."
    )


def require_weights(name: str, verify_hash: bool = False) -> Path:
    """Path of backbone `name`'s file in the torch hub cache; WeightsUnavailableError if it is absent."""
    weights = _lookup(name)
    path = weights.path
    if not path.is_file():
        raise WeightsUnavailableError(missing_weights_message(name))
    if verify_hash and weights.sha256_prefix is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(weights.sha256_prefix):
            raise WeightsUnavailableError(
                f"{path} is not the expected {weights.filename} (its sha256 does not start with "
                f"{weights.sha256_prefix}); delete it and download {weights.url} again, "
                f"or skip this metric with {weights.skip_option}."
            )
    return path
