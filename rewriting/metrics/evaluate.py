"""Measure an edit as the paper does: one seeded sample through the unedited and edited generators.

Every metric streams over batches (float64 sums), so 10,000 samples need no more memory
than one batch. Metrics whose pretrained weights are absent are recorded as such, with a
warning, and the others still run.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from rewriting.errors import RewritingError, WeightsUnavailableError
from rewriting.metrics import fid
from rewriting.metrics.distance import MaskedMean, l1_map, load_lpips, lpips_map, source_region
from rewriting.metrics.success import edit_success_counts, erase_success_counts, label_presence_counts
from rewriting.metrics.weights import BACKBONE_WEIGHTS

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


def _share(hits: int, total: int) -> float | None:
    return hits / total if total > 0 else None


def _json_number(value: float) -> float | None:
    """NaN (undefined: nothing to measure) becomes None, which JSON can hold."""
    return None if math.isnan(value) else value


@contextlib.contextmanager
def _fixed_noise(*generators: nn.Module) -> Iterator[None]:
    """Both generators use their fixed noise buffers, so the same z gives comparable images."""
    saved = [getattr(generator, "noise_mode", None) for generator in generators]
    for generator, mode in zip(generators, saved):
        if mode is not None:
            generator.noise_mode = "fixed"
    try:
        yield
    finally:
        for generator, mode in zip(generators, saved):
            if mode is not None:
                generator.noise_mode = mode


def _weights_absent(name: str, error: WeightsUnavailableError, warnings: list[str]) -> str:
    warnings.append(str(error))
    return f"weights absent: {BACKBONE_WEIGHTS[name].filename}"


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
    min_pixels: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare unedited and edited generators on one seeded z sample; a flat JSON-able dict of metrics.

    Keys (present when their inputs are given): edit_success, erase_success, undesired_change_l1
    and edited_region_l1 (outside / inside the source region, or the erased one, dilated by
    region_dilate px), undesired_change_lpips_<net> (whole_image_lpips_<net> without a region),
    whole_image_l1, segmenter_fid_edited_vs_unedited, inception_fid_edited_vs_unedited,
    share_showing_<class>_before / _after, num_samples, seed, metric_seconds, warnings.
    Classes are indices or names from `label_names` (default: the Toytown labels).
    `lpips_model`: an already loaded spatial LPIPS model for `lpips_net` (reused across evaluations).
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
    source = _class_indices(source, label_names, "source") if source is not None else None
    target = _class_indices(target, label_names, "target") if target is not None else None
    erase = _class_indices(erase, label_names, "erase") if erase is not None else None
    region_classes = source if source is not None else erase
    shown_classes = sorted({*(source or []), *(target or []), *(erase or [])})

    device = next(generator_before.parameters()).device
    results: dict[str, Any] = {}
    warnings: list[str] = []

    lpips_key = f"{'undesired_change' if region_classes is not None else 'whole_image'}_lpips_{lpips_net}"
    if lpips_net is None:
        lpips_model = None
    elif lpips_model is None:
        try:
            lpips_model = load_lpips(lpips_net, device)
        except WeightsUnavailableError as error:
            results[lpips_key] = _weights_absent(lpips_net, error, warnings)
    inception_metric = None
    if inception_fid:
        try:
            inception_metric = fid.inception_fid_metric(device)
        except WeightsUnavailableError as error:
            results["inception_fid_edited_vs_unedited"] = _weights_absent("inception", error, warnings)
    feature_metric = None

    whole_l1, outside_l1, inside_l1, outside_lpips = MaskedMean(), MaskedMean(), MaskedMean(), MaskedMean()
    edit_hits = edit_total = erase_hits = erase_total = 0
    shown_before = torch.zeros(len(label_names), dtype=torch.long)
    shown_after = torch.zeros(len(label_names), dtype=torch.long)

    latents = torch.randn(num_samples, generator_before.z_dim, generator=torch.Generator().manual_seed(seed))
    bar = tqdm(total=num_samples, desc="edit metrics", unit="img", disable=not progress)
    with _fixed_noise(generator_before, generator_after), torch.no_grad():
        for start in range(0, num_samples, batch_size):
            z = latents[start : start + batch_size].to(device)
            before = generator_before(z).float()
            after = generator_after(z).float()
            distance = l1_map(before, after)
            whole_l1.add(distance, torch.ones_like(distance))

            keep = torch.ones_like(distance)
            if segmenter is not None:
                labels_before = segmenter.segment(before).to(device)
                labels_after = segmenter.segment(after).to(device)
                if source is not None:
                    hits, total = edit_success_counts(labels_before, labels_after, source, target)
                    edit_hits, edit_total = edit_hits + int(hits.sum()), edit_total + int(total.sum())
                if erase is not None:
                    hits, total = erase_success_counts(labels_before, labels_after, erase)
                    erase_hits, erase_total = erase_hits + int(hits.sum()), erase_total + int(total.sum())
                if region_classes is not None:
                    region = source_region(labels_before, region_classes, region_dilate).to(device)
                    keep = 1 - region
                    outside_l1.add(distance, keep)
                    inside_l1.add(distance, region)
                shown_before += label_presence_counts(labels_before, len(label_names), min_pixels).cpu()
                shown_after += label_presence_counts(labels_after, len(label_names), min_pixels).cpu()
            if lpips_model is not None:
                outside_lpips.add(lpips_map(before, after, lpips_model).to(device), keep)
            if fid_features is not None:
                if feature_metric is None:
                    feature_metric = fid.feature_fid_metric(fid_features, before)
                fid.add_images(feature_metric, before, reference=True)
                fid.add_images(feature_metric, after, reference=False)
            if inception_metric is not None:
                fid.add_images(inception_metric, before, reference=True)
                fid.add_images(inception_metric, after, reference=False)
            bar.update(z.shape[0])
    bar.close()

    if source is not None:
        results["edit_success"] = _share(edit_hits, edit_total)
    if erase is not None:
        results["erase_success"] = _share(erase_hits, erase_total)
    if region_classes is not None:
        results["undesired_change_l1"] = _json_number(outside_l1.value)
        results["edited_region_l1"] = _json_number(inside_l1.value)
    results["whole_image_l1"] = _json_number(whole_l1.value)
    if lpips_model is not None:
        results[lpips_key] = _json_number(outside_lpips.value)
    if feature_metric is not None:
        results["segmenter_fid_edited_vs_unedited"] = fid.fid_value(feature_metric)
    if inception_metric is not None:
        results["inception_fid_edited_vs_unedited"] = fid.fid_value(inception_metric)
    for index in shown_classes:
        name = label_names[index]
        results[f"share_showing_{name}_before"] = int(shown_before[index]) / num_samples
        results[f"share_showing_{name}_after"] = int(shown_after[index]) / num_samples
    results["num_samples"] = num_samples
    results["seed"] = seed
    results["metric_seconds"] = time.perf_counter() - started
    results["warnings"] = warnings
    return results
