"""Config sections -> library objects: the ONLY place where config strings become objects.

Library functions take typed arguments and small frozen dataclasses (a ``SearchSpace``, a strategy,
an ``Evaluator``, ``FinalOptions``, ``TrainOptions``); these builders read the ml_collections
sections of :mod:`stepwise.cli.defaults` and refuse fields that the chosen options do not use.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from stepwise.cli import defaults
from stepwise.search import protocol
from stepwise.search.evaluator import OBJECTIVES, Evaluator
from stepwise.search.run import FinalOptions
from stepwise.search.space import CATEGORICAL_TABLES, NODE_SPACES, SearchSpace
from stepwise.search.strategies import (STRATEGIES, EvolutionOptions, Hooks, Memetic, PredictorOptions,
                                       make_strategy)
from stepwise.solvers.plan import HISTORY, MAX_ORDER

PREDICTOR_FIELDS = {"screen": "screen", "explore": "explore", "predictor_warmup": "warmup",
                    "predictor_hidden": "hidden", "predictor_lr": "lr", "predictor_train_steps": "train_steps"}
LEARNED = ("gradient", "dp")
HYBRID = "hybrid"
GRADIENT_FIELDS = ("gradient_steps", "gradient_lr", "gradient_samples", "gradient_learn", "gradient_loss",
                   "gradient_relax", "gradient_corrections_lr", "gradient_lr_schedule")
OBJECTIVE_LOSS = {"teacher_rmse": "rmse", "teacher_frechet": "frechet", "frechet": "frechet",
                  "data_frechet": "data_frechet"}
GRADIENT_LOSSES = ("objective", "rmse", "frechet", "features", "data_frechet")
HYBRID_FIELDS = ("hybrid_base", "hybrid_top", "hybrid_steps")
DP_FIELDS = ("dp_grid",)
EVOLUTION_FIELDS = ("generations", "population", "top_k", "children", "timesteps_only_generations")


def _unused(s, strategy: str, fields, users: str) -> None:
    """An option that the chosen strategy does not use, set away from its default, is an error."""
    base = defaults.search_defaults()
    changed = [k for k in fields if _get(s, k) != base[k]]
    if changed:
        raise ValueError(f"search.{changed[0]}: only strategy {users} uses it (strategy is {strategy!r}); "
                         f"allowed: leave it at the default or choose that strategy")


def section(name: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The default config section ``name`` (search | stitch | train) with ``overrides`` applied;
    an unknown field is an error naming it (for scripts and tests that build options directly)."""
    base = defaults.get_config()[name]
    for k, v in dict(overrides or {}).items():
        if k not in base:
            raise ValueError(f"{name}.{k}: unknown field; allowed: {sorted(base)}")
        base[k] = v
    return base


def _get(s, key):
    return s[key] if isinstance(s, Mapping) else getattr(s, key)


def codes(column: str, names: str) -> tuple[int, ...]:
    """Codes of a comma-separated list of names of a categorical plan column (empty: every code)."""
    table = CATEGORICAL_TABLES[column]
    if not names:
        return tuple(sorted(table.values()))
    out = []
    for n in (x.strip() for x in str(names).split(",") if x.strip()):
        if n not in table:
            raise ValueError(f"search.{column}s: unknown {n!r}; allowed: {sorted(table)}")
        out.append(table[n])
    return tuple(dict.fromkeys(out))


SKIP_FIELDS = ("p_skip", "skip_schedule", "skip_order")
SKIP_ORDERS = ("sensitivity", "earliest")


