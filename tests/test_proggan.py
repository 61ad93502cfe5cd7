"""ProGAN generator: checkpoint loading, forward parity with DESIGN.md, linear keys -> values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rewriting.errors import CheckpointError, LayerError
from rewriting.models.proggan import (ProGANGenerator, is_proggan_state_dict, load_proggan,
                                      proggan_from_state_dict, save_proggan)

Z_DIM = 24
WIDTHS = [32, 32, 24, 24, 16, 16, 16, 16]  # 32 px


def random_state_dict(size: int = 32, widths=WIDTHS, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint in ProGAN's key layout with random tensors (nonzero biases)."""
    layout = ProGANGenerator(size, widths, z_dim=Z_DIM).state_dict()
    rng = torch.Generator().manual_seed(seed)
    return {key: torch.randn(tensor.shape, generator=rng) for key, tensor in layout.items()}


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("proggan") / "tiny32.pth"
    torch.save(random_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def generator(checkpoint_path):
    return load_proggan(checkpoint_path).eval()


def sample_z(count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, Z_DIM, generator=torch.Generator().manual_seed(seed))


def reference_forward(state_dict: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """DESIGN.md's ProGAN forward written directly as functional calls over the state dict."""
    def pixel_norm(x):
        return x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)

    count = sum(1 for key in state_dict if key.startswith("layer") and key.endswith(".conv.weight"))
    x = z.view(z.shape[0], -1, 1, 1)
    for n in range(1, count + 1):
        weight, bias = state_dict[f"layer{n}.conv.weight"], state_dict[f"layer{n}.wscale.b"]
        x = pixel_norm(x)
        if n >= 3 and n % 2 == 1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        kernel, in_channels = weight.shape[-1], weight.shape[1]
        x = F.conv2d(x, weight, padding=3 if n == 1 else 1)
        x = x * math.sqrt(2) / (kernel * math.sqrt(in_channels)) + bias.view(1, -1, 1, 1)
        x = F.leaky_relu(x, 0.2)
    (output_name,) = {key.split(".")[0] for key in state_dict if key.startswith("output_")}
    weight, bias = state_dict[f"{output_name}.conv.weight"], state_dict[f"{output_name}.wscale.b"]
    x = F.conv2d(pixel_norm(x), weight)
    return x / math.sqrt(weight.shape[1]) + bias.view(1, -1, 1, 1)


def test_checkpoint_loads_with_sizes_read_from_shapes(generator):
    assert generator.family == "proggan"
    assert (generator.size, generator.z_dim, generator.layer_widths) == (32, Z_DIM, WIDTHS)
    assert generator.layer_numbers == list(range(1, 9))
    with torch.no_grad():
        images = generator(sample_z())
    assert images.shape == (3, 3, 32, 32)
    assert torch.isfinite(images).all()


def test_forward_matches_design_reference(generator, checkpoint_path):
    z = sample_z()
    with torch.no_grad():
        expected = reference_forward(torch.load(checkpoint_path), z)
        images = generator(z, truncation=0.5, noise="ignored", fused=True)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)


def test_interface_knobs_change_nothing(generator):
    z = sample_z()
    with torch.no_grad():
        plain = generator(z)
        generator.truncation = 0.3
        try:
            truncated = generator(z)
        finally:
            generator.truncation = 1.0
    assert torch.equal(plain, truncated)
    assert torch.equal(generator.latent_avg, torch.zeros(Z_DIM))
    assert "latent_avg" not in generator.state_dict()


