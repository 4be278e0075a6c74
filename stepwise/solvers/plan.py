"""SolverPlan: what a sampling run IS, as per-step arrays (no loops, no strings).

A plan with N steps has time nodes ts[N+1] (decreasing) and, for each step i (from node i to
node i+1), the columns below. Two plans with the same N share one compiled sampler: every
choice is an array VALUE (optax's inject_hyperparams idea), never Python structure.

Step i evaluates the model at node i (unless the value is already known), then moves from a
base node (i - base[i]) to node i+1 with an exponential-integrator update built from the
latest ``order[i]`` evaluated nodes (Lu et al. 2022, DPM-Solver/DPM-Solver++; Zhao et al. 2023,
UniPC; Zhang & Chen 2023, DEIS), optionally followed by a corrector.
"""
from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.schedules import validate_ts

# Prediction the update integrates (column ``prediction``).
NOISE, DATA = 0, 1
PREDICTION_CODES = {"noise": NOISE, "data": DATA}

# Coefficient rule for the derivative terms (column ``variant``).
TAYLOR, DPMSOLVER, BH1, BH2, FREE, EQUISPACED = 0, 1, 2, 3, 4, 5
VARIANT_CODES = {"taylor": TAYLOR, "dpmsolver": DPMSOLVER, "bh1": BH1, "bh2": BH2, "free": FREE,
                 "equispaced": EQUISPACED}

# Variable in which the prediction is interpolated (column ``expansion``).
EXPAND_LAMBDA, EXPAND_T, EXPAND_SIGMA = 0, 1, 2
EXPANSION_CODES = {"lambda": EXPAND_LAMBDA, "t": EXPAND_T, "sigma": EXPAND_SIGMA}

# Corrector after the step (column ``corrector``): UniC reuses its evaluation as the next
# node's value (no extra NFE except at the last step); REEVAL (Heun/PECE) evaluates again.
NO_CORRECTOR, UNIC, REEVAL = 0, 1, 2
CORRECTOR_CODES = {"none": NO_CORRECTOR, "unic": UNIC, "reeval": REEVAL}

MAX_ORDER = 4
HISTORY = 4  # evaluated nodes kept by the sampler (enough for order 4 and base offsets < 4)


def _code(name: str, value, table: dict) -> int:
    if isinstance(value, (int, np.integer)) and int(value) in table.values():
        return int(value)
    if value not in table:
        raise ValueError(f"{name}: unknown value {value!r}; allowed: {sorted(table)}")
    return table[value]


class SolverPlan(eqx.Module):
    """Per-step solver decisions as arrays (a PyTree; every leaf is a jnp array)."""

    ts: jnp.ndarray           # (N+1,) decreasing time nodes
    prediction: jnp.ndarray   # (N,) int32: NOISE | DATA
    order: jnp.ndarray        # (N,) int32: Taylor order 1..4 (history points used)
    variant: jnp.ndarray      # (N,) int32: TAYLOR | DPMSOLVER | BH1 | BH2 | FREE | EQUISPACED
    expansion: jnp.ndarray    # (N,) int32: EXPAND_LAMBDA | EXPAND_T | EXPAND_SIGMA
    coef: jnp.ndarray         # (N,) float: free multiplier of the highest-order term (FREE)
    base: jnp.ndarray         # (N,) int32: the step starts from node i - base[i] (0: multistep)
    corrector: jnp.ndarray    # (N,) int32: NO_CORRECTOR | UNIC | REEVAL
    model: jnp.ndarray        # (N,) int32: index of the denoiser evaluated at node i
    guidance: jnp.ndarray     # (N,) float: classifier-free guidance scale at node i
    analytic_first: jnp.ndarray  # () int32: 1 = no model call at node 0 (x0 = data mean)
    corrections: jnp.ndarray  # (N, HISTORY+1) float: additive corrections to the step's history weights
                              # (predictor slots 0..HISTORY-1, corrector's new point HISTORY); 0 = the solver
    skip: jnp.ndarray         # (N, U) int32 0/1: unit u of the denoiser is bypassed at the evaluation of
                              # node i (AutoDiffusion's per-step architecture); U = 0: every unit runs

    @property
    def num_steps(self) -> int:
        return int(self.ts.shape[0]) - 1

    def validate(self, schedule=None, num_models: int | None = None, unit_counts=None) -> "SolverPlan":
        """Raise ValueError naming the step and field of the first impossible choice."""
        validate(self, schedule, num_models, unit_counts)
        return self

    def nfe(self) -> int:
        return nfe(self)

    def replace(self, **kw) -> "SolverPlan":
        return eqx.tree_at(lambda p: [getattr(p, k) for k in kw], self,
                           [jnp.asarray(v, getattr(self, k).dtype) for k, v in kw.items()])


