"""Compute budgets of a search: which plans fit, and the projection that makes a plan fit.

A plan's cost is ``solvers.plan.cost`` (the sum over its evaluations of the cost of the model
evaluated there, less the measured share of the units its skip masks bypass); a budget is in
evaluations (``unit="nfe"``) or in those cost units.

Which units a projection skips first is either a fixed order (earliest step first) or MEASURED:
:func:`unit_sensitivity` records how far the network's data prediction moves when each unit alone is
bypassed, along the model's own ODE trajectories, and :func:`skip_damage` turns that into a
first-order price of every (step, unit) of a plan, so the units skipped are those whose bypass moves
the sample least per unit of compute saved (AutoDiffusion searches the per-step architectures
without such a measurement: Li et al. 2023, ICCV).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise import samplers, solvers
from stepwise.denoisers.base import x0_eps
from stepwise.schedules import discretize
from stepwise.solvers import plan as P

BUDGET_UNITS = ("nfe", "cost")


def within_budget(plan, budget: float, unit: str = "cost", model_costs=None, rtol: float = 1e-9,
                  unit_shares=None) -> bool:
    """Whether ``plan`` fits ``budget`` evaluations (``unit="nfe"``) or cost units (``unit="cost"``)."""
    if unit not in BUDGET_UNITS:
        raise ValueError(f"budget unit: {unit!r} is invalid; allowed: {list(BUDGET_UNITS)}")
    if unit == "nfe":
        return P.nfe(plan) <= budget
    if model_costs is None:
        raise ValueError("within_budget: a cost budget needs model_costs")
    return P.cost(plan, model_costs, unit_shares=unit_shares) <= budget * (1 + rtol)


def _skip_of(plan):
    skip = getattr(plan, "skip", None)
    return None if skip is None else np.asarray(skip, np.int64)


def cheapest_first_projection(plan, model_costs, budget: float, rtol: float = 1e-9,
                              unit_shares=None) -> np.ndarray | None:
    """Move steps (earliest first) to the cheapest model until the plan's cost fits ``budget``.

    ``plan`` is anything with the plan's ``model``, ``corrector`` and ``analytic_first`` columns (a
    SolverPlan, a search genome). Returns the new model column, or None when even the all-cheapest
    assignment is over budget (T-Stitch's observation that early steps tolerate the small model).
    A moved step runs its new model whole (:func:`moved_rows_whole` clears its skip-mask row).
    """
    costs = np.asarray(model_costs, np.float64)
    cheap = int(np.argmin(costs))
    old = np.asarray(plan.model, np.int64)
    col = old.copy()
    view = SimpleNamespace(model=col, corrector=np.asarray(plan.corrector), skip=None,
                           analytic_first=int(np.asarray(plan.analytic_first)))
    limit = budget * (1 + rtol)
    for _ in range(col.shape[0] + 1):
        view.skip = moved_rows_whole(_skip_of(plan), old, col)
        if P.cost(view, costs, unit_shares=unit_shares) <= limit:
            return col
        rest = np.flatnonzero(col != cheap)
        if rest.size == 0:
            return None
        col[rest[0]] = cheap
    return None


def moved_rows_whole(skip, old_model, new_model) -> np.ndarray | None:
    """A copy of the (N, U) skip mask with the rows of steps whose model changed cleared: a unit
    index names a different block in another network, so a step moved to a model runs it whole."""
    if skip is None:
        return None
    out = np.asarray(skip, np.int64).copy()
    out[np.asarray(old_model) != np.asarray(new_model)] = 0
    return out


def skip_projection(plan, model_costs, budget: float, unit_shares, rtol: float = 1e-9,
                    damage: np.ndarray | None = None) -> np.ndarray | None:
    """Skip more units until the plan's cost fits ``budget``; returns the new (N, U) skip mask, or
    None when even skipping every unit is over budget. Units already skipped stay skipped.

    Order: with ``damage`` ((N, U), e.g. :func:`skip_damage`) greedily the running (step, unit) of
    least damage per unit of cost saved (ties: earliest step, then unit); without it, earliest step
    first and within a step its most expensive running unit first (T-Stitch's order for a smaller
    model; for bypassed units of the trained digits UNet it is the wrong end: the same plans projected
    this way sample 39-261x farther from the reference solve, benchmarks/RESULTS.md)."""
    costs = np.asarray(model_costs, np.float64)
    mask = _skip_of(plan).copy()
    model = np.asarray(plan.model, np.int64)
    view = SimpleNamespace(model=model, corrector=np.asarray(plan.corrector), skip=mask,
                           analytic_first=int(np.asarray(plan.analytic_first)))
    limit = budget * (1 + rtol)
    shares = [np.asarray(s, np.float64).reshape(-1) for s in unit_shares]
    for i, u in _skip_order(view, costs, shares, damage):
        if P.cost(view, costs, unit_shares=shares) <= limit:
            return mask
        mask[i, u] = 1
    return mask if P.cost(view, costs, unit_shares=shares) <= limit else None


def _skip_order(plan, costs: np.ndarray, shares: list, damage: np.ndarray | None) -> list[tuple[int, int]]:
    """The (step, unit) pairs a projection may still skip, in the order it skips them."""
    mask, model = plan.skip, plan.model
    calls = np.bincount([P.mask_row(e.node, mask.shape[0]) for e in P.evaluations(plan)], minlength=mask.shape[0])
    pairs, keys = [], []
    for i in range(mask.shape[0]):
        share = shares[int(model[i])]
        for u in np.argsort(-share, kind="stable"):
            if mask[i, u]:
                continue
            saved = calls[i] * costs[int(model[i])] * share[u]
            if damage is None:
                keys.append((0.0, i, -share[u], u))
            elif saved > 0:
                keys.append((float(damage[i, u]) / saved, i, 0.0, u))
            else:
                continue
            pairs.append((i, int(u)))
    return [pairs[k] for k in sorted(range(len(pairs)), key=keys.__getitem__)]


class SkipSensitivity(NamedTuple):
    """How far bypassing each unit alone moves the network's data prediction, along the model's
    own ODE trajectories: ``rms[k, u]`` = RMS over the reference states x_k of
    D_u(x_k, t_k) - D(x_k, t_k) (D: the x0 prediction; D_u: the same with unit u bypassed), at the
    log-SNR ``lam[k]`` of t_k (increasing)."""

    lam: np.ndarray   # (K,)
    rms: np.ndarray   # (K, U)

    def at(self, lam) -> np.ndarray:
        """(len(lam), U): linear interpolation in log-SNR, constant beyond the measured ends."""
        lam = np.asarray(lam, np.float64).reshape(-1)
        return np.stack([np.interp(lam, self.lam, self.rms[:, u]) for u in range(self.rms.shape[1])], axis=1)


def unit_sensitivity(model, schedule, num_samples: int = 64, nodes: int = 16, seed: int = 0) -> SkipSensitivity:
    """Measure :class:`SkipSensitivity` of ``model``: its states at the ``nodes`` log-SNR-uniform
    nodes of a DPM-Solver++(2M) solve from ``num_samples`` prior noises (seed ``seed``), each node's
    data prediction with every unit running and with each unit alone bypassed. One compiled call
    (the mask is traced): nodes x (units + 1) calls of ``num_samples`` rows."""
    units = len(getattr(model, "skip_units", ()))
    if units == 0:
        raise ValueError(f"unit_sensitivity: the model ({type(model).__name__}) has no skippable units")
    ts = discretize("logsnr", int(nodes), schedule)
    x_T = jax.random.normal(jax.random.key(seed), (int(num_samples),) + tuple(model.data_shape)) * schedule.prior_std()
    _, traj = samplers.sample(model, schedule, solvers.dpm_solver_pp(ts, order=2), x_T, return_trajectory=True)
    call = eqx.filter_jit(lambda m, mask, x, t: x0_eps(m.with_skip(mask), x, t)[0])
    eye = np.eye(units, dtype=np.int32)
    rms = np.zeros((int(nodes), units))
    for k in range(int(nodes)):
        full = call(model, jnp.zeros(units, jnp.int32), traj[k], ts[k])
        for u in range(units):
            rms[k, u] = float(jnp.sqrt(jnp.mean((call(model, jnp.asarray(eye[u]), traj[k], ts[k]) - full) ** 2)))
    lam = np.asarray(schedule.lambda_(ts[:-1]), np.float64)
    order = np.argsort(lam)
    return SkipSensitivity(lam[order], rms[order])


def skip_damage(sensitivity, schedule, plan) -> np.ndarray:
    """(N, U) first-order price of bypassing unit u in the evaluations that use step row r of
    ``plan`` (a SolverPlan or a genome's PlanView): sum over those evaluations, at node j by model m,
    of w_j * rms_mu(lambda(t_j)), where w_j = alpha_{j+1} - sigma_{j+1} alpha_j / sigma_j is the
    weight with which the first-order data-prediction step from t_j (DDIM / DPM-Solver++, Lu et al.
    2022) carries an error of the x0 prediction into the next state (j = N, a final corrector's node,
    uses the last step's weight). ``sensitivity``: one :class:`SkipSensitivity`, or one per model of
    the plan's model column (None for a model without skippable units; units a model lacks are
    priced 0). A ranking, not a prediction of the final error: later steps may damp or amplify what
    a step adds."""
    per_model = [sensitivity] if isinstance(sensitivity, SkipSensitivity) else list(sensitivity)
    ts = np.asarray(plan.ts, np.float64)
    n = ts.shape[0] - 1
    alpha, sigma, lam = (np.asarray(f(jnp.asarray(ts)), np.float64)
                         for f in (schedule.alpha, schedule.sigma, schedule.lambda_))
    w = alpha[1:] - sigma[1:] * alpha[:-1] / sigma[:-1]
    units = np.asarray(plan.skip).shape[1]
    rms = [None if sens is None else _padded(sens.at(lam), units) for sens in per_model]
    out = np.zeros((n, units))
    for e in P.evaluations(plan):
        if e.model >= len(rms):
            raise ValueError(f"skip_damage: the plan uses model {e.model}; sensitivities of {len(rms)} models given")
        if rms[e.model] is not None:
            out[P.mask_row(e.node, n)] += w[min(e.node, n - 1)] * rms[e.model][e.node]
    return out


def _padded(rms: np.ndarray, units: int) -> np.ndarray:
    """``rms`` ((K, U_m)) cut or zero-padded to ``units`` columns."""
    out = np.zeros((rms.shape[0], units))
    k = min(units, rms.shape[1])
    out[:, :k] = rms[:, :k]
    return out
