"""Train the bundled Toytown StyleGAN2 (64 px) on the procedural renderer: adversarially, by regression, or both.

Resumable: `--resume DIR` continues from DIR/generator_ema.pt (+ discriminator.pt, or patch_discriminator.pt with
`--discriminator patch`, when present).
Writes, every `--save-every` seconds and at the end, atomically:
  OUT/generator_ema.pt   rosinality checkpoint of the EMA generator (what the package ships)
  OUT/discriminator.pt   discriminator weights (half precision) for a later fine-tune
                         (OUT/patch_discriminator.pt with --discriminator patch)
  OUT/samples.png        an 8x8 grid of EMA samples at fixed latents
  OUT/log.jsonl          losses and throughput

Example (GPU, 6 minutes):  python experiments/toytown/train_toytown_generator.py --device cuda --minutes 6 --out runs/a

Part-share fine-tune (`--share-weight`): an adversarial generator drops rare scene kinds (few
watermarks) and over-draws others. With a weight > 0 the generator loss also matches, per batch,
the share of samples that the shipped segmenter sees showing each part to the renderer's share:
the error is the evaluation's hard count over recent batches, its gradient that of a soft count.
`--trainable mapping` then moves only the mapping network: the synthesis network, and so the look
of every image it can draw, stays fixed, and only how often each kind of scene is drawn changes --
this keeps the segmenter from being fooled by synthesis artefacts.
`--train-after-layer N` instead moves only the synthesis layers after layer N: every feature at
layer N and before (the keys an edit at that layer reads) stays fixed, so the later layers can only
change how each scene is drawn (clean roofs, a watermark), not the layout. `--anchor-weight A`
keeps each image near the starting generator's image for the same latent, so the share loss buys
its counts with small changes rather than by redrawing scenes; `--anchor-pool P` compares the two
images averaged over P x P blocks, so colours and layout stay anchored while detail inside a block
(a window grid in place of specks) is left to the adversarial loss.

Regression (`--objective regression`, or `--regression-weight W` beside the adversarial loss):
the generator's image for z is pulled (mean L1) toward the render of a fixed scene of z
(`rewriting.toytown.latent_scenes`: each random draw of the scene sampler reads one coordinate of
z). Every latent has its own target, so no kind of scene can be dropped and the shares follow the
renderer's by construction; what it costs is blur wherever the map from z to a scene jumps (a roof
kind, a window count), which an adversarial fine-tune can then sharpen.
`--part-regression-weight P` weights the pixels that the target labels as one of
`--part-regression-labels` (the roofs and the watermark unless told) P times: an adversarial
sharpening drops the parts whose shares it gets wrong (domes become flat roofs, watermarks fade),
and this holds exactly those parts to each latent's scene while the rest of the image is left to
the adversarial loss.
`--label-weight L` adds the shipped segmenter's cross-entropy between the generator's image for z
and the labels of z's scene: where pixel L1 only asks for the target's colours (and a blurred
average satisfies it), this asks for each part to be drawn so that it reads as that part, at its
place -- a dome where the scene has a dome -- which is what the share bars count.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rewriting.atomic import atomic_path
from rewriting.models.checkpoints import read_checkpoint, save_stylegan2, stylegan2_from_checkpoint
from rewriting.models.stylegan2 import StyleGAN2Generator
from rewriting.metrics.success import PRESENCE_MIN_PIXELS, label_presence_counts
from rewriting.toytown.discriminator import Discriminator, PatchDiscriminator
from rewriting.toytown.labels import LABEL_INDEX, NUM_LABELS, SHARE_PARTS
from rewriting.toytown.latent_scenes import LATENT_DIM, render_latents
from rewriting.toytown.renderer import render_seeds
from rewriting.toytown.segmenter import load_segmenter

GENERATOR_CHANNELS = {4: 256, 8: 256, 16: 128, 32: 128, 64: 64}
DISCRIMINATOR_CHANNELS = {64: 32, 32: 64, 16: 128, 8: 256, 4: 256}


def part_shares(labels: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Labels (N, H, W) -> (len(parts),): share of images showing each part, counted as the evaluation does."""
    return label_presence_counts(labels, NUM_LABELS)[parts].float() / labels.shape[0]


