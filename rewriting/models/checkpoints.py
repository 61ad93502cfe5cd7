"""Rosinality-format StyleGAN2 checkpoints: read the architecture from the file, load, save, hash."""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import CheckpointError
from .stylegan2 import StyleGAN2Generator


# Globals a real checkpoint may hold besides tensors and containers: rosinality's train.py saves its
# argparse options as `args`. Nothing else is allowed, so no checkpoint can make torch.load run code.
SAFE_CHECKPOINT_GLOBALS = (argparse.Namespace,)
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True and the allow-list above: tensors and plain containers only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol.*")
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)


def is_nvlabs_pickle(path: Path) -> bool:
    """Whether a file looks like an NVlabs network pickle (its persistence module is named near the start)."""
    with open(path, "rb") as file:
        return b"torch_utils.persistence" in file.read(1 << 22)


def refusal_reason(error: Exception, path: Path) -> str:
    """Why the safe loader refused a file, in a user's words."""
    text = str(error)
    if is_nvlabs_pickle(path):
        return ("it is an NVlabs network pickle, which torch.load cannot open safely; load it with "
                "load_generator(path) or generator.checkpoint=PATH, which read it without running its code")
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        name = refused.group(1)
        return (f"it asks to load the Python object {name}, which could run arbitrary code; a generator "
                f"checkpoint holds only tensors, containers and numbers")
    with open(path, "rb") as file:
        head = file.read(2)
    if not head.startswith((b"PK", b"\x80")):  # neither torch's zip format nor a binary pickle
        return "it could not be read by torch.load: it is not a PyTorch checkpoint (nor a pickle)"
    if "Unsupported operand" in text:
        return ("it is not a plain PyTorch checkpoint of tensors and containers (a pickle that builds Python "
                "objects could run arbitrary code, so it is not opened)")
    cause = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
    cause = [line for line in cause if line.strip() and "weights_only" not in line and "torch.load" not in line]
    return f"it could not be read by torch.load ({cause[0] if cause else type(error).__name__}); is it a complete checkpoint?"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint's tensors on CPU without running code from it; one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist: pass generator.checkpoint=PATH "
                              f"with the path of a rosinality-format StyleGAN2 .pt file (or a ProGAN .pth).")
    try:
        return safe_torch_load(path)
    except Exception as error:  # torch raises many kinds for a corrupt or unsafe file
        raise CheckpointError(f"checkpoint {str(path)!r} was not loaded: {refusal_reason(error, path)}. Loading "
                              f"never runs code from a checkpoint; re-save its tensors with torch.save "
                              f"(state dicts, tensors, lists, dicts, numbers) to use it.") from None


def _count(state_dict: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({regex.match(k).group(1) for k in state_dict if regex.match(k)})


def stylegan2_architecture(state_dict: dict[str, torch.Tensor], args: dict | None = None) -> dict[str, Any]:
    """Generator constructor arguments read from a g_ema state dict's tensor shapes."""
    try:
        style_dim = state_dict["style.1.weight"].shape[1]
        n_mlp = _count(state_dict, r"style\.(\d+)\.weight$")
        blocks = _count(state_dict, r"to_rgbs\.(\d+)\.conv\.weight$")
        channels = {4: state_dict["input.input"].shape[1]}
        for j in range(blocks):
            channels[2 ** (j + 3)] = state_dict[f"convs.{2 * j}.conv.weight"].shape[1]
    except KeyError as missing:
        raise CheckpointError(f"the checkpoint's g_ema has no key {missing}: it is not a rosinality-format "
                              f"StyleGAN2 generator") from None
    size = 2 ** (blocks + 2)
    args = dict(args or {})
    if args.get("size") not in (None, size):
        raise CheckpointError(f"the checkpoint's args say size {args['size']} but its to_rgbs layers make "
                              f"a {size}-px generator")
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channels": channels,
            "lr_mlp": float(args.get("lr_mlp", 0.01)), "blur_taps": tuple(args.get("blur_taps") or (1, 3, 3, 1))}


def check_state_dict_fits(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming the first key whose presence or shape does not fit `model`."""
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        if key not in expected:
            raise CheckpointError(f"checkpoint key {key!r} {tuple(tensor.shape)} does not fit the generator: "
                                  f"it has no such parameter")
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"checkpoint key {key!r} has shape {tuple(tensor.shape)}, the generator "
                                  f"expects {tuple(expected[key].shape)}")
    for key in expected:
        if key not in state_dict:
            raise CheckpointError(f"checkpoint lacks key {key!r} {tuple(expected[key].shape)} that the "
                                  f"generator needs")


def stylegan2_from_checkpoint(checkpoint: dict[str, Any]) -> StyleGAN2Generator:
    """Build a StyleGAN2Generator from a loaded rosinality checkpoint dict."""
    if "g_ema" not in checkpoint:
        raise CheckpointError("the checkpoint has no 'g_ema' entry: a rosinality-format StyleGAN2 checkpoint is "
                              "{'g_ema': state_dict, 'latent_avg': w_avg}")
    state_dict = checkpoint["g_ema"]
    args = checkpoint.get("args")
    args = vars(args) if hasattr(args, "__dict__") else args
    generator = StyleGAN2Generator(**stylegan2_architecture(state_dict, args))
    check_state_dict_fits(generator, state_dict)
    generator.load_state_dict(state_dict)
    generator.set_conv_clamp((args or {}).get("conv_clamp"))
    latent_avg = checkpoint.get("latent_avg")
    if latent_avg is not None:
        latent_avg = torch.as_tensor(latent_avg, dtype=torch.float32).reshape(-1)
        if latent_avg.numel() != generator.style_dim:
            raise CheckpointError(f"latent_avg has {latent_avg.numel()} elements, expected {generator.style_dim}")
        generator.latent_avg.copy_(latent_avg)
    else:
        generator.latent_avg.copy_(estimate_latent_avg(generator))
    return generator


@torch.no_grad()
def estimate_latent_avg(generator: StyleGAN2Generator, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean w over seeded z, for checkpoints saved without latent_avg."""
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return generator.style(z).mean(0)


def save_stylegan2(generator: StyleGAN2Generator, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `generator` as a rosinality checkpoint {'g_ema', 'latent_avg', 'args'}, atomically."""
    state_dict = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    args = {"size": generator.size, "style_dim": generator.style_dim, "n_mlp": generator.n_mlp,
            "channel_multiplier": generator.channel_multiplier, "lr_mlp": generator.lr_mlp,
            "channels": dict(generator.channels), "blur_taps": list(generator.blur_taps)}
    if generator.conv_clamp is not None:
        args["conv_clamp"] = generator.conv_clamp
    checkpoint = {"g_ema": state_dict, "latent_avg": generator.latent_avg.detach().cpu().clone(), "args": args}
    if extra:
        checkpoint.update(extra)
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    return Path(path)


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Hash of every tensor a module's output depends on (parameters and buffers, by name)."""
    digest = hashlib.sha256()
    tensors = dict(module.state_dict())
    for name, buffer in module.named_buffers():
        tensors.setdefault(name, buffer)  # non-persistent buffers such as latent_avg matter too
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")  # 0-dim too
    return digest.hexdigest()
