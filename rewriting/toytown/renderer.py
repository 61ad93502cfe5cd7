"""Procedural Toytown scenes (sky, ground, buildings with roofs, trees, watermark) with exact part labels.

Scene geometry is drawn per image from ``numpy.random.RandomState(seed)`` on a 64-unit
canvas with integer edges, so at 64 px every part boundary falls on a pixel edge (crisp
parts, exact labels); other sizes sample the same canvas at their pixel centres.
Rasterization is vectorized over the batch in torch and runs on any device.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import torch

from rewriting.errors import RewritingError
from rewriting.toytown.labels import LABEL_INDEX

CANVAS = 64  # design units across the canvas; all scene geometry lives in these units
MAX_BUILDINGS = 2
MAX_TREES = 2
ROOF_KINDS = ("spire", "dome", "flat_roof")
WATERMARK_PROBABILITY = 0.2

# The watermark sits at a fixed place, bottom-right, like LSUN's: a light band holding a
# row of blocky letters. The whole band is labelled so that it is segmentable.
WATERMARK_LETTER_COUNT = 5
WATERMARK_LEFT, WATERMARK_RIGHT = 39, 62
WATERMARK_TOP, WATERMARK_BOTTOM = 55, 62
_TEXT_LEFT, _TEXT_TOP = WATERMARK_LEFT + 2, WATERMARK_TOP + 1
_LETTER_PITCH = 4  # 3 units of glyph, 1 of gap

_GLYPHS = (
    ("###", "#.#", "###", "#.#", "#.#"),  # A
    ("###", "#..", "#..", "#..", "###"),  # C
    ("###", "#..", "##.", "#..", "###"),  # E
    ("#.#", "#.#", "###", "#.#", "#.#"),  # H
    ("#..", "#..", "#..", "#..", "###"),  # L
    ("##.", "#.#", "#.#", "#.#", "#.#"),  # N
    ("###", "#.#", "#.#", "#.#", "###"),  # O
    ("###", "#.#", "###", "#..", "#.."),  # P
    ("###", "#..", "###", "..#", "###"),  # S
    ("###", ".#.", ".#.", ".#.", ".#."),  # T
    ("#.#", "#.#", "#.#", "#.#", "###"),  # U
    ("#.#", "#.#", ".#.", ".#.", ".#."),  # Y
)
# (glyph, row, column) -> ink, with an empty fourth column for the gap between letters.
_FONT = np.array(
    [[[cell == "#" for cell in row + "."] for row in glyph] for glyph in _GLYPHS], dtype=bool
)

_BODY_COLORS = np.array(
    [
        (0.90, 0.86, 0.74),  # cream
        (0.82, 0.70, 0.50),  # sandstone
        (0.68, 0.32, 0.24),  # brick
        (0.72, 0.72, 0.75),  # light grey
        (0.62, 0.72, 0.84),  # pale blue
        (0.86, 0.70, 0.38),  # ochre
        (0.93, 0.93, 0.90),  # white
        (0.86, 0.62, 0.60),  # pink
    ]
)
_SPIRE_COLORS = np.array(
    [
        (0.26, 0.28, 0.38),  # slate
        (0.52, 0.16, 0.13),  # dark red
        (0.18, 0.42, 0.36),  # copper green
        (0.36, 0.22, 0.14),  # dark brown
        (0.16, 0.20, 0.42),  # navy
    ]
)
_DOME_COLORS = np.array(
    [
        (0.36, 0.64, 0.58),  # verdigris
        (0.88, 0.70, 0.20),  # gold
        (0.48, 0.50, 0.58),  # lead
        (0.25, 0.40, 0.72),  # blue
        (0.80, 0.42, 0.24),  # terracotta
    ]
)
_DOOR_COLORS = np.array(
    [
        (0.38, 0.22, 0.12),  # brown
        (0.18, 0.32, 0.20),  # dark green
        (0.48, 0.14, 0.12),  # dark red
        (0.24, 0.20, 0.18),  # near black
    ]
)


@dataclasses.dataclass
class SceneBatch:
    """Parameters of N scenes in canvas units (0..64); per-slot arrays are (N, slots[, 3])."""

    horizon: np.ndarray  # (N,) first ground row
    sky_top: np.ndarray  # (N, 3) colours in [0, 1]
    sky_bottom: np.ndarray
    ground_far: np.ndarray  # at the horizon
    ground_near: np.ndarray  # at the bottom edge
    building_present: np.ndarray  # (N, 2) bool; slot 1 is drawn over slot 0
    building_left: np.ndarray  # body edges, integer units
    building_right: np.ndarray
    building_top: np.ndarray
    building_bottom: np.ndarray
    body_color: np.ndarray  # (N, 2, 3)
    roof_kind: np.ndarray  # (N, 2) index into ROOF_KINDS
    roof_height: np.ndarray
    roof_half_width: np.ndarray  # at the roof's base, half-units allowed
    roof_color: np.ndarray
    window_columns: np.ndarray  # 0 for a building without windows
    window_rows: np.ndarray
    window_left: np.ndarray  # top-left corner of the window grid
    window_top: np.ndarray
    window_size: np.ndarray
    window_pitch: np.ndarray
    window_color: np.ndarray
    door_left: np.ndarray
    door_right: np.ndarray
    door_top: np.ndarray
    door_color: np.ndarray
    tree_present: np.ndarray  # (N, 2) bool
    trunk_left: np.ndarray
    trunk_width: np.ndarray
    trunk_top: np.ndarray
    tree_base: np.ndarray
    crown_center_x: np.ndarray
    crown_center_y: np.ndarray
    crown_radius_x: np.ndarray
    crown_radius_y: np.ndarray
    crown_color: np.ndarray
    trunk_color: np.ndarray
    watermark_present: np.ndarray  # (N,) bool
    watermark_band_opacity: np.ndarray  # (N,)
    watermark_ink_opacity: np.ndarray  # (N,)
    watermark_letters: np.ndarray  # (N, 5) glyph indices

    def __len__(self) -> int:
        return int(self.horizon.shape[0])

    @classmethod
    def empty(cls, count: int) -> "SceneBatch":
        """A batch of `count` scenes with every field zeroed, to be filled in."""
        fields = {}
        for field in dataclasses.fields(cls):
            name = field.name
            if name == "watermark_letters":
                shape: tuple[int, ...] = (count, WATERMARK_LETTER_COUNT)
            elif name == "horizon" or name.startswith("watermark_"):
                shape = (count,)
            elif name.startswith(("sky_", "ground_")):
                shape = (count, 3)
            else:
                slots = MAX_TREES if name.startswith(("tree_", "trunk_", "crown_")) else MAX_BUILDINGS
                shape = (count, slots, 3) if name.endswith("_color") else (count, slots)
            if name.endswith("_present"):
                dtype: type = bool
            elif name in ("roof_kind", "watermark_letters"):
                dtype = np.int64
            else:
                dtype = np.float64  # geometry too: half-unit roof widths and crown centres occur
            fields[name] = np.zeros(shape, dtype=dtype)
        return cls(**fields)


def _jitter(random: np.random.RandomState, color: np.ndarray, amount: float) -> np.ndarray:
    return np.minimum(np.maximum(color + random.uniform(-amount, amount, 3), 0.0), 1.0)


def _contrasting(
    random: np.random.RandomState, palette: np.ndarray, avoid: np.ndarray, amount: float
) -> np.ndarray:
    """A jittered palette colour at least a fixed distance from `avoid`, so parts stay segmentable."""
    for _ in range(8):
        color = _jitter(random, palette[random.randint(len(palette))], amount)
        if np.abs(color - avoid).sum() > 0.45:
            return color
    return color


def window_grid(left: int, right: int, top: int, bottom: int, size: int, gap: int,
                margin: int) -> tuple[int, int, int, int]:
    """The window grid of a wall [left, right) x [top, bottom): (columns, rows, grid left, grid top)."""
    pitch = size + gap
    columns = max(0, (right - left - 2 * margin + gap) // pitch)
    rows = max(0, (bottom - top - 2 * margin + gap) // pitch)
    return columns, rows, left + (right - left - (columns * pitch - gap)) // 2, top + margin


def _sample_building(
    random: np.random.RandomState, scenes: SceneBatch, index: int, slot: int, center: int, width: int
) -> None:
    horizon = scenes.horizon[index]
    left = center - width // 2
    right = left + width
    top = random.randint(22, 33)
    bottom = horizon + random.randint(0, 3)
    body = _jitter(random, _BODY_COLORS[random.randint(len(_BODY_COLORS))], 0.05)

    kind = random.randint(len(ROOF_KINDS))
    if ROOF_KINDS[kind] == "spire":
        roof_height = random.randint(15, 22)
        half_width = max(5, round(width * random.uniform(0.3, 0.48)))
        roof_color = _contrasting(random, _SPIRE_COLORS, body, 0.05)
    elif ROOF_KINDS[kind] == "dome":
        half_width = width / 2 - random.randint(0, 3)
        roof_height = int(np.clip(round(half_width * random.uniform(0.9, 1.3)), 8, 15))
        roof_color = _contrasting(random, _DOME_COLORS, body, 0.05)
    else:
        roof_height = random.randint(4, 6)
        half_width = width / 2 + random.randint(1, 3)  # the slab overhangs the body
        roof_color = body * random.uniform(0.38, 0.52)

    door_width = random.randint(4, 7)
    door_left = left + (width - door_width) // 2
    door_top = bottom - random.randint(7, 11)

    columns = rows = 0
    window_size = random.randint(3, 5)
    gap = random.randint(2, 4)
    margin = random.randint(2, 4)
    pitch = window_size + gap
    grid_left = grid_top = 0
    if random.uniform() < 0.8:
        columns, rows, grid_left, grid_top = window_grid(left, right, top, bottom, window_size, gap, margin)
    window_color = _jitter(random, np.array([0.14, 0.17, 0.28]), 0.06)
    if random.uniform() < 0.3 and np.abs(np.array([0.96, 0.86, 0.48]) - body).sum() > 0.5:
        window_color = _jitter(random, np.array([0.96, 0.86, 0.48]), 0.04)  # lit windows

    scenes.building_present[index, slot] = True
    scenes.building_left[index, slot] = left
    scenes.building_right[index, slot] = right
    scenes.building_top[index, slot] = top
    scenes.building_bottom[index, slot] = bottom
    scenes.body_color[index, slot] = body
    scenes.roof_kind[index, slot] = kind
    scenes.roof_height[index, slot] = roof_height
    scenes.roof_half_width[index, slot] = half_width
    scenes.roof_color[index, slot] = roof_color
    scenes.window_columns[index, slot] = columns
    scenes.window_rows[index, slot] = rows
    scenes.window_left[index, slot] = grid_left
    scenes.window_top[index, slot] = grid_top
    scenes.window_size[index, slot] = window_size
    scenes.window_pitch[index, slot] = pitch
    scenes.window_color[index, slot] = window_color
    scenes.door_left[index, slot] = door_left
    scenes.door_right[index, slot] = door_left + door_width
    scenes.door_top[index, slot] = door_top
    scenes.door_color[index, slot] = _contrasting(random, _DOOR_COLORS, body, 0.05)


def _sample_tree(
    random: np.random.RandomState, scenes: SceneBatch, index: int, slot: int, near_x: float, side: int
) -> None:
    radius_x = random.randint(6, 10)
    radius_y = radius_x + random.randint(0, 3)
    # Beside the building: the crown centre sits just outside its edge, overlapping it a little.
    center_x = int(np.clip(near_x + side * random.randint(2, radius_x + 3), radius_x - 3, CANVAS - radius_x + 3))
    trunk_width = random.randint(3, 5)
    trunk_left = center_x - trunk_width // 2
    base = min(scenes.horizon[index] + random.randint(1, 7), CANVAS - 2)
    visible_trunk = random.randint(3, 7)
    center_y = base - visible_trunk - radius_y
    scenes.tree_present[index, slot] = True
    scenes.trunk_left[index, slot] = trunk_left
    scenes.trunk_width[index, slot] = trunk_width
    scenes.trunk_top[index, slot] = center_y
    scenes.tree_base[index, slot] = base
    scenes.crown_center_x[index, slot] = trunk_left + trunk_width / 2
    scenes.crown_center_y[index, slot] = center_y
    scenes.crown_radius_x[index, slot] = radius_x
    scenes.crown_radius_y[index, slot] = radius_y
    green = np.array(
        [random.uniform(0.10, 0.30), random.uniform(0.36, 0.56), random.uniform(0.10, 0.22)]
    )
    scenes.crown_color[index, slot] = green
    scenes.trunk_color[index, slot] = _jitter(random, np.array([0.36, 0.23, 0.13]), 0.05)


def _substream(random, name: str):
    """The draws of one part of the scene: its own stream for latent scenes, the scene's one otherwise."""
    return random.substream(name) if hasattr(random, "substream") else random


