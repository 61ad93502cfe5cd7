# Sourced by the Toytown training device scripts: carried Hydra wheels on the path, and a start
# folder ($WORK/start) holding the shipped generator and the first stage's discriminator to resume.
# Expects OUT and WORK set.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
python3 -c "import hydra, omegaconf" || { echo "hydra-core/omegaconf missing: carry .whl (see the header)"; exit 2; }
mkdir -p "$OUT" "$WORK/start"
cp rewriting/toytown/weights/toytown_generator.pt "$WORK/start/generator_ema.pt"
cp experiments/checkpoints/toytown_discriminator.pt "$WORK/start/discriminator.pt"
nvidia-smi -L 2> /dev/null || true