def pooled_l1(images: torch.Tensor, anchor_images: torch.Tensor, pool: int) -> torch.Tensor:
    """Mean L1 between images (N, 3, H, W) after averaging both over pool x pool blocks (pool 1: plain L1)."""
    if pool > 1:
        images, anchor_images = F.avg_pool2d(images, pool), F.avg_pool2d(anchor_images, pool)
    return (images - anchor_images).abs().mean()


def weighted_regression_l1(fake: torch.Tensor, target: torch.Tensor, target_labels: torch.Tensor,
                           parts: torch.Tensor, part_weight: float) -> torch.Tensor:
    """Mean L1 of images (N, 3, H, W) to targets, pixels whose target label (N, H, W) is in `parts` weighted `part_weight`."""
    error = (fake - target).abs().mean(1)
    if part_weight != 1 and parts.numel():
        error = torch.where(torch.isin(target_labels, parts), part_weight * error, error)
    return error.mean()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.0025)
    parser.add_argument("--lr-mlp", type=float, default=0.01, help="mapping-network learning-rate multiplier")
    parser.add_argument("--r1", type=float, default=0.1, help="R1 penalty weight (gamma)")
    parser.add_argument("--r1-every", type=int, default=16)
    parser.add_argument("--style-dim", type=int, default=128)
    parser.add_argument("--n-mlp", type=int, default=4)
    parser.add_argument("--ema-kimg", type=float, default=10.0, help="EMA half-life in thousands of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only --minutes)")
    parser.add_argument("--share-target-images", type=int, default=4000,
                        help="renders whose part shares are the share loss's targets")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="also keep every saved EMA generator as OUT/generator_ema_step{N}.pt")
    parser.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    parser.add_argument("--share-weight", type=float, default=0.0,
                        help="weight of the part-share matching loss (0: plain adversarial training)")
    parser.add_argument("--share-scale", type=float, default=20.0,
                        help="pixels over which the soft part presence saturates (or, for the sigmoid, rises)")
    parser.add_argument("--share-presence", choices=("saturating", "sigmoid"), default="saturating",
                        help="form of the soft part presence (see soft_part_presence)")
    parser.add_argument("--trainable", choices=("all", "mapping"), default="all",
                        help="which generator weights the generator step updates")
    parser.add_argument("--mapping-lr-scale", type=float, default=1.0,
                        help="Adam learning rate of the mapping network relative to --lr")
    parser.add_argument("--train-after-layer", type=int, default=None,
                        help="train only the synthesis layers after this layer number (their convs and the "
                             "to_rgb layers they feed); the mapping network and layers up to it stay fixed")
    parser.add_argument("--anchor-weight", type=float, default=0.0,
                        help="weight of the mean L1 between each generated image and the starting "
                             "generator's image for the same latent and noise (0: no anchor)")
    parser.add_argument("--anchor-pool", type=int, default=1,
                        help="compare with the anchor image averaged over P x P pixel blocks: the colours "
                             "and layout stay anchored, detail inside each block (window grids) is free")
    parser.add_argument("--discriminator", choices=("whole", "patch"), default="whole",
                        help="patch: a fresh discriminator that judges each ~24 px patch on its own (local "
                             "texture only), kept as OUT/patch_discriminator.pt")
    parser.add_argument("--objective", choices=("adversarial", "regression"), default="adversarial",
                        help="regression: no discriminator, only the mean L1 to the render of each latent's scene")
    parser.add_argument("--regression-weight", type=float, default=0.0,
                        help="weight of the mean L1 to the render of each latent's scene beside the "
                             "adversarial loss (with --objective regression: 1 unless set)")
    parser.add_argument("--part-regression-weight", type=float, default=1.0,
                        help="weight, relative to other pixels, of the regression error on pixels that the "
                             "target labels as one of --part-regression-labels")
    parser.add_argument("--part-regression-labels", default="spire,dome,flat_roof,watermark",
                        help="comma-separated Toytown labels weighted by --part-regression-weight")
    parser.add_argument("--label-weight", type=float, default=0.0,
                        help="weight of the segmenter cross-entropy to the labels of each latent's scene")
    args = parser.parse_args()
    unknown = [name for name in args.part_regression_labels.split(",") if name and name not in LABEL_INDEX]
    if unknown:
        parser.error(f"--part-regression-labels: unknown label(s) {unknown}; Toytown labels are {sorted(LABEL_INDEX)}")
    if args.anchor_pool < 1 or 64 % args.anchor_pool:
        parser.error(f"--anchor-pool {args.anchor_pool}: use a block size that divides the 64-px image (1, 2, 4, 8, ...)")
    if args.objective == "regression" and args.regression_weight == 0 and args.label_weight == 0:
        args.regression_weight = 1.0
    return args


