"""StyleGAN2 generator: parity with rosinality's images, fused vs sequential, FIR ops, layer numbering,
checkpoints (round trip, architecture from shapes, bad tensors), truncation and noise."""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F

from rewriting import load_generator
from rewriting.errors import CheckpointError, LayerError
from rewriting.models.checkpoints import save_stylegan2
from rewriting.models.stylegan2 import StyleGAN2Generator
from rewriting.models.stylegan2_layers import Blur, Upsample, depthwise_fir, upsample_fir

ROSINALITY = "rosinality/rosinality_tiny32_seed7.pt"
EXPECTED = "rosinality/rosinality_tiny32_seed7_expected.pt"

pytestmark = pytest.mark.usefixtures("one_thread")


def sample_z(count: int, z_dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))


def naive_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """upfirdn2d by its definition: zero insertion, padding, then a true convolution with `kernel`."""
    batch, channels, height, width = x.shape
    upsampled = torch.zeros(batch, channels, height * up, width * up, dtype=x.dtype)
    upsampled[:, :, ::up, ::up] = x
    padded = F.pad(upsampled, [pad[0], pad[1], pad[0], pad[1]])
    taps = kernel.shape[0]
    out_height, out_width = padded.shape[2] - taps + 1, padded.shape[3] - taps + 1
    out = torch.zeros(batch, channels, out_height, out_width, dtype=x.dtype)
    flipped = torch.flip(kernel, [0, 1])  # convolution = correlation with the flipped kernel
    for row in range(taps):
        for column in range(taps):
            out += flipped[row, column] * padded[:, :, row:row + out_height, column:column + out_width]
    return out


# ----- parity with rosinality's own images -------------------------------------------------------------
def test_reference_checkpoint_reproduces_rosinality_images(reference_dir):
    expected = torch.load(reference_dir / EXPECTED)
    generator = load_generator(reference_dir / ROSINALITY)
    truncated = load_generator(reference_dir / ROSINALITY, truncation=0.5)
    with torch.no_grad():
        images = generator(expected["z"])
        images_half = truncated(expected["z"])
        images_half_argument = generator(expected["z"], truncation=0.5)
    assert images.shape == expected["img_truncation_1"].shape
    assert (images - expected["img_truncation_1"]).abs().max() < 1e-4
    assert (images_half - expected["img_truncation_0.5"]).abs().max() < 1e-4
    assert (images_half_argument - expected["img_truncation_0.5"]).abs().max() < 1e-4
    # Truncation really acts: the two reference image sets are far apart.
    assert (images - images_half).abs().max() > 1e-2


def test_reference_checkpoint_fused_equals_sequential(reference_dir):
    generator = load_generator(reference_dir / ROSINALITY, truncation=0.5)
    z = torch.load(reference_dir / EXPECTED)["z"]
    with torch.no_grad():
        sequential, fused = generator(z, fused=False), generator(z, fused=True)
    assert (sequential - fused).abs().max() < 1e-4


