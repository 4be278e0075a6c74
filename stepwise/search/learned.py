"""Learned plans: time nodes by gradient descent through the compiled sampler, and by dynamic
programming over a teacher trajectory.

**Gradient nodes** (LD3, Tong et al. ICLR'25: learn the discretization against a teacher). The
sampler is a pure JAX function of the plan's arrays, so ``jax.grad`` flows through it to the nodes.
Nodes are parameterised so that ANY parameter vector theta in R^N decodes to a valid grid:

    incr = g + (1 - N g) softmax(theta),   u_k = sum_{j<k} incr_j,   lambda_k = lambda(t_max) + u_k (lambda(t_min) - lambda(t_max)),

t_k = t_of_lambda(lambda_k) (``node_space="logsnr"``) or t_k = t_max + u_k (t_min - t_max)
(``"time"``), with the end points pinned: strictly decreasing, inside the schedule's domain, and
every increment at least the floor g. The loss is the paired RMSE of the plan's endpoints to the
teacher (the reference ODE solve) on training noises (``loss="rmse"``), the Fréchet distance of
their Gaussian fit to the teacher's (``"frechet"``: the search's ``teacher_frechet`` objective),
or, for a trained image model, the paired RMSE in a feature network's space (``"features"``:
||phi(x) - phi(x_teacher)||, phi a domain classifier's penultimate layer: a feature-space loss in
the spirit of LD3's LPIPS option), or the Fréchet distance of the Gaussian fit of phi(x) to the
moments of phi over the model's TRAINING images (``"data_frechet"``: the search's ``data_frechet``
objective; no teacher target, the data instead); the parameters kept are the best on validation
noises drawn from a disjoint seed (early stopping).

**Dynamic-programming nodes** (GITS, Chen et al. ICML'24). From the teacher's trajectory on a fine
grid of M candidate nodes, the cost of one solver step from candidate i to candidate j is the RMSE
of that step started on the teacher's state at i against the teacher's state at j; the N-step path
from the first to the last candidate with the least summed cost is found exactly by dynamic
programming, D_k(j) = min_i D_{k-1}(i) + C(i, j). Seconds of work; a tuned-node BASELINE that
every comparison should include.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepwise import samplers, solvers
from stepwise.evaluation.device import frechet_reference, frechet_to_reference, gaussian_fit
from stepwise.io import restore_step, save_step
from stepwise.search.space import Genome, decode, plan_hash, with_nodes
from stepwise.solvers.plan import SolverPlan, stack_plans

NODE_SPACES = ("logsnr", "time")
LEARN = ("nodes", "nodes+corrections")
LOSS_NAMES = ("rmse", "frechet", "features", "data_frechet")
LR_SCHEDULES = ("constant", "cosine")


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
    checked every ``val_every`` steps; ``node_space`` and ``min_gap`` as in :func:`nodes_from_params`.
    With ``learn="nodes+corrections"`` the weight corrections get their own Adam at
    ``corrections_lr``: they are additive weights of order 1, not softmax logits, so one rate does not
    suit both. ``lr_schedule="cosine"`` decays both rates towards 0 over the ``steps`` updates (:func:`_rate`)."""

    steps: int = 200
    lr: float = 0.05
    train_samples: int = 256
    val_samples: int = 256
    val_every: int = 10
    node_space: str = "logsnr"
    min_gap: float = 1e-3
    seed: int = 0
    learn: str = "nodes"             # nodes | nodes+corrections (S4S / GAS: additive weight corrections too)
    loss: str = "rmse"               # rmse (paired, LD3) | frechet (Gaussian fit to the teacher's: teacher_frechet)
                                     # | features (paired RMSE in a feature network's space; needs ``features``)
                                     # | data_frechet (feature-space Fréchet to the training images; needs ``images``)
    relax: float = 0.0               # LD3's relaxed target: training noises may move by <= relax * |x_T| (0: off)
    corrections_lr: float = 0.01     # Adam's rate on the weight corrections (learn="nodes+corrections")
    lr_schedule: str = "constant"    # constant | cosine (both rates decay towards 0 over the steps)

    def __post_init__(self):
        if self.learn not in LEARN:
            raise ValueError(f"search.gradient_learn: {self.learn!r} is invalid; allowed: {list(LEARN)}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"search.gradient_loss: {self.loss!r} is invalid; allowed: {list(LOSS_NAMES)}")
        for f, lo in (("steps", 1), ("train_samples", 2), ("val_samples", 2), ("val_every", 1)):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"search.gradient_{f}: {v!r} is invalid; allowed: an integer >= {lo}")
        for f in ("lr", "corrections_lr"):
            if not getattr(self, f) > 0:
                raise ValueError(f"search.gradient_{f}: {getattr(self, f)!r} is invalid; allowed: a positive number")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"search.gradient_lr_schedule: {self.lr_schedule!r} is invalid; "
                             f"allowed: {list(LR_SCHEDULES)}")
        if not 0.0 <= self.relax < 1.0:
            raise ValueError(f"search.gradient_relax: {self.relax!r} is invalid; allowed: 0 <= relax < 1")
        if self.node_space not in NODE_SPACES:
            raise ValueError(f"search.node_space: {self.node_space!r} is invalid; allowed: {list(NODE_SPACES)}")


