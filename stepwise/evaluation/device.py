"""Distances computed on the accelerator (pure JAX, vmappable): no host round trip per candidate.

Fréchet distance to a FIXED reference N(mu_r, S_r) (Dowson & Landau 1982):
``|mu - mu_r|^2 + tr S + tr S_r - 2 tr (S_r^{1/2} S S_r^{1/2})^{1/2}``. The reference's symmetric
square root A = S_r^{1/2} is computed once (``eigh``); per candidate the middle term is the sum of
the square roots of the eigenvalues of the symmetric PSD matrix A S A (``eigvalsh``; round-off
negatives clipped to 0). The same number as ``stats.frechet_distance`` (scipy ``sqrtm`` of
S S_r, whose eigenvalues are those of A S A) up to float round-off; float64 when x64 is enabled.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class FrechetReference(NamedTuple):
    """A fixed reference distribution's mean, covariance trace and covariance square root."""

    mean: jnp.ndarray
    trace: jnp.ndarray
    sqrt_cov: jnp.ndarray


def frechet_reference(mean, cov) -> FrechetReference:
    """Precompute S_r^{1/2} by ``eigh`` (host, float64), stored in the default float dtype."""
    cov = np.asarray(cov, np.float64)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    dt = jnp.zeros(()).dtype
    return FrechetReference(jnp.asarray(np.asarray(mean, np.float64), dt), jnp.asarray(np.trace(cov), dt),
                            jnp.asarray(root, dt))


def gaussian_fit(x):
    """(mean, covariance with the n - 1 normalisation) of rows of x, flattened per row."""
    x = x.reshape(x.shape[0], -1)
    mu = jnp.mean(x, axis=0)
    d = x - mu
    return mu, d.T @ d / (x.shape[0] - 1)


def frechet_to_reference(x, ref: FrechetReference, floor: float = 0.0):
    """Fréchet distance of the Gaussian fit of samples x (n, ...) to ``ref``; NaN/inf propagate.
    ``floor`` > 0 floors the eigenvalues before the square root, so gradients stay finite (a loss)."""
    x = x.astype(ref.sqrt_cov.dtype)
    mu, cov = gaussian_fit(x)
    middle = ref.sqrt_cov @ cov @ ref.sqrt_cov
    eig = jnp.linalg.eigvalsh((middle + middle.T) / 2)
    return jnp.sum((mu - ref.mean) ** 2) + jnp.trace(cov) + ref.trace - 2.0 * jnp.sum(jnp.sqrt(jnp.clip(eig, floor)))


def rmse(x, y):
    """Root-mean-square distance of paired arrays, in the wider of their dtype and the default float
    dtype (float64 when x64 is enabled, like the Fréchet distance here)."""
    dt = jnp.promote_types(y.dtype, jnp.zeros(()).dtype)
    return jnp.sqrt(jnp.mean((x.reshape(y.shape).astype(dt) - y.astype(dt)) ** 2))
