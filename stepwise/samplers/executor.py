"""The executor: one ``jax.jit`` over ``lax.scan`` runs ANY plan with the same number of steps.

The carry holds x and a fixed-size history of the last ``HISTORY`` evaluated nodes (their x, the
x0 and eps predictions, and the node index). Per step: (1) the value at node i (a model call,
the analytical first step, or already known from a UniC corrector), (2) the predictor
x_{i+1} = A x_b + B sum_j w_j f_j (solvers.coefficients), (3) an optional corrector. Model choice,
orders, variants, bases and correctors are array values: ``lax.switch``/``lax.cond`` select them,
so only the chosen model runs and no plan change retraces.
"""
from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stepwise.denoisers.guidance import Thresholding, guided_x0_eps
from stepwise.samplers.sharding import data_mesh, pad_batch, shard_batch
from stepwise.denoisers.compat import DenoiserSet
from stepwise.solvers.coefficients import StepGeometry, step_weights
from stepwise.solvers.plan import DATA, HISTORY, NO_CORRECTOR, UNIC, SolverPlan, mask_row, validate

_TRACES = {"sample": 0}


def trace_count() -> int:
    """How many times the sampler has been traced (compiled) in this process."""
    return _TRACES["sample"]


def _as_models(denoisers, schedule) -> tuple:
    """The models of a :class:`denoisers.DenoiserSet` (checked when it was built), of a list (checked
    now: build the set once to check once), or a single denoiser."""
    if isinstance(denoisers, DenoiserSet):
        return denoisers.models
    if isinstance(denoisers, (list, tuple)):
        if not denoisers:
            raise ValueError("denoisers: need at least one model")
        return DenoiserSet(denoisers, schedule).models if len(denoisers) > 1 else tuple(denoisers)
    return (denoisers,)


def _device_leaves(tree):
    return jax.tree.map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, tree)


def _is_concrete(tree) -> bool:
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(tree))


class NonFiniteError(ValueError):
    """The sampler's state became non-finite: ``step`` (first one), its ``model``, the node times
    ``t_from``/``t_to`` and the ``fraction`` of rows affected at that step."""

    def __init__(self, step: int, model: int, t_from: float, t_to: float, fraction: float):
        self.step, self.model, self.t_from, self.t_to, self.fraction = step, model, t_from, t_to, fraction
        super().__init__(f"sample: the state became non-finite at step {step} (model {model}, from t={t_from:.6g} "
                         f"to t={t_to:.6g}) in {fraction:.1%} of the rows; the plan diverges there or the "
                         "denoiser returned NaN/inf")


def _raise_nonfinite(diag, plan) -> None:
    step, frac = int(diag[0]), float(diag[1])
    if step >= 0:
        ts = np.asarray(plan.ts, np.float64)
        raise NonFiniteError(step, int(np.asarray(plan.model)[step]), float(ts[step]), float(ts[step + 1]), frac)


def sample(denoisers, schedule, plan: SolverPlan, x_T, cond=None, threshold: Thresholding | None = None,
           return_trajectory: bool = False, devices=None, check_finite: bool = True):
    """Integrate the probability-flow ODE from x_T along ``plan``; returns x at plan.ts[-1].

    ``denoisers`` is one denoiser, a :class:`denoisers.DenoiserSet` (the plan's model column indexes
    it; compatibility was checked when the set was built) or a list (checked on this call). ``cond`` (e.g. class labels, shape (batch,))
    enables classifier-free guidance with the plan's per-step ``guidance`` scale (one NFE of a
    doubled batch; scale 1 runs the conditional model alone). ``threshold`` clips the data
    prediction (``denoisers.Thresholding``). With ``return_trajectory`` also returns x at every
    node, shape (N+1, *x_T.shape). With several devices (default: all of them) the batch is sharded
    over a ("data",) mesh of this process's devices and padded to a multiple of their count.
    """
    models = _as_models(denoisers, schedule)
    # NumPy leaves become jnp arrays of the current default precision here, so a float32 and a
    # float64 (jax_enable_x64) call never share a cache entry keyed on the NumPy dtype.
    models, schedule = _device_leaves((models, schedule))
    if _is_concrete(plan):
        validate(plan, schedule, num_models=len(models), unit_counts=unit_counts(models))
    if x_T.ndim < 2:
        raise ValueError(f"x_T: expected shape (batch, *data_shape), got {x_T.shape}")
    if x_T.shape[0] == 0:
        raise ValueError("x_T: empty batch (0 rows)")
    shape = getattr(models[0], "data_shape", None)
    if isinstance(shape, tuple) and tuple(x_T.shape[1:]) != shape:
        raise ValueError(f"x_T: shape {tuple(x_T.shape)} does not match the denoiser's data_shape; "
                         f"expected (batch, {', '.join(map(str, shape))})")
    check = bool(check_finite) and _is_concrete((plan, x_T))
    if cond is not None and jnp.shape(cond)[:1] != x_T.shape[:1]:
        raise ValueError(f"cond: leading dimension {jnp.shape(cond)[:1]} must match the batch {x_T.shape[:1]}")
    if devices is None:
        devices = jax.local_devices() if jax.local_device_count() > 1 and _is_concrete(x_T) else None
    if devices is not None and len(devices) > 1:
        mesh = data_mesh(devices)
        x_T, n = pad_batch(x_T, len(devices))
        x_T = shard_batch(x_T, mesh)
        if cond is not None:
            cond = shard_batch(pad_batch(jnp.asarray(cond), len(devices))[0], mesh)
        out = _checked_run(models, schedule, plan, x_T, cond, threshold, return_trajectory, check)
        return (out[0][:n], out[1][:, :n]) if return_trajectory else out[:n]
    return _checked_run(models, schedule, plan, x_T, cond, threshold, return_trajectory, check)


