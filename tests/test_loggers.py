"""Experiment logging: the run's config, loss curve and metrics reach the logger, which starts beside the work."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rewriting.loggers import start_in_background
from rewriting.pipeline import run
from test_bad_inputs import run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_csv_logger_gets_the_loss_curve_and_the_metrics(tmp_path, tiny_checkpoint, edit_spec_file):
    output_dir = tmp_path / "run"
    metrics = run(run_config(tiny_checkpoint, edit_spec_file(), output_dir, "logger=csv", "method.steps=25"))
    rows = []
    for path in (output_dir / "csv").rglob("metrics.csv"):
        with path.open() as file:
            rows += list(csv.DictReader(file))
    losses = {int(row["step"]): float(row["loss"]) for row in rows if row.get("loss")}
    assert sorted(losses) == [0, 10, 20, 24]  # every 10 steps and the last
    assert losses[0] > losses[24]  # the logged curve is the fit's: it falls
    final = [row for row in rows if row.get("final_loss")]
    assert len(final) == 1
    assert float(final[0]["final_loss"]) == pytest.approx(metrics["final_loss"])
    assert json.loads((output_dir / "metrics.json").read_text())["final_loss"] == pytest.approx(metrics["final_loss"])


def test_a_logger_that_cannot_start_raises_its_error_on_wait():
    class Broken:
        @property
        def experiment(self):
            raise PermissionError("cannot write the run directory")

    wait = start_in_background(Broken())
    with pytest.raises(PermissionError, match="run directory"):
        wait()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline with a private home: no login, no prompt, nothing outside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_the_wandb_run_gets_the_config_the_loss_curve_and_the_metrics(tmp_path, tiny_checkpoint, edit_spec_file,
                                                                     offline_wandb):
    from wandb_records import offline_run
    output_dir = tmp_path / "run"
    metrics = run(run_config(tiny_checkpoint, edit_spec_file(), output_dir, "logger=wandb", "method.steps=25"))
    recorded = offline_run(output_dir)
    assert recorded["project"] == "rewriting" and recorded["name"] == f"{metrics['edit']}_layer4"
    assert recorded["exit_code"] == 0
    assert recorded["config"]["layer"] == 4 and recorded["config"]["method"]["steps"] == 25
    losses = {row["_step"]: row["loss"] for row in recorded["history"] if "loss" in row}
    assert sorted(losses) == [0, 10, 20, 24] and losses[0] > losses[24]
    [final] = [row for row in recorded["history"] if "final_loss" in row]
    assert final["_step"] == 25 and final["final_loss"] == pytest.approx(metrics["final_loss"])


def test_a_failed_run_is_finished_as_failed_and_a_broken_wandb_names_its_error(tmp_path, offline_wandb):
    from rewriting.wandb_process import LoggerError, WandbRun
    from wandb_records import offline_run
    abandoned = WandbRun(name="abandoned", save_dir=tmp_path / "abandoned")
    abandoned.close()  # the run failed before any metric: W&B still gets a finished run, marked failed
    assert offline_run(tmp_path / "abandoned")["exit_code"] == 1
    broken = WandbRun(name="broken", save_dir=tmp_path / "broken", mode="no-such-mode")
    with pytest.raises(LoggerError, match="W&B could not record this run.*logger=none"):
        broken.log_run([1.0, 0.5], {"final_loss": 0.5})


def test_starting_wandb_imports_neither_torch_nor_lightning():
    """run.py starts W&B's process before its heavy imports; that only works if this import stays light."""
    import subprocess
    import sys
    code = ("import sys, rewriting.cli, rewriting.cpu_memory, rewriting.wandb_process; "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'wandb') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