def _noise(model, schedule, n: int, seed: int):
    shape = (n,) + tuple(model.data_shape)
    return jax.random.normal(jax.random.key(seed), shape) * schedule.prior_std()


class Teacher(NamedTuple):
    """Training and validation noises and the teacher's (reference solve's) endpoints of each."""

    x_train: jax.Array
    train: jax.Array
    x_val: jax.Array
    val: jax.Array


def teacher_data(model, schedule, options: GradientOptions) -> Teacher:
    """``options.train_samples`` noises from seed ``options.seed`` and ``options.val_samples`` from
    ``seed + 1`` (disjoint), each with its reference solve; computed once, shared by every refinement.
    ``loss="data_frechet"`` targets the training images, not the teacher: its endpoints are None
    (no reference solve is run)."""
    o = options
    x_tr, x_va = _noise(model, schedule, o.train_samples, o.seed), _noise(model, schedule, o.val_samples, o.seed + 1)
    solve = (lambda x: None) if o.loss == "data_frechet" else (lambda x: samplers.reference_solve(model, schedule, x))
    return Teacher(x_tr, solve(x_tr), x_va, solve(x_va))


def endpoint_rmse(model, schedule, plan: SolverPlan, x_T, teacher):
    """Paired RMSE of the plan's endpoints from ``x_T`` to the teacher's endpoints (differentiable)."""
    x = samplers.sample(model, schedule, plan, x_T, devices=[])
    return jnp.sqrt(jnp.mean((x - teacher) ** 2))


def decode_params(theta: dict, plan: SolverPlan, schedule, node_space: str, min_gap: float) -> SolverPlan:
    """``plan`` with the nodes (and corrections, if ``theta`` has them) that ``theta`` encodes."""
    kw = {"ts": nodes_from_params(theta["nodes"], schedule, node_space, min_gap)}
    if "corrections" in theta:
        kw["corrections"] = theta["corrections"]
    return plan.replace(**kw)


def endpoint_frechet(model, schedule, plan: SolverPlan, x_T, ref):
    """Fréchet distance of the Gaussian fit of the plan's endpoints from ``x_T`` to the teacher's
    (``ref``: ``evaluation.device.frechet_reference`` of the teacher endpoints; the search's
    ``teacher_frechet`` objective), differentiable through ``eigvalsh`` (eigenvalues floored at 1e-12
    so the square root's derivative stays finite)."""
    return frechet_to_reference(samplers.sample(model, schedule, plan, x_T, devices=[]), ref, floor=1e-12)


