"""Facts about this machine's torch measured in a child process, for benches that time fresh processes.

A parent that has imported torch slows the processes it starts, though it sits idle: a warm
`python run.py`'s metric pass took 3.55-3.92 s under one against 2.97-3.20 s under a plain parent
(6 alternating runs each). So the benches that time child processes keep torch out of their own
process and ask a child for the torch version and matmul rate instead.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_PROBE = """
import json, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads({threads})
rate = None
if {matmul}:
    from bench import matmul_flops_per_second
    rate = matmul_flops_per_second("cpu")
print(json.dumps({{"torch": torch.__version__, "matmul_flops_per_s": rate}}))
"""


def torch_facts(threads: int = 2, matmul: bool = True) -> dict:
    """{"torch": version (with its build tag), "matmul_flops_per_s": this CPU's fp32 rate or None}, from a child."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(here=str(HERE), threads=threads, matmul=matmul)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])

