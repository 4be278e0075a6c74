"""Statistics and distances: checked against independent NumPy computations and analytic values."""
from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from stepwise.evaluation import stats as st


def _frechet_eigh(mu1, s1, mu2, s2):
    """Independent Fréchet distance: tr (S1 S2)^{1/2} = sum sqrt eig(S1^{1/2} S2 S1^{1/2})."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s2 @ root)
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


# ----------------------------------------------------------------------------- moments
def test_streaming_moments_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 7)) * 50 + 1e4  # large offset: needs a stable update
    stats = st.stats_from_batches(np.array_split(x, [3, 4, 250, 999]))
    assert stats.n == 1000
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-9)
    biased = st.gaussian_stats(x, batch_size=64, ddof=0)
    np.testing.assert_allclose(biased.sigma, np.cov(x, rowvar=False, bias=True), rtol=1e-9)


def test_moments_reject_bad_input():
    with pytest.raises(ValueError, match="batch must be"):
        st.moments_update(st.moments_init(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="more than 1 samples"):
        st.moments_finalize(st.moments_update(st.moments_init(3), np.zeros((1, 3))))
    with pytest.raises(ValueError, match="sigma must be"):
        st.GaussianStats(np.zeros(3), np.eye(2))


# ----------------------------------------------------------------------------- Fréchet
def test_frechet_matches_eigen_formula_and_gaussian_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    assert st.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _frechet_eigh(mu1, s1, mu2, s2), rel=1e-9)
    # commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2
    da, db = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(da) - np.sqrt(db)) ** 2)
    assert st.frechet_distance(mu1, np.diag(da), mu2, np.diag(db)) == pytest.approx(want, rel=1e-9)
    assert st.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_frechet_singular_covariances_use_eps_offset():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 40))  # rank-5 covariances in 40 dims
    s = np.cov(x, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = st.frechet_distance(np.zeros(40), s, np.ones(40), np.zeros((40, 40)))
    assert np.isfinite(value)
    assert value == pytest.approx(40 + np.trace(s), rel=1e-3)


def test_frechet_rejects_bad_shapes_and_non_psd():
    with pytest.raises(ValueError, match="mu1 and mu2"):
        st.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 must be"):
        st.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    bad = np.diag([1.0, -4.0, 1.0])  # not PSD: sqrt of the product is complex
    with pytest.raises(st.FrechetDistanceError, match="imaginary component"):
        st.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), bad)


# ----------------------------------------------------------------------------- exact distance
def _mixture(d=6, k=3, seed=3):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k) * 3)
    means = rng.standard_normal((k, d)) * 1.5
    chol = [np.tril(rng.standard_normal((d, d)) * 0.3) + np.eye(d) * 0.5 for _ in range(k)]
    covs = np.array([c @ c.T for c in chol])
    mean = w @ means
    cov = np.einsum("k,kij->ij", w, covs + np.einsum("ki,kj->kij", means, means)) - np.outer(mean, mean)

    def sample(n, rng):
        comp = rng.choice(k, size=n, p=w)
        z = rng.standard_normal((n, d))
        return means[comp] + np.einsum("nij,nj->ni", np.array(chol)[comp], z)

    return mean, cov, sample


def test_exact_distance_of_mixture_samples_is_sample_noise():
    mean, cov, sample = _mixture()
    n = 20000
    # Sample-noise level from repeated draws, with the independent eigen-based formula.
    rng = np.random.default_rng(10)
    noise = [_frechet_eigh(x.mean(0), np.cov(x, rowvar=False), mean, cov)
             for x in (sample(n, rng) for _ in range(8))]
    bound = max(noise) * 3
    assert bound < 0.05 * np.trace(cov)  # the bound is tight enough to mean "about zero"
    # Leading-order expectation of the mean term alone: tr(cov) / n.
    assert np.mean(noise) > 0.5 * np.trace(cov) / n

    x = sample(n, np.random.default_rng(11))
    got = st.frechet_to_moments(x, mean, cov)
    assert got.n == n and got.n_ref is None
    assert 0 <= got.value <= bound
    assert got.value == pytest.approx(
        _frechet_eigh(x.mean(0), np.cov(x, rowvar=False), mean, cov), rel=1e-6)

    # Shifted by delta: |delta|^2 + 2 delta.(m - mean) + (unshifted value).
    delta = np.linspace(-0.5, 0.5, len(mean))
    shifted = st.frechet_to_moments(x + delta, mean, cov).value
    cross_sd = 2 * np.sqrt(delta @ cov @ delta / n)
    assert abs(shifted - delta @ delta) <= bound + 6 * cross_sd

    # Scaled about the true mean by c: covariance c^2 cov, distance (c - 1)^2 tr(cov).
    c = 1.5
    target = (c - 1) ** 2 * np.trace(cov)
    scaled = st.frechet_to_moments(mean + c * (x - mean), mean, cov).value
    first_order = c * abs(c - 1) * abs(np.trace(np.cov(x, rowvar=False) - cov))
    assert first_order + c ** 2 * bound < 0.02 * target
    assert scaled == pytest.approx(target, rel=0.03)


# ----------------------------------------------------------------------------- KID
def _mmd2_loops(x, y):
    """Direct unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums."""
    d = x.shape[1]
    k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 5))
    y = rng.standard_normal((40, 5)) + 0.3
    want = _mmd2_loops(x, y)
    assert st.polynomial_mmd2(x, y) == pytest.approx(want, rel=1e-10)
    # One subset holding every point is the full-set estimate regardless of the draw.
    got = st.kid(x, y, key=jax.random.key(0), num_subsets=1, subset_size=40)
    assert got.value == pytest.approx(want, rel=1e-10)
    assert (got.n, got.n_ref, got.std) == (40, 40, 0.0)


def test_kid_subsets_are_reproducible_and_unbiased_for_equal_distributions():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((600, 4)), rng.standard_normal((600, 4))
    a = st.kid(x, y, key=jax.random.key(1), num_subsets=30, subset_size=100)
    b = st.kid(x, y, key=jax.random.key(1), num_subsets=30, subset_size=100)
    assert a.value == b.value and a.std > 0
    assert abs(a.value) < 3 * a.std  # unbiased: zero within the subset spread
    far = st.kid(x, y + 1.0, key=jax.random.key(1), num_subsets=30, subset_size=100)
    assert far.value > 5 * far.std


# ----------------------------------------------------------------------------- FID_inf, bootstrap
def test_fid_infinity_removes_the_one_over_n_bias():
    rng = np.random.default_rng(6)
    d = 8
    x = rng.standard_normal((6000, d))
    ref = st.GaussianStats(np.zeros(d), np.eye(d), None)  # exact: true FID is 0
    m = st.fid_infinity(x, ref, key=jax.random.key(2), num_points=8)
    ns, fids = np.array(m.extra["ns"]), np.array(m.extra["fids"])
    slope, intercept = np.polyfit(1.0 / ns, fids, 1)
    assert m.value == pytest.approx(intercept, rel=1e-9, abs=1e-12)
    assert m.extra["slope"] == pytest.approx(slope, rel=1e-9)
    assert fids[0] > 0.02  # small-n bias is visible...
    assert abs(m.value) < 0.25 * fids[0]  # ...and mostly removed by extrapolation
    assert m.n == 6000 and ns.max() == 6000
    assert fids[-1] == pytest.approx(_frechet_eigh(x.mean(0), np.cov(x, rowvar=False),
                                                   np.zeros(d), np.eye(d)), rel=1e-6)


def test_fid_bootstrap_interval():
    rng = np.random.default_rng(7)
    d = 4
    ref = st.GaussianStats(np.zeros(d), np.eye(d), None)
    small = st.fid_bootstrap(rng.standard_normal((300, d)) + 0.5, ref, key=jax.random.key(3),
                             num_resamples=40)
    big = st.fid_bootstrap(rng.standard_normal((4000, d)) + 0.5, ref, key=jax.random.key(3),
                           num_resamples=40)
    for m in (small, big):
        assert m.low < m.high and m.std > 0 and m.low <= 1.0 <= m.high + 0.2
    assert big.high - big.low < small.high - small.low
    assert small.n == 300 and big.to_dict()["n"] == 4000
    with pytest.raises(ValueError, match="confidence"):
        st.fid_bootstrap(np.zeros((5, d)), ref, key=jax.random.key(0), confidence=1.5)


@pytest.mark.parametrize("m,d", [(200, 16), (12, 40), (30, 30)])
def test_frechet_rows_equals_the_eigenvalue_form_of_the_frechet_distance(m, d):
    """One SVD of X Y^T (or of the Cholesky factors when tall) against an independent formula:
    tr (S_x S_y)^(1/2) = sum sqrt(eig(S_x S_y)); wide, square and tall row sets; one rank-deficient."""
    rng = np.random.default_rng(m + d)
    x = rng.standard_normal((m, d)) * np.linspace(1.0, 0.2, d)
    y = 0.8 * x + 0.3 * rng.standard_normal((m, d)) + 0.05
    x[:, 1] = x[:, 0]                                      # a singular covariance
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ev = np.clip(np.linalg.eigvals(sx @ sy).real, 0.0, None)
    want = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(sx) + np.trace(sy) - 2 * np.sum(np.sqrt(ev))
    assert st.frechet_rows(x, y) == pytest.approx(want, rel=1e-7)
    assert st.frechet_rows_to(x, y.mean(0), st.covariance_root(sy)) == pytest.approx(want, rel=1e-6)
    assert st.frechet_rows(np.full_like(x, np.nan), y) == float("inf")
    with pytest.raises(ValueError, match="same shape"):
        st.frechet_rows(x, y[:-1])
