"""Test NLL on dynamically binarised MNIST of one- and multi-layer VAEs at equal wall time.

Trains each model for ``--budget-seconds`` of wall time (Adam at the model's learning rate in
``LR``, batch 100, all 60,000 training images re-binarised every batch), then scores the test
images (binarised once) by the importance-weighted bound L_K (K = 1000, 5000 with ``--full``;
``--nvae-num-samples`` lowers it for the slow NVAE: a smaller K only loosens its bound).
The printed NLL is -L_K in nats, beside the papers' figures, which come from days of training:

- ``vae``: Burda et al. (2016) 784-200-200-50 tanh VAE, Trace_ELBO (paper: 86.76);
- ``vae_bn``: the same VAE with leaky ReLU and batch norm, the treatment the hierarchies get
  (a stronger one-layer baseline; no paper figure);
- ``iwae``: Burda et al.'s tanh network trained with the IWAE bound, k = 50 (paper: 84.78);
- ``two_layer``: Burda et al.'s two-stochastic-layer shape (z 100 and 50) with leaky ReLU,
  batch norm and the Ladder VAE's KL warm-up, Trace_ELBO (paper, tanh, as an IWAE with
  k = 50: 82.90; with tanh and no batch norm it trains far slower here);
- ``ladder``: Ladder VAE, five stochastic layers 64-32-16-8-4, batch norm, KL warm-up
  (Sønderby et al. 2016: 81.74);
- ``nvae``: a small NVAE (two latent scales, 14x14 and 7x7), TraceNVAE_ELBO with spectral
  regularisation and KL balancing during warm-up (Vahdat and Kautz 2020: 78.01).

Prints a table, then ``nll_<model>:``, ``nll_se_<model>:``, ``train_s_<model>:``,
``steps_<model>:`` lines. With ``--save-nll DIR`` each model's per-image NLLs go to
``DIR/<model>.pt`` and every model found there is compared with the one-layer VAEs on the
same test images: ``diff_<model>_<vae>:`` (mean NLL difference, negative = better) and
``diff_se_<model>_<vae>:`` (its paired standard error), so runs split over processes pair up.

    python benchmarks/mnist_likelihood.py --budget-seconds 300 --test-size 1000
    python benchmarks/mnist_likelihood.py --device cuda --budget-seconds 100 --full
"""

from __future__ import annotations

import argparse
import os
import time

import pyro
import torch
from _common import environment, load_data, warm_up

import pyrovae

PAPER = {"vae": 86.76, "vae_bn": None, "iwae": 84.78, "two_layer": 82.90, "ladder": 81.74,
         "nvae": 78.01}
MODELS = tuple(PAPER)
# Adam learning rate per model: the best of 1e-3, 3e-3, 1e-2 after a 60 s pilot run of each
# (benchmarks/RESULTS.md); the NVAE paper trains at 1e-2
LR = {"vae": 3e-3, "vae_bn": 3e-3, "iwae": 3e-3, "two_layer": 3e-3, "ladder": 3e-3,
      "nvae": 1e-2}


class Budget(pyrovae.Callback):
    """Stops training once ``seconds`` of wall time have passed since the first step (or
    after ``max_steps`` steps)."""

    def __init__(self, seconds: float, max_steps: int | None = None):
        self.seconds, self.max_steps, self.t0, self.steps = seconds, max_steps, None, 0

    def on_train_start(self, state):
        self.t0 = time.perf_counter()

    def on_step_end(self, state):
        self.steps = state.step
        if time.perf_counter() - self.t0 >= self.seconds or \
                (self.max_steps is not None and self.steps >= self.max_steps):
            state.stop = True


