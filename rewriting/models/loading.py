"""`load_generator`: one entry point for a checkpoint path, a named download, or a bundled model."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoints import is_nvlabs_pickle, read_checkpoint, stylegan2_from_checkpoint
from .download import sha256_file

BUNDLED = {"toytown": Path(__file__).resolve().parent.parent / "toytown" / "weights" / "toytown_generator.pt"}


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None, url: str | None = None,
                       sha256_prefix: str | None = None, name: str | None = None) -> Path:
    """Local path of a generator: the given path, a bundled model, or a verified cached download."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    if name in BUNDLED:
        path = BUNDLED[name]
        if not path.is_file():
            raise CheckpointError(f"the bundled generator {name!r} is missing from the package ({path}); "
                                  f"reinstall the package or pass generator.checkpoint=PATH")
        return path
    if url:
        from .download import cached_path
        return cached_path(url, sha256_prefix=sha256_prefix)
    raise CheckpointError("no generator given: pass generator.checkpoint=PATH (a rosinality-format StyleGAN2 .pt "
                          "or a ProGAN .pth), or a named generator such as generator=toytown")


def load_generator(checkpoint: str | os.PathLike | None = None, truncation: float = 1.0, *,
                   url: str | None = None, sha256_prefix: str | None = None, name: str | None = None,
                   family: str = "auto", noise_mode: str = "fixed", fused: bool = False,
                   device: str | torch.device = "cpu", size: int | None = None) -> torch.nn.Module:
    """A generator in eval mode whose `G(z)` gives images (N, 3, H, W) in about [-1, 1]."""
    path = resolve_checkpoint(checkpoint, url, sha256_prefix, name)
    if not path.is_file():
        read_checkpoint(path)  # raises the missing-file message
    if is_nvlabs_pickle(path) and family in ("auto", "stylegan2"):
        from .nvlabs import load_nvlabs_generator
        generator, family, loaded = load_nvlabs_generator(path), "nvlabs", None
    else:
        loaded = read_checkpoint(path)
    if family == "auto":
        family = "stylegan2" if isinstance(loaded, dict) and "g_ema" in loaded else "proggan"
    if family == "nvlabs":
        generator.source_format = "nvlabs_pickle"
    elif family == "stylegan2":
        generator = stylegan2_from_checkpoint(loaded)
    elif family == "proggan":
        from .proggan import proggan_from_state_dict
        generator = proggan_from_state_dict(loaded)
    else:
        raise CheckpointError(f"generator.family={family!r} is unknown: use stylegan2, proggan or auto")
    if size is not None and checkpoint is None and generator.size != size:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {generator.size}-px generator but the config "
                              f"says size {size}; fix generator.size or the checkpoint")
    generator.truncation = float(truncation)
    generator.noise_mode = noise_mode
    generator.fused = bool(fused)
    generator.checkpoint_path = str(path)
    # Recorded so apply_deltas can refuse a delta made for another base checkpoint.
    generator.checkpoint_sha256 = sha256_file(path)
    generator.name = path.stem if checkpoint else (name or path.stem)
    generator.requires_grad_(False)
    return generator.to(device).eval()
