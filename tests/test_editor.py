"""The editor's session and handlers, without a browser: masks, Apply, the rule stack, Save and Load, errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewriting import load_delta, load_edit, rewrite
from rewriting.editor.config import compose_config, parse_arguments, session_from_config
from rewriting.editor.handlers import Handlers
from rewriting.editor.painter import data_url
from rewriting.editor.session import mask_from_painting
from rewriting.edits.config import spec_from_config
from rewriting.errors import CheckpointError, EditSpecError, LayerError, OptimizationError
from test_run_cli import assert_succeeded, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
STATISTICS = 200  # second-moment samples: enough for a clear edit, fast in tests


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("editor_cache")


@pytest.fixture(scope="module")
def toytown_regions(cache_root):
    """The bundled spire_to_tree request's regions (context ids → masks, copy, paste), resolved once."""
    cfg = compose_config([f"statistics.num_samples={STATISTICS}", f"statistics.cache_dir={cache_root}",
                          "trainer=cpu"])
    session = session_from_config(cfg, str(cache_root / "unused"))
    spec = spec_from_config(cfg.edit, session.generator, session.segmenter, None)
    request = spec.request
    return ({r.image_id: r.load_mask() for r in request.context[:4]},
            (request.copy.image_id, request.copy.load_mask()), (request.paste.image_id, request.paste.load_mask()))


@pytest.fixture
def session(cache_root, tmp_path):
    cfg = compose_config([f"statistics.num_samples={STATISTICS}", f"statistics.cache_dir={cache_root}",
                          "trainer=cpu"])
    return session_from_config(cfg, str(tmp_path / "saved"))


def paint(session, regions) -> None:
    context, (copy_id, copy_mask), (paste_id, paste_mask) = regions
    for image_id, mask in context.items():
        session.set_mask("context", image_id, mask)
    session.set_mask("copy", copy_id, copy_mask)
    session.set_mask("paste", paste_id, paste_mask)


def weights(generator) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in generator.state_dict().items()}


def test_painted_layer_becomes_the_mask_of_its_opaque_pixels():
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[40:80, 100:160] = (255, 0, 255, 255)
    mask = mask_from_painting(layer)
    assert mask.shape == (256, 256)
    assert mask[40:80, 100:160].min() == 1 and mask.sum() == 40 * 60
    assert mask_from_painting(np.zeros((256, 256, 4), np.uint8)) is None


def painted_value(image_id: int, layer: np.ndarray) -> str:
    """What the page's Mark button sends: the canvas as a PNG data URL with its image id."""
    return json.dumps({"image_id": image_id, "png": data_url(Image.fromarray(layer, "RGBA"))})


def test_mark_region_handler_turns_strokes_into_a_region_and_refuses_an_empty_canvas(session):
    handlers = Handlers(session)
    layer = np.zeros((handlers.display_size,) * 2 + (4,), np.uint8)
    layer[8:40, 8:40] = (255, 0, 255, 255)
    result = handlers.mark_region(painted_value(5, layer), "context")
    assert "Marked the context region of image 5" in result["status"]
    assert 5 in session.masks["context"] and session.masks["context"][5][8:40, 8:40].min() == 1
    assert session.masks["context"][5].sum() == 32 * 32
    empty = handlers.mark_region(painted_value(6, np.zeros_like(layer)), "copy")
    assert empty["status"].startswith("**Error:**") and "nothing is painted on image 6" in empty["status"]
    garbled = handlers.mark_region(json.dumps({"image_id": 6, "png": "data:image/png;base64,AAAA"}), "copy")
    assert garbled["status"].startswith("**Error:**") and "reload the page" in garbled["status"]
    assert "nothing is painted" in handlers.mark_region("", "copy")["status"]
    assert session.masks["copy"] == {}


def test_apply_gives_the_delta_rewrite_gives_for_the_same_spec_and_edits_the_paste(session, toytown_regions):
    paint(session, toytown_regions)
    rule, preview = session.apply_with_preview(layer=6)
    fresh = session_from_config(compose_config([f"statistics.num_samples={STATISTICS}",
                                                f"statistics.cache_dir={session.statistics['cache_dir']}",
                                                "trainer=cpu"]))
    expected = rewrite(fresh.generator, load_edit(rule.spec.to_json()), fresh.method(), 6,
                       second_moment=fresh.second_moment(6), apply=False, progress=False,
                       trainer_options={"accelerator": "cpu", "logger": False})
    (name, delta), = rule.deltas.items()
    assert name == expected.weight_name
    torch.testing.assert_close(delta, expected.delta, rtol=1e-5, atol=1e-7)
    assert rule.metrics["final_loss"] < rule.metrics["initial_loss"]
    # The paste image (first column) changes inside the painted paste region far more than away from it.
    paste_mask = toytown_regions[2][1]
    change = (preview.after[0] - preview.before[0]).abs().mean(0)
    inside = change[paste_mask > 0].mean()
    grown = torch.nn.functional.max_pool2d(paste_mask[None, None], 21, 1, 10)[0, 0] > 0
    assert inside > 2 * change[~grown].mean()
    assert preview.captions[0] == f"paste {toytown_regions[2][0]}" and preview.request_count >= 2


