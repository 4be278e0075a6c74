"""Learned plans: time nodes by gradient descent through the compiled sampler, and by dynamic
programming over a teacher trajectory.

**Gradient nodes** (LD3, Tong et al. ICLR'25: learn the discretization against a teacher). The
sampler is a pure JAX function of the plan's arrays, so ``jax.grad`` flows through it to the nodes.
Nodes are parameterised so that ANY parameter vector theta in R^N decodes to a valid grid:

    incr = g + (1 - N g) softmax(theta),   u_k = sum_{j<k} incr_j,   lambda_k = lambda(t_max) + u_k (lambda(t_min) - lambda(t_max)),

t_k = t_of_lambda(lambda_k) (``node_space="logsnr"``) or t_k = t_max + u_k (t_min - t_max)
(``"time"``), with the end points pinned: strictly decreasing, inside the schedule's domain, and
every increment at least the floor g. The loss is the paired RMSE of the plan's endpoints to the
teacher (the reference ODE solve) on training noises; the parameters kept are the best on
validation noises drawn from a disjoint seed (early stopping).

**Dynamic-programming nodes** (GITS, Chen et al. ICML'24). From the teacher's trajectory on a fine
grid of M candidate nodes, the cost of one solver step from candidate i to candidate j is the RMSE
of that step started on the teacher's state at i against the teacher's state at j; the N-step path
from the first to the last candidate with the least summed cost is found exactly by dynamic
programming, D_k(j) = min_i D_{k-1}(i) + C(i, j). Seconds of work; a tuned-node BASELINE that
every comparison should include.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepwise import samplers
from stepwise.solvers.plan import SolverPlan, stack_plans

NODE_SPACES = ("logsnr", "time")
LEARN = ("nodes", "nodes+corrections")


# ----------------------------------------------------------------------------- node parameterisation
def nodes_from_params(theta, schedule, node_space: str = "logsnr", min_gap: float = 1e-3):
    """Decreasing time nodes (N+1,) from ``theta`` (N,) (see module doc); differentiable."""
    if node_space not in NODE_SPACES:
        raise ValueError(f"node_space: {node_space!r} is invalid; allowed: {list(NODE_SPACES)}")
    n = theta.shape[0]
    if not 0.0 <= min_gap * n < 1.0:
        raise ValueError(f"min_gap: {min_gap} is invalid for {n} steps; allowed: 0 <= min_gap < 1/{n}")
    incr = min_gap + (1.0 - n * min_gap) * jax.nn.softmax(theta)
    u = jnp.concatenate([jnp.zeros((1,), theta.dtype), jnp.cumsum(incr)])
    t0 = jnp.asarray(schedule.t_max, theta.dtype)
    t1 = jnp.asarray(schedule.t_min, theta.dtype)
    if node_space == "time":
        ts = t0 + u * (t1 - t0)
    else:
        l0, l1 = schedule.lambda_(t0), schedule.lambda_(t1)
        ts = schedule.t_of_lambda(l0 + u * (l1 - l0))
    return ts.at[0].set(t0).at[-1].set(t1)


def params_from_nodes(ts, schedule, node_space: str = "logsnr", min_gap: float = 1e-3) -> jnp.ndarray:
    """A theta whose decoded nodes are ``ts`` (increments below the floor are raised to it)."""
    ts = jnp.asarray(ts)
    n = ts.shape[0] - 1
    if node_space == "time":
        u = (ts - ts[0]) / (ts[-1] - ts[0])
    else:
        lam = schedule.lambda_(ts)
        u = (lam - lam[0]) / (lam[-1] - lam[0])
    incr = jnp.diff(u)
    soft = jnp.maximum((incr - min_gap) / (1.0 - n * min_gap), 1e-12)
    return jnp.log(soft / soft.sum())


# ----------------------------------------------------------------------------- gradient strategy
@dataclasses.dataclass(frozen=True)
class GradientOptions:
    """Adam on the node parameters: ``steps`` updates at learning rate ``lr`` on ``train_samples``
    training noises (seed ``seed``), validation on ``val_samples`` noises (seed ``seed + 1``),
    checked every ``val_every`` steps; ``node_space`` and ``min_gap`` as in :func:`nodes_from_params`."""

    steps: int = 200
    lr: float = 0.05
    train_samples: int = 256
    val_samples: int = 256
    val_every: int = 10
    node_space: str = "logsnr"
    min_gap: float = 1e-3
    seed: int = 0
    learn: str = "nodes"             # nodes | nodes+corrections (S4S / GAS: additive weight corrections too)

    def __post_init__(self):
        if self.learn not in LEARN:
            raise ValueError(f"search.gradient_learn: {self.learn!r} is invalid; allowed: {list(LEARN)}")
        for f, lo in (("steps", 1), ("train_samples", 2), ("val_samples", 2), ("val_every", 1)):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"search.gradient_{f}: {v!r} is invalid; allowed: an integer >= {lo}")
        if not self.lr > 0:
            raise ValueError(f"search.gradient_lr: {self.lr!r} is invalid; allowed: a positive number")
        if self.node_space not in NODE_SPACES:
            raise ValueError(f"search.node_space: {self.node_space!r} is invalid; allowed: {list(NODE_SPACES)}")


def _noise(model, schedule, n: int, seed: int):
    shape = (n,) + tuple(model.data_shape)
    return jax.random.normal(jax.random.key(seed), shape) * schedule.prior_std()


def endpoint_rmse(model, schedule, plan: SolverPlan, x_T, teacher):
    """Paired RMSE of the plan's endpoints from ``x_T`` to the teacher's endpoints (differentiable)."""
    x = samplers.sample(model, schedule, plan, x_T, devices=[])
    return jnp.sqrt(jnp.mean((x - teacher) ** 2))


def learn_nodes(model, schedule, plan: SolverPlan, options: GradientOptions = GradientOptions(),
                log: Callable[[str], None] | None = None) -> tuple[SolverPlan, dict]:
    """``plan`` with its time nodes (and, with ``learn="nodes+corrections"``, its weight corrections)
    learned by gradient descent; every other column is kept.

    Returns (the plan with the best validation RMSE, a history of (step, train, validation) RMSE).
    The initial plan is the step-0 candidate, so the result is never worse on validation noise.
    """
    o = options
    x_tr, x_va = _noise(model, schedule, o.train_samples, o.seed), _noise(model, schedule, o.val_samples, o.seed + 1)
    t_tr = samplers.reference_solve(model, schedule, x_tr)
    t_va = samplers.reference_solve(model, schedule, x_va)
    theta = {"nodes": params_from_nodes(plan.ts, schedule, o.node_space, o.min_gap).astype(plan.ts.dtype)}
    if o.learn == "nodes+corrections":
        theta["corrections"] = jnp.asarray(plan.corrections)

    def decode(th):
        kw = {"ts": nodes_from_params(th["nodes"], schedule, o.node_space, o.min_gap)}
        if "corrections" in th:
            kw["corrections"] = th["corrections"]
        return plan.replace(**kw)

    def loss(th, x, t):
        return endpoint_rmse(model, schedule, decode(th), x, t)

    opt = optax.adam(o.lr)
    step = eqx.filter_jit(lambda th, s: _adam_step(loss, opt, th, s, x_tr, t_tr))
    val = eqx.filter_jit(lambda th: loss(th, x_va, t_va))
    state = opt.init(theta)
    best_theta, best_val = theta, float(val(theta))
    history = [{"step": 0, "train": float(loss(theta, x_tr, t_tr)), "validation": best_val}]
    for k in range(1, o.steps + 1):
        theta, state, tr = step(theta, state)
        if k % o.val_every == 0 or k == o.steps:
            v = float(val(theta))
            history.append({"step": k, "train": float(tr), "validation": v})
            if v < best_val:
                best_theta, best_val = theta, v
            if log:
                log(f"  gradient step {k:4d}: train RMSE {float(tr):.6g}  validation {v:.6g}")
    learned = decode(best_theta)
    return learned, {"history": history, "best_validation": best_val,
                     "seeds": {"train": o.seed, "validation": o.seed + 1}}


def _adam_step(loss, opt, theta, state, x, t):
    value, grad = jax.value_and_grad(loss)(theta, x, t)
    updates, state = opt.update(grad, state, theta)
    return optax.apply_updates(theta, updates), state, value


# ----------------------------------------------------------------------------- dynamic programming
def dp_path(cost: np.ndarray, steps: int) -> list[int]:
    """The path 0 = i_0 < i_1 < ... < i_steps = M-1 minimising the summed ``cost[i_k, i_{k+1}]``
    (entries with j <= i are ignored); exact dynamic programming in O(steps M^2)."""
    cost = np.asarray(cost, np.float64)
    m = cost.shape[0]
    if cost.shape != (m, m) or not 1 <= steps <= m - 1:
        raise ValueError(f"dp_path: need a square cost matrix and 1 <= steps <= {m - 1}, got {cost.shape}, {steps}")
    c = np.where(np.triu(np.ones((m, m), bool), 1), cost, np.inf)
    best = np.full(m, np.inf)
    best[0] = 0.0
    back = np.zeros((steps + 1, m), np.int64)
    for k in range(1, steps + 1):
        total = best[:, None] + c                      # (from i, to j)
        back[k] = np.argmin(total, axis=0)
        best = total[back[k], np.arange(m)]
    path = [m - 1]
    for k in range(steps, 0, -1):
        path.append(int(back[k][path[-1]]))
    return path[::-1]


def step_cost_matrix(model, schedule, step_plan: Callable[[jnp.ndarray], SolverPlan], grid_ts, x_T) -> np.ndarray:
    """C[i, j] = RMSE of one step (``step_plan(ts=[t_i, t_j])``) started on the teacher's state at
    grid node i against the teacher's state at grid node j (the teacher: a reference solve through
    the grid)."""
    grid_ts = jnp.asarray(grid_ts, x_T.dtype)
    m = grid_ts.shape[0]
    fine = _teacher_trajectory(model, schedule, grid_ts, x_T)
    cost = np.full((m, m), np.inf)
    for i in range(m - 1):
        js = list(range(i + 1, m))
        plans = stack_plans([step_plan(jnp.stack([grid_ts[i], grid_ts[j]])) for j in js])
        run = jax.vmap(lambda p: samplers.sample(model, schedule, p, fine[i], devices=[]))
        out = run(plans)
        err = jnp.sqrt(jnp.mean((out - fine[jnp.asarray(js)]) ** 2, axis=tuple(range(1, out.ndim))))
        cost[i, js] = np.asarray(err)
    return cost


def _teacher_trajectory(model, schedule, grid_ts, x_T):
    """The teacher's state at every grid node: tight reference solves from t_max to each node."""
    states = [x_T]
    x = x_T
    for k in range(1, grid_ts.shape[0]):
        x = samplers.reference_solve(model, schedule, x, t_start=float(grid_ts[k - 1]), t_end=float(grid_ts[k]))
        states.append(x)
    return jnp.stack(states)


def dp_nodes(model, schedule, step_plan: Callable[[jnp.ndarray], SolverPlan], steps: int, *,
             grid: int = 64, samples: int = 256, seed: int = 0, node_space: str = "logsnr") -> jnp.ndarray:
    """GITS-style nodes: ``steps + 1`` nodes chosen among ``grid`` candidates (uniform in the
    ``node_space`` coordinate) by :func:`dp_path` on :func:`step_cost_matrix`."""
    theta = jnp.zeros((grid - 1,))
    grid_ts = nodes_from_params(theta, schedule, node_space, 0.0)
    x_T = _noise(model, schedule, samples, seed)
    cost = step_cost_matrix(model, schedule, step_plan, grid_ts, x_T)
    return grid_ts[jnp.asarray(dp_path(cost, steps))]
