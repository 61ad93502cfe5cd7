"""Which layer to edit: editing success and undesired change against the layer, per Toytown edit.

    python experiments/paper/layer_sweep.py [--edits spire_to_tree ...] [--layers 3 4 5 6 7 8] [--samples 100]
        [--seeds 1] [--method rank_one] [--out results/layer_sweep]

The grid is that of `python run.py -m experiment=layer_sweep` (conf/experiment/layer_sweep.yaml),
composed per layer here. Two readings per edit: the layer maximizing the mean sweep objective
success − λ · undesired change (λ = objective_lambda, as the Optuna search optimizes), and the
default-layer rule of the bundled edits: the highest mean success among layers whose mean masked
L1 stays within --max-undesired (0.05, the Toytown bar for spire_to_tree).
Writes table.md and table.csv (mean ± std per edit and layer), runs.csv (every run) and plot.png.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from paper_tables import (RESULTS_DIR, compose_config, experiment_overrides, format_mean_std, mean_std, numbers,
                          replayed_overrides, resolved_edit_overrides, run_overrides, seed_values, write_csv,
                          write_markdown_table)


RUN_COLUMNS = ("edit", "layer", "seed", "edit_success", "erase_success", "undesired_change_l1", "objective",
               "edit_seconds", "run_seconds", "paste_reach")


def sweep(edits, layers, seeds: int, samples: int, method: str, scratch: Path, extra: list[str],
          reuse: bool = False, log=print, first_seed: int = 1) -> dict[tuple[str, int], list[dict]]:
    grouped: dict[tuple[str, int], list[dict]] = {}
    for edit in edits:
        for layer in layers:
            for seed in seed_values(seeds, first_seed):
                out = scratch / "runs" / edit / f"layer{layer}" / f"seed{seed}"
                overrides = [*resolved_edit_overrides(edit, seed, scratch, extra, layer), f"method={method}",
                             f"layer={layer}", f"seed={seed}", *experiment_overrides(scratch, samples),
                             *replayed_overrides(extra)]
                metrics = {**run_overrides(overrides, out, reuse), "edit": edit, "layer": layer, "seed": seed}
                grouped.setdefault((edit, layer), []).append(metrics)
                log(f"{edit:18s} layer {layer}: success {metrics.get('edit_success')} undesired L1 "
                    f"{metrics.get('undesired_change_l1')} objective {metrics.get('objective')} "
                    f"({metrics['run_seconds']:.0f} s)")
    return grouped


def best_layers(grouped: dict[tuple[str, int], list[dict]]) -> dict[str, int]:
    """Per edit, the layer with the highest mean objective."""
    best: dict[str, tuple[float, int]] = {}
    for (edit, layer), runs in grouped.items():
        objective = mean_std(numbers(runs, "objective"))[0]
        if objective is not None and (edit not in best or objective > best[edit][0]):
            best[edit] = (objective, layer)
    return {edit: layer for edit, (_, layer) in best.items()}


def default_layers(grouped: dict[tuple[str, int], list[dict]], max_undesired: float = 0.05) -> dict[str, int]:
    """Per edit, the layer of highest mean success whose mean masked L1 is at most `max_undesired`."""
    best: dict[str, tuple[float, int]] = {}
    for (edit, layer), runs in grouped.items():
        success = mean_std(numbers(runs, "edit_success"))[0]
        if success is None:
            success = mean_std(numbers(runs, "erase_success"))[0]
        undesired = mean_std(numbers(runs, "undesired_change_l1"))[0]
        if success is None or undesired is None or undesired > max_undesired:
            continue
        if edit not in best or success > best[edit][0]:
            best[edit] = (success, layer)
    return {edit: layer for edit, (_, layer) in best.items()}


def table(grouped, best: dict[str, int]) -> tuple[list[str], list[list[str]], list[dict]]:
    header = ["edit", "layer", "editing success ↑", "masked L1 ↓", "objective ↑", "edit time (s)", "best"]
    rows, csv_rows = [], []
    for (edit, layer), runs in grouped.items():
        rows.append([edit, str(layer), format_mean_std(numbers(runs, "edit_success")),
                     format_mean_std(numbers(runs, "undesired_change_l1"), 4),
                     format_mean_std(numbers(runs, "objective")), format_mean_std(numbers(runs, "edit_seconds"), 1),
                     "**best**" if best.get(edit) == layer else ""])
        row = {"edit": edit, "layer": layer, "runs": len(runs)}
        for key in ("edit_success", "undesired_change_l1", "objective", "edit_seconds"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(numbers(runs, key))
        csv_rows.append(row)
    return header, rows, csv_rows


def plot(grouped, path: Path) -> None:
    """Success and undesired change against the layer, one line per edit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edits = list(dict.fromkeys(edit for edit, _ in grouped))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    for edit in edits:
        layers = sorted(layer for e, layer in grouped if e == edit)
        for axis, key in ((top, "edit_success"), (bottom, "undesired_change_l1")):
            stats = [mean_std(numbers(grouped[(edit, layer)], key)) for layer in layers]
            points = [(layer, m, s) for layer, (m, s) in zip(layers, stats) if m is not None]
            if points:
                xs, ms, ss = zip(*points)
                axis.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=edit)
    top.set_ylabel("editing success ↑")
    bottom.set_ylabel("undesired change (masked L1) ↓")
    bottom.set_xlabel("edited layer")
    bottom.set_xticks(sorted({layer for _, layer in grouped}))  # layers are whole numbers
    top.legend(fontsize=8)
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", nargs="+", default=["spire_to_tree"])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1,
                        help="seeds run: first-seed .. first-seed + seeds - 1 (later ones hold out a choice made on 1..N)")
    parser.add_argument("--method", default="rank_one")
    parser.add_argument("--max-undesired", type=float, default=0.05,
                        help="masked L1 bound of the default-layer rule")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "layer_sweep")
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    # Composed before the runs, with the swept edit, so overrides that only fit it fail at once.
    weight = compose_config([f"edit={args.edits[0]}", *args.overrides]).objective_lambda
    with tempfile.TemporaryDirectory(prefix="layer_sweep_") as temporary:
        scratch = args.scratch or Path(temporary)
        grouped = sweep(args.edits, args.layers, args.seeds, args.samples, args.method, scratch, args.overrides,
                        args.reuse, first_seed=args.first_seed)
    best = best_layers(grouped)
    header, rows, csv_rows = table(grouped, best)
    minutes = (time.perf_counter() - started) / 60
    run_minutes = sum(numbers([run for runs in grouped.values() for run in runs], "run_seconds")) / 60
    defaults = {edit: compose_config([f"edit={edit}"]).edit.layer for edit in args.edits}
    preface = (f"Layer sweep ({args.method}), {datetime.date.today()}: {args.samples} metric samples, "
               f"{args.seeds} seed(s){f' from {args.first_seed}' if args.first_seed != 1 else ''}, mean ± std; "
               f"the runs took {run_minutes:.1f} min. "
               f"objective = success − {weight} × masked L1.\n\n"
               f"Best layer per edit (configured default in brackets): "
               + ", ".join(f"{edit}: {layer} [{defaults[edit]}]" for edit, layer in best.items())
               + f"\n\nHighest success with masked L1 <= {args.max_undesired} (the rule for default layers): "
               + ", ".join(f"{edit}: {layer} [{defaults[edit]}]"
                           for edit, layer in default_layers(grouped, args.max_undesired).items()))
    write_markdown_table(args.out / "table.md", header, rows, preface)
    write_csv(args.out / "table.csv", csv_rows)
    write_csv(args.out / "runs.csv", [{key: run.get(key) for key in RUN_COLUMNS}
                                      for runs in grouped.values() for run in runs])
    plot(grouped, args.out / "plot.png")
    print(f"wrote {args.out / 'table.md'} ({minutes:.1f} min); best layers {best}")
    return args.out


if __name__ == "__main__":
    main()
