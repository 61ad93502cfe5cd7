"""`python -m rewriting.project_image PHOTO [generator=...] [delta=PATH | edit=NAME|PATH.json] [key=value ...]`.

Projects the photo into the generator, saves the latent, and redraws it with and without a saved delta
(or an edit fitted first), writing latent.safetensors, before_after.png (photo | reconstruction |
edited reconstruction) and metrics.json; an edit also leaves its delta.safetensors and edit.json.
The options are Hydra overrides of conf/project_image.yaml. Nothing is written unless every step succeeded.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .atomic import atomic_path, write_json
from .cli import prepare_argv, report_error
from .deltas import apply_deltas, load_delta, package_version, save_delta
from .edits.config import spec_from_config
from .edits.resolve import label_indices
from .edits.hashing import spec_hash
from .errors import RewritingError
from .pipeline import device_for, load_segmenter, reach_scorer_for, statistics_for
from .projection import load_photo, project, render_projection, save_projection
from .projection.optimize import check_generator
from .projection.report import before_after_picture, edit_metrics, lpips_or_reason, reconstruction_metrics
from .rewrite import rewrite

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
USAGE = ("usage: python -m rewriting.project_image PHOTO [generator=NAME] [generator.checkpoint=PATH] "
         "[delta=DELTA.safetensors | edit=NAME|EDIT.json] [output_dir=DIR] [projection.steps=N] ...")


def compose_config(photo: str, overrides: list[str]) -> DictConfig:
    """conf/project_image.yaml with command-line overrides (as run.py takes them) and the photo's path."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("project_image", overrides=prepare_argv(list(overrides)))
    except (HydraException, OmegaConfBaseException) as error:
        raise RewritingError(f"{error}\n{USAGE}") from None
    cfg.photo = str(photo)
    return cfg


def edit_classes(cfg: DictConfig, delta_metadata: dict | None) -> tuple[list[str] | None, list[str] | None]:
    """(source, target) class names: given, else the edit config's, else those of the delta's recorded edit."""
    source, target = cfg.get("source"), cfg.get("target")
    edit = cfg.get("edit")
    if edit is None and delta_metadata and (CONFIG_DIR / "edit" / f"{delta_metadata.get('edit')}.yaml").is_file():
        edit = OmegaConf.load(CONFIG_DIR / "edit" / f"{delta_metadata['edit']}.yaml")
    if edit is not None:
        source = source if source is not None else edit.get("source")
        target = target if target is not None else edit.get("target")
    as_list = lambda names: [names] if isinstance(names, str) else (list(names) if names else None)  # noqa: E731
    return as_list(source), as_list(target)


def edited_generator(cfg: DictConfig, generator, segmenter) -> tuple[torch.nn.Module | None, dict | None, dict]:
    """(a copy of the generator with the delta or fitted edit applied, or None; delta metadata; files to write)."""
    if cfg.delta and cfg.get("edit") is not None:
        raise RewritingError("pass either delta=DELTA.safetensors or edit=NAME|EDIT.json, not both")
    if cfg.delta:
        _, metadata = load_delta(cfg.delta)
        edited = apply_deltas(copy.deepcopy(generator), [cfg.delta])  # refuses another generator's delta
        return edited, metadata, {}
    if cfg.get("edit") is None:
        return None, None, {}
    method = instantiate(cfg.method)
    statistics_at = statistics_for(cfg, generator)
    spec = spec_from_config(cfg.edit, generator, segmenter, reach_scorer_for(cfg, generator, method, statistics_at))
    spec.generator = {"name": getattr(generator, "name", None), "path": str(generator.checkpoint_path),
                      "sha256": generator.checkpoint_sha256}
    spec.rank, spec.method = method.rank, method.describe()
    trainer_options = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                       if k != "distributed"}
    trainer_options.update({"logger": False, "enable_progress_bar": bool(cfg.progress)})
    edited = copy.deepcopy(generator)
    # rewrite checks the layer (cfg.layer, else the edit's) and fits the edit on the copy.
    layer = cfg.layer if cfg.layer is not None else spec.layer
    result = rewrite(edited, spec, method, None if layer is None else int(layer),
                     statistics_samples=int(cfg.statistics.num_samples), statistics_seed=int(cfg.statistics.seed),
                     statistics_cache=cfg.statistics.cache_dir, segmenter=segmenter, trainer_options=trainer_options,
                     progress=bool(cfg.progress))
    metadata = {"base_sha256": generator.checkpoint_sha256, "layer": result.layer, "rank": method.rank,
                "edit_spec_sha256": spec_hash(spec), "method": method.name, "edit": spec.name,
                "family": generator.family, "weight_name": result.weight_name}
    return edited, metadata, {"delta": (result.delta_tensors(), metadata), "spec": spec}


