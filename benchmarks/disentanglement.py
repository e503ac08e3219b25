"""Disentanglement on procedural dSprites: VAE, β-VAE, β-TCVAE and capacity-annealed β-VAE.

Each model trains from the same data with the same network for the same number of steps, for
each seed; then the representation (posterior means and scales of a fixed set of fresh
images) is scored by MIG (Chen et al.'s estimator and the histogram variant), the FactorVAE
score, active units and the KL per dimension. A table of every run comes first, then the
medians over seeds, then ``mig_<model>: median`` lines.

    python benchmarks/disentanglement.py                      # the recorded configuration
    python benchmarks/disentanglement.py --models tcvae --seeds 0 --steps 2000

The defaults are sized for a shared 2-core CPU (about 40 minutes for 4 models x 3 seeds with
``--jobs 2``, one torch thread each): 30,000 training images, an MLP 4096-256-256 with a 10-d
code (decoder mirrored, ReLU, Bernoulli pixels), 3,000 steps of 128 with Adam at 1e-3. Papers
train far longer (Chen et al. 2018 use a 1200-wide MLP and batches of 2048); see
benchmarks/RESULTS.md for what this budget reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ("vae", "beta", "tcvae", "capacity")
LABELS = {"vae": "VAE", "beta": "β-VAE (β=4)", "tcvae": "β-TCVAE (β=6, MSS)",
          "capacity": "capacity β-VAE (γ=1000)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=30000, help="training images (random subset)")
    p.add_argument("--eval-n", type=int, default=5000, help="fresh images the scores use")
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--beta", type=float, default=4.0, help="β of β-VAE")
    p.add_argument("--tc-beta", type=float, default=6.0, help="β of β-TCVAE")
    p.add_argument("--capacity", type=float, default=25.0, help="C_max (nats)")
    p.add_argument("--gamma", type=float, default=1000.0, help="γ of capacity β-VAE")
    p.add_argument("--factor-vae-votes", type=int, default=300,
                   help="votes to train and to evaluate the FactorVAE classifier (0: skip)")
    p.add_argument("--factor-vae-variance", type=int, default=5000,
                   help="images for the code's global standard deviations")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--out", default=None, help="folder for figures and a JSON of the runs")
    return p.parse_args(argv)


def make_loss(name: str, args, n_train: int):
    import pyro

    from pyrovae.infer import Beta, TraceCapacity_ELBO, TraceTC_ELBO

    if name == "vae":
        return pyro.infer.Trace_ELBO(), []
    if name == "beta":
        return pyro.infer.Trace_ELBO(), [Beta(args.beta)]
    if name == "tcvae":
        return TraceTC_ELBO(1.0, args.tc_beta, 1.0, estimator="mss", dataset_size=n_train), []
    if name == "capacity":
        return TraceCapacity_ELBO(args.capacity, args.gamma, args.steps), []
    raise ValueError(f"model: expected one of {MODELS}, got {name!r}")


def run_one(job: dict) -> dict:
    """Trains one model with one seed and scores it; ``job`` holds plain values only (it
    crosses a process boundary)."""
    torch.set_num_threads(job["threads"])
    import pyrovae
    from pyrovae import metrics
    from pyrovae.data import DSprites

    args = argparse.Namespace(**job["args"])
    data = np.load(job["data"], mmap_mode="r")
    x = torch.from_numpy(np.unpackbits(data["train"], axis=1)[:, :4096].astype(np.float32))
    x = x.reshape(-1, 1, 64, 64)
    x_eval = torch.from_numpy(
        np.unpackbits(data["eval"], axis=1)[:, :4096].astype(np.float32)).reshape(-1, 1, 64, 64)
    f_eval = torch.from_numpy(np.asarray(data["eval_factors"]))
    cfg = pyrovae.VAEConfig(input_shape=(1, 64, 64), latent_dim=args.latent_dim,
                            hidden=tuple(args.hidden), activation="relu", network="mlp")
    torch.manual_seed(job["seed"])
    vae = pyrovae.VAE(cfg)
    loss, callbacks = make_loss(job["model"], args, len(x))
    t0, c0 = time.perf_counter(), time.process_time()
    history = pyrovae.fit(vae, x, loss, steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, seed=job["seed"], callbacks=callbacks, progress=False,
                          log_every=max(args.steps // 20, 1))
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    mom = metrics.posterior_moments(vae, x_eval, batch_size=500)
    mig = metrics.mig(mom["loc"], mom["scale"], f_eval, num_samples=len(x_eval))
    mig_h = metrics.mig_histogram(mom["loc"], f_eval)
    kl = metrics.per_dimension_kl(vae, x_eval, batch_size=500).mean(0)
    au = metrics.active_units(mom["loc"])
    from pyrovae.metrics.likelihood import elbo as elbo_fn

    elbo = float(elbo_fn(vae, x_eval[:1000], num_samples=1).mean())
    fv = math.nan
    if args.factor_vae_votes:
        fv = metrics.factor_vae_score(metrics.posterior_mean_fn(vae, batch_size=500), DSprites(),
                                      num_train=args.factor_vae_votes,
                                      num_eval=args.factor_vae_votes,
                                      num_variance=args.factor_vae_variance,
                                      seed=job["seed"])["score"]
    eval_s = time.perf_counter() - t0
    last = [r for r in history.steps if "recon" in r][-3:]
    out = {"model": job["model"], "seed": job["seed"], "mig": mig["mig"],
           "mig_histogram": mig_h["mig"], "factor_vae": fv, "active_units": au["count"],
           "kl": float(kl.sum()), "kl_per_dim": kl.tolist(),
           "recon": statistics.fmean(r["recon"] for r in last) if last else math.nan,
           "elbo": elbo, "mig_per_factor": mig["per_factor"].tolist(),
           "normalized_mi": mig["normalized_mi"].tolist(), "train_seconds": train_s,
           "train_cpu_seconds": train_cpu,
           "eval_seconds": eval_s}
    if job.get("out"):
        from pyrovae import analysis

        out_dir = Path(job["out"])
        stem = f"{job['model']}_seed{job['seed']}"
        analysis.plot_mi_matrix(mig["normalized_mi"], out_dir / f"{stem}_mig.png",
                                factor_names=DSprites.factor_names,
                                title=f"{LABELS[job['model']]}, MIG {mig['mig']:.3f}")
        analysis.plot_kl_per_dimension(kl, out_dir / f"{stem}_kl.png")
        analysis.plot_traversals(vae, {"x": x_eval[:1]}, out_dir / f"{stem}_traversals.png",
                                 values=torch.linspace(-2.5, 2.5, 9))
    return out


def prepare_data(args, folder: Path) -> Path:
    """Renders the training subset and the evaluation images once, bit-packed, for workers."""
    from pyrovae.data import DSprites

    ds = DSprites()
    x, _ = ds.subset(args.n, seed=1234)
    f_eval = ds.sample_factors(args.eval_n, torch.Generator().manual_seed(4321))
    x_eval = ds.images(f_eval)
    pack = lambda a: np.packbits(a.reshape(len(a), -1).numpy().astype(np.uint8), axis=1)  # noqa: E731
    path = folder / "dsprites.npz"
    np.savez(path, train=pack(x), eval=pack(x_eval), eval_factors=f_eval.numpy())
    return path


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_all = time.perf_counter()
    print(f"procedural dSprites: {args.n} training images, {args.eval_n} evaluation images; "
          f"MLP 4096-{'-'.join(map(str, args.hidden))}-{args.latent_dim}, {args.steps} steps of "
          f"{args.batch_size}, lr {args.lr}; {args.jobs} job(s) x {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(args, Path(tmp))
        jobs = [{"model": m, "seed": s, "args": vars(args), "data": str(data),
                 "threads": args.threads, "out": args.out}
                for s in args.seeds for m in args.models]
        if args.jobs > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
                runs = list(pool.map(run_one, jobs))
        else:
            runs = [run_one(j) for j in jobs]
    print()
    print("| model | seed | MIG | MIG (hist.) | FactorVAE | active units | KL (nats) | "
          "recon (nats) | train s | train CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {LABELS[r['model']]} | {r['seed']} | {r['mig']:.3f} | {r['mig_histogram']:.3f} "
              f"| {r['factor_vae']:.3f} | {r['active_units']} | {r['kl']:.1f} | "
              f"{r['recon']:.1f} | {r['train_seconds']:.0f} | {r['train_cpu_seconds']:.0f} |")
    print()
    print("| model | median MIG | median MIG (hist.) | median FactorVAE | median KL |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for m in args.models:
        rs = [r for r in runs if r["model"] == m]
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("mig", "mig_histogram", "factor_vae", "kl")}
        medians[m] = med
        print(f"| {LABELS[m]} | {med['mig']:.3f} | {med['mig_histogram']:.3f} | "
              f"{med['factor_vae']:.3f} | {med['kl']:.1f} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        Path(args.out, "runs.json").write_text(json.dumps(runs, indent=1))
    print()
    print(f"total_seconds: {time.perf_counter() - t_all:.0f}")
    for m in args.models:
        print(f"mig_{m}: {medians[m]['mig']:.4f}")
    return {"runs": runs, "medians": medians}


if __name__ == "__main__":
    main()
