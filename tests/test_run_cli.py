"""`python run.py` end to end, as a user runs it: outputs complete and valid, multirun, clean errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

from rewriting import apply_deltas, load_delta, load_edit, load_generator
from rewriting.edits.hashing import spec_hash
from rewriting.models.download import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

PROJECT = Path(__file__).resolve().parent.parent
FAST = ["metrics=none", "statistics.num_samples=20", "method.steps=30", "trainer=cpu", "progress=false"]


def run_cli(arguments: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run run.py in a fresh process with a private HOME (no W&B login) and caches."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environment = {**os.environ, "HOME": str(home), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                   "REWRITING_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
                   "WANDB_DIR": str(tmp_path / "wandb_dir")}
    environment.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, "run.py", *arguments], cwd=PROJECT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def assert_succeeded(process: subprocess.CompletedProcess) -> None:
    assert process.returncode == 0, f"run.py failed:\n{process.stdout[-3000:]}\n{process.stderr[-5000:]}"


def test_run_writes_every_output_valid(tmp_path, tiny_checkpoint, edit_spec_file):
    edit_file = edit_spec_file()
    run_dir = tmp_path / "run"
    process = run_cli([f"generator.checkpoint={tiny_checkpoint}", f"edit={edit_file}", "layer=4", "logger=wandb",
                       f"hydra.run.dir={run_dir}", *FAST], tmp_path)
    assert_succeeded(process)
    checkpoint_sha256 = sha256_file(tiny_checkpoint)

    tensors, metadata = load_delta(run_dir / "delta.safetensors")
    assert list(tensors) == ["convs.1.conv.weight"]
    assert metadata["base_sha256"] == checkpoint_sha256
    assert metadata["layer"] == 4 and metadata["rank"] == 1
    assert metadata["package_version"]

    saved = load_edit(run_dir / "edit.json")
    assert saved.layer == 4
    assert saved.generator["sha256"] == checkpoint_sha256
    assert saved.request.to_dict() == load_edit(edit_file).request.to_dict()
    assert metadata["edit_spec_sha256"] == spec_hash(saved)

    edited = load_generator(run_dir / "edited_generator.pt")
    base_plus_delta = apply_deltas(load_generator(tiny_checkpoint), [run_dir / "delta.safetensors"])
    z = torch.randn(3, edited.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        edited_images = edited(z)
        assert torch.equal(edited_images, base_plus_delta(z))
        assert not torch.equal(edited_images, load_generator(tiny_checkpoint)(z))

    with Image.open(run_dir / "before_after.png") as picture:
        picture.load()
        tile = 32 * (128 // 32)  # images are scaled up to about 128 px, with 2-px gaps
        assert picture.height == 2 * tile + 2  # two rows: unedited, edited
        assert (picture.width + 2) % (tile + 2) == 0
        rows = torch.from_numpy(numpy.asarray(picture.convert("RGB"))).float()
        assert (rows[:tile] - rows[tile + 2:]).abs().max() > 0  # the edit shows

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("final_loss", "edit_seconds", "second_moment_seconds", "heldout_relative_change"):
        assert isinstance(metrics[name], (int, float)) and math.isfinite(metrics[name]), name
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert metrics["layer"] == 4

    assert list((run_dir / "wandb").glob("offline-run-*")), "logger=wandb did not log offline under the run dir"
    from wandb_records import offline_run
    recorded = offline_run(run_dir)  # run.py's W&B process had finished the run before run.py exited
    assert recorded["exit_code"] == 0 and recorded["config"]["layer"] == 4
    assert [row["final_loss"] for row in recorded["history"] if "final_loss" in row] == [metrics["final_loss"]]
    assert not list(run_dir.rglob("*.part"))


def original_format_request(path: Path, make_mask) -> Path:
    """A request as the original app saved it: key/object/paste pairs of [image_id, PNG data URL]."""
    from rewriting.edits.masks import encode_mask
    path.write_text(json.dumps({
        "key": [[0, encode_mask(make_mask(64, 16, 16, 40, 40))], [1, encode_mask(make_mask(64, 20, 10, 44, 30))]],
        "object": [3, encode_mask(make_mask(64, 8, 8, 24, 28))],
        "paste": [4, encode_mask(make_mask(64, 32, 30, 52, 50))],
        "query": [4, encode_mask(make_mask(64, 32, 30, 52, 50))],
    }))
    return path


def test_multirun_over_layers_with_an_original_format_request(tmp_path, tiny_checkpoint, make_mask):
    request = original_format_request(tmp_path / "hat.json", make_mask)
    sweep_dir = tmp_path / "sweep"
    process = run_cli(["-m", "layer=3,4", f"generator.checkpoint={tiny_checkpoint}", f"edit={request}",
                       "logger=none", f"hydra.sweep.dir={sweep_dir}", *FAST], tmp_path)
    assert_succeeded(process)
    layers = set()
    for job in ("0", "1"):
        _, metadata = load_delta(sweep_dir / job / "delta.safetensors")
        layers.add(metadata["layer"])
        saved = load_edit(sweep_dir / job / "edit.json")
        assert saved.name == "hat" and saved.layer == metadata["layer"]
        assert [r.image_id for r in saved.request.context] == [0, 1]
    assert layers == {3, 4}


def test_bad_layer_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_checkpoint, edit_spec_file):
    run_dir = tmp_path / "run"
    process = run_cli([f"generator.checkpoint={tiny_checkpoint}", f"edit={edit_spec_file()}", "layer=99",
                       "logger=none", f"hydra.run.dir={run_dir}", *FAST], tmp_path)
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "layer=99 does not exist" in errors[0] and "2..8" in errors[0]
    assert not (run_dir / "delta.safetensors").exists()
    assert not list(run_dir.rglob("*.part"))
