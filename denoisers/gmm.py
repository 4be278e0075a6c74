"""Exact Gaussian-mixture denoiser: the closed-form posterior mean E[x0 | x_t].

For data ~ sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps, each component gives
x_t | k ~ N(alpha mu_k, alpha^2 S_k + sigma^2 I) and, with S_k = U_k diag(s_k) U_k^T,

    E[x0 | x_t, k] = mu_k + U_k diag(alpha s_k / (alpha^2 s_k + sigma^2)) U_k^T (x_t - alpha mu_k),

weighted by the posterior responsibilities p(k | x_t). This is the exact denoiser of the data
distribution, so the probability-flow ODE it drives has known endpoints (the embedded benchmark).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from schedules import NoiseSchedule, VPLinear


class GaussianMixture(eqx.Module):
    """x0-predicting exact denoiser of a Gaussian mixture bound to a noise schedule."""

    log_weights: jnp.ndarray   # (K,)
    means: jnp.ndarray         # (K, d)
    eigvecs: jnp.ndarray       # (K, d, d), columns are eigenvectors
    eigvals: jnp.ndarray       # (K, d)
    schedule: NoiseSchedule
    prediction: str = eqx.field(static=True, default="x0")
    data_shape: tuple = eqx.field(static=True, default=None)
    cost: float = eqx.field(static=True, default=1.0)

    def __init__(self, weights, means, covariances, schedule: NoiseSchedule | None = None,
                 data_shape: tuple | None = None):
        weights = np.asarray(weights, np.float64)
        means = np.asarray(means, np.float64)
        covs = np.asarray(covariances, np.float64)
        k, d = means.shape
        if covs.ndim == 2:  # diagonal covariances (K, d)
            covs = np.stack([np.diag(c) for c in covs])
        if weights.shape != (k,) or covs.shape != (k, d, d):
            raise ValueError(f"GaussianMixture: shapes disagree: weights {weights.shape}, "
                             f"means {means.shape}, covariances {covs.shape}")
        if np.any(weights <= 0):
            raise ValueError("GaussianMixture: weights must be positive")
        vals, vecs = np.linalg.eigh(0.5 * (covs + covs.transpose(0, 2, 1)))
        # float64 NumPy leaves; every use casts to the computation's dtype (exact in x64 mode).
        self.log_weights = np.log(weights / weights.sum())
        self.means = means
        self.eigvecs = vecs
        self.eigvals = np.clip(vals, 0.0, None)
        self.schedule = VPLinear() if schedule is None else schedule
        self.data_shape = (d,) if data_shape is None else tuple(data_shape)
        if int(np.prod(self.data_shape)) != d:
            raise ValueError(f"GaussianMixture: data_shape {self.data_shape} does not have {d} entries")
        self.cost = float(k * d * d)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def data_mean(self):
        w = jax.nn.softmax(jnp.asarray(self.log_weights))
        return (w @ jnp.asarray(self.means)).reshape(self.data_shape)

    def _posterior(self, x, t):
        """Responsibilities (B, K) and per-component posterior means (B, K, d) for flat x (B, d)."""
        dt = x.dtype
        t = jnp.broadcast_to(jnp.asarray(t, dt), x.shape[:1])
        a = self.schedule.alpha(t)[:, None, None]
        s2 = self.schedule.sigma(t)[:, None, None] ** 2
        U, lam, mu = (jnp.asarray(a, dt) for a in (self.eigvecs, self.eigvals, self.means))
        y = jnp.einsum("bd,kde->bke", x, U) - a * jnp.einsum("kd,kde->ke", mu, U)[None]
        var = a**2 * lam[None] + s2                       # (B, K, d)
        logp = (jnp.asarray(self.log_weights, dt)[None]
                - 0.5 * jnp.sum(y**2 / var + jnp.log(var), axis=-1))
        resp = jax.nn.softmax(logp, axis=-1)
        post = mu[None] + jnp.einsum("bke,kde->bkd", a * lam[None] / var * y, U)
        return resp, post

    def __call__(self, x, t, cond=None):
        flat = x.reshape(x.shape[0], -1)
        resp, post = self._posterior(flat, t)
        return jnp.einsum("bk,bkd->bd", resp, post).reshape(x.shape)

    def moments(self):
        """Exact mean (d,) and covariance (d, d) of the data distribution (float64 NumPy)."""
        w = np.exp(np.asarray(self.log_weights, np.float64))
        U, lam, mu = (np.asarray(a, np.float64) for a in (self.eigvecs, self.eigvals, self.means))
        covs = np.einsum("kde,ke,kfe->kdf", U, lam, U)
        mean = w @ mu
        second = np.einsum("k,kdf->df", w, covs + np.einsum("kd,kf->kdf", mu, mu))
        return mean, second - np.outer(mean, mean)

    def sample(self, key, n: int):
        """n exact samples of the data distribution, shape (n, *data_shape)."""
        kc, kz = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.asarray(self.log_weights), shape=(n,))
        U, lam, mu = (jnp.asarray(a) for a in (self.eigvecs, self.eigvals, self.means))
        z = jax.random.normal(kz, (n, self.dim), dtype=mu.dtype)
        x = mu[comp] + jnp.einsum("nde,ne->nd", U[comp], jnp.sqrt(lam[comp]) * z)
        return x.reshape((n,) + self.data_shape)

    def log_prob(self, x):
        """Exact log density of flat data x (B, d)."""
        flat = x.reshape(x.shape[0], -1)
        U, lam, mu = (jnp.asarray(a, flat.dtype) for a in (self.eigvecs, self.eigvals, self.means))
        y = jnp.einsum("bd,kde->bke", flat, U) - jnp.einsum("kd,kde->ke", mu, U)[None]
        lam = lam[None]
        logp = (jnp.asarray(self.log_weights, flat.dtype)[None] - 0.5 * jnp.sum(y**2 / lam + jnp.log(lam), axis=-1)
                - 0.5 * self.dim * math.log(2 * math.pi))
        return jax.nn.logsumexp(logp, axis=-1)


def load_digits_data(size: int = 8) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits scaled to [-1, 1], optionally bilinearly upsampled; (n, size*size)."""
    from sklearn.datasets import load_digits

    imgs = load_digits().images.astype(np.float64) / 16.0 * 2.0 - 1.0  # (1797, 8, 8)
    if size != 8:
        if size < 8:
            raise ValueError(f"digits: size must be >= 8, got {size}")
        imgs = np.asarray(jax.image.resize(jnp.asarray(imgs), (imgs.shape[0], size, size), "linear"))
    return imgs.reshape(imgs.shape[0], -1)


