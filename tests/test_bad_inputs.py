"""Bad inputs a user can give: each fails with a message naming it, and a run writes nothing."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rewriting import load_edit, load_generator, rewrite
from rewriting.cli import report_error
from rewriting.edits.masks import encode_mask
from rewriting.edits.loading import validate_image_ids
from rewriting.errors import CheckpointError, EditSpecError, LayerError, MaskError, OptimizationError
from rewriting.methods.rank_one import ConstrainedRewrite
from rewriting.pipeline import run

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
OUTPUTS = ("delta.safetensors", "edit.json", "edited_generator.pt", "before_after.png", "metrics.json")
QUIET = {"enable_progress_bar": False}


def run_config(checkpoint: Path, edit_file: Path, output_dir: Path, *overrides: str):
    """A composed run config: tiny generator, the edit file, no logger or metrics, a few steps."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[
            f"generator.checkpoint={checkpoint}", "edit=from_file", f"edit.file={edit_file}", "layer=4",
            "logger=none", "metrics=none", "trainer=cpu", "progress=false", "statistics.num_samples=12",
            f"statistics.cache_dir={output_dir.parent / 'statistics'}", "method.steps=10",
            f"output_dir={output_dir}", *overrides])


def assert_nothing_written(output_dir: Path) -> None:
    written = sorted(p.name for p in output_dir.rglob("*")) if output_dir.exists() else []
    assert not [name for name in written if name in OUTPUTS or name.endswith(".part")], written


# ----- edit specs ---------------------------------------------------------------------------------------
def test_malformed_edit_json_names_the_position(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "name": "x",\n "request": }')
    with pytest.raises(EditSpecError, match=r"'.*bad\.json' is not valid JSON: .* at line 2 column"):
        load_edit(bad)
    output_dir = tmp_path / "run"
    with pytest.raises(EditSpecError, match="is not valid JSON"):
        run(run_config(tiny_checkpoint, bad, output_dir))
    assert_nothing_written(output_dir)


def test_unknown_version_is_refused(make_spec_dict):
    data = make_spec_dict()
    data["version"] = 99
    with pytest.raises(EditSpecError, match=r"version 99 is not supported .* supported version\(s\): 1"):
        load_edit(data)


def test_mask_that_marks_nothing_is_refused_naming_its_region(make_spec_dict):
    data = make_spec_dict()
    data["request"]["paste"]["mask"] = encode_mask(torch.zeros(64, 64))
    with pytest.raises(MaskError, match=r"request\.paste .*marks nothing"):
        load_edit(data)


def test_mask_that_is_not_an_image_is_refused(make_spec_dict):
    data = make_spec_dict()
    data["request"]["context"][1]["mask"] = "data:image/png;base64,aGVsbG8="
    with pytest.raises(MaskError, match=r"request\.context\[1\].*not a readable image"):
        load_edit(data)


def test_image_id_out_of_range(make_spec_dict, make_generator, monkeypatch):
    spec = load_edit(make_spec_dict(paste_id=11))
    validate_image_ids(spec, 11)
    with pytest.raises(EditSpecError, match=r"request\.paste uses image id 11, above the largest id 10"):
        validate_image_ids(spec, 10)
    # rewrite checks the ids before it draws any latent.
    monkeypatch.setattr(importlib.import_module("rewriting.rewrite"), "MAX_IMAGE_ID", 10)
    with pytest.raises(EditSpecError, match="image id 11"):
        rewrite(make_generator(), spec, layer=4, progress=False)


# ----- layers -----------------------------------------------------------------------------------------
def test_layer_the_generator_lacks_via_rewrite(make_generator, make_spec_dict):
    generator = make_generator(size=32)
    with pytest.raises(LayerError, match=r"layer=9 does not exist in this 32-px StyleGAN2.*2\.\.8"):
        rewrite(generator, load_edit(make_spec_dict()), layer=9, progress=False)


