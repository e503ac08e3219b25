"""Burda et al.'s MNIST VAE trained by ``pyrovae.fit``, by the CLI and by a plain PyTorch loop:
test NLL paired on the same test bits, and seconds per epoch.

The sides (``--sides``):

- ``fit``: ``pyrovae.fit(vae, train, Trace_ELBO(), ...)`` on the training split, no validation;
- ``cli``: ``pyrovae.run.train_run``, the function ``pyrovae train`` calls, with the CLI's
  defaults for everything not listed below: it holds ``--valid-size`` training images out
  (``None``: the loader's default, 10,000 for MNIST), scores the ELBO's terms on them after every
  epoch (eval mode, batches of 256, one draw of z), writes ``checkpoint.pt`` and a
  ``log.jsonl`` record after every epoch and prints one line per epoch. Its own evaluation
  after training (test and validation L_K, figures, ArviZ file) comes after the timed part and
  is cut to K = 1 without figures here, since this script scores every side itself;
- ``torch``: the plain-PyTorch twin (:mod:`torch_vae`: the same encoder and decoder modules,
  the same single-sample ELBO) in a hand-written loop (``loss.item()`` every step);
- ``torch_valid``: the same loop validating as the CLI does: after every epoch the single-draw
  ELBO on the held-out images in batches of max(batch, 256), eval mode, z drawn from a random
  state of its own seeded as the trainer seeds its validation (``validation_seed(seed,
  epoch)``), the training stream restored after;
- ``compile``, ``compiled``: ``fit(..., compile="trace")`` and ``fit(..., compile=True)``
  (optional); ``cli_compiled``: the CLI's run with ``--compile`` (optional).

Every side trains on the same images: the training split of ``--data`` (MNIST by default) as
``pyrovae train`` makes it with ``--data-seed`` and ``--valid-size``, dynamically binarised
(a fresh Bernoulli draw per batch), batch 100, Adam (lr 1e-3, betas (0.9, 0.999), eps
``--adam-eps``), from the same initial weights (built after seeding with ``--seed``); they
differ in nothing else. Their random streams (data order and binarisation from a generator
seeded with ``--seed``, z from the global generator seeded with ``--seed``) are drawn in the
same order by ``fit`` and the plain loop, so those two take the same steps up to floating-point
summation order. The CLI's validation draws its z from a random state of its own and restores
the training stream after it, so the CLI takes those steps too: ``nll_diff_cli`` compares the
same training done by two programs, and ``torch_valid`` shows that validating does not change
the plain loop's steps either (``nll_diff_cli_valid``: CLI - ``torch_valid``).

The test images are binarised once, with ``--data-seed`` (the CLI's own test bits: seed
data_seed + 2), whatever ``--seed`` is. Every side is scored on those bits by the same
estimator, the importance-weighted bound L_K (K = ``--num-samples``) of the plain-PyTorch twin
holding that side's weights, with the same random draws (common random numbers); ``nll_*`` is
-L_K in nats averaged over the test images. ``nll_diff_<side>`` is the mean per-image
difference NLL(side) - NLL(torch) and ``nll_diff_se_<side>`` its standard error over the
images: it measures the two trained models on these images, not the spread between training
seeds (run several ``--seed`` for that). ``estimator_check`` is pyrovae's own
``metrics.log_likelihood`` minus the twin's on the first 500 test images of the fit model.

Seconds per epoch: ``sec_per_epoch_<side>`` is the mean over epochs of the time the epoch's
steps took (batches drawn, forward, backward, update, logging; what ``fit`` records as an epoch's
``seconds`` and the CLI prints per epoch), excluding validation; ``sec_per_later_epoch_<side>``
the same without the first epoch (a compiled side's first epoch includes its compilation);
``wall_per_epoch_<side>`` is the whole training call (set-up, checks, validation, checkpoints)
over the number of epochs.
``epoch_ratio_fit`` and ``epoch_ratio_cli`` are ``sec_per_epoch_<side> / sec_per_epoch_torch``
(``epoch_time_ratio`` is ``epoch_ratio_fit``, for older readers), ``wall_ratio_<side>`` the same
for the wall times, and ``wall_ratio_cli_valid`` the CLI's wall time over ``torch_valid``'s
(both validating after every epoch); ``epoch_ratio_median_<side>`` is the median over epochs
of the side's epoch seconds over the plain loop's epoch with the same number.

The sides train in threads of this process taking turns by epoch (:class:`Turns`): one side
runs at a time, handing over at the end of each epoch, in the order ``--sides`` gives and then
reversed, so every side's epoch r runs next to the others' epoch r and slow drifts of the
machine (seen here at 10-20 % over minutes) fall on all sides alike; each side keeps its own
global random stream across hand-overs, so it takes the same steps as alone (the equal NLLs
show it). ``wall_per_epoch_<side>`` is then the time the side held the turn. ``--sequential``
trains them one after another instead. The load average is printed before and after.

    python benchmarks/mnist_nll.py --epochs 30 --threads 2        # the issue's comparison
    python benchmarks/mnist_nll.py --epochs 2 --train-size 5000 --test-size 1000   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from _common import DEFAULT_MNIST, NETWORKS, environment, warm_up
from torch_vae import TorchVAE, train_epoch

import pyrovae
import pyrovae.run
import pyrovae.run_folder
from pyrovae.train.trainer import Trainer, validation_seed

SIDES = ("fit", "cli", "torch", "torch_valid", "compile", "compiled", "cli_compiled")
BURDA_MNIST_NLL = 86.76  # Burda et al. (2016), Table 1, VAE k = 1, after 3,280 epochs


def tensor_hash(x: torch.Tensor) -> str:
    """The first 16 hex digits of the sha256 of a tensor's bytes (on the CPU, contiguous)."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def data_spec(data: str | None) -> str:
    if data is not None:
        return data
    if not DEFAULT_MNIST.is_file():
        raise SystemExit(f"MNIST not found at {DEFAULT_MNIST}; pass --data mnist:PATH")
    return f"mnist:{DEFAULT_MNIST}"