@pytest.mark.parametrize("size, channels, style_dim", [
    (16, {4: 16, 8: 12, 16: 8}, 16),
    (64, {4: 12, 8: 16, 16: 8, 32: 8, 64: 4}, 24),
])
def test_fused_equals_sequential_on_other_sizes_and_widths(make_generator, size, channels, style_dim):
    generator = make_generator(size=size, style_dim=style_dim, n_mlp=1, channels=channels, seed=3)
    z = sample_z(3, style_dim, seed=1)
    noise = generator.make_noise(3, mode="random", generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        sequential = generator(z, truncation=0.7, noise=noise, fused=False)
        fused = generator(z, truncation=0.7, noise=noise, fused=True)
    assert sequential.shape == (3, 3, size, size)
    assert (sequential - fused).abs().max() < 1e-4


# ----- FIR filters against a naive upfirdn2d ----------------------------------------------------------
@pytest.mark.parametrize("taps", [4, 6])
def test_upsample_fir_equals_naive_upfirdn2d(taps):
    rng = torch.Generator().manual_seed(taps)
    kernel = torch.rand(taps, taps, generator=rng, dtype=torch.float64)  # not symmetric
    assert not torch.equal(kernel, torch.flip(kernel, [0, 1]))
    x = torch.randn(2, 3, 5, 7, generator=rng, dtype=torch.float64)
    expected = naive_upfirdn2d(x, kernel, up=2, pad=(taps // 2, taps // 2 - 1))
    assert torch.allclose(upsample_fir(x, kernel), expected, atol=1e-12)
    assert torch.allclose(Upsample(kernel)(x), expected, atol=1e-12)


@pytest.mark.parametrize("pad", [(1, 1), (2, 1), (1, 2)])
def test_blur_equals_naive_upfirdn2d(pad):
    rng = torch.Generator().manual_seed(sum(pad))
    kernel = torch.rand(4, 4, generator=rng, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 5, generator=rng, dtype=torch.float64)
    expected = naive_upfirdn2d(x, kernel, up=1, pad=pad)
    assert torch.allclose(depthwise_fir(x, kernel, pad), expected, atol=1e-12)
    assert torch.allclose(Blur(kernel, pad)(x), expected, atol=1e-12)


# ----- layer numbering --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generator_256():
    torch.manual_seed(0)
    channels = {r: 8 for r in (4, 8, 16, 32, 64, 128, 256)}
    return StyleGAN2Generator(256, style_dim=8, n_mlp=1, channels=channels).eval().requires_grad_(False)


def test_layer_numbering_of_a_256_px_generator(generator_256):
    generator = generator_256
    assert generator.layer_numbers == list(range(2, 15))
    assert generator.layer_resolution(2) == 4
    assert generator.layer(2) is generator.conv1 and not generator.layer(2).upsample
    assert generator.layer_resolution(8) == 32 and not generator.layer(8).upsample
    assert generator.layer_weight_name(8) == "convs.5.conv.weight"
    assert generator.layer_resolution(7) == 32 and generator.layer(7).upsample
    assert generator.layer_resolution(6) == 16 and generator.layer_resolution(10) == 64
    assert generator.layer_resolution(14) == 256


def test_layer_numbering_matches_the_feature_shapes(generator_256):
    """Each layer's input (keys) and output (values) have the resolution its number promises."""
    generator = generator_256
    z = sample_z(1, 8)
    with torch.no_grad():
        for layer in (2, 7, 8, 14):
            layer_input = generator.layer_input(z, layer)
            output = generator.layer(layer)(layer_input.features, layer_input.w, layer_input.noise)
            resolution = generator.layer_resolution(layer)
            input_resolution = resolution // 2 if generator.layer(layer).upsample else resolution
            assert layer_input.features.shape[-1] == input_resolution, layer
            assert output.shape[-2:] == (resolution, resolution), layer
    assert generator.layer_input(z, 7).features.shape[-1] == 16
    assert generator.layer_input(z, 8).features.shape[-1] == 32


@pytest.mark.parametrize("layer", [1, 15, 0, -3, "8"])
def test_layer_outside_range_raises_layer_error(generator_256, layer):
    with pytest.raises(LayerError, match=r"does not exist in this 256-px StyleGAN2.*2\.\.14"):
        generator_256.layer(layer)


def test_state_dict_keys_match_rosinality_layout(generator_256, reference_dir):
    """Same key names as rosinality's 256-px generator, apart from the 8-layer mapping network."""
    rows = (reference_dir / "rosinality/rosinality_generator256_state_dict_keys.tsv").read_text().splitlines()
    reference_keys = {row.split("\t")[0] for row in rows if row.strip()}
    ours = set(generator_256.state_dict())
    mapping = re.compile(r"style\.\d+\.")
    assert {k for k in reference_keys if not mapping.match(k)} == {k for k in ours if not mapping.match(k)}


# ----- checkpoints ------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_images_and_state(make_generator, tmp_path):
    generator = make_generator(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 12, 16: 8}, seed=4)
    path = save_stylegan2(generator, tmp_path / "g.pt")
    loaded = load_generator(path)
    original_state, loaded_state = generator.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key in original_state:
        assert torch.equal(original_state[key], loaded_state[key]), key
    assert torch.equal(generator.latent_avg, loaded.latent_avg)
    z = sample_z(4, 16)
    with torch.no_grad():
        assert torch.equal(generator(z), loaded(z))
        assert torch.equal(generator(z, truncation=0.5), loaded(z, truncation=0.5))


def test_architecture_is_read_from_tensor_shapes_without_args(make_generator, tmp_path):
    channels = {4: 16, 8: 12, 16: 8, 32: 4}
    generator = make_generator(size=32, style_dim=20, n_mlp=3, channels=channels, seed=5)
    path = save_stylegan2(generator, tmp_path / "with_args.pt")
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["args"]
    torch.save(checkpoint, tmp_path / "no_args.pt")
    loaded = load_generator(tmp_path / "no_args.pt")
    assert (loaded.size, loaded.style_dim, loaded.n_mlp) == (32, 20, 3)
    assert loaded.channels == channels
    z = sample_z(2, 20)
    with torch.no_grad():
        assert torch.equal(generator(z), loaded(z))


@pytest.mark.parametrize("key", ["convs.1.conv.weight", "to_rgbs.0.conv.modulation.bias", "noises.noise_2",
                                 "conv1.activate.bias"])
def test_mis_shaped_tensor_gives_checkpoint_error_naming_it(tiny_checkpoint, tmp_path, key):
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    tensor = checkpoint["g_ema"][key]
    checkpoint["g_ema"][key] = torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1)
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=re.escape(repr(key))):
        load_generator(tmp_path / "bad.pt")


