"""Joint search over solver decisions AND the per-step model index under a compute budget.

The search engine of :mod:`search.strategies` optimises one score at a fixed NFE; its codec
(:mod:`search.space`) already carries the plan's ``model`` column. Stitching adds a cost budget
through the strategy's hooks (:func:`budget_hooks`): a plan's cost is ``solvers.plan.cost``; every
proposal gets a cost-neutral *swap* move (one small-model step and one large-model step trade
models, so the cheap steps can sit anywhere in the trajectory, not only at the start) and is then
*projected* onto the budget (the earliest steps not on the cheapest model move to it until the
plan fits, :func:`search.budget.cheapest_first_projection`).

:func:`joint_front` runs one budgeted search per budget (ascending; each seeded with the best
T-Stitch plans, of every base preset, that fit the budget, ranked by search score, and the winners
of the cheaper budgets) and returns the Pareto front of (cost, score); :func:`save_front` writes
each front plan as a schedule file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from stepwise.denoisers import DenoiserSet
from stepwise.evaluation import pareto_front
from stepwise.io import write_text_atomic
from stepwise.search.budget import cheapest_first_projection, moved_rows_whole, skip_projection, within_budget
from stepwise.search.evaluator import Evaluator
from stepwise.search.schedule_file import save_plan
from stepwise.search.space import MASK, Genome, SearchSpace, decode, encode, repair
from stepwise.search.strategies import Evolution, EvolutionOptions, Hooks, numpy_rng, run_generations
from stepwise.solvers import plan as P
from stepwise.solvers.transforms import t_stitch


# ----------------------------------------------------------------------------- spaces
def model_only_space(nfe: int, schedule, num_models: int) -> SearchSpace:
    """A space where ONLY the model column varies (nodes and solver decisions stay fixed): it
    isolates what stitching alone gains."""
    return SearchSpace(nfe=nfe, schedule=schedule, choices=(("model", tuple(range(num_models))),),
                       allow_analytic_first=False, num_models=num_models, p_node=0.0,
                       p_structure=0.0, p_decision=0.2, p_crossover=0.5)


# ----------------------------------------------------------------------------- budget hooks
def budget_hooks(costs, budget: float, p_swap: float = 0.5, unit_shares=None, damage=None) -> Hooks:
    """Strategy hooks that keep every candidate within ``budget`` (see module doc). With
    ``unit_shares`` (genomes with skip masks) a candidate that no model move can fit has every step
    on the cheapest model and then units skipped (:func:`search.budget.skip_projection`): earliest
    steps first, or, with ``damage`` (genome -> (N, U) price, e.g. :func:`search.budget.skip_damage`), the cheapest
    damage per unit of cost saved first."""
    costs = np.asarray(costs, np.float64)
    masked = unit_shares is not None

    def project(g: Genome) -> Genome | None:
        cols = {k: v.copy() for k, v in g.cols.items()}
        col = None
        if len(costs) > 1:   # even all-cheapest over budget: every step moves, then units are skipped too
            col = cheapest_first_projection(g, costs, budget, unit_shares=unit_shares)
            col = np.full_like(g.cols["model"], int(np.argmin(costs))) if col is None and masked else col
        if col is not None:
            if MASK in cols:
                cols[MASK] = moved_rows_whole(cols[MASK], cols["model"], col)
            cols["model"] = col.astype(g.cols["model"].dtype)
        if masked and MASK in cols:
            moved = Genome(g.incr, cols, g.analytic_first)
            if within_budget(moved, budget, "cost", costs, unit_shares=unit_shares):
                return Genome(g.incr.copy(), cols, g.analytic_first)   # fits: nothing to price or skip
            cols[MASK] = skip_projection(moved, costs, budget, unit_shares,
                                         damage=None if damage is None else damage(moved))
            if cols[MASK] is None:
                return None
        elif not within_budget(Genome(g.incr, cols, g.analytic_first), budget, "cost", costs):
            return None
        return Genome(g.incr.copy(), cols, g.analytic_first)

    def swap(g: Genome, rng: np.random.Generator) -> Genome:
        m = g.cols["model"]
        a, b = np.flatnonzero(m == m.min()), np.flatnonzero(m != m.min())
        if a.size == 0 or b.size == 0:
            return g
        i, j = int(rng.choice(a)), int(rng.choice(b))
        cols = {k: v.copy() for k, v in g.cols.items()}
        cols["model"][i], cols["model"][j] = m[j], m[i]
        if MASK in cols:   # each model keeps its own mask row
            cols[MASK][[i, j]] = cols[MASK][[j, i]]
        return Genome(g.incr.copy(), cols, g.analytic_first)

    return Hooks(moves=(swap,), p_moves=float(p_swap), constraint=project)


# ----------------------------------------------------------------------------- scoring
class _Target:
    """What :class:`search.evaluator.Evaluator` needs of a model when only moments are known."""

    def __init__(self, data_shape, mean, cov):
        self.data_shape, self._m = tuple(data_shape), (np.asarray(mean, np.float64), np.asarray(cov, np.float64))

    def moments(self):
        return self._m


def stitch_evaluator(models: DenoiserSet, schedule, *, reference=None, moments=None,
                     objective: str = "frechet", num_samples: int = 1000, seed: int = 0,
                     batch_size: int = 2048, rtol: float = 1e-6, log=None) -> Evaluator:
    """An :class:`search.evaluator.Evaluator` that samples with ALL ``models`` (the plan's model
    column picks them) and scores against ``reference`` (a model with ``moments()``, e.g. the
    large mixture; its reference ODE solve is the teacher of ``teacher_rmse``) or against given
    ``moments=(mean, cov)`` (objective ``frechet`` only). ``rtol``: the teacher solve's tolerance."""
    if reference is None:
        if moments is None or objective != "frechet":
            raise ValueError("stitch_evaluator: give a reference model, or moments with objective='frechet'")
        reference = _Target(models[0].data_shape, *moments)
    return Evaluator(reference, schedule, objective=objective, num_samples=num_samples, seed=seed,
                     batch_size=batch_size, rtol=rtol, log=log, denoisers=models)


