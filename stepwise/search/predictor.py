"""A learned ranker of candidate plans (the S³ idea): a small Flax (linen) model over per-step decisions,
trained with optax on every evaluated (plan, score) pair with a pairwise logistic ranking loss.

Features per step: one-hot codes of each categorical column, the free coefficient, the step's
start/end in u and its width, the step's position, and (when the space searches skip masks) the
step's mask bits and the fraction of units it skips; a shared per-step MLP is mean-pooled
over the (masked) steps, concatenated with plan-level features (analytic first step, number of
steps) and mapped to a scalar "badness" (lower = predicted better).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from scipy import stats

from stepwise.search.space import CATEGORICAL_TABLES, MASK, Genome, SearchSpace
from stepwise.solvers.plan import HISTORY, MAX_ORDER

_NUM_GLOBAL = 2


def _one_hot_sizes() -> dict[str, int]:
    sizes = {c: max(t.values()) + 1 for c, t in CATEGORICAL_TABLES.items()}
    sizes["order"] = MAX_ORDER + 1
    sizes["base"] = HISTORY
    return sizes


def feature_dims(max_steps: int, units: int = 0) -> tuple[int, int]:
    return sum(_one_hot_sizes().values()) + 5 + (units + 1 if units else 0), _NUM_GLOBAL


def featurize(genomes: list[Genome], max_steps: int, units: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (B, S, F), mask (B, S), global (B, G)) float32 arrays, padded to ``max_steps``; with
    ``units`` > 0 each step also carries its skip-mask bits and skipped fraction."""
    sizes = _one_hot_sizes()
    f_step, _ = feature_dims(max_steps, units)
    b = len(genomes)
    steps = np.zeros((b, max_steps, f_step), np.float32)
    mask = np.zeros((b, max_steps), np.float32)
    glob = np.zeros((b, _NUM_GLOBAL), np.float32)
    for k, g in enumerate(genomes):
        n = min(g.num_steps, max_steps)
        u = g.u
        off = 0
        for c, size in sizes.items():
            v = np.clip(g.cols[c][:n].astype(int), 0, size - 1)
            steps[k, np.arange(n), off + v] = 1.0
            off += size
        steps[k, :n, off] = g.cols["coef"][:n] - 1.0
        steps[k, :n, off + 1] = u[:n]
        steps[k, :n, off + 2] = u[1:n + 1]
        steps[k, :n, off + 3] = np.log(np.maximum(g.incr[:n], 1e-6)) / 5.0
        steps[k, :n, off + 4] = np.arange(n) / max(1, n - 1)
        if units:
            skip = np.asarray(g.cols.get(MASK, np.zeros((n, units))), np.float32)[:n, :units]
            steps[k, :n, off + 5:off + 5 + skip.shape[1]] = skip
            steps[k, :n, off + 5 + units] = skip.mean(axis=1) if skip.size else 0.0
        mask[k, :n] = 1.0
        glob[k] = [g.analytic_first, g.num_steps / max_steps]
    return steps, mask, glob


class RankNet(nn.Module):
    """Shared per-step MLP, masked mean pooling, then a head over (pooled, plan-level features)."""

    hidden: int

    @nn.compact
    def __call__(self, steps, mask, glob):
        h = nn.gelu(nn.Dense(self.hidden)(nn.gelu(nn.Dense(self.hidden)(steps))))
        pooled = (h * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
        z = nn.gelu(nn.Dense(self.hidden)(jnp.concatenate([pooled, glob], -1)))
        return nn.Dense(1)(z)[..., 0]


def pairwise_rank_loss(pred, target, weight):
    """Mean logistic loss over ordered pairs: pred_i should be below pred_j when target_i < target_j."""
    better = (target[:, None] < target[None, :]).astype(pred.dtype) * weight[:, None] * weight[None, :]
    margin = pred[None, :] - pred[:, None]  # want > 0 where i better than j
    return jnp.sum(better * jax.nn.softplus(-margin)) / jnp.maximum(better.sum(), 1.0)


def _padded(genomes: list[Genome], max_steps: int, units: int = 0):
    """Features padded to a power-of-two batch (one executable per size class) and the true size."""
    b = len(genomes)
    cap = 1 << max(5, int(np.ceil(np.log2(max(b, 1)))))
    steps, mask, glob = featurize(genomes, max_steps, units)
    pad = cap - b
    return (np.pad(steps, ((0, pad), (0, 0), (0, 0))), np.pad(mask, ((0, pad), (0, 0))),
            np.pad(glob, ((0, pad), (0, 0)))), b, pad


class Predictor:
    """A ranker of genomes; pure: its parameters are a PyTree held by the search state.

    ``params = p.init(seed)``; ``p.predict(params, genomes)`` (lower = predicted better);
    ``params, loss = p.fit(params, genomes, scores)`` trains warm-started from ``params``.
    """

    def __init__(self, space: SearchSpace, hidden: int = 64, lr: float = 3e-3, train_steps: int = 200):
        self.max_steps = space.nfe + 1
        self.units = space.skip_units
        self.train_steps, self.lr = int(train_steps), float(lr)
        self.net = RankNet(int(hidden))

    def init(self, seed: int = 0) -> dict:
        f_step, f_glob = feature_dims(self.max_steps, self.units)
        shapes = (np.zeros((1, self.max_steps, f_step), np.float32), np.zeros((1, self.max_steps), np.float32),
                  np.zeros((1, f_glob), np.float32))
        return jax.tree.map(np.asarray, self.net.init(jax.random.key(seed), *shapes)["params"])

    def predict(self, params: dict, genomes: list[Genome]) -> np.ndarray:
        if not genomes:
            return np.zeros((0,), np.float32)
        feats, b, _ = _padded(genomes, self.max_steps, self.units)
        return np.asarray(_predict(self.net, params, *feats))[:b]

    def fit(self, params: dict, genomes: list[Genome], scores) -> tuple[dict, float]:
        """Train on all evaluated genomes (log scores, pairwise ranking loss); returns (params, loss)."""
        scores = np.asarray(scores, np.float64)
        feats, b, pad = _padded(genomes, self.max_steps, self.units)
        target = np.pad(np.log(np.maximum(scores, 1e-12)), (0, pad)).astype(np.float32)
        weight = np.pad(np.ones(b, np.float32), (0, pad))
        params, loss = _fit(self.net, params, *feats, target, weight, self.lr, self.train_steps)
        return jax.tree.map(np.asarray, params), float(loss)


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(net, params, steps, mask, glob):
    return net.apply({"params": params}, steps, mask, glob)


@functools.partial(jax.jit, static_argnums=(0, 7, 8))
def _fit(net, params, steps, mask, glob, target, weight, lr, num_steps):
    opt = optax.adam(lr)

    def loss_fn(p):
        return pairwise_rank_loss(net.apply({"params": p}, steps, mask, glob), target, weight)

    def body(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        upd, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=num_steps)
    return params, losses[-1]


def spearman(a, b) -> float:
    """Spearman rank correlation (nan when fewer than 3 points or a constant input)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)
