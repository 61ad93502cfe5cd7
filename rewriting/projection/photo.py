"""Read a photo for projection: check it, make it RGB, center-crop and resize it to the generator's size.

Channel decisions: RGB is used as is; greyscale (L, 1-bit) and palette images are converted to
RGB (grey stays grey); an alpha channel (RGBA, LA, PA, palette transparency) is dropped only when
every pixel is opaque, because a transparent pixel has no colour to reconstruct; any other mode
(CMYK, 16-bit or float greyscale, LAB, HSV, YCbCr) is refused: PIL's conversion of those ignores
colour profiles or clips, so the user converts it with a tool that knows the profile.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import PhotoError

MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes to ~150 MB; more is almost surely a mistake
CONVERTED_MODES = ("RGB", "L", "1", "P")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass
class Photo:
    """A photo ready to project: image (1, 3, size, size) in [-1, 1], its file's sha256, and what was done."""
    image: torch.Tensor
    sha256: str
    original_size: tuple[int, int]  # (width, height)
    notes: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise PhotoError(f"photo {str(path)!r} does not exist; pass the path of a PNG or JPEG image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below says it better
        try:
            image = Image.open(path)
            width, height = image.size
        except Image.DecompressionBombError:
            width = height = None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise PhotoError(f"photo {str(path)!r} is not an image this program can read ({error}); pass a PNG, "
                             f"JPEG or other common image file") from None
    if width is None or width * height > max_pixels:
        size = f"{width}x{height} = {width * height:,} pixels" if width else "larger than PIL will decode"
        raise PhotoError(f"photo {str(path)!r} is {size}, over the limit of max_pixels={max_pixels:,}; shrink it "
                         f"first (it is resized to the generator's resolution anyway) or raise max_pixels=N")
    return image


def _as_rgb(image: Image.Image, path: Path, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            raise PhotoError(f"photo {str(path)!r} ({image.mode}) has transparent pixels ({(alpha < 255).mean():.0%} "
                             f"of them), which have no colour to reconstruct; flatten it onto a background first "
                             f"(e.g. ImageMagick: convert in.png -background white -flatten out.png)")
        notes.append(f"dropped its fully opaque alpha channel ({mode} -> RGB)")
        return image.convert("RGB")
    if mode not in CONVERTED_MODES:
        raise PhotoError(f"photo {str(path)!r} has mode {mode} ({len(image.getbands())} channels: "
                         f"{''.join(image.getbands())}), which is not RGB, greyscale or palette; convert it to 8-bit "
                         f"RGB with a colour-managed tool first (e.g. ImageMagick: convert in -colorspace sRGB "
                         f"-depth 8 out.png)")
    if mode != "RGB":
        notes.append(f"converted {mode} to RGB")
    return image.convert("RGB")


def load_photo(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> Photo:
    """The photo at `path` as (1, 3, size, size) in [-1, 1]: center-cropped to a square, then resized."""
    path = Path(path).expanduser()
    image = _open(path, int(max_pixels))
    try:
        if getattr(image, "n_frames", 1) > 1:
            notes = [f"used the first of its {image.n_frames} frames"]
        else:
            notes = []
        image.load()
        rgb = _as_rgb(image, path, notes)
    except PhotoError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise PhotoError(f"photo {str(path)!r} could not be decoded ({error}); is the file complete?") from None
    width, height = rgb.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
        notes.append(f"center-cropped {width}x{height} to {side}x{side}")
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
        notes.append(f"{'downscaled' if side > size else 'upscaled'} {side}x{side} to the generator's {size}x{size}")
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)[None]
    return Photo(pixels / 127.5 - 1, _sha256(path), (width, height), notes)
