"""The editor's brush canvas: an image with a transparent canvas over it, and what was painted on it.

Gradio's ImageEditor (6.31) stays "processing" once an event has set a canvas that was painted on, so
every stroke after the first Mark was lost; this painter is one image, one canvas and a short script
(painter.js), and the server only ever sees the painted layer as a PNG with the image id it belongs to.
"""
from __future__ import annotations

import base64
import binascii
import html
import io
import json
from importlib import resources

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import MaskError

PNG_DATA_URL = "data:image/png;base64,"
SCRIPT = resources.files(__package__).joinpath("painter.js").read_text()
# The Mark button's browser side: take the painted layer (and clear the canvas) before the server is called.
TAKE_PAINTED = "(painted, kind) => [window.rewritingPainter ? window.rewritingPainter.take() : '', kind]"


def data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return PNG_DATA_URL + base64.b64encode(buffer.getvalue()).decode("ascii")


def painter_html(picture: Image.Image, image_id: int) -> str:
    """The image `image_id` (shown at its own pixel size, sharp) under an empty canvas of the same size."""
    width, height = picture.size
    return (f'<div id="paint-area" data-image-id="{int(image_id)}" style="position:relative;width:{width}px;'
            f'height:{height}px;max-width:100%">'
            f'<img src="{html.escape(data_url(picture))}" alt="image {int(image_id)}" width="{width}" '
            f'height="{height}" draggable="false" style="position:absolute;left:0;top:0;width:100%;height:100%;'
            'image-rendering:pixelated;user-select:none">'
            f'<canvas id="paint-overlay" width="{width}" height="{height}" style="position:absolute;left:0;top:0;'
            'width:100%;height:100%;opacity:0.6;cursor:crosshair;touch-action:none"></canvas></div>')


def controls_html(display_size: int) -> str:
    """Brush width (canvas pixels), undo of the last stroke, and clearing the canvas."""
    largest, default = max(8, display_size // 4), max(4, display_size // 20)
    return ('<div style="display:flex;gap:0.8em;align-items:center">'
            f'<label>Brush <input id="paint-brush" type="range" min="1" max="{largest}" value="{default}"></label>'
            '<button id="paint-undo" type="button">Undo stroke</button>'
            '<button id="paint-clear" type="button">Clear canvas</button></div>')


def read_painted(painted: str | None) -> tuple[int, np.ndarray] | None:
    """The Mark button's value → (image id, painted layer (H, W, 4) uint8); None when there is no canvas."""
    if not painted:
        return None
    try:
        value = json.loads(painted)
        image_id, source = int(value["image_id"]), str(value["png"])
    except (ValueError, TypeError, KeyError) as error:
        raise MaskError(f"the painted canvas came back unreadable ({error}); reload the page") from None
    if not source.startswith(PNG_DATA_URL):
        raise MaskError("the painted canvas is not a PNG data URL; reload the page")
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(source[len(PNG_DATA_URL):], validate=True)))
        return image_id, np.asarray(picture.convert("RGBA"))
    except (binascii.Error, UnidentifiedImageError, OSError) as error:
        raise MaskError(f"the painted canvas is not a readable PNG ({error}); reload the page") from None
