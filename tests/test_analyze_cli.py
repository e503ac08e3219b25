"""`pyrovae analyze RUN` and `pyrovae compare RUN RUN`: files written, values consistent with
the metrics module, errors named."""

import json

import numpy as np
import pytest
import torch

from pyrovae import analysis, cli, metrics, run


def _train(root, name, *extra):
    out = root / name
    code = cli.main(["train", "--data", "digits", "--epochs", "2", "--batch-size", "64",
                     "--num-samples", "10", "--set", "hidden=[32]", "--no-figures",
                     "--no-inference-data", "--out", str(out), *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    return _train(root, "z3", "--set", "latent_dim=3"), _train(root, "z2", "--set", "latent_dim=2")


def test_analyze_writes_netcdf_figures_and_psis_tables(runs, capsys):
    r3, _ = runs
    assert cli.main(["analyze", str(r3), "--num-points", "40", "--num-samples", "60",
                     "--draws", "20"]) == 0
    out = capsys.readouterr().out
    assert "k-hat > 0.7" in out and "inference_data.nc" in out
    for name in ("inference_data.nc", "psis.json", "psis.csv", "khat.png", "khat_recon.png",
                 "worst_khat.png", "posterior.png", "forest.png", "latent_map.png",
                 "posterior_predictive.png"):
        assert (r3 / name).is_file(), name
    idata = analysis.load_inference_data(r3 / "inference_data.nc")
    assert idata.posterior["z"].shape == (1, 20, 40, 3)
    s = json.loads((r3 / "psis.json").read_text())
    model, splits, _ = run.load_run(r3)
    test = splits.test.subset(torch.arange(40))
    direct = metrics.log_likelihood(model, test, 60, seed=0)  # same draws: same seed and batch
    assert s["log_px_is_mean"] == pytest.approx(float(direct.mean()), abs=1e-4)
    rows = np.genfromtxt(r3 / "psis.csv", delimiter=",", names=True)
    assert len(rows) == 40 and (rows["label"] == test.y.numpy()).all()
    assert s["frac_khat_gt_0.7"] == pytest.approx((rows["khat"] > 0.7).mean())
    assert s["elpd"] == pytest.approx(rows["log_px_psis"].sum(), abs=1e-3)


def test_compare_two_runs(runs, capsys, tmp_path):
    r3, r2 = runs
    assert cli.main(["compare", str(r3), str(r2), "--num-points", "40", "--num-samples", "60",
                     "--out", str(tmp_path / "table.csv")]) == 0
    printed = capsys.readouterr().out
    # held-out columns named for what they are, not for ArviZ's leave-one-out (issue 16)
    assert "elpd_heldout" in printed and "loo" not in printed
    assert "z3" in printed and "z2" in printed
    import pandas as pd

    table = pd.read_csv(tmp_path / "table.csv", index_col=0)
    by_hand = {}
    for r in (r3, r2):
        model, splits, _ = run.load_run(r)
        res = analysis.psis_diagnostics(model, splits.test.subset(torch.arange(40)), 60)
        by_hand[r.name] = res["log_px_psis"].values
    for name, v in by_hand.items():
        assert table.loc[name, "elpd_heldout"] == pytest.approx(v.sum(), abs=1e-3)
    diff = by_hand[table.index[0]] - by_hand[table.index[1]]
    assert table.iloc[1]["elpd_diff"] == pytest.approx(diff.sum(), abs=1e-3)
    assert table.iloc[1]["diff_se"] == pytest.approx(np.sqrt(40 * diff.var()), rel=1e-4)


def test_errors_exit_2_with_a_message(runs, tmp_path, capsys):
    r3, _ = runs
    assert cli.main(["analyze", str(tmp_path)]) == 2
    assert "is missing; is this a pyrovae run folder?" in capsys.readouterr().err
    assert cli.main(["compare", str(r3)]) == 2
    assert "runs: expected at least two run folders, got 1" in capsys.readouterr().err
    other = _train(tmp_path, "fixed", "--binarize", "fixed", "--set", "latent_dim=2")
    assert cli.main(["compare", str(r3), str(other), "--num-points", "5",
                     "--num-samples", "5"]) == 2
    assert "trained on different data or splits" in capsys.readouterr().err