def make_plan(ts, *, prediction="data", order=1, variant="taylor", expansion="lambda", coef=1.0,
              base=0, corrector="none", model=0, guidance=1.0, analytic_first=False,
              corrections=None, skip=None) -> SolverPlan:
    """Build a plan; each column may be a scalar (broadcast) or a per-step sequence of names/codes.

    ``corrections`` (N, HISTORY+1) are learned additive corrections to every step's weights over its
    history (S4S / GAS style); the default zeros run the solver exactly as published. ``skip`` (N, U)
    0/1 masks the denoiser's skippable units per evaluated node (``Denoiser.skip_units``); the
    default (N, 0) runs the whole network everywhere."""
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts: need a 1-D array of at least 2 nodes, got shape {ts.shape}")
    n = ts.shape[0] - 1

    def column(name, value, table=None, dtype=jnp.int32):
        vals = value if isinstance(value, (list, tuple, np.ndarray, jnp.ndarray)) else [value] * n
        if len(vals) != n:
            raise ValueError(f"{name}: expected {n} per-step values, got {len(vals)}")
        if table is not None:
            vals = [_code(name, v, table) for v in vals]
        return jnp.asarray(np.asarray(vals), dtype=dtype)

    return SolverPlan(
        ts=ts,
        prediction=column("prediction", prediction, PREDICTION_CODES),
        order=column("order", order),
        variant=column("variant", variant, VARIANT_CODES),
        expansion=column("expansion", expansion, EXPANSION_CODES),
        coef=column("coef", coef, dtype=ts.dtype),
        base=column("base", base),
        corrector=column("corrector", corrector, CORRECTOR_CODES),
        model=column("model", model),
        guidance=column("guidance", guidance, dtype=ts.dtype),
        analytic_first=jnp.asarray(int(bool(analytic_first)), jnp.int32),
        corrections=(jnp.zeros((n, HISTORY + 1), ts.dtype) if corrections is None
                     else jnp.asarray(corrections, ts.dtype)),
        skip=jnp.zeros((n, 0), jnp.int32) if skip is None else jnp.asarray(np.asarray(skip), jnp.int32),
    )


class Evaluation(NamedTuple):
    """One model call of a plan: made for ``step`` at time node ``node`` by denoiser ``model``;
    ``guided`` when the guidance scale there is not 1 (a doubled CFG batch, still one NFE);
    ``corrector`` when it is the corrector's call at the predicted point."""

    step: int
    node: int
    model: int
    guided: bool
    corrector: bool


def mask_row(node, num_steps: int):
    """The per-step row (model, guidance, skip mask) used by an evaluation at ``node``: min(node, N-1)."""
    return np.minimum(node, num_steps - 1) if isinstance(node, (int, np.integer)) else jnp.minimum(node, num_steps - 1)