def _checked_run(models, schedule, plan, x_T, cond, threshold, return_trajectory: bool, check: bool):
    """Run the compiled sampler. With ``check`` only the final state is tested for non-finite
    values (one reduction, not one per step); if it has any, the run is repeated with a per-step
    test to name the first step that diverged (:class:`NonFiniteError`)."""
    out, diag = _sample_jit(models, schedule, plan, x_T, cond, threshold, return_trajectory, check, False)
    if check and int(diag[0]) >= 0:
        _, diag = _sample_jit(models, schedule, plan, x_T, cond, threshold, False, True, True)
        _raise_nonfinite(diag, plan)
    return out


def unit_counts(models) -> tuple[int, ...]:
    """Each model's number of skippable units (``Denoiser.skip_units``)."""
    return tuple(len(getattr(m, "skip_units", ())) for m in models)


def _masked(m, skip, row):
    """Model ``m`` with the plan's skip mask of ``row`` applied (unchanged when the plan has none)."""
    units = len(getattr(m, "skip_units", ()))
    if skip.shape[1] == 0 or units == 0:
        return m
    return m.with_skip(skip[row, :units])


class History(NamedTuple):
    """The last ``HISTORY`` evaluated nodes as a ring buffer: logical slot j (newest first) is stored
    at position ``(head - j) mod HISTORY`` of ``xs``/``x0s``/``epss``, so a push writes one row in
    place instead of shifting every buffer; ``nodes`` (node indices, -1 = empty) is kept in
    logical order, as :func:`step_update` reads it."""

    xs: jnp.ndarray
    x0s: jnp.ndarray
    epss: jnp.ndarray
    nodes: jnp.ndarray
    head: jnp.ndarray

    @classmethod
    def empty(cls, x):
        z = jnp.zeros((HISTORY,) + x.shape, x.dtype)
        return cls(z, z, z, jnp.full((HISTORY,), -1, jnp.int32), jnp.asarray(HISTORY - 1, jnp.int32))

    def push(self, x, x0, eps, node) -> "History":
        head = (self.head + 1) % HISTORY
        nodes = jnp.concatenate([jnp.asarray(node, self.nodes.dtype)[None], self.nodes[:-1]])
        return History(self.xs.at[head].set(x), self.x0s.at[head].set(x0), self.epss.at[head].set(eps),
                       nodes, head)

    def position(self, slot):
        """Storage position of logical slot ``slot`` (0 = newest)."""
        return (self.head - slot) % HISTORY


def _eval_branches(models, ts, guidance, cond, threshold, with_analytic: bool, skip=None):
    """Branch list for lax.switch: [(analytic per model), model evaluation per model]; the evaluation
    at node i uses the skip mask of row min(i, N-1) (``solvers.plan.mask_row``)."""
    n = ts.shape[0] - 1
    skip = jnp.zeros((n, 0), jnp.int32) if skip is None else skip

    def evaluate(m):
        def f(x, i):
            mm = _masked(m, skip, mask_row(i, n))
            x0, eps = guided_x0_eps(mm, x, ts[i], cond, guidance[i], threshold)
            return x0.astype(x.dtype), eps.astype(x.dtype)  # solver state keeps its own dtype
        return f

    def analytic(m):
        def f(x, i):
            x0 = jnp.broadcast_to(jnp.asarray(m.data_mean, x.dtype), x.shape)
            a, s = m.schedule.alpha(ts[i]).astype(x.dtype), m.schedule.sigma(ts[i]).astype(x.dtype)
            return x0, (x - a * x0) / s
        return f

    out = [analytic(m) for m in models] if with_analytic else []
    return out + [evaluate(m) for m in models]