def test_layer_the_generator_lacks_via_a_run(tmp_path, tiny_checkpoint, edit_spec_file):
    output_dir = tmp_path / "run"
    with pytest.raises(LayerError, match=r"layer=12 does not exist.*2\.\.8"):
        run(run_config(tiny_checkpoint, edit_spec_file(), output_dir, "layer=12"))
    assert_nothing_written(output_dir)


# ----- checkpoints ------------------------------------------------------------------------------------
def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"absent\.pt' does not exist: pass generator\.checkpoint=PATH"):
        load_generator(tmp_path / "absent.pt")


def test_checkpoint_that_does_not_fit(tmp_path, tiny_checkpoint, statistics_cache):
    # A named or downloaded generator must have the size its config promises (statistics_cache sets
    # $REWRITING_CACHE, where the download lands).
    with pytest.raises(CheckpointError, match="holds a 32-px generator but the config says size 64"):
        load_generator(url=tiny_checkpoint.as_uri(), size=64)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read by torch.load"):
        load_generator(tmp_path / "text.pt")
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    del checkpoint["g_ema"]["input.input"]
    torch.save(checkpoint, tmp_path / "no_input.pt")
    with pytest.raises(CheckpointError, match="has no key 'input.input'"):
        load_generator(tmp_path / "no_input.pt")
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    checkpoint["latent_avg"] = torch.zeros(7)
    torch.save(checkpoint, tmp_path / "bad_latent_avg.pt")
    with pytest.raises(CheckpointError, match="latent_avg has 7 elements, expected 32"):
        load_generator(tmp_path / "bad_latent_avg.pt")


def test_run_with_a_checkpoint_that_does_not_exist_writes_nothing(tmp_path, edit_spec_file, capsys):
    output_dir = tmp_path / "run"
    with pytest.raises(Exception) as raised:
        run(run_config(tmp_path / "absent.pt", edit_spec_file(), output_dir))
    assert_nothing_written(output_dir)
    # Hydra's instantiate wraps the CheckpointError; the command line still reports it as one line.
    with pytest.raises(SystemExit) as exit_info:
        report_error(raised.value)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: checkpoint ") and "does not exist" in message
    assert message.count("\n") == 1 and "Traceback" not in message


def test_errors_that_are_not_the_users_fault_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        report_error(ZeroDivisionError("a bug"))


# ----- divergence -------------------------------------------------------------------------------------
def test_infinite_learning_rate_raises_optimization_error(make_generator, make_spec_dict):
    generator = make_generator()
    before = generator.convs[1].conv.weight.clone()
    with pytest.raises(OptimizationError, match="diverged.*lower method.lr"):
        rewrite(generator, load_edit(make_spec_dict()), ConstrainedRewrite(steps=5, lr=float("inf")), layer=4,
                statistics_samples=8, progress=False, trainer_options=QUIET)
    assert torch.equal(generator.convs[1].conv.weight, before)  # the failed edit left the generator alone


def test_run_with_infinite_learning_rate_writes_nothing(tmp_path, tiny_checkpoint, edit_spec_file):
    output_dir = tmp_path / "run"
    with pytest.raises(OptimizationError, match="diverged"):
        run(run_config(tiny_checkpoint, edit_spec_file(), output_dir, "method.lr=inf"))
    assert_nothing_written(output_dir)


def test_run_with_nan_target_writes_nothing(tmp_path, tiny_checkpoint, edit_spec_file, monkeypatch):
    rewrite_steps = importlib.import_module("rewriting.rewrite")  # `rewriting.rewrite` is also the function
    real_target = rewrite_steps.copy_paste_target

    def nan_target(*args, **kwargs):
        target = real_target(*args, **kwargs)
        target.target_values[:] = float("nan")
        return target
    monkeypatch.setattr(rewrite_steps, "copy_paste_target", nan_target)
    output_dir = tmp_path / "run"
    with pytest.raises(OptimizationError):
        run(run_config(tiny_checkpoint, edit_spec_file(), output_dir, "method.init=zero"))
    assert_nothing_written(output_dir)
