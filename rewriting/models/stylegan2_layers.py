"""StyleGAN2 building blocks in pure PyTorch, named so state dicts match rosinality's.

The modulated convolution is kept split: modulation (w -> style s), modulate (x * s:
the *keys* of the rewriting method), a plain convolution with the shared weight, blur,
then demodulation from the (possibly edited) weight, noise and bias in one multiply-add,
and the activation in place.
The fused grouped-conv form of the original StyleGAN2 is kept beside it for parity.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def make_blur_kernel(taps: tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR kernel normalised to sum 1. Shape (k, k)."""
    kernel = torch.tensor(taps, dtype=torch.float32)
    kernel = kernel[None, :] * kernel[:, None]
    return kernel / kernel.sum()


def depthwise_fir(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """upfirdn2d with up=down=1: pad, then true convolution with `kernel` per channel."""
    channels = x.shape[1]
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(channels, 1, *kernel.shape)
    if pad[0] == pad[1]:
        # The conv pads as it reads: no padded copy of x is written first (a fill and a copy pass).
        return F.conv2d(x, weight, padding=pad[0], groups=channels)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, weight, groups=channels)


def upsample_fir(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """upfirdn2d with up=2, pad=(k/2, k/2 - 1), as a strided transposed convolution (fast on CPU)."""
    channels = x.shape[1]
    pad = kernel.shape[0] // 2 - 1
    weight = kernel.to(x.dtype)[None, None].expand(channels, 1, *kernel.shape)
    return F.conv_transpose2d(x, weight, stride=2, padding=pad, groups=channels)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate; `lr_mul` as stored in rosinality checkpoints."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        out = out + self.bias * self.lr_mul
        if self.activation:
            out = F.leaky_relu(out, 0.2) * SQRT2
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Blur(nn.Module):
    def __init__(self, kernel: torch.Tensor, pad: tuple[int, int]):
        super().__init__()
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_fir(x, self.kernel, self.pad)


class Upsample(nn.Module):
    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_fir(x, self.kernel)


class ModulatedConv2d(nn.Module):
    """Modulated convolution; `weight` (1, out, in, k, k) is the tensor a rewrite edits."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_taps: tuple[float, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            factor = 2
            p = (len(blur_taps) - factor) - (kernel_size - 1)
            self.blur = Blur(make_blur_kernel(blur_taps) * factor**2, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))

    def style(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample channel style s from latent w. (N, style_dim) -> (N, in)."""
        return self.modulation(w)

    def demodulation(self, style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-output-channel demodulation factor. -> (N, out)."""
        squared = (weight * self.scale).pow(2).sum(dim=(2, 3))  # (out, in)
        return torch.rsqrt(style.pow(2) @ squared.t() + 1e-8)

    def convolve_undemodulated(self, keys: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Plain conv of the modulated input (and blur): the layer before demodulation.

        keys (N, in, h, w), weight (out, in, k, k) or None for the layer's own -> (N, out, H, W),
        H = 2h on upsampling layers.
        """
        if weight is None:
            weight = self.weight[0]
        scaled = weight * self.scale
        if self.upsample:
            if keys.device.type == "cpu":
                # oneDNN's strided transposed conv and the depthwise blur after it are ~3x faster on
                # channels-last tensors on a CPU (the same numbers); later layers take either layout.
                keys = keys.contiguous(memory_format=torch.channels_last)
            # Demodulation is a per-image, per-channel factor, so it commutes with the blur: it is
            # applied after, in the same pass as the noise and bias.
            return self.blur(F.conv_transpose2d(keys, scaled.transpose(0, 1), stride=2, padding=0))
        return F.conv2d(keys, scaled, padding=self.kernel_size // 2)

    def convolve(self, keys: torch.Tensor, style: torch.Tensor, weight: torch.Tensor | None = None,
                 demodulation: torch.Tensor | None = None) -> torch.Tensor:
        """Plain conv of the modulated input, demodulation and blur.

        keys (N, in, h, w), style (N, in), weight (out, in, k, k) or None for the layer's own,
        demodulation (N, out) to use instead of the one the weight implies
        -> (N, out, H, W) with H = 2h on upsampling layers.
        """
        out = self.convolve_undemodulated(keys, weight)
        if demodulation is None and self.demodulate:
            demodulation = self.demodulation(style, self.weight[0] if weight is None else weight)
        if demodulation is not None:
            out = out * demodulation[:, :, None, None]
        return out

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        style = self.style(w)
        if not fused:
            return self.convolve(x * style[:, :, None, None], style)
        return self.forward_fused(x, style)

    def forward_fused(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The original StyleGAN2 form: per-sample modulated weights as one grouped conv."""
        batch, in_channels, height, width = x.shape
        weight = self.scale * self.weight * style[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
        k = self.kernel_size
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channels, self.out_channels, k, k)
            out = F.conv_transpose2d(x.reshape(1, batch * in_channels, height, width), weight,
                                     padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channels, *out.shape[-2:])
            return self.blur(out)
        weight = weight.view(batch * self.out_channels, in_channels, k, k)
        out = F.conv2d(x.reshape(1, batch * in_channels, height, width), weight, padding=k // 2, groups=batch)
        return out.view(batch, self.out_channels, *out.shape[-2:])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp: float | None = None  # NVlabs' conv_clamp: outputs kept within ±clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)

    def scaled_and_shifted(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """forward(x * scale + shift) in two passes over x. x (N, C, H, W), scale (N, C), shift (N or 1, 1, H, W)."""
        # leaky_relu(v) * g = leaky_relu(g * v) for g > 0, so the gain joins the scale and the shift; the
        # shift and the bias are one image's worth, added to every image by the same multiply-add.
        offset = (shift + self.bias[None, :, None, None]) * SQRT2
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            offset = offset.contiguous(memory_format=torch.channels_last)  # else the output would be NCHW
        out = F.leaky_relu(torch.addcmul(offset, x, (scale * SQRT2)[:, :, None, None]), 0.2, inplace=True)
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)


class StyledConv(nn.Module):
    """One editable generator layer: keys = x * s, values = act(blur(demod(conv(keys))) + noise)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False,
                 blur_taps: tuple[float, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample, blur_taps=blur_taps)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    @property
    def upsample(self) -> bool:
        return self.conv.upsample

    @property
    def weight(self) -> torch.Tensor:
        """The edited tensor as (out, in, k, k), a view of the stored (1, out, in, k, k)."""
        return self.conv.weight[0]

    def modulate(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and styles at this layer. x (N, in, h, w), w (N, style_dim) -> (keys, style (N, in))."""
        style = self.conv.style(w)
        return x * style[:, :, None, None], style

    def values_from_keys(self, keys: torch.Tensor, style: torch.Tensor, noise: torch.Tensor,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
        """Layer output for given keys, optionally with a replacement weight (out, in, k, k)."""
        weight = self.weight if weight is None else weight
        return self.activate.scaled_and_shifted(self.conv.convolve_undemodulated(keys, weight),
                                                self.conv.demodulation(style, weight), self.noise.weight * noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused:
            return self.activate(self.noise(self.conv(x, w, fused=True), noise))
        return self.values_from_keys(*self.modulate(x, w), noise)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_taps: tuple[float, ...] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(make_blur_kernel(blur_taps) * 4)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp: float | None = None  # NVlabs' conv_clamp, applied before the skip is added

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None,
                fused: bool = False) -> torch.Tensor:
        out = self.conv(x, w, fused=fused) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out