def evaluations(plan) -> tuple[Evaluation, ...]:
    """Every model evaluation of ``plan`` in execution order: THE source of NFE and cost.

    Step i first needs the value at node i: a model call, unless i = 0 with ``analytic_first``
    (x0 = data mean) or step i-1's UniC corrector already evaluated node i. A corrector of step i
    then evaluates node i+1 with the model, guidance scale and skip mask of step min(i+1, N-1) (the
    executor's rule, :func:`mask_row`). Reads only the ``corrector``, ``model``, ``guidance`` and
    ``analytic_first`` columns, so NumPy views of a plan work too.
    """
    corr = np.asarray(plan.corrector)
    n = corr.shape[0]
    model = np.broadcast_to(np.asarray(getattr(plan, "model", 0), np.int64), (n,))
    guide = np.broadcast_to(np.asarray(getattr(plan, "guidance", 1.0), np.float64), (n,))
    out = []
    for i in range(n):
        fresh = (not int(plan.analytic_first)) if i == 0 else int(corr[i - 1]) != UNIC
        if fresh:
            out.append(Evaluation(i, i, int(model[i]), bool(guide[i] != 1.0), False))
        if int(corr[i]) != NO_CORRECTOR:
            j = min(i + 1, n - 1)
            out.append(Evaluation(i, i + 1, int(model[j]), bool(guide[j] != 1.0), True))
    return tuple(out)


def nfe(plan) -> int:
    """Exact number of function evaluations of a plan (a CFG call of a doubled batch counts once)."""
    return len(evaluations(plan))


def evaluations_per_step(plan) -> np.ndarray:
    """Model evaluations charged to each step (N,): the value at node i plus its corrector's call."""
    n = np.asarray(plan.corrector).shape[0]
    return np.bincount([e.step for e in evaluations(plan)], minlength=n).astype(np.int64)


def evaluations_per_model(plan, num_models: int) -> np.ndarray:
    """How many evaluations each of ``num_models`` denoisers makes (sums to ``nfe(plan)``)."""
    return np.bincount([e.model for e in evaluations(plan)], minlength=num_models)[:num_models]


def cost(plan, model_costs, *, guidance_doubles: bool = False, unit_shares=None) -> float:
    """Sum over the plan's evaluations of the cost of the model evaluated there: THE plan accounting.

    ``model_costs[m]`` is denoiser m's cost per full call (e.g. relative to the largest: then the unit
    is "evaluations of the most expensive model"). With ``guidance_doubles`` a guided call counts
    twice (a CFG evaluation runs a doubled batch; ``nfe`` counts it once). ``unit_shares[m][u]`` is the
    fraction of model m's call that unit u costs (``denoisers.skipping.unit_shares``, measured from
    XLA's cost analysis): an evaluation whose skip mask row is s costs c_m (1 - sum_u s_u share_mu).
    A plan with a non-empty skip mask needs ``unit_shares``.
    """
    c = np.asarray(model_costs, np.float64).reshape(-1)
    if c.size == 0 or np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"model_costs: must be positive and finite, got {c.tolist()}")
    ev = evaluations(plan)
    if ev and max(e.model for e in ev) >= c.shape[0]:
        raise ValueError(f"model_costs: plan uses model {max(e.model for e in ev)} but only "
                         f"{c.shape[0]} costs are given")
    fraction = _mask_fractions(plan, ev, unit_shares)
    return float(sum(c[e.model] * f * (2.0 if guidance_doubles and e.guided else 1.0) for e, f in zip(ev, fraction)))


def _mask_fractions(plan, ev, unit_shares) -> list[float]:
    """Per evaluation, the fraction of its model's full cost that its skip mask leaves."""
    skip = getattr(plan, "skip", None)
    skip = None if skip is None else np.asarray(skip)
    if skip is None or skip.ndim != 2 or skip.shape[1] == 0 or not np.any(skip):
        return [1.0] * len(ev)
    if unit_shares is None:
        raise ValueError("cost: the plan skips network units; pass unit_shares (denoisers.skipping.unit_shares)")
    n = skip.shape[0]
    out = []
    for e in ev:
        share = np.asarray(unit_shares[e.model], np.float64).reshape(-1)
        r = mask_row(e.node, n)
        if np.any(skip[r, share.shape[0]:]):
            raise ValueError(f"cost: step {r} skips units model {e.model} does not have")
        out.append(float(1.0 - np.dot(skip[r, :share.shape[0]].astype(np.float64), share)))
    return out


