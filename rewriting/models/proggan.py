"""Progressive GAN generator (gandissect's layout), with the same interface as StyleGAN2Generator.

Layer numbering follows the checkpoint: `layer1` turns z (a 1x1 map) into 4x4 with a 4x4
conv (padding 3), `layer2` is the plain 4x4 conv; then per resolution r = 8, 16, ... the
upsampling layer (odd number: pixel-norm, nearest 2x upsample, 3x3 conv) and the plain
layer (even number). Layer n works at 4 * 2 ** ((n - 1) // 2) px; a 2**k-px generator has
2 * (k - 1) layers. Keys are the pixel-normed (and upsampled) conv input and values the
bare conv output, so every layer is exactly linear from keys to values.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from ..errors import CheckpointError, LayerError
from .stylegan2 import LayerInput
from .stylegan2_layers import PixelNorm

_LAYER_WEIGHT_KEY = re.compile(r"layer(\d+)\.conv\.weight$")


def proggan_layer_count(size: int) -> int:
    """Number of conv layers of a `size`-px ProGAN: two at 4x4 and two per doubling."""
    if size < 4 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    return 2 * (int(math.log2(size)) - 1)


def proggan_layer_widths(size: int) -> list[int]:
    """Output channels per layer as the original ProGAN sets them (fmap_base 8192, max 512)."""
    count = proggan_layer_count(size)
    return [min(512, 16384 // (4 * 2 ** ((n - 1) // 2))) for n in range(1, count + 1)]


class NearestUpsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class WScale(nn.Module):
    """Equalized-learning-rate output scale `gain / sqrt(fan_in)` plus the layer's bias `b` (out,)."""

    def __init__(self, channels: int, in_channels: int, gain: float):
        super().__init__()
        self.scale = gain / math.sqrt(in_channels)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b[None, :, None, None]


