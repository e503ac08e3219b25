"""The conditional VAE generates the class it is asked for; oi-VAE recovers which latents drive
which groups of a synthetic data set whose pattern is known."""

import numpy as np
import pyro
import pytest
import torch

import pyrovae
from pyrovae import metrics
from pyrovae.infer import ProximalGroupLasso, group_soft_threshold
from pyrovae.models import CVAE, OIVAE, CVAEConfig, OIVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digit_classifier(digits):
    """Logistic regression on the real training digits (scikit-learn), and its accuracy on the
    real test digits."""
    from sklearn.linear_model import LogisticRegression

    x = digits.train.x.reshape(len(digits.train), -1).numpy()
    clf = LogisticRegression(max_iter=2000).fit(x, digits.train.y.numpy())
    real = clf.score(digits.test.x.reshape(len(digits.test), -1).numpy(), digits.test.y.numpy())
    return clf, real


@pytest.mark.parametrize("prior", ["standard", "conditional"])
def test_cvae_generates_the_requested_class(digits, digit_classifier, prior):
    clf, real = digit_classifier
    pyro.set_rng_seed(0)
    m = CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=10, latent_dim=4, hidden=(128,),
                        prior=prior))
    pyrovae.fit(m, digits.train, pyro.infer.TraceMeanField_ELBO(), epochs=20, batch_size=64,
                lr=3e-3, progress=False)
    g = torch.Generator().manual_seed(0)
    hits = [clf.predict(m.sample(40, y=k, generator=g).reshape(40, -1).numpy()) == k
            for k in range(10)]
    acc = float(np.mean(hits))
    # the classifier reads generated digits of the asked class at least as well as real ones
    assert acc >= min(real, 0.9), (acc, real)
    assert min(np.mean(h) for h in hits) >= 0.5  # every class, not just most
    # its test ELBO beats fair coins per pixel
    elbo = metrics.elbo(m, digits.test, num_samples=5).mean()
    assert elbo > -64 * np.log(2)


def test_cvae_inputs_and_errors(digits):
    m = CVAE(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
    batch = digits.test.frozen(0).batch(torch.arange(4))
    assert pyrovae.models.base.input_names(m, batch) == ("x", "y")
    assert m.sample(3, y=torch.tensor([0, 1, 2])).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="y: expected a class"):
        m.sample(2, y=10)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 10\)"):
        m.guide(batch["x"], batch["y"] + 20)
    with pytest.raises(ValueError, match="prior"):
        CVAEConfig(prior="flow")
    with pytest.raises(ValueError, match="does not provide"):
        pyrovae.fit(m, digits.test.x, epochs=1, batch_size=8, progress=False)  # no labels


def test_group_soft_threshold_is_the_prox_of_the_group_norm():
    """The prox of t * ||.||_2 is block soft thresholding (Parikh and Boyd 2014): shrink the
    norm by t, or to 0."""
    w = torch.tensor([[3.0, 0.1], [4.0, 0.1]])  # columns of norm 5 and 0.1414
    out = group_soft_threshold(w, 1.0, dim=0)
    torch.testing.assert_close(out[:, 0], w[:, 0] * (4 / 5))
    assert torch.equal(out[:, 1], torch.zeros(2))


def test_oivae_recovers_the_latent_to_group_pattern():
    """Six groups of five variables; groups 0 and 2 depend on factor 0, groups 1 and 2 on
    factor 1, groups 3 and 5 on factor 2, groups 4 and 5 on factor 3. oi-VAE with 8 latents,
    its group-sparsity prior and proximal steps must leave each used latent driving exactly
    the groups of one factor, and use one latent per factor."""
    d = pyrovae.data.grouped_factors(3000, seed=0)
    x = torch.from_numpy(d["x"])
    pyro.set_rng_seed(0)
    m = OIVAE(OIVAEConfig(group_sizes=d["group_sizes"], latent_dim=8, group_hidden=(16,),
                          encoder_hidden=(64, 64)))
    prox = ProximalGroupLasso(m.W, lam=24.0, lr=2e-4, dim=1)
    pyrovae.fit(m, x, pyro.infer.TraceMeanField_ELBO(), epochs=40, batch_size=64, lr=3e-3,
                optimizer="adamw", optimizer_args={"weight_decay": 1e-2}, callbacks=[prox],
                progress=False)
    norms = m.group_weight_norms()  # (6 groups, 8 latents)
    used = norms > 0.3
    supports = {tuple(np.flatnonzero(col)) for col in used.T.numpy() if col.any()}
    truth = {tuple(np.flatnonzero(col)) for col in d["pattern"].T}
    assert supports == truth and int(used.any(0).sum()) == 4
    # the prox zeroes columns exactly when their gradient is small: most unused ones are 0
    assert float(norms[~used].max()) < 0.15
    # the optimiser never touched W: after training the hook is gone and grads flow again
    m.W.grad = None
    pyro.infer.Trace_ELBO().loss_and_grads(m.model, m.guide, x[:8])
    assert m.W.grad is not None


def test_oivae_checks_its_data_and_the_prox_its_arguments():
    m = OIVAE(group_sizes=(2, 3))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        m.check_data(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="lam"):
        ProximalGroupLasso(m.W, lam=-1.0, lr=1e-3)
    with pytest.raises(TypeError, match="param"):
        ProximalGroupLasso(torch.zeros(3), lam=1.0, lr=1e-3)
