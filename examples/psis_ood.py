"""Out-of-distribution inputs flagged by the per-data-point Pareto k-hat of an amortised guide.

A VAE is trained on some digit classes only; its encoder q(z | x) has then never seen the other
classes. For each held-out test image, S guide draws give log importance weights
log p(x, z) - log q(z | x), and a generalised Pareto fit to their largest values gives k-hat
(Vehtari et al. 2024, through ArviZ's psislw). Where the encoder misplaces or under-disperses
q(z | x) for an unfamiliar input, the weights grow a heavy tail and k-hat rises. The script
reports the k-hat distributions of trained and held-out classes and the AUROC of k-hat as a
detector (held-out = positive), beside the AUROC of -log p(x) for reference.

    python examples/psis_ood.py --data mnist:../shared/data/mnist.npz          # 0-4 vs 5-9
    python examples/psis_ood.py --data digits --epochs 30                       # embedded 8x8
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import pyrovae
from pyrovae import VAE, VAEConfig, analysis
from pyrovae.analysis.psis import summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True,
                   help="mnist:PATH (IDX folder or npz) or digits (embedded 8x8, no download)")
    p.add_argument("--train-classes", default="0,1,2,3,4",
                   help="comma-separated labels to train on; the others are held out")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=50, help="50: Burda et al.'s VAE")
    p.add_argument("--hidden", default="200,200", help="MLP widths, comma-separated")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on the first N images of the trained classes only")
    p.add_argument("--test-size", type=int, default=1000,
                   help="test images scored per group (trained classes, held-out classes)")
    p.add_argument("--num-samples", type=int, default=1000, help="guide draws S per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/psis_ood", help="folder for figures and results")
    return p.parse_args(argv)


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC (Hanley and McNeil 1982, eq. 2)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2))
    return math.sqrt(max(var, 0.0) / (n_pos * n_neg))


def _finite(k: np.ndarray) -> np.ndarray:
    """k-hat with -inf (weights constant to rounding: a perfect fit) ranked below all others."""
    lo = np.min(k[np.isfinite(k)], initial=0.0) - 1.0
    return np.where(np.isneginf(k), lo, k)


def main(argv=None) -> dict:
    from sklearn.metrics import roc_auc_score

    args = parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("pyrovae").setLevel(logging.INFO)  # ours only: ArviZ's INFO stays quiet
    try:
        trained = sorted({int(c) for c in args.train_classes.split(",")})
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        raise SystemExit(f"--train-classes/--hidden: expected comma-separated integers, got "
                         f"{args.train_classes!r}/{args.hidden!r}") from None
    splits = pyrovae.data.load(args.data, binarize="dynamic", seed=args.seed, valid_size=0)
    train, test = splits.train, splits.test
    if train.y is None:
        raise SystemExit(f"--data: {args.data} has no labels; the demonstration needs classes")
    known = torch.as_tensor(trained)
    train = train.subset(torch.nonzero(torch.isin(train.y, known)).flatten())
    if args.train_size:
        train = train.subset(torch.arange(min(args.train_size, len(train))))
    is_known = torch.isin(test.y, known)
    test_in = test.subset(torch.nonzero(is_known).flatten()[:args.test_size])
    test_out = test.subset(torch.nonzero(~is_known).flatten()[:args.test_size])
    if len(test_out) == 0:
        raise SystemExit(f"--train-classes: every test label is in {trained}; hold some out")

    torch.manual_seed(args.seed)
    vae = VAE(VAEConfig(input_shape=train.event_shape, latent_dim=args.latent_dim,
                        hidden=hidden, activation="tanh", likelihood="bernoulli"))
    t0 = time.perf_counter()
    pyrovae.fit(vae, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                optimizer_args={"eps": 1e-4}, device=args.device, seed=args.seed)
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    res_in = analysis.psis_diagnostics(vae, test_in, args.num_samples, seed=args.seed)
    res_out = analysis.psis_diagnostics(vae, test_out, args.num_samples, seed=args.seed + 1)
    score_seconds = time.perf_counter() - t0
    k_in, k_out = res_in["khat"].values, res_out["khat"].values
    labels = np.r_[np.zeros(len(k_in)), np.ones(len(k_out))]
    auc = float(roc_auc_score(labels, _finite(np.r_[k_in, k_out])))
    nll = -np.r_[res_in["log_px_psis"].values, res_out["log_px_psis"].values]
    auc_nll = float(roc_auc_score(labels, nll))
    recon = np.r_[res_in["recon"].values, res_out["recon"].values]
    auc_recon = float(roc_auc_score(labels, recon))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = sorted(set(test.y.tolist()) - set(trained))
    analysis.plot_khat_distributions(
        {f"trained classes {trained}": res_in, f"held-out classes {held}": res_out},
        out / "khat_by_group.png", title=f"k-hat per test image (AUROC {auc:.3f})")
    both = xr.concat([res_in, res_out.assign_coords(
        obs=res_out.obs + len(res_in))], dim="obs")
    x_both = torch.cat([test_in.x, test_out.x])
    analysis.plot_worst_inputs(both, x_both, out / "worst_khat.png")
    analysis.plot_khat_vs_recon(both, out / "khat_recon.png")

    s_in, s_out = summary(res_in), summary(res_out)
    result = {
        "data": args.data, "train_classes": trained, "held_out_classes": held,
        "n_train": len(train), "n_in": len(k_in), "n_out": len(k_out),
        "epochs": args.epochs, "latent_dim": args.latent_dim, "num_samples": args.num_samples,
        "train_seconds": train_seconds, "score_seconds": score_seconds,
        "auroc_khat": auc, "auroc_khat_se": auroc_se(auc, len(k_out), len(k_in)),
        "auroc_nll": auc_nll, "auroc_recon": auc_recon,
        "khat_median_in": s_in["khat_median"], "khat_median_out": s_out["khat_median"],
        "frac_khat_gt_0.7_in": s_in["frac_khat_gt_0.7"],
        "frac_khat_gt_0.7_out": s_out["frac_khat_gt_0.7"],
        "log_px_in": s_in["log_px_psis_mean"], "log_px_out": s_out["log_px_psis_mean"],
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures and results in {out}")
    for key in ("n_in", "n_out", "num_samples", "khat_median_in", "khat_median_out",
                "frac_khat_gt_0.7_in", "frac_khat_gt_0.7_out", "auroc_khat", "auroc_khat_se",
                "auroc_nll", "auroc_recon"):
        v = result[key]
        print(f"{key}: {v:.4f}" if isinstance(v, float) else f"{key}: {v}")
    return {**result, "khat_in": k_in, "khat_out": k_out}


if __name__ == "__main__":
    main()
