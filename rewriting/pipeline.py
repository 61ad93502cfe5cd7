"""One run, step by step: config → generator → edit spec → second moment → rewrite → outputs → metrics.

`run(cfg)` is what `python run.py` calls; tests and notebooks call it with a composed config.
Nothing is written until the edit has succeeded; every file is written atomically.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .atomic import atomic_path, write_json
from .deltas import package_version, save_delta
from .edits.config import spec_from_config
from .edits.reach import ReachScorer
from .edits.resolved_cache import cached_resolved_spec, resolved_spec_key
from .edits.resolve import generated_images, label_indices
from .edits.hashing import spec_hash
from .errors import RewritingError
from .features import layer_values, noise_for, trace_layer
from .lightning_compat import pl
from .loggers import log_run, start_in_background
from .models.nvlabs_export import save_edited_generator
from .models.download import sha256_file
from .rewrite import RewriteResult, rewrite
from .statistics import second_moment
from .statistics_batches import SecondMoment, latents_for_statistics
from .visualize import image_grid, outline
from .wandb_process import WandbRun, wandb_run_for

log = logging.getLogger("rewriting")


def device_for(trainer_config) -> torch.device:
    accelerator = str(trainer_config.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RewritingError("trainer=gpu asks for CUDA, but no GPU is visible; use trainer=cpu or trainer=auto")
        return torch.device("cuda")
    return torch.device("cpu")


def load_segmenter(metrics_config, generator):
    """The segmenter for label masks and edit success: the domain's (auto), none, or a _target_."""
    choice = metrics_config.get("segmenter", "auto")
    if choice is None or choice is False:
        return None
    if isinstance(choice, str):
        if choice != "auto":
            raise RewritingError(f"metrics.segmenter={choice!r}: use auto, null or a config with _target_")
        if getattr(generator, "name", None) != "toytown":
            return None
        from .toytown.segmenter import load_segmenter as load_toytown_segmenter
        return load_toytown_segmenter(device=next(generator.parameters()).device)
    return instantiate(choice)


def make_logger(cfg: DictConfig):
    """The configured experiment logger, or None; a W&B run gets the resolved config."""
    logger_config = cfg.get("logger")
    if logger_config is None or logger_config.get("_target_") is None:
        return None
    return wandb_run_for(cfg) or instantiate(logger_config)


@torch.no_grad()
def heldout_change(generator_before, generator_after, layer: int, count: int, seed: int) -> dict:
    """Relative L1 change of the layer's output on held-out images (keys the edit never saw)."""
    if count <= 0:
        return {}
    device = next(generator_before.parameters()).device
    z = latents_for_statistics(generator_before.z_dim, count, seed + 7919).to(device)
    trace = trace_layer(generator_before, z, layer, noise_for(generator_before, count, seed=seed, device=device))
    edited = layer_values(generator_before, layer, trace, generator_after.layer(layer).weight)
    change = (edited - trace.values).abs().mean() / trace.values.abs().mean().clamp_min(1e-12)
    return {"heldout_relative_change": change.item(), "heldout_images": count}


