"""Teach a Toytown generator's late layers to draw its windows as a grid, by regression to its own painted images.

Every adversarial lever tried on the bundled generator left its windows as specks or dots (README,
Toytown section). This fine-tune gives the late layers a target per latent instead: the starting
generator's own image for z, with the renderer's window rule painted onto each building the shipped
segmenter finds in it (a grid of dark squares inset from the body's edges, none beside the door),
and the specks it drew before filled with the wall's colour. Buildings where the segmenter finds no
window at all are left without windows, so the renderer's windowless buildings stay windowless.
Only the synthesis layers after `--train-after-layer` move (default 6, the default layer of
`spire_to_tree`): the features an edit at that layer or before reads stay exactly the same, and the
target is the starting image everywhere but the windows, so the layout and colours are held.

    python experiments/toytown/paint_toytown_windows.py --out runs/paint --minutes 60 --threads 2

Writes, every `--save-every` seconds and at the end:
  OUT/generator_ema.pt (+ generator_ema_step{N}.pt with --keep-checkpoints)  rosinality checkpoint
  OUT/samples.png   8x8 grid at fixed latents          OUT/log.jsonl   losses and throughput
`--preview PNG` writes, instead of training, rows of starting images above their painted targets.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from rewriting.models.checkpoints import read_checkpoint, save_stylegan2, stylegan2_from_checkpoint
from rewriting.models.loading import resolve_checkpoint
from rewriting.toytown.labels import LABEL_INDEX
from rewriting.toytown.renderer import window_grid
from rewriting.toytown.segmenter import load_segmenter
from train_toytown_generator import late_synthesis_parameters, save_grid

# The middle of the renderer's ranges (window 3-5 px, gap 2-4, margin 2-4): the target must be a
# function of the image alone, or regression would average several grids into a blur.
WINDOW_SIZE, WINDOW_GAP, WINDOW_MARGIN = 4, 3, 3
WINDOW_COLOR = (0.14, 0.17, 0.28)  # the renderer's unlit window colour, in [0, 1]
MIN_BODY_PIXELS = 60  # smaller wall pieces are segmenter fragments, not buildings


def paint_windows(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image (3, H, W) in [-1, 1] and its label map (H, W) -> (painted image, changed-pixel mask (H, W))."""
    target = image.copy()
    wall_labels = [LABEL_INDEX["building"], LABEL_INDEX["window"], LABEL_INDEX["door"]]
    pieces, count = ndimage.label(np.isin(labels, wall_labels))
    paintable = np.isin(labels, [LABEL_INDEX["building"], LABEL_INDEX["window"]])
    window_color = np.asarray(WINDOW_COLOR, dtype=image.dtype) * 2 - 1
    changed = np.zeros(labels.shape, dtype=bool)
    for index in range(1, count + 1):
        piece = pieces == index
        body = piece & (labels == LABEL_INDEX["building"])
        if body.sum() < MIN_BODY_PIXELS:
            continue
        old_windows = piece & (labels == LABEL_INDEX["window"])
        target[:, old_windows] = np.median(image[:, body], axis=1)[:, None]
        changed |= old_windows
        if not old_windows.any():
            continue
        # Rows and columns with a few wall pixels bound the body; single ragged pixels do not.
        columns, rows = np.flatnonzero(piece.sum(0) >= 3), np.flatnonzero(piece.sum(1) >= 3)
        if len(columns) == 0 or len(rows) == 0:
            continue
        pitch = WINDOW_SIZE + WINDOW_GAP
        grid_columns, grid_rows, grid_left, grid_top = window_grid(
            int(columns[0]), int(columns[-1]) + 1, int(rows[0]), int(rows[-1]) + 1,
            WINDOW_SIZE, WINDOW_GAP, WINDOW_MARGIN)
        door = piece & (labels == LABEL_INDEX["door"])
        door_left = door_right = door_top = None
        if door.any():
            door_columns, door_rows = np.flatnonzero(door.any(0)), np.flatnonzero(door.any(1))
            door_left, door_right, door_top = door_columns[0], door_columns[-1] + 1, door_rows[0]
        for row in range(grid_rows):
            for column in range(grid_columns):
                x, y = grid_left + column * pitch, grid_top + row * pitch
                # As the renderer: whole windows next to the door are dropped.
                if door_left is not None and (x + WINDOW_SIZE > door_left - 1 and x < door_right + 1
                                              and y + WINDOW_SIZE > door_top - 1):
                    continue
                cell = np.zeros_like(piece)
                cell[y:y + WINDOW_SIZE, x:x + WINDOW_SIZE] = True
                cell &= piece & paintable  # a tree in front of the wall stays in front
                target[:, cell] = window_color[:, None]
                changed |= cell
    return target, changed


