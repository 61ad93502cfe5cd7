"""Latents of image ids: rows of one fixed, seeded standard-normal sample.

Image id i is row i of ``RandomState(seed).standard_normal(n * z_dim).reshape(n, z_dim)``,
as in the original implementation. Because the draw is one flat stream, row i only
depends on the first (i + 1) * z_dim numbers, so an id means the same latent whatever
the sample size n.
"""

from collections.abc import Sequence

import numpy as np
import torch

from rewriting.errors import EditSpecError


def _sample_rows(row_count: int, z_dim: int, seed: int) -> np.ndarray:
    """The first row_count rows of the seeded sample, float64 (row_count, z_dim)."""
    if z_dim <= 0:
        raise ValueError(f"z_dim must be positive, got {z_dim}")
    stream = np.random.RandomState(seed).standard_normal(row_count * z_dim)
    return stream.reshape(row_count, z_dim)


def latents_for_ids(image_ids: Sequence[int], z_dim: int, seed: int = 1) -> torch.Tensor:
    """Latents of the given image ids, float32 (len(image_ids), z_dim), in the order given."""
    ids = np.asarray(list(image_ids), dtype=np.int64)
    if ids.size == 0:
        return torch.empty(0, z_dim, dtype=torch.float32)
    if ids.min() < 0:
        raise EditSpecError(
            f"image id {int(ids.min())} is negative; image ids index the latent sample from 0"
        )
    # One draw up to the largest id serves every id at once.
    sample = _sample_rows(int(ids.max()) + 1, z_dim, seed)
    return torch.from_numpy(sample[ids]).to(torch.float32)


def latents_for_range(start: int, count: int, z_dim: int, seed: int = 1) -> torch.Tensor:
    """Latents of image ids start .. start + count - 1, float32 (count, z_dim)."""
    if start < 0 or count < 0:
        raise EditSpecError(
            f"image id range start={start}, count={count} is invalid; both must be >= 0"
        )
    sample = _sample_rows(start + count, z_dim, seed)
    return torch.from_numpy(sample[start:]).to(torch.float32)
