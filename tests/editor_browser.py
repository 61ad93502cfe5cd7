"""Driving the editor's page in a real Chromium with Playwright: shared by the browser test and the benchmark.

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

    def __init__(self, page, session, handlers_display_size: int):
        self.page = page
        self.session = session
        self.display_size = handlers_display_size
        self.scale = None  # display px -> screen px, measured by calibrate()
        self.offset = None

    def canvas_box(self) -> dict:
        return self.page.locator("#painter canvas").first.bounding_box()

    def stroke(self, points: list[tuple[float, float]]) -> None:
        mouse = self.page.mouse
        mouse.move(*points[0])
        mouse.down()
        for point in points[1:]:
            mouse.move(*point, steps=2)
        mouse.up()

    def set_kind(self, kind: str) -> None:
        self.page.locator("#kind").get_by_label(kind, exact=True).check()

    def open_image(self, image_id: int) -> None:
        box = self.page.locator("#image-id input")
        box.fill(str(image_id))
        self.page.click("#open-image")
        self.wait_status(f"Painting on image {image_id}.")

    def wait_status(self, text: str, timeout: float = 120_000) -> str:
        self.page.wait_for_function(
            "text => document.querySelector('#status').innerText.includes(text)", arg=text, timeout=timeout)
        return self.page.locator("#status").inner_text()

    def mark(self) -> str:
        self.page.click("#mark")
        self.page.wait_for_function(
            "() => /Marked|Error|nothing is painted/.test(document.querySelector('#status').innerText)",
            timeout=60_000)
        text = self.page.locator("#status").inner_text()
        # The canvas is reset to the bare image after each mark; wait for that before painting again.
        self.page.wait_for_timeout(400)
        return text

    def calibrate(self, image_id: int = 0) -> None:
        """Where display pixels are on screen: paint two dots, read back where the session marked them."""
        box = self.canvas_box()
        centre = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        found = []
        for dx, dy in ((-40, -40), (40, 40)):
            point = centre[0] + dx, centre[1] + dy
            self.open_image(image_id)
            self.set_kind("context")
            self.stroke([point, (point[0] + 1, point[1] + 1)])
            assert "Marked" in self.mark(), self.page.locator("#status").inner_text()
            mask = self.session.masks["context"].pop(image_id)
            rows, columns = torch.nonzero(mask > 0, as_tuple=True)
            scale_to_display = self.display_size / mask.shape[-1]
            found.append(((columns.float().mean().item() + 0.5) * scale_to_display,
                          (rows.float().mean().item() + 0.5) * scale_to_display, point))
        (x0, y0, p0), (x1, y1, p1) = found
        self.scale = ((p1[0] - p0[0]) / (x1 - x0), (p1[1] - p0[1]) / (y1 - y0))
        self.offset = (p0[0] - x0 * self.scale[0], p0[1] - y0 * self.scale[1])

    def screen(self, x_display: float, y_display: float) -> tuple[float, float]:
        return self.offset[0] + x_display * self.scale[0], self.offset[1] + y_display * self.scale[1]

    def paint_mask(self, image_id: int, kind: str, mask: torch.Tensor) -> str:
        """Paint the rows of `mask` (H, W at the image's size) with horizontal strokes, then Mark region."""
        self.open_image(image_id)
        self.set_kind(kind)
        per_pixel = self.display_size / mask.shape[-1]
        for row in range(mask.shape[0]):
            columns = torch.nonzero(mask[row] > 0).flatten()
            if len(columns) == 0:
                continue
            y = (row + 0.5) * per_pixel
            left, right = (columns.min().item() + 0.5) * per_pixel, (columns.max().item() + 0.5) * per_pixel
            self.stroke([self.screen(left, y), self.screen(right, y)])
        return self.mark()

    def gallery_images(self, element_id: str) -> list[np.ndarray]:
        """The pictures a gallery shows, fetched as the browser got them, each (H, W, 3) uint8."""
        sources = self.page.eval_on_selector_all(f"#{element_id} img", "images => images.map(i => i.src)")
        pictures = []
        for source in sources:
            body = self.page.request.get(source).body()
            pictures.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
        return pictures
