"""Second moment C = E[k kᵀ]: exact, batch-independent, cached by everything it depends on; whitening, solve."""
from __future__ import annotations

import copy

import pytest
import torch

from rewriting import statistics
from rewriting.features import layer_keys
from rewriting.statistics import compute_second_moment, second_moment, solve, whitening
from rewriting.statistics_batches import latents_for_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER = 5  # the 8 -> 16 upsampling conv of a 32-px generator


@pytest.fixture(scope="module")
def generator(make_generator):
    return make_generator(size=32, style_dim=16, n_mlp=1)


def direct_second_moment(generator, layer: int, num_samples: int, seed: int) -> torch.Tensor:
    """All keys of all images at once, in float64: sum over every position of k kᵀ / count."""
    z = latents_for_statistics(generator.z_dim, num_samples, seed)
    keys, _, _ = layer_keys(generator, z, layer, generator.make_noise(num_samples, mode="fixed"))
    flat = keys.permute(0, 2, 3, 1).reshape(-1, keys.shape[1]).double()
    return torch.einsum("ni,nj->ij", flat, flat) / flat.shape[0]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_second_moment_equals_direct_computation(generator):
    result = compute_second_moment(generator, LAYER, num_samples=7, batch_size=3, seed=2, noise_mode="fixed",
                                   progress=False)
    expected = direct_second_moment(generator, LAYER, 7, seed=2)
    assert result.matrix.dtype == torch.float64
    assert result.matrix.shape == (16, 16)
    assert result.count == 7 * 8 * 8  # every position of every image at the layer's 8x8 input
    assert relative_difference(result.matrix, expected) < 1e-6
    assert torch.allclose(result.matrix, result.matrix.t())


@pytest.mark.parametrize("noise_mode", ["fixed", "random"])
def test_batch_size_does_not_change_the_second_moment(generator, noise_mode):
    # float64 weights: the keys themselves are then the same whatever the batch, so this checks the streaming.
    generator64 = copy.deepcopy(generator).double()
    results = [compute_second_moment(generator64, LAYER, num_samples=10, batch_size=batch, seed=1,
                                     noise_mode=noise_mode, progress=False).matrix for batch in (10, 3, 1)]
    for other in results[1:]:
        assert relative_difference(other, results[0]) < 1e-10


def test_cache_hit_returns_the_same_matrix_without_recomputing(generator, statistics_cache, monkeypatch):
    first = second_moment(generator, LAYER, num_samples=8, seed=0, cache_dir=statistics_cache, progress=False)
    assert not first.from_cache
    assert list(statistics_cache.glob("*.pt"))

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was not used")
    monkeypatch.setattr(statistics, "compute_second_moment", refuse)
    second = second_moment(generator, LAYER, num_samples=8, seed=0, cache_dir=statistics_cache, progress=False)
    assert second.from_cache
    assert torch.equal(second.matrix, first.matrix)
    assert second.count == first.count


def test_default_cache_lives_under_rewriting_cache(generator, statistics_cache):
    second_moment(generator, LAYER, num_samples=4, progress=False)
    assert len(list(statistics_cache.glob("second_moment_layer5_*.pt"))) == 1
    assert second_moment(generator, LAYER, num_samples=4, progress=False).from_cache


def _change_weight(generator):
    """Change layer 3 (convs.0), upstream of LAYER, so LAYER's keys change."""
    with torch.no_grad():
        generator.convs[0].conv.weight[0, 0, 0, 0, 0] += 0.5


@pytest.mark.parametrize("change, arguments", [
    ("truncation", {}),
    ("layer", {"layer": 4}),
    ("num_samples", {"num_samples": 9}),
    ("seed", {"seed": 1}),
    ("noise_mode", {"noise_mode": "random"}),
    ("weight", {}),
])
def test_any_change_of_what_c_depends_on_recomputes(generator, statistics_cache, change, arguments):
    model = copy.deepcopy(generator)
    base = {"layer": LAYER, "num_samples": 8, "seed": 0, "noise_mode": "fixed"}
    first = second_moment(model, cache_dir=statistics_cache, progress=False, **base)
    assert second_moment(model, cache_dir=statistics_cache, progress=False, **base).from_cache
    if change == "truncation":
        model.truncation = 0.5
    if change == "weight":
        _change_weight(model)
    changed = second_moment(model, cache_dir=statistics_cache, progress=False, **{**base, **arguments})
    assert not changed.from_cache
    # Each change really changes C, so reusing the cache would have been wrong.
    assert relative_difference(changed.matrix, first.matrix) > 1e-6


def test_corrupt_cache_file_is_recomputed_and_replaced(generator, statistics_cache):
    first = second_moment(generator, LAYER, num_samples=8, cache_dir=statistics_cache, progress=False)
    (path,) = statistics_cache.glob("*.pt")
    path.write_bytes(b"not a torch file")
    again = second_moment(generator, LAYER, num_samples=8, cache_dir=statistics_cache, progress=False)
    assert not again.from_cache
    assert torch.allclose(again.matrix, first.matrix, rtol=1e-12, atol=0)
    assert second_moment(generator, LAYER, num_samples=8, cache_dir=statistics_cache, progress=False).from_cache


def well_conditioned_matrix(size: int = 12, seed: int = 0) -> torch.Tensor:
    factor = torch.randn(size, 3 * size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return factor @ factor.t() / (3 * size) + 0.5 * torch.eye(size, dtype=torch.float64)


def test_whitening_makes_c_the_identity():
    matrix = well_conditioned_matrix()
    whitener = whitening(matrix)
    assert torch.allclose(whitener, whitener.t(), atol=1e-12)
    assert torch.allclose(whitener @ matrix @ whitener, torch.eye(12, dtype=torch.float64), atol=1e-8)


def test_whitening_of_a_singular_matrix_stays_finite():
    vector = torch.randn(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whitener = whitening(vector @ vector.t())
    assert torch.isfinite(whitener).all()


def test_solve_equals_inverse_times_vector():
    matrix = well_conditioned_matrix(seed=3)
    vectors = torch.randn(12, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = torch.linalg.inv(matrix) @ vectors
    assert torch.allclose(solve(matrix, vectors), expected, rtol=1e-7, atol=1e-10)
    assert torch.allclose(solve(matrix, vectors[:, 0]), expected[:, 0], rtol=1e-7, atol=1e-10)
