"""Importer of edit requests saved by the original implementation's app.

The original saves a request as a JSON object with up to four keys; each mask is a
white-on-transparent PNG data URL:

- ``key``: ``[[image_id, mask], ...]``, the context regions;
- ``object``: ``[image_id, mask]``, what to copy;
- ``paste``: ``[image_id, mask]``, where it goes in one target image;
- ``query``: ``[image_id, mask]``, the region the user searched with. It never drives
  an edit and is kept in ``extra_regions["query"]``.

How a file maps to an EditRequest:

- ``object`` and ``paste``: a copy/paste request, context = ``key`` (the original used
  the paste region when ``key`` is absent; EditRequest.context_regions does the same).
- no ``object``: an erase request, as the original's Erase button (context ``key``,
  erased at ``paste``). Without ``paste`` the erase is fitted in the first context
  image. ``drank`` is the original app's 30 unless given.
- ``object`` without ``paste``: a copy with nowhere to go cannot run as copy/paste, so
  it imports as an erase of the context, keeping the copy in
  ``extra_regions["unused_copy"]``.

A JSON object with none of key/object/paste is not an edit request and is refused
(e.g. the original's ``reflections/*/posneg.json``, which maps image ids to
``{value, intervention, revert}`` masks of a unit intervention).
"""

from pathlib import Path
from typing import Any

from rewriting.edits.json_checks import parse_json
from rewriting.edits.spec import ORIGINAL_FORMAT_KEYS, EditRequest, EditSpec, Region
from rewriting.errors import EditSpecError

ORIGINAL_ERASE_DRANK = 30  # the original app's Erase button zeroed 30 units


def _region(pair: Any, where: str) -> Region:
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or isinstance(pair[0], bool)
        or not isinstance(pair[0], int)
        or not isinstance(pair[1], str)
    ):
        text = repr(pair)
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise EditSpecError(f"{where} must be [image_id, mask data URL], got {shown}")
    if pair[0] < 0:
        raise EditSpecError(f"{where} has a negative image id {pair[0]}")
    try:
        return Region(image_id=pair[0], mask=pair[1])
    except EditSpecError as error:
        raise EditSpecError(f"{where}: {error}") from error


def _read(data: dict | str | Path) -> tuple[Any, str, str | None]:
    """(parsed JSON, origin for messages, file stem or None)."""
    if isinstance(data, dict):
        return data, "<dict>", None
    if isinstance(data, str) and data.lstrip().startswith(("{", "[")):
        return parse_json(data, "original request <text>"), "<text>", None
    if not isinstance(data, (str, Path)):
        raise TypeError(f"import_original takes a dict, JSON text or a path, got {type(data)}")
    path = Path(data)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EditSpecError(
            f"original request file {str(path)!r} cannot be read ({error})"
        ) from error
    origin = repr(str(path))
    return parse_json(text, f"original request {origin}"), origin, path.stem


def describe_non_request(data: Any) -> str:
    """Why parsed JSON is not an original-format edit request, in words."""
    if not isinstance(data, dict):
        return f"the top level is {type(data).__name__}, not a JSON object"
    values = list(data.values())
    if values and all(isinstance(value, dict) and "intervention" in value for value in values):
        return (
            "it maps image ids to {value, intervention, revert} masks (a record of unit "
            "interventions, like the original's reflections/posneg.json), which has no "
            "context, copy or paste to import"
        )
    shown = ", ".join(map(repr, sorted(data)[:8])) or "none"
    return f"it has none of the keys 'key', 'object', 'paste' (found: {shown})"


def import_original(
    data: dict | str | Path,
    name: str | None = None,
    *,
    generator: dict | None = None,
    layer: int | None = None,
    rank: int = 1,
    method: dict | None = None,
    drank: int = ORIGINAL_ERASE_DRANK,
    seed: int = 1,
    origin: str | None = None,
) -> EditSpec:
    """Import an original-format request (a dict, JSON text or file path) as an EditSpec.

    The original files record neither generator nor layer; give them here or fill them in.
    """
    parsed, read_origin, stem = _read(data)
    origin = origin or read_origin
    where = f"original request {origin}"
    if not isinstance(parsed, dict) or not any(key in parsed for key in ("key", "object", "paste")):
        raise EditSpecError(f"{where} is not an edit request: {describe_non_request(parsed)}")
    unknown = sorted(set(parsed) - set(ORIGINAL_FORMAT_KEYS))
    if unknown:
        raise EditSpecError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; the original format "
            f"has only {', '.join(ORIGINAL_FORMAT_KEYS)}"
        )

    context_pairs = parsed.get("key", [])
    if not isinstance(context_pairs, list):
        raise EditSpecError(f"{where}: 'key' must be a list of [image_id, mask] pairs")
    context = [_region(pair, f"{where}: key[{index}]") for index, pair in enumerate(context_pairs)]
    copy_region, paste_region, query_region = (
        _region(parsed[key], f"{where}: '{key}'") if key in parsed else None
        for key in ("object", "paste", "query")
    )

    extra_regions: dict[str, Region] = {}
    notes = [f"Imported from the original request format ({origin})."]
    if query_region is not None:
        extra_regions["query"] = query_region
        notes.append(f"The user's query region (image {query_region.image_id}) is kept in "
                     "extra_regions; it does not drive the edit.")
    if copy_region is not None and paste_region is not None:
        request = EditRequest(context=context, copy=copy_region, paste=paste_region)
    else:
        if copy_region is not None:
            extra_regions["unused_copy"] = copy_region
            notes.append(f"It has a copy (image {copy_region.image_id}) but no paste region, "
                         "so it imports as an erase; the copy is kept in extra_regions.")
        else:
            notes.append("It has no copy region, so it imports as an erase.")
        if paste_region is None and context:
            notes.append(f"With no paste region, the erase is fitted in the first context "
                         f"image ({context[0].image_id}).")
        try:
            request = EditRequest(context=context, paste=paste_region, erase=True, drank=drank)
        except EditSpecError as error:
            raise EditSpecError(f"{where}: {error}") from error

    return EditSpec(
        name=name or stem or "imported",
        generator=generator if generator is not None else {"name": None, "path": None,
                                                           "sha256": None},
        layer=layer,
        rank=rank,
        method=method if method is not None else {"name": "rank_one"},
        request=request,
        seed=seed,
        notes=" ".join(notes),
        extra_regions=extra_regions,
    )
