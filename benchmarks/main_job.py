"""The README's main job: a VAE on the embedded 8x8 digits, against the job it replaces, a
deterministic auto-encoder and PCA at the same code size.

Runs, each through :func:`pyrovae.run.train_run` (what ``pyrovae train`` does):

- ``former``: the README's former command (50 epochs of Burda et al. (2016)'s MNIST network,
  64-200-200-50 tanh, batch 128, lr 1e-3);
- ``vae``: the main job's settings (``MAIN_JOB``, printed as the CLI command);
- ``ae``: :class:`pyrovae.AE` with the main job's network, code size and schedule;

and scikit-learn's PCA with as many components as the main job's latent size. Every number is
on the same 180 test images and the same bits: ``train_run`` binarises the test split once with
seed ``seed + 2`` (:meth:`pyrovae.data.Splits.binarized`), and so does this script. The numbers:

- ``L_K``: the importance-weighted bound :math:`\\mathcal L_K = \\log \\frac1K \\sum_k
  p(x, z_k) / q(z_k \\mid x)` on :math:`\\log p(x)` of the bits (Burda et al. 2016, eq. 8),
  the ``test.log_likelihood`` of ``metrics.json``; a density of x.
- ``KL``: :math:`\\mathrm{KL}(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I))` in closed form, mean over
  the test images (Kingma and Welling 2014, appendix B).
- ``recon``: :math:`\\log p(x \\mid \\hat x) = \\sum_i x_i \\log \\hat x_i + (1 - x_i)
  \\log(1 - \\hat x_i)` with :math:`\\hat x` the decoder's Bernoulli means at the code of x:
  the posterior mean :math:`\\mu_\\phi(x)` for the VAE, :math:`f_\\phi(x)` for the AE (its
  ``recon_log_prob``), the PCA projection of the bits clipped to [eps, 1 - eps] (eps chosen on
  the validation bits). Not a density of x: :math:`\\hat x` is computed from x itself, so a
  code big enough to copy the bits scores 0.
- ``oracle``: :math:`\\log p(x \\mid u)` with u the intensities the test bits were drawn from;
  its expectation is :math:`-\\sum_i H(u_i)`, the binarisation's own noise. A reconstruction
  scoring above it reproduces the coin flips, not the digit.
- ``pixels``: :math:`\\log p(x)` under independent pixels with the training intensities' mean,
  the simplest density of the bits, for ``L_K`` to beat.
- ``ppca``: PPCA's mean log density of the test *intensities* (Tipping and Bishop 1999,
  ``PCA.score``), a density on :math:`\\mathbb R^{64}`, not of the bits: comparable with
  nothing else here, printed so that it is not mistaken for one that is.
- ``agree``: the share of pixels where :math:`[\\hat x_i > 1/2] = x_i`.
- ``recon_acc``: a logistic-regression classifier fitted on the training intensities
  (scikit-learn) labels each reconstruction; the share that get their test image's label.
- ``sample_conf``: that classifier's mean largest class probability on the means
  :math:`\\mathbb E[x \\mid z]`, :math:`z \\sim \\mathcal N(0, I)`, of prior samples; the same
  on the test intensities and on uniform noise images are its reference points.
  ``sample_classes`` is :math:`\\exp H` of the predicted labels' histogram (10 when samples
  cover the ten digits evenly).

Prints a table, then ``name: value`` lines.

    python benchmarks/main_job.py                       # the README's figures (about 3 minutes)
    python benchmarks/main_job.py --figures docs/figures  # also copies the main job's PNGs
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import environment

import pyrovae
from pyrovae import metrics
from pyrovae.run import load_run, train_run

# The main job: `pyrovae train --data digits` with these settings (see benchmarks/RESULTS.md):
# VAEConfig's network (200-200 tanh) with 8 latent dimensions instead of 50, 1,000 epochs
# (11,000 steps of batch 128, Adam at lr 1e-3) instead of 50.
MAIN_JOB = {"model_config": {"latent_dim": 8}, "epochs": 1000, "batch_size": 128, "lr": 1e-3}
# The README's former command: VAEConfig's defaults (Burda et al.'s MNIST model), 50 epochs.
FORMER_JOB = {"model_config": {}, "epochs": 50, "batch_size": 128, "lr": 1e-3}
EPS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)


def command(job: dict, model: str = "vae", out: str = "runs/vae-digits") -> str:
    """The ``pyrovae train`` command line that runs ``job``."""
    sets = " ".join(f"--set {k}={_flag(v)}" for k, v in job["model_config"].items())
    return " ".join(x for x in (
        f"pyrovae train --model {model} --data digits", sets, f"--epochs {job['epochs']}",
        f"--batch-size {job['batch_size']}" if job["batch_size"] != 128 else "",
        f"--lr {job['lr']:g}" if job["lr"] != 1e-3 else "", f"--out {out}") if x)


def _flag(v) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)


def digit_splits(seed: int = 0):
    """(intensities, bits): the digits' splits in [0, 1], and binarised as ``train_run`` does
    for a Bernoulli likelihood (train dynamic; valid and test fixed with seeds seed+1, seed+2)."""
    raw = pyrovae.data.load("digits", seed=seed)
    return raw, raw.binarized("dynamic", seed)


def flat(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.reshape(len(x), -1).astype(np.float64)


def bernoulli_log_prob(p, x, eps: float = 0.0) -> np.ndarray:
    r"""Per image :math:`\sum_i x_i \log p_i + (1 - x_i) \log(1 - p_i)`, p clipped to
    [eps, 1 - eps]; terms with :math:`x_i = 0` and :math:`p_i = 0` (or both 1) count 0."""
    from scipy.special import xlogy

    p, x = np.clip(flat(p), eps, 1 - eps), flat(x)
    return (xlogy(x, p) + xlogy(1 - x, 1 - p)).sum(1)


def agreement(p, x) -> np.ndarray:
    """Per image, the share of pixels where ``p > 1/2`` equals the bit ``x``."""
    return ((flat(p) > 0.5) == (flat(x) > 0.5)).mean(1)


class DigitJudge:
    """Multinomial logistic regression fitted on the training intensities (64 pixels in
    [0, 1]); it judges whether images are digits, and which."""

    def __init__(self, x, y, seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        self.clf = LogisticRegression(max_iter=5000, random_state=seed).fit(flat(x), np.asarray(y))

    def confidence(self, images) -> np.ndarray:
        """Per image, the largest class probability."""
        return self.clf.predict_proba(flat(images)).max(1)

    def labels(self, images) -> np.ndarray:
        return self.clf.predict(flat(images))

    def classes(self, images) -> float:
        """exp of the entropy of the predicted labels' histogram: the effective class count."""
        counts = np.bincount(self.labels(images), minlength=10)
        p = counts[counts > 0] / counts.sum()
        return float(np.exp(-(p * np.log(p)).sum()))


