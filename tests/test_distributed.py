"""trainer=ddp: the second moment split across processes equals the one-device result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from rewriting.statistics import compute_second_moment
from rewriting.statistics_distributed import distributed_second_moment

ROOT = Path(__file__).resolve().parent.parent
TWO_CPU_PROCESSES = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}


def test_second_moment_over_two_processes_equals_one_device(make_generator):
    generator = make_generator(size=16)
    # 30 samples in batches of 4: the ranks get 4 and 4 batches, the last one short; nothing padded.
    single = compute_second_moment(generator, 4, 30, batch_size=4, progress=False)
    split = distributed_second_moment(generator, 4, 30, batch_size=4, trainer_options=TWO_CPU_PROCESSES)
    assert split.count == single.count
    assert torch.allclose(split.matrix, single.matrix, rtol=1e-12, atol=1e-14)


def test_run_py_with_trainer_ddp_uses_the_split_statistics(tmp_path, tiny_checkpoint, edit_spec_file):
    env = {**os.environ, "REWRITING_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "run.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.distributed.devices=2",
         f"generator.checkpoint={tiny_checkpoint}", f"edit={edit_spec_file()}", "layer=4", "metrics=none",
         "logger=none", "statistics.num_samples=12", "statistics.batch_size=4", "method.steps=10",
         "samples.count=2", "progress=false", f"hydra.run.dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["second_moment_from_cache"] is False
    assert metrics["second_moment_vectors"] == 12 * 8 * 8  # every sample once, at the 8x8 keys of layer 4
