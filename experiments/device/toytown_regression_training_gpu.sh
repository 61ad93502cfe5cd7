#!/usr/bin/env bash
# Issue #4's open picture bar (a varied sample grid with windows a person recognises) by another road
# than adversarial training alone, in one device call:
#   1. regression from scratch (--objective regression): each latent's image is pulled toward the
#      render of its own scene (rewriting/toytown/latent_scenes.py), so no kind of scene is dropped;
#   2. from stage 1's weights, adversarial training with the regression loss kept beside it
#      (--regression-weight), which sharpens what regression leaves blurred while holding each
#      latent to its scene; a fresh discriminator (the first stage's judged another generator).
# Two variants side by side, differing in the learning rate (0.002 as on the CPU run of
# 2026-11-28, and 0.004). Then every stage-2 checkpoint and each stage-1 result go through
# select_toytown_checkpoint.py (validation shares, segmenter FID, window pieces); the four best by
# (shares within 25%, then segmenter FID) come back with the report and the training logs (7 files;
# the device returns 8).
#
# Hydra is not on the device image; carry its wheels (see toytown_quality_training_gpu.sh's header).
# Device call (carry: [".whl"]; timeout_s 600: REGRESSION_MINUTES + ADVERSARIAL_MINUTES + ~2.5 min):
#   OUT=$OUT REGRESSION_MINUTES=3.5 ADVERSARIAL_MINUTES=2.5 bash experiments/device/toytown_regression_training_gpu.sh
# Check the script itself on a CPU first:
#   OUT=/tmp/dry DEVICE=cpu REGRESSION_MINUTES=0.2 ADVERSARIAL_MINUTES=0.2 SAMPLES=40 BATCH=4 \
#     bash experiments/device/toytown_regression_training_gpu.sh
# Then, here: evaluate_toytown_generator.py on the chosen file, look at its grid, and re-measure the
# bundled edits' layers and the README tables before shipping it.
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
REGRESSION_MINUTES=${REGRESSION_MINUTES:-3.5}
ADVERSARIAL_MINUTES=${ADVERSARIAL_MINUTES:-2.5}
SAMPLES=${SAMPLES:-500}
BATCH=${BATCH:-64}
WORK=${WORK:-/tmp/toytown_regression}
source experiments/device/toytown_training_setup.sh

for variant in a b; do
  lr=$([ "$variant" = a ] && echo 0.002 || echo 0.004)
  (
    python3 experiments/train_toytown_generator.py --objective regression --out "$WORK/$variant/regression" \
      --device "$DEVICE" --minutes "$REGRESSION_MINUTES" --batch "$BATCH" --lr "$lr" --lr-mlp 1 --ema-kimg 5 \
      --save-every 600 --log-every 100
    python3 experiments/train_toytown_generator.py --resume "$WORK/$variant/regression" --out "$WORK/$variant/sharpen" \
      --device "$DEVICE" --minutes "$ADVERSARIAL_MINUTES" --batch "$BATCH" --lr "$lr" --ema-kimg 5 \
      --regression-weight 10 --r1 0.1 --save-every 40 --keep-checkpoints --log-every 100
  ) > "$WORK/$variant.log" 2>&1 &
done
wait
mkdir -p "$WORK/candidates"
for v in a b; do
  echo "== $v"; tail -n 2 "$WORK/$v.log"
  { echo "== variant $v"; cat "$WORK/$v.log"; } >> "$OUT/train.log"
  [ -e "$WORK/$v/regression/generator_ema.pt" ] && cp "$WORK/$v/regression/generator_ema.pt" "$WORK/candidates/${v}_regression.pt"
  for f in "$WORK/$v"/sharpen/generator_ema_step*.pt; do [ -e "$f" ] && cp "$f" "$WORK/candidates/${v}_$(basename "$f")"; done
done
python3 experiments/select_toytown_checkpoint.py "$WORK"/candidates/*.pt --samples "$SAMPLES" \
  --out "$OUT/shares.json" 2>&1 | tee "$OUT/selection.log"
python3 - "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
report = json.loads((out / "shares.json").read_text())["checkpoints"]
ranked = sorted(report, key=lambda n: (report[n]["largest_relative_difference"] > 0.25, report[n]["segmenter_fid"]))
for name in ranked[:4]:
    shutil.copy(name, out / Path(name).name)
    print(Path(name).name, round(report[name]["largest_relative_difference"], 3), round(report[name]["segmenter_fid"], 3),
          report[name]["window_pieces"].get("share_of_window_pixels_in_window_sized_pieces"))
PY