def search_space(s, nfe: int, schedule, num_models: int = 1, unit_counts: tuple = ()) -> SearchSpace:
    """The search space of a ``search`` section at exactly ``nfe`` evaluations (skip masks over
    ``unit_counts`` units per model when ``search.skip`` is set)."""
    max_order, max_base = int(_get(s, "max_order")), int(_get(s, "max_base"))
    if not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"search.max_order: {max_order} is invalid; allowed: 1..{MAX_ORDER}")
    if not 0 <= max_base <= HISTORY - 1:
        raise ValueError(f"search.max_base: {max_base} is invalid; allowed: 0..{HISTORY - 1}")
    if _get(s, "node_space") not in NODE_SPACES:
        raise ValueError(f"search.node_space: {_get(s, 'node_space')!r} is invalid; allowed: {list(NODE_SPACES)}")
    choices = {
        "prediction": codes("prediction", _get(s, "predictions")),
        "variant": codes("variant", _get(s, "variants")),
        "expansion": codes("expansion", _get(s, "expansions")),
        "corrector": codes("corrector", _get(s, "correctors")),
        "order": tuple(range(1, max_order + 1)),
        "base": tuple(range(0, max_base + 1)),
        "model": tuple(range(num_models)),
    }
    for f in ("p_crossover", "p_node", "p_decision", "p_structure", "p_skip"):
        if not 0.0 <= float(_get(s, f)) <= 1.0:
            raise ValueError(f"search.{f}: {_get(s, f)!r} is invalid; allowed: a probability in [0, 1]")
    lo, hi = float(_get(s, "coef_min")), float(_get(s, "coef_max"))
    if not lo <= hi:
        raise ValueError(f"search.coef_min: {lo} is above search.coef_max {hi}; allowed: coef_min <= coef_max")
    return SearchSpace(nfe=int(nfe), schedule=schedule, node_space=_get(s, "node_space"),
                       choices=tuple(choices.items()), coef_range=(lo, hi), min_gap=float(_get(s, "min_gap")),
                       max_order=max_order, max_base=max_base,
                       allow_analytic_first=bool(_get(s, "analytic_first")), num_models=num_models,
                       p_node=float(_get(s, "p_node")), node_sigma=float(_get(s, "node_sigma")),
                       p_decision=float(_get(s, "p_decision")), p_structure=float(_get(s, "p_structure")),
                       coef_sigma=float(_get(s, "coef_sigma")), p_crossover=float(_get(s, "p_crossover")),
                       unit_counts=tuple(unit_counts) if bool(_get(s, "skip")) else (),
                       p_skip=float(_get(s, "p_skip")))


def evolution_options(s) -> EvolutionOptions:
    return EvolutionOptions(population=int(_get(s, "population")), top_k=int(_get(s, "top_k")),
                            children=int(_get(s, "children")),
                            timesteps_only=int(_get(s, "timesteps_only_generations")),
                            generations=int(_get(s, "generations")), skip_schedule=_get(s, "skip_schedule"))


def skip_order(s) -> str:
    """``search.skip_order``, checked."""
    order = _get(s, "skip_order")
    if order not in SKIP_ORDERS:
        raise ValueError(f"search.skip_order: {order!r} is invalid; allowed: {list(SKIP_ORDERS)}")
    return order


def check_skip_options(s, nfe: int) -> None:
    """``search.skip`` / ``search.budget``: a budget in (0, nfe]; without masks a budget below the NFE
    cannot be met; the mask options need ``skip``."""
    budget = float(_get(s, "budget"))
    if not (budget == 0.0 or 0.0 < budget <= nfe):
        raise ValueError(f"search.budget: {budget!r} is invalid; allowed: 0 (none) or a cost in (0, nfe={nfe}] "
                         "full-model evaluations")
    skip_order(s)
    if not bool(_get(s, "skip")):
        base = defaults.search_defaults()
        changed = [k for k in SKIP_FIELDS if _get(s, k) != base[k]]
        if changed:
            raise ValueError(f"search.{changed[0]}: only used with search.skip=True (skip masks are not searched); "
                             "allowed: leave it at the default or set search.skip=True")
        if 0.0 < budget < nfe:
            raise ValueError(f"search.budget: {budget} is below nfe={nfe}; only plans that skip network units can "
                             "meet it (set search.skip=True) or lower nfe")


