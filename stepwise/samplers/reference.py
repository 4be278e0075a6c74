"""High-accuracy reference solve of the probability-flow ODE with diffrax.

In log-SNR time lambda the ODE is smooth (Lu et al. 2022):  since x/sigma = int e^lambda x0 dlambda,

    dx/dlambda = (d log sigma / d lambda) x + alpha x0(x, lambda),

solved from lambda(t_start) to lambda(t_end) with an adaptive 8th-order Runge-Kutta (Dopri8) and a
PID step-size controller. Used only as the exact endpoint in tests and benchmarks.
"""
from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.denoisers.guidance import guided_x0_eps


def _vector_field(lam, x, args):
    model, schedule, cond, scale = args
    t = schedule.t_of_lambda(lam)
    dlog_sigma = jax.jvp(lambda l: schedule.log_sigma(schedule.t_of_lambda(l)), (lam,), (jnp.ones_like(lam),))[1]
    x0, _ = guided_x0_eps(model, x, t, cond, scale)
    return dlog_sigma * x + schedule.alpha(t) * x0


@eqx.filter_jit
def _solve(model, schedule, x_T, lam0, lam1, rtol, atol, cond, scale, max_steps, save_lams=None):
    """The state at lam1 (``save_lams=None``), or at every log-SNR in ``save_lams`` (dense output)."""
    term = diffrax.ODETerm(_vector_field)
    saveat = diffrax.SaveAt(t1=True) if save_lams is None else diffrax.SaveAt(ts=save_lams)
    sol = diffrax.diffeqsolve(
        term, diffrax.Dopri8(), t0=lam0, t1=lam1, dt0=(lam1 - lam0) / 64, y0=x_T,
        args=(model, schedule, cond, scale),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, saveat=saveat)
    return (sol.ys[0] if save_lams is None else sol.ys), sol.stats["num_steps"]


def reference_solve(denoiser, schedule, x_T, t_start=None, t_end=None, rtol: float = 1e-8,
                    atol: float | None = None, cond=None, guidance: float = 1.0, max_steps: int = 20000,
                    return_steps=False):
    """The ODE endpoint at t_end (default schedule.t_min) from x_T at t_start (default t_max).

    With ``cond`` the vector field is the classifier-free-guided one at scale ``guidance``.

    Use float64 (``jax.config.update("jax_enable_x64", True)``) for tolerances below ~1e-6.
    """
    t0 = schedule.t_max if t_start is None else t_start
    t1 = schedule.t_min if t_end is None else t_end
    dt = x_T.dtype
    rtol, atol = _tolerances(dt, rtol, atol)
    lam0 = schedule.lambda_(jnp.asarray(t0, dt))
    lam1 = schedule.lambda_(jnp.asarray(t1, dt))
    x, steps = _solve(*_as_arrays(denoiser, schedule), x_T, lam0, lam1, rtol, atol, cond, jnp.asarray(guidance, dt),
                      max_steps)
    return (x, steps) if return_steps else x


def _tolerances(dtype, rtol: float, atol: float | None) -> tuple[float, float]:
    if dtype == jnp.float32 and rtol < 1e-6:
        rtol = 1e-6  # float32 cannot resolve tighter tolerances; the step controller would stall
    return rtol, (rtol if atol is None else atol)


def _as_arrays(denoiser, schedule):
    return jax.tree.map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, (denoiser, schedule))


def reference_trajectory(denoiser, schedule, x_T, ts, rtol: float = 1e-8, atol: float | None = None,
                         max_steps: int = 20000):
    """The ODE solution from x_T at ``ts[0]`` at every node of the decreasing grid ``ts``: an array
    (len(ts),) + x_T.shape (ONE adaptive solve; the states between its steps come from Dopri8's
    dense output). Used for teacher trajectories (GITS-style dynamic programming over nodes)."""
    rtol, atol = _tolerances(x_T.dtype, rtol, atol)
    lams = schedule.lambda_(jnp.asarray(ts, x_T.dtype))
    ys, _ = _solve(*_as_arrays(denoiser, schedule), x_T, lams[0], lams[-1], rtol, atol, None,
                   jnp.asarray(1.0, x_T.dtype), max_steps, save_lams=lams)
    return ys.at[0].set(x_T)