def before_after_picture(generator_before, generator_after, request, spec, samples_config) -> "Image":
    """Row 1 unedited, row 2 edited: the paste target, the context images, then seeded samples."""
    ids = []
    masks = []
    for region in ([request.paste] if request.paste is not None else []) + list(request.context[:3]):
        if region is not None and region.image_id not in ids:
            ids.append(region.image_id)
            masks.append(region.mask)
    device = next(generator_before.parameters()).device
    rows = []
    for generator in (generator_before, generator_after):
        request_images = generated_images(generator, ids, spec.seed)
        size = request_images.shape[-1]
        from .edits.masks import resize_mask
        resized = torch.stack([resize_mask(m, (size, size)) for m in masks]).to(device)
        request_images = outline(request_images, resized)
        z = latents_for_statistics(generator.z_dim, samples_config.count, samples_config.seed + 104729).to(device)
        samples = generator(z, noise=noise_for(generator, z.shape[0], seed=samples_config.seed, device=device))
        rows.append(torch.cat([request_images, samples]))
    scale = max(1, 128 // rows[0].shape[-1])
    return image_grid(rows, scale=scale)


def evaluate(generator_before, generator_after, cfg, edit_config, segmenter, distributed=None) -> dict:
    metrics_config = cfg.metrics
    if int(metrics_config.num_samples) <= 0:
        return {}
    from .metrics.evaluate import evaluate_edit
    names = lambda key: (list(edit_config.get(key)) if edit_config.get(key) else None)  # noqa: E731
    source, target, erased = names("source"), names("target"), names("erase_classes")
    features = None
    if segmenter is not None and metrics_config.get("segmenter_fid", False):
        from .toytown.segmenter import SegmenterFeatures
        features = SegmenterFeatures(segmenter)
    return evaluate_edit(
        generator_before, generator_after, num_samples=int(metrics_config.num_samples),
        batch_size=int(metrics_config.batch_size), seed=int(metrics_config.seed), segmenter=segmenter,
        source=label_indices(segmenter, source) if (segmenter is not None and source) else None,
        target=label_indices(segmenter, target) if (segmenter is not None and target) else None,
        erase=label_indices(segmenter, erased) if (segmenter is not None and erased) else None,
        lpips_net=metrics_config.get("lpips"), fid_features=features,
        inception_fid=bool(metrics_config.get("inception_fid", False)), progress=bool(cfg.progress),
        distributed=distributed, cache_unedited=bool(metrics_config.get("cache_unedited", True)),
        cache_dir=metrics_config.get("cache_dir"))


def sweep_objective(metrics: dict, undesired_weight: float) -> dict:
    """`objective` = success − λ · undesired change (L1), what hyperparameter sweeps maximize; {} if unmeasured."""
    success = metrics.get("edit_success")
    if success is None:
        success = metrics.get("erase_success")
    undesired = metrics.get("undesired_change_l1")
    if success is None or undesired is None:
        return {}
    return {"objective": success - undesired_weight * undesired, "objective_lambda": undesired_weight}


def statistics_for(cfg: DictConfig, generator, distributed: dict | None = None):
    """A function layer -> the configured second moment there, computed (or loaded) once per layer."""
    computed: dict[int, SecondMoment] = {}

    def statistics_at(layer: int) -> SecondMoment:
        if layer not in computed:
            computed[layer] = second_moment(generator, layer, int(cfg.statistics.num_samples),
                                            int(cfg.statistics.seed), int(cfg.statistics.batch_size),
                                            cache_dir=cfg.statistics.cache_dir, progress=bool(cfg.progress),
                                            distributed=distributed)
        return computed[layer]
    return statistics_at


def reach_scorer_for(cfg: DictConfig, generator, method, statistics_at) -> ReachScorer | None:
    """What a paste with `pick: reachable` is chosen by: the context directions at the run's layer (None: no layer)."""
    layer = cfg.layer if cfg.layer is not None else cfg.edit.get("layer")
    if layer is None:
        return None
    layer = int(layer)
    generator.layer(layer)  # an unknown layer fails here, with the valid range
    device = next(generator.parameters()).device
    return ReachScorer(generator, layer, lambda: statistics_at(layer).matrix.to(device),
                       int(getattr(method, "rank", 1)), getattr(method, "context_images", None))


def resolved_edit(cfg: DictConfig, generator, segmenter, method, reach_scorer: ReachScorer | None):
    """The run's EditSpec; a labelled request's regions come from the cache when found before (edit_cache)."""
    make = lambda: spec_from_config(cfg.edit, generator, segmenter, reach_scorer)  # noqa: E731
    if cfg.edit.get("request") is None or not isinstance(segmenter, torch.nn.Module) or not cfg.get("edit_cache", True):
        return make()
    # Layer, statistics and method decide a `pick: reachable` paste; the version, the resolution code.
    context = {"layer": cfg.layer, "statistics": OmegaConf.to_container(cfg.statistics, resolve=True),
               "rank": method.rank, "context_images": getattr(method, "context_images", None),
               "package_version": package_version()}
    key = resolved_spec_key(OmegaConf.to_container(cfg.edit, resolve=True), generator, segmenter, context)
    return cached_resolved_spec(key, make)


def run(cfg: DictConfig, logger=None) -> dict:
    """Perform one edit as configured; returns the metrics written to metrics.json.

    `logger`: the run's logger, already started (run.py starts W&B's before importing this module);
    by default the one `cfg.logger` configures.
    """
    out_dir = Path(cfg.output_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = device_for(cfg.trainer)
    started = time.perf_counter()
    logger = logger if logger is not None else make_logger(cfg)
    try:
        return _run(cfg, logger, out_dir, device, started)
    except BaseException:
        if isinstance(logger, WandbRun):
            logger.close()  # its run is finished as failed
        raise


def _run(cfg: DictConfig, logger, out_dir: Path, device: torch.device, started: float) -> dict:

    generator = instantiate(cfg.generator, device=device)
    generator.checkpoint_sha256 = sha256_file(generator.checkpoint_path)
    segmenter = load_segmenter(cfg.metrics, generator)
    method = instantiate(cfg.method)

    trainer_config = OmegaConf.to_container(cfg.trainer, resolve=True)
    distributed = trainer_config.pop("distributed", None)  # trainer=ddp: statistics and metrics across devices
    if distributed:
        distributed = {"accelerator": trainer_config.get("accelerator", "auto"), **distributed}
    statistics_at = statistics_for(cfg, generator, distributed)
    reach_scorer = reach_scorer_for(cfg, generator, method, statistics_at)
    spec = resolved_edit(cfg, generator, segmenter, method, reach_scorer)
    layer = cfg.layer if cfg.layer is not None else spec.layer
    if layer is None:
        raise RewritingError(f"no layer for edit {spec.name!r}: pass layer=N (valid: "
                             f"{generator.layer_numbers[0]}..{generator.layer_numbers[-1]})")
    layer = int(layer)
    generator.layer(layer)
    spec.generator = {"name": getattr(generator, "name", None), "path": str(generator.checkpoint_path),
                      "sha256": generator.checkpoint_sha256}
    spec.layer, spec.rank = layer, method.rank
    spec.method = method.describe()

    statistics = statistics_at(layer)
    unedited = copy.deepcopy(generator)
    trainer_options = dict(trainer_config)
    trainer_options.update({"logger": False, "enable_progress_bar": bool(cfg.progress)})
    result: RewriteResult = rewrite(generator, spec, method, layer, second_moment=statistics,
                                    segmenter=segmenter, trainer_options=trainer_options,
                                    progress=bool(cfg.progress))
    # A Lightning logger's run (CSV) starts beside the metric pass, after the timed edit; W&B's is already
    # starting in its own process.
    logger_ready = start_in_background(logger) if logger is not None and not isinstance(logger, WandbRun) else None
    request = result.request
    deltas = result.delta_tensors()
    originals = dict(unedited.named_parameters())
    delta_norm = torch.stack([d.norm() for d in deltas.values()]).norm()
    original_norm = torch.stack([originals[name].detach().cpu().norm() for name in deltas]).norm()

    metrics = {
        "edit": spec.name, "layer": layer, "method": method.describe(), "rank": method.rank,
        "initial_loss": result.fit.initial_loss, "final_loss": result.fit.final_loss,
        "loss_drop": 1 - result.fit.final_loss / max(result.fit.initial_loss, 1e-12),
        "edit_seconds": result.edit_seconds, "second_moment_seconds": statistics.seconds,
        "second_moment_from_cache": statistics.from_cache, "second_moment_vectors": statistics.count,
        "delta_norm": delta_norm.item(), "weight_relative_change": (delta_norm / original_norm).item(),
        "changed_tensors": len(deltas),
    }
    if result.paste_reach is not None:
        metrics["paste_reach"] = result.paste_reach
    metrics.update(getattr(result.fit, "notes", {}))
    if result.erased_units:
        metrics["erased_units"] = result.erased_units
    if set(deltas) == {result.weight_name}:  # the layer's own change on held-out keys means little otherwise
        metrics.update(heldout_change(unedited, generator, layer, int(cfg.metrics.get("heldout_images", 16)),
                                      int(cfg.metrics.seed)))
    metrics.update(evaluate(unedited, generator, cfg, cfg.edit, segmenter, distributed))
    metrics.update(sweep_objective(metrics, float(cfg.get("objective_lambda", 10.0))))
    picture = before_after_picture(unedited, generator, request, spec, cfg.samples)
    provenance = {"package_version": package_version(), "checkpoint_sha256": generator.checkpoint_sha256,
                  "checkpoint": str(generator.checkpoint_path), "edit_spec_sha256": spec_hash(spec),
                  "config": OmegaConf.to_container(cfg, resolve=True), "total_seconds": time.perf_counter() - started}
    metrics["provenance"] = provenance

    # Everything is computed: only now write, each file atomically.
    save_delta(out_dir / "delta.safetensors", result.delta_tensors(), {
        "base_sha256": generator.checkpoint_sha256, "layer": layer, "rank": method.rank,
        "edit_spec_sha256": provenance["edit_spec_sha256"], "method": method.name, "edit": spec.name,
        "family": generator.family, "weight_name": result.weight_name})
    spec.save(out_dir / "edit.json")
    if cfg.save_edited_generator:  # in the input's format: an NVlabs .pkl stays a .pkl
        save_edited_generator(generator, out_dir / "edited_generator.pt", result.delta_tensors(),
                              extra={"rewriting": {"base_sha256": generator.checkpoint_sha256, "layer": layer,
                                                   "edit": spec.name, "package_version": package_version()}})
    with atomic_path(out_dir / "before_after.png") as temporary:
        picture.save(temporary, format="PNG")
    write_json(out_dir / "metrics.json", metrics)
    if isinstance(logger, WandbRun):  # an edit file's name is known only once it is read
        logger.log_run(result.fit.loss_curve, metrics,
                       name=f"{spec.name}_layer{layer}" if cfg.edit.get("name") is None else None)
    elif logger_ready is not None:
        log_run(logger_ready(), result.fit.loss_curve, metrics)
    summary = {k: metrics[k] for k in ("edit", "layer", "final_loss", "edit_seconds") if k in metrics}
    log.info("outputs in %s: %s", out_dir, json.dumps(summary))
    return metrics