class FeatureTarget(eqx.Module):
    """The feature map ``phi`` (an ``evaluation.FeatureExtractor``'s ``apply`` and params; the params
    are traced leaves, so one compile serves every plan) and what features are compared with:
    the teacher endpoints' ``phi(x_teacher)`` (loss ``features``) or a
    ``evaluation.device.FrechetReference`` of the training images' features (``data_frechet``)."""

    apply: Callable = eqx.field(static=True)
    params: object
    target: object
    input_shape: tuple | None = eqx.field(static=True)

    def __call__(self, x):
        """phi(x), x reshaped per example to the extractor's input shape."""
        shape = self.input_shape if self.input_shape is not None else x.shape[1:]
        return self.apply(self.params, jnp.reshape(x, (x.shape[0],) + tuple(shape)).astype(jnp.float32))


def _feature_map(extractor, target) -> FeatureTarget:
    """:class:`FeatureTarget` of ``extractor``'s feature map (its input shape, if any) with ``target``."""
    shape = None if extractor.input_shape is None else tuple(extractor.input_shape)
    return FeatureTarget(extractor.apply, extractor.params, target, shape)


def feature_target(extractor, y) -> FeatureTarget:
    """:class:`FeatureTarget` of the teacher endpoints ``y`` in ``extractor``'s feature space."""
    return _feature_map(extractor, jax.jit(_feature_map(extractor, None).__call__)(jnp.asarray(y)))


def endpoint_feature_rmse(model, schedule, plan: SolverPlan, x_T, target: FeatureTarget):
    """Paired RMSE in feature space, sqrt(mean_i mean_d (phi(x_i) - phi(y_i))_d^2), of the plan's
    endpoints x_i from ``x_T`` against the teacher's y_i (differentiable through phi)."""
    f = target(samplers.sample(model, schedule, plan, x_T, devices=[]))
    return jnp.sqrt(jnp.mean((f - target.target) ** 2))


def data_target(data) -> FeatureTarget:
    """:class:`FeatureTarget` of the training images' feature moments ``data`` (a
    ``search.protocol.FeatureMoments``): their ``FrechetReference`` and the feature map."""
    return _feature_map(data.extractor, frechet_reference(data.mean, data.cov))


def endpoint_data_frechet(model, schedule, plan: SolverPlan, x_T, target: FeatureTarget):
    """Fréchet distance of the Gaussian fit of phi(x), x the plan's endpoints from ``x_T``, to the
    training images' feature moments (``target.target``), differentiable through phi and ``eigvalsh``
    (eigenvalues floored at 1e-12, as :func:`endpoint_frechet`)."""
    return frechet_to_reference(target(samplers.sample(model, schedule, plan, x_T, devices=[])), target.target,
                                floor=1e-12)


LOSSES = {"rmse": endpoint_rmse, "frechet": endpoint_frechet, "features": endpoint_feature_rmse,
          "data_frechet": endpoint_data_frechet}


def _targets(data: "Teacher", loss: str, features=None, images=None):
    """(training target, validation target) of a loss: teacher endpoints (rmse), their Gaussian
    fits (frechet), their features in ``features`` (an ``evaluation.FeatureExtractor``), or the
    training images' feature moments ``images`` (data_frechet; the same for both)."""
    if loss == "rmse":
        return data.train, data.val
    if loss == "data_frechet":
        if images is None:
            raise ValueError("search.gradient_loss: 'data_frechet' needs the training images' features; allowed: "
                             "set search.feature_net with search.objective='data_frechet', or loss 'rmse' | 'frechet'")
        target = data_target(images)
        return target, target
    if loss == "features":
        if features is None:
            raise ValueError("search.gradient_loss: 'features' needs a feature network; allowed: set "
                             "search.feature_net (a `stepwise train-features` directory), or loss 'rmse' | 'frechet'")
        return feature_target(features, data.train), feature_target(features, data.val)
    fit = lambda y: frechet_reference(*map(np.asarray, gaussian_fit(jnp.asarray(y))))  # noqa: E731
    return fit(data.train), fit(data.val)


def _loss(theta, plan, model, schedule, x, target, node_space, min_gap, loss):
    """The loss of the plan ``theta`` encodes; a ``delta`` leaf (LD3's relaxation) moves the noises."""
    x = x + theta["delta"] if "delta" in theta else x
    return LOSSES[loss](model, schedule, decode_params(theta, plan, schedule, node_space, min_gap), x, target)


