"""One search job end to end: baselines -> search (resumable) -> final evaluation -> files.

``run_search(model, schedule, workdir, strategy=..., evaluator=..., seed=..., final=...)`` takes
objects (the CLI builds them from the config). In ``workdir`` it writes ``checkpoints/`` (orbax,
every generation), ``schedule.json`` (the searched plan), ``search.json`` (progress, final table,
costs), ``report.md`` + figures and ``report.html``. Running it again on the same workdir resumes
from the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from stepwise import samplers, solvers
from stepwise.search import learned, protocol
from stepwise.evaluation import html_report, markdown_report, plot_distance_vs_nfe, plot_lines, sample_frechet
from stepwise.io import write_json_atomic, write_text_atomic
from stepwise.search.evaluator import Evaluator, baseline_plans, has_moments, reference_endpoints, run_plan
from stepwise.search.budget import within_budget
from stepwise.search.schedule_file import save_plan
from stepwise.search.space import describe_plan, decode, encode, plan_hash, repair
from stepwise.search.state import restore_state, save_state
from stepwise.search.strategies import Evolution, SearchState, numpy_rng, run_generations

SCHEDULE_FILE = "schedule.json"


@dataclasses.dataclass(frozen=True)
class FinalOptions:
    """The final comparison on fresh noise: ``samples`` noises from seed ``search seed +
    seed_offset``, every baseline (``top_baselines=0``) or the k best by search score, and the
    reference solve of that noise when ``reference`` (paired distances, excess over the exact ODE).
    The ``tuned_baselines`` best baselines by search score are also run with GITS nodes (dynamic
    programming over a teacher trajectory of the search noise, :func:`search.learned.gits_baselines`):
    a tuned-node baseline in every comparison (0: none). ``held_out``
    (:class:`search.protocol.FeatureMoments`) adds the feature-space distance to held-out images that
    neither training nor the search saw (``heldout_fd``), compared with intervals like the rest."""

    samples: int = 5000
    top_baselines: int = 0
    seed_offset: int = 10007
    reference: bool = True
    tuned_baselines: int = 8
    held_out: Any = None    # a search.protocol.FeatureMoments: also compare on held-out data (trained networks)
    extrapolation: Any = protocol.Extrapolation()   # bias-extrapolated distances beside the plug-in ones; None: off

    def __post_init__(self):
        if not isinstance(self.samples, (int, np.integer)) or self.samples < 2:
            raise ValueError(f"search.final_samples: {self.samples!r} is invalid; allowed: an integer >= 2")
        if not isinstance(self.top_baselines, (int, np.integer)) or self.top_baselines < 0:
            raise ValueError(f"search.final_top_baselines: {self.top_baselines!r} is invalid; "
                             "allowed: 0 (every baseline) or a positive integer")
        if not isinstance(self.seed_offset, (int, np.integer)) or self.seed_offset == 0:
            raise ValueError(f"search.final_seed_offset: {self.seed_offset!r} is invalid; allowed: a non-zero "
                             "integer (the final noise must differ from the search noise)")
        if not isinstance(self.tuned_baselines, (int, np.integer)) or self.tuned_baselines < 0:
            raise ValueError(f"search.final_tuned_baselines: {self.tuned_baselines!r} is invalid; allowed: 0 (none) "
                             "or a positive integer")


def is_writer() -> bool:
    """Only process 0 of a multi-process search writes result files (every process holds the same
    state: candidates are split across processes and their scores all-gathered, see ``Evaluator``;
    orbax checkpoints are saved collectively)."""
    return jax.process_index() == 0


def final_noise(model, schedule, num_samples: int, seed: int) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(seed), (num_samples,) + tuple(model.data_shape))
                      * schedule.prior_std(), np.float32)


@dataclasses.dataclass
class FinalMemo:
    """What :func:`final_evaluation` computed per distinct plan (keyed by :func:`plan_hash`): the
    samples of its focus plans and every compared plan's bootstrap replicates (the costly parts:
    sampling, and in high dimension the extrapolated bootstrap). One memo passed to several calls on
    the same model, noise and bootstrap settings (e.g. one comparison per target budget, or two
    searches that found the same plan) makes each distinct focus plan sampled and bootstrapped once;
    a call on anything else is refused."""

    context: tuple | None = None
    samples: dict = dataclasses.field(default_factory=dict)
    replicates: dict = dataclasses.field(default_factory=dict)

    def bind(self, context: tuple) -> None:
        if self.context is None:
            self.context = context
        elif self.context != context:
            raise ValueError("final_evaluation: memo was filled by a call with another model, noise, reference "
                             "or bootstrap settings; pass a new FinalMemo() for this one")


def final_evaluation(model, schedule, plans: dict, *, num_samples: int, seed: int, batch_size: int,
                     reference: bool = True, log=None,
                     final_data: tuple | None = None, focus: tuple[str, ...] = ("searched",),
                     resamples: int = 200, bootstrap_seed: int = 0,
                     held_out: protocol.FeatureMoments | None = None,
                     judges: dict[str, protocol.FeatureMoments] | None = None,
                     extrapolation: protocol.Extrapolation | None = protocol.Extrapolation(),
                     memo: FinalMemo | None = None) -> tuple[list[dict], dict]:
    """Every plan on FRESH noise (``seed``), then each plan named in ``focus`` against the best of
    the OTHER plans (the baselines) per metric, with paired-bootstrap intervals
    (:mod:`search.protocol`): ``info["comparisons"][name][metric]``.

    Metrics: ``frechet_to_reference`` (paired: Fréchet distance to the reference solve of the same
    noise; the headline whenever a reference exists), ``excess`` (exact-moment distance minus the
    reference solve's, exact models), ``frechet`` (to the exact moments) and ``rmse_to_reference``
    (paired, sample by sample: the check on a plan that was trained on a Fréchet loss, which a plan
    can lower by matching moments alone). The best baseline is chosen per metric on this noise and named.
    ``extrapolation``: the paired metric is also compared with bias-extrapolated distances
    (:func:`search.protocol.debiased`, ``comparisons[...]["ratio_inf"]``): the plug-in distance's
    O(1/n) bias pulls paired ratios toward 1, and the extrapolated ratio was measured unbiased with
    0.8-1.0 coverage at n = 8-16 d (benchmarks/interval_coverage.py). Distances to FIXED moments
    (exact, held-out) are not extrapolated: there the extrapolated ratio overclaimed in 28% of
    trials of a constructed case where the plug-in ratio never did.
    ``final_data`` = (x_T, reference endpoints or None) reuses noise and its solve (benchmarks over
    many NFEs). A model without exact moments (a trained network) is measured against the
    reference solve only, so it needs ``reference``. Equal focus plans (by :func:`plan_hash`) are
    sampled and bootstrapped once; ``memo`` (:class:`FinalMemo`) carries that across calls on the
    same model and ``final_data``.
    With ``held_out`` and a reference, ``info["reference_heldout"]`` compares the reference solve
    ITSELF with the best baseline by held-out FD (same bootstrap rows; ratio best baseline /
    reference): the image quality of the ODE solution that the paired metrics and the teacher-matching
    losses (LD3, GITS, :mod:`search.learned`) aim at. When the reference is worse than a few-step
    baseline, a plan can gain on the paired metrics and lose on held-out data at once.
    ``judges`` = {name: held-out moments in ANOTHER feature space}: each adds the metric
    ``heldout_fd[name]`` (its own best baseline, comparison and ``info["reference_by_judge"][name]``),
    so a plan searched against data in one feature net (``data_frechet``) is also judged in nets it
    never saw; when two judges disagree, the smaller gain is the claim.
    """
    exact = has_moments(model)
    check_measurable(model, reference or final_data is not None)
    targets = held_out_targets(held_out, judges)
    judge_names = {judge_metric(name): name for name in judges or {}}
    metrics = METRICS + tuple(k for k in targets if k not in METRICS)
    mean, cov = model.moments() if exact else (None, None)
    ref = None
    if final_data is not None:
        x_T, ref = final_data
        num_samples = x_T.shape[0]
    else:
        x_T = final_noise(model, schedule, num_samples, seed)
    info = {"num_samples": num_samples, "seed": seed}
    if ref is None and reference:
        t0 = time.perf_counter()
        ref = reference_endpoints(model, schedule, x_T, batch_size)
        info["reference_wall_s"] = round(time.perf_counter() - t0, 2)
    memo = FinalMemo() if memo is None else memo
    memo.bind((id(model), id(schedule), hashlib.sha1(np.ascontiguousarray(x_T).tobytes()).hexdigest(),
               None if ref is None else hashlib.sha1(np.ascontiguousarray(ref).tobytes()).hexdigest(),
               resamples, bootstrap_seed, tuple((k, id(t)) for k, t in targets.items()), extrapolation))
    hashes = {name: plan_hash(plan) for name, plan in plans.items()}
    if ref is not None and exact:
        info["reference_frechet"] = sample_frechet(ref, mean, cov)
    if ref is not None:  # paired: the reference solve of the same noise (sample noise cancels)
        r64 = ref.reshape(ref.shape[0], -1).astype(np.float64)
        ref_stats = (r64.mean(0), np.cov(r64, rowvar=False))
    rows, kept, best = [], {}, {}
    for name, plan in plans.items():
        x = memo.samples.get(hashes[name])
        if x is None:
            x = run_plan(model, schedule, plan, x_T, batch_size)
            if name in focus:   # only the focus plans' samples are kept: a call may run hundreds of baselines
                memo.samples[hashes[name]] = x
        row = {"solver": name, "nfe": plan.nfe(), "steps": plan.num_steps}
        if exact:
            row["frechet"] = sample_frechet(x, mean, cov)
        if ref is not None:
            if exact:
                row["excess"] = row["frechet"] - info["reference_frechet"]
            row["frechet_to_reference"] = sample_frechet(x, *ref_stats)
            row["rmse_to_reference"] = protocol.paired_rmse(x, ref)[0]
        for k, target in targets.items():
            row[k] = target.distance(x)
        rows.append(row)
        if name in focus:  # keep the samples of the focus plans and of the best baseline per metric
            kept[name] = x
        else:
            for k in metrics:
                if k in row and (k not in best or row[k] < best[k][1]):
                    best[k] = (name, row[k], x)
        if log:
            log(f"  final {name:40s} " + " ".join(f"{k}={row[k]:.6f}" for k in FINAL_KEYS + metrics[len(METRICS):]
                                                  if k in row))
    if any(f in plans for f in focus) and best:
        idx = protocol.bootstrap_indices(num_samples, resamples, bootstrap_seed)
        paired = protocol.paired_reference(ref, idx) if ref is not None else None

        def reps(metric, x):
            if metric == "frechet_to_reference":
                return protocol.paired_frechet(x, paired)
            if metric == "excess":
                return protocol.excess_frechet(x, ref, mean, cov, idx)
            if metric == "rmse_to_reference":
                return protocol.paired_rmse(x, ref, idx)
            if metric in targets:
                return targets[metric].frechet(x, idx)
            return protocol.exact_frechet(x, mean, cov, idx)

        def debiased(metric, x):   # the paired metric only: measured to extrapolate well (see above)
            if extrapolation is None or metric != "frechet_to_reference":
                return None
            return protocol.debiased(protocol.paired_distance(x, ref), idx, extrapolation)

        def replicates(name, metric, x):   # (plug-in, extrapolated) replicates of plan ``name``, once per plan
            key = (hashes[name], metric)
            if key not in memo.replicates:
                memo.replicates[key] = (reps(metric, x), debiased(metric, x))
            return memo.replicates[key]

        info["comparisons"] = {}
        for f in (f for f in focus if f in plans):
            comps = {}
            for k, (name, _, xb) in best.items():
                r, d = replicates(f, k, kept[f])
                rb, db = replicates(name, k, xb)
                comps[k] = protocol.compare(k, r, name, rb, num_samples, debiased=None if d is None else (d, db))
            info["comparisons"][f] = {k: c.to_dict() for k, c in comps.items()}
            if log:
                for c in comps.values():
                    log(f"  {f}: {c}")
        for k, target in targets.items() if ref is not None else ():
            if k not in best:
                continue
            name, _, xb = best[k]
            c = protocol.compare(k, target.frechet(ref, idx), name, replicates(name, k, xb)[0], num_samples)
            if k == "heldout_fd":
                info["reference_heldout"] = c.to_dict()
            else:
                info.setdefault("reference_by_judge", {})[judge_names[k]] = c.to_dict()
            if log:
                log(f"  reference solve (what the paired metrics aim at): {c}")
        info["headline"] = headline_metric(rows)
        info["bootstrap"] = {"resamples": resamples, "seed": bootstrap_seed, "confidence": protocol.CONFIDENCE}
        if extrapolation is not None:
            info["extrapolation"] = dataclasses.asdict(extrapolation)
    return rows, info


def held_out_targets(held_out, judges) -> dict[str, protocol.FeatureMoments]:
    """{metric: held-out moments}: ``heldout_fd`` for ``held_out``, ``heldout_fd[name]`` for each judge."""
    targets = {} if held_out is None else {"heldout_fd": held_out}
    for name, target in (judges or {}).items():
        if not name or any(c in name for c in "[]"):
            raise ValueError(f"final_evaluation: judges: name {name!r} must be non-empty without brackets")
        targets[judge_metric(name)] = target
    return targets


def judge_metric(name: str) -> str:
    """The metric key of the held-out FD in judge ``name``'s feature space."""
    return f"heldout_fd[{name}]"


def check_measurable(model, reference: bool) -> None:
    """A model without exact moments (a trained network) can only be measured against a reference solve."""
    if not reference and not has_moments(model):
        raise ValueError("final_reference: a model without exact moments (a trained network) is measured "
                         "against the reference solve; set search.final_reference=True")


FINAL_KEYS = ("frechet", "excess", "frechet_to_reference", "rmse_to_reference", "heldout_fd")
METRICS = ("frechet_to_reference", "excess", "frechet", "heldout_fd", "rmse_to_reference")   # with intervals, headline first


def headline_metric(rows: list[dict]) -> str:
    """The headline of a comparison: the paired Fréchet distance to the reference solve of the same
    noise when a reference exists (sample noise cancels), else the distance to the exact moments."""
    return next(k for k in METRICS if k in rows[0])


def initial_genomes(nfe: int, space, seed: int) -> tuple[list, list]:
    """(baselines [(name, plan)], their repaired genomes): every preset at exactly ``nfe``."""
    baselines = baseline_plans(nfe, space.schedule)
    if not baselines:
        raise ValueError(f"nfe: no preset reaches exactly nfe={nfe}")
    rng0 = numpy_rng(jax.random.key(seed + 1))
    return baselines, [g for g in (repair(encode(p, space), space, rng0) for _, p in baselines) if g is not None]


def search_loop(strategy: Evolution, evaluator: Evaluator, initial, seed: int, ckdir: str,
                log: Callable[[str], None] = print) -> tuple[SearchState, dict]:
    """Resume (or start) the search from ``ckdir`` and run its generations, checkpointing each one."""
    t_start = time.perf_counter()
    st = strategy.init(jax.random.key(seed), initial)
    prior_wall, resumed_from = 0.0, None
    restored = restore_state(ckdir, st)
    if restored is not None:
        st, extra = restored
        prior_wall = float(extra.get("wall_s", 0.0))
        resumed_from = st.generation
        log(f"resumed from generation {st.generation} ({len(st.archive)} evaluations) in {ckdir}")
    evaluator.cache.update({h: sc for h, (_, sc) in st.archive.items()})
    space = strategy.space

    def on_generation(st: SearchState, scores) -> SearchState:
        wall = prior_wall + time.perf_counter() - t_start
        best = st.best[1]
        st = st.replace(history=st.history + ({"generation": st.generation - 1, "evaluations": len(st.archive),
                                               "best": best, "generation_best": float(min(scores)),
                                               "wall_s": round(wall, 3)},))
        save_state(ckdir, st, {"wall_s": wall})
        rc = st.rank_correlations[-1]["spearman"] if st.rank_correlations else float("nan")
        log(f"generation {st.generation - 1:3d}  evaluations {len(st.archive):5d}  best {best:.6g}"
            + (f"  predictor spearman {rc:.3f}" if st.rank_correlations else ""))
        return st

    seconds: dict = {}
    s0, c0 = evaluator.sample_time, evaluator.score_time
    with samplers.CompileClock() as clock:
        st = run_generations(strategy, st, lambda gs: evaluator.score([decode(g, space) for g in gs]),
                             strategy.options.generations, on_generation, seconds=seconds)
    return st, {"search_wall_s": prior_wall + time.perf_counter() - t_start, "resumed_from": resumed_from,
                "time_split": time_split(seconds, evaluator.sample_time - s0, evaluator.score_time - c0,
                                         getattr(strategy, "refine_seconds", 0.0)),
                "compile_s": round(clock.seconds, 2)}


def time_split(seconds: dict, sampling: float, scoring: float, refine: float) -> dict:
    """Where a search's generations spent their wall time (this process; seconds): sampling and
    scoring candidates, the memetic refinement, proposing and screening (ask without refinement),
    selection and predictor training (tell), checkpoints and logging, decoding genomes and the rest."""
    split = {"sampling": sampling, "scoring": scoring, "refine": refine,
             "propose_and_screen": seconds["ask"] - refine, "select_and_train_predictor": seconds["tell"],
             "checkpoint_and_log": seconds["on_generation"],
             "decode_and_other": seconds["score"] - sampling - scoring}
    return {k: round(max(v, 0.0), 3) for k, v in split.items()}


def final_comparison(model, schedule, plan, baselines, evaluator: Evaluator, final: FinalOptions, seed: int,
                     log=print, final_data=None) -> tuple[dict, list[dict], dict]:
    """The searched (or learned) ``plan`` against the baselines on fresh noise by the protocol:
    (summary fields, the table, the final-evaluation info)."""
    base_scores = dict(zip([n for n, _ in baselines], evaluator.score([p for _, p in baselines])))
    if final.tuned_baselines:
        tuned = learned.gits_baselines(model, schedule, baselines, [base_scores[n] for n, _ in baselines],
                                       final.tuned_baselines, seed=evaluator.seed,
                                       samples=min(256, evaluator.num_samples))
        tuned = [(n, p) for n, p in tuned if n not in base_scores]
        base_scores.update(zip([n for n, _ in tuned], evaluator.score([p for _, p in tuned])))
        baselines = list(baselines) + tuned
        log(f"tuned-node baselines (GITS nodes of the {final.tuned_baselines} best): {len(tuned)}")
    top = final.top_baselines
    chosen = sorted(baselines, key=lambda kv: base_scores[kv[0]])[:top] if top > 0 else baselines
    plans = {"searched": plan, **dict(chosen)}
    rows, info = final_evaluation(model, schedule, plans, num_samples=final.samples,
                                  seed=seed + final.seed_offset, batch_size=evaluator.batch_size,
                                  reference=final.reference, log=log, final_data=final_data,
                                  held_out=final.held_out, extrapolation=final.extrapolation)
    key = info["headline"]
    comps = info["comparisons"]["searched"]
    best_base = next(r for r in rows if r["solver"] == comps[key]["baseline_name"])
    for r, s in zip(rows, evaluator.score(list(plans.values()))):
        r["search_score"] = s
    core = {"objective": evaluator.objective, "final_key": key, "headline": key, "comparisons": comps,
            "ratio": comps[key]["ratio"], "ratio_text": comps[key]["ratio_text"], "final": info,
            "final_table": rows, "baselines_total": len(baselines), "baselines_final": len(chosen),
            "best_baseline": best_base["solver"], "best_baseline_" + key: best_base[key],
            "searched_" + key: rows[0][key]}
    return core, rows, info


def plan_meta(schedule, model, model_info, evaluator, search_value, ours, best_base, final_info, seed,
              cost: dict, node_space: str) -> dict:
    """The metadata a schedule file records: scores, sample counts, seeds, search cost."""
    return {
        "schedule": schedule.describe(), "model": model_info or {"kind": type(model).__name__},
        "score": {"objective": evaluator.objective, "search_value": search_value,
                  "final_frechet": ours.get("frechet"), "final_excess": ours.get("excess"),
                  "final_frechet_to_reference": ours.get("frechet_to_reference"),
                  "final_reference_frechet": final_info.get("reference_frechet")},
        "samples": {"search": evaluator.num_samples, "final": final_info["num_samples"]},
        "seeds": {"search": seed, "search_noise": evaluator.seed, "final": final_info["seed"]},
        "cost": cost,
        "best_baseline": {"solver": best_base["solver"], "final_frechet": best_base.get("frechet"),
                          "final_excess": best_base.get("excess"),
                          "final_frechet_to_reference": best_base.get("frechet_to_reference")},
        "node_space": node_space,
    }


def learned_plan(model, schedule, nfe: int, method: str, evaluator: Evaluator, *, gradient=None, dp_grid: int = 64,
                 seed: int = 0, checkpoint_dir: str | None = None, log: Callable[[str], None] = print,
                 features=None):
    """(learned plan, the baseline it started from, info, seconds): the best baseline by search score
    with learned nodes: ``method="gradient"`` descends on them through the sampler
    (:func:`search.learned.learn_nodes`, resumable from ``checkpoint_dir``), ``"dp"`` picks them by
    dynamic programming over a teacher trajectory (:func:`search.learned.dp_nodes`, DDIM step
    costs); every other column of that baseline is kept. ``features``: the feature map of a
    ``loss="features"`` gradient run (an ``evaluation.FeatureExtractor``); a ``loss="data_frechet"``
    run descends on the evaluator's own training-image target (objective ``data_frechet``)."""
    if method not in ("gradient", "dp"):
        raise ValueError(f"search.strategy: {method!r} is not a learned-plan method; allowed: ['gradient', 'dp']")
    baselines = baseline_plans(nfe, schedule)
    if not baselines:
        raise ValueError(f"nfe: no preset reaches exactly nfe={nfe}")
    scores = evaluator.score([p for _, p in baselines])
    start_name, start = baselines[int(np.argmin(scores))]
    with samplers.CompileClock() as clock:
        if method == "gradient":
            opts = gradient or learned.GradientOptions(seed=seed)
            plan, info = learned.learn_nodes(model, schedule, start, opts, log=log, checkpoint_dir=checkpoint_dir,
                                             features=features, images=evaluator.data)
        else:
            ts = learned.dp_nodes(model, schedule, solvers.ddim, start.num_steps, grid=dp_grid, seed=seed)
            plan, info = start.replace(ts=ts), {"grid": dp_grid}
    info["compile_s"] = round(clock.seconds, 2)   # this process's tracing and compiling inside the learning
    plan.validate(schedule)
    info["start_search_score"] = float(min(scores))
    return plan, start_name, info, clock.wall


def run_learned(model, schedule, workdir, *, nfe: int, method: str, evaluator: Evaluator,
                gradient=None, dp_grid: int = 64, seed: int = 0, final: FinalOptions = FinalOptions(),
                model_info: dict | None = None, log: Callable[[str], None] = print, features=None) -> dict:
    """:func:`learned_plan` (a gradient run resumes from ``workdir/gradient``), then the final
    comparison and files as :func:`run_search`."""
    workdir = Path(os.path.abspath(os.fspath(workdir)))
    workdir.mkdir(parents=True, exist_ok=True)
    check_measurable(model, final.reference)
    plan, start_name, info, learn_s = learned_plan(model, schedule, nfe, method, evaluator, gradient=gradient,
                                                   dp_grid=dp_grid, seed=seed,
                                                   checkpoint_dir=str(workdir / "gradient"), log=log,
                                                   features=features)
    baselines = baseline_plans(nfe, schedule)
    search_value = evaluator.score([plan])[0]
    log(f"{method}: {start_name} with learned nodes, search score {search_value:.6g} "
        f"(was {info['start_search_score']:.6g}) in {learn_s:.1f}s")
    with samplers.CompileClock() as final_clock:
        core, rows, final_info = final_comparison(model, schedule, plan, baselines, evaluator, final, seed, log=log)
    best_base = next(r for r in rows if r["solver"] == core["best_baseline"])
    summary = {"nfe": nfe, "strategy": method, **core, "start": start_name, "search_score": search_value,
               "search_samples": evaluator.num_samples, "seed": seed, "learn_s": round(learn_s, 2),
               "evaluations": evaluator.evaluations, "search_wall_s": round(learn_s, 2),
               "final_wall_s": round(final_clock.wall, 2),
               "final_compile_s": round(final_clock.seconds, 2), "learned": info,
               "steps": describe_plan(plan), "compiles": samplers.trace_count()}
    meta = plan_meta(schedule, model, model_info, evaluator, search_value, rows[0], best_base, final_info, seed,
                     {"strategy": method, "start": start_name, "learn_s": round(learn_s, 2)}, "logsnr")
    if is_writer():
        save_plan(workdir / SCHEDULE_FILE, plan, meta)
        write_json_atomic(workdir / "search.json", summary)
    key = core["headline"]
    head = core["comparisons"][key]
    log(f"{method} nfe={nfe}: {key} {protocol.Interval(**head['plan'])} vs best baseline {core['best_baseline']} "
        f"{protocol.Interval(**head['baseline'])}; ratio {head['ratio_text']} (n={final_info['num_samples']}, "
        f"final seed {final_info['seed']})")
    return summary


def run_search(model, schedule, workdir, *, strategy: Evolution, evaluator: Evaluator, seed: int = 0,
               final: FinalOptions = FinalOptions(), model_info: dict | None = None,
               log: Callable[[str], None] = print, final_data: tuple | None = None,
               budget: float | None = None, unit_shares=None,
               finish: Callable[[solvers.SolverPlan], tuple[solvers.SolverPlan, dict]] | None = None) -> dict:
    """Search a plan of exactly ``strategy.space.nfe`` evaluations; returns the summary written to
    search.json. ``final_data`` = (x_T, reference endpoints or None) reuses final noise and its solve.

    With a compute ``budget`` (full-model evaluations; the strategy's hooks keep candidates within it,
    e.g. by skip masks priced by ``unit_shares``) the final comparison's baselines are the full-network
    presets that fit the budget (NFE = floor(budget)): the same compute, every free option.

    ``finish(plan) -> (plan, info)`` refines the search's best plan before the final comparison (the
    hybrid strategy's full gradient refinement); the refined plan is kept only when its search score
    is not worse (selection on search noise; the comparison is on fresh noise)."""
    workdir = Path(os.path.abspath(os.fspath(workdir)))
    if is_writer():
        workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    space = strategy.space
    nfe = space.nfe
    check_measurable(model, final.reference or final_data is not None)  # before any search work
    baselines, initial = initial_genomes(nfe, space, seed)
    if budget is not None and int(np.floor(budget + 1e-9)) != nfe:   # the full-network presets that fit
        baselines = baseline_plans(int(np.floor(budget + 1e-9)), schedule)
        if not baselines:
            raise ValueError(f"search.budget: {budget}: no preset reaches exactly nfe={int(np.floor(budget + 1e-9))}")
    setup_s = time.perf_counter() - t_start
    st, loop_info = search_loop(strategy, evaluator, initial, seed, str(workdir / "checkpoints"), log)
    search_wall, resumed_from = loop_info["search_wall_s"], loop_info["resumed_from"]
    log("search time split (s): " + ", ".join(f"{k} {v:.1f}" for k, v in loop_info["time_split"].items())
        + f"; JAX tracing and compiling, inside those: {loop_info['compile_s']:.1f}")
    generations = strategy.options.generations
    best_genome, best_score = st.best
    best_plan = decode(best_genome, space)
    best_plan.validate(schedule, unit_counts=space.unit_counts or None)
    assert best_plan.nfe() == nfe
    refinement = None
    if finish is not None:
        best_plan, best_score, refinement = finish_plan(finish, best_plan, best_score, evaluator, schedule, log)
    plan_cost = solvers.cost(best_plan, [1.0], unit_shares=unit_shares)
    if budget is not None and not within_budget(best_plan, budget, "cost", [1.0], unit_shares=unit_shares):
        raise RuntimeError(f"search returned a plan of cost {plan_cost:.4g} over the budget {budget}")

    with samplers.CompileClock() as final_clock:
        core, rows, final_info = final_comparison(model, schedule, best_plan, baselines, evaluator, final, seed,
                                                  log=log, final_data=final_data)
    key, ours = core["headline"], rows[0]
    best_base = next(r for r in rows if r["solver"] == core["best_baseline"])
    summary = {
        "nfe": nfe, "strategy": strategy.name, **core,
        "search_score": best_score, "search_samples": evaluator.num_samples, "seed": seed,
        "evaluations": len(st.archive), "generations": generations, "search_wall_s": round(search_wall, 2),
        "setup_s": round(setup_s, 2), "final_wall_s": round(final_clock.wall, 2),
        "final_compile_s": round(final_clock.seconds, 2), "resumed_from": resumed_from,
        "history": st.history, "rank_correlations": st.rank_correlations,
        "mean_rank_correlation": (float(np.nanmean([r["spearman"] for r in st.rank_correlations]))
                                  if st.rank_correlations else None),
        "compiles": samplers.trace_count(), "refinement": refinement, "refined_elites": len(st.refined),
        "time_split": loop_info["time_split"], "compile_s": loop_info["compile_s"],
        "budget": budget, "cost": round(plan_cost, 6),
        "skipped_fraction": float(np.mean(np.asarray(best_plan.skip))) if np.asarray(best_plan.skip).size else 0.0,
    }
    meta = plan_meta(schedule, model, model_info, evaluator, best_score, ours, best_base, final_info, seed,
                     {"evaluations": len(st.archive), "generations": generations,
                      "search_wall_s": round(search_wall, 2), "strategy": strategy.name,
                      "plan_cost": round(plan_cost, 6), "budget": budget}, space.node_space)
    if space.skip_units:
        meta["skip_unit_names"] = list(getattr(model, "skip_units", ()))
    summary["steps"] = describe_plan(best_plan)
    summary["processes"] = jax.process_count()
    summary["evaluated_by_writer"] = evaluator.local_evaluations   # search + final-comparison scoring
    if is_writer():
        save_plan(workdir / SCHEDULE_FILE, best_plan, meta)
        write_json_atomic(workdir / "search.json", summary)
        write_report(workdir, summary)
    head = core["comparisons"][key]
    log(f"searched nfe={nfe}: {key} {protocol.Interval(**head['plan'])} vs best baseline {best_base['solver']} "
        f"{protocol.Interval(**head['baseline'])}; ratio {head['ratio_text']} (n={final_info['num_samples']}, "
        f"final seed {final_info['seed']}); {len(st.archive)} evaluations, {search_wall:.1f}s search")
    return summary


def finish_plan(finish, plan, score: float, evaluator: Evaluator, schedule, log) -> tuple:
    """(kept plan, its search score, a record of the refinement) for :func:`run_search`'s ``finish``."""
    t0 = time.perf_counter()
    refined, info = finish(plan)
    refined.validate(schedule)
    refined_score = float(evaluator.score([refined])[0])
    kept = refined_score <= score
    log(f"final refinement: search score {score:.6g} -> {refined_score:.6g} "
        f"({'kept' if kept else 'not kept: worse on the search objective'}) in {time.perf_counter() - t0:.1f}s")
    record = {"search_score_before": score, "search_score_after": refined_score, "kept": kept,
              "loss": info.get("loss"), "best_validation": info.get("best_validation"), "history": info.get("history"),
              "wall_s": round(time.perf_counter() - t0, 2)}
    return (refined, refined_score, record) if kept else (plan, score, record)


def write_report(workdir, summary: dict) -> None:
    """report.md (+ figures) and a self-contained report.html in the run directory."""
    hist = summary["history"]
    progress = plot_lines({"best so far": ([h["evaluations"] for h in hist], [h["best"] for h in hist])},
                          xlabel="true evaluations", ylabel=summary["objective"], logy=True,
                          title=f"search progress, NFE {summary['nfe']} ({summary['strategy']})")
    key = summary["headline"]
    table = sorted(summary["final_table"], key=lambda r: r[key])
    rows_nfe = [{"solver": r["solver"].split("/")[0] if r["solver"] != "searched" else "searched",
                 "nfe": r["nfe"], key: max(r[key], 1e-9)} for r in table]
    best_per_family = {}
    for r in rows_nfe:
        k = (r["solver"], r["nfe"])
        if k not in best_per_family or r[key] < best_per_family[k][key]:
            best_per_family[k] = r
    nfe_plot = plot_distance_vs_nfe(list(best_per_family.values()), distance=key,
                                    title="distance vs NFE (best discretization per solver)")
    head = (f"NFE {summary['nfe']}; strategy {summary['strategy']}; objective {summary['objective']}; "
            f"{summary['evaluations']} evaluations in {summary['search_wall_s']} s; final evaluation on "
            f"{summary['final']['num_samples']} fresh samples (seed {summary['final']['seed']}).\n\n"
            + "\n\n".join(protocol.describe(c, "searched") + " "
                           + (f"; bias-extrapolated {protocol.Interval(**c['plan_inf'])} vs "
                              f"{protocol.Interval(**c['baseline_inf'])}, ratio {c['ratio_inf_text']} "
                              if "ratio_inf" in c else "")
                           + "(95% paired-bootstrap intervals)" for c in summary["comparisons"].values()))
    ref = summary["final"].get("reference_heldout")
    if ref:
        head += (f"\n\nThe reference solve itself (the ODE solution the paired metrics aim at), "
                 f"{protocol.describe(ref, 'reference')} (95% paired-bootstrap intervals).")
    if summary.get("mean_rank_correlation") is not None:
        head += f"\n\nPredictor Spearman on held-out evaluations (mean): {summary['mean_rank_correlation']:.3f}."
    sections = [("Summary", head), ("Search progress", progress),
                ("Searched plan vs every baseline (fresh noise)", table),
                ("NFE vs distance", nfe_plot), ("Searched plan", summary["steps"])]
    workdir = Path(workdir)
    write_text_atomic(workdir / "report.md", markdown_report(f"stepwise search, NFE {summary['nfe']}", sections,
                                                             image_dir=workdir))
    write_text_atomic(workdir / "report.html", html_report(f"stepwise search, NFE {summary['nfe']}", sections))
