"""The paper's named generators: every conf/generator/*.yaml is complete and its hash matches its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from omegaconf import OmegaConf

from rewriting.models.download import sha256_prefix_from_name

GENERATOR_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "generator"
REQUIRED_FIELDS = {
    "_target_",
    "name",
    "family",
    "checkpoint",
    "url",
    "sha256_prefix",
    "size",
    "truncation",
    "noise_mode",
}
# name -> (family, size, sha256 prefix), as published with the paper and GAN Dissection.
PAPER_GENERATORS = {
    "stylegan2_church": ("stylegan2", 256, "e8ca9fd0"),
    "stylegan2_horse": ("stylegan2", 256, "499b5380"),
    "stylegan2_kitchen": ("stylegan2", 256, "b3a526e9"),
    "stylegan2_bedroom": ("stylegan2", 256, "6fa55a6e"),
    "stylegan2_cat": ("stylegan2", 256, "d8dc98b2"),
    "stylegan2_places": ("stylegan2", 256, "a3b72d71"),
    "stylegan2_car": ("stylegan2", 512, "3659b4b6"),
    "stylegan2_faces": ("stylegan2", 1024, "2858cc2e"),
    "proggan_churchoutdoor": ("proggan", 256, "7e701dd5"),
    "proggan_kitchen": ("proggan", 256, "67f1e16c"),
    "proggan_bedroom": ("proggan", 256, "d8a89ff1"),
    "proggan_livingroom": ("proggan", 256, "5ef336dd"),
    "proggan_diningroom": ("proggan", 256, "3aa0ab80"),
    "proggan_conferenceroom": ("proggan", 256, "21e85882"),
    "proggan_restaurant": ("proggan", 256, "b8578299"),
    "proggan_celebhq": ("proggan", 1024, "620d161c"),
}
URL_FOLDERS = {
    "stylegan2": "http://rewriting.csail.mit.edu/data/models/",
    "proggan": "http://gandissect.csail.mit.edu/models/",
}


def _config_paths() -> list[Path]:
    return sorted(GENERATOR_CONFIGS.glob("*.yaml"))


def test_every_paper_generator_has_a_config():
    assert set(PAPER_GENERATORS) <= {path.stem for path in _config_paths()}


@pytest.mark.parametrize("path", _config_paths(), ids=lambda path: path.stem)
def test_config_is_complete_and_hash_matches_url(path):
    config = OmegaConf.to_container(OmegaConf.load(path))
    assert REQUIRED_FIELDS <= set(config), f"{path.name} lacks {REQUIRED_FIELDS - set(config)}"
    assert config["_target_"] == "rewriting.models.load_generator"
    assert config["name"] == path.stem
    assert isinstance(config["size"], int) and config["size"] > 0
    assert isinstance(config["truncation"], float) and 0 < config["truncation"] <= 1
    if config["url"] is not None:
        # YAML reads some unquoted hex strings as numbers (21e85882 becomes inf).
        assert isinstance(config["sha256_prefix"], str)
        url_file_name = Path(urlparse(config["url"]).path).name
        assert sha256_prefix_from_name(url_file_name) == config["sha256_prefix"]
        assert url_file_name.startswith(f"{path.stem}-")


@pytest.mark.parametrize("name", sorted(PAPER_GENERATORS))
def test_paper_generator_values(name):
    family, size, sha256_prefix = PAPER_GENERATORS[name]
    config = OmegaConf.load(GENERATOR_CONFIGS / f"{name}.yaml")
    extension = ".pt" if family == "stylegan2" else ".pth"
    assert config.family == family
    assert config.checkpoint is None
    assert config.size == size
    assert config.sha256_prefix == sha256_prefix
    assert config.url == f"{URL_FOLDERS[family]}{name}-{sha256_prefix}{extension}"
    assert config.truncation == (0.5 if family == "stylegan2" else 1.0)
    assert config.noise_mode == "fixed"
