"""Scoring candidate plans: paired noise, exact distances, a cache, one compiled sampler per NFE.

Objectives (lower is better):

* ``teacher_rmse``: root-mean-square distance of the candidate's endpoints to a high-accuracy
  reference solve of the SAME noises (a few hundred). Its per-sample errors are paired, so its
  noise is far below that of a distribution distance; by the coupling bound,
  ``Frechet(candidate, data) <= d * rmse^2`` for the exact denoiser, so it bounds the final metric.
* ``teacher_frechet``: Fréchet distance between the Gaussian statistics of the candidate's
  endpoints and those of the reference solve of the SAME noises. Sample noise is common to both
  and largely cancels, so it measures the solver's systematic distribution error (on the digits
  mixture at NFE 5 its rank correlation with the final 10k-sample excess distance over all
  baselines is 0.999 at 512 noises, against 0.96 for teacher_rmse).
* ``frechet``: Fréchet distance of the candidate's samples to the exact mixture moments (only for
  models with ``moments()``; a trained network has none, use a teacher objective).
* ``data_frechet``: Fréchet distance of the candidate's samples, in a domain classifier's feature
  space, to the features of the model's TRAINING images (``data``, a
  :class:`search.protocol.FeatureMoments`): the candidate is scored against the data, not against
  the model's own ODE solution, as S³ (Liu et al. 2023) and AutoDiffusion (Li et al. 2023) score
  candidates by FID. Worth it when the ODE solution itself samples worse than a few-step plan
  (``reference_heldout`` of the final comparison); the held-out test images stay unseen.

Every candidate of a search uses the same noise (paired comparison); plans with the same number
of steps reuse one compiled executable (``samplers.trace_count``); results are cached by
:func:`search.space.plan_hash`. With several devices the noise batch is sharded over them.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise import samplers, schedules, solvers
from stepwise.denoisers import DenoiserSet
from stepwise.evaluation import frechet_reference, frechet_to_reference, sample_frechet
from stepwise.evaluation.stats import FrechetDistanceError
from stepwise.evaluation.device import rmse
from stepwise.search.space import plan_hash

OBJECTIVES = ("teacher_frechet", "teacher_rmse", "frechet", "data_frechet")
BAD_SCORE = 1e6  # non-finite results (a diverging plan) get this score


def has_moments(model) -> bool:
    """Whether the model knows its data distribution's exact mean and covariance (``moments()``)."""
    return callable(getattr(model, "moments", None))


def run_plan(model, schedule, plan, x_T: np.ndarray, batch_size: int) -> np.ndarray:
    """Sample in fixed-size chunks (one executable per chunk shape); ``samplers.sample`` shards each
    chunk over this process's devices."""
    return samplers.chunked(lambda xb: samplers.sample(model, schedule, plan, xb), x_T, batch_size)


def reference_endpoints(model, schedule, x_T: np.ndarray, batch_size: int, rtol: float = 1e-6) -> np.ndarray:
    return samplers.chunked(lambda xb: samplers.reference_solve(model, schedule, xb, rtol=rtol), x_T, batch_size)


@eqx.filter_jit
def score_stacked(denoisers, schedule, stacked, x_T, objective: str, target):
    """Scores of a stack of equal-length plans on one noise batch, in ONE compiled call: ``lax.map``
    of the sampler over the plans (a loop inside the call, so each plan's ``lax.cond``/``switch``
    still runs only its chosen branch; ``vmap`` would turn them into selects that evaluate every
    branch), the objective on device (RMSE to the teacher endpoints, or the Fréchet distance to a
    fixed reference via ``eigh``), non-finite results -> BAD_SCORE."""

    def one(plan):
        x = samplers.sample(denoisers, schedule, plan, x_T, devices=[])
        s = rmse(x, target) if objective == "teacher_rmse" else frechet_to_reference(x, target)
        return jnp.where(jnp.isfinite(s) & jnp.all(jnp.isfinite(x)), s, BAD_SCORE)

    return jax.lax.map(one, stacked)


