"""The paper's baseline: fine-tune every generator weight so the generated image matches an RGB target.

copy/paste: the target is the paste image with the copy image's pixels (inside the copy mask's
bounding box, alpha-composited by the soft mask) pasted at the paste location: the layer
target's construction, at image resolution. erase: the target is each context image rendered
with the region erased at the layer as the request says (its most specific input units zeroed
inside the mask, or the mask filled from its surroundings). The loss is
L1 plus a perceptual distance, inside the paste box (tight paste) or over the whole image.
The original ran Adam at lr 0.01 for 20001 steps; the defaults here are CPU-sized.
"""
from __future__ import annotations

import copy
import time

import torch
from torch.utils.data import DataLoader

from ..edits.latents import latents_for_ids
from ..edits.masks import bounding_box, resize_mask
from ..edits.resolve import generated_images, stacked_masks
from ..edits.targets import copy_paste_target, fill_from_surroundings
from ..errors import OptimizationError
from ..features import LayerTrace, noise_for
from ..lightning_compat import pl
from .perceptual import perceptual_distance
from .rank_one import few_threads_for_small_work
from .request_method import RequestFit, RequestMethod
from .unit_zeroing import context_erase_target, resolve_drank


def image_paste_target(copy_image: torch.Tensor, copy_mask: torch.Tensor, paste_image: torch.Tensor,
                       paste_mask: torch.Tensor, tight_paste: bool = True,
                       anchor: str = "centre") -> tuple[torch.Tensor, torch.Tensor]:
    """RGB copy-paste target (1, 3, H, W) and its loss weights (1, 1, H, W); images (1, 3, H, W), masks any size.

    The layer target's composite (box of the copy mask, placed on the paste mask by anchor, clamped), with
    the images standing in for the layer's values.
    """
    as_trace = lambda image: LayerTrace(image, None, None, image)  # noqa: E731
    target = copy_paste_target(as_trace(copy_image), copy_mask, as_trace(paste_image), paste_mask, tight_paste,
                               anchor)
    return target.target_values, target.loss_weights


@torch.no_grad()
def images_with_region_erased(generator, layer: int, latents: torch.Tensor, noise, masks: torch.Tensor,
                              units: torch.Tensor | None) -> torch.Tensor:
    """Images (n, 3, H, W) with `layer`'s input erased inside each mask (n, S, S).

    units: the input channels to zero there; None fills every channel from the mask's surroundings.
    For StyleGAN2 both act on the keys exactly (keys = input × style, channel-wise).
    """
    def erase(module, args):
        features = args[0]
        if units is None:
            return (fill_from_surroundings(features, masks), *args[1:])
        region = torch.stack([resize_mask(m.float(), tuple(features.shape[-2:])) for m in masks]).to(features)
        keep = torch.ones_like(features)
        keep[:, units] = 1 - region[:, None]
        return (features * keep, *args[1:])

    handle = generator.layer(layer).register_forward_pre_hook(erase)
    try:
        return generator(latents, noise=noise)
    finally:
        handle.remove()


def example_noise(generator, image_ids: list[int], device) -> list[torch.Tensor] | None:
    """Per-layer noise (n, 1, h, w) of the request's images, each as the edit sees it; fixed for all steps."""
    per_image = [noise_for(generator, 1, seed=image_id, device=device) for image_id in image_ids]
    if per_image[0] is None:
        return None
    return [torch.cat([n.expand(1, *n.shape[1:]) for n in layer_noise]) for layer_noise in zip(*per_image)]


