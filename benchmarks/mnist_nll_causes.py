"""What moves the test NLL of Burda et al.'s MNIST VAE: one setting changed at a time, each
scored against a baseline paired on the same test bits.

Every run starts from the weights ``pyrovae train --seed S`` builds and trains the plain-PyTorch
twin (:mod:`torch_vae`; the same network and estimator as pyrovae's VAE with Trace_ELBO), or
pyrovae itself (``trainer="fit"`` / ``"cli"``). The baseline is the earlier benchmark's plain
loop: all 60,000 training images, dynamic binarisation, batch 100, Adam (lr 1e-3, eps 1e-4),
encoder scale softplus(raw) + 1e-4, Monte-Carlo KL. A variant changes one thing:

- ``eps_1e-8``: Adam's eps 1e-8 (torch's and the CLI's default);
- ``exp_scale``: encoder scale exp(raw) + 1e-4 (raw a log standard deviation);
- ``analytic_kl``: KL(q || p) in closed form in the training loss (TraceMeanField_ELBO);
- ``train_50k``: the 50,000 images ``pyrovae train`` trains on by default (10,000 held out);
- ``batch_128``: ``pyrovae train``'s default batch size;
- ``cli_defaults``: the last three together (what ``pyrovae train`` does without options,
  in the twin);
- ``other_stream``: the baseline with other data-order, binarisation and z streams (same
  initial weights): the spread of the paired difference from training noise alone;
- ``fit``: the baseline's settings through ``pyrovae.fit``;
- ``cli``: ``pyrovae.run.train_run`` with its defaults (batch 128, Adam eps 1e-8, 10,000 images
  held out and validated on after every epoch), as ``pyrovae train --seed S`` runs it;
- ``cli_100``: ``train_run`` with the baseline's batch and eps (still validating), against
  ``train_50k`` (the twin on the same 50,000 images): what is left once the settings agree;
- ``cli_meanfield``: ``cli`` with ``loss="meanfield_elbo"`` (analytic KL, ``pyrovae train --loss
  meanfield_elbo``), against ``cli``.

Test bits: the 10,000 test images binarised once with data seed 0 (``pyrovae train``'s),
scored by the twin's L_K with common random numbers. Per (variant, seed) the per-image NLL goes
to ``--save``; ``--report`` prints, per variant, the mean NLL and the paired difference to the
baseline of the same seed: its mean over seeds and images, the standard error over images
(pooled over seeds) and the standard deviation of the per-seed means (training noise).

    python benchmarks/mnist_nll_causes.py --epochs 10 --seeds 0 1 2 --save runs/causes
    python benchmarks/mnist_nll_causes.py --report --save runs/causes
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from mnist_nll import data_spec, initial_vae, load_average, load_splits, score
from torch_vae import TorchVAE, train_epoch

import pyrovae
import pyrovae.run
import pyrovae.run_folder

BASE = dict(trainer="torch", eps=1e-4, scale="softplus", analytic_kl=False, valid_size=0,
            batch_size=100, stream=0, ref="base", loss="trace_elbo")
VARIANTS = {
    "base": {},
    "eps_1e-8": dict(eps=1e-8),
    "exp_scale": dict(scale="exp"),
    "analytic_kl": dict(analytic_kl=True),
    "train_50k": dict(valid_size=10000),
    "batch_128": dict(batch_size=128),
    "cli_defaults": dict(valid_size=10000, batch_size=128, eps=1e-8),
    "other_stream": dict(stream=1000),
    "fit": dict(trainer="fit"),
    "cli": dict(trainer="cli", valid_size=10000, batch_size=128, eps=1e-8, ref="cli_defaults"),
    "cli_100": dict(trainer="cli", valid_size=10000, ref="train_50k"),
    "cli_meanfield": dict(trainer="cli", valid_size=10000, batch_size=128, eps=1e-8,
                          loss="meanfield_elbo", ref="cli"),
}


def run_one(name: str, seed: int, args) -> np.ndarray:
    v = {**BASE, **VARIANTS[name]}
    spec = data_spec(args.data)
    _, splits = load_splits(spec, 0, v["valid_size"])
    train = splits.train
    init = initial_vae(train.event_shape, seed, v["scale"])
    stream = seed + v["stream"]
    adam = {"betas": (0.9, 0.999), "eps": v["eps"]}
    if v["trainer"] == "torch":
        ref = TorchVAE.like(init, analytic_kl=v["analytic_kl"])
        torch.manual_seed(stream)
        opt = torch.optim.Adam(ref.parameters(), lr=1e-3, **adam)
        g = torch.Generator().manual_seed(stream)
        for _ in range(args.epochs):
            train_epoch(ref, opt, train.x, v["batch_size"], g)
        model = ref
    elif v["trainer"] == "fit":
        loss = pyro.infer.TraceMeanField_ELBO() if v["analytic_kl"] else pyro.infer.Trace_ELBO()
        pyrovae.fit(init, train, loss, epochs=args.epochs, batch_size=v["batch_size"],
                    optimizer="adam", lr=1e-3, optimizer_args=adam, seed=stream,
                    progress=False)
        model = init
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            pyrovae.run.train_run(out, data=spec, seed=stream, epochs=args.epochs,
                                  num_samples=1, figures=False, inference_data=False,
                                  model_config={"scale": v["scale"]}, loss=v["loss"],
                                  valid_size=v["valid_size"], batch_size=v["batch_size"],
                                  optimizer_args={"eps": v["eps"]})
            model = pyrovae.run_folder.load_run(out)[0]
    x_test = splits.test.x[:args.test_size]
    return (-score(model, x_test, args.num_samples, 0)).numpy()


def report(folder: Path) -> dict:
    """Per variant: mean NLL, and the paired difference to its reference (``base`` unless
    the variant names another) of the same seed."""
    files = sorted(folder.glob("*__seed*.npy"))
    nll = {}
    for f in files:
        name, seed = f.stem.rsplit("__seed", 1)
        nll.setdefault(name, {})[int(seed)] = np.load(f)
    print(f"{'variant':14}{'against':>13}{'seeds':>6}{'NLL':>9}{'diff':>8}{'se(img)':>9}"
          f"{'sd(seeds)':>10}")
    out = {}
    for name in [n for n in VARIANTS if n in nll]:
        by_seed = nll[name]
        ref = {**BASE, **VARIANTS[name]}["ref"]
        base = nll.get(ref, {})
        seeds = sorted(s for s in by_seed if s in base)
        mean_nll = float(np.mean([by_seed[s].mean() for s in by_seed]))
        if name == ref or not seeds:
            print(f"{name:14}{'':13}{len(by_seed):6}{mean_nll:9.3f}")
            out[name] = {"nll": mean_nll}
            continue
        d = np.stack([by_seed[s] - base[s] for s in seeds])  # (seeds, images)
        per_seed = d.mean(1)
        se_img = math.sqrt(sum(x.var(ddof=1) / len(x) for x in d)) / len(seeds)
        sd = float(per_seed.std(ddof=1)) if len(seeds) > 1 else math.nan
        print(f"{name:14}{ref:>13}{len(seeds):6}{mean_nll:9.3f}{d.mean():8.3f}{se_img:9.3f}"
              f"{sd:10.3f}"
              f"   per seed: " + " ".join(f"{x:+.3f}" for x in per_seed))
        out[name] = {"nll": mean_nll, "against": ref, "diff": float(d.mean()), "se": se_img,
                     "sd_seeds": sd, "per_seed": per_seed.tolist()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None)
    p.add_argument("--save", required=True, help="folder of per-image NLL files")
    p.add_argument("--report", action="store_true", help="only report what --save holds")
    args = p.parse_args(argv)
    folder = Path(args.save)
    if not args.report:
        torch.set_num_threads(args.threads)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for name in args.variants:
                path = folder / f"{name}__seed{seed}.npy"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                nll = run_one(name, seed, args)
                np.save(path, nll)
                print(f"{name} seed {seed}: NLL {nll.mean():.3f} ({time.perf_counter() - t0:.0f}"
                      f" s, load {load_average()})", flush=True)
    return report(folder)


if __name__ == "__main__":
    main()
