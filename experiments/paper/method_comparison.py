"""Ours against the paper's baselines on the bundled Toytown edits: success vs undesired change.

    python experiments/paper/method_comparison.py [--samples 200] [--seeds 3] [--edits spire_to_tree ...]
        [--methods rank_one finetune_all ...] [--out results/method_comparison] [--scratch DIR] [--reuse]

Every edit × method × seed is one run of `rewriting.pipeline.run` on the composed config
(`python run.py edit=E method=M seed=s ++edit.seed=s` reproduces it; s = 1, 2, ...). Seed s changes Lightning's
seed and the edit's latent sample, so the context, copy and paste images differ between seeds;
the metrics use one fixed sample (metrics.seed) for every run. unit_zeroing runs on erase edits only.
Each edit's label request is resolved once per seed and replayed from its recorded masks by every method.
Writes table.md, table.csv (mean and std per edit and method), runs.csv (every run) and plot.png;
the per-run outputs (deltas, pictures) stay in the scratch folder.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from paper_tables import (RESULTS_DIR, TOYTOWN_EDITS, experiment_overrides, format_mean_std, is_erase_edit,
                          lpips_key, mean_std, metric_cell, numbers, replayed_overrides, resolved_edit_overrides,
                          run_overrides, seed_values, write_csv, write_markdown_table)

METHODS = ("rank_one", "rank_n", "closed_form", "finetune_layer", "finetune_all", "unit_zeroing")
ERASE_ONLY = {"unit_zeroing"}
CLAIM_EDITS = ("spire_to_tree", "dome_to_tree", "erase_windows")
RUN_COLUMNS = ("edit", "method_name", "seed", "layer", "edit_success", "erase_success", "undesired_change_l1",
               "edited_region_l1", "segmenter_fid_edited_vs_unedited", "edit_seconds", "run_seconds",
               "final_loss", "initial_loss", "changed_tensors", "weight_relative_change", "perceptual_loss")


def run_grid(edits, methods, seeds: int, samples: int, scratch: Path, extra: list[str], reuse: bool = False,
             device: str = "cpu", log=print) -> list[dict]:
    """Every edit × method × seed run's metrics (unit zeroing only on erase edits)."""
    runs = []
    for edit in edits:
        erase = is_erase_edit(edit)
        for method in methods:
            if method in ERASE_ONLY and not erase:
                continue
            for seed in seed_values(seeds):
                out = scratch / "runs" / edit / method / f"seed{seed}"
                overrides = [*resolved_edit_overrides(edit, seed, scratch, extra), f"method={method}", f"seed={seed}",
                             *experiment_overrides(scratch, samples, device), *replayed_overrides(extra)]
                metrics = run_overrides(overrides, out, reuse)
                metrics.update(edit=edit, method_name=method, seed=seed)
                runs.append(metrics)
                log(f"{edit:18s} {method:15s} seed {seed}: success {metrics.get('edit_success')} "
                    f"undesired L1 {metrics.get('undesired_change_l1')} ({metrics['run_seconds']:.0f} s)")
    return runs


