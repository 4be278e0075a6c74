"""Time discretizations N -> ts[N+1], decreasing from t_start to t_end.

time_uniform, time_quadratic (DPM-Solver's t_order=2), logsnr (uniform in lambda, Lu et al. 2022),
karras (uniform in sigma^(1/rho) of the scaled sigma = sigma/alpha, Karras et al. 2022).
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from stepwise.schedules.base import NoiseSchedule

_TOL = 1e-6


def _time_uniform(n, sched, t0, t1, **kw):
    return np.linspace(t0, t1, n + 1)


def _time_quadratic(n, sched, t0, t1, power: float = 2.0, **kw):
    return np.linspace(t0 ** (1.0 / power), t1 ** (1.0 / power), n + 1) ** power


def _logsnr(n, sched, t0, t1, **kw):
    lam = np.linspace(float(sched.lambda_(t0)),
                      float(sched.lambda_(t1)), n + 1)
    return np.asarray(sched.t_of_lambda(jnp.asarray(lam)), dtype=np.float64)


def _karras(n, sched, t0, t1, rho: float = 7.0, **kw):
    s_max = float(np.exp(-sched.lambda_(t0)))
    s_min = float(np.exp(-sched.lambda_(t1)))
    ramp = np.linspace(0.0, 1.0, n + 1)
    s = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return np.asarray(sched.t_of_lambda(jnp.asarray(-np.log(s))), dtype=np.float64)


def _x64() -> bool:
    import jax
    return bool(jax.config.read("jax_enable_x64"))


DISCRETIZATIONS: dict[str, Callable] = {
    "time_uniform": _time_uniform,
    "time_quadratic": _time_quadratic,
    "logsnr": _logsnr,
    "karras": _karras,
}


def validate_ts(ts, schedule: NoiseSchedule, name: str = "ts") -> np.ndarray:
    """Check nodes are 1-D, strictly decreasing and inside the schedule's domain."""
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"{name}: need a 1-D array of at least 2 time nodes, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"{name}: time nodes must be finite, got {ts}")
    if not np.all(np.diff(ts) < 0):
        bad = int(np.argmax(~(np.diff(ts) < 0)))
        raise ValueError(f"{name}: time nodes must be strictly decreasing; ts[{bad}]={ts[bad]:.6g} "
                         f"<= ts[{bad + 1}]={ts[bad + 1]:.6g}")
    lo, hi = schedule.domain
    if ts.max() > hi * (1 + _TOL) + _TOL or ts.min() < lo * (1 - _TOL) - 1e-12:
        raise ValueError(f"{name}: time nodes [{ts.min():.6g}, {ts.max():.6g}] fall outside the "
                         f"schedule's domain [{lo:.6g}, {hi:.6g}] ({type(schedule).__name__})")
    return ts


def discretize(kind, n: int, schedule: NoiseSchedule, t_start: float | None = None,
               t_end: float | None = None, **kw) -> jnp.ndarray:
    """Return ``ts`` of shape (n+1,), decreasing from t_start (default t_max) to t_end (default t_min).

    ``kind`` is one of DISCRETIZATIONS or an explicit array of nodes (then n must match its length-1).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"discretize: n (number of steps) must be an integer >= 1, got {n!r}")
    if not isinstance(kind, str):
        ts = validate_ts(kind, schedule, "discretize(explicit)")
        if ts.size != n + 1:
            raise ValueError(f"discretize: explicit nodes have {ts.size} entries, expected n+1={n + 1}")
        return jnp.asarray(ts)
    if kind not in DISCRETIZATIONS:
        raise ValueError(f"discretize: unknown kind {kind!r}; allowed: {sorted(DISCRETIZATIONS)} "
                         "or an explicit array")
    t0 = schedule.t_max if t_start is None else float(t_start)
    t1 = schedule.t_min if t_end is None else float(t_end)
    if not t0 > t1:
        raise ValueError(f"discretize: t_start={t0} must be greater than t_end={t1}")
    validate_ts([t0, t1], schedule, "discretize(t_start, t_end)")
    ts = np.array(DISCRETIZATIONS[kind](n, schedule, t0, t1, **kw), dtype=np.float64)
    ts[0], ts[-1] = t0, t1  # exact endpoints whatever the round-trip error
    return jnp.asarray(validate_ts(ts, schedule, f"discretize({kind})"))
