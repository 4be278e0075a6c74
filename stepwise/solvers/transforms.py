"""Plan transforms: functions SolverPlan -> SolverPlan that change columns, never the step count."""
from __future__ import annotations

import numpy as np

from stepwise.solvers.plan import SolverPlan


def t_stitch(plan: SolverPlan, fraction: float, small: int = 0, large: int = 1) -> SolverPlan:
    """T-Stitch (Pan et al. 2024): the first round(fraction * N) steps of ``plan`` run the
    ``small`` model, the rest the ``large`` one (a new model column; nothing else changes)."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"t_stitch: fraction must be in [0, 1], got {fraction}")
    n = plan.num_steps
    k = int(round(float(fraction) * n))
    col = np.where(np.arange(n) < k, small, large).astype(np.int32)
    return plan.replace(model=col)


def sweep_fractions(num_steps: int, points: int | None = None) -> list[float]:
    """Fractions k/N (k = 0..N) for a T-Stitch sweep; ``points`` thins them to about that many
    (always keeping 0 and 1)."""
    ks = np.arange(num_steps + 1)
    if points and points < num_steps + 1:
        ks = np.unique(np.round(np.linspace(0, num_steps, int(points))).astype(int))
    return [float(k) / num_steps for k in ks]