class Violation(NamedTuple):
    """One broken rule: ``step`` (None for the whole plan), ``field``, its ``value`` and what is
    ``allowed`` there: a tuple of the allowed codes, or a description when no finite set exists."""

    step: int | None
    field: str
    value: object
    allowed: object
    text: str = ""   # a complete message, when a lower layer (schedules.validate_ts) wrote one

    def message(self) -> str:
        if self.text:
            return self.text
        allowed = self.allowed
        if isinstance(allowed, tuple) and allowed and all(isinstance(a, (int, np.integer)) for a in allowed):
            allowed = _describe_codes(self.field, allowed)
        if self.step is None:
            return f"plan.{self.field}: {self.value} is invalid; allowed: {allowed}"
        return f"plan step {self.step}: {self.field}={self.value!r} is invalid; allowed: {allowed}"


_TABLES = {"prediction": PREDICTION_CODES, "variant": VARIANT_CODES, "expansion": EXPANSION_CODES,
           "corrector": CORRECTOR_CODES}
STEP_FIELDS = ("prediction", "order", "variant", "expansion", "coef", "base", "corrector", "model", "guidance")


def _describe_codes(field: str, codes: tuple) -> str:
    if field in _TABLES:
        names = {v: k for k, v in _TABLES[field].items()}
        return ", ".join(f"{int(c)} ({names[int(c)]})" for c in codes)
    lo, hi = int(min(codes)), int(max(codes))
    return f"{lo}..{hi}" if tuple(codes) == tuple(range(lo, hi + 1)) else str([int(c) for c in codes])


def allowed_orders(i: int, variant: int, corrector: int) -> tuple[int, ...]:
    """Taylor orders step i may use: at most the i+1 nodes evaluated so far and ``MAX_ORDER``;
    at most 3 with DPM-Solver's own coefficients; below ``MAX_ORDER`` when a UniC corrector adds the
    new point to the history."""
    hi = min(i + 1, MAX_ORDER)
    if variant == DPMSOLVER:
        hi = min(hi, 3)
    if corrector == UNIC:
        hi = min(hi, MAX_ORDER - 1)
    return tuple(range(1, hi + 1))


def allowed_bases(i: int) -> tuple[int, ...]:
    """Offsets back from node i to step i's starting node: 0..min(i, HISTORY - 1)."""
    return tuple(range(0, min(i, HISTORY - 1) + 1))


