"""Data-parallel training on torch.distributed (gloo, CPU processes)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

import pyrovae
from pyrovae import AE, VAEConfig, checkpoint, fit

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
STEPS, PER_PROCESS = 6, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model, batch_size, optimizer, ckpt=None, compile=False):
    data = pyrovae.data.load("digits", binarize="dynamic")  # binarised afresh every batch
    fit(model, data.train, steps=STEPS, batch_size=batch_size, seed=0, optimizer=optimizer,
        lr=0.002 if optimizer == "sgd" else 0.01, progress=False, checkpoint_dir=ckpt,
        compile=compile)


def _worker(rank, world, port, out, optimizer, compile=False):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.manual_seed(123 + rank)  # different initial weights: fit broadcasts rank 0's
    model = AE(SMALL)
    _train(model, PER_PROCESS, optimizer, ckpt=out / "ck", compile=compile)
    if rank == 0:
        torch.save(model.state_dict(), out / "ddp.pt")
    dist.barrier()  # neither rank tears gloo down while the other may still use it
    dist.destroy_process_group()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, optimizer):
    mp.spawn(_worker, args=(2, _free_port(), tmp_path, optimizer), nprocs=2, join=True)
    ddp_state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    torch.manual_seed(123)
    single = AE(SMALL)
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    _train(single, 2 * PER_PROCESS, optimizer)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)
        assert not torch.equal(v, initial[k]) or "prior" in k  # training moved them
    ckpt = checkpoint.load(tmp_path / "ck")  # written once, by rank 0, with both RNG streams
    assert len(ckpt["rng"]["per_rank"]) == 2 and ckpt["train_state"]["step"] == STEPS


def test_a_traced_step_under_two_processes_equals_one_eager_process(tmp_path):
    """compile='trace' in every process: the traced ELBO's gradients are summed over the
    processes as the eager ones are, so the run equals one eager process with both batches."""
    mp.spawn(_worker, args=(2, _free_port(), tmp_path, "adam", "trace"), nprocs=2, join=True)
    ddp_state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    torch.manual_seed(123)
    single = AE(SMALL)
    _train(single, 2 * PER_PROCESS, "adam")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_cli_under_torchrun_writes_one_run_folder(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "pyrovae", "train", "--data", "digits", "--steps", "6",
           "--batch-size", "32", "--num-samples", "5", "--no-inference-data", "--out",
           str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 0 or m["test"]["n"] == 180
    assert r.stdout.count("run folder:") == 1  # rank 0 alone reports and writes
    assert len(checkpoint.load(out)["rng"]["per_rank"]) == 2
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".json") == ["config.json",
                                                                            "metrics.json"]


VQ_SMALL = dict(input_shape=(1, 8, 8), num_codes=16, code_dim=4, downsample=1, hidden=8,
                res_blocks=1, res_hidden=4, prior="none", decay=0.8, kmeans_init=2,
                restart_threshold=4.0)
VQ_STEPS = 6


def _train_vq(model, batch_size):
    data = pyrovae.data.load("digits", binarize="dynamic")
    fit(model, data.train, steps=VQ_STEPS, batch_size=batch_size, seed=0, lr=0.01,
        progress=False)


def _vq_worker(rank, world, port, out):
    import torch.distributed as dist

    from pyrovae.models.vqvae import VQVAE, VQVAEConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.manual_seed(123 + rank)  # different weights and codebooks: fit broadcasts rank 0's
    model = VQVAE(VQVAEConfig(**VQ_SMALL))
    _train_vq(model, PER_PROCESS)
    if rank == 0:
        torch.save(model.state_dict(), out / "ddp_vq.pt")
    dist.barrier()  # neither rank tears gloo down while the other may still use it
    dist.destroy_process_group()


def test_vq_codebook_under_two_processes_equals_one_process_with_the_same_global_batch(
        tmp_path):
    """EMA statistics summed over the global batch, k-means on the gathered encoder outputs
    and restarts drawn on rank 0: the codebook and the networks match one process's."""
    from pyrovae.models.vqvae import VQVAE, VQVAEConfig

    mp.spawn(_vq_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    ddp_state = torch.load(tmp_path / "ddp_vq.pt", weights_only=True)
    torch.manual_seed(123)
    single = VQVAE(VQVAEConfig(**VQ_SMALL))
    vq = single.quantizer
    events = {"kmeans": 0, "restarts": 0}
    initialize, restart = vq._initialize, vq.restart_dead_codes

    def counted_initialize(z):
        events["kmeans"] += 1
        assert z.shape[0] == 2 * 2 * PER_PROCESS * 16  # two global batches of 4x4 code maps
        return initialize(z)

    def counted_restart(z):
        dead = restart(z)
        events["restarts"] += dead.numel()
        return dead

    vq._initialize, vq.restart_dead_codes = counted_initialize, counted_restart
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    _train_vq(single, 2 * PER_PROCESS)
    assert events["kmeans"] == 1 and events["restarts"] > 0  # both paths were exercised
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)
        if k.startswith(("encoder", "decoder")) or k.startswith("quantizer.ema"):
            assert not torch.equal(v, initial[k]), k  # training moved them
