"""Cluster sweeps: the SLURM launcher config composes, and the same submitit launcher runs jobs locally."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed")


def test_slurm_gpu_launcher_config_composes():
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose("config", overrides=["hydra/launcher=slurm_gpu"], return_hydra_config=True)
    launcher = config.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1


def test_submitit_local_sweep_runs_each_layer_as_a_job(tmp_path, tiny_checkpoint, edit_spec_file):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "REWRITING_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
         f"generator.checkpoint={tiny_checkpoint}", f"edit={edit_spec_file()}", "layer=3,4", "metrics=none",
         "logger=none", "statistics.num_samples=10", "method.steps=10", "samples.count=2", "progress=false",
         f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    layers = sorted(json.loads((sweep / str(job) / "metrics.json").read_text())["layer"] for job in (0, 1))
    assert layers == [3, 4]
    assert all((sweep / str(job) / "delta.safetensors").is_file() for job in (0, 1))
