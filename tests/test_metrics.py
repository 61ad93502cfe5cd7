"""Edit metrics: success shares, masked distances, FID, missing-weights handling, evaluate_edit."""

import copy
import json
import math

import lpips
import pytest
import torch
import torch.nn as nn

from rewriting.errors import WeightsUnavailableError
from rewriting.metrics import (
    edit_success,
    edit_success_per_sample,
    erase_success,
    erase_success_per_sample,
    evaluate_edit,
    feature_fid,
    inception_fid,
    label_presence,
    load_lpips,
    masked_l1,
    masked_lpips,
    require_weights,
    source_region,
)
from rewriting.models.stylegan2 import StyleGAN2Generator
from rewriting.toytown.labels import LABEL_INDEX
from rewriting.toytown.renderer import render_seeds

SPIRE, TREE, SKY, BUILDING = (LABEL_INDEX[name] for name in ("spire", "tree", "sky", "building"))


class ThresholdSegmenter:
    """Deterministic stand-in segmenter: label 1 where the red channel is positive, else 0."""

    label_names = ["dark", "bright"]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return (images[:, 0] > 0).long()


def random_lpips(spatial: bool = True) -> lpips.LPIPS:
    """LPIPS with a random AlexNet trunk: only for testing the plumbing, never a real measurement."""
    torch.manual_seed(0)
    return lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, spatial=spatial, verbose=False).eval()


