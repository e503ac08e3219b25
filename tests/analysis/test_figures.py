"""What the figures draw and say: every panel labelled with what it shows, and data points that
are vectors drawn as plots of their values rather than as strips of pixels.

The figures are ``matplotlib.figure.Figure`` objects written by ``savefig``; the ``drawn``
fixture records each one saved, so a test reads the axes' labels and the plotted data back."""

import numpy as np
import pytest
import torch
from _models import LinearGaussian, linear_gaussian_problem
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from pyrovae import analysis, data
from pyrovae.run import write_figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during the test, in order."""
    figures = []
    save = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def _panels(fig):
    """The axes that draw data (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


@pytest.fixture(scope="module")
def problem():
    W, b, sigma, x = linear_gaussian_problem(n=1000, d=5, q=2)
    return LinearGaussian(W, b, sigma), x


def test_vector_samples_are_a_pair_plot_of_the_samples_over_the_data(drawn, tmp_path):
    g = np.random.default_rng(0)
    samples, x = g.normal(size=(30, 5)), g.normal(size=(50, 5)) + 3
    analysis.plot_samples(samples, tmp_path / "s.png", data=x)
    (fig,) = drawn
    axes = _panels(fig)
    assert len(axes) == 16  # the first 4 of 5 dimensions, 4 x 4
    assert not any(ax.get_images() for ax in axes)  # no image strip
    for r in range(4):
        for c in range(4):
            ax = axes[4 * r + c]
            if r == c:  # histograms of dimension r: data, then samples
                assert ax.get_xlabel() == f"x[{r}]" and ax.get_ylabel() == "density"
                assert len(ax.patches) > 0
                continue
            assert (ax.get_xlabel(), ax.get_ylabel()) == (f"x[{c}]", f"x[{r}]")
            data_pts, sample_pts = (s.get_offsets() for s in _scatters(ax))
            np.testing.assert_allclose(data_pts, x[:, [c, r]])
            np.testing.assert_allclose(sample_pts, samples[:, [c, r]])
    assert "dimensions [0, 1, 2, 3] of 5" in fig.get_suptitle()


def test_one_dimensional_samples_are_a_histogram(drawn, tmp_path):
    s = np.linspace(-1, 1, 40)
    analysis.plot_samples(torch.as_tensor(s), tmp_path / "s.png", data=s[:, None] + 5)
    (ax,) = _panels(drawn[0])
    data_bars, sample_bars = ax.containers
    assert sum(p.get_height() * p.get_width() for p in sample_bars) == pytest.approx(1.0)
    assert min(p.get_x() for p in data_bars) >= min(p.get_x() for p in sample_bars)
    assert ax.get_xlabel() == "x[0]" and ax.get_ylabel() == "density"


def test_vector_reconstructions_plot_each_dimension_against_its_input(drawn, tmp_path):
    g = np.random.default_rng(1)
    x = g.normal(size=(20, 3))
    rec = x + 0.1 * g.normal(size=(20, 3))
    analysis.plot_reconstructions(x, rec, tmp_path / "r.png")
    axes = _panels(drawn[0])
    assert len(axes) == 3
    for d, ax in enumerate(axes):
        (pts,) = (s.get_offsets() for s in _scatters(ax))
        np.testing.assert_allclose(pts, np.c_[x[:, d], rec[:, d]])
        assert ax.get_xlabel() == f"input x[{d}]"
        assert ax.get_ylabel() == f"reconstruction of x[{d}]"
        (identity,) = ax.get_lines()
        np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())


def test_images_stay_image_grids(drawn, tmp_path):
    imgs = torch.rand(6, 1, 4, 4)
    analysis.plot_samples(imgs, tmp_path / "s.png")
    analysis.plot_reconstructions(imgs, imgs, tmp_path / "r.png")
    for fig in drawn:
        assert all(ax.get_images() for ax in _panels(fig))
    assert [ax.get_title() for ax in _panels(drawn[1])] == [
        "inputs (first 6)", "their reconstructions, same positions"]
    # a flat vector asked to be drawn as an image still can be
    analysis.plot_samples(torch.rand(4, 16), tmp_path / "flat.png", kind="images")
    assert isinstance(_panels(drawn[2])[0].get_images()[0], AxesImage)