def _project(delta, x, radius: float):
    """Each row of ``delta`` scaled into the ball |delta_i| <= radius |x_i| (LD3's relaxed target)."""
    axes = tuple(range(1, x.ndim))
    norm = jnp.sqrt(jnp.sum(delta ** 2, axis=axes, keepdims=True))
    bound = radius * jnp.sqrt(jnp.sum(x ** 2, axis=axes, keepdims=True))
    return delta * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-30))


def _rate(lr: float, schedule: str, steps: int):
    """Adam's step size: ``lr`` throughout (``constant``), or ``lr (1 + cos(pi k / steps)) / 2`` at
    update k = 0 .. steps - 1 (``cosine``, Loshchilov & Hutter 2017), so the last updates are small: on a loss with
    sharp ridges (an endpoint that switches mixture component) a constant rate keeps jumping across
    them. Adam normalises the gradient's scale, so its rate, not clipping, bounds the step."""
    return lr if schedule == "constant" else optax.cosine_decay_schedule(lr, steps)


def _optimizer(theta: dict, lr: float, corrections_lr: float, schedule: str = "constant",
               steps: int = 1) -> optax.GradientTransformation:
    """Adam on every leaf of ``theta`` at ``lr``, except the weight corrections: Adam at
    ``corrections_lr``; both rates follow ``schedule`` over ``steps`` updates (:func:`_rate`)."""
    if "corrections" not in theta:
        return optax.adam(_rate(lr, schedule, steps))
    labels = {k: "corrections" if k == "corrections" else "rest" for k in theta}
    return optax.multi_transform({"rest": optax.adam(_rate(lr, schedule, steps)),
                                  "corrections": optax.adam(_rate(corrections_lr, schedule, steps))}, labels)


@eqx.filter_jit
def _adam_step(theta, opt_state, plan, model, schedule, x, t, node_space, min_gap, loss, lr, relax, corrections_lr,
               lr_schedule, steps):
    """One Adam update of ``theta`` on the training loss (then the relaxation's projection). The plan
    is an argument (not a closure), so one compile serves every plan of the same structure."""
    value, grad = jax.value_and_grad(_loss)(theta, plan, model, schedule, x, t, node_space, min_gap, loss)
    updates, opt_state = _optimizer(theta, lr, corrections_lr, lr_schedule, steps).update(grad, opt_state, theta)
    theta = optax.apply_updates(theta, updates)
    if "delta" in theta:
        theta = {**theta, "delta": _project(theta["delta"], x, relax)}
    return theta, opt_state, value


_validation = eqx.filter_jit(_loss)


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return digest.hexdigest()[:16]


def _fingerprint(plan: SolverPlan, options: GradientOptions, features=None, images=None) -> dict:
    """What a gradient checkpoint must match to be resumed: the start plan, the options and the
    feature network of a feature-space loss (its name, dimension and a digest of its weights; for
    ``data_frechet`` also a digest of the training images' feature moments)."""
    opts = dataclasses.asdict(options)
    if opts["lr_schedule"] == "constant":   # the only rate before the schedule option: older checkpoints resume
        del opts["lr_schedule"]
    out = {"plan": plan_hash(plan), "options": opts}
    if options.loss == "data_frechet" and images is not None:
        features = images.extractor
        out["images"] = _digest(images.mean, images.cov)
    if options.loss in ("features", "data_frechet") and features is not None:
        out["features"] = {"name": features.name, "dim": int(features.dim),
                           "weights": _digest(*jax.tree.leaves(features.params))}
    return out


