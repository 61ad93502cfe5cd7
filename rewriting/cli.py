"""Command-line glue for run.py: `edit=PATH.json`, clean error messages, the sweep objective."""
from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import threading

from .errors import RewritingError


def prepare_argv(argv: list[str]) -> list[str]:
    """Turn `edit=some/file.json` (not a config name) into `edit=from_file edit.file=...`."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("edit", "+edit") and value and ("," not in value) and (
                value.endswith(".json") or os.sep in value or "://" in value):
            out += ["edit=from_file", f"edit.file={value}"]
        else:
            out.append(arg)
    return out


@functools.cache
def freeze_imported_objects() -> None:
    """Hide what is alive now (torch's, Lightning's, Hydra's modules) from later garbage collections, once.

    A full collection walks every object, and these imports leave millions that are never garbage: the
    collection at exit alone took 0.8 s. Once per process, so a sweep's own garbage is never frozen.
    """
    gc.freeze()


def exit_without_teardown(code: int | str | None = 0) -> None:
    """End the process once every output is written, skipping the interpreter's teardown.

    Tearing down torch's, Lightning's and Hydra's modules took 0.2 s of every run. Threads that
    would be waited for are joined and the atexit handlers (logging's, W&B's) run first, as at a
    normal exit; code is an exit status or a message (printed, status 1) as for SystemExit.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


def user_error(error: BaseException | None) -> RewritingError | None:
    """The RewritingError behind an error, also when Hydra's instantiate wrapped it in its own exception."""
    while error is not None:
        if isinstance(error, RewritingError):
            return error
        error = error.__cause__
    return None


def report_error(error: BaseException) -> None:
    """Print a user-caused error as one message and exit 2; re-raise anything else."""
    cause = user_error(error)
    if cause is not None:
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2)
    if isinstance(error, KeyboardInterrupt):
        print("interrupted: no output was half-written", file=sys.stderr)
        raise SystemExit(130)
    raise error


def objective(cfg, metrics: dict):
    """The number a sweeper optimizes (`optimized_metric` in the config), or None."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics or metrics[name] is None:
        raise RewritingError(f"optimized_metric={name!r} is not among the run's metrics: {sorted(metrics)}")
    return float(metrics[name])
