"""Rewrite a generator: `python run.py [generator=...] [edit=NAME|PATH.json] [layer=N] [method=...]`."""
import gc
import sys

import hydra
from omegaconf import DictConfig

from rewriting.cli import freeze_imported_objects, objective, prepare_argv, report_error
from rewriting.cpu_memory import reuse_freed_memory


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from rewriting.pipeline import run
    freeze_imported_objects()
    try:
        metrics = run(cfg)
    except (Exception, KeyboardInterrupt) as error:  # a user's mistake gets one clear line, not a traceback
        report_error(error)
    return objective(cfg, metrics)


if __name__ == "__main__":
    reuse_freed_memory()
    sys.argv = prepare_argv(sys.argv)
    try:
        main()
    finally:
        # Exit without one last full collection over torch's and Lightning's objects (most of a second);
        # every output is written and closed by now, and atexit handlers (W&B's) still run.
        gc.freeze()
