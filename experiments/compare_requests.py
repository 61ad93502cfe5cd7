"""Compare ways of making one edit's request, seed by seed, from layer sweeps run at the same seeds.

    python experiments/compare_requests.py DIR_A DIR_B ... --layer 6 [or one per DIR] --baseline DIR_A
        [--chosen-on 1 8] [--out summary.json]

Each DIR is a `layer_sweep.py --out` folder (its runs.csv); the edit seeds pick the latent sample
the request's regions are found in, so every seed is another request of the same kind. Reports,
per DIR at that layer: success per seed, mean over all seeds and over the seeds the choice was not
made on (outside `--chosen-on FIRST LAST`), how many seeds reach the success bar, the largest masked
L1, and against the baseline DIR: on how many held-out seeds it is better, within 0.01, or worse.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
from pathlib import Path

from paper_tables import mean_std
from rewriting.atomic import write_json

SUCCESS_BAR = 0.50
UNDESIRED_BAR = 0.05  # masked L1 (images in [0, 1]): the bar for spire_to_tree beside the success bar
TIE = 0.01


def seed_rows(folder: Path, layer: int, seeds: tuple[int, int] | None = None) -> dict[int, dict]:
    """Seed -> its run's row at `layer` in folder/runs.csv (only seeds FIRST..LAST when given)."""
    with open(folder / "runs.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["layer"]) == layer
                and (seeds is None or seeds[0] <= int(row["seed"]) <= seeds[1])]
    if not rows:
        raise SystemExit(f"{folder / 'runs.csv'} has no run at layer {layer}; sweep that layer or pass --layer")
    return {int(row["seed"]): row for row in rows}


def summarize(folders: list[Path], layers: list[int], baseline: Path, chosen_on: tuple[int, int],
              seeds: tuple[int, int] | None = None) -> dict:
    """Per folder: per-seed success, means (all / held-out seeds), bar count, worst L1, paired comparison.

    layers: one per folder, or one for all; seeds: compare only seeds FIRST..LAST of every folder.
    """
    layers = layers * len(folders) if len(layers) == 1 else layers
    runs = {folder: seed_rows(folder, layer, seeds) for folder, layer in zip(folders, layers)}
    base = runs[baseline]
    summary = {}
    for folder, rows in runs.items():
        success = {seed: float(row["edit_success"]) for seed, row in sorted(rows.items())}
        undesired = {seed: float(row["undesired_change_l1"]) for seed, row in sorted(rows.items())}
        held_out = [seed for seed in success if not chosen_on[0] <= seed <= chosen_on[1]]
        entry = {
            "edit_success": {str(seed): value for seed, value in success.items()},
            "mean_edit_success": mean_std(list(success.values()))[0],
            "mean_edit_success_seeds_chosen_on": mean_std([v for s, v in success.items() if s not in held_out])[0],
            "mean_edit_success_held_out_seeds": mean_std([success[s] for s in held_out])[0],
            "seeds_reaching_bar": sum(value >= SUCCESS_BAR for value in success.values()),
            "seeds": len(success),
            "largest_undesired_change_l1": max(undesired.values()),
            "mean_undesired_change_l1": mean_std(list(undesired.values()))[0],
            # An edit that spills wrecks images outside the source region, worse for a user than a weak one.
            "seeds_over_undesired_bar": sum(value > UNDESIRED_BAR for value in undesired.values()),
            "seeds_meeting_both_bars": sum(success[s] >= SUCCESS_BAR and undesired[s] <= UNDESIRED_BAR for s in success),
        }
        if folder != baseline:
            paired = [success[s] - float(base[s]["edit_success"]) for s in held_out if s in base]
            entry["held_out_against_baseline"] = {
                "better": sum(d > TIE for d in paired), "within_0.01": sum(abs(d) <= TIE for d in paired),
                "worse": sum(d < -TIE for d in paired)}
        summary[folder.name] = entry
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--layer", type=int, nargs="+", required=True,
                        help="the layer compared, or one per folder (each request at its own default layer)")
    parser.add_argument("--baseline", type=Path, required=True, help="one of the folders")
    parser.add_argument("--chosen-on", type=int, nargs=2, default=(0, -1), metavar=("FIRST", "LAST"),
                        help="seeds the choice was made on (the rest are held out); default: none")
    parser.add_argument("--seeds", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                        help="compare only these seeds of every folder (folders swept over different seeds)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.baseline not in args.folders:
        parser.error("--baseline must be one of the folders")
    if len(args.layer) not in (1, len(args.folders)):
        parser.error(f"--layer takes one layer or one per folder ({len(args.folders)}), got {len(args.layer)}")
    layer = args.layer[0] if len(args.layer) == 1 else args.layer
    result = {"date": datetime.date.today().isoformat(), "layer": layer,
              "command": "python experiments/compare_requests.py " + " ".join(map(str, args.folders))
                         + f" --layer {' '.join(map(str, args.layer))} --baseline {args.baseline}"
                         + f" --chosen-on {args.chosen_on[0]} {args.chosen_on[1]}"
                         + (f" --seeds {args.seeds[0]} {args.seeds[1]}" if args.seeds else "")
                         + (f" --out {args.out}" if args.out else ""),
              "success_bar": SUCCESS_BAR, "undesired_bar": UNDESIRED_BAR, "chosen_on_seeds": list(args.chosen_on),
              "requests": summarize(args.folders, args.layer, args.baseline, tuple(args.chosen_on),
                                    tuple(args.seeds) if args.seeds else None)}
    if len(args.layer) > 1:
        for folder, folder_layer in zip(args.folders, args.layer):
            result["requests"][folder.name]["layer"] = folder_layer
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
