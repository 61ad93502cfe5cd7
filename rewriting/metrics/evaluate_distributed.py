"""The edit metrics split across devices with Lightning's DDP (see `rewriting.distributed`)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from rewriting.distributed import ShardedSumTask, run_sharded
from rewriting.metrics.edit_metric_sums import EditMetricSums


class EditMetricsTask(ShardedSumTask):
    """Each rank adds its batches of the seeded sample to its own `EditMetricSums`."""

    def __init__(self, generator_before: nn.Module, generator_after: nn.Module, options: dict[str, Any],
                 latents: torch.Tensor, batch_size: int) -> None:
        super().__init__(latents.shape[0], batch_size)
        self.generator_before, self.generator_after = generator_before, generator_after
        if isinstance(options.get("segmenter"), nn.Module):
            self.segmenter = options["segmenter"]  # a submodule, so Lightning moves it to the rank's device
        self.options, self.latents = options, latents
        self.accumulator: EditMetricSums | None = None

    def on_test_start(self) -> None:
        # Built here, on the rank's device (LPIPS and FID feature networks included).
        self.accumulator = EditMetricSums(self.generator_before, self.generator_after, self.options, self.latents)

    def add_batch(self, start: int) -> None:
        self.accumulator.add(self.latents[start:start + self.batch_size])

    def shard_sums(self) -> dict[str, torch.Tensor]:
        return self.accumulator.sums()

    def finish(self, sums: dict[str, torch.Tensor]) -> dict[str, Any]:
        self.accumulator.load_sums(sums)
        return self.accumulator.results_dict()


def distributed_edit_metrics(generator_before: nn.Module, generator_after: nn.Module, options: dict[str, Any],
                             latents: torch.Tensor, batch_size: int, trainer_options: dict) -> dict[str, Any]:
    """`evaluate_edit`'s metrics with the batches split across the devices of `trainer_options`."""
    return run_sharded(EditMetricsTask(generator_before, generator_after, options, latents, batch_size),
                       trainer_options)
