"""StyleGAN2 generator (rosinality's layout), with the paper's layer numbering.

Layer numbering: layer 2 is the 4x4 conv (`conv1`); then per resolution r = 8, 16, ...
the upsampling conv and the plain conv, so `convs.j` is layer j + 3 and layer N >= 3 works
at 2 ** ((N + 3) // 2) px. At 256 px, layer 8 is the plain 32x32 conv.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LayerError
from .stylegan2_layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB


def rosinality_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Channel width per resolution as rosinality's Generator defines it."""
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
              128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
              512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: widths.get(res, 16 * channel_multiplier) for res in resolutions(size)}


def resolutions(size: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


# On a CPU each layer runs on as many images as keep its output near this size, so a chunk's
# activations stay in cache: the small early layers run whole batches (their convs are only efficient
# wide), the large late ones a few images at a time.
CPU_CHUNK_BYTES = 8 << 20


@dataclass
class LayerInput:
    """What a layer sees: its input features and latent, and the noise its output adds."""
    features: torch.Tensor  # (N, in, h, w)
    w: torch.Tensor  # (N, style_dim)
    noise: torch.Tensor  # (N or 1, 1, H, W)


@dataclass
class _Rows:
    """Images start..stop-1 of a batch on their way through the synthesis: features and RGB skip."""
    start: int
    stop: int
    x: torch.Tensor
    skip: torch.Tensor | None

    def split(self, size: int) -> list["_Rows"]:
        if self.stop - self.start <= size:
            return [self]
        return [_Rows(self.start + first, min(self.start + first + size, self.stop), self.x[first:first + size],
                      None if self.skip is None else self.skip[first:first + size])
                for first in range(0, self.stop - self.start, size)]


@dataclass
class SynthesisState:
    """A batch partway through the synthesis, just before `layer`: each chunk's features and RGB skip.

    `resume_synthesis` finishes it; `stored()` / `from_stored()` turn it into plain tensors and back.
    """
    layer: int
    w: torch.Tensor  # (N, style_dim)
    parts: list[_Rows]

    def stored(self) -> dict:
        """Plain tensors: the batch's features (N, C, h, w) and skip (N, 3, h', w') or None, and the chunk bounds."""
        skips = [part.skip for part in self.parts]
        return {"layer": self.layer, "w": self.w, "bounds": torch.tensor([[p.start, p.stop] for p in self.parts]),
                "features": torch.cat([part.x for part in self.parts]),
                "skip": None if skips[0] is None else torch.cat(skips)}

    @classmethod
    def from_stored(cls, stored: dict) -> "SynthesisState":
        features, skip = stored["features"], stored["skip"]
        parts = [_Rows(int(start), int(stop), features[start:stop], None if skip is None else skip[start:stop])
                 for start, stop in stored["bounds"].tolist()]
        return cls(int(stored["layer"]), stored["w"], parts)

    @property
    def nbytes(self) -> int:
        return sum(part.x.nbytes + (0 if part.skip is None else part.skip.nbytes) for part in self.parts)


class StyleGAN2Generator(nn.Module):
    """`G(z)` -> images (N, 3, H, W) in about [-1, 1]; truncation and noise mode are attributes."""

    family = "stylegan2"

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channels: dict[int, int] | None = None,
                 channel_multiplier: int = 2, lr_mlp: float = 0.01, blur_taps: tuple[float, ...] = (1, 3, 3, 1)):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.z_dim = style_dim
        self.n_mlp = n_mlp
        self.lr_mlp = lr_mlp
        self.channels = dict(channels) if channels else rosinality_channels(size, channel_multiplier)
        self.channel_multiplier = channel_multiplier
        self.blur_taps = tuple(blur_taps)
        ch = self.channels

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)])
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], style_dim, blur_taps=blur_taps)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = ch[4]
        for res in resolutions(size)[1:]:
            out_channels = ch[res]
            self.convs.append(StyledConv(in_channels, out_channels, style_dim, upsample=True, blur_taps=blur_taps))
            self.convs.append(StyledConv(out_channels, out_channels, style_dim, blur_taps=blur_taps))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_taps=blur_taps))
            in_channels = out_channels

        self.num_noise_layers = 1 + len(self.convs)
        self.noises = nn.Module()
        for i in range(self.num_noise_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        # Not part of g_ema: rosinality checkpoints keep it beside the state dict.
        self.register_buffer("latent_avg", torch.zeros(style_dim), persistent=False)
        self.truncation = 1.0
        self.noise_mode = "fixed"
        self.fused = False
        self.conv_clamp: float | None = None

    def set_conv_clamp(self, clamp: float | None) -> None:
        """Clamp every layer's output to ±clamp, as NVlabs generators trained with conv_clamp do."""
        self.conv_clamp = None if clamp is None else float(clamp)
        for module in self.modules():
            if hasattr(module, "clamp"):
                module.clamp = self.conv_clamp

    # ----- layer numbering -------------------------------------------------------------
    @property
    def layer_numbers(self) -> list[int]:
        return list(range(2, 2 + self.num_noise_layers))

    def _check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or layer not in self.layer_numbers:
            numbers = self.layer_numbers
            raise LayerError(
                f"layer={layer!r} does not exist in this {self.size}-px StyleGAN2: its editable layers are "
                f"{numbers[0]}..{numbers[-1]} (layer N >= 3 works at 2**((N+3)//2) px; "
                f"e.g. layer {min(8, numbers[-1])} is {self.layer_resolution(min(8, numbers[-1]))}x"
                f"{self.layer_resolution(min(8, numbers[-1]))}). Pass a layer from that range.")
        return layer

    def layer(self, layer: int) -> StyledConv:
        """The editable conv module of a layer number."""
        self._check_layer(layer)
        return self.conv1 if layer == 2 else self.convs[layer - 3]

    def layer_resolution(self, layer: int) -> int:
        """Resolution of the layer's output (values)."""
        return 4 if layer == 2 else 2 ** ((layer + 3) // 2)

    def layer_weight_name(self, layer: int) -> str:
        """State-dict key of the tensor a rewrite of this layer changes."""
        self._check_layer(layer)
        return "conv1.conv.weight" if layer == 2 else f"convs.{layer - 3}.conv.weight"

    def layer_editable_weight(self, layer: int) -> torch.Tensor:
        """The conv weight (out, in, k, k) of a layer, a view into the parameter."""
        return self.layer(layer).weight

    # ----- latents and noise ----------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """z (N, z_dim) -> w (N, style_dim), truncated about latent_avg."""
        w = self.style(z)
        t = self.truncation if truncation is None else truncation
        if t != 1.0:
            w = self.latent_avg + t * (w - self.latent_avg)
        return w

    def make_noise(self, batch: int, mode: str | None = None, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> list[torch.Tensor]:
        """Noise per layer: the checkpoint's fixed buffers, or fresh noise per sample."""
        mode = mode or self.noise_mode
        buffers = [getattr(self.noises, f"noise_{i}") for i in range(self.num_noise_layers)]
        if mode == "fixed":
            return buffers
        if mode == "random":
            device = device or buffers[0].device
            return [torch.randn((batch, 1, *b.shape[-2:]), generator=generator, device=device if generator is None
                                else generator.device).to(device) for b in buffers]
        if mode == "zero":
            return [torch.zeros_like(b) for b in buffers]
        raise ValueError(f"noise_mode={mode!r}: use 'fixed' (the checkpoint's buffers), 'random' or 'zero'")

    # ----- forward ---------------------------------------------------------------------
    def forward(self, z: torch.Tensor, truncation: float | None = None, noise: list[torch.Tensor] | None = None,
                fused: bool | None = None) -> torch.Tensor:
        """z (N, z_dim) -> images (N, 3, size, size)."""
        return self.synthesis(self.mapping(z, truncation), noise=noise, fused=fused)

    def _steps(self) -> list[tuple[int, StyledConv, ToRGB | None]]:
        """(layer number, conv, the ToRGB that follows it or None), in synthesis order."""
        return [(2, self.conv1, self.to_rgb1)] + [
            (k + 3, self.convs[k], self.to_rgbs[k // 2] if k % 2 else None) for k in range(len(self.convs))]

    def _run(self, parts: list[_Rows], w: torch.Tensor, noise: list[torch.Tensor], fused: bool, first_layer: int,
             stop_before_layer: int | None = None, rgb: bool = True,
             keep_state_before: int | None = None) -> tuple[list[_Rows], SynthesisState | None]:
        """Layers first_layer.. on `parts`, up to stop_before_layer (or to the image); the state before keep_state_before."""
        chunk_bytes = CPU_CHUNK_BYTES if w.device.type == "cpu" else None
        kept = None
        for layer, conv, to_rgb in self._steps():
            if layer < first_layer:
                continue
            if layer == stop_before_layer:
                break
            if layer == keep_state_before:
                kept = SynthesisState(layer, w, [_Rows(part.start, part.stop, part.x, part.skip) for part in parts])
            if chunk_bytes is not None:
                side = self.layer_resolution(layer)
                per_image = conv.conv.out_channels * side * side * parts[0].x.element_size()
                parts = [piece for part in parts for piece in part.split(max(1, chunk_bytes // per_image))]
            layer_noise = noise[layer - 2]
            for part in parts:
                rows = slice(part.start, part.stop)
                part.x = conv(part.x, w[rows], layer_noise if layer_noise.shape[0] == 1 else layer_noise[rows],
                              fused=fused)
                if to_rgb is not None and rgb:
                    part.skip = to_rgb(part.x, w[rows], part.skip, fused=fused)
        return parts, kept

    @staticmethod
    def _image(parts: list[_Rows]) -> torch.Tensor:
        # Contiguous: on a CPU the upsampling layers hand on channels-last tensors.
        return (torch.cat([part.skip for part in parts]) if len(parts) > 1 else parts[0].skip).contiguous()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None, fused: bool | None = None,
                  stop_before_layer: int | None = None):
        """w (N, style_dim) -> images; or, with stop_before_layer, that layer's LayerInput."""
        noise = noise if noise is not None else self.make_noise(w.shape[0])
        fused = self.fused if fused is None else fused
        parts, _ = self._run([_Rows(0, w.shape[0], self.input(w.shape[0]), None)], w, noise, fused, 2,
                             stop_before_layer, rgb=stop_before_layer is None)
        if stop_before_layer is not None:
            features = torch.cat([part.x for part in parts]) if len(parts) > 1 else parts[0].x
            return LayerInput(features, w, noise[stop_before_layer - 2])  # channels-last after a CPU upsampling
        return self._image(parts)

    def synthesis_with_state(self, w: torch.Tensor, layer: int, noise: list[torch.Tensor] | None = None,
                             fused: bool | None = None) -> tuple[torch.Tensor, SynthesisState]:
        """w (N, style_dim) -> (images (N, 3, size, size), the state just before `layer`)."""
        self._check_layer(layer)
        noise = noise if noise is not None else self.make_noise(w.shape[0])
        fused = self.fused if fused is None else fused
        parts, kept = self._run([_Rows(0, w.shape[0], self.input(w.shape[0]), None)], w, noise, fused, 2,
                                keep_state_before=layer)
        return self._image(parts), kept

    def synthesis_state(self, w: torch.Tensor, layer: int, noise: list[torch.Tensor] | None = None,
                        fused: bool | None = None) -> SynthesisState:
        """w (N, style_dim) -> the state just before `layer` (its features and the RGB skip so far)."""
        self._check_layer(layer)
        noise = noise if noise is not None else self.make_noise(w.shape[0])
        fused = self.fused if fused is None else fused
        parts, _ = self._run([_Rows(0, w.shape[0], self.input(w.shape[0]), None)], w, noise, fused, 2,
                             stop_before_layer=layer)
        return SynthesisState(layer, w, parts)

    def resume_synthesis(self, state: SynthesisState, noise: list[torch.Tensor] | None = None,
                         fused: bool | None = None) -> torch.Tensor:
        """The images from a state (made by this generator or one equal to it before state.layer).

        Equal to `synthesis(state.w)` bit for bit: the layers run on the same chunks as a whole pass.
        """
        noise = noise if noise is not None else self.make_noise(state.w.shape[0])
        fused = self.fused if fused is None else fused
        parts = [_Rows(part.start, part.stop, part.x, part.skip) for part in state.parts]
        parts, _ = self._run(parts, state.w, noise, fused, state.layer)
        return self._image(parts)

    def first_differing_layer(self, other: nn.Module) -> int | None:
        """The first layer whose output can differ between this generator and `other` (None: all equal).

        Everything before it (mapping, earlier layers, their noise and ToRGB) holds equal tensors,
        so a state of this generator before that layer is also `other`'s; 2 when nothing is shared.
        """
        settings = lambda g: (g.size, g.channels, g.truncation, g.conv_clamp, g.noise_mode, g.fused)  # noqa: E731
        if type(other) is not type(self) or settings(other) != settings(self):
            return 2
        mine, theirs = self.state_dict(keep_vars=True), other.state_dict(keep_vars=True)

        def equal(*prefixes: str) -> bool:
            names = [name for name in mine if name.startswith(prefixes)]
            return all(name in theirs and torch.equal(mine[name], theirs[name]) for name in names)

        if not (equal("style.", "input.") and torch.equal(self.latent_avg, other.latent_avg)):
            return 2
        for layer, _, to_rgb in self._steps():
            conv_prefix = "conv1." if layer == 2 else f"convs.{layer - 3}."
            rgb_prefix = () if to_rgb is None else ("to_rgb1.",) if layer == 2 else (f"to_rgbs.{(layer - 3) // 2}.",)
            if not equal(conv_prefix, f"noises.noise_{layer - 2}", *rgb_prefix):
                return layer
        return None

    def layer_input(self, z: torch.Tensor, layer: int, noise: list[torch.Tensor] | None = None) -> LayerInput:
        """Run the generator up to `layer` and return what that layer receives."""
        self._check_layer(layer)
        return self.synthesis(self.mapping(z), noise=noise, stop_before_layer=layer)