def load_splits(spec: str, data_seed: int, valid_size: int | None):
    """``(raw, splits)``: the loader's splits as intensities (train/validation split by
    ``data_seed``), and the same binarised exactly as ``pyrovae train`` does for a Bernoulli
    VAE: training images drawn per batch, validation and test images once (seeds
    data_seed + 1 and data_seed + 2)."""
    raw = pyrovae.data.load(spec, seed=data_seed, valid_size=valid_size)
    return raw, raw.binarized("dynamic", data_seed)


def cli_data_file(raw: pyrovae.data.Splits, train_x: torch.Tensor, folder: Path,
                  data_seed: int) -> tuple[str, int]:
    """An npz with MNIST's keys from which ``pyrovae train --data FILE --valid-size V
    --data-seed S`` rebuilds exactly the training images ``train_x`` in their order, ``raw``'s
    validation images and its test images: the rows are put where the CLI's split permutation
    (:func:`pyrovae.data.split_indices`) will take them from. For ``--train-size``, a subset no
    data spec names. Returns ``(spec, valid_size)``."""
    v = 0 if raw.valid is None else len(raw.valid)
    t = len(train_x)
    valid_idx, train_idx = pyrovae.data.split_indices(v + t, (v, t), data_seed)
    x = np.empty((v + t, *train_x.shape[1:]), np.float32)
    y = np.zeros(v + t, np.int64)
    x[train_idx.numpy()] = train_x.numpy()
    if raw.train.y is not None:
        y[train_idx.numpy()] = raw.train.y[:t].numpy()
    if v:
        x[valid_idx.numpy()] = raw.valid.x.numpy()
        if raw.valid.y is not None:
            y[valid_idx.numpy()] = raw.valid.y.numpy()
    test = raw.test
    path = folder / "data.npz"
    np.savez(path, x_train=x, y_train=y, x_test=test.x.numpy(),
             y_test=np.zeros(len(test), np.int64) if test.y is None else test.y.numpy())
    return str(path), v


