#!/usr/bin/env bash
# The device tool's command for the GPU suite: install the carried wheels, build the native
# extension if the machine can, run benchmarks/gpu_suite.py inside what is left of 10 minutes.
#
# Here, once (the wheels folder is ignored by .gitignore, so it travels only when carried):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d wheels -r benchmarks/gpu_wheels.txt          # ~2.7 MB: liger-kernel, cut-cross-entropy, trl, ...
# Then the device tool's run, with carry ["wheels"] and timeout_s 600:
#   bash benchmarks/gpu_suite.sh
# Environment: OUT (the tool sets it), NATIVE=0 to skip the native build, SUITE_ARGS for the suite
# (e.g. SUITE_ARGS="--only ceilings logprobs").
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT="${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1

# One wheel at a time: a wheel that does not fit this Python (e.g. multiprocess's py312 build on
# another version) is reported and the others still go in; the stages that need it record it.
for wheel in wheels/*.whl; do
  [ -e "$wheel" ] || break
  python3 -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheel" \
    || echo "gpu_suite.sh: could not install $wheel"
done
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
# DALI (nvidia-dali-cuda130, ~199 MB) is above one call's 64 MiB carry: the suite's decode stage
# measures torchcodec (NVDEC) and PyAV; the DALI path stays untested (see README).

if [ "${NATIVE:-1}" != "0" ]; then  # tempo_fast._C with its CUDA kernels (sm_90a); optional
  timeout 120 env TEMPO_FAST_NATIVE=1 python3 setup.py -q build_ext --inplace >"$OUT/native_build.log" 2>&1 \
    || echo "gpu_suite.sh: native build failed or timed out (see native_build.log); the suite runs without it"
fi

BUDGET=$(( 585 - (SECONDS - START) ))
python3 -m benchmarks.gpu_suite --out "$OUT" --budget "$BUDGET" ${SUITE_ARGS:-}
