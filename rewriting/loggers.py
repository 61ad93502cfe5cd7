"""Experiment loggers: W&B (offline unless the user is logged in, never a prompt), CSV, or none."""
from __future__ import annotations

import netrc
import os
import threading
from pathlib import Path
from typing import Callable

from .lightning_compat import pl


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(project: str = "rewriting", name: str | None = None, save_dir: str | None = None,
                 mode: str = "auto", tags: list[str] | None = None):
    """A Lightning WandbLogger; mode "auto" runs offline unless logged in or WANDB_MODE says otherwise."""
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
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
    last = len(loss_curve) - 1
    for step, loss in enumerate(loss_curve):
        if step % every == 0 or step == last:
            logger.log_metrics({"loss": loss}, step=step)
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    logger.log_metrics(numeric, step=max(last, 0) + 1)
    logger.finalize("success")
