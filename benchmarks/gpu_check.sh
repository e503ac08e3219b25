#!/usr/bin/env bash
# The GPU checks a session lent an H100/H200 runs as ONE command, inside 9 minutes:
#
#   1. the CUDA-marked tests (pytest -m cuda);
#   2. step ratios on the device: eager, traced and compiled pyrovae against eager and compiled
#      plain PyTorch (benchmarks/step_overhead.py), then with CUDA graphs, then in bf16;
#   3. benchmarks/mnist_likelihood.py at a budget that fits (VAE, Ladder VAE, NVAE).
#
# Every section's output goes to OUTDIR (default $OUT/gpu_check on the device machine, else
# runs/gpu_check); OUTDIR/summary.txt collects the `name: value` figures and each section's
# exit status. A section that fails or runs past its time is recorded and the next one runs.
#
#   bash benchmarks/gpu_check.sh                       # on the lent GPU (python3 with torch)
#   bash benchmarks/gpu_check.sh --device cpu --smoke  # the same script at toy size, on a CPU
#
# The device machine has torch but not pyro-ppl, arviz & co.: wheels in .whl/ (ignored by git,
# carried) are installed into /tmp/site first; MNIST is read from .gpu_data/mnist.npz when
# present (carried), else ../shared/data/mnist.npz. Sections' time limits add up to 9 minutes;
# their outputs are seven files (what the device tool brings back: at most eight).
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda
smoke=0
outdir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --out) outdir="$2"; shift 2 ;;
        *) echo "gpu_check: unknown argument $1 (expected --device cpu|cuda, --smoke, --out DIR)" >&2
           exit 2 ;;
    esac
done
case "$device" in cpu|cuda) ;; *) echo "gpu_check: --device: expected cpu or cuda, got $device" >&2; exit 2 ;; esac
outdir=${outdir:-${OUT:+$OUT/gpu_check}}
outdir=${outdir:-runs/gpu_check}
mkdir -p "$outdir"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if ! "$py" -c "import pyro, arviz" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$smoke" = 1 ]; then
    data=(--data digits)
elif [ -f .gpu_data/mnist.npz ]; then
    data=(--data "mnist:$PWD/.gpu_data/mnist.npz")
else
    data=()  # the benchmarks' default: ../shared/data/mnist.npz
fi

summary="$outdir/summary.txt"
: > "$summary"
section() {  # section NAME SECONDS COMMAND...: run it, keep its output, record its status
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$outdir/$name.txt" 2>&1
    local rc=$?
    echo "section_$name: rc=$rc seconds=$((SECONDS - t0))" | tee -a "$summary"
    grep -E '^[A-Za-z][A-Za-z0-9_]*: -?[0-9.]+(e[-+]?[0-9]+)?$' "$outdir/$name.txt" >> "$summary"
}

section environment 60 "$py" -c "
import platform, torch, pyro, pyrovae
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pyro', pyro.__version__,
      'python', platform.python_version())
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')
print('cuda_available:', int(torch.cuda.is_available()))"

if [ "$smoke" = 1 ]; then
    section tests 120 "$py" -m pytest -q -p no:cacheprovider -m cuda tests/train/test_train.py
    step=(--steps 3 --repeats 1 --batch-size 16 --no-compile)
    lik=(--models vae --budget-seconds 20 --max-steps 5 --batch-size 32 --num-samples 10
         --test-size 40 --threads 1)
else
    section tests 90 "$py" -m pytest -q -p no:cacheprovider -m cuda tests
    step=(--steps 100 --repeats 7)
    lik=(--models vae ladder nvae --budget-seconds 40 --test-size 2000 --num-samples 1000)
fi
cases=(--cases "mlp_$device" "conv_$device")
section step 180 "$py" benchmarks/step_overhead.py "${cases[@]}" "${step[@]}" "${data[@]}"
if [ "$device" = cuda ]; then
    section step_cudagraphs 120 "$py" benchmarks/step_overhead.py "${cases[@]}" "${step[@]}" \
        --cudagraphs "${data[@]}"
fi
section step_bf16 60 "$py" benchmarks/step_overhead.py "${cases[@]}" "${step[@]}" --no-compile \
    --precision bf16 "${data[@]}"
section likelihood 170 "$py" benchmarks/mnist_likelihood.py --device "$device" "${lik[@]}" \
    "${data[@]}"

echo "--- $summary"
cat "$summary"
! grep -q 'rc=[1-9]' "$summary"
