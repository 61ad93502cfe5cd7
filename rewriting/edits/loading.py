"""Load an edit spec from a file, JSON text or dict, in this project's or the original format."""

from pathlib import Path

from rewriting.edits.json_checks import located, parse_json
from rewriting.edits.original_format import describe_non_request, import_original
from rewriting.edits.spec import ORIGINAL_FORMAT_KEYS, EditSpec
from rewriting.errors import EditSpecError


def _read_source(path_or_text: str | Path) -> tuple[str, str, Path | None, str | None]:
    """(text, origin, folder, file stem) of a spec given as a path or as JSON text."""
    if isinstance(path_or_text, str) and path_or_text.lstrip().startswith(("{", "[")):
        return path_or_text, "<text>", None, None
    path = Path(path_or_text)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise EditSpecError(f"edit spec file {str(path)!r} does not exist") from error
    except (OSError, UnicodeDecodeError) as error:
        raise EditSpecError(f"edit spec file {str(path)!r} cannot be read ({error})") from error
    return text, repr(str(path)), path.parent, path.stem


def load_edit(
    path_or_text: str | Path | dict,
    base_dir: Path | None = None,
    check_masks: bool = True,
) -> EditSpec:
    """Load an edit spec from a file, JSON text or dict, in this project's or the original format.

    The format is detected: "version"/"request" mean this project's, "key"/"object"/
    "paste"/"query" the original's. With check_masks every mask is decoded once, so a
    bad mask fails here, naming its region.
    """
    if isinstance(path_or_text, dict):
        data, origin, folder, stem = path_or_text, "<dict>", None, None
    else:
        text, origin, folder, stem = _read_source(path_or_text)
        data = parse_json(text, f"edit spec {origin}")
    base_dir = base_dir if base_dir is not None else folder
    if isinstance(data, dict) and ("version" in data or "request" in data):
        spec = EditSpec.from_dict(data, base_dir, origin)
    elif isinstance(data, dict) and any(key in data for key in ORIGINAL_FORMAT_KEYS):
        spec = import_original(data, name=stem, origin=origin)
        spec.base_dir = base_dir
    else:
        raise EditSpecError(
            f"edit spec {origin} is neither a rewriting edit spec (with \"version\" and "
            f"\"request\") nor an original-format request: {describe_non_request(data)}"
        )
    if check_masks:
        with located(f"edit spec {origin}"):
            spec.load_masks()
    return spec


def validate_image_ids(spec: EditSpec, max_id: int) -> None:
    """Check every request region's image id lies in 0..max_id (the sample's largest id)."""
    for where, region in spec.request.named_regions():
        if region.image_id > max_id:
            raise EditSpecError(
                f"edit spec {spec.name!r}: {where} uses image id {region.image_id}, above the "
                f"largest id {max_id} of the latent sample; pick an id in 0..{max_id} or use a "
                "larger sample"
            )
