"""Toytown scenes from Gaussian latents: the target a regression-trained generator learns."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from rewriting.errors import RewritingError
from rewriting.metrics.success import label_presence
from rewriting.toytown import LABELS, render_seeds
from rewriting.toytown.latent_scenes import BLOCK_SIZES, LATENT_DIM, render_latents, scenes_from_latents


def latents(count: int, seed: int = 0, dim: int = LATENT_DIM) -> torch.Tensor:
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


def block_slice(name: str) -> slice:
    start = 0
    for block, size in BLOCK_SIZES.items():
        if block == name:
            return slice(start, start + size)
        start += size
    raise KeyError(name)


def test_seeded_renders_are_unchanged_by_latent_scene_support():
    # Label maps of seeds 0-49 as rendered before latent scenes existed (integers: exact on any machine).
    _, labels = render_seeds(list(range(50)))
    digest = hashlib.sha256(labels.to(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest == "aced431dfe7e04ca5c072b56c1747477e8ad506a3529cdf1eba140be9d818e91"


def test_latent_scenes_are_deterministic_and_batch_independent():
    z = latents(12)
    images, labels = render_latents(z)
    again, again_labels = render_latents(z[5:7])
    assert torch.equal(images[5:7], again) and torch.equal(labels[5:7], again_labels)
    assert not torch.equal(images[0], images[1])


def test_gaussian_latents_show_each_part_as_often_as_seeded_renders():
    _, from_latents = render_latents(latents(1500, seed=1))
    _, from_seeds = render_seeds(list(range(1500)))
    latent_shares = label_presence(from_latents, list(LABELS))
    seed_shares = label_presence(from_seeds, list(LABELS))
    for part in ("spire", "dome", "flat_roof", "window", "tree", "watermark"):
        # Two samples of 1,500 from the same distribution: within ~4 standard errors.
        assert abs(latent_shares[part] - seed_shares[part]) < 0.06, (part, latent_shares[part], seed_shares[part])


def test_each_part_reads_its_own_block_of_the_latent():
    z = latents(64, seed=2)
    base = scenes_from_latents(z)
    moved_tree = z.clone()
    moved_tree[:, block_slice("tree0")] = latents(64, seed=3)[:, block_slice("tree0")]
    after = scenes_from_latents(moved_tree)
    for field in dataclasses.fields(base):
        same = np.array_equal(getattr(base, field.name), getattr(after, field.name))
        assert same == (not field.name.startswith(("tree_", "trunk_", "crown_")) or field.name == "tree_present"), field.name
    # A new roof kind for the first building leaves the watermark and the sky as they were.
    moved_building = z.clone()
    moved_building[:, block_slice("building0")] = latents(64, seed=4)[:, block_slice("building0")]
    after = scenes_from_latents(moved_building)
    assert not np.array_equal(base.roof_kind[:, 0], after.roof_kind[:, 0])
    for name in ("watermark_present", "watermark_letters", "sky_top", "horizon"):
        assert np.array_equal(getattr(base, name), getattr(after, name)), name


def test_nearby_latents_give_mostly_the_same_scene():
    z = latents(200, seed=5)
    images, _ = render_latents(z)
    nearby, _ = render_latents(z + 0.02 * latents(200, seed=6))
    others, _ = render_latents(latents(200, seed=7))
    assert (images - nearby).abs().mean() < 0.2 * (images - others).abs().mean()


def test_short_latents_raise_a_clear_error():
    with pytest.raises(RewritingError, match=f">= {LATENT_DIM}"):
        scenes_from_latents(torch.randn(2, LATENT_DIM - 1))
