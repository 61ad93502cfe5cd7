"""A small StyleGAN2-style residual discriminator, used only to train the Toytown generator."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.stylegan2_layers import SQRT2


class EqualConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = lrelu(self.conv1(x))
        out = F.avg_pool2d(lrelu(self.conv2(out)), 2)
        skip = self.skip(F.avg_pool2d(x, 2))
        return (out + skip) / SQRT2


class Discriminator(nn.Module):
    """Images (N, 3, size, size) -> realness logits (N,)."""

    def __init__(self, size: int, channels: dict[int, int]):
        super().__init__()
        self.from_rgb = EqualConv2d(3, channels[size], 1)
        blocks = []
        res = size
        while res > 4:
            blocks.append(ResidualBlock(channels[res], channels[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = EqualConv2d(channels[4] + 1, channels[4], 3)
        self.final_linear = nn.Linear(channels[4] * 16, channels[4])
        self.output = nn.Linear(channels[4], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(lrelu(self.from_rgb(images)))
        # Minibatch standard deviation (groups of up to 4) lets D see sample diversity.
        batch, channels, height, width = x.shape
        group = min(batch, 4)
        while batch % group:
            group -= 1
        spread = x.view(group, -1, channels, height, width)
        spread = torch.sqrt(spread.var(0, unbiased=False) + 1e-8).mean([1, 2, 3])
        spread = spread.view(-1, 1, 1, 1).repeat(group, 1, height, width)
        x = lrelu(self.final_conv(torch.cat([x, spread], 1)))
        x = lrelu(self.final_linear(x.flatten(1)))
        return self.output(x).squeeze(1)


class PatchDiscriminator(nn.Module):
    """Images (N, 3, H, W) -> realness logits (N, H/4 * W/4), one per patch of about 24 px.

    It cannot see a whole scene, only local texture (a wall with or without a window grid), so a
    fine-tune against it asks for crisper detail without asking for other layouts or roof kinds.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self.from_rgb = EqualConv2d(3, channels[0], 1)
        self.blocks = nn.Sequential(ResidualBlock(channels[0], channels[1]), ResidualBlock(channels[1], channels[2]))
        self.final_conv = EqualConv2d(channels[2], channels[2], 3)
        self.output = EqualConv2d(channels[2], 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(lrelu(self.from_rgb(images)))
        return self.output(lrelu(self.final_conv(x))).flatten(1)
