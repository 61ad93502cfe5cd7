"""An NVlabs StyleGAN2(-ADA) generator's tensors mapped onto the project's (rosinality-layout) StyleGAN2.

NVlabs names → project names (`res` = 8, 16, …; block j = log2(res) - 3):
  mapping.fc{i}.weight/bias                 → style.{i+1}.weight/bias (lr multiplier folded the same way)
  mapping.w_avg                             → latent_avg
  synthesis.b4.const (C, 4, 4)              → input.input (1, C, 4, 4)
  synthesis.b4.conv1.*                      → conv1.*            (noise_const → noises.noise_0)
  synthesis.b{res}.conv0.* / conv1.*        → convs.{2j}.* / convs.{2j+1}.*
  synthesis.b4.torgb.*, b{res}.torgb.*      → to_rgb1.*, to_rgbs.{j}.*
  per layer: weight (o, i, k, k) → conv.weight (1, o, i, k, k); affine → conv.modulation;
  noise_strength → noise.weight; bias → activate.bias (ToRGB: bias (3,) → bias (1, 3, 1, 1)).
Both use the same equalized-lr gains, transposed-conv upsampling with the [1,3,3,1] filter, and
noise added before bias and activation, so the images agree to float rounding; conv_clamp is
carried over. Not representable (refused): StyleGAN3's alias-free synthesis, the 'orig' and
'resnet' architectures, conditional mapping (c_dim > 0), z_dim or mapping widths ≠ w_dim.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .nvlabs_pickle import PersistentObject, generator_object, read_nvlabs_pickle
from .stylegan2 import StyleGAN2Generator
from .stylegan2_layers import make_blur_kernel


def _refuse(path, why: str) -> CheckpointError:
    return CheckpointError(f"network pickle {str(path)!r}: {why}. Supported are StyleGAN2 generators of "
                           f"stylegan2-ada-pytorch and the StyleGAN3 repository's 'stylegan2' config "
                           f"(skip architecture, unconditional, z_dim = w_dim).")


def layer_names(resolution: int) -> list[tuple[str, str]]:
    """(NVlabs prefix, project prefix) of every layer of a generator of this resolution."""
    names = [("synthesis.b4.conv1.", "conv1."), ("synthesis.b4.torgb.", "to_rgb1.")]
    for j, res in enumerate(2 ** i for i in range(3, int(math.log2(resolution)) + 1)):
        names += [(f"synthesis.b{res}.conv0.", f"convs.{2 * j}."), (f"synthesis.b{res}.conv1.", f"convs.{2 * j + 1}."),
                  (f"synthesis.b{res}.torgb.", f"to_rgbs.{j}.")]
    return names


def nvlabs_to_project_names(resolution: int, mapping_layers: int) -> dict[str, str]:
    """Every NVlabs generator tensor name → the project's state-dict name (noise as noises.noise_i)."""
    names = {f"mapping.fc{i}.{kind}": f"style.{i + 1}.{kind}" for i in range(mapping_layers)
             for kind in ("weight", "bias")}
    names["synthesis.b4.const"] = "input.input"
    noise_index = 0
    for nvlabs, project in layer_names(resolution):
        names[nvlabs + "affine.weight"] = project + "conv.modulation.weight"
        names[nvlabs + "affine.bias"] = project + "conv.modulation.bias"
        names[nvlabs + "weight"] = project + "conv.weight"
        if "torgb" in nvlabs:
            names[nvlabs + "bias"] = project + "bias"
            continue
        names[nvlabs + "bias"] = project + "activate.bias"
        names[nvlabs + "noise_strength"] = project + "noise.weight"
        names[nvlabs + "noise_const"] = f"noises.noise_{noise_index}"
        noise_index += 1
    return names


def _check_supported(generator: PersistentObject, path) -> dict:
    kwargs = generator.init_kwargs
    modules = generator.modules
    synthesis, mapping = modules.get("synthesis"), modules.get("mapping")
    if not isinstance(synthesis, PersistentObject) or not isinstance(mapping, PersistentObject):
        raise _refuse(path, f"its generator ({generator.class_name}) has no synthesis and mapping networks")
    if "b4" not in synthesis.modules:
        raise _refuse(path, "its synthesis network is StyleGAN3's alias-free one (stylegan3-t / stylegan3-r), "
                            "whose layers are not modulated convolutions of the StyleGAN2 kind")
    if int(kwargs.get("c_dim", 0) or 0) > 0:
        raise _refuse(path, f"it is a conditional generator (c_dim={kwargs['c_dim']}): its mapping takes class "
                            f"labels, which this project's generator does not")
    if int(kwargs.get("img_channels", 3)) != 3:
        raise _refuse(path, f"it makes {kwargs.get('img_channels')}-channel images, not RGB")
    for name, block in synthesis.modules.items():
        architecture = block.init_kwargs.get("architecture", block.state.get("architecture", "skip"))
        if architecture != "skip":
            raise _refuse(path, f"its synthesis block {name} uses the {architecture!r} architecture; only 'skip' "
                                f"(the default of stylegan2-ada's configs) maps onto this project's generator")
    return kwargs


