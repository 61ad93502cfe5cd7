"""Driving the editor's page in a real Chromium with Playwright (the browser test and the Apply benchmark).

The page is served in this process (so a test can look at the session behind it); the browser paints with
mouse events on the brush canvas exactly as a user does.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """The system Chromium (Debian: apt-get install -y chromium), or $REWRITING_CHROMIUM."""
    configured = os.environ.get("REWRITING_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    found = shutil.which("chromium")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(session):
    """Start the page for `session` on a free local port; returns (app, url)."""
    from rewriting.editor.app import launch
    return launch(session, "127.0.0.1", free_port(), block=False)


class PageDriver:
    """Mouse-level actions on the editor page."""

    def __init__(self, page, session, display_size: int):
        self.page = page
        self.session = session
        self.display_size = display_size

    def screen(self, x_display: float, y_display: float) -> tuple[float, float]:
        """Where a display pixel of the canvas is on the screen."""
        box = self.page.locator("#paint-overlay").bounding_box()
        return (box["x"] + x_display * box["width"] / self.display_size,
                box["y"] + y_display * box["height"] / self.display_size)

    def stroke(self, points: list[tuple[float, float]]) -> None:
        mouse = self.page.mouse
        mouse.move(*points[0])
        mouse.down()
        for point in points[1:]:
            mouse.move(*point, steps=4)
        mouse.up()

    def set_kind(self, kind: str) -> None:
        self.page.locator("#kind").get_by_label(kind, exact=True).check()

    def set_brush(self, width: int) -> None:
        self.page.eval_on_selector("#paint-brush", "(control, width) => { control.value = width; }", width)

    def click_and_wait(self, selector: str, pattern: str, timeout: float = 120_000) -> str:
        """Click, then wait for the event to finish with a status matching `pattern` (a JS regex).

        Gradio marks the status "pending" while an event runs; an observer notes that it happened, so an
        answer identical to the status before the click is still waited for."""
        self.page.evaluate("""() => {
            const wrapper = document.querySelector('#status [data-testid=markdown-wrapper]');
            window.statusWentPending = false;
            if (window.statusObserver) window.statusObserver.disconnect();
            window.statusObserver = new MutationObserver(() => {
                if (wrapper.classList.contains('pending')) window.statusWentPending = true; });
            window.statusObserver.observe(wrapper, {attributes: true});
        }""")
        self.page.click(selector)
        self.page.wait_for_function("""pattern => {
            const wrapper = document.querySelector('#status [data-testid=markdown-wrapper]');
            return window.statusWentPending && !wrapper.classList.contains('pending')
                && new RegExp(pattern).test(document.querySelector('#status').innerText);
        }""", arg=pattern, timeout=timeout)
        return self.page.locator("#status").inner_text()

    def open_image(self, image_id: int) -> None:
        self.page.locator("#image-id input").fill(str(image_id))
        self.click_and_wait("#open-image", f"Painting on image {image_id}\\.")
        self.page.wait_for_selector(f'#paint-area[data-image-id="{image_id}"] #paint-overlay')

    def mark(self) -> str:
        return self.click_and_wait("#mark", "Marked|Error")

    def paint_mask(self, image_id: int, kind: str, mask: torch.Tensor) -> str:
        """Paint the rows of `mask` (H, W at the image's size) with horizontal strokes, then Mark region."""
        self.open_image(image_id)
        self.set_kind(kind)
        per_pixel = self.display_size / mask.shape[-1]
        self.set_brush(max(1, round(per_pixel)))
        for row in range(mask.shape[0]):
            columns = torch.nonzero(mask[row] > 0).flatten()
            if len(columns) == 0:
                continue
            y = (row + 0.5) * per_pixel
            left, right = (columns.min().item() + 0.5) * per_pixel, (columns.max().item() + 0.5) * per_pixel
            self.stroke([self.screen(left, y), self.screen(right, y)])
        if os.environ.get("REWRITING_EDITOR_DEBUG"):
            self.page.screenshot(path=f"/tmp/paint_{image_id}_{kind}.png", full_page=True)
        return self.mark()

    def apply(self) -> str:
        """Press Apply; returns once the answer is in and every picture of the After row has loaded."""
        text = self.click_and_wait("#apply", "Applied|Error", timeout=600_000)
        if "Applied" in text:
            self.page.wait_for_function(
                "() => { const shown = Array.from(document.querySelectorAll('#after img'));"
                " return shown.length > 0 && shown.every(image => image.complete && image.naturalWidth > 0); }",
                timeout=60_000)
        return text

    def gallery_images(self, element_id: str) -> list[np.ndarray]:
        """The pictures a gallery shows, fetched as the browser got them, each (H, W, 3) uint8."""
        sources = self.page.eval_on_selector_all(f"#{element_id} img", "images => images.map(i => i.src)")
        pictures = []
        for source in sources:
            body = self.page.request.get(source).body()
            pictures.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
        return pictures
