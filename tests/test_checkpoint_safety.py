"""Loading a checkpoint never runs code from it: crafted .pt and .pkl files are refused, nothing executes."""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewriting.errors import CheckpointError
from rewriting.models.checkpoints import read_checkpoint, save_stylegan2
from rewriting.models.loading import load_generator

from conftest import tiny_generator

ROOT = Path(__file__).resolve().parent.parent


class WritesMarker:
    """Unpickling this would call `open(marker, "w")`: a stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code_ran.txt"
    yield path
    assert not path.exists(), "loading the crafted checkpoint ran its code"


def test_crafted_pt_is_refused_without_running_code(tmp_path, marker):
    evil = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "latent_avg": WritesMarker(marker)}, evil)
    with pytest.raises(CheckpointError, match="could run arbitrary code") as error:
        read_checkpoint(evil)
    assert str(evil) in str(error.value)


def test_crafted_pkl_is_refused_without_running_code(tmp_path, marker):
    evil = tmp_path / "network-snapshot.pkl"
    with open(evil, "wb") as file:
        pickle.dump({"G_ema": WritesMarker(marker)}, file, protocol=4)
    with pytest.raises(CheckpointError, match="not loaded"):
        load_generator(evil)


def test_nvlabs_style_pickle_is_named_as_such(tmp_path):
    # The opcodes NVlabs' persistence writes first: a call of torch_utils.persistence's reconstruct function.
    stream = (b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
              b"}X\n\x00\x00\x00module_srcX\t\x00\x00\x00import oss\x85R.")
    path = tmp_path / "stylegan2-ada.pkl"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError, match="NVlabs"):
        load_generator(path)


def test_rosinality_training_checkpoint_with_namespace_args_loads(tmp_path):
    generator = tiny_generator(size=16)
    path = save_stylegan2(generator, tmp_path / "plain.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"] = argparse.Namespace(size=16, lr_mlp=0.01, channel_multiplier=2)  # as train.py saves it
    checkpoint["g_optim"] = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))]).state_dict()
    checkpoint["ada_aug_p"] = 0.0
    torch.save(checkpoint, tmp_path / "train.pt")
    loaded = load_generator(tmp_path / "train.pt")
    z = torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(z), generator(z))


def test_run_py_refuses_evil_checkpoint_with_one_message(tmp_path, marker):
    evil = tmp_path / "evil.pt"
    torch.save({"g_ema": WritesMarker(marker)}, evil)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), f"generator.checkpoint={evil}", "logger=none",
                           "metrics=none", f"hydra.run.dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "could run arbitrary code" in done.stderr
    assert not (tmp_path / "out" / "delta.safetensors").exists()
