"""A projection on disk (safetensors): the latent, its noise maps, and where it came from.

Tensors: `latent` (w or w+) and `noise.<i>` per noise layer. Metadata (JSON-encoded values): the
space, the perceptual loss used, the generator's and the photo's sha256, the package version and
the projection settings, so a latent is only rendered with the generator it was fitted to.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..deltas import package_version
from ..errors import CheckpointError
from .optimize import SPACES, Projection


def save_projection(path: str | os.PathLike, projection: Projection, generator_sha256: str | None,
                    image_sha256: str | None = None, extra: dict | None = None) -> Path:
    """Write a projection atomically with its provenance."""
    tensors = {"latent": projection.latent.detach().cpu().contiguous()}
    tensors.update({f"noise.{i}": n.detach().cpu().contiguous() for i, n in enumerate(projection.noise)})
    metadata = {"space": projection.space, "perceptual": projection.perceptual, "generator_sha256": generator_sha256,
                "image_sha256": image_sha256, "package_version": package_version(), "settings": projection.settings,
                "notes": projection.notes, **(extra or {})}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return Path(path)


def load_projection(path: str | os.PathLike, generator=None) -> tuple[Projection, dict]:
    """A saved projection and its metadata; with `generator`, refuse one fitted to another checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    except Exception as error:  # safetensors raises several unrelated types for a bad file
        raise CheckpointError(f"latent file {str(path)!r} is not a projection saved by rewriting.project_image "
                              f"({error})") from None
    noise_keys = sorted((k for k in tensors if k.startswith("noise.")), key=lambda k: int(k.split(".")[1]))
    if "latent" not in tensors or metadata.get("space") not in SPACES:
        raise CheckpointError(f"latent file {str(path)!r} lacks its latent or space; re-save it with "
                              f"rewriting.projection.save_projection")
    if generator is not None:
        own, fitted = getattr(generator, "checkpoint_sha256", None), metadata.get("generator_sha256")
        if own and fitted and own != fitted:
            raise CheckpointError(f"latent file {str(path)!r} was fitted to generator sha256 {fitted[:12]}…, but "
                                  f"this generator is {own[:12]}…; project the photo again with this generator")
    projection = Projection(tensors["latent"], [tensors[k] for k in noise_keys], metadata["space"],
                            metadata.get("perceptual", "unknown"), settings=metadata.get("settings", {}),
                            notes=metadata.get("notes", []))
    return projection, metadata
