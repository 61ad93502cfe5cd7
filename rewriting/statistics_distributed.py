"""The second moment split across devices with Lightning's DDP, reduced by summation in float64.

Each rank takes every world_size-th batch of the same seeded latent sample (no padding, so no
sample counts twice), accumulates Σ k kᵀ and the vector count, and the sums are all-reduced. The
result equals the single-device one up to float64 rounding of the summation order.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .lightning_compat import pl
from .statistics import SecondMoment, key_products, latents_for_statistics


class SecondMomentTask(pl.LightningModule):
    """Accumulates Σ k kᵀ over this rank's batches; rank 0 writes E[k kᵀ] to `result_path`."""

    def __init__(self, generator, layer: int, num_samples: int, batch_size: int, seed: int,
                 noise_mode: str | None, result_path: str):
        super().__init__()
        self.generator = generator
        self.layer, self.num_samples, self.batch_size = layer, num_samples, batch_size
        self.seed, self.noise_mode, self.result_path = seed, noise_mode, result_path
        self.z_all = latents_for_statistics(generator.z_dim, num_samples, seed)
        self.total = None
        self.count = 0

    def test_dataloader(self):
        starts = list(range(0, self.num_samples, self.batch_size))
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(starts[rank::world], batch_size=None)

    def test_step(self, start, index):
        product, vectors = key_products(self.generator, self.layer, self.z_all, int(start), self.batch_size,
                                        self.seed, self.noise_mode, self.device)
        self.total = product if self.total is None else self.total + product
        self.count += vectors

    def on_test_epoch_end(self):
        size = self.generator.layer(self.layer).weight.shape[1]
        total = self.total if self.total is not None else torch.zeros(size, size, dtype=torch.float64,
                                                                       device=self.device)
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.device)
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        count = self.trainer.strategy.reduce(count, reduce_op="sum")
        if self.trainer.global_rank == 0:
            torch.save({"matrix": (total / count).cpu(), "count": int(count.item())}, self.result_path)


def distributed_second_moment(generator, layer: int, num_samples: int = 1000, batch_size: int = 50,
                              seed: int = 0, noise_mode: str | None = None,
                              trainer_options: dict | None = None) -> SecondMoment:
    """E[k kᵀ] computed by a Lightning Trainer (e.g. strategy="ddp_spawn", devices=N)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result_path = str(Path(folder) / "second_moment.pt")
        task = SecondMomentTask(generator, layer, num_samples, batch_size, seed, noise_mode, result_path)
        options = {"accelerator": "auto", "devices": 1, "logger": False, "enable_progress_bar": False,
                   "enable_model_summary": False, "use_distributed_sampler": False}
        options.update(trainer_options or {})
        pl.Trainer(**options).test(task, verbose=False)
        stored = torch.load(result_path, weights_only=True)
    return SecondMoment(stored["matrix"], stored["count"], time.perf_counter() - started)