def output_dir(cfg: DictConfig) -> Path:
    """Where a run writes: output_dir, or outputs/project_image/<photo name>."""
    return Path(cfg.output_dir) if cfg.output_dir else Path("outputs") / "project_image" / Path(cfg.photo).stem


def run_projection(cfg: DictConfig) -> dict:
    """Project cfg.photo, redraw it (edited too, with a delta or edit) and write the outputs; returns the metrics."""
    if not cfg.photo:
        raise RewritingError(f"no photo given\n{USAGE}")
    started = time.perf_counter()
    out_dir = output_dir(cfg)
    torch.manual_seed(int(cfg.seed))
    generator = instantiate(cfg.generator, device=device_for(cfg.trainer))
    check_generator(generator)
    photo = load_photo(cfg.photo, generator.size, int(cfg.max_pixels))
    segmenter = load_segmenter(cfg.metrics, generator)
    edited, delta_metadata, edit_outputs = edited_generator(cfg, generator, segmenter)

    projection = project(generator, photo.image, segmenter=segmenter, seed=int(cfg.seed), progress=bool(cfg.progress),
                         **OmegaConf.to_container(cfg.projection, resolve=True))
    reconstruction = render_projection(generator, projection)
    target_image = photo.image.to(reconstruction.device)
    lpips_model, lpips_missing = lpips_or_reason(cfg.metrics.get("lpips"))
    metrics = {"photo": str(cfg.photo), "photo_sha256": photo.sha256, "photo_size": list(photo.original_size),
               "photo_preparation": photo.notes, "space": projection.space, "perceptual_loss": projection.perceptual,
               "notes": projection.notes, "final_loss": projection.losses[-1],
               **reconstruction_metrics(target_image, reconstruction, segmenter, lpips_model)}
    if lpips_model is None:
        metrics["reconstruction_lpips"] = None
        metrics["reconstruction_lpips_missing"] = lpips_missing
    images = [target_image, reconstruction]
    if edited is not None:
        edited_image = render_projection(edited, projection)
        images.append(edited_image)
        source, target = edit_classes(cfg, delta_metadata)
        indices = (lambda names: label_indices(segmenter, names) if (segmenter is not None and names) else None)
        metrics["edit"] = delta_metadata.get("edit")
        metrics["edit_source"], metrics["edit_target"] = source, target
        metrics.update(edit_metrics(reconstruction, edited_image, segmenter, indices(source), indices(target)))
    picture = before_after_picture(*images, segmenter=segmenter)
    provenance = {"package_version": package_version(), "generator_sha256": generator.checkpoint_sha256,
                  "generator": str(generator.checkpoint_path), "delta": cfg.delta,
                  "config": OmegaConf.to_container(cfg, resolve=True), "total_seconds": time.perf_counter() - started}
    metrics["provenance"] = provenance

    # Everything is computed: only now write, each file atomically.
    save_projection(out_dir / "latent.safetensors", projection, generator.checkpoint_sha256, photo.sha256,
                    {"photo": str(cfg.photo), "photo_preparation": photo.notes, "generator_size": generator.size})
    if "delta" in edit_outputs:
        save_delta(out_dir / "delta.safetensors", *edit_outputs["delta"])
        edit_outputs["spec"].save(out_dir / "edit.json")
    with atomic_path(out_dir / "before_after.png") as temporary:
        picture.save(temporary, format="PNG")
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def summary(metrics: dict) -> str:
    """The lines printed after a run: what was done to the photo, the loss used, the measured numbers."""
    lines = [f"photo: {'; '.join(metrics['photo_preparation']) or 'used as is'}",
             f"projection: {metrics['space']}, perceptual loss {metrics['perceptual_loss']}"]
    lines += [f"note: {note}" for note in metrics["notes"]]
    numbers = {k: v for k, v in metrics.items() if k.startswith(("reconstruction_", "segmenter_", "edit_"))
               and isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines.append(json.dumps(numbers))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry: the first argument without `=` is the photo; the rest are Hydra overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    photos = [arg for arg in argv if "=" not in arg]
    try:
        if len(photos) != 1:
            raise RewritingError(f"give exactly one photo (got {len(photos)}: {photos})\n{USAGE}")
        cfg = compose_config(photos[0], [arg for arg in argv if "=" in arg])
        metrics = run_projection(cfg)
    except (Exception, KeyboardInterrupt) as error:  # a user's mistake gets one clear line, not a traceback
        report_error(error)
    print(summary(metrics))
    print(f"outputs in {output_dir(cfg)}: latent.safetensors, before_after.png, metrics.json")
    return metrics


if __name__ == "__main__":
    main()
