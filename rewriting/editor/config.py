"""The editor's command line: `--host/--port/--output-dir` for the server, Hydra overrides as in run.py."""
from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..cli import prepare_argv
from ..errors import RewritingError
from .session import EditorSession, method_configs_from

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Server options and the remaining Hydra overrides (generator=..., generator.checkpoint=..., layer=...)."""
    parser = argparse.ArgumentParser(
        prog="rewriting-editor", description="Paint a rule on generated images and rewrite the generator. "
        "Other arguments are Hydra overrides as for run.py, e.g. generator.checkpoint=PATH layer=8 method=rank_n.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--output-dir", default="outputs/editor", help="where Save writes (default outputs/editor)")
    options, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        parser.error(f"unknown option(s) {' '.join(unknown)}; Hydra overrides are written key=value")
    return options, prepare_argv(overrides)


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with the overrides applied, as run.py would compose it."""
    from hydra import compose, initialize_config_dir
    if not (CONF_DIR / "config.yaml").is_file():
        raise RewritingError(f"the editor reads the configs in {CONF_DIR}, which is missing; install the project "
                             "from its source folder with pip install -e .")
    from hydra.errors import HydraException
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides + ["logger=none"])
    except HydraException as error:
        raise RewritingError(f"bad override: {error}") from None


def session_from_config(cfg: DictConfig, output_root: str = "outputs/editor") -> EditorSession:
    """Load the configured generator (and its segmenter) into an editor session."""
    from hydra.utils import instantiate

    from ..models.download import sha256_file
    from ..pipeline import device_for, load_segmenter
    device = device_for(cfg.trainer)
    generator = instantiate(cfg.generator, device=device)
    generator.checkpoint_sha256 = sha256_file(generator.checkpoint_path)
    segmenter = load_segmenter(cfg.metrics, generator)
    methods = method_configs_from(CONF_DIR)
    chosen = OmegaConf.to_container(cfg.method, resolve=True)
    methods[str(chosen.get("name"))] = chosen  # the command line's method, with its overrides
    layer = OmegaConf.select(cfg, "layer", default=None)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer.pop("distributed", None)
    session = EditorSession(
        generator, methods, default_method=str(chosen.get("name")), segmenter=segmenter, default_layer=layer,
        statistics=OmegaConf.to_container(cfg.statistics, resolve=True), trainer=trainer, seed=int(cfg.seed),
        samples={"count": 6, "seed": int(cfg.samples.seed)}, output_root=output_root)
    session.config = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key])
                      else cfg[key] for key in ("generator", "method", "statistics", "trainer", "samples", "seed")}
    return session
