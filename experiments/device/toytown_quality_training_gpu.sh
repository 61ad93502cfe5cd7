#!/usr/bin/env bash
# Issue #4's open picture bar (windows a person recognises, sharper and more varied samples) in one
# device call: continue the adversarial training of the whole shipped Toytown generator from its
# weights and the first stage's discriminator, with the part-share loss holding the shares, in three
# variants side by side that differ in the R1 weight (the first stage used 0.1; StyleGAN2-ADA's rule
# for 64 px at batch 64 gives 0.013, and a strong R1 smooths what the discriminator can see).
# Then every kept checkpoint's validation shares and segmenter FID (select_toytown_checkpoint.py);
# the four best by (shares within 25%, then segmenter FID) come back with the report, the training
# logs and the best variant's final discriminator (7 files; the device returns 8).
#
# Hydra is not on the device image; carry its wheels (made here, once; .whl is ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3     # sdist only: build the wheel here
# Device call (carry: [".whl"]; timeout_s 600: MINUTES of training + ~3 min selection):
#   OUT=$OUT MINUTES=5.5 bash experiments/device/toytown_quality_training_gpu.sh
# Check the script itself on a CPU first:
#   OUT=/tmp/dry DEVICE=cpu MINUTES=0.3 SAMPLES=40 BATCH=4 bash experiments/device/toytown_quality_training_gpu.sh
# Then, here: evaluate_toytown_generator.py on the chosen file, look at its grid, and re-measure the
# bundled edits' layers and the README tables before shipping it.
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-6}
SAMPLES=${SAMPLES:-500}
BATCH=${BATCH:-64}
WORK=${WORK:-/tmp/toytown_quality}
source experiments/device/toytown_training_setup.sh

common=(--resume "$WORK/start" --device "$DEVICE" --minutes "$MINUTES" --batch "$BATCH" --trainable all
        --lr 0.002 --ema-kimg 5 --save-every 75 --keep-checkpoints --log-every 100)
python3 experiments/train_toytown_generator.py --out "$WORK/a" "${common[@]}" --r1 0.1 --share-weight 20 \
  > "$WORK/a.log" 2>&1 &
python3 experiments/train_toytown_generator.py --out "$WORK/b" "${common[@]}" --r1 0.01 --share-weight 20 \
  > "$WORK/b.log" 2>&1 &
python3 experiments/train_toytown_generator.py --out "$WORK/c" "${common[@]}" --r1 0.03 --share-weight 10 \
  > "$WORK/c.log" 2>&1 &
wait
mkdir -p "$WORK/candidates"
for v in a b c; do
  echo "== $v: $(ls "$WORK/$v"/generator_ema_step*.pt 2> /dev/null | wc -l) checkpoints"; tail -n 2 "$WORK/$v.log"
  { echo "== variant $v"; cat "$WORK/$v.log"; } >> "$OUT/train.log"
  for f in "$WORK/$v"/generator_ema_step*.pt; do [ -e "$f" ] && cp "$f" "$WORK/candidates/${v}_$(basename "$f")"; done
done
python3 experiments/select_toytown_checkpoint.py "$WORK"/candidates/*.pt --samples "$SAMPLES" \
  --out "$OUT/shares.json" 2>&1 | tee "$OUT/selection.log"
python3 - "$OUT" "$WORK" <<'PY'
import json, shutil, sys
from pathlib import Path
out, work = Path(sys.argv[1]), Path(sys.argv[2])
report = json.loads((out / "shares.json").read_text())["checkpoints"]
ranked = sorted(report, key=lambda n: (report[n]["largest_relative_difference"] > 0.25, report[n]["segmenter_fid"]))
for name in ranked[:4]:
    shutil.copy(name, out / Path(name).name)
best_variant = Path(ranked[0]).name.split("_")[0]
shutil.copy(work / best_variant / "discriminator.pt", out / f"{best_variant}_discriminator_final.pt")
for name in ranked[:4]:
    print(Path(name).name, round(report[name]["largest_relative_difference"], 3), round(report[name]["segmenter_fid"], 3))
PY