def _sample_scene(random: np.random.RandomState, scenes: SceneBatch, index: int) -> None:
    horizon = random.randint(46, 53)
    scenes.horizon[index] = horizon

    if random.uniform() < 0.15:
        sky_top = _jitter(random, np.array([0.58, 0.62, 0.68]), 0.05)  # overcast
    else:
        blueness = random.uniform()
        sky_top = (1 - blueness) * np.array([0.22, 0.42, 0.80]) + blueness * np.array([0.50, 0.68, 0.92])
        sky_top = _jitter(random, sky_top, 0.03)
    haze = np.array([0.96, 0.82, 0.62]) if random.uniform() < 0.15 else np.array([0.92, 0.93, 0.92])
    scenes.sky_top[index] = sky_top
    scenes.sky_bottom[index] = sky_top + random.uniform(0.35, 0.7) * (haze - sky_top)

    earthiness = random.uniform() ** 1.5
    ground = (1 - earthiness) * np.array([0.30, 0.52, 0.20]) + earthiness * np.array([0.52, 0.42, 0.26])
    ground = _jitter(random, ground, 0.04)
    scenes.ground_far[index] = ground
    scenes.ground_near[index] = ground * random.uniform(0.7, 0.88)

    if random.uniform() < 0.5:
        width = random.randint(18, 29)
        centers, widths = [random.randint(26, 39)], [width]
    else:
        widths = [random.randint(14, 23), random.randint(14, 23)]
        centers = [random.randint(14, 25), random.randint(40, 51)]
    # Which of two buildings stands in front is random: slot 1 is drawn over slot 0.
    order = random.permutation(len(centers))
    for slot, building in enumerate(order):
        _sample_building(_substream(random, f"building{slot}"), scenes, index, slot, centers[building],
                         widths[building])

    lefts = scenes.building_left[index][scenes.building_present[index]]
    rights = scenes.building_right[index][scenes.building_present[index]]
    tree_count = random.choice(3, p=(0.3, 0.4, 0.3))
    sides = [-1, 1] if tree_count == 2 else [random.choice((-1, 1))] * tree_count
    for slot, side in enumerate(sides):
        near_x = lefts.min() if side < 0 else rights.max()
        _sample_tree(_substream(random, f"tree{slot}"), scenes, index, slot, near_x, side)

    random = _substream(random, "watermark")
    scenes.watermark_present[index] = random.uniform() < WATERMARK_PROBABILITY
    scenes.watermark_band_opacity[index] = random.uniform(0.25, 0.4)
    scenes.watermark_ink_opacity[index] = random.uniform(0.7, 0.85)
    scenes.watermark_letters[index] = random.randint(len(_GLYPHS), size=WATERMARK_LETTER_COUNT)


