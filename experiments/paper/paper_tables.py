"""Shared by the paper-table scripts: compose and run one pipeline config, aggregate runs, write tables.

Each run goes through `rewriting.pipeline.run` on a config composed from conf/ exactly as
`python run.py OVERRIDES` would compose it, so a table row can be reproduced from the command line.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
import time
from pathlib import Path
from typing import Iterable, Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "conf"
RESULTS_DIR = ROOT / "results"
TOYTOWN_EDITS = ("spire_to_tree", "dome_to_spire", "dome_to_tree", "erase_windows", "remove_watermark")
ABSENT = "weights absent"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The config `python run.py OVERRIDES` would run."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def experiment_overrides(scratch: Path, samples: int, device: str = "cpu") -> list[str]:
    """Settings every table run shares: no experiment logger, no progress bars, a shared statistics cache."""
    return [f"trainer={device}", "logger=none", "progress=false", "save_edited_generator=false",
            f"metrics.num_samples={samples}", f"statistics.cache_dir={scratch / 'statistics'}"]


def run_overrides(overrides: Sequence[str], out_dir: Path, reuse: bool = False) -> dict:
    """Run the pipeline on composed overrides, writing into out_dir; its metrics plus the wall time.

    reuse: return the metrics.json already in out_dir when it was written by this exact config.
    """
    from rewriting.pipeline import run
    cfg = compose_config([*overrides, f"output_dir={out_dir}"])
    previous = Path(out_dir) / "metrics.json"
    if reuse and previous.is_file():
        metrics = json.loads(previous.read_text())
        if metrics.get("provenance", {}).get("config") == OmegaConf.to_container(cfg, resolve=True):
            metrics.setdefault("run_seconds", metrics["provenance"].get("total_seconds"))
            return metrics
    started = time.perf_counter()
    metrics = run(cfg)
    metrics["run_seconds"] = time.perf_counter() - started
    return metrics


def seed_values(count: int, first: int = 1) -> range:
    """The seeds of `count` repetitions: first, first + 1, ... (1 is the edits' default latent sample)."""
    return range(first, first + count)


def seed_overrides(seed: int) -> list[str]:
    """Seed s: Lightning's seed and the edit's latent sample (other context, copy and paste images)."""
    return [f"seed={seed}", f"++edit.seed={seed}"]


def replayed_overrides(extra: Sequence[str]) -> list[str]:
    """The extra overrides a replayed run takes: those of the request (`edit.request.*`) act at resolution only."""
    return [override for override in extra if not override.lstrip("+~").startswith("edit.request.")]


def resolved_edit_overrides(edit: str, seed: int, scratch: Path, extra: Sequence[str] = (),
                            layer: int | None = None) -> list[str]:
    """Overrides that replay edit config `edit` at latent-sample `seed` from its request, resolved once.

    Label requests are resolved (segmenting generated images) once per edit and seed; the spec with
    its recorded masks is saved and every method replays it (edit=from_file), as `run` would resolve it.
    The saved file is named by a hash of what the resolution depends on (the edit config, generator
    and segmenter settings): a changed request resolves anew, and `--reuse` cannot replay runs of an
    older request, since their configs name another file. A paste with `pick: reachable` depends on
    the layer (`layer`, else the edit's own) and the second moment there, so it resolves per layer.
    """
    from hydra.utils import instantiate

    from rewriting.edits.config import spec_from_config
    from rewriting.edits.resolve import resolve_labels
    from rewriting.pipeline import load_segmenter, reach_scorer_for, statistics_for

    layer_override = [f"layer={layer}"] if layer is not None else []
    cfg = compose_config([f"edit={edit}", *seed_overrides(seed), *layer_override, *experiment_overrides(scratch, 0),
                          *extra])
    reachable = str(((cfg.edit.get("request") or {}).get("paste") or {}).get("pick", "")) == "reachable"
    depends_on = [("edit", cfg.edit), ("generator", cfg.generator), ("segmenter", cfg.metrics.get("segmenter"))]
    if reachable:
        depends_on += [("layer", cfg.layer if cfg.layer is not None else cfg.edit.get("layer")),
                       ("method", cfg.method), ("statistics", cfg.statistics)]
    resolved_by = {name: OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
                   for name, node in depends_on}
    digest = hashlib.sha256(json.dumps(resolved_by, sort_keys=True, default=str).encode()).hexdigest()
    path = scratch / "requests" / f"{edit}_seed{seed}_{digest[:12]}.json"
    if not path.is_file():
        generator = instantiate(cfg.generator, device="cpu")
        segmenter = load_segmenter(cfg.metrics, generator)
        scorer = reach_scorer_for(cfg, generator, instantiate(cfg.method), statistics_for(cfg, generator))
        spec = resolve_labels(spec_from_config(cfg.edit, generator, segmenter, scorer), generator, segmenter)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.save(path)
    listed = lambda names: "null" if not names else "[" + ",".join(names) + "]"  # noqa: E731
    return ["edit=from_file", f"edit.file={path}", f"edit.name={cfg.edit.name}", f"edit.layer={cfg.edit.layer}",
            f"edit.source={listed(cfg.edit.source)}", f"edit.target={listed(cfg.edit.target)}",
            f"edit.erase_classes={listed(cfg.edit.erase_classes)}"]


def is_erase_edit(edit: str) -> bool:
    return bool(compose_config([f"edit={edit}"]).edit.request.get("erase", False))


def numbers(runs: Iterable[dict], key: str) -> list[float]:
    """The finite numeric values of `key` over runs."""
    values = [run.get(key) for run in runs]
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric_cell(runs: Sequence[dict], key: str, digits: int = 3) -> str:
    """mean ± std of a metric over runs; 'weights absent' when the metric's backbone was missing."""
    if any(isinstance(run.get(key), str) and run[key].startswith(ABSENT) for run in runs):
        return ABSENT
    return format_mean_std(numbers(runs, key), digits)


def lpips_key(runs: Sequence[dict]) -> str | None:
    """The run's masked-LPIPS metric name (its net varies with the config), if any."""
    for run in runs:
        for key in run:
            if key.startswith("undesired_change_lpips_"):
                return key
    return None


def write_markdown_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]], preface: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [preface.rstrip() + "\n"] if preface else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def flat_run(run: dict, keys: Sequence[str]) -> dict:
    """The numeric/str metrics of one run worth a CSV row."""
    return {key: run.get(key) for key in keys}
