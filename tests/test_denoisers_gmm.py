import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers
from stepwise.data import load_digits
from stepwise import schedules


def _brute_force_posterior_mean(weights, means, stds, x_t, a, s, n=400_000, seed=0):
    """E[x0 | x_t] by importance sampling from the prior (1-D mixture)."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(weights), size=n, p=weights)
    x0 = rng.normal(means[comp], stds[comp])
    logw = -0.5 * ((x_t - a * x0) / s) ** 2
    w = np.exp(logw - logw.max())
    return np.sum(w * x0) / np.sum(w)


def test_posterior_mean_matches_monte_carlo_1d():
    weights, means, stds = np.array([0.3, 0.7]), np.array([[-1.0], [1.5]]), np.array([0.4, 0.7])
    sched = schedules.VPLinear()
    with jax.enable_x64(True):
        m = denoisers.GaussianMixture(weights, means, stds[:, None] ** 2, sched)
        for t, x in [(0.3, 0.2), (0.6, -0.5), (0.9, 1.0)]:
            a, s = float(sched.alpha(t)), float(sched.sigma(t))
            exact = float(m(jnp.asarray([[x]]), t)[0, 0])
            mc = _brute_force_posterior_mean(weights, means[:, 0], stds, x, a, s)
            assert abs(exact - mc) < 5e-3, (t, x, exact, mc)


def test_posterior_mean_matches_quadrature_1d():
    weights, means, stds = np.array([0.5, 0.5]), np.array([[-2.0], [2.0]]), np.array([0.3, 0.5])
    sched = schedules.VPCosine()
    grid = np.linspace(-6, 6, 200_001)
    prior = sum(w * np.exp(-0.5 * ((grid - mu) / sd) ** 2) / sd for w, mu, sd in zip(weights, means[:, 0], stds))
    with jax.enable_x64(True):
        m = denoisers.GaussianMixture(weights, means, stds[:, None] ** 2, sched)
        for t, x in [(0.2, 0.5), (0.5, -0.1), (0.8, 0.7)]:
            a, s = float(sched.alpha(t)), float(sched.sigma(t))
            lik = np.exp(-0.5 * ((x - a * grid) / s) ** 2)
            quad = np.sum(grid * prior * lik) / np.sum(prior * lik)
            assert abs(float(m(jnp.asarray([[x]]), t)[0, 0]) - quad) < 1e-6


def test_log_density_and_component_match_scipy():
    """log_prob and component() against scipy's multivariate normal densities of each component."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    k, d = 3, 4
    weights = np.array([0.2, 0.5, 0.3])
    means = rng.normal(0.0, 2.0, (k, d))
    a = rng.normal(size=(k, d, d))
    covs = a @ np.transpose(a, (0, 2, 1)) / d + 0.3 * np.eye(d)
    x = rng.normal(0.0, 2.5, (200, d))
    joint = np.stack([np.log(w) + multivariate_normal(mu, c).logpdf(x) for w, mu, c in zip(weights, means, covs)], 1)
    with jax.enable_x64(True):
        m = denoisers.GaussianMixture(weights, means, covs)
        np.testing.assert_allclose(np.asarray(m.log_prob(jnp.asarray(x))),
                                   np.logaddexp.reduce(joint, axis=1), rtol=1e-9)
        assert np.array_equal(m.component(jnp.asarray(x)), np.argmax(joint, axis=1))
        # samples of well-separated components belong to the component that drew them
        far = denoisers.GaussianMixture(weights, means * 20.0, covs)
        y = far.sample(jax.random.key(0), 300)
        c = far.component(y)
        dist = np.linalg.norm(np.asarray(y)[:, None] - means[None] * 20.0, axis=-1)
        assert np.array_equal(c, np.argmin(dist, axis=1)) and len(set(c.tolist())) == k