def test_wrapped_and_module_prefixed_checkpoints_load(generator):
    state_dict = generator.state_dict()
    wrapped = {"state_dict": {f"module.{key}": value for key, value in state_dict.items()}}
    assert is_proggan_state_dict(wrapped) and is_proggan_state_dict(state_dict)
    assert not is_proggan_state_dict({"g_ema": {}}) and not is_proggan_state_dict([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(proggan_from_state_dict(wrapped)(sample_z()), generator(sample_z()),
                                   atol=0, rtol=0)


@pytest.mark.parametrize("layer", [2, 3, 6])
def test_values_are_exactly_linear_in_keys(generator, layer):
    module = generator.layer(layer)
    rng = torch.Generator().manual_seed(layer)
    in_channels, resolution = module.in_channels, generator.layer_resolution(layer)
    first, second = (torch.randn(2, in_channels, resolution, resolution, generator=rng) for _ in range(2))
    replacement = torch.randn(module.weight.shape, generator=rng)
    with torch.no_grad():
        for weight in (None, replacement):
            combined = module.values_from_keys(2.5 * first - 0.75 * second, None, None, weight=weight)
            expected = (2.5 * module.values_from_keys(first, None, None, weight=weight)
                        - 0.75 * module.values_from_keys(second, None, None, weight=weight))
            torch.testing.assert_close(combined, expected, atol=1e-4, rtol=1e-5)
        own = module.values_from_keys(first, None, None)
        assert not torch.allclose(module.values_from_keys(first, None, None, weight=replacement), own)


def activations_by_hook(generator, layer, z):
    """The real input and output of `layer` during a full generator forward."""
    seen = {}
    handle = generator.layer(layer).register_forward_hook(
        lambda module, inputs, output: seen.update(input=inputs[0], output=output))
    try:
        with torch.no_grad():
            generator(z)
    finally:
        handle.remove()
    return seen["input"], seen["output"]


@pytest.mark.parametrize("layer", [1, 2, 3, 4, 8])
def test_layer_input_and_split_layer_reproduce_generator_activations(generator, layer):
    z = sample_z()
    hooked_input, hooked_output = activations_by_hook(generator, layer, z)
    module = generator.layer(layer)
    with torch.no_grad():
        given = generator.layer_input(z, layer)
        keys, style = module.modulate(given.features, given.w)
        values = module.values_from_keys(keys, style, given.noise)
        assert torch.equal(given.w, z) and given.noise is None and style is None
        assert torch.equal(given.features, hooked_input)
        torch.testing.assert_close(module(given.features), hooked_output, atol=0, rtol=0)
        torch.testing.assert_close(module.activate(values), hooked_output, atol=1e-6, rtol=1e-6)
    # values are the bare conv output: wscale, bias and activation come after.
    assert torch.equal(values, module.conv(keys))


@pytest.mark.parametrize("layer", range(2, 9))
def test_keys_and_values_are_at_the_layer_resolution(generator, layer):
    module = generator.layer(layer)
    with torch.no_grad():
        given = generator.layer_input(sample_z(2), layer)
        keys, style = module.modulate(given.features, given.w)
        values = module.values_from_keys(keys, style, given.noise)
    resolution = generator.layer_resolution(layer)
    assert module.upsample == (layer % 2 == 1)
    # ProGAN upsamples before the conv, so an upsampling layer's keys are already at output size.
    assert keys.shape == (2, module.in_channels, resolution, resolution)
    assert values.shape == (2, module.out_channels, resolution, resolution)
    expected_input = resolution // 2 if module.upsample else resolution
    assert given.features.shape[-1] == expected_input
    assert module.weight.shape == (module.out_channels, module.in_channels, 3, 3)


def test_first_layer_maps_a_one_pixel_latent_to_4x4(generator):
    module = generator.layer(1)
    with torch.no_grad():
        keys, _ = module.modulate(generator.layer_input(sample_z(2), 1).features)
        values = module.values_from_keys(keys, None, None)
    assert keys.shape == (2, Z_DIM, 1, 1)
    assert values.shape == (2, WIDTHS[0], 4, 4)
    torch.testing.assert_close(keys.pow(2).mean(dim=1), torch.ones(2, 1, 1))  # pixel-normed z


def test_layer_weight_accessors_point_at_the_checkpoint_tensor(generator):
    for layer in generator.layer_numbers:
        name = generator.layer_weight_name(layer)
        assert name == f"layer{layer}.conv.weight"
        assert generator.layer_editable_weight(layer) is generator.get_parameter(name)
        assert generator.layer(layer).weight is generator.get_parameter(name)


def test_editing_the_weight_changes_the_images(generator):
    edited = proggan_from_state_dict(generator.state_dict())
    with torch.no_grad():
        edited.layer_editable_weight(5).mul_(-1)
        assert not torch.allclose(edited(sample_z()), generator(sample_z()))


def test_save_then_load_gives_identical_images(generator, tmp_path):
    path = save_proggan(generator, tmp_path / "nested" / "copy.pth")
    assert sorted(torch.load(path)) == sorted(generator.state_dict())
    assert not list(path.parent.glob("*.part"))
    with torch.no_grad():
        assert torch.equal(load_proggan(path)(sample_z()), generator(sample_z()))


@pytest.mark.parametrize("layer", [0, 9, -1, 2.0, "3"])
def test_invalid_layer_raises_layer_error_with_the_valid_range(generator, layer):
    for access in (generator.layer, generator.layer_weight_name, generator.layer_editable_weight,
                   lambda n: generator.layer_input(sample_z(1), n)):
        with pytest.raises(LayerError, match=r"1\.\.8"):
            access(layer)


def test_misshaped_key_is_named():
    state_dict = random_state_dict()
    state_dict["layer4.conv.weight"] = torch.randn(24, 20, 3, 3)
    with pytest.raises(CheckpointError, match=r"layer4\.conv\.weight"):
        proggan_from_state_dict(state_dict)


def test_missing_bias_is_named():
    state_dict = random_state_dict()
    del state_dict["layer6.wscale.b"]
    with pytest.raises(CheckpointError, match=r"layer6\.wscale\.b"):
        proggan_from_state_dict(state_dict)


def test_missing_middle_layer_is_named():
    state_dict = random_state_dict()
    del state_dict["layer3.conv.weight"]
    with pytest.raises(CheckpointError, match=r"layer3\.conv\.weight"):
        proggan_from_state_dict(state_dict)


def test_output_block_of_the_wrong_resolution_is_named():
    state_dict = random_state_dict()
    state_dict["output_64x64.conv.weight"] = state_dict.pop("output_32x32.conv.weight")
    with pytest.raises(CheckpointError, match=r"output_64x64\.conv\.weight"):
        proggan_from_state_dict(state_dict)


def test_non_proggan_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"layer1\.conv\.weight"):
        proggan_from_state_dict({"g_ema": {}, "latent_avg": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_proggan(tmp_path / "absent.pth")
