#!/usr/bin/env bash
# The GPU benchmark in one go, on a machine without internet: install the wheels bench/gpu_wheels.sh fetched,
# then every variant of the 1B (full) and 8B (LoRA) shapes, HF Trainer baselines included, one after the other.
#   bash bench/gpu_run.sh RESULTS_DIR [SHAPE ...]      (default shapes: 1b 8b-lora)
# Writes RESULTS_DIR/train-SHAPE-DATE.json and prints each table.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}; shift
mkdir -p "$results"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ftc-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/ftc-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import ftc, deepspeed, jsonschema, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
status=0
for shape in "${@:-1b 8b-lora}"; do
    for s in $shape; do
        python3 bench/train_bench.py --shape "$s" --json "$results/train-$s-$(date +%F).json" || status=1
    done
done
exit $status
