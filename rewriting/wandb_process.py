"""A W&B run kept by a child process, so that starting it costs the run next to nothing.

`python run.py` spends its first seconds importing torch and PyTorch Lightning on one core. Starting a
W&B run (importing wandb, creating the run) is about 0.9 s of CPU, and on a thread it slowed the metric
pass by more than that. Here a child process does it on the other core while the parent is still
importing; at the end the parent hands over the loss curve and the metrics and waits until the run
is written. This module imports only the standard library, so the child starts at once.

Child protocol (JSON lines on stdin): the wandb.init arguments, then {"loss_curve", "metrics",
"every"}. If stdin closes before the second line (the run failed), the W&B run is finished as failed.
"""
from __future__ import annotations

import json
import netrc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import RewritingError


class LoggerError(RewritingError):
    """The experiment logger could not record the run."""


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(mode: str = "auto") -> str:
    """auto: WANDB_MODE if set, else online when logged in, else offline (never a login prompt)."""
    if mode == "auto":
        return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    return mode


def logged_steps(loss_curve: list[float], every: int = 10) -> tuple[list[tuple[int, float]], int]:
    """The (step, loss) pairs a logger records (every `every` steps and the last), and the metrics' step."""
    last = len(loss_curve) - 1
    every = max(1, int(every))
    return [(step, loss) for step, loss in enumerate(loss_curve) if step % every == 0 or step == last], max(last, 0) + 1


def numeric_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbRun:
    """Starts a W&B run in a child process now; `log_run(loss_curve, metrics)` records it and waits."""

    def __init__(self, project: str = "rewriting", name: str | None = None, save_dir: str | None = None,
                 mode: str = "auto", tags: list[str] | None = None, config: dict | None = None) -> None:
        mode = wandb_mode(mode)
        save_dir = str(save_dir or ".")
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        self.save_dir = save_dir
        self.errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a long traceback cannot block the child
        environment = {**os.environ, "WANDB_MODE": mode}
        environment.setdefault("WANDB_SILENT", "true")
        self.process = subprocess.Popen([sys.executable, "-m", "rewriting.wandb_process"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=self.errors, text=True, env=environment)
        self._send({"project": project, "name": name, "dir": save_dir, "mode": mode, "tags": list(tags or []),
                    "config": config})

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child has exited; log_run reports why

    def log_run(self, loss_curve: list[float], metrics: dict, every: int = 10, name: str | None = None) -> None:
        """The loss every `every` steps (and its last), then the numeric metrics; returns once W&B has them.

        name: the run's name, when only now known (an edit file names its edit).
        """
        self._send({"loss_curve": [float(loss) for loss in loss_curve], "metrics": numeric_metrics(metrics),
                    "every": every, "name": name})
        self.close()
        if self.process.returncode != 0:
            self.errors.seek(0)
            last = [line for line in self.errors.read().splitlines() if line.strip()][-3:]
            raise LoggerError(
                f"W&B could not record this run (its process exited with {self.process.returncode}): "
                f"{' | '.join(last) or 'no message'}. Every output file is written; log nothing with logger=none, "
                "or to CSV with logger=csv, or set WANDB_MODE=offline.")

    def close(self) -> None:
        """Close the child's input and wait for it (a run with no metrics sent is finished as failed)."""
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        self.process.wait()


WANDB_RUN_TARGET = f"{__name__}.WandbRun"


def wandb_run_for(cfg) -> WandbRun | None:
    """The W&B run a run.py config asks for (`logger=wandb`), started now with the resolved config; else None."""
    logger_config = cfg.get("logger")
    if logger_config is None or logger_config.get("_target_") != WANDB_RUN_TARGET:
        return None
    from omegaconf import OmegaConf
    options = {k: v for k, v in OmegaConf.to_container(logger_config, resolve=True).items() if k != "_target_"}
    return WandbRun(**options, config=OmegaConf.to_container(cfg, resolve=True))


def _record(run, payload: dict) -> None:
    if payload.get("name"):
        run.name = payload["name"]
    losses, metrics_step = logged_steps(payload["loss_curve"], payload["every"])
    for step, loss in losses:
        run.log({"loss": loss}, step=step)
    run.log(payload["metrics"], step=metrics_step)


def main() -> int:
    start = json.loads(sys.stdin.readline())
    import wandb  # only here: the parent never imports it

    run = wandb.init(project=start["project"], name=start["name"], dir=start["dir"], mode=start["mode"],
                     tags=start["tags"], config=start["config"])
    line = sys.stdin.readline()
    if not line:
        run.finish(exit_code=1)
        return 0
    _record(run, json.loads(line))
    run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
