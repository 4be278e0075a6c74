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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

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

# Codes that exist in the plan format but whose coefficients are not derived yet.
IMPLEMENTED_LATER = {"variant": [], "expansion": []}

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

    @property
    def num_steps(self) -> int:
        return int(self.ts.shape[0]) - 1

    def validate(self, schedule=None, num_models: int | None = None) -> "SolverPlan":
        """Raise ValueError naming the step and field of the first impossible choice."""
        validate(self, schedule, num_models)
        return self

    def nfe(self) -> int:
        return nfe(self)

    def replace(self, **kw) -> "SolverPlan":
        return eqx.tree_at(lambda p: [getattr(p, k) for k in kw], self,
                           [jnp.asarray(v, getattr(self, k).dtype) for k, v in kw.items()])


def make_plan(ts, *, prediction="data", order=1, variant="taylor", expansion="lambda", coef=1.0,
              base=0, corrector="none", model=0, guidance=1.0, analytic_first=False) -> SolverPlan:
    """Build a plan; each column may be a scalar (broadcast) or a per-step sequence of names/codes."""
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
    )


def evaluations_per_step(plan: SolverPlan) -> np.ndarray:
    """Model evaluations charged to each step (N,): the value at node i plus its corrector's call."""
    corr = np.asarray(plan.corrector)
    need = np.ones_like(corr)
    need[0] = 0 if int(plan.analytic_first) else 1
    need[1:] = (corr[:-1] != UNIC).astype(need.dtype)
    return need + (corr != NO_CORRECTOR)


def nfe(plan: SolverPlan) -> int:
    """Exact number of function evaluations of a plan (a CFG call of a doubled batch counts once)."""
    return int(evaluations_per_step(plan).sum())


def validate(plan: SolverPlan, schedule=None, num_models: int | None = None) -> None:
    """Check a concrete plan; the message names the step and the field."""
    ts = np.asarray(plan.ts, dtype=np.float64)
    n = ts.shape[0] - 1
    if schedule is not None:
        from schedules import validate_ts
        validate_ts(ts, schedule, "plan.ts")
    elif not np.all(np.diff(ts) < 0):
        raise ValueError("plan.ts: time nodes must be strictly decreasing")
    cols = {f: np.asarray(getattr(plan, f)) for f in
            ("prediction", "order", "variant", "expansion", "coef", "base", "corrector", "model", "guidance")}
    for f, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"plan.{f}: shape {v.shape}, expected ({n},) for {n} steps")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"plan.{f}: non-finite values")

    def check(field, ok, allowed):
        bad = np.flatnonzero(~ok)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"plan step {i}: {field}={cols[field][i].item()!r} is invalid; allowed: {allowed}")

    check("prediction", np.isin(cols["prediction"], list(PREDICTION_CODES.values())), PREDICTION_CODES)
    check("variant", np.isin(cols["variant"], list(VARIANT_CODES.values())), VARIANT_CODES)
    check("variant", ~np.isin(cols["variant"], IMPLEMENTED_LATER["variant"]), "an implemented variant")
    check("expansion", ~np.isin(cols["expansion"], IMPLEMENTED_LATER["expansion"]), "an implemented expansion")
    check("expansion", np.isin(cols["expansion"], list(EXPANSION_CODES.values())), EXPANSION_CODES)
    check("corrector", np.isin(cols["corrector"], list(CORRECTOR_CODES.values())), CORRECTOR_CODES)
    check("order", (cols["order"] >= 1) & (cols["order"] <= MAX_ORDER), f"1..{MAX_ORDER}")
    avail = np.arange(n) + 1  # nodes 0..i have values at step i
    check("order", cols["order"] <= avail,
          "at most the number of evaluated nodes so far (i+1); use a lower order while warming up")
    check("base", (cols["base"] >= 0) & (cols["base"] < HISTORY) & (cols["base"] <= np.arange(n)),
          f"0..min(i, {HISTORY - 1}) (offset back from node i to the step's starting node)")
    check("order", ~((cols["variant"] == DPMSOLVER) & (cols["order"] > 3)),
          "1..3 with variant 'dpmsolver' (DPM-Solver defines no higher order)")
    corr_order_ok = ~((cols["corrector"] == UNIC) & (cols["order"] >= MAX_ORDER))
    check("order", corr_order_ok, f"below {MAX_ORDER} when a UniC corrector adds the new point")
    if num_models is not None:
        check("model", (cols["model"] >= 0) & (cols["model"] < num_models), f"0..{num_models - 1}")
    if int(plan.analytic_first) not in (0, 1):
        raise ValueError(f"plan.analytic_first: must be 0 or 1, got {int(plan.analytic_first)}")


def stack_plans(plans) -> SolverPlan:
    """Stack plans with the same number of steps along a leading axis (for vmapped evaluation)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *plans)
