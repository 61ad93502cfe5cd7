"""trainer=ddp: the second moment and the edit metrics split across processes equal the one-device results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewriting.metrics import evaluate_edit
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
         f"generator.checkpoint={tiny_checkpoint}", f"edit={edit_spec_file()}", "layer=4", "metrics=fast",
         "metrics.num_samples=6", "metrics.batch_size=2",
         "logger=none", "statistics.num_samples=12", "statistics.batch_size=4", "method.steps=10",
         "samples.count=2", "progress=false", f"hydra.run.dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["second_moment_from_cache"] is False
    assert metrics["second_moment_vectors"] == 12 * 8 * 8  # every sample once, at the 8x8 keys of layer 4
    assert metrics["num_samples"] == 6 and metrics["whole_image_l1"] > 0  # metric batches split over the ranks


def test_edit_metrics_over_two_processes_equal_one_device():
    from test_metrics import ThresholdSegmenter, perturbed_copy, random_lpips, small_features, tiny_generator

    generator = tiny_generator()
    edited = perturbed_copy(generator)
    # 7 batches of 3 (the last one short) over 2 ranks: 4 and 3 batches.
    options = dict(num_samples=20, batch_size=3, seed=5, segmenter=ThresholdSegmenter(), source=["dark"],
                   target=["bright"], erase=["dark"], lpips_net="alex", lpips_model=random_lpips(),
                   fid_features=small_features(), progress=False)
    single = evaluate_edit(generator, edited, **options)
    split = evaluate_edit(generator, edited, **options, distributed=TWO_CPU_PROCESSES)
    assert set(split) == set(single)
    assert split["num_samples"] == single["num_samples"] == 20
    for key, value in single.items():
        if key in ("metric_seconds", "warnings"):
            continue
        # float64 sums; the images themselves may differ in float32 rounding (thread counts differ per process)
        assert split[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert single["edit_success"] > 0 and single["undesired_change_lpips_alex"] > 0
    assert single["segmenter_fid_edited_vs_unedited"] > 0
