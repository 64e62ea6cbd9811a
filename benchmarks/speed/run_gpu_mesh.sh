#!/usr/bin/env bash
# The mesh benchmark (benchmarks/speed/mesh.py) on a machine with several GPUs, not yet run: each
# mesh shape in its own process on the machine's GPUs, the ML-20M shape and the 10⁶-item catalogue,
# then the mesh path against today's step on one GPU. Run from the repository root:
#     bash benchmarks/speed/run_gpu_mesh.sh OUT_DIR
# MESHES (default: the shapes of 8 GPUs) lists data x model shapes whose product divides the GPU count.
set -uo pipefail
out=${1:?usage: bash benchmarks/speed/run_gpu_mesh.sh OUT_DIR}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for case in ml-20m-shape 1m-items; do
    timeout "${CASE_TIMEOUT:-1800}" $python -m benchmarks.speed.mesh --gpu --cases "$case" \
        --meshes ${MESHES:-1x1 8x1 4x2 2x4 1x8} --out "$out/$case" 2>&1 | tee "$out/$case.log"
done
timeout "${ONE_DEVICE_TIMEOUT:-600}" $python -m benchmarks.speed.mesh --gpu --cases --one-device \
    --out "$out/one-device" 2>&1 | tee "$out/one-device.log"
