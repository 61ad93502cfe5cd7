"""Second moment C = E[k kᵀ] of a layer's keys, its disk cache, whitening and C⁻¹k."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import atomic_path
from .models.checkpoints import state_dict_sha256
from .models.download import cache_dir as cache_root
from .statistics_batches import SecondMoment, key_products, latents_for_statistics
from .statistics_distributed import distributed_second_moment

# 2: random-noise statistics independent of the batch size; 3: keys made in per-layer CPU chunks;
# 4: channels-last upsampling on a CPU; 5: demodulation, noise and bias in one pass
CACHE_FORMAT = 5


@torch.no_grad()
def compute_second_moment(generator, layer: int, num_samples: int = 1000, batch_size: int = 50, seed: int = 0,
                          noise_mode: str | None = None, progress: bool = True,
                          device: torch.device | str | None = None) -> SecondMoment:
    """Streaming float64 E[k kᵀ] over every position of `num_samples` images; memory O(in²)."""
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    started = time.perf_counter()
    z_all = latents_for_statistics(generator.z_dim, num_samples, seed)
    total = None
    count = 0
    bar = tqdm(total=num_samples, desc=f"second moment, layer {layer}", unit="img", disable=not progress,
               leave=False)
    for start in range(0, num_samples, batch_size):
        product, vectors = key_products(generator, layer, z_all, start, batch_size, seed, noise_mode, device)
        total = product if total is None else total + product
        count += vectors
        bar.update(min(batch_size, num_samples - start))
    bar.close()
    return SecondMoment(total / count, count, time.perf_counter() - started)


def cache_key(generator, layer: int, num_samples: int, seed: int, noise_mode: str | None) -> dict:
    """Everything the statistics depend on; any change gives another cache entry."""
    return {"format": CACHE_FORMAT, "family": getattr(generator, "family", type(generator).__name__),
            "weights_sha256": state_dict_sha256(generator), "layer": int(layer),
            "truncation": float(getattr(generator, "truncation", 1.0)), "num_samples": int(num_samples),
            "seed": int(seed), "noise_mode": noise_mode or getattr(generator, "noise_mode", "none")}


def default_cache_dir() -> Path:
    return cache_root() / "statistics"


def second_moment(generator, layer: int, num_samples: int = 1000, seed: int = 0, batch_size: int = 50,
                  noise_mode: str | None = None, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True, use_cache: bool = True,
                  distributed: dict | None = None) -> SecondMoment:
    """C at `layer`, loaded from the disk cache when every input it depends on is unchanged.

    distributed: Lightning Trainer options (e.g. strategy="ddp_spawn", devices=4) to split the
    computation across devices; the cached result is the same either way.
    """
    key = cache_key(generator, layer, num_samples, seed, noise_mode)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / f"second_moment_layer{layer}_{digest}.pt"
    if use_cache and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored["key"] == json.dumps(key, sort_keys=True):
                return SecondMoment(stored["matrix"], int(stored["count"]), float(stored["seconds"]), True)
        except Exception:
            pass  # a corrupt or foreign file is recomputed and replaced
    if distributed:
        result = distributed_second_moment(generator, layer, num_samples, batch_size, seed, noise_mode, distributed)
    else:
        result = compute_second_moment(generator, layer, num_samples, batch_size, seed, noise_mode, progress)
    if use_cache:
        with atomic_path(path) as temporary:
            torch.save({"key": json.dumps(key, sort_keys=True), "matrix": result.matrix.cpu(),
                        "count": result.count, "seconds": result.seconds}, temporary)
    return result


def whitening(matrix: torch.Tensor, relative_floor: float = 1e-8) -> torch.Tensor:
    """Z = C^(-1/2) from a symmetric eigendecomposition, tiny eigenvalues clamped. (in, in)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    floor = eigenvalues.max().clamp_min(1e-30) * relative_floor
    inverse_root = eigenvalues.clamp_min(floor).rsqrt()
    return (eigenvectors * inverse_root) @ eigenvectors.t()


def solve(matrix: torch.Tensor, vectors: torch.Tensor, ridge: float = 1e-10) -> torch.Tensor:
    """C⁻¹ k by a linear solve (no explicit inverse). vectors (in,) or (in, m)."""
    identity = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    regularized = matrix + ridge * matrix.diagonal().mean() * identity
    return torch.linalg.solve(regularized, vectors.to(matrix.dtype))
