"""A plan as a straight-line program for step-by-step hosts (a diffusers scheduler, a torch loop).

The compiled executor (:mod:`samplers.executor`) runs a plan inside ``lax.scan`` with array-valued
choices. A host that calls the model itself, one evaluation at a time, needs the same run unrolled:
:func:`compile_plan` walks the plan once with the executor's history bookkeeping on node INDICES
(no arrays) and its coefficient function (:func:`samplers.executor.step_update`), and returns
:class:`Program` — per step: an optional evaluation, the predictor's weights, an optional corrector.
:func:`interpret` runs a program on any array type with ``+`` and ``*`` (NumPy, torch, jax) as a
generator: it yields each :class:`Request` (where and with which model to evaluate) and receives
the model's ``(x0, eps)``; its return value is the final sample.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.samplers.executor import step_update
from stepwise.solvers.plan import HISTORY, NO_CORRECTOR, UNIC, SolverPlan, evaluations, mask_row, validate


class Request(NamedTuple):
    """One model evaluation: at node index ``node`` (time ``t``, with alpha/sigma there), of model
    ``model`` at guidance scale ``guidance``; ``analytic``: no model call (x0 = data mean);
    ``skip``: indices of the network units the call bypasses (``Denoiser.skip_units``; empty: none)."""

    node: int
    t: float
    alpha: float
    sigma: float
    model: int
    guidance: float
    analytic: bool
    corrector: bool
    skip: tuple = ()


class Update(NamedTuple):
    """x = a x_base + b (sum_j w_j f_j + w_new f_new), f = x0 if ``data`` else eps; slots newest first."""

    base: int
    data: bool
    a: float
    b: float
    weights: tuple          # HISTORY weights over the history slots
    new_weight: float       # weight of the corrector's own evaluation (0 for a predictor)


class Step(NamedTuple):
    evaluate: Request | None    # None: the node's value is already known (a UniC corrector's)
    predictor: Update
    corrector: Request | None
    corrected: Update | None
    keep: bool                  # the corrector's evaluation becomes the next node's value (UniC)


class Program(NamedTuple):
    steps: tuple[Step, ...]
    ts: tuple[float, ...]

    @property
    def requests(self) -> list[Request]:
        """Every model call in order (analytic evaluations excluded): a host's timesteps."""
        out = []
        for s in self.steps:
            out += [r for r in (s.evaluate, s.corrector) if r is not None and not r.analytic]
        return out


def _floats(a) -> tuple:
    return tuple(float(v) for v in np.asarray(a, np.float64).reshape(-1))


def compile_plan(plan: SolverPlan, schedule, num_models: int = 1) -> Program:
    """Unroll ``plan`` into a :class:`Program` (validated; coefficients in the default float dtype)."""
    validate(plan, schedule, num_models=num_models)
    plan = jax.tree.map(jnp.asarray, plan)
    dt = jnp.zeros(()).dtype
    ts = plan.ts.astype(dt)
    n = int(ts.shape[0]) - 1
    alpha, sigma, lam = schedule.alpha(ts), schedule.sigma(ts), schedule.lambda_(ts)
    col = {k: np.asarray(getattr(plan, k)) for k in ("model", "guidance", "corrector", "skip")}
    afs = bool(int(plan.analytic_first))

    def request(node: int, model: int, guidance_at: int, corrector: bool) -> Request:
        row = int(mask_row(guidance_at, n))
        return Request(node, float(ts[node]), float(alpha[node]), float(sigma[node]), int(model),
                       float(col["guidance"][row]), afs and node == 0 and not corrector,
                       corrector, tuple(int(u) for u in np.flatnonzero(col["skip"][row])))

    def update(u, weights, with_new: bool) -> Update:
        w = _floats(weights)
        return Update(int(u.base), bool(u.data), float(u.a), float(u.b), w[:HISTORY],
                      w[HISTORY] if with_new else 0.0)

    nodes, pending, steps = [-1] * HISTORY, False, []
    for i in range(n):
        evaluate = None
        if not pending:
            evaluate = request(i, col["model"][i], i, False)
            nodes = [i] + nodes[:-1]
        u = step_update(plan, i, jnp.asarray(nodes, jnp.int32), ts, lam, alpha, sigma, schedule)
        pred = update(u, u.predictor_weights(), False)
        corr, corrected, keep = None, None, False
        if int(col["corrector"][i]) != NO_CORRECTOR:
            nxt = min(i + 1, n - 1)
            corr = request(min(i + 1, n), col["model"][nxt], i + 1, True)
            corrected = update(u, u.corrector_weights(), True)
            keep = int(col["corrector"][i]) == UNIC
            if keep:
                nodes = [i + 1] + nodes[:-1]
        pending = keep
        steps.append(Step(evaluate, pred, corr, corrected, keep))
    program = Program(tuple(steps), _floats(ts))
    expected = sum(1 for e in evaluations(plan))
    assert len(program.requests) == expected, (len(program.requests), expected)  # the one NFE count agrees
    return program


def _combine(u: Update, hist_x, hist_f, f_new=None):
    acc = None
    for w, f in zip(u.weights, hist_f):
        if w != 0.0 and f is not None:
            acc = w * f if acc is None else acc + w * f
    if f_new is not None and u.new_weight != 0.0:
        acc = u.new_weight * f_new if acc is None else acc + u.new_weight * f_new
    out = u.a * hist_x[u.base]
    return out if acc is None else out + u.b * acc


def interpret(program: Program, x_T, data_mean=0.0) -> Iterator:
    """Run ``program`` from ``x_T``: yields ``(request, x)`` for each model call and expects
    ``send((x0, eps))`` back; returns the final x (``StopIteration.value``). Analytic evaluations
    use ``data_mean`` (a scalar or an array broadcastable to x)."""
    xs, x0s, epss = [None] * HISTORY, [None] * HISTORY, [None] * HISTORY

    def push(x, x0, eps):
        for buf, v in ((xs, x), (x0s, x0), (epss, eps)):
            buf.insert(0, v)
            del buf[HISTORY:]

    def evaluate(req: Request, x):
        if req.analytic:
            x0 = x * 0.0 + data_mean
            return x0, (x - req.alpha * x0) / req.sigma
        return (yield req, x)

    x = x_T
    for step in program.steps:
        if step.evaluate is not None:
            x0, eps = yield from evaluate(step.evaluate, x)
            push(x, x0, eps)
        xs[0] = x
        hist_f = x0s if step.predictor.data else epss
        x_pred = _combine(step.predictor, xs, hist_f)
        if step.corrector is None:
            x = x_pred
            continue
        x0n, epsn = yield from evaluate(step.corrector, x_pred)
        x = _combine(step.corrected, xs, hist_f, x0n if step.corrected.data else epsn)
        if step.keep:
            push(x, x0n, epsn)
    return x


def run_program(program: Program, x_T, model_x0_eps, data_mean=0.0):
    """Drive :func:`interpret` with ``model_x0_eps(request, x) -> (x0, eps)``; returns the sample."""
    gen = interpret(program, x_T, data_mean)
    try:
        req, x = next(gen)
        while True:
            req, x = gen.send(model_x0_eps(req, x))
    except StopIteration as stop:
        return stop.value
