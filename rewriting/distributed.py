"""Work split across devices with Lightning's DDP: each rank takes every world_size-th batch, float64 sums reduced.

Used by the second moment and the edit metrics under `trainer=ddp`. Nothing is padded, so no
sample counts twice, and the summed result equals the one-device one up to float64 rounding of
the summation order.
"""
from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .lightning_compat import pl


class ShardedSumTask(pl.LightningModule, ABC):
    """A sum over batch starts 0, batch_size, … < num_samples; rank 0 saves `finish(reduced sums)`.

    `run_sharded` sets `result_path` before the Trainer starts.
    """

    def __init__(self, num_samples: int, batch_size: int) -> None:
        super().__init__()
        self.num_samples, self.batch_size = num_samples, batch_size
        self.result_path: str | None = None

    @abstractmethod
    def add_batch(self, start: int) -> None:
        """Accumulate the batch of samples start … start + batch_size on this rank."""

    @abstractmethod
    def shard_sums(self) -> dict[str, torch.Tensor]:
        """This rank's accumulated sums, name -> float64 tensor (the same names on every rank)."""

    @abstractmethod
    def finish(self, sums: dict[str, torch.Tensor]) -> Any:
        """The result from the sums over all ranks (rank 0 only)."""

    def test_dataloader(self):
        starts = list(range(0, self.num_samples, self.batch_size))
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(starts[rank::world], batch_size=None)

    def test_step(self, start, index):
        self.add_batch(int(start))

    def on_test_epoch_end(self):
        reduced = {}
        for name, value in sorted(self.shard_sums().items()):  # the same order on every rank
            reduced[name] = self.trainer.strategy.reduce(value.to(self.device, torch.float64), reduce_op="sum").cpu()
        if self.trainer.global_rank == 0:
            torch.save(self.finish(reduced), self.result_path)

    def on_test_end(self):
        # Leave the process group together and explicitly: a rank that exits while the other still
        # holds gloo connections can abort (seen as SIGABRT in CI) instead of exiting cleanly.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.trainer.strategy.barrier("sharded-sum-done")
            torch.distributed.destroy_process_group()


def run_sharded(task: ShardedSumTask, trainer_options: dict | None) -> Any:
    """Run `task` under a Lightning Trainer built from `trainer_options`; rank 0's `finish` result."""
    options = {"accelerator": "auto", "devices": 1, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "use_distributed_sampler": False}
    options.update(trainer_options or {})
    with tempfile.TemporaryDirectory() as folder:
        task.result_path = str(Path(folder) / "result.pt")
        pl.Trainer(**options).test(task, verbose=False)
        return torch.load(task.result_path, weights_only=True)  # our own file, still never code
