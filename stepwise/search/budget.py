"""Compute budgets of a search: which plans fit, and the projection that makes a plan fit.

A plan's cost is ``solvers.plan.cost`` (the sum over its evaluations of the cost of the model
evaluated there, less the measured share of the units its skip masks bypass); a budget is in
evaluations (``unit="nfe"``) or in those cost units.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
    """
    costs = np.asarray(model_costs, np.float64)
    cheap = int(np.argmin(costs))
    col = np.asarray(plan.model, np.int64).copy()
    view = SimpleNamespace(model=col, corrector=np.asarray(plan.corrector), skip=_skip_of(plan),
                           analytic_first=int(np.asarray(plan.analytic_first)))
    limit = budget * (1 + rtol)
    for _ in range(col.shape[0] + 1):
        if P.cost(view, costs, unit_shares=unit_shares) <= limit:
            return col
        rest = np.flatnonzero(col != cheap)
        if rest.size == 0:
            return None
        col[rest[0]] = cheap
    return None


def skip_projection(plan, model_costs, budget: float, unit_shares, rtol: float = 1e-9) -> np.ndarray | None:
    """Skip units (earliest step first; within a step its most expensive running unit first) until
    the plan's cost fits ``budget``; returns the new (N, U) skip mask, or None when even skipping
    every unit is over budget. The early, noisy steps are the ones that tolerate a coarser network
    (T-Stitch's observation, applied to AutoDiffusion's per-step architectures)."""
    costs = np.asarray(model_costs, np.float64)
    mask = _skip_of(plan).copy()
    model = np.asarray(plan.model, np.int64)
    view = SimpleNamespace(model=model, corrector=np.asarray(plan.corrector), skip=mask,
                           analytic_first=int(np.asarray(plan.analytic_first)))
    limit = budget * (1 + rtol)
    shares = [np.asarray(s, np.float64).reshape(-1) for s in unit_shares]
    for i in range(mask.shape[0]):
        share = shares[int(model[i])]
        for u in np.argsort(-share, kind="stable"):
            if P.cost(view, costs, unit_shares=shares) <= limit:
                return mask
            mask[i, u] = 1
    return mask if P.cost(view, costs, unit_shares=shares) <= limit else None
