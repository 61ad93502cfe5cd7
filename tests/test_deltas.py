"""Weight deltas: a saved delta reproduces the edited generator exactly, deltas compose, revert is bit-exact,
and a delta refuses a generator it was not made for."""
from __future__ import annotations

import copy

import pytest
import torch

from rewriting import apply_deltas, load_delta, load_edit, load_generator, revert_deltas, rewrite, save_delta
from rewriting.deltas import applied_deltas
from rewriting.errors import CheckpointError
from rewriting.methods.rank_one import ConstrainedRewrite
from rewriting.models.checkpoints import save_stylegan2
from rewriting.models.download import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"enable_progress_bar": False}


def sample_z(count: int = 4, z_dim: int = 32) -> torch.Tensor:
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(9))


def images(generator) -> torch.Tensor:
    with torch.no_grad():
        return generator(sample_z(z_dim=generator.z_dim))


def assert_same_state(generator, other) -> None:
    state, other_state = generator.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys()
    for key in state:
        assert torch.equal(state[key], other_state[key]), key


@pytest.fixture(scope="module")
def edits(tiny_checkpoint, make_spec_dict, tmp_path_factory):
    """Two different edits applied one after the other to one generator, each saved as a delta."""
    folder = tmp_path_factory.mktemp("deltas")
    edited = load_generator(tiny_checkpoint)
    specs = [load_edit(make_spec_dict(name="first")),
             load_edit(make_spec_dict(name="second", context_ids=(6, 7), copy_id=8, paste_id=9,
                                      boxes={"copy": (30, 30, 50, 50), "paste": (4, 4, 20, 24)}))]
    paths, snapshots = [], []
    for index, (spec, layer) in enumerate(zip(specs, (4, 4))):
        result = rewrite(edited, spec, ConstrainedRewrite(steps=20, lr=0.05), layer=layer, statistics_samples=12,
                         statistics_cache=str(folder / "statistics"), progress=False, trainer_options=QUIET)
        path = save_delta(folder / f"delta{index}.safetensors", result.delta_tensors(),
                          {"base_sha256": edited.checkpoint_sha256, "layer": layer, "rank": 1})
        paths.append(path)
        snapshots.append(copy.deepcopy(edited))
    return paths, snapshots


def test_load_generator_records_the_checkpoint_hash(tiny_checkpoint):
    assert load_generator(tiny_checkpoint).checkpoint_sha256 == sha256_file(tiny_checkpoint)


def test_saved_delta_reproduces_the_edited_generator_exactly(tiny_checkpoint, edits):
    (first, _), (edited_once, _) = edits
    tensors, metadata = load_delta(first)
    assert list(tensors) == ["convs.1.conv.weight"]
    assert metadata["layer"] == 4 and metadata["rank"] == 1
    assert metadata["base_sha256"] == sha256_file(tiny_checkpoint)
    assert metadata["package_version"]
    fresh = apply_deltas(load_generator(tiny_checkpoint), [first])
    assert torch.equal(images(fresh), images(edited_once))
    assert_same_state(fresh, edited_once)
    assert not torch.equal(images(fresh), images(load_generator(tiny_checkpoint)))


def test_two_deltas_compose_to_both_edits(tiny_checkpoint, edits):
    paths, (edited_once, edited_twice) = edits
    assert not torch.equal(images(edited_once), images(edited_twice))
    fresh = apply_deltas(load_generator(tiny_checkpoint), paths)
    assert torch.equal(images(fresh), images(edited_twice))
    assert applied_deltas(fresh) == [str(p) for p in paths]
    one_by_one = load_generator(tiny_checkpoint)
    for path in paths:
        apply_deltas(one_by_one, [path])
    assert_same_state(one_by_one, edited_twice)


def test_revert_restores_the_base_bit_exactly(tiny_checkpoint, edits):
    paths, _ = edits
    base = load_generator(tiny_checkpoint)
    generator = apply_deltas(load_generator(tiny_checkpoint), paths)
    revert_deltas(generator)
    assert_same_state(generator, base)
    assert torch.equal(images(generator), images(base))
    assert applied_deltas(generator) == []
    # After a revert the deltas apply again from the base.
    apply_deltas(generator, paths[:1])
    apply_deltas(base, paths[:1])
    assert_same_state(generator, base)


def test_delta_for_another_architecture_is_refused(make_generator, edits):
    (first, _), _ = edits
    narrower = make_generator(size=32, style_dim=32, n_mlp=2, channels={4: 8, 8: 8, 16: 8, 32: 8})
    before = copy.deepcopy(narrower)
    with pytest.raises(CheckpointError, match=r"'convs\.1\.conv\.weight'.*another generator"):
        apply_deltas(narrower, [first])
    assert_same_state(narrower, before)


def test_delta_naming_a_missing_tensor_is_refused(make_generator, tmp_path):
    smaller = make_generator(size=16, style_dim=16, n_mlp=1)
    path = save_delta(tmp_path / "d.safetensors", {"convs.1.conv.weight": torch.zeros(1, 16, 16, 3, 3),
                                                   "convs.5.conv.weight": torch.zeros(1, 16, 16, 3, 3)}, {})
    before = copy.deepcopy(smaller)
    with pytest.raises(CheckpointError, match=r"'convs\.5\.conv\.weight', which this generator does not have"):
        apply_deltas(smaller, [path])
    assert_same_state(smaller, before)  # nothing half-applied


def test_delta_for_another_base_checkpoint_is_refused(make_generator, tmp_path, edits):
    (first, _), _ = edits
    other = save_stylegan2(make_generator(seed=21), tmp_path / "other.pt")
    generator = load_generator(other)
    before = copy.deepcopy(generator)
    with pytest.raises(CheckpointError, match="was made for checkpoint sha256"):
        apply_deltas(generator, [first])
    assert_same_state(generator, before)
    apply_deltas(generator, [first], check_base=False)  # the user may insist
    assert not torch.equal(generator.convs[1].conv.weight, before.convs[1].conv.weight)


def test_missing_or_corrupt_delta_file_gives_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_delta(tmp_path / "absent.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_delta(tmp_path / "bad.safetensors")
