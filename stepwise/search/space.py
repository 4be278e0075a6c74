"""The search space: a genome <-> SolverPlan codec with exact-NFE mutation and crossover.

A :class:`Genome` holds every per-step decision of a plan:

* the time nodes as positive **increments** of a normalised coordinate u in [0, 1]
  (u = 0 at t_start, u = 1 at t_end; u is the fraction of the log-SNR range, ``node_space="logsnr"``,
  or of the time range, ``node_space="time"``). Nodes are the cumulative sums, so they are
  strictly ordered and unique by construction; a floor ``min_gap`` on every increment keeps them
  apart;
* one integer/float column per plan column (``prediction``, ``order``, ``variant``,
  ``expansion``, ``coef``, ``base``, ``corrector``, ``model``, ``guidance`` and any column the
  plan format gains later), in the codes of :mod:`solvers.plan`;
* ``analytic_first``;
* with ``SearchSpace.unit_counts`` (the denoisers' skippable units), the per-step skip mask
  ``skip`` (N, U) of 0/1 (AutoDiffusion's per-step architecture): mutation flips units of steps,
  crossover takes whole rows, splitting a step copies its row.

The codec never names a preset: the allowed values of each column come from the code tables of
:mod:`solvers.plan`, so new presets and new codes need no change here.

Exact NFE: every operator ends in :func:`repair`, which restores the evaluation budget by
inserting nodes (splitting a step) or removing nodes (merging two steps) until the plan's NFE
(``solvers.plan.nfe``, read directly off the genome's columns) equals the target, then replaces
every value that ``solvers.plan.violations`` reports by the nearest allowed one. A candidate
that cannot be repaired is rejected, never silently changed into a different budget.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from stepwise.solvers import plan as P

# Plan columns that are per-step decisions (everything but the node array and the scalar flag).
STEP_COLUMNS = tuple(f for f in P.SolverPlan.__dataclass_fields__
                     if f not in ("ts", "analytic_first", "corrections", "skip"))
MASK = "skip"     # the (N, U) skip-mask column (present in a genome only when the space searches masks)
MOVES = ("nodes", "decisions", "masks")
FLOAT_COLUMNS = ("coef", "guidance")
CATEGORICAL_TABLES = {"prediction": P.PREDICTION_CODES, "variant": P.VARIANT_CODES,
                      "expansion": P.EXPANSION_CODES, "corrector": P.CORRECTOR_CODES}
# Safe value of each column (what repair falls back to when validation rejects a step).
SAFE = {"prediction": P.DATA, "order": 1, "variant": P.TAYLOR, "expansion": P.EXPAND_LAMBDA,
        "coef": 1.0, "base": 0, "corrector": P.NO_CORRECTOR, "model": 0, "guidance": 1.0}
NODE_SPACES = ("logsnr", "time")


def column_codes(column: str) -> list[int]:
    """Every code of a categorical column (all are implemented by the sampler)."""
    return sorted(CATEGORICAL_TABLES[column].values())


def names_of(column: str) -> dict[int, str]:
    return {v: k for k, v in CATEGORICAL_TABLES[column].items()}


# ----------------------------------------------------------------------------- genome
@dataclasses.dataclass(frozen=True, eq=False)
class Genome:
    """Per-step decisions of one candidate plan (NumPy; JSON-able through :meth:`to_dict`)."""

    incr: np.ndarray                 # (N,) float64 > 0, sums to 1: node increments in u
    cols: dict[str, np.ndarray]      # column -> (N,) int64 or float64
    analytic_first: int

    @property
    def num_steps(self) -> int:
        return int(self.incr.shape[0])

    def __getattr__(self, name):
        """Plan columns by name (``g.corrector``), so ``solvers.plan.evaluations`` reads a genome."""
        cols = self.__dict__.get("cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    @property
    def u(self) -> np.ndarray:
        u = np.concatenate([[0.0], np.cumsum(self.incr)])
        u[-1] = 1.0
        return u

    def replace(self, incr=None, cols=None, analytic_first=None) -> "Genome":
        return Genome(self.incr.copy() if incr is None else np.asarray(incr, np.float64),
                      {k: v.copy() for k, v in (self.cols if cols is None else cols).items()},
                      int(self.analytic_first if analytic_first is None else analytic_first))

    def to_dict(self) -> dict:
        return {"incr": [float(v) for v in self.incr],
                "cols": {k: (np.asarray(v, np.int64).tolist() if k == MASK else
                             [float(x) if k in FLOAT_COLUMNS else int(x) for x in v])
                         for k, v in self.cols.items()},
                "analytic_first": int(self.analytic_first)}

    @staticmethod
    def from_dict(d: dict) -> "Genome":
        cols = {k: np.asarray(v, np.float64 if k in FLOAT_COLUMNS else np.int64)
                for k, v in d["cols"].items()}
        if MASK in cols and cols[MASK].ndim != 2:
            cols[MASK] = cols[MASK].reshape(len(d["incr"]), -1)
        return Genome(np.asarray(d["incr"], np.float64), cols, int(d["analytic_first"]))


# ----------------------------------------------------------------------------- space
@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What may vary and how: allowed codes per column, node coordinate, mutation rates.

    Mutation defaults (per candidate, per step or per node):
    ``p_node`` each node increment is rescaled by exp(N(0, node_sigma));
    ``p_decision`` each categorical decision of each step is redrawn;
    ``p_structure`` one budget-changing move (corrector re-evaluation, analytic first step,
    final UniC corrector) is applied and the steps re-balanced;
    ``coef_sigma`` Gaussian step of a free coefficient;
    ``p_skip`` each unit of each step's skip mask is flipped (only when ``unit_counts`` is set:
    the number of skippable units of each model, ``Denoiser.skip_units``; masks are searched then).
    """

    nfe: int
    schedule: Any
    node_space: str = "logsnr"
    choices: tuple = ()              # ((column, (codes...)), ...); columns absent are fixed
    coef_range: tuple = (0.0, 2.0)
    min_gap: float = 0.004
    max_order: int = 3
    max_base: int = 1
    allow_analytic_first: bool = True
    num_models: int = 1
    p_node: float = 0.3
    node_sigma: float = 0.35
    p_decision: float = 0.1
    p_structure: float = 0.15
    coef_sigma: float = 0.15
    p_crossover: float = 0.5
    unit_counts: tuple = ()
    p_skip: float = 0.05

    @property
    def skip_units(self) -> int:
        """Width of the searched skip mask (0: masks are not searched)."""
        return max((int(u) for u in self.unit_counts), default=0)

    def __post_init__(self):
        if self.node_space not in NODE_SPACES:
            raise ValueError(f"node_space: must be one of {NODE_SPACES}, got {self.node_space!r}")
        if self.nfe < 1:
            raise ValueError(f"nfe: must be >= 1, got {self.nfe}")
        if not self.min_gap >= 0.0:
            raise ValueError(f"min_gap: {self.min_gap} is invalid; allowed: 0 <= min_gap < {1.0 / (self.nfe + 2):.4g}")
        if self.min_gap * (self.nfe + 2) >= 1.0:
            raise ValueError(f"min_gap: {self.min_gap} is too large for {self.nfe + 1} steps")

    @staticmethod
    def default_choices(max_order: int = 3, max_base: int = 1, num_models: int = 1) -> tuple:
        out = {c: tuple(column_codes(c)) for c in CATEGORICAL_TABLES}
        out["order"] = tuple(range(1, max_order + 1))
        out["base"] = tuple(range(0, max_base + 1))
        out["model"] = tuple(range(num_models))
        return tuple(out.items())

    @property
    def choice_map(self) -> dict[str, tuple]:
        return dict(self.choices) if self.choices else dict(
            self.default_choices(self.max_order, self.max_base, self.num_models))

    # -- nodes <-> times
    def _ends(self):
        s = self.schedule
        return float(s.t_max), float(s.t_min)

    def _lam_ends(self):
        t0, t1 = self._ends()
        return tuple(float(_lambda_jit(self.schedule, jnp.asarray(t, jnp.float32))) for t in (t0, t1))

    def u_to_ts(self, u: np.ndarray) -> np.ndarray:
        t0, t1 = self._ends()
        if self.node_space == "time":
            ts = t0 + np.asarray(u, np.float64) * (t1 - t0)
        else:
            l0, l1 = _cached(self, "_lams", self._lam_ends)
            lam = l0 + np.asarray(u, np.float64) * (l1 - l0)
            ts = np.asarray(_t_of_lambda_jit(self.schedule, jnp.asarray(lam)), np.float64)
        ts = np.array(ts, np.float64)
        ts[0], ts[-1] = t0, t1
        return ts

    def ts_to_u(self, ts) -> np.ndarray:
        ts = np.asarray(ts, np.float64)
        t0, t1 = self._ends()
        if self.node_space == "time":
            u = (ts - t0) / (t1 - t0)
        else:
            lam = np.asarray(_lambda_jit(self.schedule, jnp.asarray(ts)), np.float64)
            l0, l1 = _cached(self, "_lams", self._lam_ends)
            u = (lam - l0) / (l1 - l0)
        u = np.array(u, np.float64)
        u[0], u[-1] = 0.0, 1.0
        return u