def learn_nodes(model, schedule, plan: SolverPlan, options: GradientOptions = GradientOptions(),
                log: Callable[[str], None] | None = None, *, teacher: Teacher | None = None,
                checkpoint_dir: str | None = None, features=None, images=None) -> tuple[SolverPlan, dict]:
    """``plan`` with its time nodes (and, with ``learn="nodes+corrections"``, its weight corrections)
    learned by gradient descent; every other column is kept.

    Returns (the plan with the best validation loss, info): info holds the loss's name, the history
    of (step, train, validation) loss, the best validation loss, the noise seeds, ``wall_s`` (seconds
    of descent, summed over every run of a resumed job) and ``resumed_at`` (the step it resumed after,
    or None).
    The initial plan is the step-0 candidate, so the result is never worse on validation noise.
    ``teacher`` reuses noises and reference solves (:func:`teacher_data`). With ``relax`` > 0 the
    training loss is LD3's relaxed one (Tong et al. 2025): each training noise may move within
    |delta_i| <= relax |x_i| (learned jointly, projected after every step) while its target stays the
    teacher endpoint of the unmoved noise, so a plan that cannot match the teacher exactly is not
    pushed towards an average; validation is never relaxed. ``features`` (an
    ``evaluation.FeatureExtractor``) is the feature map of ``loss="features"``; ``images`` (a
    ``search.protocol.FeatureMoments`` of the training images) the target of ``loss="data_frechet"``.
    With ``checkpoint_dir``
    the state (parameters, Adam state, best so far, history) is saved with orbax at every validation
    step and a rerun continues from the newest one: a killed run resumes to the same result bit for
    bit (a checkpoint of another start plan or other options is refused, naming the directory).
    """
    o = options
    data = teacher if teacher is not None else teacher_data(model, schedule, o)
    theta = {"nodes": params_from_nodes(plan.ts, schedule, o.node_space, o.min_gap).astype(plan.ts.dtype)}
    if o.learn == "nodes+corrections":
        theta["corrections"] = jnp.asarray(plan.corrections)
    if o.relax > 0:
        theta["delta"] = jnp.zeros_like(data.x_train)
    static = (o.node_space, float(o.min_gap), o.loss)
    train_target, val_target = _targets(data, o.loss, features, images)
    step = lambda th, st: _adam_step(th, st, plan, model, schedule, data.x_train, train_target, *static, float(o.lr),
                                     float(o.relax), float(o.corrections_lr), o.lr_schedule, int(o.steps))
    plan_only = lambda th: {k: v for k, v in th.items() if k != "delta"}   # noqa: E731  validation is not relaxed
    val = lambda th: float(_validation(plan_only(th), plan, model, schedule, data.x_val, val_target, *static))
    state = _optimizer(theta, o.lr, o.corrections_lr, o.lr_schedule, int(o.steps)).init(theta)
    best_theta, best_val, start, prior_wall = theta, None, 1, 0.0
    fingerprint = _fingerprint(plan, o, features, images)
    resumed = _restore(checkpoint_dir, fingerprint, theta, state) if checkpoint_dir else None
    t0 = time.perf_counter()
    if resumed is not None:
        theta, state, best_theta, best_val, history, start, prior_wall = resumed
        if log:
            log(f"  gradient: resumed at step {start - 1} from {checkpoint_dir}")
    else:
        best_val = val(theta)
        history = [{"step": 0, "train": float(_validation(theta, plan, model, schedule, data.x_train, train_target,
                                                           *static)), "validation": best_val}]
    for k in range(start, o.steps + 1):
        theta, state, tr = step(theta, state)
        if k % o.val_every == 0 or k == o.steps:
            v = val(theta)
            history.append({"step": k, "train": float(tr), "validation": v})
            if v < best_val:
                best_theta, best_val = theta, v
            if log:
                log(f"  gradient step {k:4d}: train {o.loss} {float(tr):.6g}  validation {v:.6g}")
            if checkpoint_dir:
                save_step(checkpoint_dir, k, {"theta": theta, "opt": state, "best": best_theta},
                          {"fingerprint": fingerprint, "best_validation": best_val,
                           "history": history, "wall_s": prior_wall + time.perf_counter() - t0})
    learned = decode_params(best_theta, plan, schedule, *static[:2])
    return learned, {"loss": o.loss, "history": history, "best_validation": best_val,
                     "seeds": {"train": o.seed, "validation": o.seed + 1},
                     "wall_s": round(prior_wall + time.perf_counter() - t0, 2),
                     "resumed_at": start - 1 if resumed is not None else None}


