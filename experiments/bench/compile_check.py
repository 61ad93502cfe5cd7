"""Would torch.compile speed up the second moment? Eager against compiled key synthesis, as JSON.

    python experiments/bench/compile_check.py [--layer 8] [--images 1000] [--out results/bench/compile_cpu.json]

The keys of `--layer` for `--images` latents (bundled Toytown generator, batches of 50) are made eagerly
and by `torch.compile`, each the best of 3. Compiling is timed twice, each in a fresh process: with an
empty inductor cache, then with the cache the first left (what every later run would pay).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def measure(layer: int, images: int, threads: int) -> dict:
    """One process's timings: first compiled call (compile included), eager and compiled throughput."""
    import torch

    import rewriting
    rewriting.reuse_freed_memory()
    torch.set_num_threads(threads)
    generator = rewriting.load_generator(name="toytown").eval().requires_grad_(False)
    z = torch.randn(50, generator.z_dim, generator=torch.Generator().manual_seed(0))

    def keys(latents: torch.Tensor) -> torch.Tensor:
        layer_input = generator.layer_input(latents, layer)
        return generator.layer(layer).modulate(layer_input.features, layer_input.w)[0]

    def best_of_three(function) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(images // 50):
                function(z)
            best = min(best, time.perf_counter() - started)
        return best

    with torch.no_grad():
        eager = keys(z)
        compiled_keys = torch.compile(keys, dynamic=False)
        started = time.perf_counter()
        compiled = compiled_keys(z)
        first_call = time.perf_counter() - started
        return {"first_compiled_call_seconds": first_call,
                "max_abs_difference": float((compiled - eager).abs().max()),
                "eager_seconds": best_of_three(keys), "compiled_seconds": best_of_three(compiled_keys)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=8)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "compile_cpu.json")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.layer, args.images, args.threads)))
        return {}
    import torch

    from rewriting.atomic import write_json
    from rewriting.deltas import package_version
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for name in ("empty_cache", "warm_cache"):
            done = subprocess.run([sys.executable, __file__, "--measure", "--layer", str(args.layer),
                                   "--images", str(args.images), "--threads", str(args.threads)],
                                  env=environment, capture_output=True, text=True, check=True)
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {"command": "python experiments/bench/compile_check.py", "layer": args.layer, "images": args.images,
              "threads": args.threads, "torch": torch.__version__, "package_version": package_version(), **runs}
    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