def test_rule_stack_toggles_composes_and_reverts_bit_exactly(session, toytown_regions):
    original = weights(session.generator)
    paint(session, toytown_regions)
    first = session.apply(layer=6)
    after_first = weights(session.generator)
    session.clear_masks()
    context, copy, paste = toytown_regions
    paint(session, (dict(list(context.items())[:2]), copy, paste))
    second = session.apply(layer=7)
    name_first, = first.deltas
    name_second, = second.deltas
    assert name_first != name_second
    # Composed: the base plus both deltas.
    state = session.generator.state_dict()
    assert torch.equal(state[name_first], after_first[name_first])
    assert torch.equal(state[name_second], original[name_second] + second.deltas[name_second])
    session.set_enabled(0, False)  # the first rule off: its layer is back to the original bits
    assert torch.equal(session.generator.state_dict()[name_first], original[name_first])
    assert torch.equal(session.generator.state_dict()[name_second], original[name_second] + second.deltas[name_second])
    session.set_enabled(0, True)
    assert torch.equal(session.generator.state_dict()[name_first], after_first[name_first])
    session.remove(1)
    assert torch.equal(session.generator.state_dict()[name_second], original[name_second])
    session.revert_all()
    assert all(torch.equal(tensor, original[name]) for name, tensor in session.generator.state_dict().items())
    assert session.rules == []


