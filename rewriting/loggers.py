"""Experiment loggers for Lightning: W&B (offline unless the user is logged in, never a prompt), CSV.

run.py's W&B run is a `rewriting.wandb_process.WandbRun` (started in a child process); `wandb_logger`
is the same run as a Lightning logger, for a Trainer of your own.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from .lightning_compat import pl
from .wandb_process import logged_steps, numeric_metrics, wandb_mode


def wandb_logger(project: str = "rewriting", name: str | None = None, save_dir: str | None = None,
                 mode: str = "auto", tags: list[str] | None = None):
    """A Lightning WandbLogger; mode "auto" runs offline unless logged in or WANDB_MODE says otherwise."""
    mode = wandb_mode(mode)
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    save_dir = save_dir or "."
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return pl.loggers.WandbLogger(project=project, name=name, save_dir=save_dir, offline=(mode == "offline"),
                                  tags=list(tags or []))


def csv_logger(save_dir: str = ".", name: str = "csv"):
    """Metrics as CSV files under save_dir/name."""
    return pl.loggers.CSVLogger(save_dir=save_dir, name=name)


def start_in_background(logger) -> Callable[[], object]:
    """Start the logger's run on a thread (W&B's start-up takes most of a second) while the work goes on.

    Returns wait(): it joins the thread and returns the logger, or raises the error the start raised.
    """
    errors: list[BaseException] = []

    def start():
        try:
            logger.experiment  # Lightning's loggers create their run on first access
        except BaseException as error:  # handed to wait(), on the caller's thread
            errors.append(error)

    thread = threading.Thread(target=start, name="logger-start", daemon=True)
    thread.start()

    def wait():
        thread.join()
        if errors:
            raise errors[0]
        return logger
    return wait


def log_run(logger, loss_curve: list[float], metrics: dict, every: int = 10) -> None:
    """The rewrite's loss every `every` steps (and its last), then the run's numeric metrics; closes the run."""
    losses, metrics_step = logged_steps(loss_curve, every)
    for step, loss in losses:
        logger.log_metrics({"loss": loss}, step=step)
    logger.log_metrics(numeric_metrics(metrics), step=metrics_step)
    logger.finalize("success")