def sample_scenes(seeds: Sequence[int]) -> SceneBatch:
    """Scene parameters, one `RandomState(seed)` per image: the same seed gives the same scene in any batch."""
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise RewritingError("sample_scenes got no seeds; pass at least one integer seed.")
    bad = [seed for seed in seeds if not 0 <= seed < 2**32]
    if bad:
        raise RewritingError(f"Toytown seeds must lie in [0, 2**32); got {bad[:5]}. Use smaller non-negative seeds.")
    scenes = SceneBatch.empty(len(seeds))
    # Re-seeding one generator gives exactly the stream of RandomState(seed), ~100x faster
    # than constructing one per image (construction first draws OS entropy).
    random = np.random.RandomState()
    for index, seed in enumerate(seeds):
        random.seed(seed)
        _sample_scene(random, scenes, index)
    return scenes


def _per_image(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    dtype = torch.bool if array.dtype == bool else torch.int64 if array.dtype.kind == "i" else torch.float32
    return torch.as_tensor(array, device=device).to(dtype)


def _column(values: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1) to broadcast against (N, H, W)."""
    return values[:, None, None]


# Colour-layer ids painted into an id map, later turned into colours and labels.
_SKY, _GROUND = 0, 1
_BUILDING_LAYERS = ("body", "roof", "window", "door")
_TREE_LAYERS = ("crown", "trunk")
_FIRST_BUILDING_LAYER = 2
_FIRST_TREE_LAYER = _FIRST_BUILDING_LAYER + MAX_BUILDINGS * len(_BUILDING_LAYERS)
_LAYER_COUNT = _FIRST_TREE_LAYER + MAX_TREES * len(_TREE_LAYERS)


def _roof_profile(scene: dict[str, torch.Tensor], slot: int, y: torch.Tensor) -> torch.Tensor:
    """Half-width of each building's roof at each row (N, H, 1); negative where the row has no roof."""
    top = scene["building_top"][:, slot, None]
    height = scene["roof_height"][:, slot, None]
    half_width = scene["roof_half_width"][:, slot, None]
    kind = scene["roof_kind"][:, slot, None]
    rise = ((top - y[None, :]) / height).clamp(min=0.0)  # 0 at the roof's base, 1 at its top
    spire = half_width * (1 - rise)
    dome = half_width * (1 - rise.clamp(max=1.0) ** 2).sqrt()
    flat = half_width.expand_as(rise)
    profile = torch.where(kind == 0, spire, torch.where(kind == 1, dome, flat))
    in_roof = (y[None, :] < top) & (rise <= 1.0) & scene["building_present"][:, slot, None]
    return torch.where(in_roof, profile, torch.full_like(profile, -1.0))[:, :, None]


def _paint_building(
    layers: torch.Tensor, scene: dict[str, torch.Tensor], slot: int, x: torch.Tensor, y: torch.Tensor
) -> None:
    def get(name: str) -> torch.Tensor:
        return _column(scene[name][:, slot])

    first = _FIRST_BUILDING_LAYER + slot * len(_BUILDING_LAYERS)
    present = get("building_present")
    left, right, top, bottom = get("building_left"), get("building_right"), get("building_top"), get("building_bottom")
    center = (left + right) / 2

    roof = (x - center).abs() <= _roof_profile(scene, slot, y[0, :, 0])
    layers.masked_fill_(roof, first + _BUILDING_LAYERS.index("roof"))

    body_columns = (x >= left) & (x < right) & present
    body_rows = (y >= top) & (y < bottom)
    layers.masked_fill_(body_columns & body_rows, first + _BUILDING_LAYERS.index("body"))

    pitch, size = get("window_pitch"), get("window_size")
    door_left, door_right, door_top = get("door_left"), get("door_right"), get("door_top")
    column = torch.floor((x - get("window_left")) / pitch)
    cell_left = get("window_left") + column * pitch
    window_columns = (column >= 0) & (column < get("window_columns")) & (x < cell_left + size)
    row = torch.floor((y - get("window_top")) / pitch)
    cell_top = get("window_top") + row * pitch
    window_rows = (row >= 0) & (row < get("window_rows")) & (y < cell_top + size)
    # Whole windows next to the door are dropped, never clipped, so no slivers appear.
    beside_door_columns = (cell_left + size > door_left - 1) & (cell_left < door_right + 1)
    beside_door_rows = cell_top + size > door_top - 1
    windows = window_columns & window_rows & ~(beside_door_columns & beside_door_rows) & present
    layers.masked_fill_(windows, first + _BUILDING_LAYERS.index("window"))

    door = (x >= door_left) & (x < door_right) & present & (y >= door_top) & (y < bottom)
    layers.masked_fill_(door, first + _BUILDING_LAYERS.index("door"))


def _paint_tree(
    layers: torch.Tensor, scene: dict[str, torch.Tensor], slot: int, x: torch.Tensor, y: torch.Tensor
) -> None:
    def get(name: str) -> torch.Tensor:
        return _column(scene[name][:, slot])

    first = _FIRST_TREE_LAYER + slot * len(_TREE_LAYERS)
    present = get("tree_present")
    trunk_left = get("trunk_left")
    trunk = (x >= trunk_left) & (x < trunk_left + get("trunk_width")) & present
    trunk = trunk & (y >= get("trunk_top")) & (y < get("tree_base"))
    layers.masked_fill_(trunk, first + _TREE_LAYERS.index("trunk"))
    crown_x = ((x - get("crown_center_x")) / get("crown_radius_x")) ** 2
    crown_y = ((y - get("crown_center_y")) / get("crown_radius_y")) ** 2
    crown = (crown_x + torch.where(present, crown_y, torch.full_like(crown_y, 2.0))) <= 1.0
    layers.masked_fill_(crown, first + _TREE_LAYERS.index("crown"))


def _layer_palette(scene: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image colours (N, 3, layers) and labels (N, layers) of every colour layer."""
    count = scene["horizon"].shape[0]
    device = scene["horizon"].device
    colors = torch.zeros(count, _LAYER_COUNT, 3, device=device)
    labels = torch.zeros(count, _LAYER_COUNT, dtype=torch.int64, device=device)
    labels[:, _GROUND] = LABEL_INDEX["ground"]
    roof_labels = torch.tensor([LABEL_INDEX[kind] for kind in ROOF_KINDS], device=device)
    for slot in range(MAX_BUILDINGS):
        first = _FIRST_BUILDING_LAYER + slot * len(_BUILDING_LAYERS)
        for offset, part in enumerate(_BUILDING_LAYERS):
            colors[:, first + offset] = scene[f"{part}_color"][:, slot]
            if part == "roof":  # the label names the roof's kind
                labels[:, first + offset] = roof_labels[scene["roof_kind"][:, slot]]
            else:
                labels[:, first + offset] = LABEL_INDEX["building" if part == "body" else part]
    for slot in range(MAX_TREES):
        first = _FIRST_TREE_LAYER + slot * len(_TREE_LAYERS)
        for offset, part in enumerate(_TREE_LAYERS):
            colors[:, first + offset] = scene[f"{part}_color"][:, slot]
        labels[:, first : first + len(_TREE_LAYERS)] = LABEL_INDEX["tree"]  # trunks count as tree
    return colors.transpose(1, 2).contiguous(), labels


def _pixel_centres(size: int, device: torch.device | str) -> torch.Tensor:
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (CANVAS / size)


def _blend_watermark(
    images: torch.Tensor, labels: torch.Tensor, scene: dict[str, torch.Tensor], centres: torch.Tensor
) -> None:
    """Lighten the fixed bottom-right band and its letters in place; label the band."""
    present = scene["watermark_present"]
    if not bool(present.any()):
        return
    device = images.device
    columns = torch.nonzero((centres >= WATERMARK_LEFT) & (centres < WATERMARK_RIGHT)).flatten()
    rows = torch.nonzero((centres >= WATERMARK_TOP) & (centres < WATERMARK_BOTTOM)).flatten()
    if columns.numel() == 0 or rows.numel() == 0:
        return
    column_slice = slice(int(columns[0]), int(columns[-1]) + 1)
    row_slice = slice(int(rows[0]), int(rows[-1]) + 1)
    unit_x = torch.floor(centres[column_slice]).long() - _TEXT_LEFT  # (w,)
    unit_y = torch.floor(centres[row_slice]).long() - _TEXT_TOP  # (h,)
    letter_slot = torch.div(unit_x, _LETTER_PITCH, rounding_mode="floor")
    in_text = (
        (unit_x >= 0) & (letter_slot < WATERMARK_LETTER_COUNT)
    )[None, None, :] & ((unit_y >= 0) & (unit_y < _FONT.shape[1]))[None, :, None]
    glyph = scene["watermark_letters"].gather(
        1, letter_slot.clamp(0, WATERMARK_LETTER_COUNT - 1)[None, :].expand(len(present), -1)
    )  # (N, w)
    font = torch.as_tensor(_FONT, device=device).flatten()
    font_index = (
        glyph[:, None, :] * int(_FONT[0].size)
        + unit_y.clamp(0, _FONT.shape[1] - 1)[None, :, None] * _FONT.shape[2]
        + (unit_x % _LETTER_PITCH)[None, None, :]
    )
    ink = font[font_index] & in_text  # (N, h, w)
    band = _column(scene["watermark_band_opacity"])
    opacity = torch.where(ink, _column(scene["watermark_ink_opacity"]), band)
    opacity = opacity * _column(present.float())
    corner = images[:, :, row_slice, column_slice]
    images[:, :, row_slice, column_slice] = corner + opacity[:, None] * (1.0 - corner)
    corner_labels = labels[:, row_slice, column_slice]
    labels[:, row_slice, column_slice] = torch.where(
        _column(present), torch.full_like(corner_labels, LABEL_INDEX["watermark"]), corner_labels
    )


def render(
    scenes: SceneBatch, size: int = 64, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize scenes: images (N, 3, size, size) float32 in [-1, 1] and labels (N, size, size) int64."""
    if not isinstance(size, int) or size < 8:
        raise RewritingError(f"Toytown render size must be an integer >= 8; got {size!r}.")
    scene = {field.name: _per_image(getattr(scenes, field.name), device) for field in dataclasses.fields(scenes)}
    count = len(scenes)
    centres = _pixel_centres(size, device)
    x = centres[None, None, :]  # (1, 1, W)
    y = centres[None, :, None]  # (1, H, 1)

    horizon = _column(scene["horizon"])
    layers = torch.where(y >= horizon, _GROUND, _SKY).to(torch.uint8).expand(count, size, size).contiguous()
    for slot in range(MAX_BUILDINGS):
        _paint_building(layers, scene, slot, x, y)
    for slot in range(MAX_TREES):
        _paint_tree(layers, scene, slot, x, y)

    colors, layer_labels = _layer_palette(scene)
    flat_layers = layers.reshape(count, 1, size * size).long()
    images = colors.gather(2, flat_layers.expand(-1, 3, -1)).reshape(count, 3, size, size)
    labels = layer_labels.gather(1, flat_layers[:, 0]).reshape(count, size, size)

    # Sky and ground are vertical gradients, so their colours come per row, not from the palette.
    sky_fraction = (centres[None, :] / horizon[:, :, 0]).clamp(0, 1)[:, None, :, None]  # (N, 1, H, 1)
    sky = scene["sky_top"][:, :, None, None] + sky_fraction * (scene["sky_bottom"] - scene["sky_top"])[:, :, None, None]
    ground_fraction = ((centres[None, :] - horizon[:, :, 0]) / (CANVAS - horizon[:, :, 0])).clamp(0, 1)
    ground = scene["ground_far"][:, :, None, None] + ground_fraction[:, None, :, None] * (
        scene["ground_near"] - scene["ground_far"]
    )[:, :, None, None]
    backdrop = torch.where(y[None] >= horizon[:, None], ground, sky)  # (N, 3, H, 1)
    is_backdrop = (layers <= _GROUND)[:, None]
    images = torch.where(is_backdrop, backdrop, images)

    _blend_watermark(images, labels, scene, centres)
    return (images * 2 - 1).clamp(-1, 1), labels


def render_seeds(
    seeds: Sequence[int], size: int = 64, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample and render: images (N, 3, size, size) in [-1, 1], labels (N, size, size)."""
    return render(sample_scenes(seeds), size=size, device=device)


class RenderedStream:
    """Endless fresh batches for training: batch k renders seeds first_seed + k*batch_size ... (reproducible)."""

    def __init__(
        self, batch_size: int, first_seed: int = 0, size: int = 64, device: torch.device | str = "cpu"
    ) -> None:
        if batch_size < 1:
            raise RewritingError(f"RenderedStream batch_size must be >= 1; got {batch_size}.")
        self.batch_size = batch_size
        self.size = size
        self.device = device
        self.next_seed = first_seed  # saving and restoring this resumes the stream exactly

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = range(self.next_seed, self.next_seed + self.batch_size)
        self.next_seed += self.batch_size
        return render_seeds(seeds, size=self.size, device=self.device)
