"""Named solvers as plan builders. The grid is an argument; presets only fill the columns.

Each preset also knows how many steps fit an NFE budget (``PRESETS[name].steps(nfe)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from solvers.plan import SolverPlan, make_plan

LOWER_ORDER_FINAL_BELOW = 15  # diffusers' rule: fewer than 15 steps -> lower the final orders


def multistep_orders(n: int, order: int, lower_order_final: bool = True) -> list[int]:
    """Per-step orders of a multistep method: warm-up min(order, i+1); with ``lower_order_final``
    and n < 15 steps, the last step is first order and the one before at most second order."""
    if not 1 <= order <= 4:
        raise ValueError(f"order: must be in 1..4, got {order}")
    orders = [min(order, i + 1) for i in range(n)]
    if lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
        orders[-1] = 1
        if n >= 2:
            orders[-2] = min(orders[-2], 2)
    return orders


def ddim(ts, **kw) -> SolverPlan:
    """DDIM (Song et al. 2021): the first-order exponential integrator (data or noise form coincide)."""
    return make_plan(ts, prediction="data", order=1, **kw)


def dpm_solver_pp(ts, order: int = 2, lower_order_final: bool = True, variant: str = "dpmsolver",
                  **kw) -> SolverPlan:
    """DPM-Solver++ multistep (Lu et al. 2022b): data prediction, orders 1-3 (2M, 3M)."""
    n = len(ts) - 1
    return make_plan(ts, prediction="data", order=multistep_orders(n, order, lower_order_final),
                     variant=variant, **kw)


def dpm_solver(ts, order: int = 2, lower_order_final: bool = True, variant: str = "dpmsolver",
               **kw) -> SolverPlan:
    """DPM-Solver multistep (Lu et al. 2022a): noise prediction, orders 1-3."""
    n = len(ts) - 1
    return make_plan(ts, prediction="noise", order=multistep_orders(n, order, lower_order_final),
                     variant=variant, **kw)


@dataclass(frozen=True)
class Preset:
    """A named solver: ``build(ts, **options)`` and the number of steps for an NFE budget."""

    build: Callable[..., SolverPlan]
    steps: Callable[[int], int]
    options: tuple[str, ...] = ()


def _same(nfe: int) -> int:
    return nfe


PRESETS: dict[str, Preset] = {
    "ddim": Preset(ddim, _same),
    "dpm_solver": Preset(dpm_solver, _same, ("order", "variant", "lower_order_final")),
    "dpm_solver_pp": Preset(dpm_solver_pp, _same, ("order", "variant", "lower_order_final")),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"solver: unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[name]


def build_preset(name: str, nfe: int, schedule, discretization: str = "logsnr", **options) -> SolverPlan:
    """Config-edge helper: a preset at an NFE budget on a named discretization."""
    from schedules import discretize

    p = preset(name)
    unknown = set(options) - set(p.options)
    if unknown:
        raise ValueError(f"solver {name!r}: unknown options {sorted(unknown)}; allowed: {list(p.options)}")
    if not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe: must be an integer >= 1, got {nfe!r}")
    n = p.steps(nfe)
    if n < 1:
        raise ValueError(f"nfe: {nfe} is too small for solver {name!r}")
    plan = p.build(discretize(discretization, n, schedule), **options)
    assert plan.nfe() == nfe or name not in ("ddim", "dpm_solver", "dpm_solver_pp"), "NFE accounting"
    return plan