@torch.no_grad()
def painted_targets(images: torch.Tensor, segmenter) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) in [-1, 1] -> (painted targets (N, 3, H, W), changed pixels (N, 1, H, W) bool)."""
    labels = segmenter.segment(images).cpu().numpy()
    pictures = images.detach().float().cpu().numpy()
    targets, changed = zip(*(paint_windows(picture, label) for picture, label in zip(pictures, labels)))
    return (torch.from_numpy(np.stack(targets)).to(images),
            torch.from_numpy(np.stack(changed))[:, None].to(images.device))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="toytown", help="starting generator: a path or 'toytown'")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-after-layer", type=int, default=6)
    parser.add_argument("--window-weight", type=float, default=10.0,
                        help="L1 weight of the pixels the painting changed (1 elsewhere)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only --minutes)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--ema-kimg", type=float, default=0.5, help="EMA half-life in thousands of images")
    parser.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preview", type=Path, default=None, help="write starting images over targets and stop")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    path = resolve_checkpoint(name="toytown") if args.checkpoint == "toytown" else resolve_checkpoint(args.checkpoint)
    checkpoint = read_checkpoint(path)
    start_step = int(checkpoint.get("training", {}).get("step", 0))
    teacher = stylegan2_from_checkpoint(checkpoint).to(device).eval().requires_grad_(False)
    teacher.noise_mode = "fixed"  # the mode edits and metrics render in
    segmenter = load_segmenter(device=device).eval().requires_grad_(False)
    fixed_z = torch.randn(64, teacher.z_dim, generator=torch.Generator().manual_seed(123)).to(device)
    if args.preview is not None:
        images = teacher(fixed_z[:32])
        targets, _ = painted_targets(images, segmenter)
        rows = [torch.cat([images[i:i + 8], targets[i:i + 8]]) for i in range(0, 32, 8)]
        save_grid(torch.cat(rows), args.preview)
        return

    student = copy.deepcopy(teacher).train()
    trainable = late_synthesis_parameters(student, args.train_after_layer)
    for parameter in trainable:
        parameter.requires_grad_(True)
    student_ema = copy.deepcopy(student).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.99))
    ema_beta = 0.5 ** (args.batch / (args.ema_kimg * 1000))
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "log.jsonl", "a")
    latents = torch.Generator(device="cpu").manual_seed(args.seed + 1)

    def save(step: int) -> None:
        save_stylegan2(student_ema, args.out / "generator_ema.pt",
                       extra={"training": {"step": step, "paint_windows": {k: str(v) for k, v in vars(args).items()}}})
        if args.keep_checkpoints:
            shutil.copyfile(args.out / "generator_ema.pt", args.out / f"generator_ema_step{step}.pt")
        with torch.no_grad():
            save_grid(student_ema(fixed_z), args.out / "samples.png")

    started = last_save = time.time()
    step = start_step
    while True:
        z = torch.randn(args.batch, teacher.z_dim, generator=latents).to(device)
        with torch.no_grad():
            targets, changed = painted_targets(teacher(z), segmenter)
        weights = 1 + (args.window_weight - 1) * changed.float()
        error = (student(z) - targets).abs()
        loss = (weights * error).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for averaged, current in zip(student_ema.parameters(), student.parameters()):
                averaged.lerp_(current, 1 - ema_beta)
        step += 1
        elapsed = time.time() - started
        if (step - start_step) % args.log_every == 0:
            window_error = (error.mean(1, keepdim=True) * changed).sum() / changed.sum().clamp(min=1)
            line = {"step": step, "loss": round(loss.item(), 5), "window_l1": round(window_error.item(), 4),
                    "other_l1": round(((error.mean(1, keepdim=True) * ~changed).sum() / (~changed).sum()).item(), 4),
                    "seconds_per_step": round(elapsed / (step - start_step), 3)}
            print(json.dumps(line), flush=True)
            log_file.write(json.dumps(line) + "\n")
            log_file.flush()
        done = elapsed > args.minutes * 60 or (args.max_steps and step - start_step >= args.max_steps)
        if done or time.time() - last_save > args.save_every:
            save(step)
            last_save = time.time()
        if done:
            break


if __name__ == "__main__":
    main()
