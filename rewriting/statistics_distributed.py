"""The second moment split across devices with Lightning's DDP (see `rewriting.distributed`)."""
from __future__ import annotations

import time

import torch

from .distributed import ShardedSumTask, run_sharded
from .statistics_batches import SecondMoment, key_products, latents_for_statistics


class SecondMomentTask(ShardedSumTask):
    """Accumulates Σ k kᵀ and the key-vector count over this rank's batches."""

    def __init__(self, generator, layer: int, num_samples: int, batch_size: int, seed: int,
                 noise_mode: str | None):
        super().__init__(num_samples, batch_size)
        self.generator = generator
        self.layer, self.seed, self.noise_mode = layer, seed, noise_mode
        self.z_all = latents_for_statistics(generator.z_dim, num_samples, seed)
        size = generator.layer(layer).weight.shape[1]
        self.total = torch.zeros(size, size, dtype=torch.float64)
        self.count = 0

    def add_batch(self, start: int) -> None:
        product, vectors = key_products(self.generator, self.layer, self.z_all, start, self.batch_size,
                                        self.seed, self.noise_mode, self.device)
        self.total = self.total.to(product.device) + product
        self.count += vectors

    def shard_sums(self) -> dict[str, torch.Tensor]:
        return {"total": self.total, "count": torch.tensor(float(self.count), dtype=torch.float64)}

    def finish(self, sums: dict[str, torch.Tensor]) -> dict:
        return {"matrix": sums["total"] / sums["count"], "count": int(sums["count"].item())}


def distributed_second_moment(generator, layer: int, num_samples: int = 1000, batch_size: int = 50,
                              seed: int = 0, noise_mode: str | None = None,
                              trainer_options: dict | None = None) -> SecondMoment:
    """E[k kᵀ] computed by a Lightning Trainer (e.g. strategy="ddp_spawn", devices=N)."""
    started = time.perf_counter()
    task = SecondMomentTask(generator, layer, num_samples, batch_size, seed, noise_mode)
    stored = run_sharded(task, trainer_options)
    return SecondMoment(stored["matrix"], stored["count"], time.perf_counter() - started)
