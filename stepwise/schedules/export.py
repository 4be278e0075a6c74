"""Time nodes in the conventions of other tools.

* diffusers ``set_timesteps(timesteps=...)``: integer training steps n of a DDPM-style discrete
  schedule, where step n sits at continuous t = (n+1)/N (DPM-Solver's convention, which
  ``VPDiscrete`` follows); the final node t_min = 1/N is the scheduler's ``final_sigmas_type=
  "sigma_min"`` end point and is not listed.
* diffusers ``set_timesteps(sigmas=...)`` and k-diffusion: the scaled noise level
  sigma/alpha = exp(-lambda) per node (k-diffusion appends a final 0 for its last Euler jump).

Only the nodes transfer: per-step solver decisions (orders, variants, correctors) have no
counterpart in those tools.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def to_sigmas(ts, schedule) -> np.ndarray:
    """sigma(t)/alpha(t) = exp(-lambda(t)) for every node (float64)."""
    lam = np.asarray(schedule.lambda_(jnp.asarray(ts)), np.float64)
    return np.exp(-lam)


def to_k_diffusion_sigmas(ts, schedule, append_zero: bool = True) -> np.ndarray:
    """k-diffusion's ``sigmas`` for its samplers (decreasing, with a trailing 0 by default)."""
    s = to_sigmas(ts, schedule)
    return np.concatenate([s, [0.0]]) if append_zero else s


def to_diffusers_timesteps(ts, num_train_timesteps: int = 1000, tol: float = 1e-3) -> np.ndarray:
    """Integer DDPM timesteps for all nodes but the last (which must be t = 1/N).

    Raises ValueError when a node is not within ``tol`` steps of an integer training step, or
    when the last node is not the scheduler's sigma_min end point.
    """
    ts = np.asarray(ts, np.float64)
    n = ts * num_train_timesteps - 1.0
    steps = np.round(n).astype(int)
    err = np.abs(n - steps)
    if np.any(err > tol):
        bad = int(np.argmax(err))
        raise ValueError(f"ts[{bad}]={ts[bad]:.6g} is {err[bad]:.3g} steps from a training step of a "
                         f"{num_train_timesteps}-step schedule; export sigmas instead")
    if steps[-1] != 0:
        raise ValueError(f"the last node must be t = 1/{num_train_timesteps} (diffusers' final "
                         f"sigma_min), got t = {ts[-1]:.6g}")
    return steps[:-1]
