"""What each control of the editor's page does, without Gradio: browser values in, named outputs back.

Each handler returns a dict from output names ("status", "gallery", "after", ...) to values; the app
(rewriting.editor.app) maps names to its components. A handler never raises: a user's mistake, or
anything else that goes wrong, becomes the "status" message and leaves the session as it was.
"""
from __future__ import annotations

import functools
import logging
import traceback
from dataclasses import dataclass, field

import torch

from ..edits.masks import resize_mask
from ..errors import RewritingError
from ..visualize import outline
from .painter import painter_html, read_painted
from .session import MASK_KINDS, EditorSession, mask_from_painting, to_pil

log = logging.getLogger("rewriting.editor")
PER_PAGE = 12
KIND_COLOURS = {"context": (1.0, 1.0, -1.0), "copy": (-1.0, 1.0, 1.0), "paste": (1.0, -1.0, 1.0)}


@dataclass
class Choices:
    """New choices (and selected values) for a checkbox group or dropdown."""
    choices: list[str]
    value: list[str] | str | None = field(default=None)


def error_message(error: BaseException) -> str:
    if isinstance(error, RewritingError):
        return f"**Error:** {error}"
    log.error("unexpected error in the editor:\n%s", traceback.format_exc())
    return f"**Unexpected error** ({type(error).__name__}: {error}). The editor is still running; see its terminal."


