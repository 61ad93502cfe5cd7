"""Generators: StyleGAN2 (rosinality layout) and Progressive GAN, with the paper's layer numbering."""
from .loading import load_generator
from .stylegan2 import LayerInput, StyleGAN2Generator

__all__ = ["load_generator", "LayerInput", "StyleGAN2Generator"]
