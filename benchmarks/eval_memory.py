"""Peak memory of importance-weighted evaluation against the number of samples K.

``pyrovae.metrics.log_likelihood`` draws particles in chunks of at most ``max_elements``
numbers per tensor and folds each chunk into running log-sum-exps, so its peak memory should
not grow with K once K exceeds one chunk. Each K runs in a fresh process; the figure is the
process's peak resident memory during evaluation (the kernel's high-water mark, reset just
before) minus its resident memory just before.

Prints a table, then ``peak_mb_K<k>:`` lines and ``ratio_5000_500:``.

    python benchmarks/eval_memory.py                  # Burda VAE, 200 MNIST test images
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, {here!r})
from _common import load_data, make_pair
import pyrovae
k, n, spec = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
test = load_data(spec).test.subset(torch.arange(n))
vae, _ = make_pair("burda", test.event_shape)
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
before = status_mb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
t0 = time.perf_counter()
ll = pyrovae.metrics.log_likelihood(vae, test, k)
seconds = time.perf_counter() - t0
peak = status_mb("VmHWM")
print(json.dumps({{"k": k, "before_mb": before, "peak_mb": peak, "seconds": seconds,
                  "nll": -ll.mean().item()}}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="100,500,1000,5000", help="comma-separated K values")
    p.add_argument("--n", type=int, default=200, help="test images scored")
    p.add_argument("--data", default="", help="pyrovae data spec (default: shared MNIST)")
    args = p.parse_args(argv)
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    rows = []
    for k in [int(v) for v in args.ks.split(",")]:
        out = subprocess.run([sys.executable, "-c", CHILD.format(here=here), str(k),
                              str(args.n), args.data], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["eval_mb"] = r["peak_mb"] - r["before_mb"]
        rows.append(r)
    print(f"log_likelihood on {args.n} images, Burda VAE, default chunk (2**22 numbers)")
    print(f"{'K':>6}{'peak MB':>10}{'eval MB':>10}{'seconds':>10}")
    for r in rows:
        print(f"{r['k']:>6}{r['peak_mb']:10.1f}{r['eval_mb']:10.1f}{r['seconds']:10.2f}")
    by_k = {r["k"]: r for r in rows}
    for r in rows:
        print(f"peak_mb_K{r['k']}: {r['eval_mb']:.1f}")
    if 500 in by_k and 5000 in by_k:
        print(f"ratio_5000_500: {by_k[5000]['eval_mb'] / by_k[500]['eval_mb']:.3f}")
    return rows


if __name__ == "__main__":
    main()
