"""Store mapping-only fine-tunes of a generator compactly: just their mapping networks (~260 KB each).

A `train_toytown_generator.py --trainable mapping` run changes only the mapping network (`style.*`)
and the mean w (`latent_avg`); the synthesis network stays the base generator's. `pack` keeps those
tensors of many checkpoints in one safetensors file (refusing any checkpoint whose synthesis
differs from the base); `unpack` rebuilds a full rosinality checkpoint from the base and one step.

    python experiments/toytown_mapping_checkpoints.py pack RUN/generator_ema_step*.pt --out FILE.safetensors
    python experiments/toytown_mapping_checkpoints.py unpack FILE.safetensors --step 7258 --out generator.pt
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rewriting.atomic import atomic_path
from rewriting.models.checkpoints import read_checkpoint
from rewriting.models.download import sha256_file
from rewriting.models.loading import BUNDLED


# The last commit that bundled the generator the share fine-tunes in experiments/checkpoints started from.
PREVIOUS_BUNDLED_COMMIT = "534321f"


def is_mapping(name: str) -> bool:
    return name.startswith("style.")


def checkpoint_step(path: Path, checkpoint: dict) -> int:
    step = checkpoint.get("training", {}).get("step")
    if step is None:
        match = re.search(r"step(\d+)", path.name)
        if not match:
            raise SystemExit(f"error: {path} records no training step; name it *_step<N>.pt")
        step = int(match.group(1))
    return int(step)


def pack(paths: list[Path], base_path: Path, out: Path) -> None:
    base = read_checkpoint(base_path)["g_ema"]
    tensors = {}
    for path in paths:
        checkpoint = read_checkpoint(path)
        weights = checkpoint["g_ema"]
        changed = [name for name in base if not is_mapping(name) and not torch.equal(base[name], weights[name])]
        if changed or set(weights) != set(base):
            raise SystemExit(f"error: {path} is not a mapping-only fine-tune of {base_path} "
                             f"(differs in {changed[:3] or 'its tensor names'}); keep the whole checkpoint instead")
        step = checkpoint_step(path, checkpoint)
        for name, tensor in weights.items():
            if is_mapping(name):
                tensors[f"step{step}/{name}"] = tensor.contiguous()
        tensors[f"step{step}/latent_avg"] = checkpoint["latent_avg"].contiguous()
    with atomic_path(out) as temporary:
        save_file(tensors, str(temporary), metadata={"base_sha256": sha256_file(base_path)})
    print(f"{out}: {len(paths)} checkpoint(s), {out.stat().st_size / 1e6:.2f} MB")


def unpack(path: Path, step: int, base_path: Path, out: Path) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        base_sha256 = (handle.metadata() or {}).get("base_sha256")
    if base_sha256 and sha256_file(base_path) != base_sha256:
        # The bundled generator has changed since these were packed; the old one is in git history.
        raise SystemExit(
            f"error: {path} holds mapping networks for a base generator with sha256 {base_sha256[:12]}…, but "
            f"{base_path} is another one. Pass that base with --base: for the generator bundled until "
            f"2026-11-27, `git show {PREVIOUS_BUNDLED_COMMIT}:rewriting/toytown/weights/toytown_generator.pt "
            f"> base.pt` and `--base base.pt`")
    prefix = f"step{step}/"
    mine = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    if not mine:
        steps = sorted({int(name.split("/")[0][4:]) for name in tensors})
        raise SystemExit(f"error: {path} holds no step {step}; it holds steps {steps}")
    checkpoint = read_checkpoint(base_path)
    checkpoint["latent_avg"] = mine.pop("latent_avg")
    checkpoint["g_ema"] = {**checkpoint["g_ema"], **mine}
    checkpoint["training"] = {"step": step, "mapping_from": str(path)}
    with atomic_path(out) as temporary:
        torch.save(checkpoint, temporary)
    print(f"{out}: base {base_path.name} with the mapping network of step {step}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("checkpoints", nargs="+", type=Path)
    packing.add_argument("--out", type=Path, required=True)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("file", type=Path)
    unpacking.add_argument("--step", type=int, required=True)
    unpacking.add_argument("--out", type=Path, required=True)
    for command in (packing, unpacking):
        command.add_argument("--base", type=Path, default=BUNDLED["toytown"], help="default: the bundled generator")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.checkpoints, args.base, args.out)
    else:
        unpack(args.file, args.step, args.base, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
