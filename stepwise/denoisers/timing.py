"""Measured cost of a denoiser: wall time of one jitted forward pass (a cross-check of declared costs)."""
from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def measure_cost(denoiser, batch: int = 256, repeats: int = 5, t: float = 0.5) -> float:
    """Measured wall time of one jitted forward pass of ``denoiser`` at ``batch``, in seconds
    (best of ``repeats`` after a compile-and-warm-up call)."""
    x = jnp.zeros((int(batch),) + tuple(denoiser.data_shape), jnp.float32)
    tt = jnp.full((int(batch),), t, jnp.float32)
    f = eqx.filter_jit(lambda m, x, tt: m(x, tt))
    jax.block_until_ready(f(denoiser, x, tt))
    best = float("inf")
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        jax.block_until_ready(f(denoiser, x, tt))
        best = min(best, time.perf_counter() - t0)
    return best


def measured_costs(denoisers, batch: int = 256, repeats: int = 5) -> np.ndarray:
    """:func:`measure_cost` of each denoiser (seconds per forward pass at ``batch``)."""
    return np.asarray([measure_cost(m, batch, repeats) for m in (denoisers if isinstance(denoisers, (list, tuple)) else (denoisers,))], np.float64)
