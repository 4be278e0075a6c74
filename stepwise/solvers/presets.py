"""Named solvers as plan builders. The grid is an argument; presets only fill the columns.

Each preset also knows how many steps fit an NFE budget (``PRESETS[name].steps(nfe)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stepwise.schedules import discretize
from stepwise.solvers.plan import SolverPlan, make_plan

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


def singlestep_orders(n: int, order: int, lower_order_final: bool = True) -> list[int]:
    """Per-step orders of a singlestep method (diffusers' DPMSolverSinglestepScheduler rule): groups
    [1, 2, .., order], each group one DPM-Solver-k step from the group's first node. With
    ``lower_order_final`` a remainder of n mod order steps ends in a shorter group (and an n divisible
    by 3 ends ..., [1, 2], [1]); without it the remainder is a shorter group too."""
    if not 1 <= order <= 3:
        raise ValueError(f"order: must be in 1..3 for a singlestep method, got {order}")
    group = list(range(1, order + 1))
    if order == 1:
        return [1] * n
    k, rem = divmod(n, order)
    if lower_order_final and order == 3 and rem == 0:
        return (group * (k - 1) + [1, 2, 1])[:n] if k >= 1 else []
    if lower_order_final and order == 2 and rem == 0:
        return group * (k - 1) + [1, 1]
    return group * k + group[:rem]


def _singlestep(ts, order, lower_order_final, variant, prediction, **kw) -> SolverPlan:
    n = len(ts) - 1
    orders = singlestep_orders(n, order, lower_order_final)
    return make_plan(ts, prediction=prediction, order=orders, base=[o - 1 for o in orders],
                     variant=variant, **kw)


def dpm_solver_pp_singlestep(ts, order: int = 2, lower_order_final: bool = True,
                             variant: str = "dpmsolver", **kw) -> SolverPlan:
    """DPM-Solver++ singlestep (2S/3S): within a group of k steps, step j (order j) starts from the
    group's first node and uses every node evaluated in the group (``base`` = j - 1)."""
    return _singlestep(ts, order, lower_order_final, variant, "data", **kw)


def dpm_solver_singlestep(ts, order: int = 2, lower_order_final: bool = True,
                          variant: str = "dpmsolver", **kw) -> SolverPlan:
    """DPM-Solver singlestep (DPM-Solver-2/3, Lu et al. 2022a) on noise prediction."""
    return _singlestep(ts, order, lower_order_final, variant, "noise", **kw)


def unipc_orders(n: int, order: int, lower_order_final: bool = True) -> list[int]:
    """UniPC's per-step orders (diffusers): warm-up min(order, i+1) and, with ``lower_order_final``,
    min(order, n - i) at the end whatever n is (no 15-step threshold)."""
    if not 1 <= order <= 3:
        raise ValueError(f"order: must be in 1..3 for UniPC, got {order}")
    return [min(order, i + 1, n - i if lower_order_final else order) for i in range(n)]


def unipc(ts, order: int = 2, variant: str = "bh2", prediction: str = "data", corrector: bool = True,
          disable_corrector=(), lower_order_final: bool = True, **kw) -> SolverPlan:
    """UniPC (Zhao et al. 2023): UniP-p predictor plus the UniC corrector, which reuses the next
    node's evaluation, so it costs no NFE; as in diffusers it is skipped after the last step and
    after the steps listed in ``disable_corrector``."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant: UniPC defines 'bh1' or 'bh2', got {variant!r}")
    n = len(ts) - 1
    corr = ["unic" if corrector and i < n - 1 and i not in set(disable_corrector) else "none"
            for i in range(n)]
    return make_plan(ts, prediction=prediction, order=unipc_orders(n, order, lower_order_final),
                     variant=variant, corrector=corr, **kw)


def deis_tab(ts, order: int = 3, expansion: str = "t", lower_order_final: bool = True, **kw) -> SolverPlan:
    """DEIS tAB (Zhang & Chen 2023): eps extrapolated by a polynomial in t through the last ``order``
    nodes and integrated exactly against the exponential-integrator kernel. ``expansion="lambda"`` is
    diffusers' "logrho" DEIS (a polynomial in log-SNR, the same as DPM-Solver's exact-moment form)."""
    n = len(ts) - 1
    return make_plan(ts, prediction="noise", order=multistep_orders(n, order, lower_order_final),
                     variant="taylor", expansion=expansion, **kw)


def ipndm(ts, order: int = 4, variable_step: bool = False, **kw) -> SolverPlan:
    """iPNDM (Zhang & Chen 2023; k-diffusion's sample_ipndm): Adams-Bashforth on eps in the scaled
    sigma with warm-up orders min(order, i+1). The default uses the fixed equal-step coefficients
    (e.g. (55, -59, 37, -9)/24); ``variable_step=True`` places the points where they are."""
    if not 1 <= order <= 4:
        raise ValueError(f"order: must be in 1..4 for iPNDM, got {order}")
    n = len(ts) - 1
    return make_plan(ts, prediction="noise", order=[min(order, i + 1) for i in range(n)],
                     variant="taylor" if variable_step else "equispaced", expansion="sigma", **kw)


def euler(ts, **kw) -> SolverPlan:
    """Euler in EDM's scaled sigma on eps (Karras et al. 2022): x~ += (s' - s) eps. The same update
    as DDIM, written in the sigma expansion."""
    return make_plan(ts, prediction="noise", order=1, expansion="sigma", **kw)


def heun(ts, final_euler: bool = True, **kw) -> SolverPlan:
    """Heun in EDM's scaled sigma (Karras et al. 2022): Euler predictor, re-evaluation at the
    predicted point, trapezoid corrector. With ``final_euler`` (diffusers' HeunDiscreteScheduler) the
    last step is a plain Euler step: NFE = 2N - 1; without it NFE = 2N."""
    n = len(ts) - 1
    corr = ["reeval"] * n
    if final_euler:
        corr[-1] = "none"
    return make_plan(ts, prediction="noise", order=1, expansion="sigma", corrector=corr, **kw)


@dataclass(frozen=True)
class Preset:
    """A named solver: ``build(ts, **options)`` and the number of steps for an NFE budget."""

    build: Callable[..., SolverPlan]
    steps: Callable[[int], int]
    options: tuple[str, ...] = ()
    fit: Callable[[int], dict] | None = None  # options a preset needs to hit an NFE exactly

    def at_nfe(self, nfe: int) -> dict:
        """Options that make ``build(ts with steps(nfe) steps)`` spend exactly ``nfe`` evaluations."""
        return {} if self.fit is None else self.fit(nfe)


def _same(nfe: int) -> int:
    return nfe


def _heun_steps(nfe: int) -> int:
    return (nfe + 1) // 2


def _heun_fit(nfe: int) -> dict:
    # odd NFE: diffusers' final Euler step; even NFE: Heun at every step
    return {"final_euler": nfe % 2 == 1}


PRESETS: dict[str, Preset] = {
    "ddim": Preset(ddim, _same),
    "dpm_solver": Preset(dpm_solver, _same, ("order", "variant", "lower_order_final")),
    "dpm_solver_pp": Preset(dpm_solver_pp, _same, ("order", "variant", "lower_order_final")),
    "dpm_solver_singlestep": Preset(dpm_solver_singlestep, _same, ("order", "variant", "lower_order_final")),
    "dpm_solver_pp_singlestep": Preset(dpm_solver_pp_singlestep, _same,
                                       ("order", "variant", "lower_order_final")),
    "unipc": Preset(unipc, _same, ("order", "variant", "prediction", "corrector", "disable_corrector",
                                   "lower_order_final")),
    "deis_tab": Preset(deis_tab, _same, ("order", "expansion", "lower_order_final")),
    "ipndm": Preset(ipndm, _same, ("order", "variable_step")),
    "euler": Preset(euler, _same),
    "heun": Preset(heun, _heun_steps, ("final_euler",), fit=_heun_fit),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"solver: unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[name]


MAX_NFE = 1000   # a few-step library; larger budgets are a typo (1e9 exhausted memory before an error)


def build_preset(name: str, nfe: int, schedule, discretization: str = "logsnr", **options) -> SolverPlan:
    """Config-edge helper: a preset at an NFE budget on a named discretization."""

    p = preset(name)
    unknown = set(options) - set(p.options)
    if unknown:
        raise ValueError(f"solver {name!r}: unknown options {sorted(unknown)}; allowed: {list(p.options)}")
    if not isinstance(nfe, int) or not 1 <= nfe <= MAX_NFE:
        raise ValueError(f"nfe: {nfe!r} is invalid; allowed: an integer in 1..{MAX_NFE}")
    n = p.steps(nfe)
    if n < 1:
        raise ValueError(f"nfe: {nfe} is too small for solver {name!r}")
    plan = p.build(discretize(discretization, n, schedule), **{**p.at_nfe(nfe), **options})
    if plan.nfe() != nfe:
        raise ValueError(f"solver {name!r} with options {options} spends {plan.nfe()} evaluations, "
                         f"not the requested nfe={nfe}")
    return plan