# ----------------------------------------------------------------------------- the front
def ranked_tstitch(base_plans: Sequence, budget: float, costs, small: int, large: int, score,
                   least_prefix: bool = False) -> list[tuple[int, int, object]]:
    """T-Stitch variants of ``base_plans`` (first k steps on ``small``, the rest on ``large``;
    Pan et al. 2024) that fit ``budget``, as ``(base index, k, plan)`` in ascending ``score``
    (stable: ties keep base order, then k). ``least_prefix``: only each base plan's least k that
    fits (T-Stitch's own choice, as much of the large model as the budget allows; one plan per base
    to score instead of up to ``steps + 1``)."""
    fit = []
    for i, b in enumerate(base_plans):
        for k in range(b.num_steps + 1):
            p = t_stitch(b, k / b.num_steps, small, large)
            if within_budget(p, budget, "cost", costs):
                fit.append((i, k, p))
                if least_prefix:
                    break
    if not fit:
        return []
    order = np.argsort(np.asarray(score([p for _, _, p in fit]), np.float64), kind="stable")
    return [fit[j] for j in order]


def tstitch_seeds(base_plans: Sequence, budget: float, costs, small: int, large: int, score,
                  count: int = 2) -> list:
    """The ``count`` best T-Stitch plans (first k steps on ``small``, any k, any of ``base_plans``)
    that fit ``budget``, by ``score`` (the SEARCH noise's score: final noise never picks seeds)."""
    return [p for _, _, p in ranked_tstitch(base_plans, budget, costs, small, large, score)[:count]]


