"""Rewrite a generator: `python run.py [generator=...] [edit=NAME|PATH.json] [layer=N] [method=...]`."""
import sys

import hydra
from omegaconf import DictConfig

from rewriting.cli import objective, prepare_argv, report_error


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from rewriting.pipeline import run
    try:
        metrics = run(cfg)
    except (Exception, KeyboardInterrupt) as error:  # a user's mistake gets one clear line, not a traceback
        report_error(error)
    return objective(cfg, metrics)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    main()