def late_synthesis_parameters(generator: StyleGAN2Generator, layer: int) -> list[torch.nn.Parameter]:
    """Parameters of the synthesis layers after `layer`: their convs and the to_rgb layers fed after it."""
    generator.layer(layer)  # a clear error for a layer this generator does not have
    modules = [generator.convs[k] for k in range(len(generator.convs)) if k + 3 > layer]
    # to_rgbs[j] reads the output of layer 2j + 4 (to_rgb1 that of layer 2).
    modules += [to_rgb for j, to_rgb in enumerate(generator.to_rgbs) if 2 * j + 4 >= layer]
    if layer == 2:
        modules.append(generator.to_rgb1)
    return [parameter for module in modules for parameter in module.parameters()]


def soft_part_presence(logits: torch.Tensor, parts: torch.Tensor, scale: float,
                       form: str = "saturating") -> torch.Tensor:
    """Segmenter logits (N, L, H, W) -> (N, len(parts)): differentiable "shows the part" in [0, 1].

    "saturating" grows with the soft pixel count beyond the evaluation's threshold and saturates
    over `scale` pixels; unlike "sigmoid" (a sigmoid of width `scale` pixels at the threshold) it
    keeps a gradient for images that clearly show (or clearly lack) the part, so whole scenes,
    not just borderline ones, can move.
    """
    excess = logits.softmax(dim=1)[:, parts].sum(dim=(2, 3)) - (PRESENCE_MIN_PIXELS + 0.5)
    if form == "sigmoid":
        return torch.sigmoid(excess / scale)
    return 1 - torch.exp(-F.softplus(excess) / scale)


