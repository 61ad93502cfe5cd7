"""Facts about this machine's torch measured in a child process, for benches that time fresh processes.

A parent that has imported torch slows the processes it starts: a warm `python run.py` took 0.5 s
longer under one (its metric pass 15% longer), though the parent sat idle. So the benches that time
child processes keep torch out of their own process and ask a child for the matmul rate instead.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent

_PROBE = """
import json, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads({threads})
from bench import matmul_flops_per_second
print(json.dumps({{"torch": torch.__version__, "matmul_flops_per_s": matmul_flops_per_second("cpu")}}))
"""


def torch_facts(threads: int = 2) -> dict:
    """{"torch": version, "matmul_flops_per_s": this CPU's fp32 matmul rate}, from a fresh process."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(here=str(HERE), threads=threads)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def package_version() -> str:
    """The installed `rewriting` version, read without importing the package (which imports torch)."""
    try:
        return version("rewriting")
    except PackageNotFoundError:
        return "unknown"
