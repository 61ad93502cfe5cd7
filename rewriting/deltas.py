"""Weight deltas: save, load, apply (composing several), revert bit-exactly.

A delta file (safetensors) holds only the changed tensors, keyed by their state-dict names and
in their state-dict shapes, plus metadata: base checkpoint sha256, layer, rank, edit-spec hash,
method and package version. Applying adds each tensor to the generator's; the originals are
kept on the generator so `revert_deltas` restores them exactly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .errors import CheckpointError
from .version import package_version  # noqa: F401  (importers read it from here too)

ORIGINALS_ATTRIBUTE = "_rewriting_originals"
APPLIED_ATTRIBUTE = "_rewriting_applied"


def save_delta(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write changed tensors and their metadata (values JSON-encoded) atomically."""
    encoded = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    encoded.setdefault("package_version", package_version())
    with atomic_path(path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary), metadata=encoded)
    return Path(path)


def load_delta(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata of a delta file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"delta file {str(path)!r} does not exist; pass the delta.safetensors a run wrote")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            raw = handle.metadata() or {}
    except Exception as error:
        raise CheckpointError(f"delta file {str(path)!r} is not a readable safetensors file ({error})") from None
    metadata = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return tensors, metadata


def _target_tensor(generator: torch.nn.Module, name: str) -> torch.Tensor:
    state = dict(generator.named_parameters())
    state.update(dict(generator.named_buffers()))
    if name not in state:
        raise CheckpointError(f"the delta changes {name!r}, which this generator does not have; was the delta "
                              f"made for another architecture?")
    return state[name]


def add_delta(generator: torch.nn.Module, tensors: dict[str, torch.Tensor], label: str = "delta") -> None:
    """Add ΔW to the generator's tensors in place, remembering the originals for revert."""
    originals = generator.__dict__.setdefault(ORIGINALS_ATTRIBUTE, {})
    for name, delta in tensors.items():
        target = _target_tensor(generator, name)
        if tuple(delta.shape) != tuple(target.shape):
            raise CheckpointError(f"{label} changes {name!r} with shape {tuple(delta.shape)}, but the generator's "
                                  f"tensor is {tuple(target.shape)}; the delta belongs to another generator")
    for name, delta in tensors.items():
        target = _target_tensor(generator, name)
        originals.setdefault(name, target.detach().clone())
        with torch.no_grad():
            target.add_(delta.to(device=target.device, dtype=target.dtype))
    generator.__dict__.setdefault(APPLIED_ATTRIBUTE, []).append(label)


def apply_deltas(generator: torch.nn.Module, paths: list[str | os.PathLike], check_base: bool = True
                 ) -> torch.nn.Module:
    """Apply saved deltas in order (they compose by addition); returns the same generator."""
    for path in paths:
        tensors, metadata = load_delta(path)
        base = metadata.get("base_sha256")
        own = getattr(generator, "checkpoint_sha256", None)
        if check_base and base and own and base != own:
            raise CheckpointError(f"delta {str(path)!r} was made for checkpoint sha256 {base[:12]}…, but this "
                                  f"generator was loaded from {own[:12]}…; load the matching base checkpoint or "
                                  f"pass check_base=False")
        add_delta(generator, tensors, label=str(path))
    return generator


def revert_deltas(generator: torch.nn.Module) -> torch.nn.Module:
    """Restore every tensor a delta changed to its original value, bit for bit."""
    originals = generator.__dict__.pop(ORIGINALS_ATTRIBUTE, {})
    for name, original in originals.items():
        with torch.no_grad():
            _target_tensor(generator, name).copy_(original)
    generator.__dict__.pop(APPLIED_ATTRIBUTE, None)
    return generator


def applied_deltas(generator: torch.nn.Module) -> list[str]:
    """Labels of the deltas applied since the last revert."""
    return list(generator.__dict__.get(APPLIED_ATTRIBUTE, []))
