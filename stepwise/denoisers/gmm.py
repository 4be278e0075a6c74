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

from stepwise.data import load_digits
from stepwise.denoisers.base import Denoiser
from stepwise.schedules import NoiseSchedule, VPLinear


class GaussianMixture(Denoiser):
    """x0-predicting exact denoiser of a Gaussian mixture bound to a noise schedule."""

    log_weights: jnp.ndarray   # (K,)
    means: jnp.ndarray         # (K, d)
    eigvecs: jnp.ndarray       # (K, d, d), columns are eigenvectors
    eigvals: jnp.ndarray       # (K, d)
    schedule: NoiseSchedule
    component_class: np.ndarray | None = None  # (K,) class label of each component (conditional)
    prediction: str = eqx.field(static=True, default="x0")
    data_shape: tuple = eqx.field(static=True, default=None)
    cost: float = eqx.field(static=True, default=1.0)
    num_classes: int = eqx.field(static=True, default=0)   # 0: unconditional

    def __init__(self, weights, means, covariances, schedule: NoiseSchedule | None = None,
                 data_shape: tuple | None = None, component_class=None):
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
        if component_class is not None:
            component_class = np.asarray(component_class, np.int32)
            if component_class.shape != (k,) or np.any(component_class < 0):
                raise ValueError("component_class: need one non-negative class label per component")
        self.component_class = component_class
        # static (not derived from the leaf), so it stays a Python int when the model is traced
        self.num_classes = 0 if component_class is None else int(np.max(component_class)) + 1

    def _class_logits(self, cond, dt):
        """log-weights (B, K) given labels; label -1 (or no classes) keeps the whole mixture."""
        lw = jnp.asarray(self.log_weights, dt)[None]
        if cond is None or self.component_class is None:
            return lw
        cc = jnp.asarray(self.component_class)
        cond = jnp.asarray(cond).reshape(-1, 1)
        keep = (cond < 0) | (cc[None] == cond)
        return jnp.where(keep, lw, -jnp.inf)
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

    def _posterior(self, x, t, cond=None):
        """Responsibilities (B, K) and per-component posterior means (B, K, d) for flat x (B, d)."""
        dt = x.dtype
        t = jnp.broadcast_to(jnp.asarray(t, dt), x.shape[:1])
        a = self.schedule.alpha(t)[:, None, None]
        s2 = self.schedule.sigma(t)[:, None, None] ** 2
        U, lam, mu = (jnp.asarray(a, dt) for a in (self.eigvecs, self.eigvals, self.means))
        y = jnp.einsum("bd,kde->bke", x, U) - a * jnp.einsum("kd,kde->ke", mu, U)[None]
        var = a**2 * lam[None] + s2                       # (B, K, d)
        logp = self._class_logits(cond, dt) - 0.5 * jnp.sum(y**2 / var + jnp.log(var), axis=-1)
        resp = jax.nn.softmax(logp, axis=-1)
        post = mu[None] + jnp.einsum("bke,kde->bkd", a * lam[None] / var * y, U)
        return resp, post

    def __call__(self, x, t, cond=None):
        flat = x.reshape(x.shape[0], -1)
        resp, post = self._posterior(flat, t, cond)
        return jnp.einsum("bk,bkd->bd", resp, post).reshape(x.shape)

    def _weights(self, label):
        w = np.exp(np.asarray(self.log_weights, np.float64))
        if label is not None and label >= 0:
            if self.component_class is None or label >= self.num_classes:
                raise ValueError(f"label: {label} is not a class of this mixture "
                                 f"(classes: {self.num_classes})")
            w = np.where(self.component_class == label, w, 0.0)
        return w / w.sum()

    def moments(self, label: int | None = None):
        """Exact mean (d,) and covariance (d, d) of the data (or one class's) distribution (float64)."""
        w = self._weights(label)
        U, lam, mu = (np.asarray(a, np.float64) for a in (self.eigvecs, self.eigvals, self.means))
        covs = np.einsum("kde,ke,kfe->kdf", U, lam, U)
        mean = w @ mu
        second = np.einsum("k,kdf->df", w, covs + np.einsum("kd,kf->kdf", mu, mu))
        return mean, second - np.outer(mean, mean)

    def sample(self, key, n: int, label: int | None = None):
        """n exact samples of the data (or one class's) distribution, shape (n, *data_shape)."""
        kc, kz = jax.random.split(key)
        with np.errstate(divide="ignore"):
            logits = np.log(self._weights(label))
        comp = jax.random.categorical(kc, jnp.asarray(logits), shape=(n,))
        U, lam, mu = (jnp.asarray(a) for a in (self.eigvecs, self.eigvals, self.means))
        z = jax.random.normal(kz, (n, self.dim), dtype=mu.dtype)
        x = mu[comp] + jnp.einsum("nde,ne->nd", U[comp], jnp.sqrt(lam[comp]) * z)
        return x.reshape((n,) + self.data_shape)

    def _joint_log_density(self, x):
        """log w_k + log N(x; mu_k, Sigma_k), shape (B, K), for data x (B, ...)."""
        flat = x.reshape(x.shape[0], -1)
        U, lam, mu = (jnp.asarray(a, flat.dtype) for a in (self.eigvecs, self.eigvals, self.means))
        y = jnp.einsum("bd,kde->bke", flat, U) - jnp.einsum("kd,kde->ke", mu, U)[None]
        lam = lam[None]
        return (jnp.asarray(self.log_weights, flat.dtype)[None] - 0.5 * jnp.sum(y**2 / lam + jnp.log(lam), axis=-1)
                - 0.5 * self.dim * math.log(2 * math.pi))

    def log_prob(self, x):
        """Exact log density of data x (B, ...): log sum_k w_k N(x; mu_k, Sigma_k)."""
        return jax.nn.logsumexp(self._joint_log_density(x), axis=-1)

    def component(self, x) -> np.ndarray:
        """The most probable component of each sample x (B, ...): argmax_k p(k | x) (B,), the mode a
        sample belongs to (e.g. to tell whether a sampler's endpoint and the reference solve's endpoint
        of the same noise landed in the same mode)."""
        return np.asarray(jnp.argmax(self._joint_log_density(x), axis=-1))


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
    return fit_mixture(load_digits(size, flat=True, dtype=np.float64)[0], components, seed, covariance, schedule=schedule)


def digits_gmm_conditional(components_per_class: int = 2, size: int = 8, seed: int = 0,
                           schedule: NoiseSchedule | None = None) -> GaussianMixture:
    """Class-conditional benchmark: a mixture fitted per digit class, joined with the class
    frequencies. ``model(x, t, labels)`` is the exact conditional denoiser (label -1: unconditional),
    so the classifier-free-guided ODE is exact too."""
    from sklearn.mixture import GaussianMixture as SkGMM

    data, labels = load_digits(size, flat=True, dtype=np.float64)
    ws, mus, covs, cls = [], [], [], []
    for c in range(10):
        xc = data[labels == c]
        gm = SkGMM(n_components=components_per_class, covariance_type="full", random_state=seed,
                   reg_covar=1e-3, max_iter=200).fit(xc)
        ws.append(gm.weights_ * len(xc) / len(data))
        mus.append(gm.means_)
        covs.append(gm.covariances_)
        cls.append(np.full(components_per_class, c))
    return GaussianMixture(np.concatenate(ws), np.concatenate(mus), np.concatenate(covs), schedule,
                           component_class=np.concatenate(cls))
