#!/usr/bin/env bash
# Fetches, on this machine (which reaches the package registries), the wheels the lent GPU
# machine lacks for benchmarks/gpu_check.sh: its image has torch, numpy, scipy, scikit-learn,
# matplotlib, pandas, xarray, h5py, tqdm and pytest, but not pyro-ppl, arviz and theirs. All
# are pure-Python wheels. They go to .whl/ (kept out of git by .git/info/exclude) and travel
# with `carry=[".whl", ".gpu_data"]`; .gpu_data/mnist.npz is a copy of the shared MNIST.
#
#   bash benchmarks/gpu_wheels.sh && run(command="bash benchmarks/gpu_check.sh",
#       carry=[".whl", ".gpu_data"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
py=${PYTHON:-python3}
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --platform any -d .whl \
    "pyro-ppl==1.9.*" "pyro-api>=0.1.1" "arviz>=0.17,<1" "xarray-einstats>=0.3" "h5netcdf>=1.0" \
    "opt_einsum>=2.3.2"
mkdir -p .gpu_data
mnist=${PYROVAE_MNIST:-../shared/data/mnist.npz}
[ -f "$mnist" ] && cp "$mnist" .gpu_data/mnist.npz
ls -la .whl .gpu_data
