"""Measure reduced precision against float32 before enabling it: the rewrite's ΔW and the images.

    python experiments/bench/precision_check.py [--checkpoint PATH] [--layer 8] [--edit EDIT.json]
                                          [--device cuda] --out results/precision_<device>.json

For each precision — fp32 (the reference), tf32 (CUDA only: TF32 matmuls and convolutions) and
bf16 (Lightning's `bf16-mixed` for the rewrite, bfloat16 autocast for sampling) — the same edit is
made from the same unedited generator and second moment, and the script records:
  - delta_relative_difference: ||ΔW_p − ΔW_fp32|| / ||ΔW_fp32||;
  - image differences of the edited generator sampled in that precision vs fp32 (max and mean
    absolute difference on the [0, 1] scale, 64 fixed latents);
  - edit seconds and sampling images/s.
A precision is "safe" here when ΔW differs by under 1% and images by under 1/255 on average.
With no --checkpoint the bundled Toytown generator is used; with no --edit a synthetic request.
"""
from __future__ import annotations

import contextlib
import copy
import json
import platform
import time

import torch

import rewriting
from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.methods.rank_one import ConstrainedRewrite
from rewriting.statistics import compute_second_moment

from bench import edit_arguments, synthetic_request  # experiments/ is on sys.path (the script's folder)

SAFE_DELTA, SAFE_MEAN_IMAGE = 0.01, 1 / 255


@contextlib.contextmanager
def precision_context(precision: str, device: str):
    """Sampling under `precision`: TF32 flags or bfloat16 autocast, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    try:
        with autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def sample(generator, z: torch.Tensor, precision: str, device: str, batch: int) -> tuple[torch.Tensor, float]:
    """Images (N, 3, H, W) as float32 in [0, 1] and images/s."""
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad(), precision_context(precision, device):
        generator(z[:batch])  # warm-up
        synchronize()
        started = time.perf_counter()
        images = torch.cat([generator(z[i:i + batch]).float() for i in range(0, len(z), batch)])
        synchronize()
    return ((images.clamp(-1, 1) + 1) / 2).cpu(), len(z) / (time.perf_counter() - started)


def main() -> None:
    parser = edit_arguments(__doc__, images=200, out="precision.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    base = rewriting.load_generator(args.checkpoint, name=None if args.checkpoint else "toytown", device=args.device)
    base.noise_mode = "fixed"
    statistics = compute_second_moment(base, args.layer, args.images, progress=False)
    spec = rewriting.load_edit(args.edit) if args.edit else synthetic_request(base.size)
    z = torch.randn(64, base.z_dim, generator=torch.Generator().manual_seed(args.seed)).to(args.device)
    precisions = ["fp32", "bf16"] + (["tf32"] if args.device.startswith("cuda") else [])
    lightning_precision = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed"}
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"

    rows, reference_delta, reference_images = {}, None, None
    for precision in precisions:
        torch.manual_seed(args.seed)
        generator = copy.deepcopy(base)
        with precision_context("tf32" if precision == "tf32" else "fp32", args.device):
            result = rewriting.rewrite(generator, spec, ConstrainedRewrite(steps=args.steps), args.layer,
                                       second_moment=statistics, progress=False,
                                       trainer_options={"accelerator": accelerator,
                                                        "precision": lightning_precision[precision]})
        delta = torch.cat([d.flatten().double() for d in result.delta_tensors().values()])
        images, images_per_s = sample(generator, z, precision, args.device, batch=32)
        if precision == "fp32":
            reference_delta, reference_images = delta, images
        difference = (images - reference_images).abs()
        rows[precision] = {
            "delta_relative_difference": float((delta - reference_delta).norm() / reference_delta.norm()),
            "image_max_abs_difference": float(difference.max()),
            "image_mean_abs_difference": float(difference.mean()),
            "edit_seconds": result.edit_seconds, "final_loss": result.fit.final_loss,
            "sampling_images_per_s": images_per_s,
        }
        rows[precision]["safe"] = (rows[precision]["delta_relative_difference"] < SAFE_DELTA
                                   and rows[precision]["image_mean_abs_difference"] < SAFE_MEAN_IMAGE)
    report = {
        "command": "python experiments/bench/precision_check.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "package_version": package_version(),
        "checkpoint": args.checkpoint or "toytown (bundled)", "checkpoint_sha256": base.checkpoint_sha256,
        "layer": args.layer, "edit": args.edit or "synthetic",
        "safe_if": {"delta_relative_difference_below": SAFE_DELTA, "image_mean_abs_difference_below": SAFE_MEAN_IMAGE},
        "precisions": rows,
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