def skip_setup(s, model, costs=None) -> tuple[tuple, Callable[..., Hooks], list | None]:
    """(unit counts per model, (space, budget=None) -> budget hooks, unit shares per model) of a ``search`` section
    for ``model`` (one denoiser, or a ``DenoiserSet`` whose plan column ``model`` picks the member,
    with relative ``costs`` per call, default: its declared costs over the largest): empty when
    masks are not searched. Unit shares are measured from XLA's cost analysis
    (``denoisers.skipping.unit_shares``); with ``skip_order="sensitivity"`` the hooks' projection
    skips the units of least measured damage first (``search.budget.unit_sensitivity`` of each
    member, measured on the search seed's noise when hooks are first made for a schedule). With
    several members the hooks also move steps to the cheapest one first (T-Stitch's projection) and
    swap models between steps (``search.stitching.budget_hooks``)."""
    if not bool(_get(s, "skip")):
        return (), lambda space: Hooks(), None
    from stepwise.denoisers import DenoiserSet, relative_costs
    from stepwise.denoisers.skipping import unit_shares
    from stepwise.search.budget import skip_damage, unit_sensitivity
    from stepwise.search.space import view
    from stepwise.search.stitching import budget_hooks

    members = list(model.models) if isinstance(model, DenoiserSet) else [model]
    units = tuple(len(getattr(m, "skip_units", ())) for m in members)
    if not any(units):
        raise ValueError(f"search.skip: the model ({type(model).__name__}) has no skippable units; allowed: a Flax "
                         "UNet or MLP checkpoint (model.kind=checkpoint)")
    costs = [float(c) for c in (relative_costs(model.costs) if costs is None and len(members) > 1
                                else [1.0] if costs is None else costs)]
    if len(costs) != len(members):
        raise ValueError(f"skip_setup: {len(costs)} costs for {len(members)} models")
    order = skip_order(s)
    shares = [unit_shares(m) if u else np.zeros(0) for m, u in zip(members, units)]
    budget = float(_get(s, "budget"))

    measured: dict = {}   # id(schedule) -> (schedule, sensitivities): measured once per schedule

    def hooks(space: SearchSpace, at: float | None = None) -> Hooks:
        """Hooks for ``space`` under the budget ``at`` (default: the section's ``budget``)."""
        limit = budget if at is None else float(at)
        if limit <= 0:
            return Hooks()
        damage = None
        if order == "sensitivity":
            seed, key = int(_get(s, "seed")), id(space.schedule)
            if key not in measured:
                measured[key] = (space.schedule, [unit_sensitivity(m, space.schedule, seed=seed) if u else None
                                                  for m, u in zip(members, units)])
            sens = measured[key][1]
            damage = lambda g: skip_damage(sens, space.schedule, view(g, space))  # noqa: E731
        return budget_hooks(costs, limit, p_swap=0.5 if len(members) > 1 else 0.0, unit_shares=shares,
                            damage=damage)

    return units, hooks, shares


def predictor_options(s) -> PredictorOptions | None:
    """Predictor options for strategy 'predictor'; None for 'evolution', where a predictor field set
    away from its default is an error (it would be ignored)."""
    strategy = _get(s, "strategy")
    if strategy not in STRATEGIES + (HYBRID,) + LEARNED:
        raise ValueError(f"search.strategy: unknown {strategy!r}; allowed: {list(STRATEGIES + (HYBRID,) + LEARNED)}")
    if base_strategy(s) != "predictor":
        _unused(s, strategy, PREDICTOR_FIELDS, "'predictor' (or 'hybrid' with hybrid_base='predictor')")
        return None
    kw = {PREDICTOR_FIELDS[k]: _get(s, k) for k in PREDICTOR_FIELDS}
    return PredictorOptions(**{k: (float(v) if k == "lr" else int(v)) for k, v in kw.items()})


def base_strategy(s) -> str:
    """The ask/tell strategy of a section: ``strategy`` itself, or ``hybrid_base`` for 'hybrid'."""
    if _get(s, "strategy") != HYBRID:
        return _get(s, "strategy")
    if _get(s, "hybrid_base") not in STRATEGIES:
        raise ValueError(f"search.hybrid_base: {_get(s, 'hybrid_base')!r} is invalid; allowed: {list(STRATEGIES)}")
    return _get(s, "hybrid_base")


