"""NVlabs network pickles: read without running their code, mapped onto the project's StyleGAN2."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from rewriting.errors import CheckpointError
from rewriting.models.loading import load_generator
from rewriting.rewrite import rewrite

from conftest import copy_paste_spec_dict, tiny_generator
from nvlabs_fixtures import Persistent, nvlabs_generator_tree, persistence_module, write_network_pickle


def images(generator, count=3, seed=0, truncation=None):
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return generator(z, truncation=truncation)


@pytest.mark.parametrize("size,channels,n_mlp", [(16, {4: 16, 8: 12, 16: 8}, 2), (32, None, 3)])
def test_pickle_renders_the_generator_it_was_written_from(tmp_path, size, channels, n_mlp):
    source = tiny_generator(size=size, n_mlp=n_mlp, channels=channels)
    path = tmp_path / "network-snapshot.pkl"
    write_network_pickle(path, nvlabs_generator_tree(source))
    loaded = load_generator(path)
    assert loaded.size == size and loaded.channels == source.channels
    for truncation in (None, 0.5):
        assert torch.allclose(images(loaded, truncation=truncation), images(source, truncation=truncation),
                              atol=1e-5)


def test_conv_clamp_is_carried_over(tmp_path):
    source = tiny_generator(size=16)
    path = tmp_path / "clamped.pkl"
    write_network_pickle(path, nvlabs_generator_tree(source, conv_clamp=0.3))
    loaded = load_generator(path)
    unclamped = images(source)
    source.set_conv_clamp(0.3)
    assert torch.allclose(images(loaded), images(source), atol=1e-6)
    assert (images(loaded) - unclamped).abs().max() > 1e-3  # the clamp acts at this scale


def test_loading_never_runs_the_pickles_code(tmp_path):
    marker = tmp_path / "code_ran.txt"

    class WritesMarker:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    tree = nvlabs_generator_tree(tiny_generator(size=16))
    tree.meta["state"]["_init_kwargs"]["evil"] = WritesMarker()
    path = tmp_path / "evil.pkl"
    write_network_pickle(path, tree)
    with pytest.raises(CheckpointError, match=r"GLOBAL [\w.]*open is not allowed"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("change,message", [
    (lambda tree: tree.meta["state"]["_init_kwargs"].update(c_dim=10), "conditional"),
    (lambda tree: tree.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"].pop("b4"), "StyleGAN3"),
])
def test_unrepresentable_variants_are_refused_by_name(tmp_path, change, message):
    tree = nvlabs_generator_tree(tiny_generator(size=16))
    change(tree)
    path = tmp_path / "variant.pkl"
    write_network_pickle(path, tree)
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_resnet_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.pkl"
    write_network_pickle(path, nvlabs_generator_tree(tiny_generator(size=16), architecture="resnet"))
    with pytest.raises(CheckpointError, match="resnet"):
        load_generator(path)


def test_an_edit_of_a_pickle_equals_the_edit_of_its_source(tmp_path):
    source = tiny_generator(size=32)
    path = tmp_path / "network-snapshot.pkl"
    write_network_pickle(path, nvlabs_generator_tree(source))
    loaded = load_generator(path)
    spec = copy_paste_spec_dict(layer=6)
    from rewriting.edits.loading import load_edit
    from rewriting.methods.rank_one import ClosedForm
    results = [rewrite(g, load_edit(spec), ClosedForm(), statistics_samples=64, progress=False,
                       statistics_cache=str(tmp_path / "cache")) for g in (source, loaded)]
    assert torch.allclose(results[0].delta, results[1].delta, atol=1e-5)
    assert torch.allclose(images(loaded), images(source), atol=1e-5)


def test_exported_pickle_renders_the_edit_and_keeps_every_other_byte(tmp_path):
    from rewriting.deltas import add_delta, save_delta
    from rewriting.export import export

    source = tiny_generator(size=16)
    base = tmp_path / "network-snapshot.pkl"
    write_network_pickle(base, nvlabs_generator_tree(source))
    generator = load_generator(base)
    name = generator.layer_weight_name(4)
    delta = {name: 0.1 * torch.randn_like(dict(generator.named_parameters())[name])}
    delta_path = save_delta(tmp_path / "delta.safetensors", delta, {"base_sha256": generator.checkpoint_sha256})
    written = export(delta_path, base, tmp_path / "edited.pkl")
    assert written.suffix == ".pkl"
    add_delta(generator, delta)
    reloaded = load_generator(written)
    assert torch.allclose(images(reloaded), images(generator), atol=1e-6)
    assert not torch.allclose(images(reloaded), images(source), atol=1e-3)
    before, after = base.read_bytes(), written.read_bytes()
    assert len(before) == len(after)
    changed = sum(a != b for a, b in zip(before, after))
    assert 0 < changed <= delta[name].numel() * 4  # only the edited tensor's float32 bytes


def test_export_refuses_a_delta_of_another_generator(tmp_path):
    from rewriting.deltas import save_delta
    from rewriting.export import export

    base = tmp_path / "network-snapshot.pkl"
    write_network_pickle(base, nvlabs_generator_tree(tiny_generator(size=16)))
    other = tiny_generator(size=32)
    delta_path = save_delta(tmp_path / "delta.safetensors", {"convs.4.conv.weight": torch.zeros_like(
        other.convs[4].conv.weight)}, {"base_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="was made for checkpoint"):
        export(delta_path, base, tmp_path / "edited.pkl")
    assert not (tmp_path / "edited.pkl").exists()
    with pytest.raises(CheckpointError, match="another"):  # and without the hash check, by its shape
        export(delta_path, base, tmp_path / "edited.pkl", check_base=False)
    assert not (tmp_path / "edited.pkl").exists()


def test_run_py_edits_a_pickle_and_writes_a_pickle(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import copy_paste_spec_dict
    import json

    root = Path(__file__).resolve().parent.parent
    base = tmp_path / "network-snapshot.pkl"
    write_network_pickle(base, nvlabs_generator_tree(tiny_generator(size=32)))
    request = tmp_path / "request.json"
    request.write_text(json.dumps(copy_paste_spec_dict(layer=6)))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(root / "run.py"), f"generator.checkpoint={base}", f"edit={request}",
                           "layer=6", "logger=none", "metrics=none", "method=closed_form", "statistics.num_samples=64",
                           f"statistics.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}", "progress=false"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from rewriting.deltas import apply_deltas
    edited = load_generator(out / "edited_generator.pkl")
    expected = apply_deltas(load_generator(base), [out / "delta.safetensors"])
    assert torch.allclose(images(edited), images(expected), atol=1e-6)