def tiny_generator() -> StyleGAN2Generator:
    torch.manual_seed(3)
    return StyleGAN2Generator(size=16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()


def perturbed_copy(generator: StyleGAN2Generator, layer: int = 4, scale: float = 0.5) -> StyleGAN2Generator:
    edited = copy.deepcopy(generator)
    with torch.no_grad():
        weight = edited.layer_editable_weight(layer)
        weight.add_(scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    return edited


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """Point torch.hub at an empty cache, as on a fresh offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "hub" / "checkpoints"


# ----- success ----------------------------------------------------------------------------


def test_unchanged_labels_give_zero_edit_success_and_zero_erase_success():
    _, labels = render_seeds(range(6), size=32)
    assert edit_success(labels, labels.clone(), [SPIRE], [TREE]) == 0.0
    assert erase_success(labels, labels.clone(), [LABEL_INDEX["building"]]) == 0.0


def test_edit_success_is_the_share_of_source_pixels_turned_target():
    before = torch.full((2, 4, 4), SKY)
    before[0, 0, :3] = SPIRE  # 3 source pixels in sample 0
    before[1, 2, :] = SPIRE  # 4 source pixels in sample 1
    after = before.clone()
    after[0, 0, 0] = TREE  # 1 of sample 0's source pixels becomes tree
    after[1, 2, :2] = TREE  # 2 of sample 1's
    after[1, 2, 2] = BUILDING  # changed, but not to the target
    after[1, 3, 3] = TREE  # a new tree outside the source pixels does not count
    assert edit_success(before, after, [SPIRE], [TREE]) == pytest.approx(3 / 7)
    assert edit_success(before, after, [SPIRE], [TREE, BUILDING]) == pytest.approx(4 / 7)
    per_sample = edit_success_per_sample(before, after, [SPIRE], [TREE])
    assert per_sample.tolist() == pytest.approx([1 / 3, 2 / 4])


def test_edit_success_is_nan_without_source_pixels():
    before = torch.full((2, 4, 4), SKY)
    assert math.isnan(edit_success(before, before, [SPIRE], [TREE]))
    assert torch.isnan(edit_success_per_sample(before, before, [SPIRE], [TREE])).all()


def test_rendered_spires_replaced_by_trees_is_full_success():
    _, labels = render_seeds(range(12), size=32)
    assert (labels == SPIRE).any(), "these seeds should draw at least one spire"
    after = torch.where(labels == SPIRE, torch.full_like(labels, TREE), labels)
    assert edit_success(labels, after, [SPIRE], [TREE]) == 1.0


def test_erase_success_counts_pixels_no_longer_any_erased_class():
    window, door = LABEL_INDEX["window"], LABEL_INDEX["door"]
    before = torch.full((1, 4, 4), BUILDING)
    before[0, 0, :] = window  # 4 window pixels
    before[0, 1, :2] = door  # 2 door pixels
    after = before.clone()
    after[0, 0, :2] = BUILDING  # 2 windows erased
    after[0, 0, 2] = door  # a window that turns into a door is not erased
    after[0, 1, 0] = BUILDING  # 1 door erased
    assert erase_success(before, after, [window]) == pytest.approx(3 / 4)
    assert erase_success(before, after, [window, door]) == pytest.approx(3 / 6)
    assert math.isnan(erase_success_per_sample(before, after, [LABEL_INDEX["watermark"]])[0])


def test_label_presence_is_the_share_of_samples_showing_each_part():
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[0, :3, :3] = 2  # 9 pixels: shown
    labels[1, 0, :4] = 2  # 4 pixels: not more than min_pixels=4
    labels[2, :, :] = 1
    presence = label_presence(labels, ["a", "b", "c"], min_pixels=4)
    assert presence == pytest.approx({"a": 3 / 4, "b": 1 / 4, "c": 1 / 4})


# ----- distances --------------------------------------------------------------------------


def test_masked_l1_is_the_mean_abs_difference_over_kept_pixels_on_the_unit_scale():
    before = torch.zeros(1, 3, 4, 4)
    after = before.clone()
    after[0, 0, 1, 2] = 1.0  # one channel moves by 1 in [-1, 1], i.e. 0.5 on the [0, 1] scale
    after[0, :, 3, 3] = -1.0  # all channels move by 0.5 on the [0, 1] scale, at a pixel we drop
    keep = torch.ones(1, 1, 4, 4)
    keep[0, 0, 3, 3] = 0
    assert masked_l1(before, after, keep) == pytest.approx(0.5 / (15 * 3))
    assert masked_l1(before, after, torch.ones(1, 1, 4, 4)) == pytest.approx((0.5 + 3 * 0.5) / (16 * 3))
    assert masked_l1(before, before.clone(), keep) == 0.0
    assert math.isnan(masked_l1(before, after, torch.zeros(1, 1, 4, 4)))


def test_source_region_is_the_source_pixels_grown_by_dilate():
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, 2, 2] = SPIRE
    labels[0, 9, 9] = TREE
    assert source_region(labels, [SPIRE], dilate=0).sum() == 1
    region = source_region(labels, [SPIRE], dilate=1)
    assert region.shape == (1, 1, 10, 10)
    assert region[0, 0, 1:4, 1:4].eq(1).all() and region.sum() == 9
    # A 5x5 square round the spire, and the part of the tree's square inside the image.
    assert source_region(labels, [SPIRE, TREE], dilate=2).sum() == 25 + 9


def test_lpips_plumbing_with_random_backbone_is_zero_for_identical_and_positive_for_different():
    model = random_lpips()
    torch.manual_seed(1)
    before = torch.rand(2, 3, 64, 64) * 2 - 1
    after = before.clone()
    after[:, :, 40:, 40:] = -before[:, :, 40:, 40:]
    keep = torch.ones(2, 1, 64, 64)
    assert masked_lpips(before, before.clone(), keep, model=model) == pytest.approx(0.0, abs=1e-7)
    assert masked_lpips(before, after, keep, model=model) > 0
    # Images smaller than AlexNet can take are upsampled for LPIPS; the map keeps their size.
    small_before, small_after = before[:, :, ::4, ::4], after[:, :, ::4, ::4]
    assert masked_lpips(small_before, small_before.clone(), keep[:, :, ::4, ::4], model=model) == pytest.approx(
        0.0, abs=1e-7
    )
    assert masked_lpips(small_before, small_after, keep[:, :, ::4, ::4], model=model) > 0


def test_masked_lpips_rejects_a_non_spatial_model():
    images = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="spatial"):
        masked_lpips(images, images, torch.ones(1, 1, 64, 64), model=random_lpips(spatial=False))


# ----- FID ---------------------------------------------------------------------------------


def small_features() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.Tanh())


def test_feature_fid_is_zero_for_identical_sets_and_grows_with_a_shift():
    torch.manual_seed(4)
    images = torch.rand(40, 3, 8, 8) * 2 - 1
    module = small_features()
    assert feature_fid(images, images.clone(), module, batch_size=16) == pytest.approx(0.0, abs=1e-6)
    small_shift = feature_fid(images, (images + 0.2).clamp(-1, 1), module, batch_size=16)
    large_shift = feature_fid(images, (images + 0.6).clamp(-1, 1), module, batch_size=16)
    assert 0 < small_shift < large_shift


def test_feature_fid_streams_iterables_of_batches_like_one_tensor():
    torch.manual_seed(5)
    images_a = torch.rand(30, 3, 8, 8) * 2 - 1
    images_b = torch.rand(30, 3, 8, 8) * 2 - 1
    module = small_features()
    whole = feature_fid(images_a, images_b, module, batch_size=30)
    streamed = feature_fid(iter(images_a.split(7)), (batch for batch in images_b.split(11)), module)
    assert streamed == pytest.approx(whole, rel=1e-6)


# ----- absent pretrained weights -------------------------------------------------------------


def test_lpips_without_backbone_weights_names_the_file_the_path_and_the_skip_option(empty_torch_home):
    with pytest.raises(WeightsUnavailableError) as raised:
        load_lpips("alex")
    message = str(raised.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(empty_torch_home / "alexnet-owt-7be5be79.pth") in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert "metrics.lpips=false" in message
    with pytest.raises(WeightsUnavailableError, match="vgg16-397923af.pth"):
        masked_lpips(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64), net="vgg")


def test_require_weights_finds_a_present_file_and_can_reject_a_corrupt_one(empty_torch_home):
    empty_torch_home.mkdir(parents=True)
    path = empty_torch_home / "alexnet-owt-7be5be79.pth"
    path.write_bytes(b"not the alexnet weights")
    assert require_weights("alex") == path
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        require_weights("alex", verify_hash=True)


def test_inception_fid_without_weights_names_the_file_and_the_path(empty_torch_home):
    images = torch.zeros(2, 3, 16, 16)
    with pytest.raises(WeightsUnavailableError) as raised:
        inception_fid(images, images)
    message = str(raised.value)
    assert str(empty_torch_home / "weights-inception-2015-12-05-6726825d.pth") in message
    assert "torch-fidelity/releases" in message and "metrics.inception_fid=false" in message


def test_evaluate_edit_records_absent_weights_and_still_returns_the_other_metrics(empty_torch_home):
    generator = tiny_generator()
    results = evaluate_edit(generator, perturbed_copy(generator), num_samples=6, batch_size=3,
                            segmenter=ThresholdSegmenter(), source=["dark"], target=["bright"],
                            lpips_net="alex", inception_fid=True, progress=False)
    assert results["undesired_change_lpips_alex"] == "weights absent: alexnet-owt-7be5be79.pth"
    assert results["inception_fid_edited_vs_unedited"] == "weights absent: weights-inception-2015-12-05-6726825d.pth"
    assert len(results["warnings"]) == 2 and "alexnet-owt-7be5be79.pth" in results["warnings"][0]
    assert results["undesired_change_l1"] > 0 and results["whole_image_l1"] > 0
    assert 0 <= results["edit_success"] <= 1


# ----- evaluate_edit -----------------------------------------------------------------------


EXPECTED_KEYS = {
    "edit_success", "erase_success", "undesired_change_l1", "edited_region_l1", "whole_image_l1",
    "undesired_change_lpips_alex", "segmenter_fid_edited_vs_unedited", "share_showing_dark_before",
    "share_showing_dark_after", "share_showing_bright_before", "share_showing_bright_after",
    "source_labelled_dark_after", "source_labelled_bright_after", "num_samples", "seed", "metric_seconds", "warnings",
    "unedited_from_cache", "unedited_states_from_cache",
}


def evaluate(before, after, **overrides):
    options = dict(num_samples=8, batch_size=4, seed=0, segmenter=ThresholdSegmenter(), source=["dark"],
                   target=["bright"], erase=["dark"], lpips_net="alex", lpips_model=random_lpips(),
                   fid_features=small_features(), progress=False)
    return evaluate_edit(before, after, **{**options, **overrides})


def test_evaluate_edit_of_identical_generators_reports_no_change():
    generator = tiny_generator()
    same = copy.deepcopy(generator)
    # Fresh noise per call would make even identical generators differ; evaluate_edit fixes it.
    generator.noise_mode = same.noise_mode = "random"
    results = evaluate(generator, same)
    assert set(results) == EXPECTED_KEYS
    assert generator.noise_mode == "random" and same.noise_mode == "random"
    assert results["edit_success"] == 0.0 and results["erase_success"] == 0.0
    assert results["undesired_change_l1"] == 0.0 and results["whole_image_l1"] == 0.0
    assert results["undesired_change_lpips_alex"] == pytest.approx(0.0, abs=1e-7)
    assert results["segmenter_fid_edited_vs_unedited"] == pytest.approx(0.0, abs=1e-6)
    assert results["share_showing_dark_before"] == results["share_showing_dark_after"]
    assert results["source_labelled_dark_after"] == 1.0 and results["source_labelled_bright_after"] == 0.0
    assert results["num_samples"] == 8 and results["warnings"] == []
    json.dumps(results, allow_nan=False)


def test_evaluate_edit_of_a_perturbed_layer_reports_change_and_is_reproducible():
    generator = tiny_generator()
    edited = perturbed_copy(generator)
    results = evaluate(generator, edited)
    assert set(results) == EXPECTED_KEYS
    assert results["whole_image_l1"] > 0 and results["undesired_change_l1"] > 0
    assert results["undesired_change_lpips_alex"] > 0
    assert results["segmenter_fid_edited_vs_unedited"] > 0
    assert 0 < results["edit_success"] <= 1
    # Where the source pixels went: the target's share is the success, and the shares add up.
    assert results["source_labelled_bright_after"] == pytest.approx(results["edit_success"])
    assert results["source_labelled_dark_after"] + results["source_labelled_bright_after"] == pytest.approx(1.0)
    again = evaluate(generator, edited, lpips_net=None, fid_features=None)
    for key in ("edit_success", "erase_success", "undesired_change_l1", "whole_image_l1"):
        assert again[key] == pytest.approx(results[key])
    json.dumps(results, allow_nan=False)


def test_evaluate_edit_without_segmenter_reports_only_image_distances():
    generator = tiny_generator()
    results = evaluate_edit(generator, perturbed_copy(generator), num_samples=4, batch_size=4,
                            lpips_net=None, progress=False)
    assert set(results) == {"whole_image_l1", "num_samples", "seed", "metric_seconds", "warnings", "unedited_from_cache",
                            "unedited_states_from_cache"}
    assert results["whole_image_l1"] > 0


class ModuleThresholdSegmenter(nn.Module):
    """The threshold segmenter with a weight, so the unedited-side cache can key its labels."""

    label_names = ["dark", "bright"]

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(threshold))

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return (images[:, 0] > self.threshold).long()


def without_timing(results: dict) -> dict:
    return {key: value for key, value in results.items() if key not in ("metric_seconds", "unedited_from_cache",
                                                                       "unedited_states_from_cache")}


def test_the_cached_unedited_side_gives_identical_metrics_for_every_later_edit(tmp_path):
    generator = tiny_generator()
    first_edit, second_edit = perturbed_copy(generator), perturbed_copy(generator, scale=0.2)
    cached = dict(segmenter=ModuleThresholdSegmenter(), cache_unedited=True, cache_dir=tmp_path)
    plain_first = evaluate(generator, first_edit, segmenter=ModuleThresholdSegmenter())
    plain_second = evaluate(generator, second_edit, segmenter=ModuleThresholdSegmenter())
    cold = evaluate(generator, first_edit, **cached)
    assert cold["unedited_from_cache"] is False and len(list(tmp_path.glob("unedited_*.pt"))) == 1
    calls = []
    hook = generator.register_forward_hook(lambda *args: calls.append(1))
    warm = evaluate(generator, second_edit, **cached)
    hook.remove()
    assert warm["unedited_from_cache"] is True and calls == []  # only the edited generator ran
    assert without_timing(cold) == without_timing(plain_first)
    assert without_timing(warm) == without_timing(plain_second)
    assert warm["undesired_change_l1"] != cold["undesired_change_l1"]  # the edited side is measured afresh


def whole_pass(monkeypatch, before, after, **options) -> dict:
    """The metrics with both generators run from the first layer (no resuming), uncached."""
    import rewriting.metrics.edit_metric_sums as edit_metric_sums
    with monkeypatch.context() as patch:
        patch.setattr(edit_metric_sums, "resume_layer", lambda *generators: None)
        return without_timing(evaluate(before, after, **options))


def test_a_later_edit_of_the_same_layer_runs_only_the_layers_from_the_edit_on(tmp_path, monkeypatch):
    """The unedited synthesis states before the edited layer are cached: later passes start there."""
    generator = tiny_generator()
    first_edit, second_edit = perturbed_copy(generator), perturbed_copy(generator, scale=0.2)
    cached = dict(segmenter=ModuleThresholdSegmenter(), cache_unedited=True, cache_dir=tmp_path)
    cold = evaluate(generator, first_edit, **cached)
    assert [path.name.split("_")[1] for path in tmp_path.glob("states_*.pt")] == ["layer4"]
    ran: list[str] = []
    hooks = [module.register_forward_hook(lambda module, *args, name=name: ran.append(name))
             for name, module in second_edit.named_modules() if name]
    warm = evaluate(generator, second_edit, **cached)
    for hook in hooks:
        hook.remove()
    assert warm["unedited_states_from_cache"] is True and cold["unedited_states_from_cache"] is False
    # Layers 2 and 3 (conv1, convs.0) and the mapping never ran on the edited generator; layer 4 on did.
    assert not any(name.startswith(("style", "conv1", "convs.0.", "to_rgb1")) for name in ran)
    assert any(name.startswith("convs.1.") for name in ran)
    assert without_timing(warm) == whole_pass(monkeypatch, generator, second_edit, segmenter=ModuleThresholdSegmenter())
    assert without_timing(cold) == whole_pass(monkeypatch, generator, first_edit, segmenter=ModuleThresholdSegmenter())
    # Another layer's edit keeps its own states; a changed mapping shares nothing and runs whole.
    evaluate(generator, perturbed_copy(generator, layer=6), **cached)
    assert sorted(path.name.split("_")[1] for path in tmp_path.glob("states_*.pt")) == ["layer4", "layer6"]
    remapped = copy.deepcopy(second_edit)
    with torch.no_grad():
        remapped.style[1].weight.mul_(1.1)
    assert without_timing(evaluate(generator, remapped, **cached)) == whole_pass(
        monkeypatch, generator, remapped, segmenter=ModuleThresholdSegmenter())
    assert len(list(tmp_path.glob("states_*.pt"))) == 2


def test_the_unedited_cache_is_keyed_by_generator_segmenter_and_sample(tmp_path):
    generator = tiny_generator()
    edited = perturbed_copy(generator)
    cached = dict(cache_unedited=True, cache_dir=tmp_path)
    evaluate(generator, edited, segmenter=ModuleThresholdSegmenter(), **cached)
    other_segmenter = evaluate(generator, edited, segmenter=ModuleThresholdSegmenter(0.5), **cached)
    other_seed = evaluate(generator, edited, segmenter=ModuleThresholdSegmenter(), seed=1, **cached)
    other_generator = evaluate(perturbed_copy(generator, scale=0.1), edited, segmenter=ModuleThresholdSegmenter(),
                               **cached)
    assert not any(result["unedited_from_cache"] for result in (other_segmenter, other_seed, other_generator))
    assert without_timing(other_segmenter) == without_timing(
        evaluate(generator, edited, segmenter=ModuleThresholdSegmenter(0.5)))
    # A segmenter without weights to hash cannot be keyed: nothing is cached for it.
    before = len(list(tmp_path.glob("unedited_*.pt")))
    evaluate(generator, edited, segmenter=ThresholdSegmenter(), **cached)
    assert len(list(tmp_path.glob("unedited_*.pt"))) == before
