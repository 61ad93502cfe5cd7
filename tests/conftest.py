"""Shared pytest configuration and fixtures: tiny generators, their checkpoints, edit specs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rewriting.edits.masks import encode_mask
from rewriting.models.checkpoints import estimate_latent_avg, save_stylegan2
from rewriting.models.stylegan2 import StyleGAN2Generator

def find_reference_dir() -> Path:
    """shared/reference beside the checkout (as CI lays it out), or $REWRITING_REFERENCE."""
    import os
    if os.environ.get("REWRITING_REFERENCE"):
        return Path(os.environ["REWRITING_REFERENCE"])
    return Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


REFERENCE_DIR = find_reference_dir()
TINY_CHANNELS = {4: 16, 8: 16, 16: 16, 32: 16}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: timing or long-running test; deselect with -m 'not slow'")


def tiny_generator(size: int = 32, style_dim: int = 32, n_mlp: int = 2, channels: dict[int, int] | None = None,
                   seed: int = 0) -> StyleGAN2Generator:
    """A randomly initialised StyleGAN2 in eval mode, with nonzero biases, noise strengths and latent_avg.

    A fresh rosinality generator has zero biases and zero noise strengths, which would hide bugs in
    how bias and noise are applied, so those get seeded random values too.
    """
    torch.manual_seed(seed)
    channels = channels or {r: c for r, c in TINY_CHANNELS.items() if r <= size}
    generator = StyleGAN2Generator(size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise.weight"):
                parameter.copy_(0.1 + 0.2 * torch.rand(parameter.shape, generator=rng))
            elif name.endswith("activate.bias") or name.endswith("to_rgbs.0.bias") or name == "to_rgb1.bias":
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=rng))
        generator.latent_avg.copy_(estimate_latent_avg(generator, samples=512))
    return generator.eval().requires_grad_(False)


def rectangle_mask(size: int, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    """A (size, size) mask that is 1 inside rows top..bottom-1, columns left..right-1."""
    mask = torch.zeros(size, size)
    mask[top:bottom, left:right] = 1.0
    return mask


def copy_paste_spec_dict(name: str = "tiny_edit", layer: int | None = None, mask_size: int = 64,
                         context_ids: tuple[int, ...] = (0, 1, 2), copy_id: int = 3, paste_id: int = 4,
                         boxes: dict | None = None) -> dict:
    """An edit spec (the project's JSON format, version 1) with rectangular masks as PNG data URLs."""
    boxes = boxes or {}
    context_box = boxes.get("context", (16, 16, 40, 40))
    context = [{"image_id": i, "mask": encode_mask(rectangle_mask(mask_size, *context_box))} for i in context_ids]
    return {
        "version": 1, "name": name, "generator": {"name": "tiny", "path": None, "sha256": None},
        "layer": layer, "rank": 1, "method": {"name": "rank_one"}, "seed": 1, "notes": "",
        "request": {
            "context": context,
            "copy": {"image_id": copy_id, "mask": encode_mask(rectangle_mask(mask_size, *boxes.get("copy", (8, 8, 24, 28))))},
            "paste": {"image_id": paste_id,
                      "mask": encode_mask(rectangle_mask(mask_size, *boxes.get("paste", (32, 30, 52, 50))))},
            "erase": False, "drank": None,
        },
    }


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny tensor ops on one thread: on a shared, loaded CPU, thread hand-offs cost far more
    than they save (20x slower here). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """shared/reference beside the checkout; tests that need it are skipped where it is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data {REFERENCE_DIR} is absent")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def make_generator():
    """Factory of tiny seeded generators: make_generator(size=..., style_dim=..., channels=..., seed=...)."""
    return tiny_generator


@pytest.fixture(scope="session")
def make_spec_dict():
    """Factory of copy/paste edit specs as JSON-ready dicts (see copy_paste_spec_dict)."""
    return copy_paste_spec_dict


@pytest.fixture(scope="session")
def make_mask():
    """Factory of rectangular masks: make_mask(size, top, left, bottom, right)."""
    return rectangle_mask


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny 32-px generator saved as a rosinality-format checkpoint."""
    path = tmp_path_factory.mktemp("checkpoints") / "tiny32.pt"
    save_stylegan2(tiny_generator(), path)
    return path


@pytest.fixture
def edit_spec_file(tmp_path):
    """Factory: edit_spec_file(**copy_paste_spec_dict options) writes a spec JSON and returns its path."""
    def write(filename: str = "edit.json", **options) -> Path:
        path = tmp_path / filename
        path.write_text(json.dumps(copy_paste_spec_dict(**options)))
        return path
    return write


@pytest.fixture
def statistics_cache(tmp_path, monkeypatch) -> Path:
    """A private second-moment cache folder, also set as $REWRITING_CACHE so nothing lands in the hub dir."""
    monkeypatch.setenv("REWRITING_CACHE", str(tmp_path / "rewriting_cache"))
    return tmp_path / "rewriting_cache" / "statistics"
