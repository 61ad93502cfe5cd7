"""Choose among kept Toytown generator checkpoints on a validation set disjoint from the reported one.

For every checkpoint: the share of samples showing each part against the renderer's share, and the
segmenter FID, over `--samples` samples at latent seed 1 and renders from seed 1,000,000 on (the
reported evaluation, evaluate_toytown_generator.py, uses latent seed 0 and render seeds 0..1999).
The choice: the smallest largest relative share difference. Writes a JSON report.

    python experiments/select_toytown_checkpoint.py RUN/generator_ema_step*.pt --out selection.json
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import rewriting
from evaluate_toytown_generator import PARTS, generated, relative_share_differences, segment
from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.metrics.fid import feature_fid
from rewriting.metrics.success import label_presence
from rewriting.models.download import sha256_file
from rewriting.toytown.labels import LABELS
from rewriting.toytown.renderer import render_seeds
from rewriting.toytown.segmenter import SegmenterFeatures, load_segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--latent-seed", type=int, default=1)
    parser.add_argument("--render-seed-start", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    segmenter = load_segmenter()
    features = SegmenterFeatures(segmenter)
    real, _ = render_seeds(list(range(args.render_seed_start, args.render_seed_start + args.samples)))
    rendered = label_presence(segment(segmenter, real), list(LABELS))
    results = {}
    for path in args.checkpoints:
        fake = generated(rewriting.load_generator(path), args.samples, seed=args.latent_seed)
        shares = label_presence(segment(segmenter, fake), list(LABELS))
        relative = relative_share_differences(shares, rendered)
        results[str(path)] = {"sha256": sha256_file(path), "shares": {part: shares[part] for part in PARTS},
                              "relative_difference": relative, "largest_relative_difference": max(relative.values()),
                              "segmenter_fid": feature_fid(fake, real, features)}
        print(path.name, {part: round(relative[part], 2) for part in PARTS},
              round(results[str(path)]["segmenter_fid"], 3), flush=True)
    chosen = min(results, key=lambda name: results[name]["largest_relative_difference"])
    write_json(args.out, {
        "command": "python experiments/select_toytown_checkpoint.py " + " ".join(str(p) for p in args.checkpoints)
                   + f" --samples {args.samples} --latent-seed {args.latent_seed}"
                   + f" --render-seed-start {args.render_seed_start}",
        "date": datetime.date.today().isoformat(), "package_version": package_version(),
        "samples": args.samples, "rendered_shares": {part: rendered[part] for part in PARTS},
        "checkpoints": results, "chosen": chosen, "rule": "smallest largest relative share difference"})
    print(json.dumps({"chosen": chosen, **results[chosen]}, indent=2))


if __name__ == "__main__":
    main()
