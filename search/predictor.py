"""A learned ranker of candidate plans (the S³ idea): a small Flax model over per-step decisions,
trained with optax on every evaluated (plan, score) pair with a pairwise logistic ranking loss.

Features per step: one-hot codes of each categorical column, the free coefficient, the step's
start/end in u and its width, and the step's position; a shared per-step MLP is mean-pooled
over the (masked) steps, concatenated with plan-level features (analytic first step, number of
steps) and mapped to a scalar "badness" (lower = predicted better).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import stats

from search.space import CATEGORICAL_TABLES, Genome, SearchSpace

_NUM_GLOBAL = 2


def _one_hot_sizes() -> dict[str, int]:
    sizes = {c: max(t.values()) + 1 for c, t in CATEGORICAL_TABLES.items()}
    from solvers.plan import HISTORY, MAX_ORDER
    sizes["order"] = MAX_ORDER + 1
    sizes["base"] = HISTORY
    return sizes


def feature_dims(max_steps: int) -> tuple[int, int]:
    return sum(_one_hot_sizes().values()) + 5, _NUM_GLOBAL


def featurize(genomes: list[Genome], max_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (B, S, F), mask (B, S), global (B, G)) float32 arrays, padded to ``max_steps``."""
    sizes = _one_hot_sizes()
    f_step, _ = feature_dims(max_steps)
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
        mask[k, :n] = 1.0
        glob[k] = [g.analytic_first, g.num_steps / max_steps]
    return steps, mask, glob


class RankNet(nnx.Module):
    def __init__(self, f_step: int, f_glob: int, hidden: int, *, rngs: nnx.Rngs):
        self.s1 = nnx.Linear(f_step, hidden, rngs=rngs)
        self.s2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.h1 = nnx.Linear(hidden + f_glob, hidden, rngs=rngs)
        self.h2 = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, steps, mask, glob):
        h = nnx.gelu(self.s2(nnx.gelu(self.s1(steps))))
        pooled = (h * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
        z = nnx.gelu(self.h1(jnp.concatenate([pooled, glob], -1)))
        return self.h2(z)[..., 0]


def pairwise_rank_loss(pred, target, weight):
    """Mean logistic loss over ordered pairs: pred_i should be below pred_j when target_i < target_j."""
    better = (target[:, None] < target[None, :]).astype(pred.dtype) * weight[:, None] * weight[None, :]
    margin = pred[None, :] - pred[:, None]  # want > 0 where i better than j
    return jnp.sum(better * jax.nn.softplus(-margin)) / jnp.maximum(better.sum(), 1.0)


class Predictor:
    """Holds the RankNet's parameters as a plain PyTree (saved/restored by the search state)."""

    def __init__(self, space: SearchSpace, hidden: int = 64, lr: float = 3e-3, train_steps: int = 200,
                 seed: int = 0):
        self.max_steps = space.nfe + 1
        self.train_steps, self.lr = train_steps, lr
        f_step, f_glob = feature_dims(self.max_steps)
        model = RankNet(f_step, f_glob, hidden, rngs=nnx.Rngs(seed))
        self.graphdef, params = nnx.split(model, nnx.Param)
        self.params = jax.tree.map(np.asarray, nnx.to_pure_dict(params))
        self._abstract = params

    def predict(self, genomes: list[Genome]) -> np.ndarray:
        if not genomes:
            return np.zeros((0,), np.float32)
        b = len(genomes)
        cap = 1 << max(5, int(np.ceil(np.log2(b))))  # padded batch: one executable per size class
        steps, mask, glob = featurize(genomes, self.max_steps)
        pad = cap - b
        steps = np.pad(steps, ((0, pad), (0, 0), (0, 0)))
        mask = np.pad(mask, ((0, pad), (0, 0)))
        glob = np.pad(glob, ((0, pad), (0, 0)))
        return np.asarray(_predict(self.graphdef, self._abstract, self.params, steps, mask, glob))[:b]

    def fit(self, genomes: list[Genome], scores, key) -> float:
        """Train (warm-started from the current parameters) on all evaluated genomes; returns the loss."""
        scores = np.asarray(scores, np.float64)
        b = len(genomes)
        cap = 1 << max(5, int(np.ceil(np.log2(max(b, 1)))))  # padded size: few retraces
        steps, mask, glob = featurize(genomes, self.max_steps)
        pad = cap - b
        steps = np.pad(steps, ((0, pad), (0, 0), (0, 0)))
        mask = np.pad(mask, ((0, pad), (0, 0)))
        glob = np.pad(glob, ((0, pad), (0, 0)))
        target = np.pad(np.log(np.maximum(scores, 1e-12)), (0, pad)).astype(np.float32)
        weight = np.pad(np.ones(b, np.float32), (0, pad))
        params, loss = _fit(self.graphdef, self._abstract, self.params, steps, mask, glob, target, weight,
                            self.lr, self.train_steps)
        self.params = jax.tree.map(np.asarray, params)
        return float(loss)


def _merge(graphdef, abstract, params):
    state = jax.tree.map(lambda x: x, abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


@functools.partial(jax.jit, static_argnums=(0,))
def _predict_jit(graphdef, abstract, params, steps, mask, glob):
    return _merge(graphdef, abstract, params)(steps, mask, glob)


def _predict(graphdef, abstract, params, steps, mask, glob):
    return _predict_jit(graphdef, abstract, params, steps, mask, glob)


@functools.partial(jax.jit, static_argnums=(0, 8, 9))
def _fit(graphdef, abstract, params, steps, mask, glob, target, weight, lr, num_steps):
    opt = optax.adam(lr)

    def loss_fn(p):
        return pairwise_rank_loss(_merge(graphdef, abstract, p)(steps, mask, glob), target, weight)

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
