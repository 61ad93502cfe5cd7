"""A layer's response to a weight change, linear in that change: what the closed form solves.

StyleGAN2: values = act(blur(demod(W) · conv(keys, W)) + noise + bias). Linearized at W₀ (a
Gauss-Newton step): demodulation frozen at W₀ and the activation replaced by its slope at the
original output, so Δvalues ≈ slope · demod₀ · blur(conv(keys, ΔW)). ProGAN: values are the plain
conv output, exactly linear, so the closed form is exact there.
"""
from __future__ import annotations

import math

import torch

from ..features import LayerTrace

SQRT2 = math.sqrt(2.0)


def residual(trace: LayerTrace, target_values: torch.Tensor) -> torch.Tensor:
    """What the weight change must add to the layer's output. (n, out, H, W)."""
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
    """Factor between the basis response and the output change, per position. (n, out, H, W)."""
    module = generator.layer(layer)
    if generator.family == "stylegan2":
        demodulation = module.conv.demodulation(trace.style, module.weight)[:, :, None, None]
        slope = torch.where(trace.values >= 0, SQRT2, 0.2 * SQRT2)  # leaky ReLU(0.2)·√2 at the output
        return demodulation * slope
    return torch.ones_like(trace.values)
