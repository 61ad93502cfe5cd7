"""What `python run.py` spends before any work: fresh processes importing each layer of the stack, as JSON.

    python experiments/bench/startup.py [--repeats 5] [--out results/bench/startup_cpu.json]

Each stage is a fresh `python -c "import ..."` (median of the repeats), from the bare interpreter to
everything run.py imports: the process's wall time up to the end of its imports, and its whole wall
time (with the interpreter's exit, which run.py shortens with gc.freeze); `python -X importtime` then
names the third-party imports that take longest, with the chain that pulled each in.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from child_facts import torch_facts  # the script's folder is on sys.path
from rewriting.atomic import write_json
from rewriting.version import package_version

ROOT = Path(__file__).resolve().parents[2]
STAGES = {
    "python": "pass",
    "torch": "import torch",
    "torch + pytorch_lightning": "import torch, pytorch_lightning",
    "+ hydra, omegaconf": "import torch, pytorch_lightning, hydra, omegaconf",
    "+ rewriting.pipeline (everything run.py imports)": "import rewriting.pipeline, rewriting.metrics.evaluate, "
                                                         "rewriting.toytown.segmenter, wandb",
}
# Imports that are each a large part of the start-up, and what run.py needs them for.
NAMED = ("torch", "pytorch_lightning", "torchmetrics", "torchvision", "torch._dynamo", "scipy.signal", "matplotlib",
         "wandb", "hydra", "rewriting")


def wall_seconds(code: str) -> tuple[float, float]:
    """(seconds from launch to the end of the imports, seconds from launch to the process's end)."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport time; print(repr(time.time()))"], cwd=ROOT,
                          check=True, capture_output=True, text=True)
    ended = time.time()
    return float(done.stdout.split()[-1]) - started, ended - started


def import_chains(code: str) -> dict[str, dict]:
    """Cumulative import time (s) of each NAMED module and the modules that imported it, from -X importtime."""
    lines = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, check=True,
                           capture_output=True, text=True).stderr.splitlines()
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|")
        rows.append((len(name) - len(name.lstrip()), int(cumulative) / 1e6, name.strip()))
    found = {}
    for index, (depth, seconds, name) in enumerate(rows):
        if name in NAMED and name not in found:
            chain, level = [], depth
            for later_depth, _, later_name in rows[index + 1:]:  # a parent is listed after its children
                if later_depth < level:
                    chain.append(later_name)
                    level = later_depth
            found[name] = {"seconds": round(seconds, 3), "imported_by": chain[:4]}
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "startup_cpu.json")
    args = parser.parse_args(argv)
    stages, with_exit = {}, {}
    for name, code in STAGES.items():
        wall_seconds(code)  # the first run also warms the page cache
        runs = [wall_seconds(code) for _ in range(args.repeats)]
        stages[name] = statistics.median(imported for imported, _ in runs)
        with_exit[name] = statistics.median(whole for _, whole in runs)
    report = {"command": " ".join(["python experiments/bench/startup.py", *(argv if argv is not None else
                                                                            sys.argv[1:])]),
              "device": platform.processor() or "cpu", "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "torch": torch_facts(matmul=False)["torch"], "package_version": package_version(), "repeats": args.repeats,
              "imported_seconds_median": stages, "with_exit_seconds_median": with_exit,
              "importtime_seconds": import_chains(STAGES["+ rewriting.pipeline (everything run.py imports)"])}
    write_json(args.out, report)
    for name, seconds in stages.items():
        print(f"{seconds:5.2f} s imported, {with_exit[name]:5.2f} s with the exit: {name}")
    return report


if __name__ == "__main__":
    main()