def initial_vae(event_shape, seed: int, scale: str) -> pyrovae.VAE:
    """The Burda VAE as ``pyrovae train --seed SEED`` builds it: seeded, then constructed."""
    pyro.set_rng_seed(seed)
    return pyrovae.models.build("vae", model_config(scale), input_shape=tuple(event_shape))


def model_config(scale: str) -> dict:
    return {**NETWORKS["burda"], "scale": scale}


def state_hash(module: torch.nn.Module) -> str:
    """Hash of a module's weights, in ``state_dict`` order."""
    return tensor_hash(torch.cat([v.detach().float().reshape(-1)
                                  for v in module.state_dict().values()]))


@torch.no_grad()
def score(model, x_test: torch.Tensor, num_samples: int, seed: int,
          batch: int = 100) -> torch.Tensor:
    """Per-image L_K of ``model`` (a ``pyrovae.VAE`` or a :class:`TorchVAE`) on the bits
    ``x_test``: the plain-PyTorch estimator with the same draws for every model (the global RNG
    seeded with ``seed``, the same batches and chunks of K)."""
    ref = model if isinstance(model, TorchVAE) else TorchVAE.like(model)
    ref.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([ref.log_likelihood(x_test[i:i + batch], num_samples).cpu()
                          for i in range(0, len(x_test), batch)])


