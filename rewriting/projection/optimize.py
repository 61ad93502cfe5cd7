"""Invert images into a StyleGAN2: optimise w (then optionally w+) and the per-layer noise.

The recipe is rosinality's projector.py (after Karras et al., StyleGAN2 appendix D; PTI uses the
same): start from the mean w, learning rate ramped up then down with a cosine, Gaussian noise on
w early on (so the search does not settle in the first basin), a penalty on the noise maps'
spatial autocorrelation (so the noise cannot paint the image) and noise maps re-normalised each
step. The loss is a perceptual distance plus a pixel MSE; the perceptual distance is LPIPS-VGG when
its weights are present, else the domain segmenter's encoder features, else a multi-scale pixel
MSE (see `rewriting.methods.perceptual.perceptual_distance`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import RewritingError
from ..methods.perceptual import perceptual_distance
from ..metrics.weights import BACKBONE_WEIGHTS

SPACES = ("w", "w+")


@dataclass
class Projection:
    """A latent that redraws an image: w (N, style_dim) or w+ (N, num_styles, style_dim), and noise per layer."""
    latent: torch.Tensor
    noise: list[torch.Tensor]  # (N, 1, H, W) per noise layer
    space: str  # "w" or "w+"
    perceptual: str  # lpips_vgg, segmenter_features or multiscale_pixels
    losses: list[float] = field(default_factory=list)  # per step, w phase then w+ phase
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def num_styles(generator) -> int:
    """How many w vectors a w+ latent holds: one per conv layer plus the last ToRGB (rosinality's n_latent)."""
    return generator.num_noise_layers + 1


def check_generator(generator) -> None:
    """Refuse a generator without a w space (ProGAN) with a message saying what works."""
    if getattr(generator, "family", None) != "stylegan2":
        raise RewritingError(f"projecting a photo needs a StyleGAN2 generator (it optimises w); this one is "
                             f"{getattr(generator, 'family', type(generator).__name__)!r}, which has no w space. "
                             f"Pass a StyleGAN2 checkpoint (generator=stylegan2_... or generator.checkpoint=PATH)")


def synthesize(generator, latent: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
    """Images (N, 3, H, W) from w (N, style_dim), through the generator's own synthesis, or from w+ (N, L, style_dim)."""
    if latent.dim() == 2:
        return generator.synthesis(latent, noise=noise)
    if latent.shape[1] != num_styles(generator):
        raise RewritingError(f"a w+ latent for this generator holds {num_styles(generator)} styles; got "
                             f"{latent.shape[1]}")
    fused = generator.fused
    # rosinality's w+ order: conv1, to_rgb1, then per resolution both convs and its to_rgb.
    x = generator.conv1(generator.input(latent.shape[0]), latent[:, 0], noise[0], fused=fused)
    skip = generator.to_rgb1(x, latent[:, 1], fused=fused)
    for j, to_rgb in enumerate(generator.to_rgbs):
        x = generator.convs[2 * j](x, latent[:, 2 * j + 1], noise[2 * j + 1], fused=fused)
        x = generator.convs[2 * j + 1](x, latent[:, 2 * j + 2], noise[2 * j + 2], fused=fused)
        skip = to_rgb(x, latent[:, 2 * j + 3], skip, fused=fused)
    return skip


@torch.no_grad()
def render_projection(generator, projection: Projection) -> torch.Tensor:
    """The images (N, 3, H, W) in about [-1, 1] the generator (edited or not) draws from a projection."""
    device = next(generator.parameters()).device
    return synthesize(generator, projection.latent.to(device), [n.to(device) for n in projection.noise])


def learning_rate(progress: float, initial: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """rosinality's schedule: linear warm-up over `rampup`, cosine decay over the last `rampdown` of the steps."""
    ramp = min(1.0, (1 - progress) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return initial * ramp * min(1.0, progress / rampup)


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map at one-pixel shifts, over a pyramid down to 8 px."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        while True:
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2)
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2)
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return loss


def _normalize_noise(noises: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for noise in noises:
            noise.sub_(noise.mean()).div_(noise.std().clamp_min(1e-8))


class MultiscalePixelDistance(torch.nn.Module):
    """The perceptual fallback without LPIPS or a segmenter: pixel MSE averaged over a 2x pyramid down to 8 px."""

    def __init__(self, targets: torch.Tensor):
        super().__init__()
        self.register_buffer("targets", targets.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        targets, losses = self.targets.to(images), []
        while True:
            losses.append((images - targets).pow(2).mean())
            if images.shape[-1] <= 8:
                return torch.stack(losses).mean()
            images, targets = F.avg_pool2d(images, 2), F.avg_pool2d(targets, 2)


def perceptual_loss(choice: str, targets: torch.Tensor, segmenter) -> tuple[torch.nn.Module, str, list[str]]:
    """(images -> scalar loss, its name, notes): the project's perceptual distance, or the multi-scale fallback."""
    module, name, _ = perceptual_distance(choice, targets, segmenter)
    notes = []
    if name != "lpips_vgg" and choice == "auto":
        notes.append(f"LPIPS-VGG weights are absent ({BACKBONE_WEIGHTS['vgg'].path}), so the perceptual loss is "
                     f"{'the segmenter features' if module is not None else 'a multi-scale pixel MSE'}")
    if module is None:
        return MultiscalePixelDistance(targets), "multiscale_pixels", notes
    return (lambda images: module(images).mean()), name, notes


@torch.no_grad()
def latent_statistics(generator, samples: int, seed: int) -> tuple[torch.Tensor, float]:
    """Mean w (style_dim,) and the root mean squared distance of w from it, over `samples` mapped z."""
    device = next(generator.parameters()).device
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = generator.style(z)
    mean = w.mean(0)
    return mean, float(((w - mean).pow(2).sum() / samples).sqrt())


@torch.no_grad()
def starting_latent(generator, targets, noises, mean, candidates: int, loss_for_target, pixel_weight: float,
                    seed: int) -> torch.Tensor:
    """w (N, style_dim) to start from: the mean w, or per target the one of `candidates` sampled w whose image
    has the lowest loss (loss_for_target(target (1, 3, H, W)) -> images -> loss)."""
    count = targets.shape[0]
    if candidates <= 0:
        return mean.detach().clone()[None].repeat(count, 1)
    z = torch.randn(candidates, generator.z_dim, generator=torch.Generator().manual_seed(seed + 2)).to(mean)
    w = generator.style(z)
    best = []
    for index in range(count):
        target, loss_of_images = targets[index:index + 1], loss_for_target(targets[index:index + 1])
        noise = [n[index:index + 1] for n in noises]
        losses = []
        for candidate in w:
            image = synthesize(generator, candidate[None], noise)
            losses.append(float(loss_of_images(image)) + pixel_weight * float(F.mse_loss(image, target)))
        best.append(w[losses.index(min(losses))])
    return torch.stack(best)


def _optimise(generator, latent, noises, loss_of_images, steps, lr, w_noise, w_noise_ramp, latent_std,
              noise_regularize, pixel_weight, targets, generator_rng, bar, losses) -> None:
    optimised = [latent] + [n for n in noises if n.requires_grad]
    optimizer = torch.optim.Adam(optimised, lr=lr)
    for step in range(steps):
        progress = step / steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress, lr)
        strength = latent_std * w_noise * max(0.0, 1 - progress / w_noise_ramp) ** 2
        jitter = torch.randn(latent.shape, generator=generator_rng).to(latent) * strength
        images = synthesize(generator, latent + jitter, noises)
        perceptual = loss_of_images(images)
        pixels = F.mse_loss(images, targets)
        loss = perceptual + pixel_weight * pixels
        if noise_regularize > 0 and len(optimised) > 1:
            loss = loss + noise_regularize * noise_regularization(noises)
        if not torch.isfinite(loss):
            raise RewritingError("the projection's loss became non-finite; lower lr=... and try again")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if len(optimised) > 1:
            _normalize_noise(noises)
        losses.append(float(loss.detach()))
        bar.set_postfix(perceptual=f"{float(perceptual.detach()):.4f}", mse=f"{float(pixels.detach()):.4f}", refresh=False)
        bar.update()


def project(generator, targets: torch.Tensor, steps: int = 500, w_plus_steps: int = 0, lr: float = 0.1,
            w_plus_lr: float | None = None,
            pixel_weight: float = 1.0, noise_regularize: float = 1e5, optimize_noise: bool = True,
            w_noise: float = 0.05, w_noise_ramp: float = 0.75, perceptual: str = "auto", segmenter=None,
            mean_latent_samples: int = 10000, start_candidates: int = 0, seed: int = 0,
            progress: bool = True) -> Projection:
    """Latents that redraw targets (N, 3, H, W) in [-1, 1]: `steps` in w, then `w_plus_steps` in w+.

    start_candidates: 0 starts from the mean w (rosinality's); N > 0 from the best of N sampled w by the loss.
    w_plus_lr: the w+ phase's peak learning rate (default: lr); lower keeps the styles nearer the w solution.
    """
    check_generator(generator)
    if steps < 1 or w_plus_steps < 0:
        raise RewritingError(f"steps={steps}, w_plus_steps={w_plus_steps}: use steps >= 1 and w_plus_steps >= 0")
    size = generator.size
    if targets.dim() != 4 or targets.shape[1] != 3 or tuple(targets.shape[-2:]) != (size, size):
        raise RewritingError(f"targets must be (N, 3, {size}, {size}) for this generator; got {tuple(targets.shape)}")
    settings = {"steps": steps, "w_plus_steps": w_plus_steps, "lr": lr, "w_plus_lr": w_plus_lr, "pixel_weight": pixel_weight,
                "noise_regularize": noise_regularize, "optimize_noise": optimize_noise, "w_noise": w_noise,
                "w_noise_ramp": w_noise_ramp, "perceptual": perceptual, "mean_latent_samples": mean_latent_samples,
                "start_candidates": start_candidates, "seed": seed}
    device = next(generator.parameters()).device
    targets = targets.to(device, torch.float32)
    count = targets.shape[0]
    loss_of_images, perceptual_name, notes = perceptual_loss(perceptual, targets, segmenter)
    mean, latent_std = latent_statistics(generator, mean_latent_samples, seed)
    rng = torch.Generator().manual_seed(seed + 1)
    # The generator's own noise (its fixed buffers, or a fresh draw): what its samples were drawn with.
    noises = [n.detach().expand(count, *n.shape[1:]).clone() for n in generator.make_noise(count)]
    for noise in noises:
        noise.requires_grad_(optimize_noise)
    latent = starting_latent(generator, targets, noises, mean, start_candidates,
                             lambda target: perceptual_loss(perceptual, target, segmenter)[0], pixel_weight, seed)
    latent.requires_grad_(True)
    losses: list[float] = []
    with torch.enable_grad(), tqdm(total=steps + w_plus_steps, desc="projecting", unit="step",
                                   disable=not progress) as bar:
        options = dict(lr=lr, w_noise=w_noise, w_noise_ramp=w_noise_ramp, latent_std=latent_std,
                       noise_regularize=noise_regularize, pixel_weight=pixel_weight, targets=targets,
                       generator_rng=rng, bar=bar, losses=losses)
        _optimise(generator, latent, noises, loss_of_images, steps, **options)
        space = "w"
        if w_plus_steps:
            # w+ starts where w ended; no w noise: the w phase already chose the basin.
            latent = latent.detach()[:, None].repeat(1, num_styles(generator), 1).requires_grad_(True)
            _optimise(generator, latent, noises, loss_of_images, w_plus_steps, **{**options, "w_noise": 0.0, "lr": lr if w_plus_lr is None else w_plus_lr})
            space = "w+"
    return Projection(latent.detach(), [n.detach() for n in noises], space, perceptual_name, losses, settings, notes)