@torch.no_grad()
def autoencoder_scores(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reconstruction log-likelihood :math:`\\log p(x \\mid \\mathrm{code}(x))` per image, the
    Bernoulli means :math:`\\hat x` at the code and, for a VAE, the closed-form KL per image."""
    model.eval()
    code = model.encode(x)
    loc = code[0] if isinstance(code, tuple) else code  # VAE: (loc, scale); AE: the code
    params = model.decode(loc)
    out = {"recon": model.likelihood(params).log_prob(x), "mean": model.likelihood.mean(params)}
    if isinstance(code, tuple):
        scale = code[1]
        out["kl"] = 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum(-1)
    return out


def pca_baseline(raw, bits, k: int, seed: int = 0) -> dict:
    """PCA with ``k`` components fitted on the training intensities. ``recon``: the Bernoulli
    log-probability of the test bits under the projection of the test bits, clipped to
    [eps, 1 - eps] with eps the best of ``EPS_GRID`` on the validation bits; ``recon_u``: the
    same under the projection of the intensities (an input the networks never see); ``ppca``:
    ``PCA.score_samples`` of the test intensities (a Gaussian density on R^64)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, random_state=seed).fit(flat(raw.train.x))

    def project(x):
        return pca.inverse_transform(pca.transform(flat(x)))

    vx = bits.valid.x
    eps = max(EPS_GRID, key=lambda e: bernoulli_log_prob(project(vx), vx, e).mean())
    tx = bits.test.x
    mean = project(tx)
    return {"recon": bernoulli_log_prob(mean, tx, eps), "mean": mean, "eps": eps,
            "recon_u": bernoulli_log_prob(project(raw.test.x), tx, eps),
            "ppca": pca.score_samples(flat(raw.test.x)), "pca": pca}


def train(out: Path, job: dict, model: str = "vae", seed: int = 0, num_samples: int = 1000,
          figures: bool = True) -> dict:
    """``train_run`` of ``job`` into ``out``; returns its metrics. The global torch seed is set
    first: ``train_run`` builds the model's initial weights from it (its ``seed`` sets the
    training noise and data order only)."""
    torch.manual_seed(seed)
    return train_run(out, model=model, model_config=job["model_config"], data="digits",
                     binarize=job.get("binarize", "auto"),
                     epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"],
                     lr_schedule=job.get("lr_schedule"),
                     seed=seed, num_samples=num_samples, figures=figures,
                     inference_data=False, progress=False)