def violations(plan, schedule=None, num_models: int | None = None, unit_counts=None) -> list[Violation]:
    """Every broken rule of a concrete plan: THE list of validity rules.

    :func:`validate` formats the first one; the search's repair consumes them all (each carries the
    allowed codes, so the nearest allowed value can replace the bad one).
    """
    ts = np.asarray(plan.ts, dtype=np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2:
        return [Violation(None, "ts", f"shape {ts.shape}", "a 1-D array of at least 2 nodes")]
    n = ts.shape[0] - 1
    if not np.all(np.isfinite(ts)):
        return [Violation(None, "ts", f"{int(np.sum(~np.isfinite(ts)))} non-finite nodes", "finite times")]
    if schedule is not None:
        try:
            validate_ts(ts, schedule, "plan.ts")
        except ValueError as e:
            return [Violation(None, "ts", "outside the schedule's domain", "see message", text=str(e))]
    elif not np.all(np.diff(ts) < 0):
        return [Violation(None, "ts", "not strictly decreasing", "strictly decreasing time nodes",
                          text="plan.ts: time nodes must be strictly decreasing")]
    cols = {f: np.asarray(getattr(plan, f)) for f in STEP_FIELDS}
    out = []
    for f, v in cols.items():
        if v.shape != (n,):
            out.append(Violation(None, f, f"shape {v.shape}", f"shape ({n},) for {n} steps"))
        elif not np.all(np.isfinite(v)):
            out.append(Violation(int(np.flatnonzero(~np.isfinite(v))[0]), f, "non-finite", "finite values"))
    corr = np.asarray(getattr(plan, "corrections", np.zeros((n, HISTORY + 1))))
    if corr.shape != (n, HISTORY + 1):
        out.append(Violation(None, "corrections", f"shape {corr.shape}", f"shape ({n}, {HISTORY + 1})"))
    elif not np.all(np.isfinite(corr)):
        out.append(Violation(None, "corrections", "non-finite values", "finite values"))
    out += _skip_violations(plan, n, cols["model"], unit_counts)
    if out:
        return out
    for i in range(n):
        for f, table in _TABLES.items():
            if int(cols[f][i]) not in table.values():
                out.append(Violation(i, f, cols[f][i].item(), tuple(sorted(table.values()))))
        orders = allowed_orders(i, int(cols["variant"][i]), int(cols["corrector"][i]))
        if int(cols["order"][i]) not in orders:
            out.append(Violation(i, "order", cols["order"][i].item(), orders))
        if int(cols["base"][i]) not in allowed_bases(i):
            out.append(Violation(i, "base", cols["base"][i].item(), allowed_bases(i)))
        if num_models is not None and not 0 <= int(cols["model"][i]) < num_models:
            out.append(Violation(i, "model", cols["model"][i].item(), tuple(range(num_models))))
    af = int(np.asarray(plan.analytic_first))
    if af not in (0, 1):
        out.append(Violation(None, "analytic_first", af, (0, 1)))
    return out


def _skip_violations(plan, n: int, model, unit_counts) -> list[Violation]:
    """The skip mask: shape (N, U) with U = 0 or (when the models' skippable unit counts
    ``unit_counts`` are known) the largest of them, values 0/1, and no step masking a unit its model
    does not have."""
    skip = getattr(plan, "skip", None)
    if skip is None:
        return []
    skip = np.asarray(skip)
    if skip.ndim != 2 or skip.shape[0] != n:
        return [Violation(None, "skip", f"shape {skip.shape}", f"shape ({n}, units)")]
    if skip.shape[1] == 0:
        return []
    if not np.all((skip == 0) | (skip == 1)):
        return [Violation(None, "skip", "values other than 0/1", "0 (unit runs) or 1 (unit skipped)")]
    if unit_counts is None:
        return []
    counts = [int(u) for u in unit_counts]
    if skip.shape[1] != max(counts):
        return [Violation(None, "skip", f"{skip.shape[1]} units per step",
                          f"{max(counts)} (the denoiser's skippable units) or 0",
                          text=f"plan.skip: masks of {skip.shape[1]} units, but the denoisers have {counts} skippable "
                               "units; a skip mask is made for one network (denoisers without skippable units accept "
                               "only plans without masks)")]
    out = []
    for i in range(n):
        m = int(model[i]) if 0 <= int(model[i]) < len(counts) else 0
        if np.any(skip[i, counts[m]:]):
            out.append(Violation(i, "skip", skip[i].tolist(), f"zeros beyond unit {counts[m]} (model {m} has "
                                 f"{counts[m]} skippable units)"))
    return out


def validate(plan, schedule=None, num_models: int | None = None, unit_counts=None) -> None:
    """Raise ValueError naming the step, the field and the allowed values of the first broken rule."""
    bad = violations(plan, schedule, num_models, unit_counts)
    if bad:
        raise ValueError(bad[0].message())


def stack_plans(plans) -> SolverPlan:
    """Stack plans with the same number of steps along a leading axis (for vmapped evaluation)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *plans)
