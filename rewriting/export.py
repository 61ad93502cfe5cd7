"""`python -m rewriting.export DELTA.safetensors --base CHECKPOINT --out PATH`: a delta baked into a checkpoint.

An NVlabs .pkl base gives an NVlabs pickle (only the edited tensors' bytes differ); a rosinality
.pt or ProGAN .pth base gives a checkpoint of the same kind. The delta's base hash is checked.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .cli import report_error
from .deltas import apply_deltas, load_delta
from .models.loading import load_generator
from .models.nvlabs_export import save_edited_generator


def export(delta_path: str | Path, base_path: str | Path, out_path: str | Path, check_base: bool = True) -> Path:
    """Write base + delta to `out_path` in the base's format; returns the path written."""
    generator = load_generator(base_path)
    apply_deltas(generator, [delta_path], check_base=check_base)
    tensors, _ = load_delta(delta_path)
    return save_edited_generator(generator, out_path, tensors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rewriting.export", description=__doc__.splitlines()[0])
    parser.add_argument("delta", help="delta.safetensors written by run.py or the editor")
    parser.add_argument("--base", required=True, help="the checkpoint the delta was made for (.pkl, .pt, .pth)")
    parser.add_argument("--out", required=True, help="where to write the edited checkpoint")
    parser.add_argument("--no-check-base", action="store_true", help="apply even if the base hash differs")
    arguments = parser.parse_args(argv)
    try:
        written = export(arguments.delta, arguments.base, arguments.out, not arguments.no_check_base)
    except BaseException as error:  # noqa: BLE001 - report_error re-raises what is not the user's
        report_error(error)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