@torch.no_grad()
def rendered_part_shares(segmenter, seeds: list[int], device: torch.device, parts: torch.Tensor) -> torch.Tensor:
    """(len(parts),): share of rendered images the segmenter sees showing each part (hard count)."""
    labels = [segmenter.segment(render_seeds(seeds[start:start + 200], size=64)[0].to(device))
              for start in range(0, len(seeds), 200)]
    return part_shares(torch.cat(labels), parts)


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    from PIL import Image
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    count, _, height, width = images.shape
    rows = math.ceil(count / columns)
    grid = torch.zeros(3, rows * height, columns * width, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[:, r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    with atomic_path(path) as temporary:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(temporary, format="PNG")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)

    start_step = 0
    if args.resume and (args.resume / "generator_ema.pt").is_file():
        checkpoint = read_checkpoint(args.resume / "generator_ema.pt")
        generator = stylegan2_from_checkpoint(checkpoint)
        start_step = int(checkpoint.get("training", {}).get("step", 0))
    else:
        generator = StyleGAN2Generator(64, style_dim=args.style_dim, n_mlp=args.n_mlp,
                                       channels=GENERATOR_CHANNELS, lr_mlp=args.lr_mlp)
    if (args.regression_weight > 0 or args.label_weight > 0) and generator.z_dim < LATENT_DIM:
        raise SystemExit(f"Regression needs a generator whose z has at least {LATENT_DIM} coordinates (one per "
                         f"random draw of a scene); this one has {generator.z_dim}. Use --style-dim {LATENT_DIM} or more.")
    if args.discriminator == "patch":
        discriminator, discriminator_file = PatchDiscriminator(), "patch_discriminator.pt"
    else:
        discriminator, discriminator_file = Discriminator(64, DISCRIMINATOR_CHANNELS), "discriminator.pt"
    if args.resume and (args.resume / discriminator_file).is_file():
        discriminator.load_state_dict({k: v.float() for k, v in torch.load(args.resume / discriminator_file).items()})
    generator.to(device).train().requires_grad_(True)
    generator.noise_mode = "random"
    discriminator.to(device).train()
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)

    r1_ratio = args.r1_every / (args.r1_every + 1)
    mapping_parameters = list(generator.style.parameters())
    mapping_ids = {id(parameter) for parameter in mapping_parameters}
    synthesis_parameters = [p for p in generator.parameters() if id(p) not in mapping_ids]
    if args.train_after_layer is not None:
        late_ids = {id(p) for p in late_synthesis_parameters(generator, args.train_after_layer)}
        for parameter in generator.parameters():
            parameter.requires_grad_(id(parameter) in late_ids)
        groups = [{"params": [p for p in generator.parameters() if id(p) in late_ids]}]
    else:
        groups = [{"params": mapping_parameters, "lr": args.lr * args.mapping_lr_scale}]
        if args.trainable == "all":
            groups.append({"params": synthesis_parameters})
        else:
            for parameter in synthesis_parameters:
                parameter.requires_grad_(False)
    anchor = copy.deepcopy(generator).eval().requires_grad_(False) if args.anchor_weight > 0 else None
    g_optim = torch.optim.Adam(groups, lr=args.lr, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=args.lr * r1_ratio,
                               betas=(0.0, 0.99 ** r1_ratio))
    ema_beta = 0.5 ** (args.batch / (args.ema_kimg * 1000))
    fixed_z = torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(123)).to(device)
    # Real images come from a seed range disjoint from evaluation seeds (those start at 0).
    seed_base = 10_000_000 + args.seed * 1_000_000_000
    log_file = open(args.out / "log.jsonl", "a")

    def save(step: int) -> None:
        with torch.no_grad():
            # latent_avg is the mean w, as rosinality's training keeps it, so truncation works.
            w = generator_ema.style(torch.randn(4096, generator.z_dim, device=device))
            generator_ema.latent_avg.copy_(w.mean(0))
        save_stylegan2(generator_ema, args.out / "generator_ema.pt",
                       extra={"training": {"step": step, "args": {k: str(v) for k, v in vars(args).items()}}})
        if args.keep_checkpoints:
            shutil.copyfile(args.out / "generator_ema.pt", args.out / f"generator_ema_step{step}.pt")
        with atomic_path(args.out / discriminator_file) as temporary:
            torch.save({k: v.detach().half().cpu() for k, v in discriminator.state_dict().items()}, temporary)
        with torch.no_grad():
            generator_ema.noise_mode = "fixed"
            save_grid(generator_ema(fixed_z), args.out / "samples.png")

    share_parts = torch.tensor([LABEL_INDEX[part] for part in SHARE_PARTS], device=device)
    regression_parts = torch.tensor([LABEL_INDEX[name] for name in args.part_regression_labels.split(",") if name],
                                    dtype=torch.long, device=device)
    if args.share_weight > 0 or args.label_weight > 0:
        segmenter = load_segmenter(device=device).eval().requires_grad_(False)
    if args.share_weight > 0:
        # Target shares from training seeds (disjoint from the evaluation's seeds 0..1999).
        target_seeds = list(range(seed_base - args.share_target_images, seed_base))
        target_shares = rendered_part_shares(segmenter, target_seeds, device, share_parts)
        print(json.dumps({"target_shares": dict(zip(SHARE_PARTS, [round(v, 3) for v in target_shares.tolist()]))}),
              flush=True)
        with torch.no_grad():
            running_shares = part_shares(
                segmenter.segment(generator(torch.randn(256, generator.z_dim, device=device))), share_parts)

    render_device = device
    try:
        render_seeds([0, 1], size=64, device=device)
    except Exception as error:  # keep training even if the renderer cannot run on this device
        print(f"rendering on {device} failed ({error}); rendering on the CPU instead", flush=True)
        render_device = torch.device("cpu")

    def discriminator_step(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One discriminator update (+ lazy R1 every r1_every steps): its loss and the R1 value."""
        seeds = range(seed_base + step * args.batch, seed_base + (step + 1) * args.batch)
        real, _ = render_seeds(list(seeds), size=64, device=render_device)
        real = real.to(device)
        z = torch.randn(args.batch, generator.z_dim, device=device)
        with torch.no_grad():
            fake = generator(z)
        d_loss = F.softplus(discriminator(fake)).mean() + F.softplus(-discriminator(real)).mean()
        d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optim.step()
        r1_value = torch.zeros(())
        if step % args.r1_every == 0:
            real.requires_grad_(True)
            # Per-image mean realness, so a patch discriminator's R1 is on the same scale as a whole one's.
            realness = discriminator(real).reshape(len(real), -1).mean(1)
            (gradient,) = torch.autograd.grad(realness.sum(), real, create_graph=True)
            r1_value = gradient.pow(2).flatten(1).sum(1).mean()
            d_optim.zero_grad(set_to_none=True)
            (args.r1 / 2 * r1_value * args.r1_every).backward()
            d_optim.step()
        return d_loss.detach(), r1_value.detach()

    adversarial = args.objective == "adversarial"
    began = time.time()
    last_save = began
    step = start_step
    seen = 0
    while time.time() - began < args.minutes * 60 and not (args.max_steps and step - start_step >= args.max_steps):
        d_loss = r1_value = torch.zeros(())
        if adversarial:
            d_loss, r1_value = discriminator_step(step)

        # Generator step.
        z = torch.randn(args.batch, generator.z_dim, device=device)
        noise = generator.make_noise(args.batch, "random", device=device)
        fake = generator(z, noise=noise)
        g_loss = F.softplus(-discriminator(fake)).mean() if adversarial else torch.zeros((), device=device)
        regression_loss = torch.zeros((), device=device)
        label_loss = torch.zeros((), device=device)
        logits = None
        if args.regression_weight > 0 or args.label_weight > 0:
            target, target_labels = render_latents(z, size=64, device=render_device)
            target, target_labels = target.to(device), target_labels.to(device)
        if args.label_weight > 0:
            logits = segmenter(fake)
            label_loss = F.cross_entropy(logits, target_labels)
        if args.regression_weight > 0:
            regression_loss = weighted_regression_l1(fake, target, target_labels, regression_parts,
                                                     args.part_regression_weight)
            with torch.no_grad():
                plain_l1 = (fake - target).abs().mean()
                in_parts = torch.isin(target_labels, regression_parts)
                part_l1 = (fake - target).abs().mean(1)[in_parts].mean() if in_parts.any() else plain_l1
        anchor_loss = torch.zeros((), device=device)
        if anchor is not None:
            with torch.no_grad():
                anchor_images = anchor(z, noise=noise)
            anchor_loss = pooled_l1(fake, anchor_images, args.anchor_pool)
        share_loss = torch.zeros((), device=device)
        if args.share_weight > 0:
            logits = segmenter(fake) if logits is None else logits
            with torch.no_grad():
                running_shares.lerp_(part_shares(logits.argmax(1), share_parts), 0.05)
            # The error comes from the evaluation's own hard count (averaged over recent batches);
            # the soft presence only gives its direction in weight space.
            presence = soft_part_presence(logits, share_parts, args.share_scale, args.share_presence)
            share_loss = ((running_shares - target_shares) * presence.mean(0)).sum()
        g_optim.zero_grad(set_to_none=True)
        (g_loss + args.share_weight * share_loss + args.anchor_weight * anchor_loss
         + args.regression_weight * regression_loss + args.label_weight * label_loss).backward()
        g_optim.step()

        with torch.no_grad():
            for ema_param, param in zip(generator_ema.parameters(), generator.parameters()):
                ema_param.lerp_(param, 1 - ema_beta)
        step += 1
        seen += args.batch
        if step % args.log_every == 0:
            elapsed = time.time() - began
            record = {"step": step, "seconds": round(elapsed, 1), "images_per_s": round(seen / elapsed, 1),
                      "d_loss": round(d_loss.item(), 4), "g_loss": round(g_loss.item(), 4),
                      "r1": round(float(r1_value.detach()), 4)}
            if args.regression_weight > 0:
                record["regression_l1"] = round(plain_l1.item(), 4)
                record["part_regression_l1"] = round(part_l1.item(), 4)
            if args.label_weight > 0:
                record["label_cross_entropy"] = round(label_loss.item(), 4)
            if anchor is not None:
                record["anchor_l1"] = round(anchor_loss.item(), 4)
            if args.share_weight > 0:
                record["share_error"] = round((running_shares - target_shares).abs().sum().item(), 4)
                record["running_shares"] = dict(zip(SHARE_PARTS, [round(v, 3) for v in running_shares.tolist()]))
            print(json.dumps(record), flush=True)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if time.time() - last_save > args.save_every:
            save(step)
            last_save = time.time()
    save(step)
    print(json.dumps({"done": True, "step": step, "seconds": round(time.time() - began, 1)}), flush=True)


if __name__ == "__main__":
    main()
