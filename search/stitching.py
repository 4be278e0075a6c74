"""Joint search over solver decisions AND the per-step model index under a compute budget.

The search engine of :mod:`search.strategies` optimises one score at a fixed NFE; its codec
(:mod:`search.space`) already carries the plan's ``model`` column. Stitching adds a cost budget:
a plan's cost is the sum of the costs of the models it evaluates
(:func:`samplers.stitching.plan_cost`), and only plans within the budget are admissible.

Adapter (no change to the search files): :class:`BudgetedEvolution` subclasses
:class:`search.strategies.Evolution`; every proposal gets a cost-neutral *swap* move (one
small-model step and one large-model step trade models, so the search can move the cheap steps
anywhere in the trajectory, not only to the start) and is then *projected* onto the budget (the
earliest steps not on the cheapest model are moved to it until the plan fits,
:func:`samplers.stitching.cheapest_first_projection`). The minimal change that would make this
adapter unnecessary: a ``constraint(genome) -> genome | None`` hook called at the end of
``search.space.repair`` (and a list of extra move functions for ``mutate``).

:func:`joint_front` runs one budgeted search per budget (ascending; each seeded with the T-Stitch
plan that fits the budget and the winners of the cheaper budgets) and returns the Pareto front of
(cost, score); :func:`save_front` writes each front plan as a schedule file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from samplers.stitching import cheapest_first_projection, plan_cost, t_stitch
from search.evaluator import Evaluator
from search.space import Genome, SearchSpace, decode, encode, plan_hash, repair
from search.strategies import Evolution, numpy_rng


# ----------------------------------------------------------------------------- spaces
def stitch_space(nfe: int, schedule, num_models: int, settings: dict | None = None,
                 model_only: bool = False) -> SearchSpace:
    """The search space of a joint search: the search defaults plus the model column
    (``model_only=True``: ONLY the model column varies; nodes and solver decisions stay fixed)."""
    if model_only:
        return SearchSpace(nfe=nfe, schedule=schedule, choices=(("model", tuple(range(num_models))),),
                           allow_analytic_first=False, num_models=num_models, p_node=0.0,
                           p_structure=0.0, p_decision=0.2, p_crossover=0.5)
    from configs.search_defaults import search_defaults
    from search.run import make_space

    s = {**search_defaults().to_dict(), **dict(settings or {})}
    return make_space(nfe, schedule, s, num_models=num_models)


# ----------------------------------------------------------------------------- strategy adapter
class BudgetedEvolution(Evolution):
    """(mu + lambda) evolution whose every candidate costs at most ``budget`` (see module doc)."""

    name = "budgeted_evolution"

    def __init__(self, space: SearchSpace, costs, budget: float, p_swap: float = 0.5, **kw):
        super().__init__(space, **kw)
        self.costs = np.asarray(costs, np.float64)
        if self.costs.shape != (space.num_models,):
            raise ValueError(f"budgeted search: {self.costs.shape[0]} costs for {space.num_models} models")
        self.budget, self.p_swap = float(budget), float(p_swap)

    def project(self, g: Genome) -> Genome | None:
        col = cheapest_first_projection(g.cols["model"], g.cols["corrector"], g.analytic_first,
                                        self.costs, self.budget)
        if col is None:
            return None
        cols = {k: v.copy() for k, v in g.cols.items()}
        cols["model"] = col.astype(g.cols["model"].dtype)
        return Genome(g.incr.copy(), cols, g.analytic_first)

    def cost(self, g: Genome) -> float:
        return plan_cost(decode(g, self.space), self.costs)

    def swap(self, g: Genome, rng: np.random.Generator) -> Genome:
        m = g.cols["model"]
        a, b = np.flatnonzero(m == m.min()), np.flatnonzero(m != m.min())
        if a.size == 0 or b.size == 0:
            return g
        i, j = int(rng.choice(a)), int(rng.choice(b))
        cols = {k: v.copy() for k, v in g.cols.items()}
        cols["model"][i], cols["model"][j] = m[j], m[i]
        return Genome(g.incr.copy(), cols, g.analytic_first)

    def _admissible(self, genomes, seen: set) -> list[Genome]:
        out = []
        for g in genomes:
            p = self.project(g)
            if p is None:
                continue
            h = plan_hash(decode(p, self.space))
            if h in seen:
                continue
            seen.add(h)
            out.append(p)
        return out

    def init(self, key, initial: list[Genome]):
        initial = [p for p in (self.project(g) for g in initial) if p is not None]
        if not initial:
            raise ValueError(f"budgeted search: no initial plan fits the budget {self.budget}")
        st = super().init(key, initial)
        st.pending_initial = self._admissible(st.pending_initial, set())
        return st

    def _proposals(self, st, rng, count):
        raw = super()._proposals(st, rng, count)
        moved = [self.swap(g, rng) if rng.random() < self.p_swap else g for g in raw]
        return self._admissible(moved, set(st.archive))


# ----------------------------------------------------------------------------- scoring
class _Target:
    """What :class:`search.evaluator.Evaluator` needs of a model when only moments are known."""

    def __init__(self, data_shape, mean, cov):
        self.data_shape, self._m = tuple(data_shape), (np.asarray(mean, np.float64), np.asarray(cov, np.float64))

    def moments(self):
        return self._m


def stitch_evaluator(models: Sequence, schedule, *, reference=None, moments=None,
                     objective: str = "frechet", num_samples: int = 1000, seed: int = 0,
                     batch_size: int = 2048, log=None) -> Evaluator:
    """An :class:`search.evaluator.Evaluator` that samples with ALL ``models`` (the plan's model
    column picks them) and scores against ``reference`` (a model with ``moments()``, e.g. the
    large mixture; its reference ODE solve is the teacher of ``teacher_rmse``) or against given
    ``moments=(mean, cov)`` (objective ``frechet`` only)."""
    if reference is None:
        if moments is None or objective != "frechet":
            raise ValueError("stitch_evaluator: give a reference model, or moments with objective='frechet'")
        reference = _Target(models[0].data_shape, *moments)
    ev = Evaluator(reference, schedule, objective=objective, num_samples=num_samples, seed=seed,
                   batch_size=batch_size, log=log)
    ev.model = tuple(models)
    return ev


# ----------------------------------------------------------------------------- the front
def _fits(plan, costs, budget) -> bool:
    return plan_cost(plan, costs) <= budget * (1 + 1e-9)


def joint_front(models: Sequence, schedule, base_plan, budgets: Sequence[float], evaluator: Evaluator, *,
                costs=None, model_only: bool = False, settings: dict | None = None, seed: int = 0,
                generations: int = 6, population: int = 12, top_k: int = 4, children: int = 8,
                workdir=None, log: Callable[[str], None] | None = print) -> list[dict]:
    """One budgeted search per budget; returns rows {budget, cost, score, plan, genome}, one per budget
    (the best admissible plan found), ascending in budget.

    ``costs`` default to the models' declared costs. Seeds: the T-Stitch variants of ``base_plan``
    that fit the budget (the most expensive one first) and the winners of cheaper budgets. With
    ``workdir`` each budget's result is stored in ``<workdir>/budget_<k>.json`` and reused on a
    rerun (resume at budget granularity).
    """
    from samplers.stitching import model_costs

    costs = model_costs(models) if costs is None else np.asarray(costs, np.float64)
    m = len(models)
    small, large = int(np.argmin(costs)), int(np.argmax(costs))
    space = stitch_space(base_plan.nfe(), schedule, m, settings, model_only=model_only)
    n = base_plan.num_steps
    stitched = [t_stitch(base_plan, k / n, small, large) for k in range(n + 1)]
    rows: list[dict] = []
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    for bi, budget in enumerate(sorted(float(b) for b in budgets)):
        path = None if workdir is None else Path(workdir) / f"budget_{bi:02d}.json"
        if path is not None and path.exists():
            d = json.loads(path.read_text())
            if abs(d["budget"] - budget) <= 1e-9 * max(1.0, budget):
                g = Genome.from_dict(d["genome"])
                rows.append({"budget": budget, "cost": d["cost"], "score": d["score"], "genome": g,
                             "plan": decode(g, space), "evaluations": d["evaluations"]})
                if log:
                    log(f"  budget {budget:.4g}: reused {path.name} (score {d['score']:.6g})")
                continue
        rng0 = numpy_rng(jax.random.key(seed + 7919 * (bi + 1)))
        seeds = [p for p in stitched if _fits(p, costs, budget)][:2]  # most expensive first
        initial = []
        for p in seeds:
            g = encode(p, space)
            g = g if model_only else (repair(g, space, rng0) or g)
            initial.append(g)
        initial += [r["genome"] for r in rows[-2:]]
        strat = BudgetedEvolution(space, costs, budget, population=population, top_k=top_k, children=children)
        st = strat.init(jax.random.key(seed + bi), initial)
        evals_before = evaluator.evaluations
        while st.generation <= generations:
            cands, st = strat.ask(st)
            if not cands:
                st.generation += 1
                continue
            scores = evaluator.score([decode(g, space) for g in cands])
            st = strat.tell(st, cands, scores)
        g, score = st.best
        plan = decode(g, space)
        assert _fits(plan, costs, budget), "budgeted search returned a plan over budget"
        row = {"budget": budget, "cost": plan_cost(plan, costs), "score": float(score), "genome": g,
               "plan": plan, "evaluations": evaluator.evaluations - evals_before}
        rows.append(row)
        if path is not None:
            from evaluation import write_text_atomic
            write_text_atomic(path, json.dumps({"budget": budget, "cost": row["cost"], "score": row["score"],
                                                "evaluations": row["evaluations"], "genome": g.to_dict()}) + "\n")
        if log:
            log(f"  budget {budget:.4g}: best score {score:.6g} at cost {row['cost']:.4g} "
                f"({row['evaluations']} new evaluations)")
    return rows


def pareto_rows(rows: Sequence[dict], cost: str = "cost", quality: str = "score") -> list[dict]:
    """The rows on the Pareto front of (cost, quality), lower both, ascending in cost."""
    from evaluation import pareto_front

    if not rows:
        return []
    idx = pareto_front([r[cost] for r in rows], [r[quality] for r in rows])
    return [rows[i] for i in idx]


def save_front(rows: Sequence[dict], directory, meta: dict | None = None) -> list[str]:
    """Each row's plan as ``<directory>/front_<k>.json`` (search/schedule_file.py format) with its
    cost and scores in the metadata; returns the paths."""
    from search.schedule_file import save_plan

    paths = []
    for k, r in enumerate(rows):
        info = {key: r[key] for key in r if key not in ("plan", "genome") and
                isinstance(r[key], (int, float, str, type(None)))}
        paths.append(save_plan(os.path.join(os.fspath(directory), f"front_{k:02d}.json"), r["plan"],
                               {"stitch": info, **dict(meta or {})}))
    return paths
