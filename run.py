"""Rewrite a generator: `python run.py [generator=...] [edit=NAME|PATH.json] [layer=N] [method=...]`."""
import sys

import hydra
from omegaconf import DictConfig

from rewriting.cli import exit_without_teardown, freeze_imported_objects, objective, prepare_argv, report_error
from rewriting.cpu_memory import reuse_freed_memory
from rewriting.wandb_process import wandb_run_for


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    logger = None
    try:
        # W&B's run starts first, in its own process, while this one imports torch and Lightning.
        logger = wandb_run_for(cfg)
        from rewriting.pipeline import run
        freeze_imported_objects()
        metrics = run(cfg, logger=logger)
    except (Exception, KeyboardInterrupt) as error:  # a user's mistake gets one clear line, not a traceback
        if logger is not None:
            logger.close()
        report_error(error)
    return objective(cfg, metrics)


if __name__ == "__main__":
    reuse_freed_memory()
    sys.argv = prepare_argv(sys.argv)
    try:
        main()
    except SystemExit as done:  # Hydra's way out, with or without an error
        exit_without_teardown(done.code)
    exit_without_teardown(0)
