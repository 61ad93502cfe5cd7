"""Keys (a layer's modulated input) and values (its output) for given latents."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .edits.latents import latents_for_ids
from .models.stylegan2 import LayerInput


@dataclass
class LayerTrace:
    """Everything needed to recompute a layer's output from its keys with another weight."""
    keys: torch.Tensor  # (N, in, h, w)
    style: torch.Tensor | None  # (N, in) per-sample styles (StyleGAN2) or None (ProGAN)
    noise: torch.Tensor | None  # (N or 1, 1, H, W) noise the layer adds, or None
    values: torch.Tensor  # (N, out, H, W) the layer's output with its own weight

    def select(self, index) -> "LayerTrace":
        """The trace of a subset of samples."""
        def pick(t):
            if t is None or t.shape[0] == 1:
                return t
            return t[index]
        return LayerTrace(self.keys[index], pick(self.style), pick(self.noise), self.values[index])


def noise_for(generator, batch: int, seed: int | None = None, mode: str | None = None,
              device: torch.device | None = None) -> list[torch.Tensor] | None:
    """Per-layer noise: the fixed buffers, or fresh noise drawn from `seed` (reproducible)."""
    if not hasattr(generator, "make_noise"):
        return None
    mode = mode or generator.noise_mode
    rng = torch.Generator().manual_seed(seed) if (seed is not None and mode == "random") else None
    noise = generator.make_noise(batch, mode=mode, generator=rng)
    return [n.to(device) for n in noise] if device is not None else noise


@torch.no_grad()
def layer_keys(generator, z: torch.Tensor, layer: int, noise: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, LayerInput, torch.Tensor | None]:
    """Keys at `layer` for latents z (N, z_dim) -> (keys (N, in, h, w), layer input, style)."""
    layer_input = generator.layer_input(z, layer, noise=noise)
    keys, style = generator.layer(layer).modulate(layer_input.features, layer_input.w)
    return keys, layer_input, style


@torch.no_grad()
def trace_layer(generator, z: torch.Tensor, layer: int, noise: list[torch.Tensor] | None = None) -> LayerTrace:
    """Keys, styles, noise and values of `layer` for latents z (N, z_dim)."""
    keys, layer_input, style = layer_keys(generator, z, layer, noise)
    values = generator.layer(layer).values_from_keys(keys, style, layer_input.noise)
    return LayerTrace(keys, style, layer_input.noise, values)


def trace_images(generator, layer: int, image_ids: list[int], seed: int, batch_size: int = 8) -> LayerTrace:
    """Layer traces of the request's images, each with its own reproducible noise, traced a few at a time."""
    device = next(generator.parameters()).device
    z = latents_for_ids(image_ids, generator.z_dim, seed).to(device)
    per_image = [noise_for(generator, 1, seed=image_id, device=device) for image_id in image_ids]
    traces = []
    for start in range(0, len(image_ids), batch_size):
        chunk = per_image[start:start + batch_size]
        traces.append(trace_layer(generator, z[start:start + batch_size], layer, batched_noise(chunk)))
    keys = torch.cat([t.keys for t in traces])
    values = torch.cat([t.values for t in traces])
    style = None if traces[0].style is None else torch.cat([t.style for t in traces])
    noise = traces[0].noise
    if noise is not None and any(t.noise is not noise for t in traces):
        noise = torch.cat([t.noise.expand(len(t.keys), *t.noise.shape[1:]) for t in traces])
    return LayerTrace(keys, style, noise, values)


def batched_noise(per_image: list[list[torch.Tensor] | None]) -> list[torch.Tensor] | None:
    """One noise list for a batch: a layer's shared buffer stays shared (1, 1, H, W), per-image noise is stacked."""
    if per_image[0] is None:
        return None
    layers = []
    for tensors in zip(*per_image):
        shared = all(t is tensors[0] for t in tensors)
        layers.append(tensors[0] if shared else torch.cat([t.expand(1, *t.shape[1:]) for t in tensors]))
    return layers


def layer_values(generator, layer: int, trace: LayerTrace, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's output for a trace's keys, with a replacement weight (out, in, k, k) or its own."""
    return generator.layer(layer).values_from_keys(trace.keys, trace.style, trace.noise, weight)
