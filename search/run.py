"""One search job end to end: baselines -> search (resumable) -> final evaluation -> files.

``run_search(model, schedule, nfe, workdir, settings)`` takes plain values (``settings`` is a
dict with the fields of ``configs/search_defaults.py``). In ``workdir`` it writes
``checkpoints/`` (orbax, every generation), ``schedule.json`` (the searched plan),
``search.json`` (progress, final table, costs), ``report.md`` + figures and ``report.html``.
Running it again on the same workdir resumes from the last checkpoint.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from evaluation import write_text_atomic
from search.evaluator import (Evaluator, baseline_plans, frechet_to_moments, has_moments,
                              reference_endpoints, run_plan)
from search.schedule_file import _plain, save_plan
from search.space import SearchSpace, decode, describe_plan, encode, repair
from search.state import restore_state, save_state
from search.strategies import make_strategy, numpy_rng

SCHEDULE_FILE = "schedule.json"


def _codes(column: str, names: str) -> tuple:
    from search.space import CATEGORICAL_TABLES, implemented_codes
    if not names:
        return tuple(implemented_codes(column))
    table = CATEGORICAL_TABLES[column]
    out = []
    for n in (x.strip() for x in names.split(",") if x.strip()):
        if n not in table:
            raise ValueError(f"search.{column}s: unknown {n!r}; allowed: {sorted(table)}")
        if table[n] in implemented_codes(column):
            out.append(table[n])
    if not out:
        raise ValueError(f"search.{column}s: none of {names!r} is implemented")
    return tuple(out)


def make_space(nfe: int, schedule, s: dict, num_models: int = 1) -> SearchSpace:
    choices = {
        "prediction": _codes("prediction", s["predictions"]),
        "variant": _codes("variant", s["variants"]),
        "expansion": _codes("expansion", s["expansions"]),
        "corrector": _codes("corrector", s["correctors"]),
        "order": tuple(range(1, int(s["max_order"]) + 1)),
        "base": tuple(range(0, int(s["max_base"]) + 1)),
        "model": tuple(range(num_models)),
    }
    return SearchSpace(nfe=nfe, schedule=schedule, node_space=s["node_space"], choices=tuple(choices.items()),
                       coef_range=(float(s["coef_min"]), float(s["coef_max"])), min_gap=float(s["min_gap"]),
                       max_order=int(s["max_order"]), max_base=int(s["max_base"]),
                       allow_analytic_first=bool(s["analytic_first"]), num_models=num_models,
                       p_node=float(s["p_node"]), node_sigma=float(s["node_sigma"]),
                       p_decision=float(s["p_decision"]), p_structure=float(s["p_structure"]),
                       coef_sigma=float(s["coef_sigma"]), p_crossover=float(s["p_crossover"]))


def final_noise(model, schedule, num_samples: int, seed: int) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(seed), (num_samples,) + tuple(model.data_shape))
                      * schedule.prior_std(), np.float32)


def final_evaluation(model, schedule, plans: dict, *, num_samples: int, seed: int, batch_size: int,
                     reference: bool = True, rmse_samples: int = 1000, log=None,
                     final_data: tuple | None = None) -> tuple[list[dict], dict]:
    """Fréchet distance to the exact moments of every plan on FRESH noise (``seed``), with the
    reference solve of the same noise for the excess distance and the RMSE. ``final_data``
    = (x_T, reference endpoints or None) reuses noise and its solve (benchmarks over many NFEs).
    A model without exact moments (a trained network) is measured against the reference solve only
    (``frechet_to_reference``, ``rmse_to_reference``), so it needs ``reference``."""
    exact = has_moments(model)
    check_measurable(model, reference or final_data is not None)
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
    if ref is not None and exact:
        info["reference_frechet"] = frechet_to_moments(ref, mean, cov)
    if ref is not None:  # paired: the reference solve of the same noise (sample noise cancels)
        r64 = ref.reshape(ref.shape[0], -1).astype(np.float64)
        ref_stats = (r64.mean(0), np.cov(r64, rowvar=False))
    rows = []
    for name, plan in plans.items():
        x = run_plan(model, schedule, plan, x_T, batch_size)
        row = {"solver": name, "nfe": plan.nfe(), "steps": plan.num_steps}
        if exact:
            row["frechet"] = frechet_to_moments(x, mean, cov)
        if ref is not None:
            if exact:
                row["excess"] = row["frechet"] - info["reference_frechet"]
            row["frechet_to_reference"] = frechet_to_moments(x, *ref_stats)
            m = min(rmse_samples, num_samples)
            row["rmse_to_reference"] = float(np.sqrt(np.mean((x[:m] - ref[:m]) ** 2)))
        rows.append(row)
        if log:
            log(f"  final {name:40s} " + " ".join(f"{k}={row[k]:.6f}" for k in FINAL_KEYS if k in row))
    return rows, info


def check_measurable(model, reference: bool) -> None:
    """A model without exact moments (a trained network) can only be measured against a reference solve."""
    if not reference and not has_moments(model):
        raise ValueError("final_reference: a model without exact moments (a trained network) is measured "
                         "against the reference solve; set search.final_reference=True")


FINAL_KEYS = ("frechet", "excess", "frechet_to_reference", "rmse_to_reference")


def final_key(rows: list[dict]) -> str:
    """The distance the final comparison ranks by: the excess Fréchet distance over the reference
    solve (exact moments and a reference), the Fréchet distance to the exact moments (no reference),
    or, for a trained network, the paired Fréchet distance to the reference solve of the same noise."""
    return next(k for k in ("excess", "frechet", "frechet_to_reference") if k in rows[0])


def run_search(model, schedule, nfe: int, workdir, settings: dict, *, model_info: dict | None = None,
               log: Callable[[str], None] = print, final_data: tuple | None = None) -> dict:
    """Search a plan of exactly ``nfe`` evaluations; returns the summary written to search.json."""
    from configs.search_defaults import search_defaults

    s = {**search_defaults().to_dict(), **dict(settings)}
    workdir = Path(os.path.abspath(os.fspath(workdir)))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    seed = int(s["seed"])
    check_measurable(model, bool(s["final_reference"]) or final_data is not None)  # before any search work
    space = make_space(nfe, schedule, s)
    evaluator = Evaluator(model, schedule, objective=s["objective"], num_samples=int(s["search_samples"]),
                          seed=seed, batch_size=int(s["batch_size"]), use_vmap=bool(s["vmap"]), log=log)
    baselines = baseline_plans(nfe, schedule)
    if not baselines:
        raise ValueError(f"no preset reaches exactly nfe={nfe}")
    rng0 = numpy_rng(jax.random.key(seed + 1))
    initial = [g for g in (repair(encode(p, space), space, rng0) for _, p in baselines) if g is not None]
    strategy = make_strategy(s["strategy"], space, population=int(s["population"]), top_k=int(s["top_k"]),
                             children=int(s["children"]), timesteps_only=int(s["timesteps_only_generations"]),
                             screen=int(s["screen"]), explore=int(s["explore"]), warmup=int(s["predictor_warmup"]),
                             hidden=int(s["predictor_hidden"]), lr=float(s["predictor_lr"]),
                             train_steps=int(s["predictor_train_steps"]), seed=seed)
    ckdir = str(workdir / "checkpoints")
    st = strategy.init(jax.random.key(seed), initial)
    prior_wall, resumed_from = 0.0, None
    restored = restore_state(ckdir, st)
    if restored is not None:
        st, extra = restored
        prior_wall = float(extra.get("wall_s", 0.0))
        resumed_from = st.generation
        log(f"resumed from generation {st.generation} ({len(st.archive)} evaluations) in {ckdir}")
    evaluator.cache.update({h: sc for h, (_, sc) in st.archive.items()})
    setup_s = time.perf_counter() - t_start
    generations = int(s["generations"])
    while st.generation <= generations:  # generation 0 evaluates the initial population
        cands, st = strategy.ask(st)
        scores = evaluator.score([decode(g, space) for g in cands])
        st = strategy.tell(st, cands, scores)
        wall = prior_wall + time.perf_counter() - t_start
        best = st.best[1]
        st.history.append({"generation": st.generation - 1, "evaluations": len(st.archive),
                           "best": best, "generation_best": float(min(scores)) if scores else None,
                           "wall_s": round(wall, 3)})
        save_state(ckdir, st, {"wall_s": wall})
        rc = st.rank_correlations[-1]["spearman"] if st.rank_correlations else float("nan")
        log(f"generation {st.generation - 1:3d}  evaluations {len(st.archive):5d}  best {best:.6g}"
            + (f"  predictor spearman {rc:.3f}" if st.rank_correlations else ""))
    search_wall = prior_wall + time.perf_counter() - t_start
    best_genome, best_score = st.best
    best_plan = decode(best_genome, space)
    best_plan.validate(schedule)
    assert best_plan.nfe() == nfe

    # ------------------------------------------------------------ final evaluation (fresh noise)
    t0 = time.perf_counter()
    base_scores = dict(zip([n for n, _ in baselines], evaluator.score([p for _, p in baselines])))
    top = int(s["final_top_baselines"])
    chosen = sorted(baselines, key=lambda kv: base_scores[kv[0]])[:top] if top > 0 else baselines
    plans = {"searched": best_plan, **dict(chosen)}
    rows, final_info = final_evaluation(model, schedule, plans, num_samples=int(s["final_samples"]),
                                        seed=seed + int(s["final_seed_offset"]), batch_size=int(s["batch_size"]),
                                        reference=bool(s["final_reference"]), log=log, final_data=final_data)
    final_wall = time.perf_counter() - t0
    key = final_key(rows)
    base_rows = [r for r in rows if r["solver"] != "searched"]
    best_base = min(base_rows, key=lambda r: r[key])
    ours = rows[0]
    ratio = best_base[key] / ours[key] if ours[key] > 0 else float("inf")
    search_scores = dict(zip(plans, evaluator.score(list(plans.values()))))
    for r in rows:
        r["search_score"] = search_scores[r["solver"]]
    summary = {
        "nfe": nfe, "strategy": s["strategy"], "objective": s["objective"], "final_key": key,
        "search_score": best_score, "search_samples": int(s["search_samples"]), "seed": seed,
        "evaluations": len(st.archive), "generations": generations, "search_wall_s": round(search_wall, 2),
        "setup_s": round(setup_s, 2), "final_wall_s": round(final_wall, 2), "resumed_from": resumed_from,
        "final": final_info, "final_table": rows, "baselines_total": len(baselines),
        "baselines_final": len(chosen), "best_baseline": best_base["solver"],
        "best_baseline_" + key: best_base[key], "searched_" + key: ours[key], "ratio_" + key: ratio,
        "history": st.history, "rank_correlations": st.rank_correlations,
        "mean_rank_correlation": (float(np.nanmean([r["spearman"] for r in st.rank_correlations]))
                                  if st.rank_correlations else None),
        "compiles": __import__("samplers").trace_count(),
    }
    meta = {
        "schedule": schedule.describe(), "model": model_info or {"kind": type(model).__name__},
        "score": {"objective": s["objective"], "search_value": best_score,
                  "final_frechet": ours.get("frechet"), "final_excess": ours.get("excess"),
                  "final_frechet_to_reference": ours.get("frechet_to_reference"),
                  "final_reference_frechet": final_info.get("reference_frechet")},
        "samples": {"search": int(s["search_samples"]), "final": int(s["final_samples"])},
        "seeds": {"search": seed, "final": seed + int(s["final_seed_offset"])},
        "cost": {"evaluations": len(st.archive), "generations": generations,
                 "search_wall_s": round(search_wall, 2), "strategy": s["strategy"]},
        "best_baseline": {"solver": best_base["solver"], "final_frechet": best_base.get("frechet"),
                          "final_excess": best_base.get("excess"),
                          "final_frechet_to_reference": best_base.get("frechet_to_reference")},
        "node_space": s["node_space"],
    }
    save_plan(workdir / SCHEDULE_FILE, best_plan, meta)
    summary["steps"] = describe_plan(best_plan)
    write_text_atomic(workdir / "search.json", json.dumps(summary, indent=2, default=_plain) + "\n")
    write_report(workdir, summary)
    log(f"searched nfe={nfe}: {key} {ours[key]:.6g} vs best baseline {best_base['solver']} "
        f"{best_base[key]:.6g} (ratio {ratio:.2f}); {len(st.archive)} evaluations, {search_wall:.1f}s search")
    return summary


def write_report(workdir, summary: dict) -> None:
    """report.md (+ figures) and a self-contained report.html in the run directory."""
    from evaluation import html_report, markdown_report, plot_distance_vs_nfe, plot_lines

    hist = summary["history"]
    progress = plot_lines({"best so far": ([h["evaluations"] for h in hist], [h["best"] for h in hist])},
                          xlabel="true evaluations", ylabel=summary["objective"], logy=True,
                          title=f"search progress, NFE {summary['nfe']} ({summary['strategy']})")
    key = summary.get("final_key") or final_key(summary["final_table"])
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
            f"Searched {key}: {summary['searched_' + key]:.6g}; best baseline {summary['best_baseline']}: "
            f"{summary['best_baseline_' + key]:.6g}; ratio {summary['ratio_' + key]:.3g}.")
    if summary.get("mean_rank_correlation") is not None:
        head += f"\n\nPredictor Spearman on held-out evaluations (mean): {summary['mean_rank_correlation']:.3f}."
    sections = [("Summary", head), ("Search progress", progress),
                ("Searched plan vs every baseline (fresh noise)", table),
                ("NFE vs distance", nfe_plot), ("Searched plan", summary["steps"])]
    workdir = Path(workdir)
    write_text_atomic(workdir / "report.md", markdown_report(f"stepwise search, NFE {summary['nfe']}", sections,
                                                             image_dir=workdir))
    write_text_atomic(workdir / "report.html", html_report(f"stepwise search, NFE {summary['nfe']}", sections))
