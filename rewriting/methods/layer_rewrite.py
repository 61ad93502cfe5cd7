"""The LightningModule that rewrites one layer: fit W so the layer maps target keys to target values.

Three parametrizations of the edited weight:
  "lambda":    W = W₀ + Λ D, only Λ is optimized (the rank-r constraint holds exactly);
  "projected": Adam on W, projected back to W₀ + proj_D(W − W₀) every few steps (the original);
  "free":      Adam on W with no constraint (the fine-tune-one-layer baseline).
Optimizers: "adam" (one Adam step per training step, `steps` of them) or "lbfgs" (one training step
that runs L-BFGS with a strong-Wolfe line search for up to `steps` iterations: Λ has only
out×r×k×k unknowns, so a quasi-Newton method reaches a lower loss in a tenth of Adam's steps).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..edits.targets import RewriteTarget
from ..errors import OptimizationError
from ..lightning_compat import pl
from .closed_form import lambda_to_delta, project_delta


def masked_l1(values: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the weighted positions and all channels."""
    total = (weights.expand_as(values[:, :1]).sum() * values.shape[1]).clamp_min(1e-12)
    return ((values - target).abs() * weights).sum() / total


class LayerRewrite(pl.LightningModule):
    """Optimizes one layer's weight; `delta()` is the resulting ΔW (out, in, k, k)."""

    def __init__(self, layer_module: torch.nn.Module, target: RewriteTarget, directions: torch.Tensor | None,
                 steps: int = 2001, lr: float = 0.05, parametrization: str = "lambda",
                 projection_every: int = 10, initial_lambda: torch.Tensor | None = None, optimizer: str = "adam"):
        super().__init__()
        if parametrization not in ("lambda", "projected", "free"):
            raise ValueError(f"parametrization={parametrization!r}: use lambda, projected or free")
        if optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"method.optimizer={optimizer!r}: use adam or lbfgs")
        if optimizer == "lbfgs" and parametrization == "projected":
            raise ValueError("method.optimizer=lbfgs needs parametrization lambda or free (projection steps "
                             "would break its curvature estimates)")
        self.optimizer_name = optimizer
        self.automatic_optimization = optimizer == "adam"
        if parametrization != "free" and directions is None:
            raise ValueError(f"parametrization={parametrization!r} needs context directions")
        self.layer_module = layer_module
        self.parametrization = parametrization
        self.steps = int(steps)
        self.lr = float(lr)
        self.projection_every = int(projection_every)
        weight0 = layer_module.weight.detach().clone()
        self.register_buffer("weight0", weight0)
        self.register_buffer("keys", target.trace.keys)
        self.register_buffer("target_values", target.target_values)
        self.register_buffer("loss_weights", target.loss_weights)
        self.style = target.trace.style
        self.noise = target.trace.noise
        if directions is not None:
            self.register_buffer("directions", directions.to(weight0))
        else:
            self.directions = None
        if parametrization == "lambda":
            rank = directions.shape[0]
            start = initial_lambda if initial_lambda is not None else torch.zeros(
                weight0.shape[0], rank, *weight0.shape[2:])
            self.lambda_ = torch.nn.Parameter(start.to(weight0).clone())
        else:
            start = weight0.clone()
            if initial_lambda is not None:
                start = start + lambda_to_delta(initial_lambda.to(weight0), directions)
            self.weight = torch.nn.Parameter(start)
        self.loss_curve: list[float] = []

    def delta(self) -> torch.Tensor:
        """ΔW (out, in, k, k) of the current parameters (projected for the projected form)."""
        if self.parametrization == "lambda":
            return lambda_to_delta(self.lambda_, self.directions)
        delta = self.weight - self.weight0
        return project_delta(delta, self.directions) if self.parametrization == "projected" else delta

    def edited_weight(self) -> torch.Tensor:
        if self.parametrization == "lambda":
            return self.weight0 + self.delta()
        return self.weight

    def _device_tensor(self, tensor):
        return None if tensor is None else tensor.to(self.weight0.device)

    def loss_for(self, weight: torch.Tensor) -> torch.Tensor:
        values = self.layer_module.values_from_keys(self.keys, self._device_tensor(self.style),
                                                    self._device_tensor(self.noise), weight)
        return masked_l1(values, self.target_values, self.loss_weights)

    def checked_loss(self) -> torch.Tensor:
        loss = self.loss_for(self.edited_weight())
        if not torch.isfinite(loss):
            raise OptimizationError(f"the rewrite diverged at step {len(self.loss_curve)} (loss {loss.item()}); "
                                    f"lower method.lr or the number of steps. Nothing was written.")
        self.loss_curve.append(loss.item())
        return loss

    def training_step(self, batch, batch_index):
        if self.optimizer_name == "lbfgs":
            optimizer = self.optimizers()

            def closure():
                optimizer.zero_grad()
                loss = self.checked_loss()
                self.manual_backward(loss)
                return loss
            optimizer.step(closure=closure)
            self._log_loss(self.loss_curve[-1])
            return None
        loss = self.checked_loss()
        self._log_loss(loss)
        return loss

    def _log_loss(self, loss) -> None:
        # Lightning's log costs about a millisecond a step; with no progress bar and no logger nobody reads
        # it (the curve is kept in loss_curve), and skipping it made the default 60-step fit ~12% faster.
        trainer = self._trainer
        if trainer is not None and (trainer.progress_bar_callback is not None or trainer.loggers):
            self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs, batch, batch_index):
        if self.parametrization == "projected" and (self.global_step % self.projection_every == 0):
            with torch.no_grad():
                self.weight.copy_(self.weight0 + self.delta())

    def on_train_end(self):
        if self.parametrization == "projected":
            with torch.no_grad():
                self.weight.copy_(self.weight0 + self.delta())

    def configure_optimizers(self):
        optimized = self.lambda_ if self.parametrization == "lambda" else self.weight
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS([optimized], lr=self.lr, max_iter=self.steps, history_size=20,
                                     line_search_fn="strong_wolfe")
        return torch.optim.Adam([optimized], lr=self.lr)

    @property
    def training_steps(self) -> int:
        """Trainer steps: one per Adam step; L-BFGS runs all its iterations inside one."""
        return 1 if self.optimizer_name == "lbfgs" else self.steps

    def train_dataloader(self):
        return DataLoader(range(self.training_steps), batch_size=1)