def _descendants(node: PersistentObject):
    yield node
    for child in node.modules.values():
        if isinstance(child, PersistentObject):
            yield from _descendants(child)


def _conv_clamp(synthesis: PersistentObject) -> float | None:
    """The conv_clamp the synthesis layers were built with (each layer stores its own)."""
    clamps = {node.state.get("conv_clamp", node.init_kwargs.get("conv_clamp")) for node in _descendants(synthesis)}
    clamps.discard(None)
    if len(clamps) > 1:
        raise CheckpointError(f"the synthesis layers use different conv_clamp values {sorted(clamps)}")
    return float(clamps.pop()) if clamps else None


def _mapping_lr_multiplier(mapping: PersistentObject) -> float:
    """The mapping layers' learning-rate multiplier: fc0's stored bias gain, else the kwargs, else NVlabs' 0.01."""
    first = mapping.modules.get("fc0")
    for value in (getattr(first, "state", {}).get("bias_gain"), getattr(first, "init_kwargs", {}).get("lr_multiplier"),
                  mapping.init_kwargs.get("lr_multiplier")):
        if value is not None:
            return float(value)
    return 0.01


def stylegan2_from_nvlabs(generator: PersistentObject, path: str | os.PathLike = "<pickle>") -> StyleGAN2Generator:
    """Build the project's StyleGAN2Generator from an unpickled NVlabs generator."""
    kwargs = _check_supported(generator, path)
    tensors = generator.tensors()
    mapping_layers = len([k for k in tensors if k.startswith("mapping.fc") and k.endswith(".weight")])
    w_dim = int(tensors["mapping.w_avg"].numel())
    for i in range(mapping_layers):
        shape = tuple(tensors[f"mapping.fc{i}.weight"].shape)
        if shape != (w_dim, w_dim):
            raise _refuse(path, f"its mapping layer fc{i} is {shape}; this project's mapping keeps every layer at "
                                f"w_dim = {w_dim} (z_dim and layer_features equal to w_dim)")
    resolution = int(kwargs.get("img_resolution") or 2 ** (1 + max(
        int(math.log2(int(name.split(".")[1][1:]))) for name in tensors if name.startswith("synthesis.b"))))
    channels = {4: tensors["synthesis.b4.const"].shape[0]}
    for res in (2 ** i for i in range(3, int(math.log2(resolution)) + 1)):
        channels[res] = tensors[f"synthesis.b{res}.conv1.weight"].shape[0]
    synthesis = generator.modules["synthesis"]
    resample = tensors.get("synthesis.b4.resample_filter")
    taps = (1, 3, 3, 1)
    if resample is not None:
        taps = tuple(resample.float().sum(0).tolist())
        if not torch.allclose(make_blur_kernel(taps), resample.float(), atol=1e-6):
            raise _refuse(path, "its resample filter is not separable")
    lr_multiplier = _mapping_lr_multiplier(generator.modules["mapping"])
    model = StyleGAN2Generator(resolution, style_dim=w_dim, n_mlp=mapping_layers, channels=channels,
                               lr_mlp=lr_multiplier, blur_taps=taps)
    model.set_conv_clamp(_conv_clamp(synthesis))
    names = nvlabs_to_project_names(resolution, mapping_layers)
    expected = model.state_dict()
    state = {}
    for nvlabs_name, project_name in names.items():
        if nvlabs_name not in tensors:
            if nvlabs_name.endswith(("noise_const", "noise_strength")):  # a layer built with use_noise=False
                state[project_name] = torch.zeros_like(expected[project_name])
                continue
            raise _refuse(path, f"its generator lacks {nvlabs_name}")
        state[project_name] = tensors[nvlabs_name].float().reshape(expected[project_name].shape)
    unmapped = [k for k in tensors if k not in names and not k.endswith("resample_filter") and k != "mapping.w_avg"]
    if unmapped:
        raise _refuse(path, f"its generator has tensors this project's StyleGAN2 has no place for: {unmapped[:5]}")
    for name, tensor in expected.items():  # the blur and upsampling filters: built from the same taps
        state.setdefault(name, tensor) if name.endswith(".kernel") else None
    model.load_state_dict(state)
    model.latent_avg.copy_(tensors["mapping.w_avg"].float())
    return model


def load_nvlabs_generator(path: str | os.PathLike) -> StyleGAN2Generator:
    """Read an NVlabs network pickle safely and return its G_ema as the project's generator."""
    return stylegan2_from_nvlabs(generator_object(read_nvlabs_pickle(path), path), Path(path))
