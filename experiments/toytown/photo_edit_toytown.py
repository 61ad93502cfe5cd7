"""Edit a "photo" on Toytown: project renderer scenes into the generator, then apply spire_to_tree.

    python experiments/toytown/photo_edit_toytown.py [--scenes 9 30 2 21] [--steps 500] [--w-plus-steps 300]
        [--delta outputs/.../delta.safetensors] [--out results/photo_edit]

The renderer's scenes are not generator samples (crisp edges, other shapes), so they stand in for
real photos. Each scene is projected twice, in w only and in w then w+ (see rewriting/projection),
and both projections are redrawn by the generator before and after the spire_to_tree delta: fitted
here from the bundled conf/edit/spire_to_tree.yaml request at layer 6 (as `python run.py` does), or
read from a run's delta.safetensors. Reported per setting and scene: reconstruction PSNR and
segmenter agreement with the scene, the share of the reconstruction's spire pixels labelled tree
after the edit, and the L1 change outside the (1-px dilated) spire region; and, for reference, the
same delta's spire -> tree share on generator samples. Writes before_after.png (per scene: scene |
reconstruction | edited, with label maps below; w rows first), metrics.json and README.md.
"""
from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rewriting.atomic import atomic_path, write_json, write_text
from rewriting.deltas import apply_deltas, package_version
from rewriting.edits.config import spec_from_config
from rewriting.metrics.success import edit_success
from rewriting.models import load_generator
from rewriting.projection import project, render_projection
from rewriting.projection.report import before_after_picture, edit_metrics, reconstruction_metrics
from rewriting.rewrite import rewrite
from rewriting.toytown import LABEL_INDEX, render_seeds
from rewriting.toytown.segmenter import load_segmenter

ROOT = Path(__file__).resolve().parents[2]
SPIRE, TREE = [LABEL_INDEX["spire"]], [LABEL_INDEX["tree"]]
SETTINGS = {"w": {"w_plus_steps": 0}, "w+": {}}


def edited_generator(generator, segmenter, delta: str | None, statistics_samples: int):
    """The generator with spire_to_tree applied: a saved delta, or the bundled request fitted at layer 6."""
    edited = copy.deepcopy(generator)
    if delta:
        return apply_deltas(edited, [delta]), f"the delta {delta}"
    spec = spec_from_config(OmegaConf.load(ROOT / "conf" / "edit" / "spire_to_tree.yaml"), generator, segmenter)
    method = instantiate(OmegaConf.load(ROOT / "conf" / "method" / "rank_one.yaml"))  # run.py's default method
    rewrite(edited, spec, method, layer=6, segmenter=segmenter, statistics_samples=statistics_samples,
            trainer_options={"logger": False, "enable_progress_bar": False, "accelerator": "cpu"}, progress=False)
    return edited, "conf/edit/spire_to_tree.yaml fitted at layer 6 with conf/method/rank_one.yaml"


@torch.no_grad()
def sample_success(generator, edited, segmenter, count: int = 200) -> float:
    """The delta's spire -> tree share on `count` generator samples (fixed seed): how it does in distribution."""
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(0))
    return edit_success(segmenter.segment(generator(z)), segmenter.segment(edited(z)), SPIRE, TREE)


def mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return sum(values) / len(values) if values else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[9, 30, 2, 21], help="renderer seeds")
    parser.add_argument("--steps", type=int, default=500, help="projection steps in w")
    parser.add_argument("--w-plus-steps", type=int, default=300, help="then steps in w+ (the w+ setting)")
    parser.add_argument("--start-candidates", type=int, default=64)
    parser.add_argument("--delta", default=None, help="a run.py delta.safetensors instead of fitting the edit")
    parser.add_argument("--statistics-samples", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "results" / "photo_edit"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(0)

    generator = load_generator(name="toytown")
    segmenter = load_segmenter()
    edited, edit_source = edited_generator(generator, segmenter, args.delta, args.statistics_samples)
    scenes, _ = render_seeds(args.scenes, size=generator.size)
    results, pictures = {}, []
    for name, setting in SETTINGS.items():
        options = {"steps": args.steps, "w_plus_steps": args.w_plus_steps, "start_candidates": args.start_candidates,
                   "optimize_noise": False, **setting}
        projected = time.perf_counter()
        projection = project(generator, scenes, segmenter=segmenter, progress=True, **options)
        reconstruction, redrawn = render_projection(generator, projection), render_projection(edited, projection)
        rows = []
        for index, seed in enumerate(args.scenes):
            one = slice(index, index + 1)
            row = {"scene": seed, **reconstruction_metrics(scenes[one], reconstruction[one], segmenter),
                   **edit_metrics(reconstruction[one], redrawn[one], segmenter, SPIRE, TREE)}
            rows.append(row)
            pictures.append(before_after_picture(scenes[one], reconstruction[one], redrawn[one], segmenter))
        results[name] = {"options": options, "perceptual_loss": projection.perceptual, "scenes": rows,
                         "projection_seconds": time.perf_counter() - projected,
                         **{f"mean_{key}": mean(rows, key) for key in
                            ("reconstruction_psnr", "segmenter_agreement", "edit_success", "edit_masked_l1_outside")}}
    metrics = {"edit": edit_source, "scenes": args.scenes, "settings": results,
               "samples_edit_success": sample_success(generator, edited, segmenter),
               "generator_sha256": generator.checkpoint_sha256, "package_version": package_version(),
               "total_seconds": time.perf_counter() - started}

    out = Path(args.out)
    width, height = pictures[0].size
    sheet = Image.new("RGB", (width, len(pictures) * (height + 6) - 6), "white")
    for index, picture in enumerate(pictures):
        sheet.paste(picture, (0, index * (height + 6)))
    with atomic_path(out / "before_after.png") as temporary:
        sheet.save(temporary, format="PNG")
    write_json(out / "metrics.json", metrics)
    write_text(out / "README.md", readme(metrics, argv if argv is not None else sys.argv[1:]))
    print(readme(metrics, argv if argv is not None else sys.argv[1:]))
    return metrics


def readme(metrics: dict, argv: list[str]) -> str:
    """The results folder's README: the command, a table per setting, what the picture shows."""
    command = " ".join(["python experiments/toytown/photo_edit_toytown.py", *map(shlex.quote, argv)])
    lines = ["# Editing a \"photo\" on Toytown", "", f"Made by `{command}` ({metrics['total_seconds']:.0f} s on "
             f"CPU).", "", f"Edit: {metrics['edit']}; on 200 generator samples it turns "
             f"{metrics['samples_edit_success']:.2f} of spire pixels into tree.", "",
             "| projection | scene | PSNR (dB) | segmenter agreement | spire -> tree | L1 outside spires |",
             "|---|---|---|---|---|---|"]
    for name, result in metrics["settings"].items():
        for row in result["scenes"] + [{"scene": "mean", **{k[5:]: v for k, v in result.items()
                                                              if k.startswith("mean_")}}]:
            cells = [row.get(k) for k in ("reconstruction_psnr", "segmenter_agreement", "edit_success",
                                          "edit_masked_l1_outside")]
            lines.append(f"| {name} | {row['scene']} | " + " | ".join("n/a" if c is None else f"{c:.3f}"
                                                                     for c in cells) + " |")
    lines += ["", "`before_after.png`: per scene, the render | its reconstruction | the reconstruction redrawn by "
              "the edited generator, with the segmenter's labels below (spire red, tree green); first every "
              "scene projected in w, then in w then w+.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
