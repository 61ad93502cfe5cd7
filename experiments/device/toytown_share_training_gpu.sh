#!/usr/bin/env bash
# Issue #4's open bar in one device call: fine-tune the whole shipped Toytown generator (adversarial
# loss + part-share loss) in three variants side by side, then choose among the kept checkpoints
# with select_toytown_checkpoint.py on validation seeds: every kept checkpoint's part shares first,
# then, for the four closest to the renderer's shares, the default edit too (edit seeds 2 3; the bars:
# shares within 25%, mean success >= 0.50 at masked L1 <= 0.05). The three best of those come back
# with both selection reports, the training logs and the selection log (7 files; the device returns 8).
#
# Hydra is not on the device image; carry its wheels (made here, once; .whl is ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps -d .whl hydra-core==1.3.8 omegaconf==2.3.1   # the versions pip installs here
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3     # sdist only: build the wheel here
# Device call (carry: [".whl"]; timeout_s 560: ~5 min training + ~3 min selection):
#   OUT=$OUT MINUTES=5 bash experiments/device/toytown_share_training_gpu.sh
# Check the script itself on a CPU first:
#   OUT=/tmp/dry DEVICE=cpu MINUTES=0.3 SAMPLES=40 EDIT_SAMPLES=40 bash experiments/device/toytown_share_training_gpu.sh
# Then, here: evaluate_toytown_generator.py on the chosen file, look at its grid, and re-measure the
# bundled edits' layers and the README tables before shipping it.
set -u
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-5}
SAMPLES=${SAMPLES:-500}
EDIT_SAMPLES=${EDIT_SAMPLES:-300}
WORK=${WORK:-/tmp/toytown_share}
source experiments/device/toytown_training_setup.sh

# Variant a: the share weight of CPU run (b) that met the shares, longer; b: a lighter share weight;
# c: a lower learning rate (run (b) on the CPU blurred building bodies after ~270 steps).
common=(--resume "$WORK/start" --device "$DEVICE" --minutes "$MINUTES" --batch 32 --trainable all
        --mapping-lr-scale 5 --ema-kimg 1 --save-every 70 --keep-checkpoints --log-every 50)
python3 experiments/train_toytown_generator.py --out "$WORK/a" "${common[@]}" --share-weight 50 --lr 0.001 \
  > "$WORK/a.log" 2>&1 &
python3 experiments/train_toytown_generator.py --out "$WORK/b" "${common[@]}" --share-weight 20 --lr 0.001 \
  > "$WORK/b.log" 2>&1 &
python3 experiments/train_toytown_generator.py --out "$WORK/c" "${common[@]}" --share-weight 50 --lr 0.0005 \
  > "$WORK/c.log" 2>&1 &
wait
for v in a b c; do
  echo "== $v: $(ls "$WORK/$v"/generator_ema_step*.pt 2> /dev/null | wc -l) checkpoints"; tail -n 2 "$WORK/$v.log"
  { echo "== variant $v"; cat "$WORK/$v.log"; } >> "$OUT/train.log"
done
# Every variant's kept checkpoints, renamed so the report tells the variants apart.
mkdir -p "$WORK/candidates"
for v in a b c; do
  for f in "$WORK/$v"/generator_ema_step*.pt; do [ -e "$f" ] && cp "$f" "$WORK/candidates/${v}_$(basename "$f")"; done
done
python3 experiments/select_toytown_checkpoint.py "$WORK"/candidates/*.pt --samples "$SAMPLES" \
  --out "$OUT/shares.json" > "$WORK/shares.log" 2>&1
closest=$(python3 - "$OUT/shares.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))["checkpoints"]
print(" ".join(sorted(report, key=lambda name: report[name]["largest_relative_difference"])[:4]))
PY
)
python3 experiments/select_toytown_checkpoint.py $closest --samples "$SAMPLES" --edit-seeds 2 3 \
  --edit-samples "$EDIT_SAMPLES" --scratch "$WORK/selection" --out "$OUT/selection.json" > "$OUT/selection.log" 2>&1
cat "$WORK/shares.log"; tail -n 30 "$OUT/selection.log"
python3 - "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
report = json.loads((out / "selection.json").read_text())
ranked = sorted(report["checkpoints"], key=lambda n: (not report["checkpoints"][n]["meets_bars"],
                                                     report["checkpoints"][n]["largest_relative_difference"]))
for name in ranked[:3]:
    shutil.copy(name, out / Path(name).name)
print("returned:", [Path(n).name for n in ranked[:3]], "chosen:", Path(report["chosen"]).name,
      "meets bars:", report["meets_bars"])
PY
