"""Choose among kept Toytown generator checkpoints on a validation set disjoint from the reported one.

For every checkpoint: the share of samples showing each part against the renderer's share, the
segmenter FID and how windows are drawn (`window_pieces`; recorded, not part of the rule), over
`--samples` samples at latent seed 1 and renders from seed 1,000,000 on (the
reported evaluation, evaluate_toytown_generator.py, uses latent seed 0 and render seeds 0..1999).
With `--edit-seeds S ...` it also runs the default edit (`python run.py`'s spire_to_tree) on each
checkpoint with those edit seeds (the reported default edit uses seed 1, so validation uses others)
and records its mean editing success and masked L1.

The choice: among the checkpoints that meet the bars on validation (every share within 25%; with
edit seeds, also mean edit success >= 0.50 and masked L1 <= 0.05), the one with the smallest largest
relative share difference (ties: the lower segmenter FID); when none meets them, that rule over all
checkpoints, and the report says `meets_bars: false`. Writes a JSON report.

    python experiments/toytown/select_toytown_checkpoint.py RUN/generator_ema_step*.pt --edit-seeds 2 3 --out selection.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "paper"))  # paper_tables: how runs are configured

import rewriting  # noqa: E402
from evaluate_toytown_generator import PARTS, SHARE_BAR, generated, relative_share_differences, segment, window_pieces
from paper_tables import experiment_overrides, run_overrides, seed_overrides  # noqa: E402
from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.errors import RewritingError
from rewriting.metrics.fid import feature_fid
from rewriting.metrics.success import label_presence
from rewriting.models.download import sha256_file
from rewriting.toytown.labels import LABELS
from rewriting.toytown.renderer import render_seeds
from rewriting.toytown.segmenter import SegmenterFeatures, load_segmenter

EDIT_SUCCESS_BAR = 0.50
EDIT_L1_BAR = 0.05


def validation_edit(checkpoint: Path, seeds: list[int], samples: int, scratch: Path) -> dict:
    """The default edit (spire_to_tree) on a checkpoint with each edit seed: success and masked L1."""
    runs = {}
    for seed in seeds:
        overrides = [f"generator.checkpoint={checkpoint}",
                     "metrics.segmenter={_target_:rewriting.toytown.segmenter.load_segmenter}",
                     *experiment_overrides(scratch, samples), *seed_overrides(seed)]
        try:
            metrics = run_overrides(overrides, scratch / f"{checkpoint.stem}_seed{seed}")
        except RewritingError as error:  # e.g. a generator that draws no spire has no edit to make
            return {"edit_seeds": runs, "samples": samples, "error": f"edit seed {seed}: {error}",
                    "mean_edit_success": None, "mean_undesired_change_l1": None}
        runs[str(seed)] = {"edit_success": metrics["edit_success"],
                           "undesired_change_l1": metrics["undesired_change_l1"]}
    return {"edit_seeds": runs, "samples": samples,
            "mean_edit_success": sum(r["edit_success"] for r in runs.values()) / len(runs),
            "mean_undesired_change_l1": sum(r["undesired_change_l1"] for r in runs.values()) / len(runs)}


def meets_bars(result: dict) -> bool:
    """Every validation share within 25% and, when measured, the default edit above its bar."""
    edit = result.get("default_edit")
    return result["largest_relative_difference"] <= SHARE_BAR and (
        edit is None or (edit["mean_edit_success"] is not None and edit["mean_edit_success"] >= EDIT_SUCCESS_BAR
                         and edit["mean_undesired_change_l1"] <= EDIT_L1_BAR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--latent-seed", type=int, default=1)
    parser.add_argument("--render-seed-start", type=int, default=1_000_000)
    parser.add_argument("--edit-seeds", type=int, nargs="*", default=[],
                        help="also run the default edit with these edit seeds (not 1, the reported one)")
    parser.add_argument("--edit-samples", type=int, default=500, help="metric samples per validation edit")
    parser.add_argument("--scratch", type=Path, default=Path("outputs/checkpoint_selection"),
                        help="where the validation edits write their outputs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    segmenter = load_segmenter()
    features = SegmenterFeatures(segmenter)
    real, _ = render_seeds(list(range(args.render_seed_start, args.render_seed_start + args.samples)))
    rendered = label_presence(segment(segmenter, real), list(LABELS))
    results = {}
    for path in args.checkpoints:
        fake = generated(rewriting.load_generator(path), args.samples, seed=args.latent_seed)
        labels = segment(segmenter, fake)
        shares = label_presence(labels, list(LABELS))
        relative = relative_share_differences(shares, rendered)
        results[str(path)] = {"sha256": sha256_file(path), "shares": {part: shares[part] for part in PARTS},
                              "relative_difference": relative, "largest_relative_difference": max(relative.values()),
                              "segmenter_fid": feature_fid(fake, real, features),
                              "window_pieces": window_pieces(labels)}
        if args.edit_seeds:
            results[str(path)]["default_edit"] = validation_edit(path, args.edit_seeds, args.edit_samples, args.scratch)
        results[str(path)]["meets_bars"] = meets_bars(results[str(path)])
        edit = results[str(path)].get("default_edit")
        print(path.name, {part: round(relative[part], 2) for part in PARTS},
              round(results[str(path)]["segmenter_fid"], 3),
              "windows", results[str(path)]["window_pieces"].get("share_of_window_pixels_in_window_sized_pieces"),
              "" if edit is None else edit.get("error") or f"edit {edit['mean_edit_success']:.3f}/{edit['mean_undesired_change_l1']:.4f}",
              flush=True)
    passing = [name for name in results if results[name]["meets_bars"]]
    # Shares are counts over the same samples, so checkpoints of one run often tie: the lower FID breaks it.
    chosen = min(passing or results, key=lambda name: (results[name]["largest_relative_difference"],
                                                       results[name]["segmenter_fid"]))
    write_json(args.out, {
        "command": "python experiments/toytown/select_toytown_checkpoint.py " + " ".join(str(p) for p in args.checkpoints)
                   + f" --samples {args.samples} --latent-seed {args.latent_seed}"
                   + f" --render-seed-start {args.render_seed_start}"
                   + (f" --edit-seeds {' '.join(map(str, args.edit_seeds))} --edit-samples {args.edit_samples}"
                      if args.edit_seeds else ""),
        "date": datetime.date.today().isoformat(), "package_version": package_version(),
        "samples": args.samples, "rendered_shares": {part: rendered[part] for part in PARTS},
        "checkpoints": results, "chosen": chosen, "meets_bars": results[chosen]["meets_bars"],
        "rule": "smallest largest relative share difference among the checkpoints meeting the bars on validation "
                f"(shares within {SHARE_BAR:.0%}"
                + (f", default edit success >= {EDIT_SUCCESS_BAR} and masked L1 <= {EDIT_L1_BAR}" if args.edit_seeds else "")
                + "); over all checkpoints when none does"})
    print(json.dumps({"chosen": chosen, **results[chosen]}, indent=2))


if __name__ == "__main__":
    main()
