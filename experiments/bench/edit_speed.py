"""Edit speed: the default rank-one fit beside the original algorithm's, on the same request, in one run.

    python experiments/bench/edit_speed.py [--edit spire_to_tree] [--layer 6] [--methods rank_one rank_one_original]
        [--samples 500] [--repeats 3] [--out results/bench/edit_speed_cpu.json]

For each method (a conf/method config) the edit is fitted `--repeats` times with the second moment
already computed (as the cache gives it) and its median time reported, with the final loss and the
edit success and masked L1 over `--samples` samples; the speed-up is the original's median time over
each method's. Writes the JSON and prints a markdown table.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import rewriting
from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.edits.config import spec_from_config
from rewriting.edits.resolve import label_indices
from rewriting.metrics.evaluate import evaluate_edit
from rewriting.pipeline import load_segmenter
from rewriting.statistics import second_moment

ROOT = Path(__file__).resolve().parents[2]


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def measure(cfg, generator, segmenter, moment, repeats: int, samples: int) -> dict:
    """Median edit seconds over `repeats` fits, the fit's losses, and the edit's success on `samples` samples."""
    method = instantiate(cfg.method)
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    spec = spec_from_config(cfg.edit, generator, segmenter)
    layer = int(cfg.layer)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = rewriting.rewrite(generator, copy.deepcopy(spec), method, layer, second_moment=moment,
                                   segmenter=segmenter, trainer_options=options, apply=False, progress=False)
        seconds.append(time.perf_counter() - started)
    edited = copy.deepcopy(generator)
    rewriting.deltas.add_delta(edited, result.delta_tensors())
    metrics = evaluate_edit(generator, edited, num_samples=samples, segmenter=segmenter,
                            source=label_indices(segmenter, list(cfg.edit.source)),
                            target=label_indices(segmenter, list(cfg.edit.target)), lpips_net=None,
                            progress=False)
    return {"method": method.describe(), "edit_seconds_median": statistics.median(seconds), "edit_seconds": seconds,
            "initial_loss": result.fit.initial_loss, "final_loss": result.fit.final_loss,
            "edit_success": metrics.get("edit_success"), "undesired_change_l1": metrics.get("undesired_change_l1")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edit", default="spire_to_tree")
    parser.add_argument("--layer", type=int, default=None, help="default: the edit's")
    parser.add_argument("--methods", nargs="+", default=["rank_one", "rank_one_original"])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "edit_speed_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    freed_memory_reused = rewriting.reuse_freed_memory()  # as run.py and the editor do
    generator = rewriting.load_generator(name="toytown")
    segmenter = load_segmenter({"segmenter": "auto"}, generator)
    base = [f"edit={args.edit}"] + ([f"layer={args.layer}"] if args.layer is not None else [])
    layer = int(composed(base).layer)
    moment = second_moment(generator, layer, 1000, 0, progress=False)
    rows = {name: measure(composed(base + [f"method={name}"]), generator, segmenter, moment, args.repeats,
                          args.samples) for name in args.methods}
    reference = rows[args.methods[-1]]["edit_seconds_median"]
    for row in rows.values():
        row["speed_up_over_last"] = reference / row["edit_seconds_median"]
    report = {"edit": args.edit, "layer": layer, "samples": args.samples, "threads": args.threads,
              "freed_memory_reused": freed_memory_reused,
              "device": platform.processor() or "cpu", "torch": torch.__version__,
              "package_version": package_version(), "generator_sha256": generator.checkpoint_sha256,
              "command": " ".join(["python experiments/bench/edit_speed.py", *(argv if argv is not None else sys.argv[1:])]),
              "methods": rows}
    write_json(args.out, report)
    print(f"| method | edit time (s, median of {args.repeats}) | speed-up | final loss | edit success | masked L1 |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['edit_seconds_median']:.2f} | {row['speed_up_over_last']:.1f}× | "
              f"{row['final_loss']:.4f} | {row['edit_success']:.3f} | {row['undesired_change_l1']:.4f} |")
    return report


if __name__ == "__main__":
    main()