def boxed_l1(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error over the weighted positions (weights (n, 1, H, W))."""
    weights = weights.expand(images.shape[0], 1, *images.shape[-2:])
    return ((images - targets).abs().mean(1, keepdim=True) * weights).sum() / weights.sum().clamp_min(1e-12)


class GeneratorFinetune(pl.LightningModule):
    """Optimizes a copy of every generator parameter so G(z_i) matches target_i where loss_weights_i > 0."""

    def __init__(self, generator: torch.nn.Module, latents: torch.Tensor, noise: list[torch.Tensor] | None,
                 targets: torch.Tensor, loss_weights: torch.Tensor, perceptual: torch.nn.Module | None = None,
                 perceptual_weight: float = 1.0, steps: int = 300, lr: float = 0.001):
        super().__init__()
        self.generator = copy.deepcopy(generator).requires_grad_(True)
        self.register_buffer("latents", latents)
        self.register_buffer("targets", targets)
        self.register_buffer("loss_weights", loss_weights)
        self.noise = noise
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight)
        self.steps, self.lr = int(steps), float(lr)
        self.loss_curve: list[float] = []

    def loss_for(self, generator: torch.nn.Module) -> torch.Tensor:
        """L1 (+ weighted perceptual distance) between `generator`'s images of the examples and the targets."""
        device = self.latents.device
        noise = None if self.noise is None else [n.to(device) for n in self.noise]
        images = generator(self.latents, noise=noise)
        loss = boxed_l1(images, self.targets, self.loss_weights)
        if self.perceptual is not None and self.perceptual_weight:
            weights = self.loss_weights.expand(images.shape[0], 1, *images.shape[-2:])
            distance = (self.perceptual(images) * weights).sum() / weights.sum().clamp_min(1e-12)
            loss = loss + self.perceptual_weight * distance
        return loss

    def training_step(self, batch, batch_index):
        loss = self.loss_for(self.generator)
        if not torch.isfinite(loss):
            raise OptimizationError(f"fine-tuning diverged at step {self.global_step} (loss {loss.item()}); lower "
                                    f"method.lr. Nothing was written.")
        self.loss_curve.append(loss.item())
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.generator.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(range(self.steps), batch_size=1)


def generator_work(generator, images: int) -> int:
    """Multiply-adds of the editable convs for `images` images, over 9: the size few_threads_for_small_work reads."""
    return images * sum(generator.layer(n).weight[:, :, 0, 0].numel() * generator.layer_resolution(n) ** 2
                        for n in generator.layer_numbers)


def changed_tensors(before: torch.nn.Module, after: torch.nn.Module) -> dict[str, torch.Tensor]:
    """after − before for every parameter that changed, by state-dict name, in its state-dict shape."""
    originals = dict(before.named_parameters())
    deltas = {}
    for name, parameter in after.named_parameters():
        change = parameter.detach().to(originals[name].device) - originals[name].detach()
        if change.abs().max() > 0:
            deltas[name] = change
    return deltas


class FinetuneAll(RequestMethod):
    """Fine-tune all generator weights on the RGB copy-paste (or erase) target, L1 + perceptual."""
    name = "finetune_all"

    def __init__(self, steps: int = 300, lr: float = 0.001, perceptual: str = "auto", perceptual_weight: float = 1.0,
                 tight_paste: bool = True, drank: int | None = None, context_images: int | None = None):
        super().__init__(tight_paste)
        self.steps, self.lr = int(steps), float(lr)
        self.perceptual, self.perceptual_weight = str(perceptual), float(perceptual_weight)
        self.drank = None if drank is None else int(drank)  # erase only; None: the request's drank
        self.context_images = context_images

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "lr": self.lr, "perceptual": self.perceptual,
                "perceptual_weight": self.perceptual_weight, "drank": self.drank,
                "context_images": self.context_images}

    def image_targets(self, generator, layer, request, spec, second_moment
                      ) -> tuple[list[int], torch.Tensor, torch.Tensor, list[int]]:
        """Image ids of the examples, their RGB targets (n, 3, H, W), loss weights (n, 1, H, W), zeroed units."""
        if request.erase:
            return self.erase_targets(generator, layer, request, spec, second_moment)
        copy_image = generated_images(generator, [request.copy.image_id], spec.seed)
        paste_image = generated_images(generator, [request.paste.image_id], spec.seed)
        targets, weights = image_paste_target(copy_image, request.copy.mask, paste_image, request.paste.mask,
                                              self.tight_paste, request.paste_anchor)
        return [request.paste.image_id], targets, weights, []

    def erase_targets(self, generator, layer, request, spec, second_moment
                      ) -> tuple[list[int], torch.Tensor, torch.Tensor, list[int]]:
        """The context images rendered with the region erased at the layer; the loss covers each mask's box."""
        if request.erase_fill == "surroundings":
            units = None
            regions = request.context_images(self.context_images)
            masks = stacked_masks(regions)
        else:
            drank = resolve_drank(self.drank, request, self.name)
            _, units, masks = context_erase_target(generator, layer, request, spec, second_moment, drank,
                                                   self.context_images, self.tight_paste)
            regions = request.context[: masks.shape[0]]
        image_ids = [r.image_id for r in regions]
        device = next(generator.parameters()).device
        latents = latents_for_ids(image_ids, generator.z_dim, spec.seed).to(device)
        targets = images_with_region_erased(generator, layer, latents, example_noise(generator, image_ids, device),
                                            masks, units)
        weights = torch.zeros(len(image_ids), 1, *targets.shape[-2:], device=targets.device)
        for i, region in enumerate(regions):
            if self.tight_paste:
                top, left, bottom, right = bounding_box(resize_mask(region.mask.float(), tuple(targets.shape[-2:])))
                weights[i, :, top:bottom, left:right] = 1.0
            else:
                weights[i] = 1.0
        return image_ids, targets, weights, ([] if units is None else sorted(int(u) for u in units))

    def fit_request(self, generator, layer, request, spec, second_moment, segmenter=None,
                    trainer_options=None) -> RequestFit:
        started = time.perf_counter()
        device = next(generator.parameters()).device
        image_ids, targets, weights, units = self.image_targets(generator, layer, request, spec, second_moment)
        latents = latents_for_ids(image_ids, generator.z_dim, spec.seed).to(device)
        perceptual, perceptual_name, warnings = perceptual_distance(self.perceptual, targets, segmenter)
        task = GeneratorFinetune(generator, latents, example_noise(generator, image_ids, device), targets, weights,
                                 perceptual, self.perceptual_weight, self.steps, self.lr)
        options = {"accelerator": "auto", "devices": 1, "logger": False, "enable_checkpointing": False,
                   "enable_model_summary": False, "enable_progress_bar": False}
        options.update(trainer_options or {})
        options["max_steps"] = self.steps
        with few_threads_for_small_work(generator_work(generator, len(image_ids))):
            pl.Trainer(**options).fit(task)
        task.to(device)  # Lightning moved the copy to its device; the generator stays where it was
        task.generator.eval()
        with torch.no_grad():
            initial, final = task.loss_for(generator).item(), task.loss_for(task.generator).item()
        deltas = changed_tensors(generator, task.generator)
        weight_name = generator.layer_weight_name(layer)
        layer_weight = generator.layer(layer).weight
        layer_delta = deltas.get(weight_name, torch.zeros_like(layer_weight)).reshape(layer_weight.shape)
        return RequestFit(layer_delta, initial, final, list(task.loss_curve), time.perf_counter() - started,
                          deltas=deltas, units=units,
                          notes={"perceptual_loss": perceptual_name, "method_warnings": warnings})