def search_strategy(s, space: SearchSpace, hooks: Hooks = Hooks(), refine=None):
    """The strategy of a ``search`` section; for 'hybrid' the base strategy wrapped in
    :class:`Memetic` with ``refine`` (genome -> genome; the identity when only checking options)."""
    strategy = _get(s, "strategy")
    if strategy != HYBRID:
        _unused(s, strategy, GRADIENT_FIELDS, "'gradient' or 'hybrid'")
        _unused(s, strategy, HYBRID_FIELDS, "'hybrid'")
    _unused(s, strategy, DP_FIELDS, "'dp'")
    base = make_strategy(base_strategy(s), space, evolution_options(s), predictor_options(s), hooks,
                         seed=int(_get(s, "seed")))
    if strategy != HYBRID:
        return base
    steps = _get(s, "hybrid_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"search.hybrid_steps: {steps!r} is invalid; allowed: an integer >= 1")
    gradient_options(s, steps=steps)   # checks the refinement's options
    return Memetic(base, refine or (lambda g: g), top=int(_get(s, "hybrid_top")))


def gradient_options(s, steps: int | None = None) -> "GradientOptions":
    """``GradientOptions`` of a section (``steps`` overrides ``gradient_steps``, e.g. the memetic
    refinement's ``hybrid_steps``); as many validation noises as training noises."""
    from stepwise.search.learned import GradientOptions

    n = int(_get(s, "gradient_samples"))
    steps = int(_get(s, "gradient_steps") if steps is None else steps)
    return GradientOptions(steps=steps, lr=float(_get(s, "gradient_lr")), train_samples=n, val_samples=n,
                           val_every=min(10, max(steps, 1)),
                           node_space=_get(s, "node_space"), seed=int(_get(s, "seed")),
                           learn=_get(s, "gradient_learn"), loss=gradient_loss(s),
                           relax=float(_get(s, "gradient_relax")),
                           corrections_lr=float(_get(s, "gradient_corrections_lr")),
                           lr_schedule=str(_get(s, "gradient_lr_schedule")))


def gradient_loss(s) -> str:
    """``gradient_loss``, with 'objective' resolved to the search objective's own distance
    (teacher_rmse -> rmse; teacher_frechet and frechet -> frechet to the teacher's Gaussian fit;
    data_frechet -> data_frechet, the feature-space Fréchet distance to the training images)."""
    loss = _get(s, "gradient_loss")
    if loss not in GRADIENT_LOSSES:
        raise ValueError(f"search.gradient_loss: {loss!r} is invalid; allowed: {list(GRADIENT_LOSSES)}")
    if loss == "features" and not _get(s, "feature_net"):
        raise ValueError("search.gradient_loss: 'features' needs search.feature_net (a `stepwise train-features` "
                         "directory); allowed: set it, or gradient_loss 'objective' | 'rmse' | 'frechet'")
    if loss == "data_frechet" and _get(s, "objective") != "data_frechet":
        raise ValueError("search.gradient_loss: 'data_frechet' descends on the training images of objective "
                         "'data_frechet'; allowed: search.objective='data_frechet', or gradient_loss 'objective' | "
                         "'rmse' | 'frechet' | 'features'")
    return OBJECTIVE_LOSS.get(_get(s, "objective"), "rmse") if loss == "objective" else loss


def search_evaluator(s, model, schedule, log: Callable[[str], None] | None = print, denoisers=None,
                     data=None) -> Evaluator:
    """The section's ``Evaluator``; ``data`` (the training images' ``search.protocol.FeatureMoments``)
    is the target of objective ``data_frechet`` and is ignored by every other objective."""
    objective = _get(s, "objective")
    if objective not in OBJECTIVES:
        raise ValueError(f"search.objective: unknown {objective!r}; allowed: {list(OBJECTIVES)}")
    return Evaluator(model, schedule, objective=objective, num_samples=int(_get(s, "search_samples")),
                     seed=int(_get(s, "seed")), batch_size=int(_get(s, "batch_size")), use_vmap=bool(_get(s, "vmap")),
                     chunk=int(_get(s, "vmap_chunk")), log=log, denoisers=denoisers,
                     data=data if objective == "data_frechet" else None)


def final_options(s) -> FinalOptions:
    draws = _get(s, "final_extrapolation_draws")
    if not isinstance(draws, (int, np.integer)) or isinstance(draws, bool) or draws < 0:
        raise ValueError(f"search.final_extrapolation_draws: {draws!r} is invalid; allowed: 0 (off) or a positive "
                         "integer (random halvings of the final noise per bootstrap replicate)")
    return FinalOptions(samples=int(_get(s, "final_samples")), top_baselines=int(_get(s, "final_top_baselines")),
                        seed_offset=int(_get(s, "final_seed_offset")), reference=bool(_get(s, "final_reference")),
                        tuned_baselines=int(_get(s, "final_tuned_baselines")),
                        extrapolation=protocol.Extrapolation(draws=int(draws)) if draws else None)


def check_search_section(s, nfe: int, schedule) -> None:
    """Every check of a ``search`` section that needs no model (run before a run directory is made)."""
    strategy_name = _get(s, "strategy")
    predictor_options(s)
    final_options(s)
    if strategy_name in LEARNED:
        _unused(s, strategy_name, EVOLUTION_FIELDS, "'evolution', 'predictor' or 'hybrid'")
        _unused(s, strategy_name, HYBRID_FIELDS, "'hybrid'")
        if strategy_name == "gradient":
            gradient_options(s)          # loss, relaxation, steps, ... named before any work
        _unused(s, strategy_name, DP_FIELDS if strategy_name == "gradient" else GRADIENT_FIELDS,
                "'dp'" if strategy_name == "gradient" else "'gradient'")
    else:
        search_strategy(s, search_space(s, nfe, schedule))
    check_skip_options(s, nfe)
    if bool(_get(s, "skip")) and strategy_name in LEARNED + (HYBRID,):
        raise ValueError(f"search.skip: strategy {strategy_name!r} learns continuous columns only; allowed: "
                         "strategy 'evolution' or 'predictor' with skip masks")
    if _get(s, "objective") not in OBJECTIVES:
        raise ValueError(f"search.objective: unknown {_get(s, 'objective')!r}; allowed: {list(OBJECTIVES)}")
    for key, lo in (("search_samples", 2), ("batch_size", 1), ("vmap_chunk", 1)):
        if not int(_get(s, key)) >= lo:
            raise ValueError(f"search.{key}: {_get(s, key)!r} is invalid; allowed: an integer >= {lo}")


def run_search_section(s, model, schedule, nfe: int, workdir, held_out=None, data=None, **kw) -> dict:
    """``search.run.run_search`` (or ``run_learned`` for strategy gradient | dp) with every object
    built from the ``search`` section ``s``; options are checked before the teacher solve starts.
    ``held_out`` (:class:`search.protocol.FeatureMoments`) joins the final comparison; ``data`` (the
    same of the training images) is the target of objective ``data_frechet``."""
    import dataclasses

    from stepwise.search.run import check_measurable, run_learned, run_search

    strategy_name = _get(s, "strategy")
    check_search_section(s, nfe, schedule)
    final = dataclasses.replace(final_options(s), held_out=held_out)
    features = held_out.extractor if held_out is not None else None    # the map of gradient_loss=features
    if strategy_name in LEARNED:
        gradient = gradient_options(s)
        check_measurable(model, final.reference)
        evaluator = search_evaluator(s, model, schedule, log=kw.get("log", print), data=data)
        return run_learned(model, schedule, workdir, nfe=nfe, method=strategy_name, evaluator=evaluator,
                           gradient=gradient, dp_grid=int(_get(s, "dp_grid")), seed=int(_get(s, "seed")),
                           final=final, features=features,
                           **{k: v for k, v in kw.items() if k in ("model_info", "log")})
    check_measurable(model, final.reference or kw.get("final_data") is not None)
    units, make_hooks, shares = skip_setup(s, model)
    space = search_space(s, nfe, schedule, unit_counts=units)
    hooks = make_hooks(space)
    refine = finish = None
    if strategy_name == HYBRID:
        refine, finish = hybrid_refinements(s, model, schedule, space, workdir, log=kw.get("log", print),
                                            features=features, images=data)
    strategy = search_strategy(s, space, hooks, refine=refine)
    evaluator = search_evaluator(s, model, schedule, log=kw.get("log", print), data=data)
    budget = float(_get(s, "budget")) or None
    return run_search(model, schedule, workdir, strategy=strategy, evaluator=evaluator,
                      seed=int(_get(s, "seed")), final=final, budget=budget, unit_shares=shares,
                      finish=finish, **kw)


def hybrid_refinements(s, model, schedule, space: SearchSpace, workdir, log=print, features=None, images=None):
    """(per-generation refine: genome -> genome with ``hybrid_steps`` gradient steps on its nodes,
    final refine: plan -> (plan, info) with ``gradient_steps`` steps, checkpointed under
    ``workdir/gradient`` so a killed run resumes); both share one teacher solve. ``features``: the
    feature map of ``gradient_loss=features``; ``images``: the training images' feature moments of
    ``gradient_loss=data_frechet``."""
    import os

    from stepwise.search import learned

    final_opts = gradient_options(s)
    teacher = learned.teacher_data(model, schedule, final_opts)
    refine = learned.node_refiner(model, schedule, space, gradient_options(s, steps=int(_get(s, "hybrid_steps"))),
                                  teacher=teacher, features=features, images=images)
    ckdir = os.path.join(os.path.abspath(os.fspath(workdir)), "gradient")

    def finish(plan):
        return learned.learn_nodes(model, schedule, plan, final_opts, log=log, teacher=teacher, checkpoint_dir=ckdir,
                                   features=features, images=images)

    return refine, finish


def train_options(t) -> "TrainOptions":
    """``TrainOptions`` from a ``train`` section (every field of it; ``network_overrides`` as a dict)."""
    import dataclasses

    from stepwise.training.options import TrainOptions

    d = t.to_dict() if hasattr(t, "to_dict") else dict(t)
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"train.{unknown[0]}: unknown field; allowed: {sorted(names)}")
    d["network_overrides"] = dict(d.get("network_overrides") or {})
    return TrainOptions(**d)
