"""Edit specs, masks and latents of image ids."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewriting.edits import spec as spec_module
from rewriting.edits.hashing import spec_hash
from rewriting.edits.latents import latents_for_ids, latents_for_range
from rewriting.edits.loading import load_edit, validate_image_ids
from rewriting.edits.masks import (
    bounding_box,
    decode_mask,
    encode_mask,
    mask_centre,
    resize_mask,
)
from rewriting.edits.spec import EditRequest, EditSpec, Region
from rewriting.errors import EditSpecError, MaskError


def png_data_url(array: np.ndarray, mode: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def block_mask(size: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[top:top + height, left:left + width] = 1.0
    return mask


def make_spec(**overrides) -> EditSpec:
    request = EditRequest(
        context=[
            Region(3, encode_mask(block_mask(16, 2, 2, 4, 4))),
            Region(8, encode_mask(block_mask(16, 5, 1, 3, 6))),
        ],
        copy=Region(2, encode_mask(block_mask(16, 0, 0, 5, 5))),
        paste=Region(694, encode_mask(block_mask(16, 9, 9, 4, 4))),
    )
    fields = dict(
        name="tower2tree",
        generator={"name": "stylegan2-church", "path": "church.pt", "sha256": "ab" * 32},
        layer=8,
        rank=1,
        method={"name": "rank_one", "lr": 0.05, "steps": 2001},
        request=request,
    )
    fields.update(overrides)
    return EditSpec(**fields)


def spec_data(**changes) -> dict:
    data = make_spec().to_dict()
    data.update(changes)
    return data


# Latents ------------------------------------------------------------------------------


def test_latents_equal_rows_of_the_original_numpy_sample():
    expected = np.random.RandomState(1).standard_normal(6 * 7).reshape(6, 7)[[0, 5, 3]]
    latents = latents_for_ids([0, 5, 3], z_dim=7)
    assert latents.dtype == torch.float32 and latents.shape == (3, 7)
    assert torch.equal(latents, torch.from_numpy(expected).float())


def test_latent_of_an_id_is_the_same_whatever_the_sample_size():
    small = latents_for_range(0, 10, z_dim=16)
    large = latents_for_range(0, 1000, z_dim=16)
    assert torch.equal(small[7], large[7])
    assert torch.equal(latents_for_ids([7], z_dim=16)[0], large[7])
    assert torch.equal(latents_for_range(995, 5, z_dim=16), large[995:])


def test_latents_depend_on_the_seed():
    assert not torch.equal(latents_for_ids([4], 8, seed=1), latents_for_ids([4], 8, seed=2))


def test_negative_image_id_is_refused():
    with pytest.raises(EditSpecError, match="image id -1 is negative"):
        latents_for_ids([3, -1], z_dim=4)


# Masks --------------------------------------------------------------------------------


def test_area_resize_of_a_block_gives_its_covered_fraction():
    mask = torch.zeros(4, 4)
    mask[0, 0] = mask[1, 2] = mask[3, 3] = 1.0
    assert resize_mask(mask, (1, 1)).item() == pytest.approx(3 / 16, abs=1e-7)
    half = resize_mask(block_mask(8, 0, 0, 4, 4), (2, 2))
    assert torch.allclose(half, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_area_resize_is_exact_for_non_integer_ratios():
    # Each of the 2x2 output cells covers 1.5 x 1.5 source pixels, a quarter of the centre.
    mask = torch.zeros(3, 3)
    mask[1, 1] = 1.0
    assert torch.allclose(resize_mask(mask, (2, 2)), torch.full((2, 2), 1 / 9), atol=1e-7)
    soft = torch.rand(256, 256, generator=torch.Generator().manual_seed(0))
    assert resize_mask(soft, (17, 23)).mean().item() == pytest.approx(soft.mean().item(), abs=1e-6)


def test_upsampling_by_a_whole_factor_keeps_hard_edges():
    mask = block_mask(8, 2, 3, 3, 2)
    upsampled = resize_mask(mask, (16, 16))
    assert torch.equal(upsampled, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_white_on_transparent_png_is_read_from_its_alpha():
    alpha = np.zeros((6, 5), np.uint8)
    alpha[1:4, 2:4] = [[255, 128], [64, 255], [255, 255]]
    colour = np.where(alpha > 0, 255, 0).astype(np.uint8)
    rgba = np.stack([colour, colour, colour, alpha], axis=-1)
    mask = decode_mask(png_data_url(rgba, "RGBA"))
    assert mask.shape == (6, 5) and mask.dtype == torch.float32
    assert torch.allclose(mask, torch.from_numpy(alpha / 255.0).float())


def test_opaque_png_is_read_from_its_luminance():
    grey = np.zeros((4, 4), np.uint8)
    grey[1, 1], grey[2, 3] = 255, 51
    expected = torch.from_numpy(grey / 255).float()
    assert torch.allclose(decode_mask(png_data_url(grey, "L")), expected)
    opaque = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    assert torch.allclose(decode_mask(png_data_url(opaque, "RGBA")), expected)


def test_encoded_mask_decodes_to_within_one_level():
    mask = torch.rand(37, 53, generator=torch.Generator().manual_seed(1))
    mask[0, 0] = 1.0
    decoded = decode_mask(encode_mask(mask))
    assert decoded.shape == (37, 53)
    assert (decoded - mask).abs().max().item() <= 0.5 / 255 + 1e-6


def test_mask_file_is_found_relative_to_base_dir(tmp_path):
    (tmp_path / "masks").mkdir()
    Image.fromarray((block_mask(8, 1, 1, 2, 2).numpy() * 255).astype(np.uint8)).save(
        tmp_path / "masks" / "tree.png"
    )
    assert decode_mask("masks/tree.png", base_dir=tmp_path).sum().item() == 4.0


@pytest.mark.parametrize(
    "source, message",
    [
        (png_data_url(np.zeros((4, 4), np.uint8), "L"), "marks nothing"),
        ("data:image/png;base64,AAAA", "not a readable image"),
        ("data:image/png;base64,abc", "corrupt"),
        ("data:text/plain,hello", "not a base64 image"),
        ("masks/missing.png", "does not exist"),
    ],
)
def test_bad_masks_say_what_is_wrong_and_where(source, message):
    with pytest.raises(MaskError, match=f"request.paste.*{message}"):
        decode_mask(source, origin="request.paste")


def test_bounding_box_has_exclusive_ends_and_respects_the_threshold():
    mask = torch.zeros(10, 12)
    mask[2:5, 3:9] = 0.2
    mask[3, 4] = 0.9
    assert bounding_box(mask) == (2, 3, 5, 9)
    assert bounding_box(mask, threshold=0.5) == (3, 4, 4, 5)
    with pytest.raises(MaskError, match="marks nothing"):
        bounding_box(torch.zeros(3, 3))


def test_mask_centre_is_weighted():
    mask = torch.zeros(5, 5)
    mask[1, 0], mask[3, 4] = 1.0, 3.0
    assert mask_centre(mask) == pytest.approx((2.5, 3.0))


# Spec: round trip and save ------------------------------------------------------------


def test_spec_round_trips_through_json_identically():
    spec = make_spec(
        seed=7,
        notes="towers become trees",
        extra_regions={"query": Region(497, encode_mask(block_mask(16, 1, 1, 2, 2)))},
    )
    text = spec.to_json()
    again = EditSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text


def test_label_regions_round_trip_and_need_resolving_before_use():
    resolved = encode_mask(block_mask(16, 0, 0, 3, 3))
    request = EditRequest(
        context=[Region(5, label="spire"), Region(6, label="spire", resolved_mask=resolved)],
        copy=Region(2, label="tree"),
        paste=Region(5, label="spire"),
    )
    spec = make_spec(request=request)
    assert EditSpec.from_json(spec.to_json()) == spec
    assert spec.request.context[1].load_mask().sum().item() == 9.0
    assert list(spec.load_masks()) == ["request.context[1]"]
    with pytest.raises(EditSpecError, match="labelled 'spire'.*resolve the label"):
        spec.request.context[0].load_mask()


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(image_id=1, mask="a.png", label="spire"), "exactly one of 'mask'.*got both"),
        (dict(image_id=1), "exactly one of 'mask'.*got neither"),
        (dict(image_id=1, mask="a.png", resolved_mask="b.png"), "resolved_mask but no label"),
        (dict(image_id=-2, mask="a.png"), "image_id must be a non-negative integer"),
        (dict(image_id=True, mask="a.png"), "image_id must be a non-negative integer"),
    ],
)
def test_bad_regions_are_refused(fields, message):
    with pytest.raises(EditSpecError, match=message):
        Region(**fields)


def test_save_writes_a_loadable_spec_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "edit.json"
    path.write_text("old contents")
    make_spec().save(path)
    assert load_edit(path) == make_spec()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.json"]


def test_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "edit.json"
    make_spec(notes="first").save(path)
    before = path.read_text()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(spec_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        make_spec(notes="second").save(path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.json"]


# Spec: bad input ----------------------------------------------------------------------


def test_malformed_json_names_the_file_and_the_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"version": 1,\n "name": }')
    with pytest.raises(EditSpecError, match=r"broken\.json.*not valid JSON.*line 2 column 10"):
        load_edit(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(version=2), r"version 2 is not supported.*supported version\(s\): 1"),
        (dict(version="1"), r"version '1' is not supported"),
        (dict(rank=0), "rank must be a positive integer"),
        (dict(rank=1.5), "rank must be a positive integer"),
        (dict(layer=-1), "layer must be a non-negative integer or null"),
        (dict(seed=2**32), "seed must be an integer in 0..4294967295"),
        (dict(name=""), "name must be a non-empty string"),
        (dict(method={"lr": 0.05}), 'method must be an object with a "name"'),
        (dict(generator="church.pt"), "generator must be an object"),
        (dict(generator={"name": "g", "sha256": "xyz"}), "generator.sha256 must be 64"),
        (dict(contxt=[]), "unknown field.*'contxt'"),
    ],
)
def test_bad_spec_fields_are_named(changes, message):
    with pytest.raises(EditSpecError, match=message):
        EditSpec.from_json(json.dumps(spec_data(**changes)))


def test_missing_fields_are_listed():
    data = spec_data()
    del data["rank"], data["method"]
    with pytest.raises(EditSpecError, match=r"missing required field\(s\) 'rank', 'method'"):
        EditSpec.from_json(json.dumps(data))
    del data["version"]
    with pytest.raises(EditSpecError, match='no "version" field'):
        EditSpec.from_json(json.dumps(data))


def test_wrong_region_types_are_located_in_the_request():
    data = spec_data()
    data["request"]["context"][1]["image_id"] = "8"
    with pytest.raises(EditSpecError, match=r"request\.context\[1\]: image_id must be a non-neg"):
        EditSpec.from_json(json.dumps(data), origin="'edit.json'")
    data["request"]["context"] = {"image_id": 1}
    with pytest.raises(EditSpecError, match=r"request\.context must be a list"):
        EditSpec.from_json(json.dumps(data))


def test_image_ids_above_the_sample_are_refused():
    spec = make_spec()
    validate_image_ids(spec, max_id=694)
    with pytest.raises(EditSpecError, match=r"request\.paste uses image id 694.*largest id 693"):
        validate_image_ids(spec, max_id=693)


def test_a_mask_that_marks_nothing_fails_at_load_naming_its_region():
    data = spec_data()
    data["request"]["paste"]["mask"] = encode_mask(torch.zeros(16, 16))
    with pytest.raises(MaskError, match=r"request\.paste \(image 694\) marks nothing"):
        load_edit(json.dumps(data))
    assert load_edit(json.dumps(data), check_masks=False).request.paste.image_id == 694


# Request modes ------------------------------------------------------------------------


def test_copy_paste_needs_both_regions_and_no_drank():
    context = [Region(1, "a.png")]
    with pytest.raises(EditSpecError, match="missing: paste"):
        EditRequest(context, copy=Region(2, "b.png"))
    with pytest.raises(EditSpecError, match="drank=30 is only used by erase"):
        EditRequest(context, copy=Region(2, "b.png"), paste=Region(3, "c.png"), drank=30)


def test_erase_rules():
    context = [Region(1, "a.png"), Region(4, "d.png")]
    with pytest.raises(EditSpecError, match="needs drank"):
        EditRequest(context, erase=True)
    with pytest.raises(EditSpecError, match="needs drank.*got 0"):
        EditRequest(context, erase=True, drank=0)
    with pytest.raises(EditSpecError, match="takes no 'copy'"):
        EditRequest(context, copy=Region(2, "b.png"), erase=True, drank=30)
    with pytest.raises(EditSpecError, match="needs context regions or a paste region"):
        EditRequest([], erase=True, drank=30)


def test_surroundings_erase_needs_no_drank_and_is_recorded_only_when_chosen():
    context = [Region(1, "a.png"), Region(4, "d.png")]
    filled = EditRequest(context, erase=True, erase_fill="surroundings")
    assert filled.to_dict()["erase_fill"] == "surroundings"
    assert EditRequest.from_dict(filled.to_dict()) == filled
    # The paper's erase writes the JSON it always wrote.
    assert "erase_fill" not in EditRequest(context, erase=True, drank=30).to_dict()
    with pytest.raises(EditSpecError, match="erase_fill='smear'.*unknown; use zero_units.*surroundings"):
        EditRequest(context, erase=True, drank=30, erase_fill="smear")
    with pytest.raises(EditSpecError, match="needs drank.*or erase_fill: surroundings"):
        EditRequest(context, erase=True, erase_fill="zero_units")
    with pytest.raises(EditSpecError, match="erase_fill='surroundings' is only used by erase requests"):
        EditRequest(context, copy=Region(2, "b.png"), paste=Region(3, "c.png"), erase_fill="surroundings")


def test_paste_anchor_is_checked_and_recorded_only_when_chosen():
    context = [Region(1, "a.png")]
    anchored = EditRequest(context, copy=Region(2, "b.png"), paste=Region(3, "c.png"), paste_anchor="bottom")
    assert anchored.to_dict()["paste_anchor"] == "bottom"
    assert EditRequest.from_dict(anchored.to_dict()) == anchored
    assert "paste_anchor" not in EditRequest(context, copy=Region(2, "b.png"), paste=Region(3, "c.png")).to_dict()
    with pytest.raises(EditSpecError, match="paste_anchor='top'.*unknown; use centre.*bottom"):
        EditRequest(context, copy=Region(2, "b.png"), paste=Region(3, "c.png"), paste_anchor="top")
    with pytest.raises(EditSpecError, match="paste_anchor='bottom' is only used by copy/paste requests"):
        EditRequest(context, erase=True, drank=30, paste_anchor="bottom")


def test_edit_config_sets_the_paste_anchor_of_a_request_read_from_a_file(tmp_path):
    from rewriting.edits.config import spec_from_config
    path = tmp_path / "request.json"
    make_spec().save(path)
    spec = spec_from_config({"file": str(path), "paste_anchor": "bottom"}, generator=None)
    assert spec.request.paste_anchor == "bottom"
    with pytest.raises(EditSpecError, match="paste_anchor='left'.*unknown"):
        spec_from_config({"file": str(path), "paste_anchor": "left"}, generator=None)


def test_edit_config_turns_a_recorded_copy_paste_into_a_surroundings_erase(tmp_path):
    from rewriting.edits.config import spec_from_config
    path = tmp_path / "watermark.json"
    make_spec().save(path)
    spec = spec_from_config({"file": str(path), "erase": True, "erase_fill": "surroundings"}, generator=None)
    assert spec.request.erase and spec.request.copy is None
    assert spec.request.erase_fill == "surroundings"
    with pytest.raises(EditSpecError, match="erase_fill='smudge'.*unknown"):
        spec_from_config({"file": str(path), "erase": True, "erase_fill": "smudge"}, generator=None)


def test_where_an_edit_acts_when_regions_are_left_out():
    paste = Region(9, "p.png")
    copy_paste = EditRequest([], copy=Region(2, "b.png"), paste=paste)
    assert copy_paste.context_regions() == [paste]
    context = [Region(1, "a.png"), Region(4, "d.png")]
    assert EditRequest(context, erase=True, drank=5).erase_region() == context[0]
    assert EditRequest(context, paste=paste, erase=True, drank=5).erase_region() == paste
    assert EditRequest([], paste=paste, erase=True, drank=5).context_regions() == [paste]


# Loading and hashing ------------------------------------------------------------------


def test_load_edit_reads_both_formats_and_refuses_others(tmp_path):
    url = encode_mask(block_mask(8, 1, 1, 3, 3))
    original = {"key": [[3, url]], "object": [2, url], "paste": [5, url]}
    path = tmp_path / "dome2tree.json"
    path.write_text(json.dumps(original))
    imported = load_edit(path)
    assert imported.name == "dome2tree"
    assert imported.request.copy == Region(2, url) and not imported.request.erase
    assert load_edit(make_spec().to_json()) == make_spec()
    with pytest.raises(EditSpecError, match="neither a rewriting edit spec.*found: 'masks'"):
        load_edit({"masks": []})
    with pytest.raises(EditSpecError, match="original request format"):
        EditSpec.from_json(json.dumps(original))
    with pytest.raises(EditSpecError, match="does not exist"):
        load_edit(tmp_path / "absent.json")


def test_mask_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "masks").mkdir()
    Image.fromarray((block_mask(8, 1, 1, 2, 2).numpy() * 255).astype(np.uint8)).save(
        tmp_path / "masks" / "paste.png"
    )
    data = spec_data()
    data["request"]["paste"]["mask"] = "masks/paste.png"
    (tmp_path / "edit.json").write_text(json.dumps(data))
    spec = load_edit(tmp_path / "edit.json")
    assert spec.load_masks()["request.paste"].sum().item() == 4.0
    monkeypatch.chdir(tmp_path.parent)  # the folder of the spec counts, not the working directory
    assert spec.request.paste.load_mask(spec.base_dir).shape == (8, 8)


def test_spec_hash_follows_what_changes_the_edit(tmp_path):
    reference = spec_hash(make_spec())
    assert reference == spec_hash(EditSpec.from_json(make_spec().to_json()))
    assert reference == spec_hash(make_spec(name="renamed", notes="x", generator={"name": "o"}))
    assert reference != spec_hash(make_spec(rank=2))
    assert reference != spec_hash(make_spec(layer=6))
    assert reference != spec_hash(make_spec(seed=2))
    assert reference != spec_hash(make_spec(method={"name": "rank_one", "lr": 0.1}))
    # A mask file is hashed by its contents, not its name.
    mask_path = tmp_path / "paste.png"
    data = spec_data()
    data["request"]["paste"]["mask"] = "paste.png"
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(mask_path)
    first = spec_hash(EditSpec.from_dict(data, base_dir=tmp_path))
    Image.fromarray(np.eye(4, dtype=np.uint8) * 255).save(mask_path)
    assert first != spec_hash(EditSpec.from_dict(data, base_dir=tmp_path))