class Evaluator:
    """Scores plans on one fixed set of search noises; caches by plan hash.

    ``cache`` maps plan hash -> score and is shared with the search state (so it is saved and
    restored with it). ``evaluations`` counts plans actually sampled (cache misses).

    ``model`` defines the target (its moments, or its reference solve as the teacher); candidates
    are sampled with ``denoisers`` (default: ``model``), e.g. a :class:`denoisers.DenoiserSet`
    whose members the plans' ``model`` column picks (stitching).
    """

    def __init__(self, model, schedule, *, objective: str = "teacher_frechet", num_samples: int = 512,
                 seed: int = 0, batch_size: int = 2048, rtol: float = 1e-6, use_vmap: bool = False,
                 cache: dict | None = None, log: Callable[[str], None] | None = None,
                 denoisers=None, chunk: int = 16, data=None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: must be one of {OBJECTIVES}, got {objective!r}")
        if (objective == "data_frechet") != (data is not None):
            raise ValueError("objective 'data_frechet' needs the training images' feature moments (search.feature_net) "
                             "and only it takes them; allowed: objective 'data_frechet' with data, or another "
                             f"objective of {OBJECTIVES} without")
        if objective == "data_frechet" and use_vmap:
            raise ValueError("search.vmap: objective 'data_frechet' scores features on the host; allowed: "
                             "search.vmap=False, or a teacher objective")
        if num_samples < 2:
            raise ValueError(f"num_samples: need at least 2, got {num_samples}")
        if objective == "frechet" and not has_moments(model):
            raise ValueError("objective 'frechet' needs a model with exact moments (the digits mixture); "
                             f"for a trained network use one of {OBJECTIVES[:2]}")
        self.model, self.schedule, self.objective = model, schedule, objective
        self.denoisers = model if denoisers is None else denoisers
        self.num_models = len(self.denoisers) if isinstance(self.denoisers, DenoiserSet) else 1
        self.batch_size = int(min(batch_size, num_samples))
        self.use_vmap = use_vmap
        if int(chunk) < 1:
            raise ValueError(f"chunk: {chunk!r} is invalid; allowed: an integer >= 1 (candidates per compiled call)")
        self.chunk = int(chunk)
        self.num_samples, self.seed = int(num_samples), int(seed)
        shape = (num_samples,) + tuple(model.data_shape)
        self.x_T = np.asarray(jax.random.normal(jax.random.key(seed), shape) * schedule.prior_std(), np.float32)
        self.mean, self.cov = model.moments() if has_moments(model) else (None, None)
        self.data = data
        self.log = log
        self._target = None      # the on-device objective's target (built on first use)
        self.diverged: dict[str, str] = {}   # plan hash -> why it got BAD_SCORE (where it became non-finite)
        self.cache = {} if cache is None else cache
        self.evaluations = 0
        self.local_evaluations = 0   # of those, sampled by this process (all of them on one process)
        self.sample_time = 0.0   # sampling candidates incl. the host transfer (on-device path: with scoring)
        self.score_time = 0.0    # their distances on the host
        t0 = time.perf_counter()
        self.teacher = (reference_endpoints(model, schedule, self.x_T, self.batch_size, rtol)
                        if objective.startswith("teacher") else None)
        if self.teacher is not None:
            t = self.teacher.reshape(num_samples, -1).astype(np.float64)
            self.teacher_mean, self.teacher_cov = t.mean(0), np.cov(t, rowvar=False)
        self.teacher_time = time.perf_counter() - t0
        if log and self.teacher is not None:
            log(f"teacher: reference solve of {num_samples} noises in {self.teacher_time:.1f}s")

    def score_samples(self, x: np.ndarray) -> float:
        return self.checked_score(x)[0]

    def checked_score(self, x: np.ndarray) -> tuple[float, str | None]:
        """(score, None), or (BAD_SCORE, why) for samples that cannot be scored."""
        if not np.all(np.isfinite(x)):
            return BAD_SCORE, "non-finite samples"
        if self.objective == "teacher_rmse":
            d = x.reshape(self.teacher.shape).astype(np.float64) - self.teacher.astype(np.float64)
            s = float(np.sqrt(np.mean(d ** 2)))          # float64, like the Fréchet objectives
        else:
            try:
                if self.objective == "data_frechet":
                    s = self.data.distance(x)
                else:
                    s = sample_frechet(x, *((self.teacher_mean, self.teacher_cov) if self.objective == "teacher_frechet"
                                            else (self.mean, self.cov)))
            except FrechetDistanceError as e:   # e.g. samples collapsed onto a subspace: a failed candidate
                return BAD_SCORE, f"Fréchet distance not computable ({e})"
        return (s, None) if np.isfinite(s) else (BAD_SCORE, "non-finite score")

    def _device_target(self):
        if self._target is None:
            if self.objective == "teacher_rmse":
                self._target = jnp.asarray(self.teacher)
            elif self.objective == "teacher_frechet":
                self._target = frechet_reference(self.teacher_mean, self.teacher_cov)
            else:
                self._target = frechet_reference(self.mean, self.cov)
        return self._target

    def _score_on_device(self, plans) -> list[float]:
        """Scores of plans, chunks of ``self.chunk`` equal-length plans per compiled call; one host
        transfer of a score vector per chunk (the last chunk is padded with its last plan)."""
        out: dict[int, float] = {}
        x_T, target = jnp.asarray(self.x_T), self._device_target()
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(plans):
            p.validate(self.schedule, num_models=self.num_models)
            by_len.setdefault(p.num_steps, []).append(i)
        for idx in by_len.values():
            for j in range(0, len(idx), self.chunk):
                part = idx[j:j + self.chunk]
                chunk = [plans[i] for i in part] + [plans[part[-1]]] * (self.chunk - len(part))
                scores = np.asarray(score_stacked(self.denoisers, self.schedule, solvers.stack_plans(chunk), x_T,
                                                  self.objective, target))
                out.update(zip(part, (float(v) for v in scores)))
        return [out[i] for i in range(len(plans))]

    def _sample_many(self, plans):
        return [self._run_one(p) for p in plans]

    def _run_one(self, plan):
        """The plan's samples, or None when it diverges (the reason is kept and logged)."""
        try:
            return run_plan(self.denoisers, self.schedule, plan, self.x_T, self.batch_size)
        except samplers.NonFiniteError as e:
            self._diverged(plan_hash(plan), str(e).removeprefix("sample: "))
            return None

    def _diverged(self, key: str, why: str) -> None:
        self.diverged[key] = why
        if self.log:
            self.log(f"candidate {key[:10]} diverged (score {BAD_SCORE:g}): {why}")

    def score(self, plans: Sequence) -> list[float]:
        """Scores of plans (cached ones are not sampled again). In a multi-process run (``jax.distributed``)
        every process calls this with the same plans; process p evaluates the uncached plans p, p + P,
        ... and the scores are all-gathered, so every process ends with the same cache."""
        keys = [plan_hash(p) for p in plans]
        todo = {}
        for k, p in zip(keys, plans):
            if k not in self.cache and k not in todo:
                todo[k] = p
        if todo:
            items = list(todo.items())
            pid, count = jax.process_index(), jax.process_count()
            mine = dict(items[pid::count])
            local = self._evaluate(mine) if mine else {}
            self.local_evaluations += len(mine)
            if count == 1:
                self.cache.update(local)
            else:
                self.cache.update(_gather_scores([k for k, _ in items], local, pid, count))
            self.evaluations += len(todo)
        return [float(self.cache[k]) for k in keys]

    def _evaluate(self, todo: dict) -> dict:
        """{plan hash: score} of the plans in ``todo`` (sampled here; divergences logged)."""
        out = {}
        if self.use_vmap:
            t0 = time.perf_counter()
            for k, v in zip(todo, self._score_on_device(list(todo.values()))):
                out[k] = v
                if v >= BAD_SCORE:
                    self._diverged(k, "non-finite samples or score (scored on device; step not located)")
            self.sample_time += time.perf_counter() - t0
            return out
        t0 = time.perf_counter()
        outs = self._sample_many(list(todo.values()))
        t1 = time.perf_counter()
        self.sample_time += t1 - t0
        for k, x in zip(todo, outs):
            if x is None:
                out[k] = BAD_SCORE
                continue
            out[k], why = self.checked_score(x)
            if why is not None and k not in self.diverged:
                self._diverged(k, why)
        self.score_time += time.perf_counter() - t1
        return out


def _gather_scores(keys: list[str], local: dict, pid: int, count: int) -> dict:
    """Every process's scores of ``keys`` (process p scored keys[p::count]) from one all-gather. The
    float64 scores travel as their uint32 halves, so they arrive bit-exact even without x64."""
    from jax.experimental import multihost_utils

    mine = np.full(len(keys), np.nan, np.float64)
    for i in range(pid, len(keys), count):
        mine[i] = local[keys[i]]
    bits = np.asarray(multihost_utils.process_allgather(mine.view(np.uint32)), np.uint32)
    every = bits.reshape(count, 2 * len(keys)).view(np.float64)
    return {k: float(every[i % count, i]) for i, k in enumerate(keys)}


def baseline_plans(nfe: int, schedule, orders: Sequence[int] = (1, 2, 3),
                   analytic_first: Sequence[bool] = (False, True)) -> list[tuple[str, object]]:
    """Every registered preset x discretization (x order, where the preset has one) x analytic first
    step {off, on}, at exactly ``nfe`` evaluations; presets that cannot meet the budget are skipped.

    The analytic first step (x0 = data mean at t_max, no model call) is a free option the search may
    use, so every baseline gets it too: the preset is built for ``nfe + 1`` evaluations and its
    first call is replaced (label suffix ``+afs``)."""
    out, seen = [], set()
    for name in sorted(solvers.PRESETS):
        p = solvers.PRESETS[name]
        opts = [{"order": o} for o in orders] if "order" in p.options else [{}]
        for disc in sorted(schedules.DISCRETIZATIONS):
            for o in opts:
                for afs in analytic_first:
                    try:
                        plan = solvers.build_preset(name, nfe + int(afs), schedule, disc, **o)
                        if afs:
                            plan = plan.replace(analytic_first=1)
                        plan.validate(schedule)
                    except (ValueError, AssertionError, TypeError):
                        continue
                    if plan.nfe() != nfe:
                        continue
                    key = plan_hash(plan)
                    if key in seen:
                        continue
                    seen.add(key)
                    label = name + (f"(order={o['order']})" if o else "") + f"/{disc}" + ("+afs" if afs else "")
                    out.append((label, plan))
    return out
