#!/usr/bin/env bash
# Everything ftc needs to prove on a GPU, in one call with a time budget, on a machine without internet:
#   1. install the wheels bench/gpu_wheels.sh fetched (into /tmp/ftc-site, when .whl/ holds any);
#   2. the profile first (bench/gpu_profile.py: environment and kernels, the attention microbenchmark, ftc's step
#      under the profiler with its optimizer, engine.step() time, host syncs and GPU idle time, the ablations, the
#      8B LoRA shape), its own share of the budget (FTC_GPU_PROFILE_S, default 40%): its JSON is rewritten after
#      every stage, so a call cut short still tells what it measured;
#   3. the correctness checks (bench/gpu_checks.py: full, packed FlexAttention vs unpacked, LoRA, ZeRO-2, ZeRO-3,
#      Liger, checkpoint + --resume), ~1/3 of the budget at most (FTC_GPU_CHECKS_S);
#   4. the throughput benchmark against HF Trainer (bench/train_bench.py), 1B full then 8B LoRA, each in the time
#      left (a shape cut short keeps the variants it finished: its JSON says "complete": false).
#
#   bash bench/gpu_run.sh RESULTS_DIR [SHAPE ...]      (default shapes: 1b 8b-lora)
#   bash bench/gpu_run.sh RESULTS_DIR --profile-only   (the profile alone, with the whole budget)
#   FTC_GPU_BUDGET_S   the whole call's budget in seconds (default 480)
#   FTC_GPU_PROFILE_S  of which the profile may take (default 40% of it; 0: no profile)
#   FTC_GPU_CHECKS_S   of which the correctness checks may take (default a third of it)
# Writes RESULTS_DIR/gpu-profile-DATE.json, RESULTS_DIR/gpu-checks-DATE.json and RESULTS_DIR/train-SHAPE-DATE.json;
# exits 1 when a profile stage or a check failed or a benchmark did not finish.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}; shift
budget=${FTC_GPU_BUDGET_S:-480}
profile_only=0
if [[ "${1:-}" == "--profile-only" ]]; then
    profile_only=1
    shift
fi
mkdir -p "$results"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ftc-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/ftc-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import ftc, deepspeed, jsonschema, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
left() { echo $(( budget - SECONDS - 10 )); }
status=0
if (( profile_only )); then
    profile_s=$(( $(left) ))
else
    profile_s=${FTC_GPU_PROFILE_S:-$(( budget * 2 / 5 ))}
fi
if (( profile_s > 0 )); then
    # the profile keeps to its budget itself; the timeout (a minute more) only stops a stage that hangs
    timeout --signal=TERM --kill-after=15 "$(( profile_s + 60 < $(left) ? profile_s + 60 : $(left) ))" \
        python3 bench/gpu_profile.py --json "$results/gpu-profile-$(date +%F).json" --budget-s "$profile_s" || status=1
fi
if (( profile_only )); then
    echo "[gpu_run] done in ${SECONDS} s (budget ${budget} s)"
    exit $status
fi
python3 bench/gpu_checks.py --json "$results/gpu-checks-$(date +%F).json" --budget-s "${FTC_GPU_CHECKS_S:-$(( budget / 3 ))}" || status=1
for shape in "${@:-1b 8b-lora}"; do
    for s in $shape; do
        if (( $(left) < 60 )); then
            echo "[gpu_run] $s: not run, the budget of ${budget} s is spent" >&2
            status=1
            continue
        fi
        timeout --signal=TERM --kill-after=15 "$(left)" \
            python3 bench/train_bench.py --shape "$s" --json "$results/train-$s-$(date +%F).json" || status=1
    done
done
echo "[gpu_run] done in ${SECONDS} s (budget ${budget} s)"
exit $status