def test_gaussian_posterior_is_linear_shrinkage():
    """One full-covariance component: E[x0|x_t] = mu + a S (a^2 S + s^2 I)^-1 (x - a mu)."""
    rng = np.random.default_rng(0)
    d = 5
    A = rng.normal(size=(d, d))
    S = A @ A.T / d + 0.1 * np.eye(d)
    mu = rng.normal(size=d)
    sched = schedules.VPLinear()
    with jax.enable_x64(True):
        m = denoisers.GaussianMixture([1.0], mu[None], S[None], sched)
        x = rng.normal(size=(3, d))
        t = 0.4
        a, s = float(sched.alpha(t)), float(sched.sigma(t))
        expected = mu + (x - a * mu) @ np.linalg.solve(a**2 * S + s**2 * np.eye(d), a * S).T
        np.testing.assert_allclose(m(jnp.asarray(x), t), expected, rtol=1e-10)


def test_digits_gmm_contract_and_moments(gmm10):
    m = gmm10
    assert m.prediction == "x0" and m.data_shape == (64,)
    assert m.cost == 10 * 64 * 64
    mean, cov = m.moments()
    xs = np.asarray(m.sample(jax.random.key(0), 40_000))
    assert np.abs(xs.mean(0) - np.asarray(mean)).max() < 0.03
    assert np.abs(np.cov(xs.T) - np.asarray(cov)).max() < 0.03
    # at t -> 0 the denoiser is (close to) the identity on data
    x0 = jnp.asarray(xs[:16])
    assert float(jnp.abs(m(x0, 1e-4) - x0).max()) < 0.05


def test_digits_gmm_deterministic():
    a = denoisers.digits_gmm(components=3, seed=1)
    b = denoisers.digits_gmm(components=3, seed=1)
    np.testing.assert_array_equal(np.asarray(a.means), np.asarray(b.means))


def test_upsampled_digits():
    m = denoisers.digits_gmm(components=2, size=16)
    assert m.data_shape == (256,)
    assert load_digits(16, flat=True, dtype=np.float64)[0].shape == (1797, 256)


@pytest.mark.parametrize("kind", list(denoisers.PREDICTIONS))
@pytest.mark.parametrize("sched", [schedules.VPLinear(), schedules.EDM(), schedules.Flow()],
                         ids=["vp", "edm", "flow"])
def test_parameterisations_round_trip(kind, sched):
    with jax.enable_x64(True):
        key = jax.random.key(1)
        x0 = jax.random.normal(key, (4, 3), jnp.float64)
        eps = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
        t = jnp.asarray(0.5 * (sched.t_min + sched.t_max) * 0.3, jnp.float64)
        x = sched.alpha(t) * x0 + sched.sigma(t) * eps
        pred = denoisers.from_x0_eps(x0, eps, kind, x, t, sched)
        back_x0, back_eps = denoisers.to_x0_eps(pred, kind, x, t, sched)
        np.testing.assert_allclose(back_x0, x0, atol=1e-9)
        np.testing.assert_allclose(back_eps, eps, atol=1e-9)


def test_unknown_prediction_rejected():
    with pytest.raises(ValueError, match="allowed"):
        denoisers.check_prediction("noise")


def test_denoiser_contract_is_checked_at_construction():
    import equinox as eqx
    import pytest

    from stepwise import schedules

    class Tiny(denoisers.Denoiser):
        prediction: str = eqx.field(static=True, default="eps")
        schedule: object = schedules.VPLinear()
        cost: float = eqx.field(static=True, default=1.0)
        data_mean: object = 0.0
        data_shape: tuple = eqx.field(static=True, default=(4,))

        def __call__(self, x, t, cond=None):
            return 0.0 * x

    assert Tiny().data_shape == (4,)
    with pytest.raises(ValueError, match="prediction"):
        Tiny(prediction="velocity")
    with pytest.raises(ValueError, match="data_shape"):
        Tiny(data_shape=(0,))
    with pytest.raises(ValueError, match="cost"):
        Tiny(cost=-1.0)

    with pytest.raises(TypeError):      # an abstract attribute left out: refused (at definition or instantiation)
        class NoShape(denoisers.Denoiser):
            prediction: str = eqx.field(static=True, default="eps")
            schedule: object = None
            cost: float = 1.0
            data_mean: object = 0.0

            def __call__(self, x, t, cond=None):
                return x

        NoShape()
    with pytest.raises(TypeError, match="missing"):
        denoisers.check_denoiser(object())
