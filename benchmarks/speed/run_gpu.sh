#!/usr/bin/env bash
# The GPU benchmark in one command, sized for a short lease: the step's small operations in their
# alternative forms (op_forms), a per-operation profile of the bf16 step with its optimised HLO,
# then the side-by-side run at the ML-20M shape (5 full epochs per variant). Run from the
# repository root:
#     bash benchmarks/speed/run_gpu.sh OUT_DIR
# VARIANTS (default: the `gpu` set) names the bench's variants; *_TIMEOUT bound each part.
set -uo pipefail
out=${1:?usage: bash benchmarks/speed/run_gpu.sh OUT_DIR}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# JAX would take 75% of the card up front; torch variants run in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$python -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$out/gpu.txt"

timeout "${OPS_TIMEOUT:-90}" $python -m benchmarks.speed.op_forms --out "$out" 2>&1

timeout "${PROFILE_TIMEOUT:-120}" $python -m benchmarks.speed.profile_step --device gpu --variant jax-bf16 --top 40 \
    --hlo-out "$out/step_hlo.txt" 2>&1 | tee "$out/profile.txt"
gzip -f "$out/step_hlo.txt"

timeout "${BENCH_TIMEOUT:-420}" $python -m benchmarks.speed --device gpu --shapes ml-20m-shape --batch-rows 1024 \
    --variants ${VARIANTS:-gpu} --epochs 5 --no-memory --out "$out" 2>&1 | tee "$out/bench.log"
