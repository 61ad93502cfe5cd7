# GPU checks of the paper-model path, in one go (issue "paper models"): a random-weights 256-px
# StyleGAN2 (512 channels, channel multiplier 2) edited at layer 8, timed by bench.py (second
# moment over 1,000 images, sampling, edit), then reduced precision measured against float32.
# Usage on the GPU machine:  OUT=dir [REQUEST=hat_on_horse_ears.json] bash experiments/device/paper_models_gpu.sh
# (DEVICE=cpu IMAGES=8 STEPS=10 runs the same steps on a CPU, to check the script itself.)
set -eu
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to a folder for the results}
DEVICE=${DEVICE:-cuda}
IMAGES=${IMAGES:-1000}
STEPS=${STEPS:-400}
mkdir -p "$OUT"
nvidia-smi -L || true
python - "$OUT/random256.pt" <<'PY'
import sys, torch
from rewriting.models.checkpoints import save_stylegan2
from rewriting.models.stylegan2 import StyleGAN2Generator
torch.manual_seed(0)
generator = StyleGAN2Generator(256, style_dim=512, n_mlp=8, channel_multiplier=2).eval()
with torch.no_grad():
    generator.latent_avg.copy_(generator.style(torch.randn(4096, 512)).mean(0))
save_stylegan2(generator, sys.argv[1])
PY
EDIT=${REQUEST:+--edit $REQUEST}
python experiments/bench/bench.py --checkpoint "$OUT/random256.pt" --layer 8 --images "$IMAGES" --device "$DEVICE" \
  --steps "$STEPS" $EDIT --out "$OUT/bench_random256_layer8_$DEVICE.json"
python experiments/bench/precision_check.py --checkpoint "$OUT/random256.pt" --layer 8 --device "$DEVICE" \
  --images "$(( IMAGES < 200 ? IMAGES : 200 ))" --steps "$STEPS" $EDIT --out "$OUT/precision_random256_layer8_$DEVICE.json"
rm -f "$OUT/random256.pt"