class ProGANLayer(nn.Module):
    """One editable layer: keys = up(pixel_norm(x)), values = conv(keys), output = lrelu(wscale(values))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 upsample: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.norm = PixelNorm()
        if upsample:
            self.up = NearestUpsample()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        # The sqrt(2) He gain is divided by kernel_size: together with sqrt(in_channels) it
        # makes the constant sqrt(2 / fan_in) for fan_in = in_channels * kernel_size**2.
        self.wscale = WScale(out_channels, in_channels, gain=math.sqrt(2.0) / kernel_size)
        self.relu = nn.LeakyReLU(0.2)

    @property
    def upsample(self) -> bool:
        return hasattr(self, "up")

    @property
    def weight(self) -> torch.Tensor:
        """The edited tensor (out, in, k, k): the conv's own parameter."""
        return self.conv.weight

    def modulate(self, x: torch.Tensor, w: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """Keys at this layer: x (N, in, h, w) -> (keys (N, in, H, W), None); ProGAN has no style."""
        keys = self.norm(x)
        if self.upsample:
            keys = self.up(keys)
        return keys, None

    def values_from_keys(self, keys: torch.Tensor, style: None = None, noise: None = None,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
        """Bare conv output (N, out, H, W) for keys, with a replacement weight (out, in, k, k) if given.

        `style` and `noise` exist for StyleGAN2's signature; ProGAN has neither.
        """
        return F.conv2d(keys, self.conv.weight if weight is None else weight, padding=self.padding)

    def activate(self, values: torch.Tensor) -> torch.Tensor:
        """Layer output from values: wscale, bias, leaky ReLU 0.2."""
        return self.relu(self.wscale(values))

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                fused: bool | None = None) -> torch.Tensor:
        """Full layer x (N, in, h, w) -> (N, out, H, W); `w`, `noise`, `fused` are ignored (StyleGAN2's signature)."""
        keys, _ = self.modulate(x)
        return self.activate(self.values_from_keys(keys))


class ProGANOutput(nn.Module):
    """pixel-norm, 1x1 conv to RGB, x / sqrt(in_channels) + bias."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.norm = PixelNorm()
        self.conv = nn.Conv2d(in_channels, 3, kernel_size=1, bias=False)
        self.wscale = WScale(3, in_channels, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wscale(self.conv(self.norm(x)))


class ProGANGenerator(nn.Module):
    """`G(z)` -> images (N, 3, H, W) in about [-1, 1].

    `truncation`, `noise_mode`, `fused` and `latent_avg` mirror StyleGAN2Generator so rewriting
    code needs no family switch; ProGAN has no mapping network, noise or truncation, so they
    change nothing (truncation is always 1: images come from z itself).
    """

    family = "proggan"

    def __init__(self, size: int = 256, layer_widths: Sequence[int] | None = None, z_dim: int = 512):
        super().__init__()
        count = proggan_layer_count(size)
        widths = list(layer_widths) if layer_widths is not None else proggan_layer_widths(size)
        if len(widths) != count:
            raise ValueError(f"a {size}-px ProGAN has {count} layers, got {len(widths)} layer widths")
        self.size = size
        self.z_dim = z_dim
        self.layer_widths = widths
        in_channels = z_dim
        for n, out_channels in enumerate(widths, start=1):
            if n == 1:
                layer = ProGANLayer(in_channels, out_channels, kernel_size=4, padding=3)
            else:
                layer = ProGANLayer(in_channels, out_channels, kernel_size=3, padding=1, upsample=n % 2 == 1)
            self.add_module(f"layer{n}", layer)
            in_channels = out_channels
        self.add_module(f"output_{size}x{size}", ProGANOutput(in_channels))
        self.register_buffer("latent_avg", torch.zeros(z_dim), persistent=False)
        self.truncation = 1.0
        self.noise_mode = "fixed"
        self.fused = False

    @property
    def output(self) -> ProGANOutput:
        return getattr(self, f"output_{self.size}x{self.size}")

    # ----- layer numbering -------------------------------------------------------------
    @property
    def layer_numbers(self) -> list[int]:
        return list(range(1, len(self.layer_widths) + 1))

    def _check_layer(self, layer: int) -> int:
        numbers = self.layer_numbers
        if not isinstance(layer, int) or layer not in numbers:
            raise LayerError(
                f"layer={layer!r} does not exist in this {self.size}-px ProGAN: its editable layers are "
                f"{numbers[0]}..{numbers[-1]} (layer n works at 4*2**((n-1)//2) px; e.g. layer "
                f"{numbers[-1]} is {self.layer_resolution(numbers[-1])}x{self.layer_resolution(numbers[-1])}). "
                f"Pass a layer from that range.")
        return layer

    def layer(self, layer: int) -> ProGANLayer:
        """The editable layer module of a layer number."""
        self._check_layer(layer)
        return getattr(self, f"layer{layer}")

    def layer_resolution(self, layer: int) -> int:
        """Resolution of the layer's output (values)."""
        return 4 * 2 ** ((layer - 1) // 2)

    def layer_weight_name(self, layer: int) -> str:
        """State-dict key of the tensor a rewrite of this layer changes."""
        self._check_layer(layer)
        return f"layer{layer}.conv.weight"

    def layer_editable_weight(self, layer: int) -> torch.Tensor:
        """The conv weight (out, in, k, k) of a layer, the parameter itself."""
        return self.layer(layer).weight

    # ----- forward ---------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """ProGAN has no mapping network: the latent each layer receives is z itself."""
        return z

    def forward(self, z: torch.Tensor, truncation: float | None = None, noise: Any = None,
                fused: bool | None = None) -> torch.Tensor:
        """z (N, z_dim) -> images (N, 3, size, size); `truncation`, `noise`, `fused` are ignored."""
        return self.synthesis(z)

    def synthesis(self, z: torch.Tensor, noise: Any = None, fused: bool | None = None,
                  stop_before_layer: int | None = None):
        """z (N, z_dim) -> images; or, with stop_before_layer, that layer's LayerInput."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        x = z[:, :, None, None]
        for n in self.layer_numbers:
            if stop_before_layer == n:
                return LayerInput(x, z, None)
            x = getattr(self, f"layer{n}")(x)
        return self.output(x)

    def layer_input(self, z: torch.Tensor, layer: int, noise: Any = None) -> LayerInput:
        """Run the generator up to `layer`: LayerInput(features (N, in, h, w), w=z, noise=None)."""
        self._check_layer(layer)
        return self.synthesis(z, stop_before_layer=layer)


# ----- checkpoints ----------------------------------------------------------------------
def _unwrap_state_dict(obj: Any) -> dict[str, Any]:
    """A plain state dict from a `{'state_dict': ...}` wrapper and/or DataParallel `module.` keys."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"a ProGAN checkpoint is a state dict, got {type(obj).__name__}")
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def is_proggan_state_dict(obj: Any) -> bool:
    """Whether a loaded checkpoint looks like a ProGAN state dict (has `layer1.conv.weight`)."""
    try:
        return "layer1.conv.weight" in _unwrap_state_dict(obj)
    except CheckpointError:
        return False


def proggan_from_state_dict(state_dict: dict[str, Any]) -> ProGANGenerator:
    """Build a ProGANGenerator whose size and widths are read from the state dict's shapes."""
    # Imported here so checkpoints.py can itself import this module to dispatch on family.
    from .checkpoints import check_state_dict_fits

    state_dict = _unwrap_state_dict(state_dict)
    numbers = sorted(int(m.group(1)) for m in map(_LAYER_WEIGHT_KEY.match, state_dict) if m)
    if not numbers or numbers[0] != 1:
        raise CheckpointError("checkpoint lacks key 'layer1.conv.weight': it is not a ProGAN state dict "
                              "(layer1 ... layerN with conv.weight and wscale.b, then output_RxR)")
    for n in range(1, numbers[-1] + 1):
        if n not in numbers:
            raise CheckpointError(f"checkpoint lacks key 'layer{n}.conv.weight' although it has "
                                  f"layer{numbers[-1]}: the file is incomplete")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a tensor: "
                                  f"a ProGAN checkpoint is a plain state dict")
    count = numbers[-1]
    if count % 2:
        raise CheckpointError(f"checkpoint has {count} layers (layer1..layer{count}); a ProGAN has an even "
                              f"number: two at 4x4 and two per doubling of resolution")
    weights = [state_dict[f"layer{n}.conv.weight"] for n in range(1, count + 1)]
    for n, weight in enumerate(weights, start=1):
        if weight.dim() != 4:
            raise CheckpointError(f"checkpoint key 'layer{n}.conv.weight' has shape {tuple(weight.shape)}, "
                                  f"expected a conv weight (out, in, k, k)")
    generator = ProGANGenerator(size=2 ** (count // 2 + 1), layer_widths=[w.shape[0] for w in weights],
                                z_dim=weights[0].shape[1])
    check_state_dict_fits(generator, state_dict)
    generator.load_state_dict(state_dict)
    return generator


def load_proggan(path: str | os.PathLike) -> ProGANGenerator:
    """Read a ProGAN `.pth` state dict from disk and build its generator."""
    from .checkpoints import read_checkpoint

    return proggan_from_state_dict(read_checkpoint(path))


def save_proggan(generator: ProGANGenerator, path: str | os.PathLike) -> Path:
    """Write `generator` as a plain ProGAN state dict, atomically."""
    state_dict = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save(state_dict, temporary)
    return Path(path)
