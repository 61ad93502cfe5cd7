"""The paper's model families: ProGAN rewrites (exact closed form), and a full-size 256-px StyleGAN2 run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewriting.edits.targets import RewriteTarget, context_directions, masked_keys
from rewriting.features import layer_values, trace_layer
from rewriting.methods.closed_form import lambda_to_delta
from rewriting.methods.rank_one import ClosedForm
from rewriting.models.proggan import ProGANGenerator, save_proggan

ROOT = Path(__file__).resolve().parent.parent


def tiny_proggan(seed: int = 0) -> ProGANGenerator:
    torch.manual_seed(seed)
    generator = ProGANGenerator(size=32, layer_widths=[32, 32, 24, 24, 16, 16, 16, 16], z_dim=32)
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith(".b"):
                parameter.copy_(0.1 * torch.randn_like(parameter))
    return generator.eval().requires_grad_(False)


@pytest.mark.parametrize("layer", [4, 5])
def test_proggan_closed_form_reaches_a_planted_rule_exactly(layer):
    generator = tiny_proggan()
    z = torch.randn(4, generator.z_dim, generator=torch.Generator().manual_seed(1))
    trace = trace_layer(generator, z, layer)
    size = trace.values.shape[-1]
    mask = torch.zeros(size, size)
    mask[size // 4: size // 2, size // 4: size // 2] = 1
    keys = trace.keys.flatten(2).permute(0, 2, 1).reshape(-1, trace.keys.shape[1]).double()
    second_moment = keys.t() @ keys / keys.shape[0]
    directions = context_directions([masked_keys(trace.keys[i], mask) for i in range(3)], second_moment, 1)
    planted = torch.randn(generator.layer(layer).weight.shape[0], 1, 3, 3, generator=torch.Generator().manual_seed(2))
    target_trace = trace.select(slice(3, 4))
    wanted = layer_values(generator, layer, target_trace,
                          generator.layer(layer).weight + lambda_to_delta(planted, directions))
    weights = torch.zeros(1, 1, size, size)
    weights[..., size // 2:, size // 2:] = 1
    fit = ClosedForm().fit(generator, layer, RewriteTarget(target_trace, wanted, weights), directions)
    assert fit.initial_loss > 1e-3
    assert fit.final_loss < 1e-4 * fit.initial_loss  # the ProGAN layer is exactly linear: exact recovery
    assert torch.allclose(fit.delta, lambda_to_delta(planted, directions), atol=1e-4)


def run_cli(args: list[str], env: dict, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_proggan_edit_end_to_end_through_run_py(tmp_path, edit_spec_file):
    checkpoint = tmp_path / "proggan_tiny.pth"
    save_proggan(tiny_proggan(), checkpoint)
    spec = edit_spec_file()
    env = {**os.environ, "REWRITING_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    out = tmp_path / "run"
    result = run_cli([f"generator.checkpoint={checkpoint}", f"edit={spec}", "layer=4", "method=closed_form",
                      "metrics=none", "logger=none", "statistics.num_samples=20", "progress=false",
                      f"hydra.run.dir={out}"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_loss"] < metrics["initial_loss"]
    from rewriting import apply_deltas, load_generator
    edited = load_generator(out / "edited_generator.pt")
    base = apply_deltas(load_generator(checkpoint), [out / "delta.safetensors"], check_base=False)
    z = torch.randn(2, 32)
    assert torch.equal(edited(z), base(z))


@pytest.mark.slow
def test_full_size_256px_horse_hats_on_cpu(tmp_path, reference_dir):
    """`python run.py generator.checkpoint=THAT edit=horse_hats layer=8` on a random 512-channel 256-px model."""
    request = reference_dir / "masks/stylegan/horse/hat_on_horse_ears.json"
    from rewriting.models.checkpoints import estimate_latent_avg, save_stylegan2
    from rewriting.models.stylegan2 import StyleGAN2Generator
    torch.manual_seed(0)
    generator = StyleGAN2Generator(256, style_dim=512, n_mlp=8, channel_multiplier=2).eval().requires_grad_(False)
    generator.latent_avg.copy_(estimate_latent_avg(generator, samples=256))
    checkpoint = tmp_path / "random256.pt"
    save_stylegan2(generator, checkpoint)
    del generator
    # The edit config names the request by URL; put the file where the cache expects it, as a user offline would.
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(request, cache / "hat_on_horse_ears.json")
    env = {**os.environ, "REWRITING_CACHE": str(cache), "WANDB_MODE": "offline"}
    out = tmp_path / "run"
    result = run_cli([f"generator.checkpoint={checkpoint}", "edit=horse_hats", "layer=8", "metrics=none",
                      "logger=none", "statistics.num_samples=8", "statistics.batch_size=4", "method.steps=20",
                      "samples.count=2", "progress=false", f"hydra.run.dir={out}"], env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("delta.safetensors", "edit.json", "edited_generator.pt", "before_after.png", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layer"] == 8 and metrics["final_loss"] <= metrics["initial_loss"]
    from rewriting import load_delta
    tensors, metadata = load_delta(out / "delta.safetensors")
    assert list(tensors) == ["convs.5.conv.weight"] and tuple(tensors["convs.5.conv.weight"].shape) == (1, 512, 512, 3, 3)
    edit = json.loads((out / "edit.json").read_text())
    assert edit["layer"] == 8 and len(edit["request"]["context"]) == 4
