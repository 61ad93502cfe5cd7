"""Measure an edit as the paper does: one seeded sample through the unedited and edited generators.

Every metric streams over batches (float64 sums), so 10,000 samples need no more memory
than one batch. Metrics whose pretrained weights are absent are recorded as such, with a
warning, and the others still run.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from rewriting.errors import RewritingError
from rewriting.metrics.edit_metric_sums import EditMetricSums
from rewriting.metrics.evaluate_distributed import distributed_edit_metrics
from rewriting.metrics.success import PRESENCE_MIN_PIXELS
from rewriting.metrics.unedited_cache import (SynthesisStatesCache, UneditedCache, UneditedSide, can_cache,
                                               unedited_key)

ClassList = Sequence[int | str]


def _class_indices(classes: ClassList, label_names: Sequence[str], what: str) -> list[int]:
    """Class names or indices -> indices, checked against the segmenter's label names."""
    if isinstance(classes, (str, int)):
        classes = [classes]
    if len(classes) == 0:
        raise RewritingError(f"{what} is empty: name at least one class from {list(label_names)}")
    indices = []
    for item in classes:
        if isinstance(item, str):
            if item not in label_names:
                raise RewritingError(
                    f"{what} names unknown class {item!r}; the segmenter's classes are {list(label_names)}"
                )
            indices.append(label_names.index(item))
        elif not 0 <= int(item) < len(label_names):
            raise RewritingError(f"{what} class index {item} is out of range 0..{len(label_names) - 1}")
        else:
            indices.append(int(item))
    return indices


