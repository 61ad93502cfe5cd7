"""The per-batch pieces of the second moment: seeded latents and noise, Σ k kᵀ, the result record."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .features import layer_keys, noise_for

# On a CPU the float64 products run on as many images as keep their float64 copy within a core's L2
# cache: measured at 32 px x 128 channels, 1-2 MB chunks take half the time of 8 MB ones.
CPU_PRODUCT_CHUNK_BYTES = 2 << 20


@dataclass
class SecondMoment:
    matrix: torch.Tensor  # (in, in) float64, uncentered E[k kᵀ]
    count: int  # number of key vectors averaged
    seconds: float  # time it took to compute (as recorded when computed)
    from_cache: bool = False


def latents_for_statistics(z_dim: int, num_samples: int, seed: int) -> torch.Tensor:
    """Seeded latents (num_samples, z_dim) for statistics, independent of the edit's image ids."""
    return torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed))


def statistics_noise(generator, first: int, count: int, seed: int, mode: str | None,
                     device: torch.device) -> list[torch.Tensor] | None:
    """Noise of samples first..first+count-1; random noise is seeded per sample so batching cannot change C."""
    mode = mode or getattr(generator, "noise_mode", None)
    if mode != "random":
        return noise_for(generator, count, seed=seed, mode=mode, device=device)
    per_sample = [noise_for(generator, 1, seed=seed * 1_000_003 + first + i, mode=mode, device=device)
                  for i in range(count)]
    if per_sample[0] is None:  # a generator without noise inputs
        return None
    return [torch.cat(layer_noise) for layer_noise in zip(*per_sample)]


@torch.no_grad()
def key_products(generator, layer: int, z_all: torch.Tensor, start: int, batch_size: int, seed: int,
                 noise_mode: str | None, device: torch.device) -> tuple[torch.Tensor, int]:
    """Σ k kᵀ (float64, (in, in)) and the number of key vectors, for samples start..start+batch_size-1."""
    dtype = next(generator.parameters()).dtype
    z = z_all[start:start + batch_size].to(device=device, dtype=dtype)
    noise = statistics_noise(generator, start, z.shape[0], seed, noise_mode, device)
    keys, _, _ = layer_keys(generator, z, layer, noise)
    # (N, h·w, in): no copy for channels-last keys (what a CPU's upsampling layers give), one otherwise.
    flat = keys.permute(0, 2, 3, 1).reshape(keys.shape[0], -1, keys.shape[1])
    step = max(1, CPU_PRODUCT_CHUNK_BYTES // (flat[0].numel() * 8)) if device.type == "cpu" \
        else flat.shape[0]
    total = torch.zeros(flat.shape[2], flat.shape[2], dtype=torch.float64, device=device)
    for first in range(0, flat.shape[0], step):
        chunk = flat[first:first + step].reshape(-1, flat.shape[2]).double()
        total.addmm_(chunk.t(), chunk)  # one (in, in) product of all the chunk's vectors, summed in place
    return total, flat.shape[0] * flat.shape[1]