def test_save_writes_a_runs_files_atomically_and_load_round_trips(session, toytown_regions, tmp_path):
    paint(session, toytown_regions)
    rule = session.apply(layer=6)
    edited = weights(session.generator)
    folder = session.save(tmp_path / "saved_edit", edited_generator=True)
    names = {path.name for path in folder.iterdir()}
    assert {"delta.safetensors", "edit.json", "stack.json", "rules", "edited_generator.pt"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    tensors, metadata = load_delta(folder / "delta.safetensors")
    assert metadata["base_sha256"] == session.generator.checkpoint_sha256 and metadata["layer"] == 6
    (name, delta), = rule.deltas.items()
    assert torch.equal(tensors[name], delta)
    stack = json.loads((folder / "stack.json").read_text())
    assert stack["rules"][0]["name"] == rule.name and stack["editor_config"]["statistics"]["num_samples"] == STATISTICS
    # A second save to the same folder is refused and leaves the first intact.
    with pytest.raises(EditSpecError, match="already exists"):
        session.save(folder)
    # Loaded into a fresh editor, the saved folder gives the same weights.
    other = session_from_config(compose_config([f"statistics.num_samples={STATISTICS}",
                                                f"statistics.cache_dir={session.statistics['cache_dir']}"]))
    other.load(folder)
    assert all(torch.equal(t, edited[n]) for n, t in other.generator.state_dict().items())
    other.revert_all()
    other.load(folder / "rules" / f"01_{rule.name}" / "delta.safetensors")
    assert all(torch.equal(t, edited[n]) for n, t in other.generator.state_dict().items())
    # An edit.json is refitted: the same delta.
    other.revert_all()
    refit, = other.load(folder / "edit.json")
    torch.testing.assert_close(next(iter(refit.deltas.values())), next(iter(rule.deltas.values())),
                               rtol=1e-5, atol=1e-7)


def test_a_failed_save_leaves_no_partial_folder(session, toytown_regions, tmp_path, monkeypatch):
    paint(session, toytown_regions)
    session.apply(layer=6)
    import rewriting.editor.session as session_module
    calls = []

    def failing_save_delta(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return original_save_delta(*args, **kwargs)
    original_save_delta = session_module.save_delta
    monkeypatch.setattr(session_module, "save_delta", failing_save_delta)
    handlers = Handlers(session)
    result = handlers.save(str(tmp_path / "out"), False)
    assert "disk full" in result["status"]
    assert list(tmp_path.iterdir()) == [] or all(p.name == "saved" for p in tmp_path.iterdir())


def test_a_delta_for_another_base_generator_is_refused_with_the_fix(session, toytown_regions, tmp_path):
    paint(session, toytown_regions)
    session.apply(layer=6)
    folder = session.save(tmp_path / "edit")
    session.revert_all()
    session.generator.checkpoint_sha256 = "f" * 64
    with pytest.raises(CheckpointError, match="start the editor with that generator"):
        session.load(folder / "delta.safetensors")
    message = Handlers(session).load(str(folder / "edit.json"), None)["status"]
    assert message.startswith("**Error:**") and "was made for a generator" in message
    assert session.rules == []


@pytest.mark.parametrize("missing, expected", [
    ("context", "no context is painted"), ("paste", "the paste target is empty"), ("copy", "nothing is copied"),
    ("copy+paste", "nothing is copied or pasted")])
def test_apply_with_a_region_missing_says_what_to_paint_and_changes_nothing(session, toytown_regions, missing,
                                                                            expected):
    paint(session, toytown_regions)
    for kind in missing.split("+"):
        session.clear_masks(kind)
    before = weights(session.generator)
    result = Handlers(session).apply(6, "rank_one", 1, 0)
    assert result["status"].startswith("**Error:**") and expected in result["status"], result["status"]
    assert set(result) == {"status"} and session.rules == []
    assert all(torch.equal(t, before[n]) for n, t in session.generator.state_dict().items())


def test_a_layer_the_generator_lacks_and_a_diverging_fit_are_reported(session, toytown_regions, monkeypatch):
    paint(session, toytown_regions)
    before = weights(session.generator)
    handlers = Handlers(session)
    result = handlers.apply(42, "rank_one", 1, 0)
    assert result["status"].startswith("**Error:**") and "42" in result["status"]
    with pytest.raises(LayerError):
        session.apply(layer=42)
    # A fit whose loss turns NaN mid-optimisation (as a too-large learning rate does) stops with a message.
    from rewriting.methods.layer_rewrite import LayerRewrite
    loss_for = LayerRewrite.loss_for
    monkeypatch.setattr(LayerRewrite, "loss_for", lambda self, weight: loss_for(self, weight) * float("nan"))
    with pytest.raises(OptimizationError, match="diverged"):
        session.apply(layer=6)
    message = handlers.apply(6, "rank_one", 1, 0)["status"]
    assert message.startswith("**Error:**") and "lower method.lr" in message
    assert session.rules == []
    assert all(torch.equal(t, before[n]) for n, t in session.generator.state_dict().items())


def test_pick_by_label_marks_the_clicked_part(session, toytown_regions):
    copy_id, copy_mask = toytown_regions[1]
    rows, columns = torch.nonzero(copy_mask > 0, as_tuple=True)
    middle = len(rows) // 2
    handlers = Handlers(session)
    per_pixel = handlers.display_size / copy_mask.shape[-1]
    x, y = (columns[middle].item() + 0.5) * per_pixel, (rows[middle].item() + 0.5) * per_pixel
    result = handlers.pick_part(copy_id, "copy", x, y)
    assert "Picked the tree" in result["status"], result["status"]
    picked = session.masks["copy"][copy_id]
    # The bundled request's copy is the largest tree piece: the click inside it picks that piece.
    assert (picked * copy_mask).sum() / copy_mask.sum() > 0.9


def test_command_line_splits_server_options_from_hydra_overrides():
    options, overrides = parse_arguments(["--port", "7999", "layer=8", "generator.checkpoint=/x.pt", "edit=a.json"])
    assert options.port == 7999 and options.host == "127.0.0.1"
    assert overrides == ["layer=8", "generator.checkpoint=/x.pt", "edit=from_file", "edit.file=a.json"]


def test_an_edit_json_saved_in_the_editor_reproduces_its_delta_with_run_py(session, toytown_regions, tmp_path):
    paint(session, toytown_regions)
    rule = session.apply(layer=6)
    folder = session.save(tmp_path / "editor_save")
    cache = Path(session.statistics["cache_dir"])
    process = run_cli([f"edit={folder / 'edit.json'}", "metrics=none", "logger=none", "trainer=cpu", "progress=false",
                       f"statistics.num_samples={STATISTICS}", f"statistics.cache_dir={cache}",
                       "save_edited_generator=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_succeeded(process)
    tensors, metadata = load_delta(tmp_path / "run" / "delta.safetensors")
    (name, delta), = rule.deltas.items()
    assert set(tensors) == {name} and metadata["layer"] == 6
    torch.testing.assert_close(tensors[name], delta, rtol=1e-5, atol=1e-7)
    assert math.isclose(float(delta.norm()), float(tensors[name].norm()), rel_tol=1e-5)
