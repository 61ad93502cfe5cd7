"""Write an edited generator back into its NVlabs network pickle, every byte but the edited tensors' unchanged.

Each tensor storage in a network pickle is a nested torch.save stream ending in the raw data. The
export finds the storages holding G_ema's edited tensors (by their original contents), overwrites
just their raw data with the edited values, and leaves every other byte as it was, so NVlabs'
own tools load the result as they loaded the original.
"""
from __future__ import annotations

import io
import os
import pickletools
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import CheckpointError
from .nvlabs import nvlabs_to_project_names
from .nvlabs_pickle import generator_object, read_nvlabs_pickle

# Opcodes carrying a bytes payload, with the width of their length prefix.
BYTES_OPCODES = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8}


def _storage_payloads(data: bytes) -> list[tuple[int, bytes, torch.Tensor]]:
    """(payload offset, payload, storage as a flat tensor) for every nested storage stream in a pickle."""
    found = []
    for opcode, argument, position in pickletools.genops(data):
        if opcode.name not in BYTES_OPCODES or not isinstance(argument, bytes) or len(argument) < 16:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = torch.load(io.BytesIO(argument), map_location="cpu", weights_only=True)
        except Exception:
            continue  # bytes that are not a storage
        if isinstance(storage, torch.TypedStorage):
            flat = torch.tensor([], dtype=storage.dtype).set_(storage)
        elif isinstance(storage, torch.UntypedStorage):
            flat = torch.tensor([], dtype=torch.uint8).set_(storage)
        else:
            continue
        found.append((position + 1 + BYTES_OPCODES[opcode.name], argument, flat))
    return found


def edited_nvlabs_tensors(base_path: str | os.PathLike, deltas: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """NVlabs name → (original tensor, edited tensor) for each project-named delta on the pickle's G_ema."""
    generator = generator_object(read_nvlabs_pickle(base_path), base_path)
    tensors = generator.tensors()
    mapping_layers = len([k for k in tensors if k.startswith("mapping.fc") and k.endswith(".weight")])
    resolution = int(generator.init_kwargs.get("img_resolution"))
    to_nvlabs = {project: nvlabs for nvlabs, project in nvlabs_to_project_names(resolution, mapping_layers).items()}
    to_nvlabs["latent_avg"] = "mapping.w_avg"
    edited = {}
    for name, delta in deltas.items():
        if name not in to_nvlabs or to_nvlabs[name] not in tensors:
            raise CheckpointError(f"the delta changes {name!r}, which the pickle {str(base_path)!r}'s generator "
                                  f"does not have; was it made for another generator?")
        original = tensors[to_nvlabs[name]]
        if delta.numel() != original.numel():
            raise CheckpointError(f"the delta's {name!r} has {delta.numel()} values, the pickle's "
                                  f"{to_nvlabs[name]} {original.numel()}; the delta belongs to another generator")
        new = (original.double() + delta.reshape(original.shape).double()).to(original.dtype)
        edited[to_nvlabs[name]] = (original, new)
    return edited


def export_nvlabs_pickle(base_path: str | os.PathLike, deltas: dict[str, torch.Tensor],
                         out_path: str | os.PathLike) -> Path:
    """Write `base_path` with G_ema's tensors plus `deltas` (project state-dict names) to `out_path`, atomically."""
    data = Path(base_path).read_bytes()
    edited = edited_nvlabs_tensors(base_path, deltas)
    payloads = _storage_payloads(data)
    patched = bytearray(data)
    for name, (original, new) in edited.items():
        matches = [(offset, payload, flat) for offset, payload, flat in payloads
                   if flat.dtype == original.dtype and flat.numel() == original.numel()
                   and torch.equal(flat, original.reshape(-1))]
        if not matches:
            raise CheckpointError(f"the storage of {name} was not found in {str(base_path)!r} as a storage of its "
                                  f"own; this pickle cannot be patched, export the rosinality .pt instead")
        raw = new.contiguous().reshape(-1).numpy().tobytes()
        for offset, payload, _ in matches:  # G and G_ema may share an untrained tensor's storage
            start = offset + len(payload) - len(raw)
            patched[start:start + len(raw)] = raw
    with atomic_path(out_path) as temporary:
        Path(temporary).write_bytes(bytes(patched))
    return Path(out_path)


def save_edited_generator(generator, out_path: str | os.PathLike, deltas: dict[str, torch.Tensor],
                          extra: dict | None = None) -> Path:
    """The edited generator in its input's format: an NVlabs pickle for a pickle, else rosinality's .pt."""
    base = getattr(generator, "checkpoint_path", None)
    out_path = Path(out_path)
    if getattr(generator, "source_format", None) == "nvlabs_pickle" and base:
        return export_nvlabs_pickle(base, deltas, out_path.with_suffix(".pkl"))
    if generator.family == "stylegan2":
        from .checkpoints import save_stylegan2
        return save_stylegan2(generator.cpu(), out_path.with_suffix(".pt"), extra=extra)
    from .proggan import save_proggan
    return save_proggan(generator.cpu(), out_path.with_suffix(".pt"))
