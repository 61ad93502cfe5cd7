"""Importing the original implementation's edit requests."""

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewriting.edits.masks import encode_mask
from rewriting.edits.original_format import import_original
from rewriting.edits.loading import load_edit
from rewriting.edits.spec import EditSpec, Region
from rewriting.errors import EditSpecError

REFERENCE_MASKS = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "masks"
REQUEST_KEYS = ("key", "object", "paste")


def reference_files() -> list:
    """One pytest param per published JSON file; one skipped param when the data is absent."""
    if not REFERENCE_MASKS.is_dir():
        reason = f"reference masks not available at {REFERENCE_MASKS}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [
        pytest.param(path, id=str(path.relative_to(REFERENCE_MASKS)))
        for path in sorted(REFERENCE_MASKS.rglob("*.json"))
    ]


def original_binary_mask(url: str) -> np.ndarray:
    """The region the original app used: it read the PNG's colour, dropping alpha."""
    payload = base64.b64decode(re.sub(r"^data:image/[^;]+;base64,", "", url))
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))[..., 0] > 0


def mask_url(size: int = 8) -> str:
    mask = torch.zeros(size, size)
    mask[2:5, 3:6] = 1.0
    return encode_mask(mask)


@pytest.mark.parametrize("path", reference_files())
def test_every_published_request_imports(path):
    data = json.loads(path.read_text())
    if not any(key in data for key in REQUEST_KEYS):
        with pytest.raises(EditSpecError, match="not an edit request: it maps image ids to"):
            import_original(path)
        return

    spec = import_original(path)
    request = spec.request
    assert spec.name == path.stem
    assert request.erase == ("object" not in data or "paste" not in data)
    context_ids = [pair[0] for pair in data.get("key", [])]
    assert [region.image_id for region in request.context] == context_ids
    if "query" in data:
        assert spec.extra_regions["query"] == Region(*data["query"])

    masks = spec.load_masks()
    assert len(masks) == len(spec.named_regions())
    for (where, region), mask in zip(spec.named_regions(), masks.values()):
        assert isinstance(region.image_id, int) and region.image_id >= 0, where
        # One request may mix sizes (a 1024 copy with 256 context masks), so each mask
        # is checked on its own.
        assert mask.shape[0] == mask.shape[1] and mask.shape[0] in (256, 1024), where
        assert 0.0 <= mask.min().item() and mask.max().item() <= 1.0, where
        assert mask.sum().item() > 0, where
        assert torch.equal(mask > 0, torch.from_numpy(original_binary_mask(region.mask))), where

    text = spec.to_json()
    assert EditSpec.from_json(text) == spec
    assert EditSpec.from_json(text).to_json() == text


def test_copy_paste_request_maps_each_key():
    url = mask_url()
    data = {"key": [[4, url], [9, url]], "object": [2, url], "paste": [9, url], "query": [1, url]}
    spec = import_original(data, name="tower2tree", layer=8, rank=2)
    request = spec.request
    assert not request.erase and request.drank is None
    assert [region.image_id for region in request.context] == [4, 9]
    assert request.copy == Region(2, url) and request.paste == Region(9, url)
    assert spec.extra_regions == {"query": Region(1, url)}
    assert (spec.name, spec.layer, spec.rank) == ("tower2tree", 8, 2)


def test_copy_paste_without_key_uses_the_paste_region_as_context():
    url = mask_url()
    request = import_original({"object": [2, url], "paste": [7, url]}).request
    assert request.context == [] and request.context_regions() == [Region(7, url)]


def test_requests_without_a_copy_import_as_erases():
    url = mask_url()
    key_only = import_original({"key": [[5, url], [6, url]]}).request
    assert key_only.erase and key_only.drank == 30
    assert key_only.erase_region() == Region(5, url)
    with_paste = import_original({"key": [[5, url]], "paste": [8, url]}, drank=12).request
    assert with_paste.erase_region() == Region(8, url) and with_paste.drank == 12
    stray_copy = import_original({"key": [[5, url]], "object": [3, url]})
    assert stray_copy.request.erase and stray_copy.request.copy is None
    assert stray_copy.extra_regions["unused_copy"] == Region(3, url)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"query": [1, "x"]}, "not an edit request: it has none of the keys"),
        ({"object": [2, "x"]}, "needs context regions or a paste region"),
        ({"object": [2, "x"], "paste": "x"}, r"'paste' must be \[image_id, mask data URL\]"),
        ({"key": [[1.5, "x"]]}, r"key\[0\] must be \[image_id, mask data URL\]"),
        ({"key": [[-1, "x"]]}, r"key\[0\] has a negative image id -1"),
        ({"key": [[1, "x"]], "keys": []}, "unknown key.*'keys'"),
        ("[1, 2]", "the top level is list"),
    ],
)
def test_malformed_original_requests_are_explained(data, message):
    with pytest.raises(EditSpecError, match=message):
        import_original(data)


def test_original_files_load_through_load_edit(tmp_path):
    url = mask_url()
    path = tmp_path / "spire2tree.json"
    path.write_text(json.dumps({"object": [2, url], "paste": [7, url]}))
    spec = load_edit(path)
    assert spec.name == "spire2tree" and spec.base_dir == tmp_path
    assert spec.load_masks()["request.copy"].sum().item() == 9.0
    path.write_text(json.dumps({"object": [2, url], "paste": [7, "data:image/png;base64,AAAA"]}))
    with pytest.raises(EditSpecError, match=r"request\.paste \(image 7\).*not a readable image"):
        load_edit(path)
