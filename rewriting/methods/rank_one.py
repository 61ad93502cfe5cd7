"""Layer methods: the constrained rank-r rewrite (ours), its closed form, and the unconstrained ablation."""
from __future__ import annotations

import abc
import contextlib
import time
from dataclasses import dataclass, field

import torch

from ..edits.targets import RewriteTarget, crop_to_loss_region
from ..lightning_compat import pl
from .closed_form import closed_form_lambda, lambda_to_delta
from .layer_rewrite import LayerRewrite, masked_l1


@dataclass
class LayerFit:
    """What a layer method returns: ΔW of the layer and how the loss went."""
    delta: torch.Tensor  # (out, in, k, k)
    initial_loss: float
    final_loss: float  # measured on the final (projected) weight
    loss_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


def measured_loss(layer_module, target: RewriteTarget, weight: torch.Tensor) -> float:
    with torch.no_grad():
        values = layer_module.values_from_keys(target.trace.keys, target.trace.style, target.trace.noise, weight)
        return masked_l1(values, target.target_values, target.loss_weights).item()


@contextlib.contextmanager
def few_threads_for_small_work(size: int, limit: int = 20_000_000):
    """One CPU thread for small steps: thread hand-offs cost more than they save there."""
    threads = torch.get_num_threads()
    if size < limit:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class LayerMethod(abc.ABC):
    """Base of methods that change one layer's weight from (directions, target)."""
    name = "layer"
    uses_directions = True

    def __init__(self, rank: int = 1, tight_paste: bool = True, context_images: int | None = None):
        self.rank = int(rank)
        self.tight_paste = bool(tight_paste)
        self.context_images = context_images  # None: all context images of the request

    @abc.abstractmethod
    def fit(self, generator, layer: int, target: RewriteTarget, directions: torch.Tensor | None,
            trainer_options: dict | None = None) -> LayerFit:
        """ΔW of `layer` that makes it map the target's keys to its values."""

    def describe(self) -> dict:
        return {"name": self.name, "rank": self.rank, "tight_paste": self.tight_paste,
                "context_images": self.context_images}


class ClosedForm(LayerMethod):
    """The linear least-change solution, one solve, no iterations."""
    name = "closed_form"

    def fit(self, generator, layer, target, directions, trainer_options=None) -> LayerFit:
        started = time.perf_counter()
        module = generator.layer(layer)
        weight0 = module.weight.detach()
        delta = lambda_to_delta(closed_form_lambda(generator, layer, target, directions), directions)
        return LayerFit(delta, measured_loss(module, target, weight0), measured_loss(module, target, weight0 + delta),
                        [], time.perf_counter() - started)


class ConstrainedRewrite(LayerMethod):
    """Ours: optimize W₀ + Λ D (or projected Adam) with an L1 loss, optionally from the closed form."""
    name = "rank_one"

    def __init__(self, rank: int = 1, steps: int = 2001, lr: float = 0.05, parametrization: str = "lambda",
                 projection_every: int = 10, init: str = "zero", tight_paste: bool = True,
                 context_images: int | None = None, name: str | None = None, optimizer: str = "adam"):
        super().__init__(rank, tight_paste, context_images)
        self.steps, self.lr, self.optimizer = int(steps), float(lr), str(optimizer)
        self.parametrization, self.projection_every, self.init = parametrization, int(projection_every), init
        if name:
            self.name = name

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "lr": self.lr, "parametrization": self.parametrization,
                "projection_every": self.projection_every, "init": self.init, "optimizer": self.optimizer}

    def fit(self, generator, layer, target, directions, trainer_options=None) -> LayerFit:
        started = time.perf_counter()
        module = generator.layer(layer)
        weight0 = module.weight.detach().clone()
        initial = None
        if self.init == "closed_form" and directions is not None:
            initial = closed_form_lambda(generator, layer, target, directions)
            # The linearization can overshoot far from W₀; then start from W₀ instead.
            if measured_loss(module, target, weight0 + lambda_to_delta(initial, directions)) > \
                    measured_loss(module, target, weight0):
                initial = None
        elif self.init not in ("zero", "closed_form"):
            raise ValueError(f"method.init={self.init!r}: use zero or closed_form")
        # Only the loss box and the conv's reach matter: optimizing on that cut is exact and much faster.
        cropped = crop_to_loss_region(target, module.weight.shape[-1])
        task = LayerRewrite(module, cropped, directions, self.steps, self.lr,
                            self.parametrization if self.uses_directions else "free",
                            self.projection_every, initial, self.optimizer)
        options = {"accelerator": "auto", "devices": 1, "logger": False, "enable_checkpointing": False,
                   "enable_model_summary": False, "enable_progress_bar": False}
        options.update(trainer_options or {})
        options["max_steps"] = task.training_steps
        device = weight0.device
        trainer = pl.Trainer(**options)
        with few_threads_for_small_work(cropped.trace.keys.numel() * module.weight.shape[0]):
            trainer.fit(task)
        task.to(device)  # Lightning moved the layer to its device; the generator stays where it was
        with torch.no_grad():
            delta = task.delta().detach().clone()
        return LayerFit(delta, measured_loss(module, target, weight0), measured_loss(module, target, weight0 + delta),
                        list(task.loss_curve), time.perf_counter() - started)


class FinetuneLayer(ConstrainedRewrite):
    """Ablation: the same layer and loss, no rank constraint."""
    name = "finetune_layer"
    uses_directions = False

    def __init__(self, steps: int = 2001, lr: float = 0.001, tight_paste: bool = True,
                 context_images: int | None = None, rank: int = 1):
        super().__init__(rank=rank, steps=steps, lr=lr, parametrization="free", tight_paste=tight_paste,
                         context_images=context_images)
