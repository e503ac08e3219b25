"""What a ``pyrovae train`` epoch on MNIST costs beyond its optimiser steps, part by part,
against the plain-PyTorch loop.

One :class:`pyrovae.train.Trainer` is set up as ``pyrovae train`` sets it up (Burda's VAE,
Trace_ELBO, Adam, a run folder, the CLI's 10,000 validation images) and its parts are timed on
it, interleaved in blocks of ``--steps`` steps (medians over ``--repeats`` blocks, ms per step):

- ``trainer_step``: ``Trainer.batch`` + ``Trainer.step``: everything the loop does per step
  (batch drawn and binarised, forward, backward, the non-finite guard, the update, history
  records every ``log_every`` steps, the per-step hooks);
- ``core_step``: the same batch, ``zero_grad``, the lean ELBO step and ``Adam.step`` only;
- ``plain_step``: the plain loop's step (:func:`torch_vae.train_epoch`'s body: batch drawn and
  binarised, ``zero_grad``, loss, backward, ``Adam.step``, ``loss.item()``) on the twin;
- ``guard``, ``hooks``, ``batch``, ``plain_batch``, ``record``: the non-finite guard's
  ``on_after_backward`` (a fused gradient norm read back to the host), the ``on_step_end``
  hooks (progress, JSON log, checkpointer), ``Trainer.batch`` and the plain loop's batch, and
  one history record (``record_step``, made every ``log_every`` steps; shown per step).

Per epoch (seconds, medians over ``--repeats``): ``validate`` (``Trainer.validate``: the ELBO's
terms on the validation images, one draw of z, Pyro traces), ``checkpoint``
(``Checkpointer.save``). ``epoch_extra_<part>`` is that part's share of an MNIST epoch of
``--epoch-steps`` steps at the plain loop's speed.

    python benchmarks/epoch_profile.py --threads 1
    python benchmarks/epoch_profile.py --threads 1 --compile   # the step as `--compile` runs it
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pyro
import torch
from _common import environment, warm_up
from mnist_nll import data_spec, initial_vae, load_average, load_splits
from torch_vae import TorchVAE

import pyrovae
from pyrovae.train import TrainConfig, Trainer


def median_ms(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1e3


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=50, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epoch-steps", type=int, default=500,
                   help="steps of the MNIST epoch the per-epoch costs are shared over "
                        "(50,000 images at batch 100)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", nargs="?", const="inductor", default=False,
                   choices=("inductor", "trace"), help="the trainer's step compiled, as "
                   "`pyrovae train --compile` runs it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up()
    _, splits = load_splits(data_spec(args.data), 0, None)
    train = splits.train.subset(torch.arange(min(args.train_size, len(splits.train))))
    splits = pyrovae.data.Splits(train, splits.valid, splits.test)
    init = initial_vae(train.event_shape, 0, "softplus")
    ref = TorchVAE.like(init)
    vae = init
    tmp = tempfile.TemporaryDirectory()
    t = Trainer(vae, splits, pyro.infer.Trace_ELBO(),
                TrainConfig(epochs=1000, batch_size=args.batch_size, seed=0,
                            compile=args.compile),
                checkpoint_dir=tmp.name)
    t.setup()
    for h in t.hooks:
        h.on_train_start(t.state)
    state, n = t.state, t.n_batches
    t.order = torch.randperm(len(t.train), generator=t.gen)
    opt_t = torch.optim.Adam(ref.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    order_t = torch.randperm(len(train), generator=g)
    x_t = train.x
    b = args.batch_size
    cursor = {"t": 0}

    def trainer_step():
        if state.batch_in_epoch >= n:
            state.batch_in_epoch = 0
        t.step(t.batch(state.batch_in_epoch))

    def core_step():
        i = state.batch_in_epoch % n
        kwargs = t.batch(i)
        t.opt.zero_grad(set_to_none=True)
        t.fast_step(kwargs)
        t.opt.step()

    def plain_batch():
        i = cursor["t"] = (cursor["t"] + 1) % n
        return torch.bernoulli(x_t[order_t[i * b:(i + 1) * b]], generator=g)

    def plain_step():
        xb = plain_batch()
        opt_t.zero_grad(set_to_none=True)
        loss = ref.loss(xb)
        loss.backward()
        opt_t.step()
        loss.item() / b

    def guard():
        t.guard.on_after_backward(state)

    def hooks():
        for h in t.hooks:
            h.on_step_end(state)

    def batch():
        t.batch(state.batch_in_epoch % n)

    kwargs = t.batch(0)

    def record():
        _, terms = t.fast_step(kwargs, True)
        t.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        t.record_step(kwargs, 1.0, terms)
        return time.perf_counter() - t0

    trainer_step()  # the validated first step, and pinning
    parts = {"trainer_step": trainer_step, "core_step": core_step, "plain_step": plain_step,
             "guard": guard, "hooks": hooks, "batch": batch, "plain_batch": plain_batch}
    times = {k: [] for k in (*parts, "record", "validate", "checkpoint")}
    load0 = load_average()
    for _ in range(args.repeats):
        for name, fn in parts.items():
            times[name].append(median_ms(fn, args.steps))
        times["record"].append(statistics.median(record() for _ in range(5)) * 1e3
                               / t.log_every)
        t0 = time.perf_counter()
        with torch.no_grad():
            t.validate()
        times["validate"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        t.checkpointer.save()
        times["checkpoint"].append(time.perf_counter() - t0)
    for h in t.hooks:
        if hasattr(h, "close"):
            h.close()
    tmp.cleanup()
    med = {k: statistics.median(v) for k, v in times.items()}
    plain_epoch = med["plain_step"] * args.epoch_steps / 1e3
    print(f"Burda VAE, batch {b}, {len(splits.valid)} validation images, log_every "
          f"{t.log_every}; medians of {args.repeats} interleaved blocks of {args.steps} steps; "
          f"load {load0} -> {load_average()}; compile {args.compile}; {environment()}")
    values = {f"{k}_ms": med[k] for k in parts}
    values["record_ms_per_step"] = med["record"]
    values["step_ratio_trainer"] = med["trainer_step"] / med["plain_step"]
    values["step_ratio_core"] = med["core_step"] / med["plain_step"]
    values["loop_extra_ms"] = med["trainer_step"] - med["core_step"]
    values["validate_s"] = med["validate"]
    values["checkpoint_s"] = med["checkpoint"]
    values["plain_epoch_s"] = plain_epoch
    for k in ("validate", "checkpoint"):
        values[f"epoch_extra_{k}"] = med[k] / plain_epoch
    values["epoch_extra_loop"] = values["loop_extra_ms"] * args.epoch_steps / 1e3 / plain_epoch
    for k, v in values.items():
        print(f"{k}: {v:.4f}")
    return values


if __name__ == "__main__":
    main()