@pytest.mark.parametrize("call, message", [
    (lambda d: analysis.plot_samples(np.zeros((3, 2)), d / "a.png", kind="pixels"),
     r"kind: expected one of \('auto', 'images', 'vectors'\), got 'pixels'"),
    (lambda d: analysis.plot_samples(np.zeros((3, 2)), d / "a.png", data=np.zeros((3, 4))),
     "data: expected 2 dimensions like the samples, got 4"),
    (lambda d: analysis.plot_vector_samples(np.zeros((3, 2)), d / "a.png", dims=[2]),
     r"dims: expected dimensions in 0..1, got \[2\]"),
    (lambda d: analysis.plot_reconstructions(np.zeros((3, 2)), np.zeros((3, 3)), d / "a.png"),
     r"x_rec: expected shape \(3, 2\) like x, got \(3, 3\)"),
    (lambda d: analysis.plot_vector_samples(np.zeros((0, 2)), d / "a.png"),
     r"samples: expected data points as an array \(N,\) or \(N, D\) with N >= 1"),
])
def test_bad_vector_plot_arguments_are_named(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


def test_write_figures_draws_tabular_data_as_plots(problem, drawn, tmp_path):
    model, x = problem
    splits = data.split_arrays(x.numpy(), name="lg", seed=0)
    paths = write_figures(model, splits, None, tmp_path)
    assert {p.name for p in paths} == {"reconstructions.png", "samples.png", "latent.png"}
    by_name = dict(zip((p.name for p in paths), drawn))
    test_x = splits.test.frozen(0).x.numpy()
    rec = _panels(by_name["reconstructions.png"])
    assert len(rec) == 5 and not any(ax.get_images() for ax in rec)
    for d, ax in enumerate(rec):  # every test point, its input on the x axis
        np.testing.assert_allclose(_scatters(ax)[0].get_offsets()[:, 0], test_x[:, d])
    samples = _panels(by_name["samples.png"])
    assert len(samples) == 16 and not any(ax.get_images() for ax in samples)
    data_pts, sample_pts = (s.get_offsets() for s in _scatters(samples[1]))  # x[1] vs x[0]
    np.testing.assert_allclose(data_pts, test_x[:, [1, 0]])
    assert sample_pts.shape == data_pts.shape
    # draws x ~ p(x | z), not the means W z + b: off the plane of means (the column space of
    # W, 2 of the plotted 4 dimensions) the draws keep the observation noise, a mean square of
    # sigma^2 per remaining dimension (the means would have 0)
    xs = np.stack([np.asarray(c) for c in _sample_columns(samples)], 1) - model.b.numpy()[:4]
    resid = xs - xs @ _projector(model.W.numpy()[:4])
    assert np.sum(resid**2) / (2 * len(xs)) == pytest.approx(model.sigma**2, rel=0.35)


def _sample_columns(panels):
    """Each of the first four dimensions of the plotted samples, read off the top row and
    column 0 of the 4 x 4 pair plot (panel (0, j) plots x[j] against x[0])."""
    first = _scatters(panels[1])[1].get_offsets()[:, 1]  # x[0] from panel (0, 1)
    cols = [first]
    for j in (1, 2, 3):
        cols.append(_scatters(panels[j])[1].get_offsets()[:, 0])
    return cols


def _projector(W):
    """Orthogonal projector onto the column space of W (rows: data dims)."""
    q, _ = np.linalg.qr(W)
    return q @ q.T


def test_posterior_panels_name_the_component_and_the_data_point(problem, drawn, tmp_path):
    model, x = problem
    idata = analysis.to_inference_data(model, x[:10], 200)
    analysis.plot_posterior(idata, tmp_path / "p.png", obs=[3, 5], components=[0, 1])
    axes = [ax for ax in _panels(drawn[0]) if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert sorted(titles) == sorted(f"z[{j}], data point {i}" for i in (3, 5) for j in (0, 1))
    z = idata.posterior["z"]
    for ax, title in zip(axes, titles):
        j, i = int(title[2]), int(title.split("data point ")[1])
        draws = z.sel(obs=i, z_dim_0=j).values.ravel().astype(float)
        (density, *_) = ax.get_lines()  # the density is drawn over the draws' range
        grid = density.get_xdata()
        assert grid.min() == pytest.approx(draws.min(), abs=0.05 * float(np.ptp(draws)))
        assert grid.max() == pytest.approx(draws.max(), abs=0.05 * float(np.ptp(draws)))
        assert ax.get_xlabel() == f"value of z[{j}]"
        assert "density" in ax.get_ylabel()
    analysis.plot_posterior(idata, tmp_path / "f.png", kind="forest", obs=[3, 5],
                            components=[0, 1])
    (ax,) = _panels(drawn[1])
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(rows) == sorted(titles)
    assert ax.get_xlabel().startswith("value of z") and ax.get_ylabel()


def test_latent_figures_label_their_axes(drawn, tmp_path):
    analysis.plot_kl_per_dimension(torch.rand(10, 3), tmp_path / "kl.png")
    analysis.plot_matrix(np.eye(2), tmp_path / "m.png", cbar_label="norm",
                         xlabel="latent", ylabel="group")
    analysis.plot_mi_matrix(np.eye(3)[:, :2], tmp_path / "mi.png")
    ax = _panels(drawn[0])[0]
    assert ax.get_xlabel() == "latent dimension" and "nats" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["z[0]", "z[1]", "z[2]"]
    assert drawn[1].axes[1].get_ylabel() == "norm"  # the colour bar
    ax = _panels(drawn[2])[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("factor", "latent dimension")
    assert drawn[2].axes[1].get_ylabel() == "I(z_j; v_k) / H(v_k)"


def test_traversal_columns_are_labelled_with_their_values(drawn, tmp_path):
    from pyrovae import VAE, VAEConfig

    vae = VAE(VAEConfig(input_shape=(1, 4, 4), latent_dim=3, hidden=(8,)))
    analysis.plot_traversals(vae, {"x": torch.rand(1, 1, 4, 4).round()}, tmp_path / "t.png",
                             values=[-2, 0, 2])
    ax = _panels(drawn[0])[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2", "0", "2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z[0]", "z[1]", "z[2]"]
    assert ax.get_xlabel() and ax.get_ylabel() == "latent dimension varied"


def test_sample_grid_rows_can_be_named(drawn, tmp_path):
    analysis.plot_samples(torch.rand(6, 1, 3, 3), tmp_path / "s.png", ncol=3,
                          row_labels=["y = 0", "y = 1"])
    ax = _panels(drawn[0])[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y = 0", "y = 1"]
    assert ax.get_title() == "samples from the model (6 images)"
    with pytest.raises(ValueError, match="row_labels: expected 2 labels"):
        analysis.plot_samples(torch.rand(6, 1, 3, 3), tmp_path / "s.png", ncol=3,
                              row_labels=["y = 0"])