def node_refiner(model, schedule, space, options: GradientOptions, teacher: Teacher | None = None,
                 features=None, images=None) -> Callable[[Genome], Genome]:
    """genome -> the genome with its time nodes refined by ``options.steps`` gradient steps
    (:func:`learn_nodes` in the space's node coordinate and gap floor, so the refined nodes are
    exactly a genome of the space); every discrete decision is kept. Deterministic: the teacher's
    noises are fixed (``teacher``, or :func:`teacher_data` once). The local search of
    :class:`search.strategies.Memetic`."""
    o = dataclasses.replace(options, node_space=space.node_space, min_gap=float(space.min_gap), learn="nodes")
    data = teacher if teacher is not None else teacher_data(model, schedule, o)

    def refine(g: Genome) -> Genome:
        plan, _ = learn_nodes(model, schedule, decode(g, space), o, teacher=data, features=features, images=images)
        return with_nodes(g, np.asarray(plan.ts, np.float64), space)

    return refine


def _restore(directory, fingerprint: dict, theta, state):
    """(theta, Adam state, best theta, best validation, history, next step, wall seconds of the
    steps before it) from the newest checkpoint in ``directory``, or None when it holds none."""
    out = restore_step(directory, {"theta": theta, "opt": state, "best": theta})
    if out is None:
        return None
    step, arrays, meta = out
    if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise ValueError(f"gradient checkpoint {directory}: it belongs to another start plan, other gradient "
                         "options, another feature network or other training images; allowed: the same search "
                         "settings, or a new run directory")
    return (arrays["theta"], arrays["opt"], arrays["best"], float(meta["best_validation"]),
            list(meta["history"]), step + 1, float(meta.get("wall_s", 0.0)))


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
    grid node i against the teacher's state at grid node j (the teacher: one reference solve through
    the grid). Each row is one vmapped call over a fixed number of targets (padded with the last
    node), so the whole matrix compiles once."""
    grid_ts = jnp.asarray(grid_ts, x_T.dtype)
    m = grid_ts.shape[0]
    fine = samplers.reference_trajectory(model, schedule, x_T, grid_ts)
    run = jax.jit(jax.vmap(lambda p, x: samplers.sample(model, schedule, p, x, devices=[]), in_axes=(0, None)))
    cost = np.full((m, m), np.inf)
    template = stack_plans([step_plan(grid_ts[jnp.asarray([0, m - 1])])] * (m - 1))   # one structure, m-1 copies
    for i in range(m - 1):
        js = list(range(i + 1, m))
        padded = js + [m - 1] * (m - 1 - len(js))
        ts = jnp.stack([jnp.full((m - 1,), grid_ts[i]), grid_ts[jnp.asarray(padded)]], axis=1)
        out = run(template.replace(ts=ts), fine[i])
        err = jnp.sqrt(jnp.mean((out - fine[jnp.asarray(padded)]) ** 2, axis=tuple(range(1, out.ndim))))
        cost[i, js] = np.asarray(err)[:len(js)]
    return cost


def ddim_cost_matrix(model, schedule, grid_ts, x_T) -> np.ndarray:
    """:func:`step_cost_matrix` for a DDIM step (Song et al. 2021) with ONE model evaluation per
    source node: the step from (x_i, t_i) to t_j is x_j = (sigma_j / sigma_i) x_i +
    (alpha_j - alpha_i sigma_j / sigma_i) x0(x_i, t_i), so every target j reuses x0(x_i, t_i)
    (M model calls instead of M^2; what makes DP nodes affordable for a network)."""
    from stepwise.denoisers.guidance import x0_eps

    grid_ts = jnp.asarray(grid_ts, x_T.dtype)
    m = grid_ts.shape[0]
    fine = samplers.reference_trajectory(model, schedule, x_T, grid_ts)
    a, s = schedule.alpha(grid_ts), schedule.sigma(grid_ts)
    shape = (-1,) + (1,) * x_T.ndim

    @jax.jit
    def row(x, i):
        x0, _ = x0_eps(model, x, grid_ts[i])
        ratio = (s / s[i]).reshape(shape)
        step = ratio * x[None] + (a.reshape(shape) - a[i] * ratio) * x0[None]     # (m,) + x.shape
        return jnp.sqrt(jnp.mean((step - fine) ** 2, axis=tuple(range(1, step.ndim))))

    cost = np.full((m, m), np.inf)
    for i in range(m - 1):
        cost[i, i + 1:] = np.asarray(row(fine[i], i))[i + 1:]
    return cost


def dp_costs(model, schedule, step_plan: Callable[[jnp.ndarray], SolverPlan] = None, *, grid: int = 64,
             samples: int = 256, seed: int = 0, node_space: str = "logsnr") -> tuple[jnp.ndarray, np.ndarray]:
    """(the ``grid`` candidate nodes, uniform in ``node_space``; their step-cost matrix
    :func:`step_cost_matrix` on ``samples`` noises of ``seed``). ``step_plan`` defaults to a DDIM
    step (computed by :func:`ddim_cost_matrix`). Computed once, it gives DP nodes for every number of steps (:func:`dp_path`)."""
    grid_ts = nodes_from_params(jnp.zeros((grid - 1,)), schedule, node_space, 0.0)
    x_T = _noise(model, schedule, samples, seed)
    if step_plan is None or step_plan is solvers.ddim:
        return grid_ts, ddim_cost_matrix(model, schedule, grid_ts, x_T)
    return grid_ts, step_cost_matrix(model, schedule, step_plan, grid_ts, x_T)


def dp_nodes(model, schedule, step_plan: Callable[[jnp.ndarray], SolverPlan], steps: int, *,
             grid: int = 64, samples: int = 256, seed: int = 0, node_space: str = "logsnr") -> jnp.ndarray:
    """GITS-style nodes: ``steps + 1`` nodes chosen among ``grid`` candidates (uniform in the
    ``node_space`` coordinate) by :func:`dp_path` on :func:`step_cost_matrix`."""
    grid_ts, cost = dp_costs(model, schedule, step_plan, grid=grid, samples=samples, seed=seed, node_space=node_space)
    return grid_ts[jnp.asarray(dp_path(cost, steps))]


def dp_baselines(baselines: list[tuple[str, SolverPlan]], grid_ts, cost, schedule) -> list[tuple[str, SolverPlan]]:
    """Each baseline with its nodes replaced by the DP nodes of its number of steps (label
    ``solver/gits`` + ``+afs``), duplicates dropped: the tuned-node baselines of every comparison."""
    out, seen = [], set()
    for name, plan in baselines:
        if plan.num_steps > len(grid_ts) - 1:
            continue
        ts = jnp.asarray(grid_ts[jnp.asarray(dp_path(cost, plan.num_steps))], plan.ts.dtype)
        tuned = plan.replace(ts=ts)
        tuned.validate(schedule)
        key = plan_hash(tuned)
        if key in seen:
            continue
        seen.add(key)
        solver, rest = name.split("/", 1) if "/" in name else (name, "")
        out.append((f"{solver}/gits" + ("+afs" if rest.endswith("+afs") else ""), tuned))
    return out


def gits_baselines(model, schedule, baselines: list[tuple[str, SolverPlan]], scores, top: int, *, seed: int = 0,
                   samples: int = 256, grid: int = 64) -> list[tuple[str, SolverPlan]]:
    """GITS-node versions (:func:`dp_baselines`) of the ``top`` best ``baselines`` by ``scores``
    (search scores, lower is better); one cost matrix on ``samples`` noises of ``seed``."""
    if top <= 0 or not baselines:
        return []
    order = np.argsort(np.asarray(scores, np.float64), kind="stable")[:top]
    grid_ts, cost = dp_costs(model, schedule, grid=grid, samples=samples, seed=seed)
    return dp_baselines([baselines[i] for i in order], grid_ts, cost, schedule)