def build(name: str, input_shape, warmup: int, nvae_warmup: int):
    """(model, loss) for one row of the table."""
    burda = dict(input_shape=input_shape, latent_dim=50, hidden=(200, 200), activation="tanh")
    if name == "vae":
        return pyrovae.VAE(**burda), pyro.infer.Trace_ELBO()
    if name == "vae_bn":
        return pyrovae.VAE(**{**burda, "activation": "leaky_relu"}, batch_norm=True), \
            pyro.infer.Trace_ELBO()
    if name == "iwae":
        return pyrovae.VAE(**burda), pyrovae.infer.make_loss("iwae", num_particles=50,
                                                             vectorize_particles=True)
    if name == "two_layer":
        return (pyrovae.TwoLayerVAE(input_shape=input_shape, activation="leaky_relu",
                                    batch_norm=True),
                pyrovae.infer.make_loss("warmup_elbo", steps=warmup, start=0.0))
    if name == "ladder":
        return pyrovae.LadderVAE(input_shape=input_shape), pyrovae.infer.make_loss(
            "warmup_elbo", steps=warmup, start=0.0)
    if name == "nvae":
        return (pyrovae.NVAE(input_shape=input_shape, channels=8, groups_per_scale=2,
                             latent_channels=4),
                pyrovae.infer.TraceNVAE_ELBO(reg_coeff=1e-2, warmup_steps=nvae_warmup))
    raise ValueError(f"model: expected one of {MODELS}, got {name!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--budget-seconds", type=float, default=300.0,
                   help="training wall time per model")
    p.add_argument("--max-steps", type=int, default=None,
                   help="also stop after this many steps (smoke tests)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None,
                   help="one learning rate for every model (default: each model's in LR)")
    p.add_argument("--warmup-steps", type=int, default=500,
                   help="KL warm-up steps of the two-layer VAE and the Ladder VAE")
    p.add_argument("--nvae-warmup-steps", type=int, default=100,
                   help="KL warm-up (and balancing) steps of the NVAE, whose steps are slow")
    p.add_argument("--full", action="store_true", help="K = 5000 and the whole test set")
    p.add_argument("--num-samples", type=int, default=None, help="K of L_K (default 1000)")
    p.add_argument("--nvae-num-samples", type=int, default=None,
                   help="K for the NVAE (default: --num-samples)")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-nll", default=None, metavar="DIR",
                   help="keep per-image NLLs in DIR and print paired differences to the VAEs")
    args = p.parse_args(argv)
    if args.budget_seconds <= 0:
        p.error(f"--budget-seconds: expected > 0, got {args.budget_seconds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.save_nll:
        os.makedirs(args.save_nll, exist_ok=True)
    k = args.num_samples or (5000 if args.full else 1000)
    k_nvae = args.nvae_num_samples or k

    warm_up()
    splits = load_data(args.data, seed=args.seed)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(args.train_size))
    if args.test_size and not args.full:
        test = test.subset(torch.arange(min(args.test_size, len(test))))
    shape = tuple(train.event_shape)

    rows = {}
    for name in args.models:
        pyro.clear_param_store()
        torch.manual_seed(args.seed)
        model, loss = build(name, shape, args.warmup_steps, args.nvae_warmup_steps)
        budget = Budget(args.budget_seconds, args.max_steps)
        lr = args.lr or LR[name]
        t0 = time.perf_counter()
        pyrovae.fit(model, train, loss, epochs=10**6, batch_size=args.batch_size, lr=lr,
                    optimizer_args={"eps": 1e-4}, device=args.device, seed=args.seed,
                    callbacks=[budget], progress=False, log_every=10**9)
        train_s = time.perf_counter() - t0
        kk = k_nvae if name == "nvae" else k
        t0 = time.perf_counter()
        ll = pyrovae.metrics.log_likelihood(model, test, kk, seed=args.seed,
                                            device=args.device)
        eval_s = time.perf_counter() - t0
        s = pyrovae.metrics.summary(-ll)
        if args.save_nll:
            torch.save({"nll": -ll.detach().cpu(), "seed": args.seed, "test_size": len(test)},
                       os.path.join(args.save_nll, f"{name}.pt"))
        rows[name] = dict(nll=s["mean"], se=s["se"], k=kk, steps=budget.steps, lr=lr,
                          train_s=train_s, eval_s=eval_s)
        print(f"[{name}] NLL {s['mean']:.2f} +- {s['se']:.2f} after {budget.steps} steps "
              f"({train_s:.0f} s), L_{kk} in {eval_s:.0f} s", flush=True)

    print(f"\n{args.budget_seconds:g} s of training per model on {len(train)} images, batch "
          f"{args.batch_size}, {args.device}; -L_K on {len(test)} test images; {environment()}")
    print(f"{'model':10}{'test NLL':>10}{'+-se':>7}{'K':>6}{'lr':>8}{'steps':>8}{'train s':>9}"
          f"{'eval s':>8}{'paper':>8}")
    for name, r in rows.items():
        paper = "-" if PAPER[name] is None else f"{PAPER[name]:.2f}"
        print(f"{name:10}{r['nll']:10.2f}{r['se']:7.2f}{r['k']:6d}{r['lr']:8.0e}{r['steps']:8d}"
              f"{r['train_s']:9.0f}{r['eval_s']:8.0f}{paper:>8}")
    for name, r in rows.items():
        print(f"nll_{name}: {r['nll']:.3f}")
        print(f"nll_se_{name}: {r['se']:.3f}")
        print(f"train_s_{name}: {r['train_s']:.3f}")
        print(f"steps_{name}: {r['steps']}")
    if args.save_nll:
        paired_differences(args.save_nll)
    return rows


def paired_differences(folder: str) -> dict:
    """Mean and paired standard error of NLL(model) - NLL(vae) for every model saved in
    ``folder`` against each saved one-layer VAE, when they scored the same test images."""
    runs = {f[:-3]: torch.load(os.path.join(folder, f)) for f in sorted(os.listdir(folder))
            if f.endswith(".pt")}
    out = {}
    for base in ("vae", "vae_bn"):
        if base not in runs:
            continue
        for name, r in runs.items():
            b = runs[base]
            if name == base or (r["seed"], r["test_size"]) != (b["seed"], b["test_size"]):
                continue
            s = pyrovae.metrics.summary(r["nll"] - b["nll"])
            out[name, base] = s
            print(f"diff_{name}_{base}: {s['mean']:.3f}")
            print(f"diff_se_{name}_{base}: {s['se']:.3f}")
    return out


if __name__ == "__main__":
    main()