@jax.custom_jvp
def _history_sum(w, buf, pos):
    """sum_j w_j buf[pos_j] over the logical history slots j (newest first; ``pos``: their storage
    positions in the ring buffer ``buf``), reading the slots up to the last nonzero weight only (a
    second-order step reads two rows, not all ``HISTORY``); each branch is one fused loop.

    Its derivative is that of the FULL sum (custom JVP): a weight that is zero now (e.g. a learned
    correction at its zero start) still gets its gradient buf[pos_j]."""
    def upto(k):
        def f():
            acc = w[0] * buf[pos[0]]
            for j in range(1, k):
                acc = acc + w[j] * buf[pos[j]]
            return acc
        return f
    used = jnp.max(jnp.where(w != 0, jnp.arange(1, w.shape[0] + 1), 1))
    return lax.switch(used - 1, [upto(k) for k in range(1, w.shape[0] + 1)])


@_history_sum.defjvp
def _history_sum_jvp(primals, tangents):
    w, buf, pos = primals
    dw, dbuf, _ = tangents
    return _history_sum(w, buf, pos), jnp.tensordot(dw, buf[pos], axes=1) + jnp.tensordot(w, dbuf[pos], axes=1)


class StepUpdate(NamedTuple):
    """Step i's update x_{i+1} = a x_base + b sum_j w_j f_j (f = x0 if ``data`` else eps) over the
    history slots (newest first) whose node indices are ``nodes``: THE step geometry, shared by the
    compiled executor and the host program (``samplers.program``)."""

    base: jnp.ndarray
    data: jnp.ndarray
    a: jnp.ndarray
    b: jnp.ndarray
    weights: tuple     # (predictor, corrector) weights of the solver (``solvers.step_weights``)
    delta: jnp.ndarray

    def predictor_weights(self):
        return self.weights[0] + self.delta

    def corrector_weights(self):
        return self.weights[1] + self.delta


def step_update(plan: SolverPlan, i, nodes, ts, lam, alpha, sigma, schedule) -> StepUpdate:
    """The coefficients of step i given the history's node indices (-1: empty slot)."""
    n = ts.shape[0] - 1
    dt = ts.dtype
    b = plan.base[i]
    node_b = nodes[b]
    data = plan.prediction[i] == DATA
    slots = jnp.concatenate([jnp.clip(nodes, 0, n), jnp.asarray(i + 1, nodes.dtype)[None]])
    h = lam[i + 1] - lam[node_b]
    geom = StepGeometry(lam=lam[slots], t=ts[slots], valid=jnp.concatenate([nodes >= 0, jnp.ones((1,), bool)]),
                        base=b, h=h, z=jnp.where(data, -h, h))
    a_coef = jnp.where(data, sigma[i + 1] / sigma[node_b], alpha[i + 1] / alpha[node_b])
    b_coef = jnp.where(data, alpha[i + 1], -sigma[i + 1])
    weights = step_weights(geom, plan.order[i], plan.variant[i], plan.expansion[i], plan.coef[i], schedule)
    return StepUpdate(b, data, a_coef, b_coef, weights, plan.corrections[i].astype(dt))  # corrections: learned (0 = the solver)