def _cached(obj, name, fn):
    cache = obj.__dict__.setdefault("_memo", {})
    if name not in cache:
        cache[name] = fn()
    return cache[name]


@eqx.filter_jit
def _lambda_jit(schedule, t):
    return schedule.lambda_(t)


@eqx.filter_jit
def _t_of_lambda_jit(schedule, lam):
    return schedule.t_of_lambda(lam)


# ----------------------------------------------------------------------------- codec
def encode(plan: P.SolverPlan, space: SearchSpace) -> Genome:
    """The genome of a plan (its nodes must span the schedule's domain)."""
    u = space.ts_to_u(np.asarray(plan.ts, np.float64))
    cols = {c: np.asarray(getattr(plan, c), np.float64 if c in FLOAT_COLUMNS else np.int64).copy()
            for c in STEP_COLUMNS}
    skip = np.asarray(getattr(plan, MASK, np.zeros((len(u) - 1, 0))), np.int64)
    if space.skip_units:
        cols[MASK] = _mask_width(skip, space.skip_units)
    elif np.any(skip):
        raise ValueError("encode: the plan skips network units but the search space does not search masks "
                         "(give it unit_counts)")
    return Genome(np.diff(u), cols, int(plan.analytic_first))


def _mask_width(skip: np.ndarray, units: int) -> np.ndarray:
    """A skip mask widened with zeros (or checked) to ``units`` columns."""
    n = skip.shape[0]
    if skip.shape[1] == 0:
        return np.zeros((n, units), np.int64)
    if skip.shape[1] != units:
        raise ValueError(f"skip: the plan masks {skip.shape[1]} units; the search space has {units}")
    return skip.copy()


