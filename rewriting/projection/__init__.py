"""Project a photo into a StyleGAN2's latent space, so an edited generator can redraw it.

    photo = load_photo("photo.png", generator.size)
    projection = project(generator, photo.image, steps=500)
    image = render_projection(generator, projection)   # apply a delta first to see it edited
"""
from .latent_file import load_projection, save_projection
from .optimize import Projection, project, render_projection
from .photo import Photo, load_photo

__all__ = ["Photo", "Projection", "load_photo", "load_projection", "project", "render_projection",
           "save_projection"]
