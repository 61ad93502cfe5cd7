#!/usr/bin/env bash
# Train three Toytown generator variants side by side on one GPU (the small model leaves it idle
# otherwise); keep each variant's EMA generator and discriminator. Usage: OUT=dir MINUTES=6 bash this.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
MINUTES=${MINUTES:-6}
nvidia-smi -L || true
python -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
python experiments/train_toytown_generator.py --device cuda --minutes "$MINUTES" --out /tmp/tt_a \
  --batch 32 --lr 0.0025 --r1 0.1 --lr-mlp 0.01 --seed 0 --save-every 90 > /tmp/tt_a.log 2>&1 &
python experiments/train_toytown_generator.py --device cuda --minutes "$MINUTES" --out /tmp/tt_b \
  --batch 64 --lr 0.0025 --r1 0.2 --lr-mlp 0.01 --seed 1 --save-every 90 > /tmp/tt_b.log 2>&1 &
python experiments/train_toytown_generator.py --device cuda --minutes "$MINUTES" --out /tmp/tt_c \
  --batch 32 --lr 0.002 --r1 0.05 --lr-mlp 0.1 --seed 2 --save-every 90 > /tmp/tt_c.log 2>&1 &
wait
for v in a b c; do
  mkdir -p "$OUT/$v"
  cp /tmp/tt_$v/generator_ema.pt /tmp/tt_$v/discriminator.pt "$OUT/$v/" 2>/dev/null
  echo "== $v"; tail -n 4 /tmp/tt_$v.log
done > "$OUT/logs.txt"
for v in a b c; do echo "== $v"; head -c 3000 /tmp/tt_$v.log; echo; tail -n 3 /tmp/tt_$v.log; done