def with_nodes(g: Genome, ts, space: SearchSpace) -> Genome:
    """``g`` with the time nodes ``ts`` (every other decision kept; increments floored at the
    space's ``min_gap``)."""
    return g.replace(incr=_gap_fix(np.diff(space.ts_to_u(np.asarray(ts, np.float64))), space.min_gap))


def decode(g: Genome, space: SearchSpace) -> P.SolverPlan:
    """The SolverPlan of a genome (float32 nodes unless x64 is enabled)."""
    ts = space.u_to_ts(g.u)
    kw = {c: np.asarray(g.cols[c]) for c in STEP_COLUMNS if c in g.cols}
    return P.make_plan(jnp.asarray(ts), analytic_first=bool(g.analytic_first), skip=g.cols.get(MASK), **kw)


class PlanView:
    """A SolverPlan's columns as NumPy arrays (same dtypes as ``decode`` gives), for fast checks:
    ``solvers.plan.validate`` and ``nfe`` read only the columns, so they accept this view."""

    def __init__(self, ts, cols: dict, analytic_first: int):
        self.ts = np.asarray(ts, _float_dtype())
        for c in STEP_COLUMNS:
            dt = _float_dtype() if c in FLOAT_COLUMNS else np.int32
            setattr(self, c, np.asarray(cols[c] if c in cols else np.full(len(ts) - 1, SAFE.get(c, 0)), dt))
        self.analytic_first = np.int32(analytic_first)
        self.corrections = np.zeros((len(ts) - 1, P.HISTORY + 1), _float_dtype())   # genomes carry none
        self.skip = np.asarray(cols[MASK] if MASK in cols else np.zeros((len(ts) - 1, 0)), np.int32)

    @property
    def num_steps(self) -> int:
        return int(self.ts.shape[0]) - 1

    def nfe(self) -> int:
        return P.nfe(self)

    def validate(self, schedule=None, num_models=None):
        P.validate(self, schedule, num_models)
        return self