def group(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        grouped.setdefault((run["edit"], run["method_name"]), []).append(run)
    return grouped


def summary_rows(runs: list[dict]) -> tuple[list[str], list[list[str]], list[dict]]:
    """Markdown header and rows, and CSV rows, one per (edit, method)."""
    lpips = lpips_key(runs)
    net = lpips.rsplit("_", 1)[-1] if lpips else "—"
    header = ["edit", "method", "editing success ↑", "erased ↑", "masked L1 ↓", f"masked LPIPS ({net}) ↓",
              "segmenter FID ↓", "edit time (s)", "seeds"]
    rows, csv_rows = [], []
    for (edit, method), group_runs in group(runs).items():
        rows.append([edit, method, metric_cell(group_runs, "edit_success"), metric_cell(group_runs, "erase_success"),
                     metric_cell(group_runs, "undesired_change_l1", 4),
                     metric_cell(group_runs, lpips, 4) if lpips else "—",
                     metric_cell(group_runs, "segmenter_fid_edited_vs_unedited", 2),
                     format_mean_std(numbers(group_runs, "edit_seconds"), 1), str(len(group_runs))])
        csv_row = {"edit": edit, "method": method, "runs": len(group_runs)}
        for key in ("edit_success", "erase_success", "undesired_change_l1", lpips,
                    "segmenter_fid_edited_vs_unedited", "edit_seconds"):
            if key is None:
                continue
            mean, std = mean_std(numbers(group_runs, key))
            csv_row[f"{key}_mean"], csv_row[f"{key}_std"] = mean, std
        csv_rows.append(csv_row)
    return header, rows, csv_rows


def claim_lines(runs: list[dict], ours: str = "rank_one", baseline: str = "finetune_all") -> list[str]:
    """The issue's claim, edit by edit: does `ours` reach higher success at lower undesired change?"""
    grouped = group(runs)
    lines = []
    for edit in CLAIM_EDITS:
        if (edit, ours) not in grouped or (edit, baseline) not in grouped:
            continue
        success = [mean_std(numbers(grouped[(edit, m)], "edit_success"))[0] for m in (ours, baseline)]
        change = [mean_std(numbers(grouped[(edit, m)], "undesired_change_l1"))[0] for m in (ours, baseline)]
        if None in success or None in change:
            continue
        higher, lower = success[0] > success[1], change[0] < change[1]
        verdict = "holds" if (higher and lower) else "does not hold"
        lines.append(f"- {edit}: {ours} success {success[0]:.3f} vs {baseline} {success[1]:.3f} "
                     f"({'higher' if higher else 'not higher'}); undesired L1 {change[0]:.4f} vs {change[1]:.4f} "
                     f"({'lower' if lower else 'not lower'}): the claim {verdict}.")
    return lines


def plot(runs: list[dict], path: Path) -> None:
    """One panel per edit: success (y) against undesired change (x), one point per method, std bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = group(runs)
    edits = list(dict.fromkeys(run["edit"] for run in runs))
    methods = list(dict.fromkeys(run["method_name"] for run in runs))
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    figure, axes = plt.subplots(1, len(edits), figsize=(3.6 * len(edits), 3.6), squeeze=False)
    for axis, edit in zip(axes[0], edits):
        for method in methods:
            if (edit, method) not in grouped:
                continue
            x_mean, x_std = mean_std(numbers(grouped[(edit, method)], "undesired_change_l1"))
            y_mean, y_std = mean_std(numbers(grouped[(edit, method)], "edit_success"))
            if x_mean is None or y_mean is None:
                continue
            axis.errorbar(x_mean, y_mean, xerr=x_std, yerr=y_std, fmt="o", color=colours[method], label=method,
                          capsize=3)
        axis.set_title(edit)
        axis.set_xlabel("undesired change (masked L1) ↓")
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("editing success ↑")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for axis in axes[0][1:]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(runs: list[dict], out: Path, settings: str) -> None:
    header, rows, csv_rows = summary_rows(runs)
    claims = claim_lines(runs)
    preface = settings + ("\n\nThe claim (rank_one: higher success than finetune_all at lower undesired change):\n"
                          + "\n".join(claims) if claims else "")
    write_markdown_table(out / "table.md", header, rows, preface)
    write_csv(out / "table.csv", csv_rows)
    write_csv(out / "runs.csv", [{key: run.get(key) for key in RUN_COLUMNS} for run in runs])
    plot(runs, out / "plot.png")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="metric samples per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--edits", nargs="+", default=list(TOYTOWN_EDITS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "method_comparison")
    parser.add_argument("--scratch", type=Path, default=None, help="per-run outputs (default: a temporary folder)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    parser.add_argument("--reuse", action="store_true", help="reuse runs already in --scratch with the same config")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run, e.g. method.steps=200")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="method_comparison_") as temporary:
        scratch = args.scratch or Path(temporary)
        runs = run_grid(args.edits, args.methods, args.seeds, args.samples, scratch, args.overrides, args.reuse,
                        args.device)
    minutes = (time.perf_counter() - started) / 60
    run_minutes = sum(numbers(runs, "run_seconds")) / 60
    settings = (f"Method comparison on the bundled Toytown generator ({datetime.date.today()}): "
                f"{args.samples} metric samples per run, {args.seeds} seed(s) (mean ± std over seeds), "
                f"device {args.device}; {len(runs)} runs took {run_minutes:.1f} min. Extra overrides: "
                f"{' '.join(args.overrides) or 'none'}. Masked = outside the source region (dilated 1 px).")
    write_outputs(runs, args.out, settings)
    print(f"wrote {args.out / 'table.md'} ({minutes:.1f} min)")
    return args.out


if __name__ == "__main__":
    main()
