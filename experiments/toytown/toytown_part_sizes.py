"""How large the renderer draws each part: sizes and heights of the 8-connected pieces of each label in renders.

A request's `min_piece` drops labelled pieces smaller than it; set below the smallest piece the
renderer ever draws of a part, it drops only what a segmenter invents (specks), never a real roof.
Heights (rows from a piece's top to its bottom) say how far a taller part pasted on a lower one
rises above it (`context_extend_up`).

    python experiments/toytown/toytown_part_sizes.py [--renders 2000] [--out results/toytown_part_sizes.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.edits.resolve import mask_pieces
from rewriting.toytown.labels import LABEL_INDEX
from rewriting.toytown.renderer import render_seeds

PARTS = ("spire", "dome", "flat_roof", "tree", "window", "door", "watermark")


def piece_sizes(seeds: list[int], parts=PARTS, batch: int = 500) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part: (pixel count, height in rows) of every 8-connected piece of it in the renders of `seeds` (64 px)."""
    sizes: dict[str, list[float]] = {part: [] for part in parts}
    heights: dict[str, list[int]] = {part: [] for part in parts}
    for start in range(0, len(seeds), batch):
        _, labels = render_seeds(seeds[start:start + batch], size=64)
        for label_map in labels:
            for part in parts:
                components, piece_pixels = mask_pieces(label_map == LABEL_INDEX[part])
                sizes[part] += list(piece_pixels)
                for index in range(1, len(piece_pixels) + 1):
                    rows = np.flatnonzero((components == index).any(axis=1))
                    heights[part].append(int(rows[-1] - rows[0] + 1))
    return {part: (np.asarray(sizes[part]), np.asarray(heights[part])) for part in parts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = piece_sizes(list(range(args.renders)))
    report = {
        "command": f"python experiments/toytown/toytown_part_sizes.py --renders {args.renders}"
                   + (f" --out {args.out}" if args.out else ""),
        "date": datetime.date.today().isoformat(), "package_version": package_version(),
        "renders": args.renders, "size": 64,
        "pieces": {part: {"count": int(len(values)), "smallest": float(values.min()),
                          "percentile_1": float(np.percentile(values, 1)),
                          "median": float(np.median(values)), "median_height": float(np.median(heights))}
                   for part, (values, heights) in sizes.items() if len(values)},
    }
    if args.out:
        write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
