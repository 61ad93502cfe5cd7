"""How the paper measures an edit: success from segmentations, undesired change, realism (FID)."""

from rewriting.metrics.distance import (
    MaskedMean,
    l1_map,
    load_lpips,
    lpips_map,
    masked_l1,
    masked_lpips,
    source_region,
    to_unit_range,
)
from rewriting.metrics.evaluate import evaluate_edit
from rewriting.metrics.fid import feature_fid, inception_fid
from rewriting.metrics.success import (
    edit_success,
    edit_success_per_sample,
    erase_success,
    erase_success_per_sample,
    label_presence,
)
from rewriting.metrics.weights import BACKBONE_WEIGHTS, require_weights

__all__ = [
    "BACKBONE_WEIGHTS",
    "MaskedMean",
    "edit_success",
    "edit_success_per_sample",
    "erase_success",
    "erase_success_per_sample",
    "evaluate_edit",
    "feature_fid",
    "inception_fid",
    "l1_map",
    "label_presence",
    "load_lpips",
    "lpips_map",
    "masked_l1",
    "masked_lpips",
    "require_weights",
    "source_region",
    "to_unit_range",
]
