"""Watermark removal (the paper's §5.2): the share of samples that still show a watermark, before and after.

    python experiments/paper/watermark_removal.py [--samples 200] [--seeds 3] [--dranks 8 15]
        [--out results/watermark_removal]

Rows: no edit; the rank-one erase at a small and a large drank (erase_fill zero_units, the
paper's); unit zeroing (GAN dissection) at the same dranks; the rank-one erase filling the region
from its surroundings (erase_fill surroundings, ours; no drank). The paper used drank 30 and 60
on 512-channel layers; by default the dranks are scaled to the edited layer's key dimension
(30/512 and 60/512 of it). A sample shows a watermark when the segmenter labels more than 4 of
its pixels so (`evaluate_edit`'s min_pixels, PRESENCE_MIN_PIXELS). Undesired
change is the masked L1 outside the (dilated) watermark region. `--edit` takes any erase edit
(e.g. erase_windows): the share is then that of its first erase class.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from hydra.utils import instantiate

from paper_tables import (RESULTS_DIR, compose_config, experiment_overrides, format_mean_std, mean_std, metric_cell,
                          numbers, replayed_overrides, resolved_edit_overrides, run_overrides, seed_values, write_csv,
                          write_markdown_table)
from rewriting.metrics.success import PRESENCE_MIN_PIXELS

PAPER_DRANKS, PAPER_WIDTH = (30, 60), 512


def scaled_dranks(key_dimension: int, reference: tuple[int, ...] = PAPER_DRANKS,
                  reference_width: int = PAPER_WIDTH) -> list[int]:
    """The paper's dranks at the same share of a layer with `key_dimension` input channels (each >= 1)."""
    return [max(1, round(d * key_dimension / reference_width)) for d in reference]


def erase_setting(edit: str, overrides: list[str]) -> tuple[int, int, str]:
    """(layer, its number of input channels, the erased class) of an erase edit's config."""
    cfg = compose_config([f"edit={edit}", *overrides])
    if not cfg.edit.get("erase_classes"):
        raise SystemExit(f"edit {edit!r} names no erase_classes; pass an erase edit such as remove_watermark")
    generator = instantiate(cfg.generator, device="cpu")
    layer = int(cfg.layer)
    return layer, int(generator.layer(layer).weight.shape[1]), str(cfg.edit.erase_classes[0])


def run_rows(edit: str, erased: str, dranks: list[int], seeds: int, samples: int, scratch: Path, extra: list[str],
             reuse: bool = False, log=print) -> dict[tuple[str, int], list[dict]]:
    """Runs of the rank-one erase and of unit zeroing at each drank, and of the surroundings fill, by (row, drank)."""
    grouped: dict[tuple[str, int | None], list[dict]] = {}
    settings = [("rank_one", "rank_one", "zero_units", drank) for drank in dranks]
    settings += [("unit_zeroing", "unit_zeroing", "zero_units", drank) for drank in dranks]
    settings += [("rank_one, surroundings fill", "rank_one", "surroundings", None)]
    for row, method, fill, drank in settings:
        for seed in seed_values(seeds):
            name = f"{method}_drank{drank}" if drank is not None else f"{method}_{fill}"
            out = scratch / "runs" / edit / name / f"seed{seed}"
            overrides = [*resolved_edit_overrides(edit, seed, scratch, extra), f"method={method}",
                         f"++edit.erase_fill={fill}", *([f"++edit.drank={drank}"] if drank is not None else []),
                         f"seed={seed}", *experiment_overrides(scratch, samples),
                         *replayed_overrides(extra)]
            metrics = run_overrides(overrides, out, reuse)
            grouped.setdefault((row, drank), []).append(metrics)
            log(f"{row:13s} drank {drank} seed {seed}: {erased} shown "
                f"{metrics.get(f'share_showing_{erased}_before')} -> {metrics.get(f'share_showing_{erased}_after')}"
                f", undesired L1 {metrics.get('undesired_change_l1')} ({metrics['run_seconds']:.0f} s)")
    return grouped


def table(grouped: dict[tuple[str, int], list[dict]], erased: str) -> tuple[list[str], list[list[str]], list[dict]]:
    header = ["method", "drank", f"showing a {erased}, before", "after ↓", f"{erased} pixels erased ↑",
              "masked L1 ↓", "edit time (s)", "seeds"]
    before_key, after_key = f"share_showing_{erased}_before", f"share_showing_{erased}_after"
    before = numbers([run for runs in grouped.values() for run in runs], before_key)
    rows = [["no edit", "—", format_mean_std(before), format_mean_std(before), "0", "0", "—", "—"]]
    csv_rows = [{"method": "no edit", "drank": None, "showing_before_mean": mean_std(before)[0],
                 "showing_after_mean": mean_std(before)[0], "showing_after_std": 0.0, "undesired_change_l1_mean": 0.0}]
    for (method, drank), runs in grouped.items():
        rows.append([method, "—" if drank is None else str(drank), metric_cell(runs, before_key),
                     metric_cell(runs, after_key),
                     metric_cell(runs, "erase_success"), metric_cell(runs, "undesired_change_l1", 4),
                     format_mean_std(numbers(runs, "edit_seconds"), 1), str(len(runs))])
        row = {"method": method, "drank": drank}
        for key, name in ((before_key, "showing_before"), (after_key, "showing_after"),
                          ("erase_success", "erase_success"), ("undesired_change_l1", "undesired_change_l1"),
                          ("edit_seconds", "edit_seconds")):
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(numbers(runs, key))
        csv_rows.append(row)
    return header, rows, csv_rows


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--edit", default="remove_watermark")
    parser.add_argument("--dranks", type=int, nargs="+", default=None,
                        help="default: 30/512 and 60/512 of the layer's key dimension")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "watermark_removal")
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    layer, key_dimension, erased = erase_setting(args.edit, args.overrides)
    dranks = args.dranks or scaled_dranks(key_dimension)
    with tempfile.TemporaryDirectory(prefix="watermark_removal_") as temporary:
        scratch = args.scratch or Path(temporary)
        grouped = run_rows(args.edit, erased, dranks, args.seeds, args.samples, scratch, args.overrides, args.reuse)
    header, rows, csv_rows = table(grouped, erased)
    minutes = (time.perf_counter() - started) / 60
    run_minutes = sum(numbers([run for runs in grouped.values() for run in runs], "run_seconds")) / 60
    scaled = " = the paper's 30 and 60 of 512, scaled" if not args.dranks else ""
    preface = (f"Erase edit {args.edit} at layer {layer} ({key_dimension} key channels; dranks {dranks}{scaled}), "
               f"{datetime.date.today()}: {args.samples} metric samples, {args.seeds} seed(s), mean ± std; "
               f"the runs took {run_minutes:.1f} min. A sample shows a {erased} when more than "
               f"{PRESENCE_MIN_PIXELS} of its pixels are labelled so; masked L1 is measured outside the (dilated) "
               f"{erased} region.")
    write_markdown_table(args.out / "table.md", header, rows, preface)
    write_csv(args.out / "table.csv", csv_rows)
    print(f"wrote {args.out / 'table.md'} ({minutes:.1f} min)")
    return args.out


if __name__ == "__main__":
    main()