def test_missing_and_unexpected_tensors_give_checkpoint_error(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    del checkpoint["g_ema"]["convs.3.noise.weight"]
    torch.save(checkpoint, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"lacks key 'convs\.3\.noise\.weight'"):
        load_generator(tmp_path / "missing.pt")
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    checkpoint["g_ema"]["convs.1.extra"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"'convs\.1\.extra'"):
        load_generator(tmp_path / "extra.pt")


# ----- truncation and noise ---------------------------------------------------------------------------
def test_truncation_pulls_w_towards_latent_avg(make_generator):
    generator = make_generator(size=16, style_dim=16, n_mlp=2, seed=6)
    assert generator.latent_avg.abs().max() > 0
    z = sample_z(3, 16, seed=2)
    with torch.no_grad():
        w = generator.mapping(z, truncation=1.0)
        half = generator.mapping(z, truncation=0.5)
        assert torch.allclose(half, generator.latent_avg + 0.5 * (w - generator.latent_avg), atol=1e-6)
        images_zero = generator(z, truncation=0.0)
        images_one = generator(z, truncation=1.0)
        average_image = generator.synthesis(generator.latent_avg[None])
    # At truncation 0 every z gives the image of latent_avg (noise is fixed).
    for i in range(3):
        assert torch.allclose(images_zero[i], average_image[0], atol=1e-5)
        assert torch.allclose(images_zero[i], images_zero[0], atol=1e-5)
    assert (images_one[0] - images_one[1]).abs().max() > 1e-3


def test_fixed_noise_is_reproducible_and_independent_of_batch_position(make_generator):
    generator = make_generator(size=16, style_dim=16, n_mlp=1, seed=7)
    z = sample_z(3, 16, seed=3)
    with torch.no_grad():
        first, second = generator(z), generator(z)
        alone = generator(z[2:3])
    assert torch.equal(first, second)
    assert torch.allclose(first[2:3], alone, atol=1e-5)


def test_random_noise_differs_between_calls(make_generator):
    generator = make_generator(size=16, style_dim=16, n_mlp=1, seed=7)
    generator.noise_mode = "random"
    z = sample_z(2, 16, seed=3)
    with torch.no_grad():
        first, second = generator(z), generator(z)
        generator.noise_mode = "fixed"
        fixed = generator(z)
    assert (first - second).abs().max() > 1e-4
    assert (first - fixed).abs().max() > 1e-4


def test_unknown_noise_mode_is_refused(make_generator):
    generator = make_generator(size=16, style_dim=16, n_mlp=1)
    with pytest.raises(ValueError, match="noise_mode='shared'"):
        generator.make_noise(1, mode="shared")


@pytest.mark.parametrize("chunk_bytes", [1, 3000, 1 << 30])
@pytest.mark.parametrize("noise_mode", ["fixed", "random"])
def test_cpu_chunks_give_the_images_and_layer_inputs_of_one_image_at_a_time(make_generator, monkeypatch,
                                                                             chunk_bytes, noise_mode):
    """However a CPU batch is cut up layer by layer, each image is the one it would be alone."""
    import rewriting.models.stylegan2 as stylegan2
    generator = make_generator(size=32, style_dim=16, n_mlp=1, seed=5)
    z = sample_z(7, 16, seed=4)
    w = generator.mapping(z)
    noise = generator.make_noise(7, mode=noise_mode, generator=torch.Generator().manual_seed(2))
    own = [n if n.shape[0] == 1 else n[i:i + 1] for i in range(7) for n in noise]
    per_image = [own[i * len(noise):(i + 1) * len(noise)] for i in range(7)]
    monkeypatch.setattr(stylegan2, "CPU_CHUNK_BYTES", chunk_bytes)
    with torch.no_grad():
        images = generator.synthesis(w, noise=noise)
        layer_input = generator.synthesis(w, noise=noise, stop_before_layer=6)
        for i in range(7):
            alone = generator.synthesis(w[i:i + 1], noise=per_image[i])
            assert torch.allclose(images[i:i + 1], alone, atol=1e-5)
            alone_input = generator.synthesis(w[i:i + 1], noise=per_image[i], stop_before_layer=6)
            assert torch.allclose(layer_input.features[i:i + 1], alone_input.features, atol=1e-5)
    assert images.shape == (7, 3, 32, 32)
    assert layer_input.noise is noise[4]  # layer 6 adds noise input 4, whole, as given


@pytest.mark.parametrize("chunk_bytes", [3000, 1 << 30])
@pytest.mark.parametrize("noise_mode", ["fixed", "random"])
def test_synthesis_resumed_from_a_state_gives_the_whole_pass_images_bit_for_bit(make_generator, monkeypatch, tmp_path,
                                                                               chunk_bytes, noise_mode):
    """A metric pass runs the edited generator only from the edited layer on: its images must not move at all."""
    import rewriting.models.stylegan2 as stylegan2
    from rewriting.models.stylegan2 import SynthesisState
    monkeypatch.setattr(stylegan2, "CPU_CHUNK_BYTES", chunk_bytes)
    generator = make_generator(size=32, style_dim=16, n_mlp=1, seed=5)
    z = sample_z(7, 16, seed=4)
    noise = generator.make_noise(7, mode=noise_mode, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        w = generator.mapping(z)
        whole = generator.synthesis(w, noise=noise)
        for layer in generator.layer_numbers:
            images, kept = generator.synthesis_with_state(w, layer, noise=noise)
            assert torch.equal(images, whole)
            alone = generator.synthesis_state(w, layer, noise=noise)
            torch.save(kept.stored(), tmp_path / "state.pt")
            reloaded = SynthesisState.from_stored(torch.load(tmp_path / "state.pt", weights_only=True))
            for state in (kept, alone, reloaded):
                assert state.layer == layer
                assert torch.equal(generator.resume_synthesis(state, noise=noise), whole), layer


def test_first_differing_layer_names_the_earliest_change_an_edit_makes(make_generator):
    generator = make_generator(size=32, style_dim=16, n_mlp=1, seed=5)
    assert generator.first_differing_layer(copy.deepcopy(generator)) is None
    for layer in generator.layer_numbers:
        edited = copy.deepcopy(generator)
        with torch.no_grad():
            edited.layer_editable_weight(layer)[0, 0, 0, 0] += 1
        assert generator.first_differing_layer(edited) == layer
    changes = {
        "the ToRGB after layer 4 (its skip feeds every later layer)": (lambda g: g.to_rgbs[0].bias, 4),
        "layer 5's noise": (lambda g: g.noises.noise_3, 5),
        "the mapping network": (lambda g: g.style[1].weight, 2),
    }
    for what, (tensor, expected) in changes.items():
        edited = copy.deepcopy(generator)
        with torch.no_grad():
            tensor(edited).add_(1)
        assert generator.first_differing_layer(edited) == expected, what
    truncated = copy.deepcopy(generator)
    truncated.truncation = 0.7
    assert generator.first_differing_layer(truncated) == 2


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("per_sample_noise", [False, True])
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_layer_output_in_one_pass_equals_the_step_by_step_layer(upsample, per_sample_noise, clamp):
    """Demodulation, noise, bias and gain in one multiply-add give the step-by-step layer and its gradient."""
    from rewriting.models.stylegan2_layers import StyledConv
    torch.manual_seed(3)
    layer = StyledConv(6, 5, 4, upsample=upsample)
    layer.noise.weight.data.fill_(0.7)
    layer.activate.bias.data.normal_()
    layer.activate.clamp = clamp
    x = torch.randn(3, 6, 8, 8)
    w = torch.randn(3, 4)
    side = 16 if upsample else 8
    noise = torch.randn(3 if per_sample_noise else 1, 1, side, side)
    weight = layer.weight.detach().clone().requires_grad_(True)

    keys, style = layer.modulate(x, w)
    fast = layer.values_from_keys(keys, style, noise, weight)
    slow = layer.activate(layer.noise(layer.conv.convolve(keys, style, weight), noise))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert fast.shape == (3, 5, side, side)
    if upsample:  # a CPU upsampling layer hands on channels-last features, as the next layer's conv wants
        assert fast.is_contiguous(memory_format=torch.channels_last)
    target = torch.randn_like(fast)
    fast_gradient, = torch.autograd.grad((fast * target).sum(), weight)
    slow_gradient, = torch.autograd.grad((slow * target).sum(), weight)
    torch.testing.assert_close(fast_gradient, slow_gradient, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, w, noise), slow, atol=1e-5, rtol=1e-5)
