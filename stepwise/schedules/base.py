"""Continuous-time noise schedules as PyTrees (equinox modules).

Every schedule gives alpha(t), sigma(t), lambda_(t) = log alpha - log sigma and its inverse
t_of_lambda, all jnp, differentiable, and dtype-following (float32 or float64).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np


class NoiseSchedule(eqx.Module):
    """Base class: subclasses implement ``log_alpha``, ``sigma`` (or ``log_sigma``) and ``t_of_lambda``."""

    t_min: float = eqx.field(static=True, default=1e-3)
    t_max: float = eqx.field(static=True, default=1.0)

    def log_alpha(self, t):
        raise NotImplementedError

    def log_sigma(self, t):
        # sigma^2 = 1 - alpha^2 for variance-preserving schedules.
        la = self.log_alpha(t)
        return 0.5 * jnp.log(-jnp.expm1(2.0 * la))

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def lambda_(self, t):
        """Half log-SNR: lambda(t) = log alpha(t) - log sigma(t)."""
        return self.log_alpha(t) - self.log_sigma(t)

    def t_of_lambda(self, lam):
        raise NotImplementedError

    def prior_std(self) -> float:
        """Standard deviation of the initial noise x_T (1 for VP, sigma_max for EDM)."""
        return 1.0

    @property
    def domain(self) -> tuple[float, float]:
        return (self.t_min, self.t_max)

    def describe(self) -> dict:
        """A JSON-able identity (used in schedule files and compatibility checks)."""
        out = {"name": type(self).__name__}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            if isinstance(v, (int, float, str)):
                out[f] = v
        return out


class VPLinear(NoiseSchedule):
    """VP SDE with linear beta(t) (Song et al. 2021): log alpha = -(b1-b0) t^2/4 - b0 t/2."""

    beta_min: float = eqx.field(static=True, default=0.1)
    beta_max: float = eqx.field(static=True, default=20.0)

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def t_of_lambda(self, lam):
        b0, b1 = self.beta_min, self.beta_max
        c = jnp.logaddexp(0.0, -2.0 * lam)  # = -2 log alpha
        return 2.0 * c / (b0 + jnp.sqrt(b0**2 + 2.0 * (b1 - b0) * c))


class VPCosine(NoiseSchedule):
    """Cosine schedule (Nichol & Dhariwal 2021): alpha = cos((t+s)/(1+s) pi/2) / cos(s/(1+s) pi/2)."""

    s: float = eqx.field(static=True, default=0.008)
    t_max: float = eqx.field(static=True, default=0.9946)

    def _log_alpha0(self):
        return math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))

    def log_alpha(self, t):
        return jnp.log(jnp.cos((t + self.s) / (1.0 + self.s) * jnp.pi / 2.0)) - self._log_alpha0()

    def t_of_lambda(self, lam):
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        return jnp.arccos(jnp.exp(log_alpha + self._log_alpha0())) * 2.0 * (1.0 + self.s) / jnp.pi - self.s


class VPDiscrete(NoiseSchedule):
    """DDPM's discrete schedule made continuous (DPM-Solver's convention).

    Step n (0-based) of N sits at t_n = (n+1)/N with log alpha_n = 0.5 sum_{m<=n} log(1-beta_m);
    log alpha is interpolated piecewise-linearly in t.
    """

    ts_grid: jnp.ndarray = None
    log_alphas: jnp.ndarray = None

    def __init__(self, betas, t_max: float = 1.0, t_min: float | None = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2 or np.any(betas <= 0) or np.any(betas >= 1):
            raise ValueError("VPDiscrete: betas must be a 1-D array with values in (0, 1)")
        n = betas.size
        # float64 NumPy leaves: cast to the computation's dtype at use (exact in x64 mode).
        self.log_alphas = 0.5 * np.cumsum(np.log1p(-betas))
        self.ts_grid = np.arange(1, n + 1, dtype=np.float64) / n
        self.t_min = 1.0 / n if t_min is None else t_min
        self.t_max = t_max

    @classmethod
    def ddpm_linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, **kw):
        """DDPM's linear betas (Ho et al. 2020)."""
        return cls(np.linspace(beta_start, beta_end, num_steps), **kw)

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return jnp.interp(t, jnp.asarray(self.ts_grid, t.dtype), jnp.asarray(self.log_alphas, t.dtype))

    def t_of_lambda(self, lam):
        lam = jnp.asarray(lam)
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        # log_alphas decrease with t: interpolate t against -log_alpha (increasing).
        return jnp.interp(-log_alpha, -jnp.asarray(self.log_alphas, lam.dtype), jnp.asarray(self.ts_grid, lam.dtype))

    def describe(self) -> dict:
        return {"name": "VPDiscrete", "num_steps": int(self.ts_grid.shape[0]),
                "log_alpha_T": float(self.log_alphas[-1]), "t_min": self.t_min, "t_max": self.t_max}


class EDM(NoiseSchedule):
    """Variance-exploding schedule of Karras et al. (2022): alpha = 1, sigma = t."""

    t_min: float = eqx.field(static=True, default=0.002)
    t_max: float = eqx.field(static=True, default=80.0)

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.t_min, self.t_max = sigma_min, sigma_max

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t))

    def log_sigma(self, t):
        return jnp.log(t)

    def t_of_lambda(self, lam):
        return jnp.exp(-lam)

    def prior_std(self) -> float:
        return float(self.t_max)


class Flow(NoiseSchedule):
    """Rectified flow / conditional OT path: alpha = 1 - t, sigma = t (Liu et al.; Lipman et al. 2023)."""

    t_max: float = eqx.field(static=True, default=0.999)

    def log_alpha(self, t):
        return jnp.log1p(-t)

    def log_sigma(self, t):
        return jnp.log(t)

    def t_of_lambda(self, lam):
        return 1.0 / (1.0 + jnp.exp(lam))
