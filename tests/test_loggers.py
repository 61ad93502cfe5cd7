"""Experiment logging: the run's loss curve and metrics reach the logger, which starts beside the work."""
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