def joint_front(models: DenoiserSet, space: SearchSpace, base_plans, budgets: Sequence[float],
                evaluator: Evaluator, *, costs=None, options: EvolutionOptions = EvolutionOptions(generations=6),
                seed: int = 0, workdir=None, log: Callable[[str], None] | None = print,
                seed_count: int = 2, hooks_for: Callable[[float], Hooks] | None = None,
                unit_shares=None) -> list[dict]:
    """One budgeted search per budget; returns rows {budget, cost, score, plan, genome}, one per budget
    (the best admissible plan found), ascending in budget.

    ``base_plans`` is one plan or several (e.g. the config's preset and the best baselines: the
    presets T-Stitch sweeps). ``costs`` default to the models' declared costs. Seeds of each budget:
    the ``seed_count`` best T-Stitch variants of any base plan that fit it (:func:`tstitch_seeds`)
    and the winners of cheaper budgets, so the search starts from the best T-Stitch plan it can
    see. With ``workdir`` each budget's result is stored in ``<workdir>/budget_<k>.json`` and
    reused on a rerun (resume at budget granularity).

    Per-step skip masks (a ``space`` with ``unit_counts``): ``unit_shares`` (per model, as
    ``solvers.cost`` takes them) price a plan's masks, and ``hooks_for(budget)`` gives the hooks
    that keep candidates within each budget (e.g. ``cli.options.skip_setup``'s, which move steps to
    the cheaper model first and then skip the units of least measured damage); default:
    :func:`budget_hooks` without masks.
    """
    costs = models.costs if costs is None else np.asarray(costs, np.float64)
    if costs.shape != (space.num_models,):
        raise ValueError(f"costs: {costs.shape[0]} costs for {space.num_models} models")
    if space.unit_counts and (hooks_for is None or unit_shares is None):
        raise ValueError("joint_front: a space with skip masks needs hooks_for and unit_shares")
    small, large = int(np.argmin(costs)), int(np.argmax(costs))
    model_only = set(dict(space.choices)) == {"model"}
    base_plans = [base_plans] if isinstance(base_plans, P.SolverPlan) else list(base_plans)
    if model_only:   # the model column is all that moves: seeds keep the space's own solver decisions
        base_plans = base_plans[:1]
    rows: list[dict] = []
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    plan_scores = lambda ps: evaluator.score(list(ps))
    score = lambda gs: evaluator.score([decode(g, space) for g in gs])
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
        evals_before = evaluator.evaluations
        initial = []
        for p in tstitch_seeds(base_plans, budget, costs, small, large, plan_scores, seed_count):
            g = encode(p, space)
            g = g if model_only else (repair(g, space, rng0) or g)
            initial.append(g)
        initial += [r["genome"] for r in rows[-2:]]
        strat = Evolution(space, options, budget_hooks(costs, budget) if hooks_for is None else hooks_for(budget))
        st = run_generations(strat, strat.init(jax.random.key(seed + bi), initial), score, options.generations)
        g, best = st.best
        plan = decode(g, space)
        if not within_budget(plan, budget, "cost", costs, unit_shares=unit_shares):
            raise RuntimeError(f"budgeted search returned a plan over budget {budget}")
        row = {"budget": budget, "cost": P.cost(plan, costs, unit_shares=unit_shares), "score": float(best), "genome": g,
               "plan": plan, "evaluations": evaluator.evaluations - evals_before}
        rows.append(row)
        if path is not None:
            write_text_atomic(path, json.dumps({"budget": budget, "cost": row["cost"], "score": row["score"],
                                                "evaluations": row["evaluations"], "genome": g.to_dict()}) + "\n")
        if log:
            log(f"  budget {budget:.4g}: best score {best:.6g} at cost {row['cost']:.4g} "
                f"({row['evaluations']} new evaluations)")
    return rows


def pareto_rows(rows: Sequence[dict], cost: str = "cost", quality: str = "score") -> list[dict]:
    """The rows on the Pareto front of (cost, quality), lower both, ascending in cost."""
    if not rows:
        return []
    idx = pareto_front([r[cost] for r in rows], [r[quality] for r in rows])
    return [rows[i] for i in idx]


def save_front(rows: Sequence[dict], directory, meta: dict | None = None) -> list[str]:
    """Each row's plan as ``<directory>/front_<k>.json`` (search/schedule_file.py format) with its
    cost and scores in the metadata; returns the paths."""
    paths = []
    for k, r in enumerate(rows):
        info = {key: r[key] for key in r if key not in ("plan", "genome") and
                isinstance(r[key], (int, float, str, type(None)))}
        paths.append(save_plan(os.path.join(os.fspath(directory), f"front_{k:02d}.json"), r["plan"],
                               {"stitch": info, **dict(meta or {})}))
    return paths
