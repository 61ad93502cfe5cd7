"""Float64 sums of the edit metrics over batches of one seeded sample, and the metrics they give."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
import torch.nn as nn

from rewriting.errors import WeightsUnavailableError
from rewriting.metrics import fid
from rewriting.metrics.distance import MaskedMean, l1_map, load_lpips, lpips_map, source_region
from rewriting.metrics.success import class_mask, edit_success_counts, erase_success_counts, label_presence_counts
from rewriting.metrics.weights import BACKBONE_WEIGHTS


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


def resume_layer(generator_before: nn.Module, generator_after: nn.Module) -> int | None:
    """The layer the edited generator's pass resumes at from the unedited one's state; None: a whole pass.

    Only generators that can resume (StyleGAN2) and that share at least one layer qualify.
    """
    first_differing = getattr(generator_before, "first_differing_layer", None)
    if first_differing is None or not hasattr(generator_after, "resume_synthesis"):
        return None
    layer = first_differing(generator_after)
    return layer if layer is not None and layer > generator_before.layer_numbers[0] else None


class EditMetricSums:
    """Float64 sums over batches of one seeded sample; equal sums give equal metrics, however split.

    Built by `evaluate_edit`'s checks; `add(z)` takes one batch of latents, `sums()` / `load_sums()`
    expose every accumulated quantity as float64 tensors (what DDP reduces), `results_dict()` the metrics.
    """

    MEANS = ("whole_l1", "outside_l1", "inside_l1", "outside_lpips")

    def __init__(self, generator_before: nn.Module, generator_after: nn.Module, options: dict[str, Any],
                 example_latent: torch.Tensor, example_image: torch.Tensor | None = None) -> None:
        self.before_model, self.after_model = generator_before, generator_after
        self.segmenter = options["segmenter"]
        self.source, self.target, self.erase = options["source"], options["target"], options["erase"]
        self.label_names = options["label_names"]
        self.region_classes = self.source if self.source is not None else self.erase
        self.region_dilate, self.min_pixels = options["region_dilate"], options["min_pixels"]
        self.lpips_net = options["lpips_net"]
        self.device = next(generator_before.parameters()).device
        self.resume_layer = resume_layer(generator_before, generator_after)
        self.absent_weights: dict[str, str] = {}  # metric key -> "weights absent: FILE"
        self.warnings: list[str] = []
        self.lpips_key = (f"{'undesired_change' if self.region_classes is not None else 'whole_image'}"
                          f"_lpips_{self.lpips_net}")
        self.lpips_model = options["lpips_model"]
        if self.lpips_net is None:
            self.lpips_model = None
        elif self.lpips_model is None:
            try:
                self.lpips_model = load_lpips(self.lpips_net, self.device)
            except WeightsUnavailableError as error:
                self.absent_weights[self.lpips_key] = _weights_absent(self.lpips_net, error, self.warnings)
        self.inception_metric = None
        if options["inception_fid"]:
            try:
                self.inception_metric = fid.inception_fid_metric(self.device)
            except WeightsUnavailableError as error:
                self.absent_weights["inception_fid_edited_vs_unedited"] = _weights_absent("inception", error,
                                                                                          self.warnings)
        self.feature_metric = None
        if options["fid_features"] is not None:
            example = example_image
            if example is None:  # the unedited image of the first latent sizes the features
                with _fixed_noise(generator_before), torch.no_grad():
                    example = generator_before(example_latent[:1].to(self.device)).float()
            self.feature_metric = fid.feature_fid_metric(options["fid_features"], example)
        self.whole_l1, self.outside_l1, self.inside_l1, self.outside_lpips = (
            MaskedMean(), MaskedMean(), MaskedMean(), MaskedMean())
        self.counts = {name: 0 for name in ("edit_hits", "edit_total", "erase_hits", "erase_total", "samples")}
        self.shown_before = torch.zeros(len(self.label_names), dtype=torch.long)
        self.shown_after = torch.zeros(len(self.label_names), dtype=torch.long)
        # What the source (or erased) pixels became: one count per label the segmenter gives them after.
        self.region_after = torch.zeros(len(self.label_names), dtype=torch.long)

    @torch.no_grad()
    def add(self, z: torch.Tensor, before: torch.Tensor | None = None, labels_before: torch.Tensor | None = None,
            state_before: Any = None) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """One batch of latents (n, z_dim) through both generators, with their fixed noise.

        before / labels_before: the unedited images (n, 3, H, W) and their labels (n, H, W), when
        already known (a cached unedited side); their FID reference features are then not added.
        state_before: the unedited synthesis's state before `resume_layer`, when known (cached).
        Returns the unedited images, labels and state (None without a resume layer) used.
        """
        z = z.to(self.device)
        reference_known = before is not None
        with _fixed_noise(self.before_model, self.after_model):
            if self.resume_layer is None:
                if before is None:
                    before = self.before_model(z).float()
                after = self.after_model(z).float()
            else:  # the layers before the edit are the same in both generators: run them once
                if state_before is None:
                    w = self.before_model.mapping(z)
                    if before is None:
                        before, state_before = self.before_model.synthesis_with_state(w, self.resume_layer)
                        before = before.float()
                    else:
                        state_before = self.before_model.synthesis_state(w, self.resume_layer)
                elif before is None:
                    before = self.before_model.resume_synthesis(state_before).float()
                after = self.after_model.resume_synthesis(state_before).float()
        before = before.to(self.device)
        self.counts["samples"] += z.shape[0]
        distance = l1_map(before, after)
        self.whole_l1.add(distance, torch.ones_like(distance))
        keep = torch.ones_like(distance)
        if self.segmenter is not None:
            if labels_before is None:
                labels_before = self.segmenter.segment(before)
            labels_before = labels_before.to(self.device)
            labels_after = self.segmenter.segment(after).to(self.device)
            if self.source is not None:
                hits, total = edit_success_counts(labels_before, labels_after, self.source, self.target)
                self.counts["edit_hits"] += int(hits.sum())
                self.counts["edit_total"] += int(total.sum())
            if self.erase is not None:
                hits, total = erase_success_counts(labels_before, labels_after, self.erase)
                self.counts["erase_hits"] += int(hits.sum())
                self.counts["erase_total"] += int(total.sum())
            if self.region_classes is not None:
                region = source_region(labels_before, self.region_classes, self.region_dilate).to(self.device)
                keep = 1 - region
                was_region = class_mask(labels_before, self.region_classes)
                self.region_after += torch.bincount(labels_after[was_region].flatten().cpu(),
                                                    minlength=len(self.label_names))[:len(self.label_names)]
                self.outside_l1.add(distance, keep)
                self.inside_l1.add(distance, region)
            self.shown_before += label_presence_counts(labels_before, len(self.label_names), self.min_pixels).cpu()
            self.shown_after += label_presence_counts(labels_after, len(self.label_names), self.min_pixels).cpu()
        if self.lpips_model is not None:
            self.outside_lpips.add(lpips_map(before, after, self.lpips_model).to(self.device), keep)
        for metric in (self.feature_metric, self.inception_metric):
            if metric is not None:
                if not reference_known:
                    fid.add_images(metric, before, reference=True)
                fid.add_images(metric, after, reference=False)
        return before, labels_before, state_before

    def fid_reference_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The FID metrics' reference (unedited) states, by metric name, on the CPU."""
        return {prefix: {state: getattr(metric, state).detach().cpu().clone()
                         for state in fid.FID_STATES if state.startswith("real_")}
                for prefix, metric in self._fid_metrics().items()}

    def load_fid_reference_states(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Set the FID reference states from `fid_reference_states()` of an equal pass."""
        for prefix, metric in self._fid_metrics().items():
            for state, value in states[prefix].items():
                current = getattr(metric, state)
                setattr(metric, state, value.to(current.device, current.dtype))

    def _fid_metrics(self) -> dict[str, Any]:
        return {name: metric for name, metric in (("feature_fid", self.feature_metric),
                                                   ("inception_fid", self.inception_metric)) if metric is not None}

    def sums(self) -> dict[str, torch.Tensor]:
        """Every accumulated quantity as a float64 tensor on the CPU (counts are exact below 2**53)."""
        out = {f"count.{name}": torch.tensor(float(value), dtype=torch.float64) for name, value in self.counts.items()}
        for name in self.MEANS:
            mean = getattr(self, name)
            out[f"{name}.total"] = torch.tensor(mean.total, dtype=torch.float64)
            out[f"{name}.weight"] = torch.tensor(mean.weight, dtype=torch.float64)
        out["shown_before"] = self.shown_before.double()
        out["shown_after"] = self.shown_after.double()
        out["region_after"] = self.region_after.double()
        for prefix, metric in self._fid_metrics().items():
            for state in fid.FID_STATES:
                out[f"{prefix}.{state}"] = getattr(metric, state).detach().double().cpu()
        return out

    def load_sums(self, sums: dict[str, torch.Tensor]) -> None:
        """Replace the accumulated quantities by `sums` (e.g. the sums of every rank's `sums()`)."""
        for name in self.counts:
            self.counts[name] = int(round(float(sums[f"count.{name}"])))
        for name in self.MEANS:
            mean = getattr(self, name)
            mean.total, mean.weight = float(sums[f"{name}.total"]), float(sums[f"{name}.weight"])
        self.shown_before = sums["shown_before"].round().long()
        self.shown_after = sums["shown_after"].round().long()
        self.region_after = sums["region_after"].round().long()
        for prefix, metric in self._fid_metrics().items():
            for state in fid.FID_STATES:
                current = getattr(metric, state)
                setattr(metric, state, sums[f"{prefix}.{state}"].to(current.device, current.dtype))

    def results_dict(self) -> dict[str, Any]:
        """The metrics of everything added (see `evaluate_edit` for the keys)."""
        results: dict[str, Any] = dict(self.absent_weights)
        counts = self.counts
        if self.source is not None:
            results["edit_success"] = _share(counts["edit_hits"], counts["edit_total"])
        if self.erase is not None:
            results["erase_success"] = _share(counts["erase_hits"], counts["erase_total"])
        if self.region_classes is not None:
            results["undesired_change_l1"] = _json_number(self.outside_l1.value)
            results["edited_region_l1"] = _json_number(self.inside_l1.value)
        results["whole_image_l1"] = _json_number(self.whole_l1.value)
        if self.lpips_model is not None:
            results[self.lpips_key] = _json_number(self.outside_lpips.value)
        if self.feature_metric is not None:
            results["segmenter_fid_edited_vs_unedited"] = fid.fid_value(self.feature_metric)
        if self.inception_metric is not None:
            results["inception_fid_edited_vs_unedited"] = fid.fid_value(self.inception_metric)
        shown_classes = sorted({*(self.source or []), *(self.target or []), *(self.erase or [])})
        samples = counts["samples"]
        for index in shown_classes:
            name = self.label_names[index]
            results[f"share_showing_{name}_before"] = int(self.shown_before[index]) / samples
            results[f"share_showing_{name}_after"] = int(self.shown_after[index]) / samples
        if self.region_classes is not None and self.segmenter is not None:
            region_pixels = int(self.region_after.sum())
            for index, name in enumerate(self.label_names):
                results[f"source_labelled_{name}_after"] = _share(int(self.region_after[index]), region_pixels)
        results["num_samples"] = samples
        results["warnings"] = list(self.warnings)
        return results
