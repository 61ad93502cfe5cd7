"""`python run.py` end to end: wall time on an empty cache, then with the caches it left (second moment,
unedited metric side, resolved request), and where the time goes, as JSON.

    python experiments/bench/run_time.py [--repeats 2] [--out results/bench/run_py_cpu.json] [-- run.py overrides]

Each run is a fresh process (imports and Hydra start-up included) with WANDB_MODE=offline and a
private $REWRITING_CACHE; the metrics of the cold and warm runs must be equal, or it says so. The
CPU's matmul rate, measured first in a child process, is recorded beside the times: shared machines vary
from day to day. This process never imports torch: an idle parent holding torch slowed warm runs
(experiments/bench/child_facts.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_facts import torch_facts  # the script's folder is on sys.path
from rewriting.atomic import write_json
from rewriting.version import package_version

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = ("edit_seconds", "metric_seconds", "second_moment_seconds", "second_moment_from_cache",
           "unedited_from_cache", "unedited_states_from_cache")


def timed_run(out_dir: Path, cache: Path, overrides: list[str]) -> dict:
    environment = {**os.environ, "WANDB_MODE": "offline", "REWRITING_CACHE": str(cache)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "run.py", "progress=false", f"hydra.run.dir={out_dir}", *overrides],
                   cwd=ROOT, env=environment, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {"wall_seconds": wall, "pipeline_seconds": metrics["provenance"]["total_seconds"],
            **{key: metrics.get(key) for key in TIMINGS}, "metrics": metrics}


def comparable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items()
            if key not in TIMINGS and key != "provenance" and not key.endswith("_seconds")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="warm runs after the cold one")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "run_py_cpu.json")
    parser.add_argument("overrides", nargs="*", help="run.py overrides (after --)")
    args = parser.parse_args(argv)
    facts = torch_facts()  # in a child: this process must not hold torch while it times run.py
    flop_rate = facts["matmul_flops_per_s"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        runs = [timed_run(scratch / f"run{i}", scratch / "cache", args.overrides) for i in range(1 + args.repeats)]
    cold, warm = runs[0], runs[1:]
    same = all(comparable(run["metrics"]) == comparable(cold["metrics"]) for run in warm)
    report = {"command": " ".join(["python experiments/bench/run_time.py", *(argv if argv is not None else
                                                                             sys.argv[1:])]),
              "device": platform.processor() or "cpu", "cpu_count": os.cpu_count(), "torch": facts["torch"],
              "package_version": package_version(), "overrides": args.overrides,
              "matmul_flops_per_s": flop_rate,
              "cold": {k: v for k, v in cold.items() if k != "metrics"},
              "warm": [{k: v for k, v in run.items() if k != "metrics"} for run in warm],
              "warm_wall_seconds_median": statistics.median(run["wall_seconds"] for run in warm),
              "metrics_equal_cold_and_warm": same}
    write_json(args.out, report)

    def metric_pass(run: dict) -> str:  # metrics=none runs none
        return "no metric pass" if run["metric_seconds"] is None else f"metric pass {run['metric_seconds']:.1f} s"
    print(f"cold {cold['wall_seconds']:.1f} s ({metric_pass(cold)}), warm {report['warm_wall_seconds_median']:.1f} s "
          f"({metric_pass(warm[-1])}); metrics equal: {same}; matmul {flop_rate / 1e9:.0f} GFLOP/s")
    if not same:
        print("the warm runs' metrics differ from the cold run's: the caches are not faithful", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
