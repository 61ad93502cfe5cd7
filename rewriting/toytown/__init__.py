"""Toytown: a procedural scene domain with exact part labels, used as a GAN's training data."""

from rewriting.toytown.labels import (
    LABEL_COLORS,
    LABEL_INDEX,
    LABELS,
    NUM_LABELS,
    colorize_labels,
    scene_summary,
)
from rewriting.toytown.renderer import (
    ROOF_KINDS,
    RenderedStream,
    SceneBatch,
    render,
    render_seeds,
    sample_scenes,
)
from rewriting.toytown.segmenter import SegmenterFeatures, ToytownSegmenter, label_mask, load_segmenter

__all__ = [
    "SegmenterFeatures",
    "ToytownSegmenter",
    "label_mask",
    "load_segmenter",
    "LABELS",
    "LABEL_INDEX",
    "LABEL_COLORS",
    "NUM_LABELS",
    "ROOF_KINDS",
    "RenderedStream",
    "SceneBatch",
    "colorize_labels",
    "render",
    "render_seeds",
    "sample_scenes",
    "scene_summary",
]