def _float_dtype():
    import jax
    return np.float64 if jax.config.read("jax_enable_x64") else np.float32


def view(g: Genome, space: SearchSpace) -> PlanView:
    """The plan of a genome as NumPy columns (no device arrays; used by repair and hashing)."""
    return PlanView(space.u_to_ts(g.u), g.cols, g.analytic_first)


def plan_hash(plan) -> str:
    """A stable hash of a plan's values (the evaluation cache key); a SolverPlan and the
    :class:`PlanView` of the same genome hash alike."""
    h = hashlib.sha1()
    for f in P.SolverPlan.__dataclass_fields__:
        a = np.asarray(getattr(plan, f))
        a = a.astype(_float_dtype()) if a.dtype.kind == "f" else a.astype(np.int32)
        h.update(f.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def genome_hash(g: Genome, space: SearchSpace) -> str:
    return plan_hash(view(g, space))


def describe_plan(plan: P.SolverPlan) -> list[dict]:
    """Every per-step decision in readable names (used by schedule files and reports)."""
    rows = []
    ts = np.asarray(plan.ts, np.float64)
    for i in range(plan.num_steps):
        row = {"step": i, "t_from": float(ts[i]), "t_to": float(ts[i + 1])}
        for c in STEP_COLUMNS:
            v = np.asarray(getattr(plan, c))[i].item()
            row[c] = names_of(c).get(int(v), int(v)) if c in CATEGORICAL_TABLES else v
        skip = np.asarray(getattr(plan, MASK, np.zeros((plan.num_steps, 0))))
        if np.any(skip):
            row[MASK] = [int(u) for u in np.flatnonzero(skip[i])]   # indices of the skipped units
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- repair
def _gap_fix(incr: np.ndarray, gap: float) -> np.ndarray:
    d = np.maximum(np.nan_to_num(np.asarray(incr, np.float64), nan=0.0), 0.0)
    n = d.shape[0]
    if d.sum() <= 0:
        d = np.ones(n)
    d = d / d.sum()
    if d.min() < gap:
        d = gap + (1.0 - n * gap) * d
    return d / d.sum()


def _fix_space(g: Genome, space: SearchSpace) -> Genome:
    """The search space's own limits (node gaps, coefficient range, model count, analytic first
    step allowed or not); the plan format's validity rules are :func:`_fix_violations`'."""
    n = g.num_steps
    cols = {k: v.copy() for k, v in g.cols.items()}
    for c in STEP_COLUMNS:
        if c not in cols:
            cols[c] = np.full(n, SAFE.get(c, 0), np.float64 if c in FLOAT_COLUMNS else np.int64)
    lo, hi = space.coef_range
    coef = np.where(cols["variant"] == P.FREE, np.clip(cols["coef"], lo, hi), 1.0)
    cols["coef"] = coef.astype(_float_dtype()).astype(np.float64)  # exactly representable in the plan
    cols["model"] = np.clip(cols["model"], 0, space.num_models - 1)
    if space.skip_units:
        mask = np.clip(np.asarray(cols.get(MASK, np.zeros((n, 0))), np.int64), 0, 1)
        mask = _mask_width(mask, space.skip_units)
        counts = np.asarray([int(u) for u in space.unit_counts] + [0] * space.num_models)[:space.num_models]
        own = counts[cols["model"].astype(int)]
        mask[np.arange(space.skip_units)[None, :] >= own[:, None]] = 0   # units the step's model lacks
        cols[MASK] = mask
    else:
        cols.pop(MASK, None)
    af = int(g.analytic_first) if space.allow_analytic_first else 0
    return Genome(_gap_fix(g.incr, space.min_gap), cols, af)


def _fix_violations(g: Genome, space: SearchSpace) -> Genome | None:
    """Replace each value that ``solvers.plan.violations`` reports by the nearest allowed code.

    Budget-changing fields (the corrector) and plan-wide rules are not repaired here: such a
    genome is rejected (None)."""
    for _ in range(3 * g.num_steps + 3):
        bad = P.violations(view(g, space), space.schedule, num_models=space.num_models,
                           unit_counts=space.unit_counts or None)
        if not bad:
            return g
        cols = {k: v.copy() for k, v in g.cols.items()}
        for v in bad:
            if v.step is None or v.field == "corrector" or not isinstance(v.allowed, tuple) or not v.allowed:
                return None
            allowed = np.asarray(v.allowed)
            cols[v.field][v.step] = allowed[np.argmin(np.abs(allowed - cols[v.field][v.step]))]
        g = Genome(g.incr, cols, g.analytic_first)
    return None


def _split(g: Genome, j: int) -> Genome:
    """Insert a node in the middle of step j (the new step copies step j, without a corrector)."""
    incr = np.concatenate([g.incr[:j], [g.incr[j] / 2, g.incr[j] / 2], g.incr[j + 1:]])
    cols = {}
    for k, v in g.cols.items():
        new = v[j:j + 1].copy()
        cols[k] = np.concatenate([v[:j + 1], new, v[j + 1:]])
    cols["corrector"][j] = P.NO_CORRECTOR if cols["corrector"][j] == P.REEVAL else cols["corrector"][j]
    return Genome(incr, cols, g.analytic_first)


def _merge(g: Genome, j: int) -> Genome:
    """Remove interior node j+1: steps j and j+1 become one step (keeping step j's decisions,
    step j+1's corrector)."""
    incr = np.concatenate([g.incr[:j], [g.incr[j] + g.incr[j + 1]], g.incr[j + 2:]])
    cols = {}
    for k, v in g.cols.items():
        keep = np.concatenate([v[:j + 1], v[j + 2:]])
        if k == "corrector":
            keep[j] = v[j + 1]
        cols[k] = keep
    return Genome(incr, cols, g.analytic_first)


def _rebalance(g: Genome, target: int, rng: np.random.Generator) -> Genome | None:
    """Insert/remove nodes until the genome costs exactly ``target`` evaluations."""
    for _ in range(4 * target + 8):
        d = P.nfe(g) - target
        if d == 0:
            return g
        if d < 0:
            # split the widest-ish step (random among the wider half: keeps nodes apart)
            order = np.argsort(-g.incr, kind="stable")
            j = int(order[rng.integers(0, max(1, (g.num_steps + 1) // 2))])
            g = _split(g, j)
        elif g.num_steps > 1:
            j = int(rng.integers(0, g.num_steps - 1))
            g = _merge(g, j)
        else:  # a single step that still costs too much: drop its corrector / analytic change
            cols = {k: v.copy() for k, v in g.cols.items()}
            if cols["corrector"][0] != P.NO_CORRECTOR:
                cols["corrector"][0] = P.NO_CORRECTOR
                g = Genome(g.incr, cols, g.analytic_first)
            else:
                return None
    return None


def repair(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    """A valid genome costing exactly ``space.nfe`` evaluations, or None if none is reachable."""
    g = _fix_space(g, space)
    g = _rebalance(g, space.nfe, rng)
    if g is None:
        return None
    g = _fix_violations(_fix_space(g, space), space)
    if g is None or P.nfe(g) != space.nfe:
        return None
    return g


# ----------------------------------------------------------------------------- operators
def random_genome(space: SearchSpace, rng: np.random.Generator, steps: int | None = None) -> Genome:
    """A random valid genome (nodes from a Dirichlet around uniform log-SNR spacing)."""
    ch = space.choice_map
    for _ in range(100):
        n = steps or space.nfe
        incr = rng.dirichlet(np.full(n, 8.0))
        cols = {}
        for c in STEP_COLUMNS:
            if c in ch and c not in FLOAT_COLUMNS:
                cols[c] = rng.choice(np.asarray(ch[c], np.int64), size=n)
            else:
                cols[c] = np.full(n, SAFE.get(c, 0), np.float64 if c in FLOAT_COLUMNS else np.int64)
        cols["coef"] = rng.uniform(*space.coef_range, size=n)
        # correctors other than re-evaluation are budget-neutral except at the last step
        af = int(space.allow_analytic_first and rng.random() < 0.5)
        g = repair(Genome(incr, cols, af), space, rng)
        if g is not None:
            return g
    raise RuntimeError("random_genome: could not build a valid genome; check the search space")


def _moves(nodes_only: bool, moves) -> frozenset:
    chosen = frozenset(("nodes",) if nodes_only else (moves or MOVES))
    bad = chosen - set(MOVES)
    if bad:
        raise ValueError(f"moves: unknown {sorted(bad)}; allowed: {list(MOVES)}")
    return chosen


def _flip_masks(mask: np.ndarray, space: SearchSpace, rng: np.random.Generator, force: bool) -> np.ndarray:
    """Flip each unit of each step with probability ``p_skip`` (at least one flip when ``force``)."""
    flip = rng.random(mask.shape) < space.p_skip
    if force and not flip.any():
        flip[rng.integers(0, mask.shape[0]), rng.integers(0, mask.shape[1])] = True
    return np.where(flip, 1 - mask, mask)


def mutate(g: Genome, space: SearchSpace, rng: np.random.Generator, nodes_only: bool = False,
           max_tries: int = 20, moves=None) -> Genome:
    """A mutated valid copy with exactly ``space.nfe`` evaluations (differs from ``g`` when possible).

    ``moves`` (a subset of ``MOVES``: "nodes", "decisions", "masks"; default all) says what may
    change; ``nodes_only`` is ``moves=("nodes",)`` (the first stage of AutoDiffusion's schedule)."""
    ch = space.choice_map
    moves = _moves(nodes_only, moves)
    for _ in range(max_tries):
        incr = g.incr.copy()
        if "nodes" in moves:
            hit = rng.random(incr.shape[0]) < space.p_node
            if moves == {"nodes"} and not hit.any():
                hit[rng.integers(0, incr.shape[0])] = True
            incr = incr * np.exp(np.where(hit, rng.normal(0.0, space.node_sigma, incr.shape), 0.0))
        cols = {k: v.copy() for k, v in g.cols.items()}
        af = g.analytic_first
        if "masks" in moves and MASK in cols and cols[MASK].shape[1]:
            cols[MASK] = _flip_masks(cols[MASK], space, rng, force=moves == {"masks"})
        if "decisions" in moves:
            n = g.num_steps
            for c in ("prediction", "order", "variant", "expansion", "base", "model"):
                opts = np.asarray(ch.get(c, ()), np.int64)
                if opts.size > 1:
                    flip = rng.random(n) < space.p_decision
                    cols[c] = np.where(flip, rng.choice(opts, size=n), cols[c])
            free = cols["variant"] == P.FREE
            cols["coef"] = cols["coef"] + free * rng.normal(0.0, space.coef_sigma, n)
            # budget-neutral corrector moves: none <-> unic before the last step
            copts = set(ch.get("corrector", ()))
            if P.UNIC in copts:
                flip = (rng.random(n) < space.p_decision) & (np.arange(n) < n - 1) & (cols["corrector"] != P.REEVAL)
                cols["corrector"] = np.where(flip, np.where(cols["corrector"] == P.UNIC, P.NO_CORRECTOR, P.UNIC),
                                             cols["corrector"])
            if rng.random() < space.p_structure:
                move = rng.integers(0, 3)
                if move == 0 and space.allow_analytic_first:
                    af = 1 - af
                elif move == 1 and P.REEVAL in copts:
                    i = int(rng.integers(0, n))
                    cols["corrector"][i] = P.NO_CORRECTOR if cols["corrector"][i] == P.REEVAL else P.REEVAL
                elif move == 2 and copts & {P.UNIC, P.NO_CORRECTOR}:
                    last = cols["corrector"][-1]
                    cols["corrector"][-1] = P.NO_CORRECTOR if last != P.NO_CORRECTOR else (
                        P.UNIC if P.UNIC in copts else P.REEVAL)
        child = repair(Genome(incr, cols, af), space, rng)
        if child is not None and not same(child, g):
            return child
    return g.replace()


def _resample_nodes(u: np.ndarray, n_out: int) -> np.ndarray:
    """A node curve u(i/N) resampled at n_out steps (linear in the step fraction)."""
    x = np.linspace(0.0, 1.0, u.shape[0])
    return np.interp(np.linspace(0.0, 1.0, n_out + 1), x, u)


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: np.random.Generator,
              nodes_only: bool = False, moves=None) -> Genome:
    """Uniform crossover that keeps the budget: the child has ``a``'s number of steps; each
    interior node and each step's decisions come from ``a`` or from ``b`` (``b``'s node curve
    and columns mapped onto ``a``'s steps by step fraction). Nodes are re-sorted and spaced,
    then :func:`repair` restores the exact NFE: no step is ever dropped silently."""
    moves = _moves(nodes_only, moves)
    n = a.num_steps
    incr = a.incr.copy()
    if "nodes" in moves:
        ua, ub = a.u, _resample_nodes(b.u, n)
        pick = rng.random(n + 1) < 0.5
        u = np.sort(np.where(pick, ub, ua))
        u[0], u[-1] = 0.0, 1.0
        incr = np.diff(u)
    cols = {k: v.copy() for k, v in a.cols.items()}
    af = a.analytic_first
    if moves & {"decisions", "masks"}:   # (a nodes-only crossover draws nothing more, as it always did)
        idx = np.minimum(np.round(np.arange(n) * b.num_steps / n).astype(int), b.num_steps - 1)
        take = rng.random(n) < 0.5
        for k in cols:
            if k in b.cols and ("masks" if k == MASK else "decisions") in moves:
                rows = take.reshape((-1,) + (1,) * (cols[k].ndim - 1))
                cols[k] = np.where(rows, b.cols[k][idx], cols[k])
    if "decisions" in moves:
        af = b.analytic_first if rng.random() < 0.5 else a.analytic_first
    child = repair(Genome(incr, cols, af), space, rng)
    return a.replace() if child is None else child


def same(a: Genome, b: Genome) -> bool:
    return (a.num_steps == b.num_steps and a.analytic_first == b.analytic_first
            and np.allclose(a.incr, b.incr, rtol=0, atol=1e-12)
            and all(np.array_equal(a.cols[k], b.cols[k]) for k in a.cols))
