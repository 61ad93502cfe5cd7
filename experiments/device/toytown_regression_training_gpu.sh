#!/usr/bin/env bash
# Issue #4's open picture bar (a varied sample grid with windows a person recognises) by another road
# than adversarial training alone, in one device call:
#   1. regression (--objective regression): each latent's image is pulled toward the render of its
#      own scene (rewriting/toytown/latent_scenes.py), so no kind of scene is dropped; from scratch,
#      or continuing START (the CPU run's checkpoint, say); REGRESSION_MINUTES=0 skips this stage
#      and starts stage 2 from START;
#   2. adversarial training with the regression loss kept beside it (--regression-weight), which
#      sharpens what regression leaves blurred while holding each latent to its scene; a fresh
#      discriminator (the first stage's judged another generator).
# LABEL_WEIGHT > 0 adds --label-weight (the segmenter's cross-entropy to each latent's scene labels)
# to stage 2: pixel regression alone never taught the roof kind, and the sharpened generator's
# roofs then ignored their latents (README, "Why the sharpened generator's shares drift").
# REGRESSION_LABEL_WEIGHT does the same for stage 1; it is 0 unless set, because on a blurred
# regression generator the loss was met with textures that fool the segmenter (README, "The label
# loss in plain regression").
# VARIANTS run side by side on the one GPU, each NAME:LEARNING_RATE:REGRESSION_WEIGHT. Each variant's
# last checkpoint is copied back first (so a slow selection loses nothing), then every stage-2 save
# goes through select_toytown_checkpoint.py (validation shares, segmenter FID, window pieces) and
# the best save by (shares within 25%, then segmenter FID) comes back too if it is not a last one.
# Files back: train.log, shares.json, selection.log, NAME_last.pt per variant, the best save (7 with
# three variants; the device returns 8, 64 MB in all: a checkpoint is 12 MB).
#
# Hydra is not on the device image; carry its wheels (see toytown_quality_training_gpu.sh's header).
# Device call of 2026-11-28 (carry: [".whl"]; timeout_s 590):
#   OUT=$OUT START=experiments/checkpoints/toytown_regression_generator.pt REGRESSION_MINUTES=0 \
#     ADVERSARIAL_MINUTES=6 VARIANTS="a:0.002:3 b:0.002:10 c:0.002:30" \
#     bash experiments/device/toytown_regression_training_gpu.sh
# Check the script itself on a CPU first:
#   OUT=/tmp/dry DEVICE=cpu START=experiments/checkpoints/toytown_regression_generator.pt \
#     REGRESSION_MINUTES=0.2 ADVERSARIAL_MINUTES=0.3 SAVE_SECONDS=8 SAMPLES=40 BATCH=4 \
#     bash experiments/device/toytown_regression_training_gpu.sh
# Then, here: evaluate_toytown_generator.py on the chosen file, look at its grid, and re-measure the
# bundled edits' layers and the README tables before shipping it.
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
START=${START:-}
REGRESSION_MINUTES=${REGRESSION_MINUTES:-3.5}
ADVERSARIAL_MINUTES=${ADVERSARIAL_MINUTES:-2.5}
VARIANTS=${VARIANTS:-"a:0.002:10 b:0.004:10"}
LABEL_WEIGHT=${LABEL_WEIGHT:-0}
REGRESSION_LABEL_WEIGHT=${REGRESSION_LABEL_WEIGHT:-0}
SAVE_SECONDS=${SAVE_SECONDS:-75}
SELECTION_SECONDS=${SELECTION_SECONDS:-170}
SAMPLES=${SAMPLES:-500}
BATCH=${BATCH:-64}
WORK=${WORK:-/tmp/toytown_regression}
source experiments/device/toytown_training_setup.sh

names=()
for variant in $VARIANTS; do
  IFS=: read -r name lr weight <<< "$variant"
  names+=("$name")
  mkdir -p "$WORK/$name/regression"
  [ -n "$START" ] && cp "$START" "$WORK/$name/regression/generator_ema.pt"
  (
    if [ "$REGRESSION_MINUTES" != 0 ]; then
      python3 experiments/train_toytown_generator.py --objective regression --resume "$WORK/$name/regression" \
        --out "$WORK/$name/regression" --device "$DEVICE" --minutes "$REGRESSION_MINUTES" --batch "$BATCH" \
        --lr "$lr" --lr-mlp 1 --ema-kimg 5 --label-weight "$REGRESSION_LABEL_WEIGHT" --save-every 600 --log-every 100
    fi
    python3 experiments/train_toytown_generator.py --resume "$WORK/$name/regression" --out "$WORK/$name/sharpen" \
      --device "$DEVICE" --minutes "$ADVERSARIAL_MINUTES" --batch "$BATCH" --lr "$lr" --ema-kimg 5 \
      --regression-weight "$weight" --label-weight "$LABEL_WEIGHT" --r1 0.1 --save-every "$SAVE_SECONDS" --keep-checkpoints --log-every 100
  ) > "$WORK/$name.log" 2>&1 &
done
wait
mkdir -p "$WORK/candidates"
for name in "${names[@]}"; do
  echo "== $name"; tail -n 2 "$WORK/$name.log"
  { echo "== variant $name"; cat "$WORK/$name.log"; } >> "$OUT/train.log"
  [ -e "$WORK/$name/sharpen/generator_ema.pt" ] && cp "$WORK/$name/sharpen/generator_ema.pt" "$OUT/${name}_last.pt"
  for f in "$WORK/$name"/sharpen/generator_ema_step*.pt; do [ -e "$f" ] && cp "$f" "$WORK/candidates/${name}_$(basename "$f")"; done
done
timeout "$SELECTION_SECONDS" python3 experiments/select_toytown_checkpoint.py "$WORK"/candidates/*.pt \
  --samples "$SAMPLES" --out "$OUT/shares.json" 2>&1 | tee "$OUT/selection.log"
python3 - "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
if not (out / "shares.json").is_file():
    sys.exit("no selection report (the selection ran out of time); the last checkpoints are back")
report = json.loads((out / "shares.json").read_text())["checkpoints"]
ranked = sorted(report, key=lambda n: (report[n]["largest_relative_difference"] > 0.25, report[n]["segmenter_fid"]))
shutil.copy(ranked[0], out / Path(ranked[0]).name)
for name in ranked[:6]:
    print(Path(name).name, round(report[name]["largest_relative_difference"], 3), round(report[name]["segmenter_fid"], 3),
          report[name]["window_pieces"].get("share_of_window_pixels_in_window_sized_pieces"))
PY
