"""Projecting a photo into a generator and redrawing it before and after a delta (rewriting.project_image)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rewriting.deltas import save_delta
from rewriting.errors import CheckpointError, PhotoError
from rewriting.models import load_generator
from rewriting.models.checkpoints import save_stylegan2
from rewriting.project_image import main
from rewriting.projection import load_photo, load_projection, project, render_projection, save_projection
from rewriting.projection.report import psnr
from rewriting.visualize import to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")

# Measured on the tiny 32-px generator over 4 sampled images: mean image 7.7-12.6 dB, projection 22.1-23.9 dB.
RECOVERED_PSNR = 20.0
OVER_MEAN_IMAGE_DB = 8.0
QUICK = ["metrics.segmenter=null", "metrics.lpips=null", "trainer=cpu", "progress=false",
         "projection.steps=30", "projection.w_plus_steps=10", "projection.mean_latent_samples=500",
         "projection.start_candidates=4", "projection.perceptual=none"]


def save_png(images: torch.Tensor, path: Path) -> Path:
    Image.fromarray(to_uint8(images)[0].permute(1, 2, 0).numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def sample_photo(tmp_path_factory, tiny_checkpoint) -> Path:
    """A PNG that IS a sample of the tiny generator (fixed noise), so a projection can recover it."""
    generator = load_generator(tiny_checkpoint)
    with torch.no_grad():
        image = generator(torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(101)))
    return save_png(image, tmp_path_factory.mktemp("photos") / "sample.png")


def run_cli(capsys, photo: Path, out: Path, *overrides: str, checkpoint: Path) -> tuple[int, str]:
    """main() on the tiny generator; (exit status, stderr)."""
    try:
        main([str(photo), f"generator.checkpoint={checkpoint}", f"output_dir={out}", *QUICK, *overrides])
        status = 0
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def test_projection_of_a_generator_sample_recovers_it(tiny_checkpoint):
    generator = load_generator(tiny_checkpoint)
    with torch.no_grad():  # unclipped: the tiny generator's outputs leave [-1, 1], which a PNG would cut off
        sample = generator(torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(101)))
    mean_image = generator.synthesis(generator.latent_avg[None])
    projection = project(generator, sample, steps=200, start_candidates=16, perceptual="none",
                         mean_latent_samples=2000, progress=False)
    reconstruction = render_projection(generator, projection)
    assert projection.space == "w" and projection.perceptual == "multiscale_pixels"
    assert psnr(sample, reconstruction) > RECOVERED_PSNR
    assert psnr(sample, reconstruction) > psnr(sample, mean_image) + OVER_MEAN_IMAGE_DB


def test_latent_file_round_trip_renders_the_same_image(tmp_path, tiny_checkpoint, sample_photo):
    generator = load_generator(tiny_checkpoint)
    photo = load_photo(sample_photo, generator.size)
    projection = project(generator, photo.image, steps=5, w_plus_steps=5, perceptual="none",
                         mean_latent_samples=200, progress=False)
    path = save_projection(tmp_path / "latent.safetensors", projection, generator.checkpoint_sha256, photo.sha256)
    loaded, metadata = load_projection(path, generator)
    assert loaded.space == "w+" and metadata["image_sha256"] == photo.sha256
    assert torch.equal(render_projection(generator, loaded), render_projection(generator, projection))
    other = load_generator(save_other_generator(tmp_path))
    with pytest.raises(CheckpointError, match="was fitted to generator sha256"):
        load_projection(path, other)


def save_other_generator(tmp_path: Path) -> Path:
    from conftest import tiny_generator
    path = tmp_path / "other.pt"
    save_stylegan2(tiny_generator(seed=7), path)
    return path


def red_bias_delta(path: Path, generator, amount: float = 0.5) -> Path:
    """A delta on the last ToRGB's bias that adds `amount` to the red channel only."""
    name = f"to_rgbs.{len(generator.to_rgbs) - 1}.bias"
    change = torch.zeros(1, 3, 1, 1)
    change[0, 0] = amount
    return save_delta(path, {name: change}, {"base_sha256": generator.checkpoint_sha256, "edit": "redder"})


