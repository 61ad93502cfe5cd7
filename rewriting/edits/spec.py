"""The edit spec: a versioned JSON record of one edit request and of how to run it.

Version 1 looks like this (``extra_regions`` is optional)::

    {
      "version": 1,
      "name": "tower2tree",
      "generator": {"name": "stylegan2-church", "path": "church.pt", "sha256": "..."},
      "layer": 8,
      "rank": 1,
      "method": {"name": "rank_one", "lr": 0.05, "steps": 2001},
      "seed": 1,
      "notes": "",
      "request": {
        "context": [{"image_id": 0, "mask": "data:image/png;base64,..."}],
        "copy": {"image_id": 2, "mask": "masks/tree.png"},
        "paste": {"image_id": 694, "label": "spire"},
        "erase": false,
        "drank": null
      },
      "extra_regions": {"query": {"image_id": 497, "mask": "..."}}
    }

Image ids index the latent sample drawn with ``seed`` (see latents.py). A mask is a
data URL or a file path relative to the spec's folder. A region may instead name a
``label`` (a class such as "spire") that a segmenter resolves later; the mask it
resolved to is kept in ``resolved_mask``.

Two kinds of request:

- copy/paste (``erase`` false): ``copy`` is what to paste, ``paste`` is where it goes
  in one target image; both are required. ``context`` marks the regions whose rule
  changes; an empty context means the paste region, as in the original. The copy's
  box goes centred on the paste region (``paste_anchor`` "centre", the original's) or
  with its bottom edge on the paste region's bottom edge ("bottom", ours: a tall spire
  pasted on a low dome then rises from the dome's base instead of hanging over the wall).
- erase (``erase`` true): no ``copy``. With ``erase_fill`` "zero_units" (the default, the
  original's) the ``drank`` units most specific to the context regions (the paste region
  when the context is empty) are zeroed there; with "surroundings" (ours, no ``drank``
  needed) the regions' keys are set to the mean key of a ring around them. The erase is
  fitted at the paste region, or in the first context region when there is no paste.

``extra_regions`` keeps regions a request recorded that never drive the edit (the
original's "query", the image the user looked at).
"""

import json
import os
import re
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rewriting.edits.json_checks import (
    CURRENT_VERSION,
    check_json_data,
    check_version,
    describe_value,
    is_integer,
    located,
    object_fields,
    parse_json,
)
from rewriting.edits.masks import decode_mask
from rewriting.errors import EditSpecError

MAX_SEED = 2**32 - 1  # numpy RandomState accepts seeds in [0, 2**32 - 1]