def shown_in_page(handler):
    """Turn any exception of a handler into the page's status message."""
    @functools.wraps(handler)
    def safe(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 (the server must keep serving)
            return {"status": error_message(error)}
    return safe


class Handlers:
    """The page's event handlers for one session."""

    def __init__(self, session: EditorSession):
        self.session = session
        size = session.images([0]).shape[-1]
        self.display_size = size * max(1, 256 // size)  # paint on at least 256 px, so a brush can follow small parts

    # ----- pictures
    def gallery_items(self, page: int) -> list:
        ids = self.session.page(int(page), PER_PAGE)
        return [(to_pil(image), f"image {i}") for i, image in zip(ids, self.session.images(ids))]

    def marked_items(self) -> list:
        items = []
        for kind in MASK_KINDS:
            for image_id, mask in self.session.masks[kind].items():
                image = self.session.images([image_id])
                shown = outline(image, resize_mask(mask, image.shape[-2:])[None], KIND_COLOURS[kind])[0]
                items.append((to_pil(shown), f"{kind}: image {image_id}"))
        return items

    def marked_text(self) -> str:
        listed = {kind: ", ".join(str(i) for i in self.session.masks[kind]) or "none" for kind in MASK_KINDS}
        return f"Context on images: {listed['context']} · copy from: {listed['copy']} · paste on: {listed['paste']}"

    def painter_value(self, image_id: int) -> str:
        return painter_html(to_pil(self.session.images([int(image_id)])[0], self.display_size), int(image_id))

    def picker_value(self, image_id: int):
        return to_pil(self.session.images([int(image_id)])[0], self.display_size)

    def stack(self) -> dict:
        choices = [f"{i + 1}. {rule.name} (layer {rule.layer})" for i, rule in enumerate(self.session.rules)]
        enabled = [choice for choice, rule in zip(choices, self.session.rules) if rule.enabled]
        return {"rules_on": Choices(choices, enabled), "rule_choice": Choices(choices, None)}

    def masks_changed(self, text: str) -> dict:
        return {"marked": self.marked_items(), "marked_summary": self.marked_text(), "status": text}

    def model_changed(self, text: str) -> dict:
        return {**self.stack(), "gallery": self.gallery_items(0), "page": 0, "status": text}

    # ----- events
    @shown_in_page
    def show_page(self, number) -> dict:
        number = int(number or 0)
        if number < 0:
            raise RewritingError("there is no page before page 0")
        return {"gallery": self.gallery_items(number), "page": number, "status": f"Page {number}."}

    @shown_in_page
    def open_image(self, number) -> dict:
        if number is None:
            raise RewritingError("the image id is empty; enter a whole number ≥ 0")
        number = int(number)
        if number < 0:
            raise RewritingError(f"image id {number} is negative; ids start at 0")
        outputs = {"painter": self.painter_value(number), "image_id": number, "id_box": number,
                   "status": f"Painting on image {number}."}
        if self.session.segmenter is not None:
            outputs["picker"] = self.picker_value(number)
        return outputs

    @shown_in_page
    def select_image(self, page, index: int) -> dict:
        return self.open_image(int(page or 0) * PER_PAGE + int(index))

    @shown_in_page
    def mark_region(self, painted: str | None, kind: str) -> dict:
        """The strokes painted on the canvas (painter.read_painted's value) become the `kind` region of its image."""
        read = read_painted(painted)
        mask = mask_from_painting(read[1]) if read is not None else None
        if mask is None:
            where = f"image {read[0]}" if read is not None else "the image"
            raise RewritingError(f"nothing is painted on {where}: paint the {kind} region with the brush, then "
                                 "press Mark region")
        image_id = read[0]
        self.session.set_mask(kind, image_id, mask)
        return self.masks_changed(f"Marked the {kind} region of image {image_id}.")

    @shown_in_page
    def pick_part(self, image_id, kind: str, x: int, y: int) -> dict:
        """A click at display pixel (x, y) picks the labelled part there as the `kind` region."""
        label, mask = self.session.pick(int(image_id), int(x), int(y), display_size=self.display_size)
        self.session.set_mask(kind, int(image_id), mask)
        return self.masks_changed(f"Picked the {label} under the click as the {kind} region of image {int(image_id)}.")

    @shown_in_page
    def undo_context(self) -> dict:
        removed = self.session.undo_context()
        return self.masks_changed(f"Removed the context of image {removed}." if removed is not None
                                  else "There is no context to undo.")

    @shown_in_page
    def clear_kind(self, kind: str) -> dict:
        self.session.clear_masks(kind)
        return self.masks_changed(f"Cleared the {kind} regions.")

    @shown_in_page
    def apply(self, layer, method: str, rank, image_id, progress=None) -> dict:
        """Fit the marked edit; the before/after galleries show the request's images and held-out samples."""
        if rank is None or int(rank) != rank:
            raise RewritingError(f"rank {rank!r} is not a whole number; enter a positive whole number")
        if progress is not None and int(layer) not in self.session._second_moments:
            progress(0, desc=f"second moment of layer {int(layer)} (computed once per layer)")
        rule, preview = self.session.apply_with_preview(layer, method, int(rank), progress=progress is not None)
        pictures = lambda images: [(to_pil(i), c) for i, c in zip(images, preview.captions)]  # noqa: E731
        metrics = rule.metrics
        return {**self.model_changed(f"Applied **{rule.name}** at layer {rule.layer}: loss "
                                     f"{metrics['initial_loss']:.4f} → {metrics['final_loss']:.4f}, fitted in "
                                     f"{metrics['edit_seconds']:.2f} s."),
                "before": pictures(preview.before), "after": pictures(preview.after),
                "painter": self.painter_value(image_id)}

    @staticmethod
    def rule_index(choice) -> int:
        if not choice:
            raise RewritingError("choose a rule in the Rule list first")
        return int(str(choice).split(".", 1)[0]) - 1

    @shown_in_page
    def toggle(self, enabled_choices) -> dict:
        """Rules ticked in the stack are on; the model is rebuilt from its original weights and them."""
        enabled = {self.rule_index(choice) for choice in enabled_choices or []}
        for index, rule in enumerate(self.session.rules):
            if rule.enabled != (index in enabled):
                self.session.set_enabled(index, index in enabled)
        on = sum(rule.enabled for rule in self.session.rules)
        return {"gallery": self.gallery_items(0), "page": 0,
                "status": f"{on} of {len(self.session.rules)} rule(s) on; the images show the model now."}

    @shown_in_page
    def remove(self, choice) -> dict:
        rule = self.session.remove(self.rule_index(choice))
        return self.model_changed(f"Removed {rule.name}.")

    @shown_in_page
    def revert(self) -> dict:
        self.session.revert_all()
        return self.model_changed("Reverted: the generator has its original weights.")

    @shown_in_page
    def save(self, folder: str | None, edited_generator: bool) -> dict:
        written = self.session.save((folder or "").strip() or None, edited_generator=bool(edited_generator))
        names = sorted(path.name for path in written.iterdir())
        return {"status": f"Saved to `{written}`: {', '.join(names)}."}

    @shown_in_page
    def load(self, path: str | None, uploaded: str | None) -> dict:
        source = (path or "").strip() or uploaded
        if not source:
            raise RewritingError("give a path to load, or drop a file")
        rules = self.session.load(source)
        return self.model_changed(f"Loaded {', '.join(rule.name for rule in rules)}.")