def _sample_impl(models, schedule, plan: SolverPlan, x_T, cond, threshold, return_trajectory: bool,
                 check_finite: bool = False, every_step: bool = False):
    _TRACES["sample"] += 1
    dt = x_T.dtype
    ts = plan.ts.astype(dt)
    n = ts.shape[0] - 1
    alpha, sigma, lam = schedule.alpha(ts), schedule.sigma(ts), schedule.lambda_(ts)
    m = len(models)
    guidance = plan.guidance.astype(dt)
    evals = _eval_branches(models, ts, guidance, cond, threshold, with_analytic=False, skip=plan.skip)
    first = _eval_branches(models, ts, guidance, cond, threshold, with_analytic=True, skip=plan.skip)
    value_at_node = [lambda x, i, known: known] + [lambda x, i, known, f=f: f(x, i) for f in first]

    def combine(w, h: History, data, f_new, x_b, a_coef, b_coef):
        w = w.astype(dt)
        # contract only the buffer the step uses (x0 or eps): no select over whole histories
        pos = h.position(jnp.arange(HISTORY))
        acc = lax.cond(data, lambda: _history_sum(w[:HISTORY], h.x0s, pos), lambda: _history_sum(w[:HISTORY], h.epss, pos))
        if f_new is not None:
            acc = acc + w[HISTORY] * f_new
        return a_coef * x_b + b_coef * acc

    def first_nonfinite(diag, i, x_next):
        """(first step whose output has a non-finite row, that step's fraction of such rows)."""
        if not check_finite:
            return diag
        rows = jnp.all(jnp.isfinite(x_next.reshape(x_next.shape[0], -1)), axis=1)
        frac = 1.0 - jnp.mean(rows.astype(jnp.float32))
        new = (diag[0] < 0) & (frac > 0)
        return (jnp.where(new, i, diag[0]).astype(jnp.int32), jnp.where(new, frac, diag[1]).astype(jnp.float32))

    def step(carry, i):
        x, h, pending, known, diag = carry
        # (1) the value at node i: a model call (or the analytic first step), or already known from
        # step i-1's UniC corrector (``pending``); either way it becomes the newest history slot.
        # One switch over [known] + [analytic per model] + [model evaluation per model].
        branch = jnp.where(pending, 0, 1 + jnp.where((i == 0) & (plan.analytic_first == 1), plan.model[i],
                                                      m + plan.model[i]))
        x0, eps = lax.switch(branch, value_at_node, x, i, known)
        h = h.push(x, x0, eps, i)

        # (2) predictor from base node i - base[i]
        u = step_update(plan, i, h.nodes, ts, lam, alpha, sigma, schedule)
        x_b = h.xs[h.position(u.base)]
        x_pred = combine(u.predictor_weights(), h, u.data, None, x_b, u.a, u.b)  # slot HISTORY unused

        # (3) optional corrector, evaluated at the predicted point and node i+1
        corr = plan.corrector[i]
        nxt = jnp.minimum(i + 1, n - 1)

        def corrected():
            x0n, epsn = lax.switch(plan.model[nxt], evals, x_pred, jnp.minimum(i + 1, n))
            x_new = combine(u.corrector_weights(), h, u.data, jnp.where(u.data, x0n, epsn), x_b, u.a, u.b)
            return x_new, (x0n, epsn)

        def plain():
            return x_pred, known

        x_next, known = lax.cond(corr != NO_CORRECTOR, corrected, plain)
        pending = corr == UNIC   # UniC: the corrector's evaluation is node i+1's value
        diag = first_nonfinite(diag, i, x_next) if every_step else diag
        return (x_next, h, pending, known, diag), (x_next if return_trajectory else None)

    zeros = jnp.zeros_like(x_T)
    diag0 = (jnp.asarray(-1, jnp.int32), jnp.asarray(0.0, jnp.float32))
    carry0 = (x_T, History.empty(x_T), jnp.asarray(False), (zeros, zeros), diag0)
    (x, _, _, _, diag), traj = lax.scan(step, carry0, jnp.arange(n))
    if not every_step:
        diag = first_nonfinite(diag, n - 1, x)   # the final state only; -1 when it is finite
    if return_trajectory:
        return (x, jnp.concatenate([x_T[None], traj], axis=0)), diag
    return x, diag


_sample_jit = eqx.filter_jit(_sample_impl)   # bools are static under filter_jit: check on/off compile apart


def chunked(fn, x_T, batch_size: int, cond=None) -> np.ndarray:
    """``fn(x)`` (or ``fn(x, c)`` with per-row ``cond``) applied to fixed-size row chunks of ``x_T``
    (one executable per chunk shape; the last chunk may be smaller), results concatenated on the
    host. THE chunked sampling loop."""
    x_T = np.asarray(x_T)
    if x_T.shape[0] == 0:
        raise ValueError("x_T: empty batch (0 rows)")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: {batch_size!r} is invalid; allowed: an integer >= 1")
    if cond is not None and np.shape(cond)[:1] != x_T.shape[:1]:
        raise ValueError(f"cond: leading dimension {np.shape(cond)[:1]} must match x_T's {x_T.shape[:1]}")
    bs = int(batch_size)
    rows = range(0, x_T.shape[0], bs)
    if cond is None:
        return np.concatenate([np.asarray(fn(jnp.asarray(x_T[i:i + bs]))) for i in rows])
    return np.concatenate([np.asarray(fn(jnp.asarray(x_T[i:i + bs]), jnp.asarray(cond[i:i + bs]))) for i in rows])
