"""What a per-step architecture costs: FLOPs of a denoiser call under a skip mask (AutoDiffusion).

A network with skippable units (``Denoiser.skip_units``: the Flax UNet's residual blocks, skipped
to their shortcut, and its self-attention blocks, skipped to the identity; the MLP's residual blocks)
takes a 0/1 mask per call; a unit with mask 1 is bypassed through a conditional (:func:`bypassable`),
so it is not computed (Li et al. 2023, "AutoDiffusion: Training-Free Optimization of Time Steps and
Architectures for Automated Diffusion Model Acceleration"). The cost of a mask is MEASURED, not
assumed: :func:`call_flops` reads XLA's cost analysis of one call with the mask as a constant (only
the taken branch of each unit is traced); :func:`unit_shares` is each unit's fraction of the full
call, the input of the plan accounting ``solvers.plan.cost(..., unit_shares=...)``.
"""
from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def call_flops(model, mask=None, batch: int = 16, compiled: bool = False) -> float:
    """FLOPs per sample of one call of ``model`` with ``mask`` (None: every unit runs), from XLA's
    cost analysis: of the lowered call (default; a NumPy mask traces only the taken branch of each
    unit, and no compile is needed) or of the compiled, optimised one (``compiled``; what
    ``unet.forward_flops`` reports). The two agree within 1% (``tests/test_skipping.py``)."""
    units = len(model.skip_units)
    const = None if mask is None else np.asarray(mask, np.int32).reshape(-1)
    if const is not None and const.shape != (units,):
        raise ValueError(f"skip: mask of shape {const.shape}, expected ({units},) for the units {list(model.skip_units)}")
    x = jnp.zeros((batch,) + tuple(model.data_shape), jnp.float32)
    t = jnp.full((batch,), 0.5, jnp.float32)
    dyn, static = eqx.partition(model, eqx.is_array)

    def call(d, x, t):
        m = eqx.combine(d, static)
        return (m if const is None else m.with_skip(const))(x, t)

    lowered = jax.jit(call).lower(dyn, x, t)
    cost = (lowered.compile() if compiled else lowered).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) / batch


def unit_shares(model, batch: int = 16) -> np.ndarray:
    """(U,) fraction of a full call of ``model`` that each skippable unit costs:
    (F(all units) - F(all but unit u)) / F(all units), each F measured by :func:`call_flops` (lowered)."""
    units = len(model.skip_units)
    full = call_flops(model, None, batch)
    out = np.zeros(units, np.float64)
    for u in range(units):
        mask = np.zeros(units, np.int32)
        mask[u] = 1
        out[u] = (full - call_flops(model, mask, batch)) / full
    return out


def bypassable(module: nn.Module, flag, bypass, full, *args):
    """``full(module, *args)``, or, when ``flag`` (a traced 0/1 scalar) is 1, ``bypass(module, *args)``
    through ``nn.cond``: only the taken branch is computed (with a constant flag XLA removes the other).
    Initialisation always runs ``full``, so masked and unmasked calls share one parameter tree."""
    if flag is None or module.is_initializing():
        return full(module, *args)
    if isinstance(flag, (np.ndarray, np.generic, int, bool)):   # a constant mask: trace one branch only
        return bypass(module, *args) if int(flag) else full(module, *args)
    return nn.cond(jnp.asarray(flag) > 0, bypass, full, module, *args)


def unit_flags(units, skip) -> dict:
    """{unit name: its 0/1 flag} for a mask ``skip`` over ``units`` (empty when ``skip`` is None)."""
    if skip is None:
        return {}
    skip = skip if isinstance(skip, np.ndarray) else jnp.asarray(skip)
    if skip.shape != (len(units),):
        raise ValueError(f"skip: mask of shape {skip.shape}, expected ({len(units)},) for the units {list(units)}")
    return {u: skip[k] for k, u in enumerate(units)}
