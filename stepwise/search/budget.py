"""Compute budgets of a search: which plans fit, and the projection that makes a plan fit.

A plan's cost is ``solvers.plan.cost`` (the sum over its evaluations of the cost of the model
evaluated there); a budget is in evaluations (``unit="nfe"``) or in those cost units.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from stepwise.solvers import plan as P

BUDGET_UNITS = ("nfe", "cost")


def within_budget(plan, budget: float, unit: str = "cost", model_costs=None, rtol: float = 1e-9) -> bool:
    """Whether ``plan`` fits ``budget`` evaluations (``unit="nfe"``) or cost units (``unit="cost"``)."""
    if unit not in BUDGET_UNITS:
        raise ValueError(f"budget unit: {unit!r} is invalid; allowed: {list(BUDGET_UNITS)}")
    if unit == "nfe":
        return P.nfe(plan) <= budget
    if model_costs is None:
        raise ValueError("within_budget: a cost budget needs model_costs")
    return P.cost(plan, model_costs) <= budget * (1 + rtol)


def cheapest_first_projection(plan, model_costs, budget: float, rtol: float = 1e-9) -> np.ndarray | None:
    """Move steps (earliest first) to the cheapest model until the plan's cost fits ``budget``.

    ``plan`` is anything with the plan's ``model``, ``corrector`` and ``analytic_first`` columns (a
    SolverPlan, a search genome). Returns the new model column, or None when even the all-cheapest
    assignment is over budget (T-Stitch's observation that early steps tolerate the small model).
    """
    costs = np.asarray(model_costs, np.float64)
    cheap = int(np.argmin(costs))
    col = np.asarray(plan.model, np.int64).copy()
    view = SimpleNamespace(model=col, corrector=np.asarray(plan.corrector),
                           analytic_first=int(np.asarray(plan.analytic_first)))
    limit = budget * (1 + rtol)
    for _ in range(col.shape[0] + 1):
        if P.cost(view, costs) <= limit:
            return col
        rest = np.flatnonzero(col != cheap)
        if rest.size == 0:
            return None
        col[rest[0]] = cheap
    return None
