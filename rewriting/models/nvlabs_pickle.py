"""NVlabs network pickles (stylegan2-ada-pytorch, the StyleGAN3 repository's `stylegan2`) read without their code.

NVlabs' `torch_utils.persistence` pickles store each network's source code and normally execute
it when unpickled. Here a restricted unpickler rebuilds only tensors and plain containers: every
persistent object becomes a `PersistentObject` (class name, init kwargs, parameters, buffers,
submodules) and its source is never run. Any other global the pickle asks for is refused.
"""
from __future__ import annotations

import collections
import copyreg
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

PERSISTENCE_MODULE = "torch_utils.persistence"


@dataclass
class PersistentObject:
    """What an NVlabs persistent object saved: its class name and state, its source left unexecuted."""
    class_name: str
    state: dict = field(default_factory=dict)

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer below this object, by dotted name as in its state dict."""
        found = {}
        for group in ("_parameters", "_buffers"):
            for name, tensor in (self.state.get(group) or {}).items():
                if tensor is not None:
                    found[prefix + name] = tensor.detach()
        for name, module in self.modules.items():
            if isinstance(module, PersistentObject):
                found.update(module.tensors(f"{prefix}{name}."))
        return found


class EasyDict(dict):
    """Stands in for dnnlib's EasyDict (a dict with attribute access) in kwargs."""


def _reconstruct_persistent_obj(meta: dict) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") not in (None, "class"):
        raise pickle.UnpicklingError("a persistent object of an unknown kind")
    return PersistentObject(str(meta.get("class_name")), dict(meta.get("state") or {}))


def _load_storage_from_bytes(data: bytes):
    # torch pickles each storage as a nested torch.save stream: read it with torch's own safe loader.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch
        return {}
    allowed = {("numpy", "dtype"): numpy.dtype, ("numpy", "ndarray"): numpy.ndarray}
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "scalar")] = numpy.core.multiarray.scalar
        allowed[(core, "_reconstruct")] = numpy.core.multiarray._reconstruct
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    (PERSISTENCE_MODULE, "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): getattr(torch._utils, "_rebuild_parameter_with_state", None),
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Tensor"): torch.Tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
    ("builtins", "complex"): complex, ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("dnnlib.util", "EasyDict"): EasyDict, ("dnnlib", "EasyDict"): EasyDict,
    **_numpy_globals(),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the globals in ALLOWED_GLOBALS; anything else is refused before it is imported."""

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")
        return allowed


def read_nvlabs_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The pickle's top-level dict ('G_ema', 'G', 'D', …) with persistent objects as PersistentObject."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            loaded = RestrictedUnpickler(file).load()
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"network pickle {str(path)!r} was not loaded: {error}, and loading it could run "
                              f"code; an NVlabs network pickle holds only its networks' tensors and kwargs") from None
    except Exception as error:
        raise CheckpointError(f"network pickle {str(path)!r} could not be read ({type(error).__name__}: {error}); "
                              f"is it a complete stylegan2-ada-pytorch or stylegan3 network pickle?") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"network pickle {str(path)!r} holds a {type(loaded).__name__}, not the dict "
                              f"{{'G_ema': ..., 'G': ..., 'D': ...}} NVlabs' training writes")
    return loaded


def generator_object(loaded: dict, path: str | os.PathLike) -> PersistentObject:
    """The generator to edit: G_ema (what NVlabs renders with), else G."""
    for key in ("G_ema", "G"):
        if isinstance(loaded.get(key), PersistentObject):
            return loaded[key]
    raise CheckpointError(f"network pickle {str(path)!r} has no 'G_ema' or 'G' network (keys: {sorted(loaded)})")