_SPEC_FIELDS = (
    "version", "name", "generator", "layer", "rank", "method", "seed", "notes", "request",
    "extra_regions",
)
_REQUIRED_SPEC_FIELDS = ("name", "generator", "rank", "method", "request")
_REQUEST_FIELDS = ("context", "copy", "paste", "erase", "drank", "erase_fill", "paste_anchor")
ERASE_FILLS = ("zero_units", "surroundings")  # how an erase changes the region's keys (edits/targets.py)
PASTE_ANCHORS = ("centre", "bottom")  # where the copy's box goes on the paste region (edits/targets.py)
_REGION_FIELDS = ("image_id", "mask", "label", "resolved_mask")
_GENERATOR_FIELDS = ("name", "path", "sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The original implementation's request keys (edits/original_format.py); from_dict points such a
# request to its importer.
ORIGINAL_FORMAT_KEYS = ("key", "object", "paste", "query")


@dataclass
class Region:
    """One (image id, mask) pair; the mask may be given as a label to resolve later."""

    image_id: int
    mask: str | None = None
    label: str | None = None
    resolved_mask: str | None = None

    def __post_init__(self) -> None:
        if not is_integer(self.image_id) or self.image_id < 0:
            raise EditSpecError(
                f"image_id must be a non-negative integer, got {describe_value(self.image_id)}"
            )
        for name in ("mask", "label", "resolved_mask"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise EditSpecError(
                    f"{name} of the region of image {self.image_id} must be a non-empty "
                    f"string, got {describe_value(value)}"
                )
        if (self.mask is None) == (self.label is None):
            raise EditSpecError(
                f"the region of image {self.image_id} needs exactly one of 'mask' "
                f"(a data URL or file path) or 'label' (a class name), got "
                f"{'both' if self.mask is not None else 'neither'}"
            )
        if self.resolved_mask is not None and self.label is None:
            raise EditSpecError(
                f"the region of image {self.image_id} has a resolved_mask but no label; "
                "resolved_mask records what a label resolved to"
            )

    @property
    def mask_source(self) -> str | None:
        """The mask to use: the given mask, else the resolved label's mask, else None."""
        return self.mask if self.mask is not None else self.resolved_mask

    def load_mask(self, base_dir: Path | None = None, origin: str | None = None) -> torch.Tensor:
        """Decode this region's mask, float32 (H, W)."""
        origin = origin or "region"
        if self.mask_source is None:
            raise EditSpecError(
                f"{origin} (image {self.image_id}) is labelled {self.label!r} but has no mask "
                "yet; resolve the label with a segmenter first"
            )
        return decode_mask(self.mask_source, base_dir, origin=f"{origin} (image {self.image_id})")

    def to_dict(self) -> dict:
        """The JSON object of this region; absent optional fields are left out."""
        data: dict[str, Any] = {"image_id": self.image_id}
        for name in ("mask", "label", "resolved_mask"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "region") -> "Region":
        """Parse a region's JSON object; where names it in error messages."""
        fields = object_fields(data, where, _REGION_FIELDS, required=("image_id",))
        with located(where):
            return cls(**fields)


@dataclass
class EditRequest:
    """What to change: context regions, and copy/paste regions or an erase."""

    context: list[Region]
    copy: Region | None = None
    paste: Region | None = None
    erase: bool = False
    drank: int | None = None
    erase_fill: str = "zero_units"
    paste_anchor: str = "centre"

    def __post_init__(self) -> None:
        if not isinstance(self.context, list) or not all(
            isinstance(region, Region) for region in self.context
        ):
            raise EditSpecError(f"context must be a list of regions, got {describe_value(self.context)}")
        for name in ("copy", "paste"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Region):
                raise EditSpecError(
                    f"{name} must be a region or null, got {describe_value(getattr(self, name))}"
                )
        if not isinstance(self.erase, bool):
            raise EditSpecError(f"erase must be true or false, got {describe_value(self.erase)}")
        if self.erase:
            self._check_erase()
        else:
            self._check_copy_paste()

    def _check_copy_paste(self) -> None:
        missing = [name for name in ("copy", "paste") if getattr(self, name) is None]
        if missing:
            raise EditSpecError(
                f"a copy/paste request needs both 'copy' (what to paste) and 'paste' "
                f"(where it goes); missing: {', '.join(missing)}. "
                "For a request that removes something, set erase to true"
            )
        if self.drank is not None:
            raise EditSpecError(
                f"drank={self.drank!r} is only used by erase requests; remove it or set erase "
                "to true"
            )
        if self.erase_fill != "zero_units":
            raise EditSpecError(
                f"erase_fill={self.erase_fill!r} is only used by erase requests; remove it or set "
                "erase to true"
            )
        if self.paste_anchor not in PASTE_ANCHORS:
            raise EditSpecError(
                f"paste_anchor={describe_value(self.paste_anchor)} is unknown; use centre (the copy's box "
                f"centred on the paste region, the original's) or bottom (its bottom edge on the paste "
                f"region's, for things that stand on something, such as a roof on a wall)"
            )

    def _check_erase(self) -> None:
        if self.paste_anchor != "centre":
            raise EditSpecError(
                f"paste_anchor={self.paste_anchor!r} is only used by copy/paste requests; remove it or "
                "set erase to false"
            )
        if self.copy is not None:
            raise EditSpecError(
                "an erase request takes no 'copy' region; remove it, or set erase to false "
                "for a copy/paste request"
            )
        if not self.context and self.paste is None:
            raise EditSpecError(
                "an erase request needs context regions or a paste region marking what to erase"
            )
        if self.erase_fill not in ERASE_FILLS:
            raise EditSpecError(
                f"erase_fill={describe_value(self.erase_fill)} is unknown; use zero_units (zero the "
                f"drank most specific units, the original's) or surroundings (fill the region "
                f"from around it)"
            )
        if self.drank is None and self.erase_fill == "surroundings":
            return
        if not is_integer(self.drank) or self.drank <= 0:
            raise EditSpecError(
                f"an erase request needs drank, the number of units to zero, as a positive "
                f"integer (the original used 30), got {describe_value(self.drank)}; or "
                f"erase_fill: surroundings, which needs none"
            )

    def context_regions(self) -> list[Region]:
        """Regions whose rule changes: the context, or the paste region when it is empty."""
        if self.context:
            return list(self.context)
        return [self.paste]

    def erase_region(self) -> Region:
        """Where an erase is fitted: the paste region, else the first context region."""
        if not self.erase:
            raise EditSpecError("erase_region() asked of a copy/paste request")
        return self.paste if self.paste is not None else self.context[0]

    def named_regions(self) -> list[tuple[str, Region]]:
        """Every region with its place in the spec, e.g. ("request.context[2]", region)."""
        named = [(f"request.context[{index}]", region) for index, region in enumerate(self.context)]
        named += [
            (f"request.{name}", getattr(self, name))
            for name in ("copy", "paste")
            if getattr(self, name) is not None
        ]
        return named

    def to_dict(self) -> dict:
        """The JSON object of this request."""
        return {
            "context": [region.to_dict() for region in self.context],
            "copy": self.copy.to_dict() if self.copy is not None else None,
            "paste": self.paste.to_dict() if self.paste is not None else None,
            "erase": self.erase,
            "drank": self.drank,
            # Written only when not the default, so specs from before it existed read back unchanged.
            **({"erase_fill": self.erase_fill} if self.erase_fill != "zero_units" else {}),
            **({"paste_anchor": self.paste_anchor} if self.paste_anchor != "centre" else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "request") -> "EditRequest":
        """Parse a request's JSON object; where names it in error messages."""
        fields = object_fields(data, where, _REQUEST_FIELDS)
        context_data = fields.get("context", [])
        if not isinstance(context_data, list):
            raise EditSpecError(
                f"{where}.context must be a list of regions, got {describe_value(context_data)}"
            )
        context = [
            Region.from_dict(item, f"{where}.context[{index}]")
            for index, item in enumerate(context_data)
        ]
        copy_region, paste_region = (
            None if fields.get(name) is None else Region.from_dict(fields[name], f"{where}.{name}")
            for name in ("copy", "paste")
        )
        with located(where):
            return cls(
                context=context,
                copy=copy_region,
                paste=paste_region,
                erase=fields.get("erase", False),
                drank=fields.get("drank"),
                erase_fill=fields.get("erase_fill", "zero_units"),
                paste_anchor=fields.get("paste_anchor", "centre"),
            )


def _checked_generator(generator: Any) -> dict:
    if not isinstance(generator, dict):
        raise EditSpecError(
            f"generator must be an object with name, path and sha256, got {describe_value(generator)}"
        )
    checked = dict(generator)
    for name in _GENERATOR_FIELDS:
        value = checked.setdefault(name, None)
        if value is not None and not isinstance(value, str):
            raise EditSpecError(
                f"generator.{name} must be a string or null, got {describe_value(value)}"
            )
    if checked["sha256"] is not None and not _SHA256.match(checked["sha256"]):
        raise EditSpecError(
            f"generator.sha256 must be 64 lowercase hex digits, got {describe_value(checked['sha256'])}"
        )
    check_json_data(checked, "generator")
    return checked


def _checked_method(method: Any) -> dict:
    named = isinstance(method, dict) and isinstance(method.get("name"), str) and method["name"]
    if not named:
        raise EditSpecError(
            'method must be an object with a "name" (e.g. {"name": "rank_one", "lr": 0.05}), '
            f"got {describe_value(method)}"
        )
    check_json_data(method, "method")
    return dict(method)


@dataclass(kw_only=True)
class EditSpec:
    """One edit: the request, the generator and layer it applies to, and the method."""

    name: str
    generator: dict
    rank: int
    method: dict
    request: EditRequest
    layer: int | None = None
    version: int = CURRENT_VERSION
    seed: int = 1
    notes: str = ""
    extra_regions: dict[str, Region] = field(default_factory=dict)
    # Where relative mask paths are resolved; not part of the spec itself.
    base_dir: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_version(self.version)
        if not isinstance(self.name, str) or not self.name:
            raise EditSpecError(f"name must be a non-empty string, got {describe_value(self.name)}")
        self.generator = _checked_generator(self.generator)
        self.method = _checked_method(self.method)
        if self.layer is not None and (not is_integer(self.layer) or self.layer < 0):
            raise EditSpecError(
                f"layer must be a non-negative integer or null, got {describe_value(self.layer)}"
            )
        if not is_integer(self.rank) or self.rank < 1:
            raise EditSpecError(f"rank must be a positive integer, got {describe_value(self.rank)}")
        if not is_integer(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise EditSpecError(
                f"seed must be an integer in 0..{MAX_SEED}, got {describe_value(self.seed)}"
            )
        if not isinstance(self.notes, str):
            raise EditSpecError(f"notes must be a string, got {describe_value(self.notes)}")
        if not isinstance(self.request, EditRequest):
            raise EditSpecError(f"request must be an EditRequest, got {describe_value(self.request)}")
        if not isinstance(self.extra_regions, dict) or not all(
            isinstance(key, str) and isinstance(value, Region)
            for key, value in self.extra_regions.items()
        ):
            raise EditSpecError(
                f"extra_regions must map names to regions, got {describe_value(self.extra_regions)}"
            )
        if self.base_dir is not None:
            self.base_dir = Path(self.base_dir)

    def named_regions(self) -> list[tuple[str, Region]]:
        """The request's regions, then the extra regions, each with its place in the spec."""
        return self.request.named_regions() + [
            (f"extra_regions.{name}", region) for name, region in self.extra_regions.items()
        ]

    def load_masks(self) -> dict[str, torch.Tensor]:
        """Decode every region's mask, keyed by its place (e.g. "request.paste"), each (H, W).

        Regions whose label is not resolved yet are left out. Raises MaskError naming the
        region when a mask is unreadable or marks nothing.
        """
        return {
            where: region.load_mask(self.base_dir, origin=where)
            for where, region in self.named_regions()
            if region.mask_source is not None
        }

    def to_dict(self) -> dict:
        """The JSON object of this spec."""
        data: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "generator": self.generator,
            "layer": self.layer,
            "rank": self.rank,
            "method": self.method,
            "seed": self.seed,
            "notes": self.notes,
            "request": self.request.to_dict(),
        }
        if self.extra_regions:
            data["extra_regions"] = {
                name: region.to_dict() for name, region in self.extra_regions.items()
            }
        return data

    def to_json(self) -> str:
        """The spec as JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(
        cls, data: Any, base_dir: Path | None = None, origin: str = "<dict>"
    ) -> "EditSpec":
        """Parse a spec's JSON object; origin names it in error messages."""
        with located(f"edit spec {origin}"):
            if isinstance(data, dict) and "version" not in data and "request" not in data and any(
                key in data for key in ORIGINAL_FORMAT_KEYS
            ):
                raise EditSpecError(
                    "is in the original request format (keys key/object/paste); "
                    "read it with load_edit or import_original"
                )
            fields = object_fields(data, "the spec", _SPEC_FIELDS)
            check_version(fields.get("version", None))
            object_fields(fields, "the spec", _SPEC_FIELDS, required=_REQUIRED_SPEC_FIELDS)
            request = EditRequest.from_dict(fields["request"], "request")
            extra_data = fields.get("extra_regions", {})
            if not isinstance(extra_data, dict):
                raise EditSpecError(
                    f"extra_regions must map names to regions, got {describe_value(extra_data)}"
                )
            extra_regions = {
                name: Region.from_dict(item, f"extra_regions.{name}")
                for name, item in extra_data.items()
            }
            scalar_fields = {
                name: fields[name]
                for name in ("version", "name", "generator", "layer", "rank", "method", "seed",
                             "notes")
                if name in fields
            }
            return cls(
                **scalar_fields, request=request, extra_regions=extra_regions, base_dir=base_dir
            )

    @classmethod
    def from_json(
        cls, text: str, base_dir: Path | None = None, origin: str = "<text>"
    ) -> "EditSpec":
        """Parse a spec from JSON text; mask paths resolve against base_dir."""
        return cls.from_dict(parse_json(text, f"edit spec {origin}"), base_dir, origin)

    def save(self, path: str | Path) -> Path:
        """Write the spec to path atomically (a temporary file, then a rename).

        Mask file paths are written as they are, relative to this spec's base_dir.
        """
        path = Path(path)
        text = self.to_json()
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return path