def fit_mixture(data: np.ndarray, components: int, seed: int = 0, covariance: str = "full",
                reg_covar: float = 1e-3, schedule: NoiseSchedule | None = None,
                data_shape: tuple | None = None) -> GaussianMixture:
    """Fit a Gaussian mixture with scikit-learn (deterministic for a seed) and wrap it as a denoiser."""
    from sklearn.mixture import GaussianMixture as SkGMM

    if covariance not in ("full", "diag"):
        raise ValueError(f"covariance: must be 'full' or 'diag', got {covariance!r}")
    gm = SkGMM(n_components=components, covariance_type=covariance, random_state=seed,
               reg_covar=reg_covar, max_iter=200).fit(data)
    return GaussianMixture(gm.weights_, gm.means_, gm.covariances_, schedule, data_shape)


def digits_gmm(components: int = 10, size: int = 8, seed: int = 0, schedule: NoiseSchedule | None = None,
               covariance: str = "full") -> GaussianMixture:
    """The embedded benchmark: a mixture fitted to the bundled digits in [-1, 1] (size*size dims).

    ``reg_covar=1e-3`` floors each component's variance (pixel std >= 0.03), so the mixture has a
    density; by construction it IS the benchmark's data distribution.
    """
    if components < 1:
        raise ValueError(f"components: must be >= 1, got {components}")
    return fit_mixture(load_digits_data(size), components, seed, covariance, schedule=schedule)