def score_run(run: Path, judge: DigitJudge, num_samples: int = 1000, n_samples: int = 1000,
              seed: int = 0) -> dict:
    """Per-image test scores of a trained run folder (the same test bits it was scored on)."""
    model, splits, cfg = load_run(run)
    x, y = splits.test.x, splits.test.y.numpy()
    s = autoencoder_scores(model, x)
    r = {"recon": s["recon"].numpy(), "agree": agreement(s["mean"], x),
         "recon_acc": (judge.labels(s["mean"]) == y).astype(float), "x": x}
    if "kl" in s:
        # metrics.json's L_K, per image: the same estimator with the same seed
        is_ = metrics.importance_sampling(model, splits.test, num_samples,
                                          seed=cfg["data"]["seed"])
        r["L"] = is_["log_likelihood"].numpy()
        r["kl"] = s["kl"].numpy()
        torch.manual_seed(seed)
        samples = model.sample(n_samples)
        r["sample_conf"] = judge.confidence(samples)
        r["sample_classes"] = judge.classes(samples)
    return r


def mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=MAIN_JOB["epochs"])
    p.add_argument("--latent-dim", type=int, default=MAIN_JOB["model_config"]["latent_dim"])
    p.add_argument("--hidden", default=None,
                   help="MLP widths, comma-separated (default VAEConfig's, 200,200)")
    p.add_argument("--activation", default=None, help="default VAEConfig's, tanh")
    p.add_argument("--batch-size", type=int, default=MAIN_JOB["batch_size"])
    p.add_argument("--lr", type=float, default=MAIN_JOB["lr"])
    p.add_argument("--former-epochs", type=int, default=FORMER_JOB["epochs"],
                   help="epochs of the former command's run")
    p.add_argument("--num-samples", type=int, default=1000, help="K of the test bound L_K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the run folders (default: temporary)")
    p.add_argument("--figures", default=None,
                   help="copy the main job's reconstructions.png, samples.png and latent.png here "
                        "as vae-digits-<name>.png")
    args = p.parse_args(argv)

    net = {"latent_dim": args.latent_dim}
    if args.hidden is not None:
        net["hidden"] = [int(h) for h in args.hidden.split(",") if h]
    if args.activation is not None:
        net["activation"] = args.activation
    job = {"model_config": net, "epochs": args.epochs, "batch_size": args.batch_size,
           "lr": args.lr}
    former = dict(FORMER_JOB, epochs=args.former_epochs)
    tmp = None if args.out else tempfile.TemporaryDirectory()
    root = Path(args.out or tmp.name)
    try:
        raw, bits = digit_splits(args.seed)
        judge = DigitJudge(raw.train.x, raw.train.y, args.seed)
        runs, rows = {}, {}
        for name, j, model in (("former", former, "vae"), ("vae", job, "vae"), ("ae", job, "ae")):
            m = train(root / name, j, model, args.seed, args.num_samples)
            runs[name] = m
            rows[name] = score_run(root / name, judge, args.num_samples, seed=args.seed)
            rows[name]["seconds"] = m["train_seconds"]
        tx = bits.test.x
        assert all(torch.equal(r.pop("x"), tx) for r in rows.values()), "test bits differ"
        pca = pca_baseline(raw, bits, args.latent_dim, args.seed)
        rows["pca"] = {"recon": pca["recon"], "agree": agreement(pca["mean"], tx),
                       "recon_acc": (judge.labels(np.clip(pca["mean"], 0, 1))
                                     == raw.test.y.numpy()).astype(float)}
        rows["pca_u"] = {"recon": pca["recon_u"]}
        train_mean = raw.train.x.mean(0, keepdim=True).expand_as(tx)
        rows["pixels"] = {"L": bernoulli_log_prob(train_mean, tx)}
        rows["oracle"] = {"recon": bernoulli_log_prob(raw.test.x, tx)}
        ref_conf = {"test_images": judge.confidence(raw.test.x),
                    "noise": judge.confidence(torch.rand(1000, 64,
                                              generator=torch.Generator().manual_seed(args.seed)))}
        if args.figures:
            dest = Path(args.figures)
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("reconstructions.png", "samples.png", "latent.png"):
                shutil.copyfile(root / "vae" / f, dest / f"vae-digits-{f}")
    finally:
        if tmp is not None:
            tmp.cleanup()

    k = args.num_samples
    print(environment())
    print(f"main job:   {command(job)}")
    print(f"former job: {command(former)}")
    print(f"180 test images, the same bits for every row; L_{k} and recon in nats per image")
    head = (f"{'':22}{'L_' + str(k):>16}{'KL':>7}{'recon log p(x|x^)':>20}{'agree':>7}"
            f"{'rec acc':>8}{'smp conf':>9}{'classes':>8}{'train s':>8}")
    print(head)
    labels = {"former": f"former ({former['epochs']} ep, z 50)", "vae": "VAE (main job)",
              "ae": "AE (same network)", "pca": f"PCA ({args.latent_dim} comp.)",
              "pca_u": "PCA of intensities", "pixels": "independent pixels",
              "oracle": "oracle intensities"}

    def cell(r, key, width, fmt="{:.3f}", se=False):
        if key not in r:
            return f"{'-':>{width}}"
        v = r[key]
        if np.ndim(v) == 0:
            return f"{fmt.format(v):>{width}}"
        m, s = mean_se(v)
        return f"{(fmt.format(m) + (f' ± {s:.2f}' if se else '')):>{width}}"

    for name, r in rows.items():
        print(f"{labels[name]:22}{cell(r, 'L', 16, '{:.2f}', True)}{cell(r, 'kl', 7, '{:.2f}')}"
              f"{cell(r, 'recon', 20, '{:.2f}', True)}{cell(r, 'agree', 7)}"
              f"{cell(r, 'recon_acc', 8)}{cell(r, 'sample_conf', 9)}"
              f"{cell(r, 'sample_classes', 8, '{:.2f}')}{cell(r, 'seconds', 8, '{:.1f}')}")
    print(f"classifier confidence on test images {ref_conf['test_images'].mean():.3f}, on "
          f"uniform noise {ref_conf['noise'].mean():.3f}; PCA eps {pca['eps']:g}; PPCA "
          f"log density of the test intensities {pca['ppca'].mean():.2f} nats (a density on "
          f"R^64, not of the bits)")

    v, f, a = rows["vae"], rows["former"], rows["ae"]
    out = {}
    for name in ("vae", "former"):
        r = rows[name]
        out[f"{name}_L"], out[f"{name}_L_se"] = mean_se(r["L"])
        out[f"{name}_kl"] = mean_se(r["kl"])[0]
        out[f"{name}_recon"] = mean_se(r["recon"])[0]
        out[f"{name}_agree"] = mean_se(r["agree"])[0]
        out[f"{name}_recon_acc"] = mean_se(r["recon_acc"])[0]
        out[f"{name}_sample_conf"] = mean_se(r["sample_conf"])[0]
        out[f"{name}_sample_classes"] = r["sample_classes"]
        out[f"{name}_train_seconds"] = r["seconds"]
        out[f"{name}_epochs"] = runs[name]["epochs"]
    out["vae_minus_former_L"], out["vae_minus_former_L_se"] = mean_se(v["L"] - f["L"])
    out["vae_minus_pixels_L"], out["vae_minus_pixels_L_se"] = mean_se(v["L"] - rows["pixels"]["L"])
    out["pixels_L"] = mean_se(rows["pixels"]["L"])[0]
    out["ae_recon"], out["ae_recon_se"] = mean_se(a["recon"])
    out["ae_agree"] = mean_se(a["agree"])[0]
    out["ae_recon_acc"] = mean_se(a["recon_acc"])[0]
    out["ae_train_seconds"] = a["seconds"]
    out["pca_recon"], out["pca_recon_se"] = mean_se(rows["pca"]["recon"])
    out["pca_recon_intensities"] = mean_se(rows["pca_u"]["recon"])[0]
    out["pca_eps"] = pca["eps"]
    out["pca_agree"] = mean_se(rows["pca"]["agree"])[0]
    out["pca_recon_acc"] = mean_se(rows["pca"]["recon_acc"])[0]
    out["ppca_log_density"] = float(pca["ppca"].mean())
    out["oracle_recon"] = mean_se(rows["oracle"]["recon"])[0]
    out["vae_minus_ae_recon"], out["vae_minus_ae_recon_se"] = mean_se(v["recon"] - a["recon"])
    out["vae_minus_pca_recon"], out["vae_minus_pca_recon_se"] = mean_se(
        v["recon"] - rows["pca"]["recon"])
    out["test_image_conf"] = float(ref_conf["test_images"].mean())
    out["noise_conf"] = float(ref_conf["noise"].mean())
    out["ae_recon_metrics"] = runs["ae"]["test"]["recon_log_prob"]["mean"]
    out["vae_L_metrics"] = runs["vae"]["test"]["log_likelihood"]["mean"]
    for key, value in out.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return out


if __name__ == "__main__":
    main()
