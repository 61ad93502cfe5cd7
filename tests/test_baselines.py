"""The paper's baselines: fine-tuning all generator weights, and GAN-dissection unit zeroing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import rewriting
from rewriting.deltas import apply_deltas, load_delta
from rewriting.edits.spec import EditSpec
from rewriting.errors import EditSpecError, WeightsUnavailableError
from rewriting.methods.finetune_all import FinetuneAll, image_paste_target
from rewriting.methods.perceptual import SegmenterPerceptual, perceptual_distance
from rewriting.methods.unit_zeroing import UnitZeroing
from rewriting.metrics.weights import require_weights
from rewriting.pipeline import sweep_objective
from rewriting.rewrite import rewrite
from rewriting.statistics import compute_second_moment
from rewriting.toytown.segmenter import ToytownSegmenter

from conftest import copy_paste_spec_dict, tiny_generator

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
LAYER = 5  # 16x16 in the tiny 32-px generator


def tiny_spec(erase: bool = False, drank: int | None = None) -> EditSpec:
    data = copy_paste_spec_dict(layer=LAYER, mask_size=32,
                                boxes={"context": (8, 8, 20, 20), "copy": (4, 4, 12, 14), "paste": (16, 15, 26, 25)})
    if erase:
        data["request"].update(copy=None, paste=None, erase=True, drank=drank)
    return EditSpec.from_dict(data)


@pytest.fixture(scope="module")
def tiny():
    return tiny_generator()


@pytest.fixture(scope="module")
def tiny_statistics(tiny):
    return compute_second_moment(tiny, LAYER, num_samples=32, batch_size=16, progress=False)


CPU = {"accelerator": "cpu"}


def test_image_paste_target_puts_the_copy_box_at_the_paste_centre():
    copy_image = torch.arange(3 * 16 * 16, dtype=torch.float32).view(1, 3, 16, 16)
    paste_image = -torch.ones(1, 3, 16, 16)
    copy_mask = torch.zeros(16, 16)
    copy_mask[2:6, 3:9] = 1  # a 4x6 box
    paste_mask = torch.zeros(16, 16)
    paste_mask[9:13, 8:12] = 1  # centre (10.5, 9.5)
    target, weights = image_paste_target(copy_image, copy_mask, paste_image, paste_mask)
    torch.testing.assert_close(target[:, :, 9:13, 7:13], copy_image[:, :, 2:6, 3:9])
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[9:13, 7:13] = False
    assert (target[..., outside] == -1).all()
    assert weights.sum() == 4 * 6 and weights[0, 0, 9:13, 7:13].all()


def test_bottom_anchored_paste_rises_from_the_paste_region_base():
    # A tall copy (a spire) pasted on a low region (a dome): anchored at the bottom it stands on the
    # dome's base and rises above it into the sky; centred, it would hang down over the wall below.
    copy_image = torch.arange(3 * 16 * 16, dtype=torch.float32).view(1, 3, 16, 16)
    paste_image = -torch.ones(1, 3, 16, 16)
    copy_mask = torch.zeros(16, 16)
    copy_mask[1:9, 3:7] = 1  # 8 rows tall, 4 wide
    paste_mask = torch.zeros(16, 16)
    paste_mask[8:11, 6:10] = 1  # 3 rows: bottom edge at row 11, centre column 7.5
    target, weights = image_paste_target(copy_image, copy_mask, paste_image, paste_mask, anchor="bottom")
    torch.testing.assert_close(target[:, :, 3:11, 6:10], copy_image[:, :, 1:9, 3:7])
    assert (target[:, :, 11:] == -1).all()  # nothing below the paste region's base moved
    assert weights.sum() == 8 * 4 and weights[0, 0, 3:11, 6:10].all()
    centred, _ = image_paste_target(copy_image, copy_mask, paste_image, paste_mask)
    assert (centred[:, :, 11:] != -1).any()  # the centred box reaches below the base


def test_finetune_all_lowers_its_loss_and_changes_weights_across_the_generator(tiny, tiny_statistics):
    generator = tiny_generator()
    result = rewrite(generator, tiny_spec(), FinetuneAll(steps=15, lr=0.01, perceptual="none"), LAYER,
                     second_moment=tiny_statistics, trainer_options=CPU, progress=False)
    assert result.fit.final_loss < 0.8 * result.fit.initial_loss
    changed = result.delta_tensors()
    assert len(changed) > 10
    assert {"style.1.weight", "convs.0.conv.weight", "to_rgbs.1.conv.weight", result.weight_name} <= set(changed)
    state = dict(tiny.named_parameters())
    for name, delta in changed.items():
        assert delta.shape == state[name].shape
    # the generator now holds the edited weights; the delta takes the original there
    edited = dict(generator.named_parameters())
    torch.testing.assert_close(edited["style.1.weight"], state["style.1.weight"] + changed["style.1.weight"])


def test_finetune_all_erase_renders_the_units_zeroed_target(tiny_statistics):
    generator = tiny_generator()
    result = rewrite(generator, tiny_spec(erase=True, drank=3), FinetuneAll(steps=10, lr=0.01, perceptual="none"),
                     LAYER, second_moment=tiny_statistics, trainer_options=CPU, progress=False)
    assert len(result.erased_units) == 3
    assert result.fit.initial_loss > 0 and result.fit.final_loss < result.fit.initial_loss


def test_finetune_all_erase_can_fill_the_region_from_its_surroundings(tiny_statistics):
    import dataclasses
    spec = tiny_spec(erase=True, drank=3)
    spec.request = dataclasses.replace(spec.request, drank=None, erase_fill="surroundings")
    result = rewrite(tiny_generator(), spec, FinetuneAll(steps=10, lr=0.01, perceptual="none"), LAYER,
                     second_moment=tiny_statistics, trainer_options=CPU, progress=False)
    assert result.erased_units == []
    assert result.fit.initial_loss > 0 and result.fit.final_loss < result.fit.initial_loss


def test_unit_zeroing_zeroes_exactly_drank_input_channels(tiny, tiny_statistics):
    generator = tiny_generator()
    result = rewrite(generator, tiny_spec(erase=True, drank=3), UnitZeroing(), LAYER, second_moment=tiny_statistics,
                     progress=False)
    weight = generator.layer(LAYER).weight
    zero_columns = [i for i in range(weight.shape[1]) if (weight[:, i] == 0).all()]
    assert zero_columns == result.erased_units and len(zero_columns) == 3
    original = tiny.layer(LAYER).weight
    kept = [i for i in range(weight.shape[1]) if i not in zero_columns]
    assert torch.equal(weight[:, kept], original[:, kept])
    assert set(result.delta_tensors()) == {result.weight_name}


def test_unit_zeroing_method_drank_overrides_the_request(tiny_statistics):
    generator = tiny_generator()
    result = rewrite(generator, tiny_spec(erase=True, drank=3), UnitZeroing(drank=5), LAYER,
                     second_moment=tiny_statistics, progress=False)
    assert len(result.erased_units) == 5


def test_unit_zeroing_of_a_copy_paste_request_without_drank_names_the_fix(tiny_statistics):
    with pytest.raises(EditSpecError, match="method.drank"):
        rewrite(tiny_generator(), tiny_spec(), UnitZeroing(), LAYER, second_moment=tiny_statistics, progress=False)


def test_perceptual_auto_uses_lpips_vgg_else_the_segmenter_else_none():
    targets = torch.zeros(1, 3, 32, 32)
    try:
        require_weights("vgg")
        pytest.skip("LPIPS-VGG weights are present: auto picks them")
    except WeightsUnavailableError:
        pass
    segmenter = ToytownSegmenter(widths=(4, 4, 4)).eval()
    module, name, warnings = perceptual_distance("auto", targets, segmenter)
    assert name == "segmenter_features" and isinstance(module, SegmenterPerceptual) and warnings
    module, name, warnings = perceptual_distance("auto", targets, None)
    assert module is None and name == "none" and len(warnings) == 2
    with pytest.raises(WeightsUnavailableError):
        perceptual_distance("lpips_vgg", targets, segmenter)


def test_segmenter_perceptual_is_zero_at_the_target_and_has_gradients():
    torch.manual_seed(0)
    segmenter = ToytownSegmenter(widths=(4, 4, 4)).eval().requires_grad_(False)
    targets = torch.rand(2, 3, 32, 32) * 2 - 1
    distance = SegmenterPerceptual(segmenter, targets)
    assert distance(targets).abs().max() < 1e-6
    images = (targets + 0.3 * torch.randn_like(targets)).requires_grad_(True)
    value = distance(images)
    assert value.shape == (2, 1, 32, 32) and value.mean() > 0
    value.mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    distance.train()
    assert not segmenter.training  # BatchNorm statistics must not move during fine-tuning


def test_sweep_objective_is_success_minus_weighted_undesired_change():
    assert sweep_objective({"edit_success": 0.5, "undesired_change_l1": 0.02}, 10.0)["objective"] == \
        pytest.approx(0.3)
    assert sweep_objective({"erase_success": 0.4, "undesired_change_l1": 0.01}, 5.0)["objective"] == \
        pytest.approx(0.35)
    assert sweep_objective({"undesired_change_l1": 0.01}, 10.0) == {}


def run_pipeline(checkpoint: Path, spec_path: Path, out: Path, method: str, *overrides: str) -> dict:
    from rewriting.pipeline import run
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"generator.checkpoint={checkpoint}", "edit=from_file", f"edit.file={spec_path}", f"layer={LAYER}",
            f"method={method}", "metrics=none", "logger=none", "trainer=cpu", "progress=false", "samples.count=2",
            f"output_dir={out}", "statistics.num_samples=16", f"statistics.cache_dir={out.parent / 'statistics'}",
            *overrides])
    return run(cfg)


@pytest.mark.parametrize("method, overrides", [
    ("finetune_all", ["method.steps=3", "method.lr=0.01"]),
    ("unit_zeroing", ["method.drank=4"]),
])
def test_baseline_runs_through_the_pipeline_and_its_delta_reloads_to_the_same_images(
        tiny_checkpoint, tmp_path, method, overrides):
    spec_path = tmp_path / "edit.json"
    spec_path.write_text(tiny_spec().to_json())
    out = tmp_path / method
    metrics = run_pipeline(tiny_checkpoint, spec_path, out, method, *overrides)
    for name in ("delta.safetensors", "edit.json", "edited_generator.pt", "before_after.png", "metrics.json"):
        assert (out / name).is_file(), name
    tensors, metadata = load_delta(out / "delta.safetensors")
    assert metadata["method"] == method and metrics["changed_tensors"] == len(tensors)
    if method == "finetune_all":
        assert len(tensors) > 10 and json.loads((out / "metrics.json").read_text())["perceptual_loss"] == "none"
    else:
        assert len(tensors) == 1 and len(metrics["erased_units"]) == 4
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    base = rewriting.load_generator(tiny_checkpoint)
    with torch.no_grad():
        before = base(z)
        after = apply_deltas(base, [out / "delta.safetensors"])(z)
        saved = rewriting.load_generator(out / "edited_generator.pt")(z)
    torch.testing.assert_close(after, saved, atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-4