def evaluate_edit(
    generator_before: nn.Module,
    generator_after: nn.Module,
    num_samples: int = 500,
    batch_size: int = 50,
    seed: int = 0,
    segmenter: Any = None,
    source: ClassList | None = None,
    target: ClassList | None = None,
    erase: ClassList | None = None,
    label_names: Sequence[str] | None = None,
    region_dilate: int = 1,
    lpips_net: str | None = "alex",
    lpips_model: nn.Module | None = None,
    fid_features: nn.Module | None = None,
    inception_fid: bool = False,
    min_pixels: int = PRESENCE_MIN_PIXELS,
    progress: bool = True,
    distributed: dict | None = None,
    cache_unedited: bool = False,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Compare unedited and edited generators on one seeded z sample; a flat JSON-able dict of metrics.

    Keys (present when their inputs are given): edit_success, erase_success, undesired_change_l1
    and edited_region_l1 (outside / inside the source region, or the erased one, dilated by
    region_dilate px), undesired_change_lpips_<net> (whole_image_lpips_<net> without a region),
    whole_image_l1, segmenter_fid_edited_vs_unedited, inception_fid_edited_vs_unedited,
    share_showing_<class>_before / _after, source_labelled_<class>_after (of the source, or erased,
    class's pixels before the edit, the share the segmenter labels <class> after: where they went),
    num_samples, seed, metric_seconds, warnings.
    Classes are indices or names from `label_names` (default: the Toytown labels).
    `lpips_model`: an already loaded spatial LPIPS model for `lpips_net` (reused across evaluations).
    `distributed`: Lightning Trainer options (e.g. strategy="ddp_spawn", devices=4) to split the
    batches across devices; the float64 sums are all-reduced, so the metrics equal the one-device ones.
    `cache_unedited`: keep the unedited generator's images, labels and FID reference statistics on disk
    (under `cache_dir`, default $REWRITING_CACHE/metrics) and reuse them: the same metrics, half the work.
    """
    started = time.perf_counter()
    if num_samples < 1 or batch_size < 1:
        raise RewritingError(f"num_samples and batch_size must be >= 1; got {num_samples} and {batch_size}")
    if (source is None) != (target is None):
        raise RewritingError(
            "edit success needs both source and target classes (e.g. source=['spire'], target=['tree'])"
        )
    if segmenter is None and (source is not None or erase is not None):
        raise RewritingError("source/target/erase classes need a segmenter (metrics.segmenter) to label the samples")
    if (fid_features is not None or inception_fid) and num_samples < 2:
        raise RewritingError(f"FID needs num_samples >= 2; got {num_samples}")
    if label_names is None:
        from rewriting.toytown.labels import LABELS

        label_names = getattr(segmenter, "label_names", None) or LABELS
    label_names = list(label_names)
    options = {
        "segmenter": segmenter, "label_names": label_names, "region_dilate": region_dilate,
        "min_pixels": min_pixels, "lpips_net": lpips_net, "lpips_model": lpips_model,
        "fid_features": fid_features, "inception_fid": inception_fid,
        "source": _class_indices(source, label_names, "source") if source is not None else None,
        "target": _class_indices(target, label_names, "target") if target is not None else None,
        "erase": _class_indices(erase, label_names, "erase") if erase is not None else None,
    }
    latents = torch.randn(num_samples, generator_before.z_dim, generator=torch.Generator().manual_seed(seed))
    if distributed:
        results = distributed_edit_metrics(generator_before, generator_after, options, latents, batch_size,
                                           distributed)
    else:
        cache = None
        states_key = None
        if cache_unedited and can_cache(segmenter, fid_features):
            cache = UneditedCache(unedited_key(generator_before, num_samples, batch_size, seed, segmenter,
                                               fid_features), cache_dir)
            states_key = unedited_key(generator_before, num_samples, batch_size, seed)
        results = _one_device_pass(generator_before, generator_after, options, latents, batch_size, progress, cache,
                                   states_key, cache_dir)
    results.setdefault("unedited_from_cache", False)
    results.setdefault("unedited_states_from_cache", False)
    results["seed"] = seed
    results["metric_seconds"] = time.perf_counter() - started
    return results


def _one_device_pass(generator_before: nn.Module, generator_after: nn.Module, options: dict, latents: torch.Tensor,
                     batch_size: int, progress: bool, cache: UneditedCache | None, states_key: dict | None = None,
                     cache_dir: str | None = None) -> dict[str, Any]:
    """The metrics of one seeded sample on one device; the unedited side (and its synthesis states
    before the edited layer) from the caches when they hold them."""
    num_samples = latents.shape[0]
    batches = -(-num_samples // batch_size)
    cached = cache.load() if cache is not None else None
    accumulator = EditMetricSums(generator_before, generator_after, options, latents,
                                 cached.images[0][:1] if cached is not None else None)
    if cached is not None and (not set(accumulator.fid_reference_states()) <= set(cached.fid_reference)
                               or (options["segmenter"] is not None and not cached.labels)):
        cached = None  # stored without something this pass needs: recompute and replace it
    states_cache = None
    if states_key is not None and accumulator.resume_layer is not None:
        states_cache = SynthesisStatesCache(states_key, accumulator.resume_layer, cache_dir)
    cached_states = states_cache.load() if states_cache is not None else None
    if cached_states is not None and len(cached_states) != batches:
        cached_states = None
    recorded = UneditedSide()
    recorded_states: list = []
    bar = tqdm(total=num_samples, desc="edit metrics", unit="img", disable=not progress)
    for index, start in enumerate(range(0, num_samples, batch_size)):
        batch = latents[start : start + batch_size]
        state = cached_states[index] if cached_states is not None else None
        if cached is not None:
            _, _, state = accumulator.add(batch, cached.images[index], cached.labels[index] if cached.labels else None,
                                          state)
        else:
            before, labels, state = accumulator.add(batch, state_before=state)
            if cache is not None and cache.fits(before.shape[1:], num_samples):
                recorded.images.append(before.cpu())
                if labels is not None:
                    recorded.labels.append(labels.cpu())
        if states_cache is not None and cached_states is None and states_cache.fits(state.nbytes, batches):
            recorded_states.append(state)
        bar.update(min(batch_size, num_samples - start))
    bar.close()
    if cached is not None:
        accumulator.load_fid_reference_states(cached.fid_reference)
    elif cache is not None and len(recorded.images) == batches:
        recorded.fid_reference = accumulator.fid_reference_states()
        cache.save(recorded)
    if states_cache is not None and len(recorded_states) == batches:
        states_cache.save(recorded_states)
    results = accumulator.results_dict()
    results["unedited_from_cache"] = cached is not None
    results["unedited_states_from_cache"] = cached_states is not None
    return results
