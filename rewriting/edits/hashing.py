"""The hash that keys an edit's results: what determines the result, mask files by content."""

import hashlib
import json
from pathlib import Path

from rewriting.edits.spec import EditSpec, Region
from rewriting.errors import EditSpecError


def _file_digest(source: str, base_dir: Path | None, where: str) -> str:
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise EditSpecError(
            f"{where}: mask file {str(path)!r} cannot be read to hash the spec ({error})"
        ) from error


def _hashable_region(region: Region, base_dir: Path | None, where: str) -> dict:
    # A mask file is hashed by content: the same path with a repainted mask is a new edit.
    data = region.to_dict()
    for name in ("mask", "resolved_mask"):
        if name in data and not data[name].startswith("data:"):
            data[name] = _file_digest(data[name], base_dir, f"{where}.{name}")
    return data


def spec_hash(spec: EditSpec) -> str:
    """sha256 (hex) of what determines an edit's result: request, layer, rank, method, seed.

    The generator is not included: callers key results on the model's own hash.
    """
    request = spec.request.to_dict()
    request["context"] = [
        _hashable_region(region, spec.base_dir, f"request.context[{index}]")
        for index, region in enumerate(spec.request.context)
    ]
    for name in ("copy", "paste"):
        region = getattr(spec.request, name)
        if region is not None:
            request[name] = _hashable_region(region, spec.base_dir, f"request.{name}")
    payload = {
        "request": request,
        "layer": spec.layer,
        "rank": spec.rank,
        "method": spec.method,
        "seed": spec.seed,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
