"""A layer's response to a weight change, linear in that change: what the closed form solves.

StyleGAN2: values = act(blur(demod(W) · conv(keys, W)) + noise + bias). With demodulation frozen
at the original weight W₀, act⁻¹(values) is linear in W, and noise and bias cancel in the residual
act⁻¹(v*) − act⁻¹(v₀). ProGAN: values are the plain conv output, exactly linear.
"""
from __future__ import annotations

import math

import torch

from ..features import LayerTrace

SQRT2 = math.sqrt(2.0)


def inverse_activation(values: torch.Tensor) -> torch.Tensor:
    """Inverse of leaky ReLU(0.2) · √2."""
    return torch.where(values >= 0, values / SQRT2, values / (0.2 * SQRT2))


def residual(generator, trace: LayerTrace, target_values: torch.Tensor) -> torch.Tensor:
    """What the linear response must add, in the space where the layer is linear. (n, out, H, W)."""
    if generator.family == "stylegan2":
        return inverse_activation(target_values) - inverse_activation(trace.values)
    return target_values - trace.values


def basis_responses(generator, layer: int, trace: LayerTrace, directions: torch.Tensor) -> torch.Tensor:
    """Response to each unit change Λ[o, j, a, b] = 1 (same for every o, before demodulation).

    directions (r, in) -> (n, r*k*k, H, W).
    """
    module = generator.layer(layer)
    kernel = module.weight.shape[-1]
    rank = directions.shape[0]
    unit = torch.eye(rank * kernel * kernel, device=trace.keys.device).view(-1, rank, kernel, kernel)
    basis_weight = torch.einsum("bjxy,ji->bixy", unit, directions.to(trace.keys))
    if generator.family == "stylegan2":
        ones = torch.ones(trace.keys.shape[0], basis_weight.shape[0], device=trace.keys.device)
        return module.conv.convolve(trace.keys, trace.style, basis_weight, demodulation=ones)
    return module.values_from_keys(trace.keys, None, None, basis_weight)


def output_scale(generator, layer: int, trace: LayerTrace) -> torch.Tensor:
    """Per-sample, per-output-channel factor applied after the conv (frozen demodulation). (n, out)."""
    module = generator.layer(layer)
    count = trace.keys.shape[0]
    if generator.family == "stylegan2":
        return module.conv.demodulation(trace.style, module.weight)
    return torch.ones(count, module.weight.shape[0], device=trace.keys.device)
