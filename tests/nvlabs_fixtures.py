"""Small NVlabs-format network pickles written from a project generator, for the loader's tests.

The tree mirrors what stylegan2-ada-pytorch pickles: persistent objects (Generator → mapping /
synthesis → blocks → layers) whose state holds parameters, buffers, submodules and init kwargs,
written by a stand-in for torch_utils.persistence so no NVlabs code is needed.
"""
from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager

import torch


def _reconstruct_persistent_obj(meta):  # pragma: no cover - the loader never calls this
    raise AssertionError("NVlabs' reconstruct function must never run")


class Persistent:
    """Pickles as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, as NVlabs' classes do."""

    def __init__(self, class_name, init_kwargs=None, parameters=None, buffers=None, modules=None, **attributes):
        parameter = lambda t: torch.nn.Parameter(t.detach().clone().float(), requires_grad=False)  # noqa: E731
        self.meta = {"type": "class", "version": 6, "module_src": "raise SystemExit('source ran')",
                     "class_name": class_name,
                     "state": {"training": False, "_init_args": (), "_init_kwargs": dict(init_kwargs or {}),
                               "_parameters": OrderedDict((k, parameter(v)) for k, v in (parameters or {}).items()),
                               "_buffers": OrderedDict((k, None if v is None else v.detach().clone())
                                            for k, v in (buffers or {}).items()),
                               "_modules": OrderedDict(modules or {}), "_non_persistent_buffers_set": set(),
                               **attributes}}

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


@contextmanager
def persistence_module():
    """Make `torch_utils.persistence` importable by pickle while writing."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": package, "torch_utils.persistence": module})
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def _affine(conv):
    return Persistent("FullyConnectedLayer", {"bias_init": 1},
                      {"weight": conv.modulation.weight, "bias": conv.modulation.bias})


def _layer(styled, resolution, up, conv_clamp, filter_):
    conv = styled.conv
    return Persistent("SynthesisLayer", {"resolution": resolution, "up": up, "conv_clamp": conv_clamp},
                      {"weight": conv.weight[0], "noise_strength": styled.noise.weight.reshape(()),
                       "bias": styled.activate.bias},
                      {"resample_filter": filter_, "noise_const": None}, {"affine": _affine(conv)})


def _torgb(to_rgb, conv_clamp):
    return Persistent("ToRGBLayer", {"conv_clamp": conv_clamp},
                      {"weight": to_rgb.conv.weight[0], "bias": to_rgb.bias.reshape(3)},
                      modules={"affine": _affine(to_rgb.conv)})


def nvlabs_generator_tree(generator, conv_clamp=None, c_dim: int = 0, architecture: str = "skip") -> Persistent:
    """The persistent-object tree NVlabs would pickle for `generator` (a project StyleGAN2Generator)."""
    filter_ = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1]))
    filter_ = filter_ / filter_.sum()
    noises = [getattr(generator.noises, f"noise_{i}")[0, 0] for i in range(generator.num_noise_layers)]
    mapping_layers = [m for m in generator.style if hasattr(m, "weight")]
    mapping = Persistent("MappingNetwork", {"z_dim": generator.z_dim, "c_dim": c_dim, "w_dim": generator.style_dim,
                                            "num_layers": len(mapping_layers), "lr_multiplier": generator.lr_mlp},
                         buffers={"w_avg": generator.latent_avg},
                         modules={f"fc{i}": Persistent("FullyConnectedLayer", {"lr_multiplier": generator.lr_mlp, "activation": "lrelu"},
                                                       {"weight": m.weight, "bias": m.bias})
                                  for i, m in enumerate(mapping_layers)})
    block_kwargs = {"architecture": architecture, "conv_clamp": conv_clamp}
    b4_conv1 = _layer(generator.conv1, 4, 1, conv_clamp, filter_)
    b4_conv1.meta["state"]["_buffers"]["noise_const"] = noises[0].clone()
    blocks = {"b4": Persistent("SynthesisBlock", {"resolution": 4, **block_kwargs}, {"const": generator.input.input[0]},
                               {"resample_filter": filter_}, {"conv1": b4_conv1,
                                                              "torgb": _torgb(generator.to_rgb1, conv_clamp)},
                               architecture=architecture)}
    for j, to_rgb in enumerate(generator.to_rgbs):
        resolution = 2 ** (j + 3)
        conv0 = _layer(generator.convs[2 * j], resolution, 2, conv_clamp, filter_)
        conv1 = _layer(generator.convs[2 * j + 1], resolution, 1, conv_clamp, filter_)
        conv0.meta["state"]["_buffers"]["noise_const"] = noises[2 * j + 1].clone()
        conv1.meta["state"]["_buffers"]["noise_const"] = noises[2 * j + 2].clone()
        blocks[f"b{resolution}"] = Persistent("SynthesisBlock", {"resolution": resolution, **block_kwargs},
                                              buffers={"resample_filter": filter_},
                                              modules={"conv0": conv0, "conv1": conv1,
                                                       "torgb": _torgb(to_rgb, conv_clamp)},
                                              architecture=architecture)
    synthesis = Persistent("SynthesisNetwork", {"w_dim": generator.style_dim, "img_resolution": generator.size},
                           modules=blocks)
    return Persistent("Generator", {"z_dim": generator.z_dim, "c_dim": c_dim, "w_dim": generator.style_dim,
                                    "img_resolution": generator.size, "img_channels": 3,
                                    "mapping_kwargs": {"num_layers": len(mapping_layers)}},
                      modules={"mapping": mapping, "synthesis": synthesis})


def write_network_pickle(path, generator_tree, extra: dict | None = None) -> None:
    """A network-snapshot.pkl as NVlabs' training writes it: {'G', 'D', 'G_ema', …}."""
    with persistence_module(), open(path, "wb") as file:
        pickle.dump({"G": generator_tree, "D": None, "G_ema": generator_tree, "augment_pipe": None,
                     "training_set_kwargs": None, **(extra or {})}, file)