def test_delta_changes_the_redrawn_photo_where_it_acts(tmp_path, capsys, tiny_checkpoint, sample_photo):
    generator = load_generator(tiny_checkpoint)
    delta = red_bias_delta(tmp_path / "delta.safetensors", generator)
    out = tmp_path / "out"
    status, error = run_cli(capsys, sample_photo, out, f"delta={delta}", checkpoint=tiny_checkpoint)
    assert status == 0, error
    assert sorted(p.name for p in out.iterdir()) == ["before_after.png", "latent.safetensors", "metrics.json"]
    projection, _ = load_projection(out / "latent.safetensors", generator)
    before = render_projection(generator, projection)
    picture = np.asarray(Image.open(out / "before_after.png")).astype(int)
    size = generator.size * max(1, 256 // generator.size)
    panels = [picture[:size, i * (size + 2):i * (size + 2) + size] for i in range(3)]
    assert np.array_equal(panels[1], np.repeat(np.repeat(to_uint8(before)[0].permute(1, 2, 0).numpy(), 8, 0), 8, 1))
    change = panels[2] - panels[1]
    assert np.abs(change[..., 1:]).max() == 0  # green and blue untouched
    red = before[0, 0]
    unclipped = ((red > -1) & (red + 0.5 < 1)).numpy().repeat(8, 0).repeat(8, 1)
    assert np.abs(change[..., 0][unclipped] - 64).max() <= 1  # +0.5 in [-1, 1] is +64 of 255
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit"] == "redder" and metrics["edit_l1"] > 0.05
    assert metrics["reconstruction_psnr"] > 10 and metrics["perceptual_loss"] == "multiscale_pixels"


def test_edit_json_is_fitted_then_applied(tmp_path, capsys, tiny_checkpoint, sample_photo, edit_spec_file,
                                          statistics_cache):
    out = tmp_path / "out"
    spec = edit_spec_file(mask_size=32, boxes={"context": (8, 8, 20, 20), "copy": (4, 4, 12, 14),
                                               "paste": (16, 15, 26, 25)})
    status, error = run_cli(capsys, sample_photo, out, f"edit={spec}", "layer=4", "statistics.num_samples=12",
                            "method.steps=10", checkpoint=tiny_checkpoint)
    assert status == 0, error
    assert {"delta.safetensors", "edit.json", "before_after.png", "latent.safetensors"} <= {p.name for p in
                                                                                            out.iterdir()}
    assert json.loads((out / "metrics.json").read_text())["edit_l1"] > 0


def written(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*")) if out.exists() else []


def photo_of_mode(tmp_path: Path, mode: str, name: str, alpha: int | None = None) -> Path:
    image = Image.new(mode, (20, 12))
    if alpha is not None:
        image.putalpha(alpha)
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize("make_photo, message, overrides", [
    (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "is not an image", []),
    (lambda d: d / "missing.png", "does not exist", []),
    (lambda d: photo_of_mode(d, "LA", "la.png", alpha=100), r"\(LA\) has transparent pixels", []),
    (lambda d: photo_of_mode(d, "RGBA", "rgba.png", alpha=0), r"\(RGBA\) has transparent pixels", []),
    (lambda d: photo_of_mode(d, "CMYK", "cmyk.jpg"), "has mode CMYK .*convert it to 8-bit RGB", []),
    (lambda d: photo_of_mode(d, "RGB", "big.png"), "is 20x12 = 240 pixels, over the limit of max_pixels=200",
     ["max_pixels=200"]),
])
def test_bad_photo_gives_one_message_and_writes_nothing(tmp_path, capsys, tiny_checkpoint, make_photo, message,
                                                        overrides):
    out = tmp_path / "out"
    status, error = run_cli(capsys, make_photo(tmp_path), out, *overrides, checkpoint=tiny_checkpoint)
    assert status == 2
    assert error.startswith("error: photo ") and len(error.strip().splitlines()) == 1 and "Traceback" not in error
    import re
    assert re.search(message, error), error
    assert written(out) == []


def test_delta_of_another_generator_is_refused_before_projecting(tmp_path, capsys, tiny_checkpoint, sample_photo):
    other = load_generator(save_other_generator(tmp_path))
    delta = red_bias_delta(tmp_path / "other_delta.safetensors", other)
    out = tmp_path / "out"
    status, error = run_cli(capsys, sample_photo, out, f"delta={delta}", checkpoint=tiny_checkpoint)
    assert status == 2 and "was made for checkpoint sha256" in error and "Traceback" not in error
    assert written(out) == []


def test_unknown_option_and_two_photos_are_refused(tmp_path, capsys, tiny_checkpoint, sample_photo):
    out = tmp_path / "out"
    status, error = run_cli(capsys, sample_photo, out, "projection.stepz=3", checkpoint=tiny_checkpoint)
    assert status == 2 and "stepz" in error and "usage:" in error
    status, error = run_cli(capsys, sample_photo, out, str(sample_photo), checkpoint=tiny_checkpoint)
    assert status == 2 and "exactly one photo" in error
    assert written(out) == []


def test_opaque_alpha_and_greyscale_photos_are_used_as_rgb(tmp_path):
    opaque = load_photo(photo_of_mode(tmp_path, "RGBA", "opaque.png", alpha=255), 8)
    grey = load_photo(photo_of_mode(tmp_path, "L", "grey.png"), 8)
    assert opaque.image.shape == grey.image.shape == (1, 3, 8, 8)
    assert "dropped its fully opaque alpha channel (RGBA -> RGB)" in opaque.notes
    assert "converted L to RGB" in grey.notes and "center-cropped 20x12 to 12x12" in grey.notes
    with pytest.raises(PhotoError, match="transparent"):
        load_photo(photo_of_mode(tmp_path, "RGBA", "clear.png", alpha=0), 8)
