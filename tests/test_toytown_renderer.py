"""The Toytown renderer: determinism, label coverage, watermark placement, crisp parts, speed."""

import dataclasses
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewriting.errors import RewritingError
from rewriting.toytown import (
    LABEL_INDEX,
    LABELS,
    NUM_LABELS,
    ROOF_KINDS,
    RenderedStream,
    colorize_labels,
    render,
    render_seeds,
    sample_scenes,
    scene_summary,
)
from rewriting.toytown.renderer import (
    WATERMARK_BOTTOM,
    WATERMARK_LEFT,
    WATERMARK_RIGHT,
    WATERMARK_TOP,
)

SEEDS = range(200)


@pytest.fixture(scope="module")
def rendered():
    scenes = sample_scenes(SEEDS)
    images, labels = render(scenes)
    return scenes, images, labels


def _with_fields(scenes, **changes):
    return dataclasses.replace(scenes, **changes)


def test_images_and_labels_have_expected_shapes_types_and_range(rendered):
    _, images, labels = rendered
    assert images.shape == (len(SEEDS), 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (len(SEEDS), 64, 64) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1
    assert labels.min() >= 0 and labels.max() < NUM_LABELS
    assert LABELS[0] == "sky" and LABELS[-1] == "watermark" and LABEL_INDEX["door"] == 7


def test_same_seed_gives_identical_scene_in_any_batch_position():
    first_images, first_labels = render_seeds([5, 6, 7, 8])
    second_images, second_labels = render_seeds([123, 8, 5, 999, 7])
    for first, second in ((0, 2), (2, 4), (3, 1)):
        assert torch.equal(first_images[first], second_images[second])
        assert torch.equal(first_labels[first], second_labels[second])
    assert not torch.equal(first_images[0], first_images[1])


def test_every_label_appears_and_roof_kinds_are_balanced(rendered):
    scenes, _, labels = rendered
    present = torch.bincount(labels.flatten(), minlength=NUM_LABELS)
    missing = [name for name, count in zip(LABELS, present.tolist()) if count == 0]
    assert not missing
    kinds = scenes.roof_kind[scenes.building_present]
    for index, kind in enumerate(ROOF_KINDS):
        assert 0.22 < (kinds == index).mean() < 0.45, kind
    has_watermark = scene_summary(labels)["watermark"].float().mean().item()
    assert 0.12 <= has_watermark <= 0.28


def test_most_buildings_have_windows_and_every_building_a_door(rendered):
    scenes, _, labels = rendered
    with_windows = (scenes.window_columns * scenes.window_rows > 0)[scenes.building_present]
    assert 0.7 < with_windows.mean() < 0.9
    assert scene_summary(labels)["door"].all()


def test_watermark_lies_only_in_the_fixed_corner_and_changes_nothing_else(rendered):
    scenes, images, labels = rendered
    corner = torch.zeros(64, 64, dtype=torch.bool)
    corner[WATERMARK_TOP:WATERMARK_BOTTOM, WATERMARK_LEFT:WATERMARK_RIGHT] = True
    is_watermark = labels == LABEL_INDEX["watermark"]
    assert not is_watermark[:, ~corner].any()
    marked = torch.as_tensor(scenes.watermark_present)
    assert is_watermark[marked][:, corner].all()
    assert not is_watermark[~marked].any()

    clean_images, clean_labels = render(
        _with_fields(scenes, watermark_present=np.zeros_like(scenes.watermark_present))
    )
    assert torch.equal(clean_images[..., ~corner], images[..., ~corner])
    assert torch.equal(clean_labels[:, ~corner], labels[:, ~corner])
    # The mark lightens what lies under it.
    assert (images[marked][..., corner] > clean_images[marked][..., corner]).float().mean() > 0.9


def test_windows_are_whole_blocks_of_at_least_three_by_three_pixels(rendered):
    scenes, _, _ = rendered
    # Trees and a second building may legitimately hide part of a window, so draw neither.
    single = np.flatnonzero(scenes.building_present.sum(1) == 1)
    scenes = sample_scenes([SEEDS[index] for index in single])
    no_trees = _with_fields(scenes, tree_present=np.zeros_like(scenes.tree_present))
    _, labels = render(no_trees)
    windows = (labels == LABEL_INDEX["window"]).float()[:, None]
    eroded = -F.max_pool2d(-windows, 3, stride=1, padding=1)
    opened = F.max_pool2d(eroded, 3, stride=1, padding=1)
    assert windows.sum() > 0
    assert torch.equal(opened, windows)


def test_roof_slabs_are_darker_than_their_buildings(rendered):
    scenes, images, labels = rendered
    brightness = images.mean(1)
    checked = 0
    for index in range(len(SEEDS)):
        one_building = scenes.building_present[index].sum() == 1
        if not (one_building and scenes.roof_kind[index, 0] == ROOF_KINDS.index("flat_roof")):
            continue
        slab = brightness[index][labels[index] == LABEL_INDEX["flat_roof"]].mean()
        body = brightness[index][labels[index] == LABEL_INDEX["building"]].mean()
        assert slab < body - 0.2
        checked += 1
    assert checked > 10


def test_other_sizes_render_the_same_scene():
    _, small_labels = render_seeds(range(20), size=64)
    large_images, large_labels = render_seeds(range(20), size=128)
    assert large_images.shape == (20, 3, 128, 128)
    # Each 64-px pixel holds a 2x2 block at 128 px; edges are on the 64-unit grid, so they agree.
    agreement = (large_labels[:, 1::2, 1::2] == small_labels).float().mean()
    assert agreement > 0.97
    tiny_images, tiny_labels = render_seeds(range(4), size=16)
    assert tiny_images.shape == (4, 3, 16, 16) and tiny_labels.shape == (4, 16, 16)


def test_scene_summary_reports_parts_present_per_image(rendered):
    scenes, _, labels = rendered
    summary = scene_summary(labels)
    assert set(summary) == set(LABELS)
    assert torch.equal(summary["watermark"], torch.as_tensor(scenes.watermark_present))
    no_trees = ~torch.as_tensor(scenes.tree_present.any(1))
    assert not summary["tree"][no_trees].any()


def test_colorize_labels_gives_one_colour_per_label():
    labels = torch.arange(NUM_LABELS).reshape(1, 1, NUM_LABELS)
    colours = colorize_labels(labels)
    assert colours.shape == (1, 3, 1, NUM_LABELS)
    assert len({tuple(colours[0, :, 0, index].tolist()) for index in range(NUM_LABELS)}) == NUM_LABELS


def test_rendered_stream_is_reproducible_and_fresh():
    first = RenderedStream(batch_size=4, first_seed=10)
    second = RenderedStream(batch_size=4, first_seed=10)
    batch_a, batch_b = next(first), next(first)
    assert torch.equal(batch_a[0], next(second)[0])
    assert not torch.equal(batch_a[0], batch_b[0])
    assert torch.equal(batch_b[1], render_seeds(range(14, 18))[1])
    assert first.next_seed == 18


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(RewritingError, match="seeds"):
        sample_scenes([-1])
    with pytest.raises(RewritingError, match="seed"):
        sample_scenes([])
    with pytest.raises(RewritingError, match="size"):
        render_seeds([0], size=4)
    with pytest.raises(RewritingError, match="batch_size"):
        RenderedStream(batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_render_matches_cpu():
    cpu_images, cpu_labels = render_seeds(range(32))
    cuda_images, cuda_labels = render_seeds(range(32), device="cuda")
    assert (cuda_labels.cpu() != cpu_labels).float().mean() < 1e-3
    assert (cuda_images.cpu() - cpu_images).abs().mean() < 1e-3


@pytest.mark.slow
def test_renders_at_least_a_thousand_images_per_second_on_one_core():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        render_seeds(range(64))  # warm-up
        best = 0.0
        for attempt in range(3):
            start = time.perf_counter()
            render_seeds(range(attempt * 512, (attempt + 1) * 512))
            best = max(best, 512 / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    assert best >= 1000, f"{best:.0f} images/s"
