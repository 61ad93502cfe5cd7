"""The linear least-change solution: W = W₀ + Λ D with Λ from one weighted least-squares solve."""
from __future__ import annotations

import torch

from ..edits.targets import RewriteTarget
from .linearization import basis_responses, output_scale, residual


@torch.no_grad()
def closed_form_lambda(generator, layer: int, target: RewriteTarget, directions: torch.Tensor,
                       ridge: float | None = None) -> torch.Tensor:
    """Λ (out, r, k, k) minimising the loss-weighted squared residual of the linearized layer.

    ridge (relative to the mean diagonal of each normal matrix): StyleGAN2's linearization holds
    only near W₀ (demodulation moves with W), so its default keeps the step small; ProGAN's layer is
    exactly linear and gets a negligible ridge (exact solutions).
    """
    if ridge is None:
        ridge = 0.05 if generator.family == "stylegan2" else 1e-6
    trace = target.trace
    basis = basis_responses(generator, layer, trace, directions).double()  # (n, b, H, W)
    scale = output_scale(generator, layer, trace).double()  # (n, out, H, W)
    wanted = residual(trace, target.target_values).double()  # (n, out, H, W)
    count, units = basis.shape[:2]
    weights = target.loss_weights.double().expand(count, 1, *wanted.shape[-2:]).reshape(-1)
    keep = weights > 0
    root = weights[keep].sqrt()[:, None]
    design = basis.permute(0, 2, 3, 1).reshape(-1, units)[keep] * root  # (R, b)
    wanted = wanted.permute(0, 2, 3, 1).reshape(-1, wanted.shape[1])[keep] * root  # (R, out)
    row_scale = scale.permute(0, 2, 3, 1).reshape(-1, scale.shape[1])[keep]  # (R, out): per channel and row
    gram = torch.einsum("rb,ro,rc->obc", design, row_scale.pow(2), design)
    identity = torch.eye(units, dtype=gram.dtype, device=gram.device)
    gram = gram + ridge * gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None].clamp_min(1e-30) * identity
    rhs = torch.einsum("rb,ro,ro->ob", design, row_scale, wanted)
    solution = torch.linalg.solve(gram, rhs[..., None])[..., 0]  # (out, b)
    kernel = generator.layer(layer).weight.shape[-1]
    return solution.view(-1, directions.shape[0], kernel, kernel).float()


def lambda_to_delta(lambda_: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """ΔW (out, in, k, k) = Λ D along the input-channel axis."""
    return torch.einsum("ojxy,ji->oixy", lambda_, directions.to(lambda_))


def project_delta(delta: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The part of ΔW in the span of the (orthonormal) directions, along the input-channel axis."""
    coefficients = torch.einsum("oixy,ji->ojxy", delta, directions.to(delta))
    return lambda_to_delta(coefficients, directions)