def paired(nll_a: torch.Tensor, nll_b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-image differences ``nll_a - nll_b``."""
    d = (nll_a - nll_b).double()
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item() if len(d) > 1 else math.nan


def load_average() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


class Turns:
    """Turns for sides that train in threads of this process: one side runs at a time and
    hands over at the end of each of its epochs, in the order given and then reversed
    (A B C C B A A B C ...), so each side's epoch r runs next to the others' epoch r, on the
    same machine state. The global torch generator is saved and restored at every hand-over,
    so each side draws its own stream exactly as it would alone. ``active[side]`` is the
    time the side held the turn: its whole training call, without the others' turns."""

    def __init__(self, sides):
        self.order, self.turn = list(sides), 0
        self.cv = threading.Condition()
        self.rng: dict[str, torch.Tensor] = {}
        self.active = dict.fromkeys(sides, 0.0)
        self.local = threading.local()
        self.since = 0.0

    def start(self, side: str) -> None:
        """In the side's own thread, before it does anything."""
        self.local.side = side
        self._wait(side)

    def handover(self) -> None:
        """At a side's epoch end (a no-op in threads that are not sides)."""
        side = getattr(self.local, "side", None)
        if side is not None:
            self._release(side, done=False)
            self._wait(side)

    def finish(self) -> None:
        self._release(self.local.side, done=True)

    def _wait(self, side: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.order[self.turn] == side)
        if side in self.rng:
            torch.set_rng_state(self.rng[side])
        self.since = time.perf_counter()

    def _release(self, side: str, done: bool) -> None:
        self.active[side] += time.perf_counter() - self.since
        self.rng[side] = torch.get_rng_state()
        with self.cv:
            i = self.order.index(side)
            if done:
                self.order.pop(i)
                self.turn = i % len(self.order) if self.order else 0
            elif i == len(self.order) - 1:  # a round is over: the next runs in reverse
                self.order.reverse()
                self.turn = 0
            else:
                self.turn = i + 1
            self.cv.notify_all()


@contextlib.contextmanager
def handover_at_epoch_ends(turns: Turns):
    """Every trainer's epoch end (``fit``'s and the CLI's, after its hooks: validation,
    checkpoint, log) hands the turn over; the epoch's recorded seconds are taken before."""
    original = Trainer.end_epoch

    def end_epoch(self, t0):
        original(self, t0)
        turns.handover()

    Trainer.end_epoch = end_epoch
    try:
        yield
    finally:
        Trainer.end_epoch = original


def run_interleaved(jobs: dict, turns: Turns, threads: int | None) -> dict:
    """``{side: job()}`` with every job in its own thread, taking turns."""
    results, errors = {}, {}

    def work(side, job):
        if threads:
            torch.set_num_threads(threads)  # OpenMP's thread count is per thread
        turns.start(side)
        try:
            results[side] = job()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors[side] = e
        finally:
            turns.finish()

    with handover_at_epoch_ends(turns):
        workers = [threading.Thread(target=work, args=item, daemon=True)
                   for item in jobs.items()]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if errors:
        side, e = next(iter(errors.items()))
        raise RuntimeError(f"side {side!r} failed") from e
    return {side: results[side] for side in jobs}


@torch.no_grad()
def validate(ref: TorchVAE, x_valid: torch.Tensor, batch: int, seed: int, epoch: int) -> float:
    """The single-draw negative ELBO per image on ``x_valid`` (eval mode), as the CLI's
    validation computes it: batches of ``max(batch, 256)``, z from the global generator forked
    and seeded with the trainer's ``validation_seed(seed, epoch)``."""
    ref.eval()
    size, total = max(batch, 256), 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(validation_seed(seed, epoch))
        for i in range(0, len(x_valid), size):
            total += ref.loss(x_valid[i:i + size]).item()
    ref.train()
    return total / len(x_valid)


def train_torch(ref: TorchVAE, x_train: torch.Tensor, args, adam: dict,
                x_valid: torch.Tensor | None = None, after_epoch=lambda: None) -> dict:
    """The plain loop: Adam, ``epochs`` passes of :func:`torch_vae.train_epoch` (data order and
    binarisation from a generator seeded with ``seed``, z draws from the global RNG seeded
    with ``seed``), each followed by :func:`validate` on ``x_valid`` if given. An epoch's
    ``seconds`` exclude its validation, as the trainer's do."""
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    opt = torch.optim.Adam(ref.parameters(), lr=args.lr, **adam)
    g = torch.Generator().manual_seed(args.seed)
    ref.train()
    seconds, losses = [], []
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        losses.append(train_epoch(ref, opt, x_train, args.batch_size, g))
        seconds.append(time.perf_counter() - t)
        if x_valid is not None:
            validate(ref, x_valid, args.batch_size, args.seed, epoch)
        after_epoch()
    return {"seconds": seconds, "wall": time.perf_counter() - t0, "loss": losses[-1]}


def train_fit(vae, train, args, adam: dict, compile=False) -> dict:
    t0 = time.perf_counter()
    history = pyrovae.fit(vae, train, pyro.infer.Trace_ELBO(), epochs=args.epochs,
                          batch_size=args.batch_size, optimizer="adam", lr=args.lr,
                          optimizer_args=adam, seed=args.seed, compile=compile)
    wall = time.perf_counter() - t0
    return {"seconds": [r["seconds"] for r in history.epochs], "wall": wall,
            "loss": history.epochs[-1]["loss"]}


def train_cli(folder: Path, spec: str, valid_size, args, adam: dict, compile=False) -> dict:
    out = folder / ("run_compiled" if compile else "run")
    metrics = pyrovae.run.train_run(
        out, model="vae", model_config=model_config(args.scale), data=spec,
        valid_size=valid_size, data_seed=args.data_seed, num_samples=1, figures=False,
        inference_data=False, epochs=args.epochs, batch_size=args.batch_size,
        optimizer="adam", lr=args.lr, optimizer_args=adam, seed=args.seed, compile=compile)
    model, splits, _ = pyrovae.run_folder.load_run(out)
    return {"seconds": [r["seconds"] for r in metrics["history"]["epochs"]],
            "wall": metrics["train_seconds"], "loss": metrics["final_train_loss"],
            "model": model, "splits": splits, "seconds_per_epoch": metrics["seconds_per_epoch"],
            "validated": "valid_loss" in metrics["history"]["epochs"][-1]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adam-eps", type=float, default=1e-8,
                   help="Adam's eps on every side (1e-8: torch's and the CLI's default; "
                        "Burda et al. use 1e-4)")
    p.add_argument("--scale", default="softplus", choices=("softplus", "exp"),
                   help="the encoder's scale on every side: softplus(raw) + 1e-4 (pyrovae's "
                        "default) or exp(raw) + 1e-4 (raw a log standard deviation)")
    p.add_argument("--num-samples", type=int, default=1000, help="K of the test bound L_K")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--valid-size", type=int, default=None,
                   help="training images the CLI holds out and validates on (default: the "
                        "loader's, 10,000 for MNIST); every side trains on the rest")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on the first N images of the training split")
    p.add_argument("--test-size", type=int, default=None,
                   help="score the first N test images")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0,
                   help="initial weights and every side's random streams")
    p.add_argument("--data-seed", type=int, default=0,
                   help="train/validation split and the test bits (as pyrovae train's)")
    p.add_argument("--eval-seed", type=int, default=0, help="draws of the test bound")
    p.add_argument("--sides", nargs="+", default=["torch", "fit", "cli", "torch_valid"],
                   choices=SIDES)
    p.add_argument("--out", default=None, help="folder for the CLI's run (default: temporary)")
    p.add_argument("--sequential", action="store_true",
                   help="train the sides one after another instead of taking turns by epoch")
    args = p.parse_args(argv)
    if "torch" not in args.sides:
        p.error("--sides: the differences are to 'torch'; include it")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up()
    spec = data_spec(args.data)
    raw, splits = load_splits(spec, args.data_seed, args.valid_size)
    train, test = splits.train, splits.test
    subset = bool(args.train_size and args.train_size < len(train))
    if subset:
        train = train.subset(torch.arange(args.train_size))
    x_test = test.x if not args.test_size else test.x[:args.test_size]
    bits = tensor_hash(x_test)
    adam = {"betas": (0.9, 0.999), "eps": args.adam_eps}
    init = initial_vae(train.event_shape, args.seed, args.scale)
    init_hash = state_hash(init)

    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    folder = Path(args.out) if args.out is not None else Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)

    def job(side):
        if side in ("torch", "torch_valid"):
            ref = TorchVAE.like(init)
            valid = splits.valid.x if side == "torch_valid" and splits.valid is not None \
                else None
            after = turns.handover if turns is not None else (lambda: None)
            r = train_torch(ref, train.x, args, adam, valid, after)
            r["model"] = ref
        elif side in ("fit", "compile", "compiled"):
            vae = copy.deepcopy(init)
            r = train_fit(vae, train, args, adam,
                          compile={"fit": False, "compile": "trace", "compiled": True}[side])
            r["model"] = vae
        else:
            cli_spec, valid_size = (cli_data_file(raw, train.x, folder, args.data_seed)
                                    if subset else (spec, args.valid_size))
            r = train_cli(folder, cli_spec, valid_size, args, adam,
                          compile="inductor" if side == "cli_compiled" else False)
            s = r["splits"]
            r["same_train"] = tensor_hash(s.train.x) == tensor_hash(train.x)
            r["same_test_bits"] = tensor_hash(s.test.x[:len(x_test)]) == bits
        return r

    sides = list(dict.fromkeys(args.sides))  # in the order given
    runs, loads = {}, {}
    if args.sequential:
        turns = None
        for side in sides:
            before = load_average()
            runs[side] = job(side)
            loads[side] = (before, load_average())
    else:
        turns, before = Turns(sides), load_average()
        runs = run_interleaved({side: (lambda side=side: job(side)) for side in sides}, turns,
                               args.threads)
        for side in sides:  # the time each side held the turn, not the others'
            runs[side]["wall"] = turns.active[side]
            loads[side] = (before, load_average())

    nll, hashes = {}, {}
    for side, r in runs.items():
        t0 = time.perf_counter()
        nll[side] = -score(r["model"], x_test, args.num_samples, args.eval_seed)
        r["eval_seconds"] = time.perf_counter() - t0
        hashes[side] = bits  # every side is scored on x_test itself
    check_n = min(500, len(x_test))
    check = math.nan
    if "fit" in runs:
        own = pyrovae.metrics.log_likelihood(runs["fit"]["model"], x_test[:check_n],
                                             args.num_samples, seed=args.eval_seed)
        check = (own.mean() + nll["fit"][:check_n].mean()).item()
    if tmp is not None:
        tmp.cleanup()

    sec = {s: sum(r["seconds"]) / len(r["seconds"]) for s, r in runs.items()}
    wall = {s: r["wall"] / args.epochs for s, r in runs.items()}
    diff = {s: paired(nll[s], nll["torch"]) for s in runs if s != "torch"}
    if "cli" in runs and "torch_valid" in runs:
        diff["cli_valid"] = paired(nll["cli"], nll["torch_valid"])
    mnist = spec.startswith("mnist:") or Path(spec).name.startswith("mnist")
    print(f"{args.epochs} epochs on {len(train)} training images, batch {args.batch_size}, "
          f"Adam lr {args.lr:g} betas (0.9, 0.999) eps {args.adam_eps:g}, scale "
          f"{args.scale}; -L_{args.num_samples} on {len(x_test)} test images (bits "
          f"{bits}, data seed {args.data_seed}); seed {args.seed}; {environment()}")
    print(f"{'side':13}{'train loss':>11}{'test NLL':>10}{'diff':>8}{'se':>6}{'s/epoch':>9}"
          f"{'wall/ep':>9}{'eval s':>8}  load before -> after")
    for s, r in runs.items():
        d, se = diff.get(s, (0.0, 0.0))
        print(f"{s:13}{r['loss']:11.2f}{nll[s].mean().item():10.2f}{d:8.3f}{se:6.3f}"
              f"{sec[s]:9.3f}{wall[s]:9.3f}{r['eval_seconds']:8.1f}  {loads[s][0]} -> "
              f"{loads[s][1]}")
    if "cli" in runs:
        c = runs["cli"]
        print(f"cli: validates after every epoch: {c['validated']}; trains on the same images: "
              f"{c['same_train']}; its own test bits are these: {c['same_test_bits']}; "
              f"metrics.json seconds_per_epoch {c['seconds_per_epoch']:.4f}")
    if mnist:
        print(f"(Burda et al. 2016 report {BURDA_MNIST_NLL} nats for this VAE after 3,280 "
              f"epochs)")
    values = {"nll_pyrovae": nll["fit"].mean().item()} if "fit" in nll else {}
    values["nll_torch"] = nll["torch"].mean().item()
    for s in runs:
        if s not in ("fit", "torch"):
            values[f"nll_{s}"] = nll[s].mean().item()
    if "fit" in diff:
        values["nll_diff"], values["nll_diff_se"] = diff["fit"]
    for s, (d, se) in diff.items():
        values[f"nll_diff_{s}"], values[f"nll_diff_se_{s}"] = d, se
    if "fit" in runs:
        values["estimator_check"] = check
    for s in runs:
        values[f"sec_per_epoch_{s}"] = sec[s]
    for s in runs:  # without the first epoch, which pays a compiled side's compilation
        if len(runs[s]["seconds"]) > 1:
            values[f"sec_per_later_epoch_{s}"] = statistics.mean(runs[s]["seconds"][1:])
    for s in runs:
        values[f"wall_per_epoch_{s}"] = wall[s]
    for s in runs:
        if s != "torch":
            values[f"epoch_ratio_{s}"] = sec[s] / sec["torch"]
            values[f"epoch_ratio_median_{s}"] = statistics.median(
                a / b for a, b in zip(runs[s]["seconds"], runs["torch"]["seconds"]))
            values[f"wall_ratio_{s}"] = wall[s] / wall["torch"]
    if "cli" in runs and "torch_valid" in runs:  # both validate after every epoch
        values["wall_ratio_cli_valid"] = wall["cli"] / wall["torch_valid"]
    if "fit" in runs:
        values["epoch_time_ratio"] = values["epoch_ratio_fit"]
    for k, v in values.items():
        print(f"{k}: {v:.4f}")
    return {**values, "nll": nll, "diff": diff, "test_hash": bits, "scored_on": hashes,
            "x_test": x_test, "sec_per_epoch": sec, "wall_per_epoch": wall,
            "epoch_seconds": {s: r["seconds"] for s, r in runs.items()},
            "train_loss": {s: r["loss"] for s, r in runs.items()},
            "init_hash": init_hash, "load": loads,
            "cli": {k: runs["cli"][k] for k in ("same_train", "same_test_bits", "validated")}
            if "cli" in runs else None}


if __name__ == "__main__":
    main()
