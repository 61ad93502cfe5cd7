"""Experiment loggers: W&B (offline unless the user is logged in, never a prompt), CSV, or none."""
from __future__ import annotations

import netrc
import os
from pathlib import Path

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
