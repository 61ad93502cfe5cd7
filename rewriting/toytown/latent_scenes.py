"""Toytown scenes drawn from Gaussian latents instead of integer seeds: a fixed map z -> scene.

A generator trained by regression (its image for z against the render of the scene of z) learns
this map, so it never drops a kind of scene the way an adversarial generator can. Each random draw
of the scene sampler reads one coordinate of z through the normal CDF (a uniform number), and each
building, tree and the watermark read their own block of coordinates, so changing a roof's kind
(which changes how many draws that building makes) leaves the other parts of the scene as they were.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.special import ndtr

from rewriting.errors import RewritingError
from rewriting.toytown.renderer import MAX_BUILDINGS, MAX_TREES, SceneBatch, _sample_scene, render

# Coordinates of z per part of the scene; a block is reused from its start if a part draws more
# (a colour redrawn to contrast with its wall), so the map stays deterministic.
BLOCK_SIZES = {"scene": 24, **{f"building{slot}": 36 for slot in range(MAX_BUILDINGS)},
               **{f"tree{slot}": 12 for slot in range(MAX_TREES)}, "watermark": 8}
LATENT_DIM = sum(BLOCK_SIZES.values())


class LatentRandom:
    """The subset of `numpy.random.RandomState` the scene sampler uses, reading uniforms from one block."""

    def __init__(self, uniforms: np.ndarray, blocks: dict[str, np.ndarray] | None = None):
        self._uniforms = uniforms
        self._blocks = blocks or {}
        self._next = 0

    def substream(self, name: str) -> "LatentRandom":
        return LatentRandom(self._blocks[name])

    def _draw(self, size: int | None) -> np.ndarray | float:
        count = 1 if size is None else int(np.prod(size))
        indices = (self._next + np.arange(count)) % len(self._uniforms)
        self._next += count
        values = self._uniforms[indices]
        return float(values[0]) if size is None else values.reshape(size)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: int | None = None):
        return low + (high - low) * self._draw(size)

    def randint(self, low: int, high: int | None = None, size: int | None = None):
        if high is None:
            low, high = 0, low
        values = np.minimum(low + np.floor(np.asarray(self._draw(size)) * (high - low)), high - 1).astype(np.int64)
        return int(values) if size is None else values

    def permutation(self, count: int) -> np.ndarray:
        return np.argsort(np.asarray(self._draw(count)), kind="stable")

    def choice(self, options, p: Sequence[float] | None = None):
        options = np.arange(options) if isinstance(options, (int, np.integer)) else np.asarray(options)
        weights = np.full(len(options), 1 / len(options)) if p is None else np.asarray(p, dtype=np.float64)
        index = int(np.searchsorted(np.cumsum(weights) / weights.sum(), self._draw(None), side="right"))
        return options[min(index, len(options) - 1)]


def scenes_from_latents(latents: torch.Tensor) -> SceneBatch:
    """Scene parameters for latents (N, D), D >= LATENT_DIM (later coordinates are not read)."""
    if latents.ndim != 2 or latents.shape[1] < LATENT_DIM:
        raise RewritingError(
            f"Toytown latent scenes need latents of shape (N, >= {LATENT_DIM}); got {tuple(latents.shape)}. "
            f"Use a generator whose z has at least {LATENT_DIM} coordinates.")
    uniforms = ndtr(latents[:, :LATENT_DIM].detach().double().cpu().numpy())
    # Keep clear of 0 and 1 so that a randint never lands on its excluded upper end through rounding.
    uniforms = np.clip(uniforms, 1e-9, 1 - 1e-9)
    scenes = SceneBatch.empty(len(uniforms))
    for index, row in enumerate(uniforms):
        blocks, start = {}, 0
        for name, size in BLOCK_SIZES.items():
            blocks[name] = row[start:start + size]
            start += size
        _sample_scene(LatentRandom(blocks["scene"], blocks), scenes, index)
    return scenes


def render_latents(latents: torch.Tensor, size: int = 64,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, size, size) in [-1, 1] and labels (N, size, size) of the scenes of latents (N, D)."""
    return render(scenes_from_latents(latents), size=size, device=device)
