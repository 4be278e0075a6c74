"""Benchmark: search strategies side by side on the exact digits mixture, by the fair protocol.

Arms, each run with ``--seeds`` search seeds (seed s: its own search noise, proposals, training
noise) at every NFE:

* ``evolution`` and ``predictor`` (S³-style screening): the default search settings;
* ``hybrid``: the predictor search with memetic refinement (the 2 best new elites of each
  generation get 10 gradient steps on their nodes) and a 200-step gradient refinement of the final
  plan (kept only if its search score is not worse); the gradient loss is the search objective's
  distance (Fréchet to the teacher's Gaussian fit); ``hybrid_rmse``: the same with the paired RMSE;
* ``gradient`` (LD3-style): 200 Adam steps on the nodes of the best baseline by search score
  (Fréchet loss); ``gradient_rmse``: the same with the paired RMSE (LD3's loss);
* ``dp`` (GITS-style): DP nodes for that baseline (DDIM step costs, 64-node grid);
* ``hybrid_corrections`` / ``gradient_corrections`` (not run by default; S4S / GAS style): as
  ``hybrid`` / ``gradient``, but the final gradient run learns additive corrections of every step's
  solver weights beside the nodes (``gradient_learn=nodes+corrections``, 400 steps, the corrections
  at their own Adam rate ``gradient_corrections_lr``; the memetic steps inside
  the search stay on the nodes, which is all a genome holds); ``gradient_corrections_rmse``: the
  same from the best baseline with the paired RMSE loss;
* ``gradient_features`` / ``hybrid_features`` (trained networks with ``--feature-net`` only): the
  gradient loss is the paired RMSE in the domain feature net's space (``gradient_loss=features``);
* ``predictor_data`` / ``gradient_data`` / ``hybrid_data`` (trained networks with ``--feature-net``
  only; not run by default): objective ``data_frechet``, the Fréchet distance in the feature net's
  space to the model's TRAINING images instead of the teacher (S³ / AutoDiffusion score by FID to
  data); gradient steps descend on the same distance. The final comparison then also takes the
  ``--final-top-baselines`` best baselines by that objective, and judges on the held-out test split;
* ``evolution_x4`` / ``predictor_x4`` (not run by default): 48 generations instead of 12, about the
  hybrid's wall time, to compare at equal wall time.

Then ONE final evaluation on fresh noise (``--final-seed``) of every arm's plans and every
baseline: each preset x discretization x order x {analytic first step off, on}, plus GITS-node
versions of the 8 best baselines by search score (tuned-node baselines). The best baseline is
chosen on the final noise per metric and named. Per arm and NFE: the paired Fréchet ratio
best-baseline / arm per seed with its 95% paired-bootstrap interval (or "below the noise floor"),
median and range over seeds, and the arm's wall time.

    python benchmarks/learned_gmm.py --nfes 3 4 5 6 8 10 --seeds 0 1 2 --out runs/bench-learned

On a trained network (``--checkpoint``, trained on the train split; ``--feature-net`` adds the
domain-feature Fréchet distance to the held-out test images to every comparison, as in
``search_gmm.py``), with smaller search and final sets:

    python benchmarks/learned_gmm.py --checkpoint runs/bench-train/digits_unet_small_heldout \
        --feature-net runs/bench-train/features_digits16 --nfes 4 5 6 --seeds 0 1 2 \
        --arms predictor gradient gradient_features dp --search-samples 256 --gradient-samples 128 \
        --final-samples 500 --final-top-baselines 24 --batch-size 500 --out runs/bench-learned-unet

``--judge-feature-net NET`` judges the held-out FD in a second, independently trained feature net's
space (the ``*_data`` arms' objective and the ``*_features`` losses stay in ``--feature-net``'s), so a
plan searched against the training images in one feature space is judged in another; to judge kept
plans again, copy ``plans/`` and ``final_*.npz`` into a new ``--out`` (results of another judge in
the same directory are refused, never overwritten). ``--extra-judges NET ...`` judges in those nets
TOO, in the same final evaluation and table (metric ``heldout_fd[<NET's directory name>]``, each
with its own best baseline; a kept NFE is evaluated again when it lacks one): one command shows
whether a gain measured in the objective's feature space holds in others (on the Fashion-MNIST UNet
one seed's of three did not; benchmarks/RESULTS_search.md).

Resumable: each arm's plan is kept in ``<out>/plans/`` once found, searches resume from their
checkpoints, finished NFEs are kept in ``<out>/results.json`` (written atomically); an NFE is
evaluated again (every kept arm and seed of it and the new ones, on the same final noise) when a
rerun asks for an arm or seed it lacks (or, with ``--feature-net``, its results lack the reference
solve's own held-out FD, ``reference_heldout``: the image quality of the ODE solution every
teacher-matching loss aims at); a kept plan found with other search settings is refused.
The ``dp`` and ``gradient*`` arms of one seed share one evaluator (one teacher solve and one scoring of the baselines); each still reports
its wall time as if run alone (the shared setup is added to every arm that reuses it).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from stepwise.cli import runtime
from stepwise.cli.options import (GRADIENT_FIELDS, gradient_options, hybrid_refinements, search_evaluator, search_space,
                                  search_strategy, section)
from stepwise.io import write_json_atomic
from stepwise.search import protocol
from stepwise.search.evaluator import baseline_plans
from stepwise.search.run import finish_plan, final_evaluation, initial_genomes, learned_plan, search_loop
from stepwise.search.schedule_file import load_plan, save_plan
from stepwise.search.space import decode

# arm -> (strategy, search-section overrides)
ARM_SETTINGS = {
    "evolution": ("evolution", {}), "predictor": ("predictor", {}), "hybrid": ("hybrid", {}),
    "hybrid_rmse": ("hybrid", {"gradient_loss": "rmse"}), "gradient": ("gradient", {}),
    "gradient_rmse": ("gradient", {"gradient_loss": "rmse"}), "dp": ("dp", {}),
    # S4S-style: the final gradient refinement learns additive corrections of the solver weights too
    "hybrid_corrections": ("hybrid", {"gradient_learn": "nodes+corrections", "gradient_steps": 400}),
    "gradient_corrections": ("gradient", {"gradient_learn": "nodes+corrections", "gradient_steps": 400}),
    "gradient_corrections_rmse": ("gradient", {"gradient_learn": "nodes+corrections", "gradient_steps": 400,
                                               "gradient_loss": "rmse"}),
    # the same with both Adam rates decaying to 0 (cosine): a constant rate kept jumping across the
    # mode-switch ridges at NFE 10 (seed 1: training loss 0.019 -> 0.236 within 40 steps)
    "gradient_corrections_rmse_cosine": ("gradient", {"gradient_learn": "nodes+corrections", "gradient_steps": 400,
                                                      "gradient_loss": "rmse", "gradient_lr_schedule": "cosine"}),
    # ... and a 5x smaller rate on the corrections: at NFE 10 (seed 1's training and validation noise)
    # corrections at 0.01 made the training loss rise within 15 steps; nodes alone at 0.05 descended
    "gradient_corrections_rmse_cosine_slow": ("gradient", {"gradient_learn": "nodes+corrections", "gradient_steps": 400,
                                                           "gradient_loss": "rmse", "gradient_lr_schedule": "cosine",
                                                           "gradient_corrections_lr": 0.002}),
    # trained networks with --feature-net: paired RMSE in the domain feature space
    "gradient_features": ("gradient", {"gradient_loss": "features"}),
    "hybrid_features": ("hybrid", {"gradient_loss": "features"}),
    # trained networks with --feature-net: scored against the TRAINING images in the feature net's
    # space instead of the teacher (S³ / AutoDiffusion score candidates by FID to data); the gradient
    # steps descend on the same distance
    "predictor_data": ("predictor", {"objective": "data_frechet"}),
    "gradient_data": ("gradient", {"objective": "data_frechet"}),
    "hybrid_data": ("hybrid", {"objective": "data_frechet"}),
    # equal-wall-time controls: 4x the generations (48), about the hybrid's wall time
    "evolution_x4": ("evolution", {"generations": 48}), "predictor_x4": ("predictor", {"generations": 48}),
}
ARMS = tuple(k for k in ARM_SETTINGS if not k.endswith(("_x4", "_features", "_data")) and "_corrections" not in k)
_spec = importlib.util.spec_from_file_location("search_gmm", Path(__file__).with_name("search_gmm.py"))
search_gmm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_gmm)


def shared_evaluator(evaluators: dict, settings: dict, model, sched, nfe: int, seed: int,
                     objective: str = "teacher_frechet", data=None):
    """(evaluator, setup seconds, reused) of search seed ``seed`` and ``objective``: its search
    noise, teacher solve (or training-image target ``data``) and score cache, with every baseline
    at ``nfe`` scored, made once per NFE and shared by the learned arms of that objective and the
    tuned baselines (they score the same baselines on the same noise; no other arm override touches
    the evaluator's fields). An arm that reuses it adds the setup seconds to its wall time, so every
    arm's wall time counts the teacher solve and baseline scoring it needs."""
    key = (seed, objective)
    reused = key in evaluators
    if not reused:
        t0 = time.perf_counter()
        ev = search_evaluator(section("search", {**settings, "seed": seed, "objective": objective}), model, sched,
                              log=None, data=data)
        ev.score([p for _, p in baseline_plans(nfe, sched)])
        evaluators[key] = (ev, time.perf_counter() - t0)
    return (*evaluators[key], reused)


def arm_seeds(done: dict, arms, seeds) -> dict[str, list[int]]:
    """The (arm -> search seeds) an NFE's final evaluation covers: those of its kept results
    ``done`` joined with the requested ``arms`` x ``seeds`` (a rerun that asks for another arm or
    seed evaluates it beside the kept ones on the same final noise; none of them is dropped)."""
    jobs = {arm: [run["seed"] for run in rec["runs"]] for arm, rec in done.get("arms", {}).items()}
    for arm in arms:
        kept = jobs.get(arm, [])
        jobs[arm] = kept + [s for s in seeds if s not in kept]
    return jobs


def check_settings(path: Path, found: dict, settings: dict, what: str) -> None:
    """Refuse a kept result (``found``, from ``path``) made with other search settings than this run's."""
    if found.get("settings", settings) != settings:
        raise SystemExit(f"{path}: {what} with search settings {found['settings']}, this run has {settings}; "
                         "allowed: the same settings, or another --out")


def run_arm(arm: str, model, sched, nfe: int, seed: int, workdir: Path, settings: dict | None = None,
            features=None, evaluators: dict | None = None, data=None):
    """(plan, record) of one arm at one NFE and seed; resumable (searches from their checkpoints,
    the gradient run from its own). ``settings``: search-section overrides shared by every arm;
    ``features``: the feature map of the ``*_features`` arms; ``evaluators``: this NFE's
    :func:`shared_evaluator` cache (the ``dp`` / ``gradient*`` arms use it); ``data``: the
    training images' feature moments, the target of the ``*_data`` arms."""
    arm, overrides = ARM_SETTINGS[arm]
    overrides = {**(settings or {}), **overrides}
    objective = overrides.get("objective", "teacher_frechet")
    data = data if objective == "data_frechet" else None
    s = section("search", {"strategy": arm, "seed": seed, **overrides})
    t0 = time.perf_counter()
    if arm in ("evolution", "predictor"):   # no gradient steps: the shared gradient settings do not apply
        plain = {k: v for k, v in overrides.items() if k not in GRADIENT_FIELDS}
        plan, score, evals, wall, _ = search_gmm.search_one(model, sched, nfe, seed, {"strategy": arm, **plain},
                                                            workdir, data=data)
        return plan, {"search_score": score, "evaluations": evals, "wall_s": round(wall, 1)}
    if arm == "hybrid":
        evaluator = search_evaluator(s, model, sched, log=None, data=data)
        space = search_space(s, nfe, sched)
        refine, finish = hybrid_refinements(s, model, sched, space, workdir, log=lambda m: None, features=features,
                                            images=data)
        strategy = search_strategy(s, space, refine=refine)
        _, initial = initial_genomes(nfe, space, seed)
        st, _ = search_loop(strategy, evaluator, initial, seed, str(workdir / "checkpoints"), log=lambda m: None)
        plan, score, refinement = finish_plan(finish, decode(st.best[0], space), st.best[1], evaluator, sched,
                                          log=lambda m: None)
        return plan, {"search_score": score, "evaluations": len(st.archive), "refined_elites": len(st.refined),
                      "final_refinement_kept": refinement["kept"], "wall_s": round(time.perf_counter() - t0, 1)}
    evaluator, setup_s, reused = shared_evaluator({} if evaluators is None else evaluators, settings or {},
                                                  model, sched, nfe, seed, objective, data)
    plan, start, info, _ = learned_plan(model, sched, nfe, arm, evaluator, gradient=gradient_options(s),
                                        seed=seed, checkpoint_dir=str(workdir / "gradient"), log=None,
                                        features=features)
    rec = {"search_score": float(evaluator.score([plan])[0]), "start": start,
           "start_search_score": info["start_search_score"],
           "wall_s": round(time.perf_counter() - t0 + (setup_s if reused else 0.0), 1),
           "shared_setup_s": round(setup_s, 1)}
    return plan, {**rec, **descent_record(info)}


def descent_record(info: dict) -> dict:
    """What a gradient run's record keeps of its descent (nothing for a DP run): its time over every
    resumed run and where it resumed, its loss, and the validation path that chose the kept step
    (start, best and the step it was reached at; train loss at the start and the end), so a plan
    that validates better than it scores on fresh noise can be read from its record."""
    if "wall_s" not in info:
        return {}
    hist = info["history"]
    best = min(hist, key=lambda h: h["validation"])
    return {"descent_wall_s": info["wall_s"], "resumed_at": info["resumed_at"], "loss": info["loss"],
            "validation": {"start": hist[0]["validation"], "best": best["validation"], "best_step": best["step"]},
            "train": {"start": hist[0]["train"], "end": hist[-1]["train"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfes", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARM_SETTINGS))
    ap.add_argument("--final-samples", type=int, default=5000)
    ap.add_argument("--final-seed", type=int, default=20261201, help="fresh: not used while developing")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", default="runs/bench-learned")
    ap.add_argument("--checkpoint", default="", help="a `stepwise train` run to search on instead of the mixture")
    ap.add_argument("--feature-net", default="", help="with --checkpoint: score on held-out test images too")
    ap.add_argument("--judge-feature-net", default="",
                    help="with --checkpoint: judge the held-out FD in this feature net's space instead of "
                         "--feature-net's (an independent judge of the *_data arms, whose objective is in "
                         "--feature-net's space); results of another judge are refused (use another --out)")
    ap.add_argument("--extra-judges", nargs="+", default=[], metavar="NET",
                    help="with --checkpoint and a judge: ALSO judge the held-out FD in each of these feature nets "
                         "(metric heldout_fd[<NET's directory name>], its own best baseline), in the same table")
    ap.add_argument("--search-samples", type=int, default=0, help="0: the search default")
    ap.add_argument("--gradient-samples", type=int, default=0, help="0: the search default (arms with gradient steps)")
    ap.add_argument("--batch-size", type=int, default=2500, help="sampler chunk of the final evaluation")
    ap.add_argument("--final-top-baselines", type=int, default=0,
                    help="0: every baseline in the final evaluation; k: the k best by search score (+ GITS)")
    a = ap.parse_args(argv)
    if set(a.seeds) & {a.final_seed}:
        raise SystemExit("--final-seed must differ from every search seed")
    if any(arm.endswith(("_features", "_data")) for arm in a.arms) and not a.feature_net:
        raise SystemExit("--arms: the *_features and *_data arms need --feature-net (their loss or objective is in "
                         "its feature space)")
    out = Path(a.out).resolve()
    (out / "plans").mkdir(parents=True, exist_ok=True)
    model, held_out = search_gmm.load_model(a, a.judge_feature_net, "--judge-feature-net")
    judge = str(Path(a.judge_feature_net or a.feature_net).resolve()) if held_out is not None else None
    legacy = str(Path(a.feature_net).resolve()) if a.feature_net else judge   # results from before judges were kept
    extra = extra_judges(a, held_out is not None)
    sched = model.schedule
    data = (runtime.training_data(a.feature_net, {"--checkpoint": a.checkpoint}, "--feature-net")
            if a.feature_net else None)    # the *_data arms' target: the training split, never the held-out one
    features = data.extractor if data is not None else None   # the *_features arms' space: --feature-net's
    settings = {k: v for k, v in (("search_samples", a.search_samples), ("gradient_samples", a.gradient_samples))
                if v}
    if a.search_samples:
        settings["batch_size"] = min(a.search_samples, 2048)
    x_T, ref = search_gmm.final_data(out, model, sched, a.final_samples, a.final_seed, a.batch_size)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for nfe in a.nfes:
        done = results.get(str(nfe), {})
        check_settings(results_path, done, settings, f"NFE {nfe} was evaluated")
        check_judge(results_path, done, judge, nfe, legacy)
        check_extra_judges(results_path, done, extra, nfe)
        jobs, kept = arm_seeds(done, a.arms, a.seeds), arm_seeds(done, [], [])
        if not needs_evaluation(done, jobs, kept, len(x_T), held_out is not None, extra):
            continue    # this NFE's final evaluation already covers every requested arm, seed and metric
        arms, records, evaluators = {}, {}, {}
        for arm, seeds in jobs.items():
            for seed in seeds:
                name = f"{arm}(seed={seed})"
                path, rec_path = out / "plans" / f"nfe{nfe}-{arm}-{seed}.json", out / "plans" / f"nfe{nfe}-{arm}-{seed}.rec.json"
                if path.exists() and rec_path.exists():
                    plan, rec = load_plan(path, sched), json.loads(rec_path.read_text())
                    check_settings(rec_path, rec, settings, "found")
                else:
                    plan, rec = run_arm(arm, model, sched, nfe, seed, out / f"nfe{nfe}-{arm}-seed{seed}",
                                        settings, features, evaluators, data)
                    rec["settings"] = settings
                    save_plan(path, plan, {"schedule": sched.describe()})
                    write_json_atomic(rec_path, rec)
                arms[name], records[name] = plan, rec
                print(f"nfe {nfe} {name}: search score {rec['search_score']:.6g}, {rec['wall_s']}s", flush=True)
        first_seed = next(iter(jobs.values()))[0]
        t0 = time.perf_counter()
        progress = lambda m: print(f"nfe {nfe} [{time.perf_counter() - t0:7.1f}s] {m.strip()}", flush=True)
        ev = shared_evaluator(evaluators, settings, model, sched, nfe, first_seed)[0]
        also = [shared_evaluator(evaluators, settings, model, sched, nfe, first_seed, "data_frechet", data)[0]] \
            if any(arm.endswith("_data") for arm in jobs) else []
        baselines, tuned = search_gmm.comparison_baselines(model, sched, nfe, ev, a.final_top_baselines, also)
        progress(f"baselines ranked on the search noise: {len(baselines)} + {len(tuned)} tuned; final evaluation "
                 f"of {len(arms) + len(baselines) + len(tuned)} plans on {len(x_T)} fresh noises")
        rows, info = final_evaluation(model, sched, {**arms, **dict(baselines), **dict(tuned)},
                                      num_samples=len(x_T), seed=a.final_seed, batch_size=a.batch_size,
                                      final_data=(x_T, ref), focus=tuple(arms), resamples=a.resamples,
                                      held_out=held_out, judges={k: v for k, (_, v) in extra.items()} or None,
                                      log=progress)
        head = info["headline"]
        per_arm = {}
        for arm, seeds in jobs.items():
            names = [f"{arm}(seed={s})" for s in seeds]
            ratios = [info["comparisons"][n][head]["ratio"] for n in names]
            per_arm[arm] = {
                "runs": [{"seed": s, **records[n], "comparison": info["comparisons"][n][head],
                          "comparisons": info["comparisons"][n]} for s, n in zip(seeds, names)],
                "ratio_over_seeds": protocol.summarize_seeds([q["value"] for q in ratios if not q["lower_bound_only"]]),
                "seeds_below_noise_floor": sum(q["lower_bound_only"] for q in ratios),
            }
        results[str(nfe)] = {"nfe": nfe, "final_samples": len(x_T), "final_seed": a.final_seed,
                             "baselines": len(baselines), "tuned_baselines": len(tuned), "headline": head,
                             "settings": settings,
                             "bootstrap": info["bootstrap"], "arms": per_arm, "table": rows,
                             "model": a.checkpoint or "digits_gmm(10)", "held_out": held_out and held_out.label,
                             "judge": judge}
        if extra:
            results[str(nfe)]["extra_judges"] = {k: path for k, (path, _) in extra.items()}
        for key in ("reference_heldout", "reference_by_judge"):
            if key in info:
                results[str(nfe)][key] = info[key]
        write_json_atomic(results_path, results)
        print(f"nfe {nfe}: " + "; ".join(f"{arm} {per_arm[arm]['ratio_over_seeds']}" for arm in jobs), flush=True)
    print_table(results, list(dict.fromkeys(arm for r in results.values() for arm in r["arms"])))
    return 0


def check_judge(path: Path, found: dict, judge: str | None, nfe: int, legacy: str | None) -> None:
    """Refuse kept results of NFE ``nfe`` (``found``, from ``path``) whose held-out FD was judged by
    another feature net than ``judge`` (resolved path). Results from before the judge was recorded
    count as judged by ``legacy`` (this run's resolved --feature-net, the only judge then), so a
    new judge is never taken for done. Nothing kept is overwritten."""
    if found and found.get("judge", legacy) != judge:
        raise SystemExit(f"{path}: NFE {nfe} was judged by the feature net {found.get('judge', legacy)}, this run by {judge}; "
                         "allowed: the same judge, or another --out (copy plans/ and final_*.npz there to "
                         "judge the same plans on the same final noise without searching again)")


def needs_evaluation(done: dict, jobs: dict, kept: dict, final_samples: int, held_out: bool,
                     extra: dict | None = None) -> bool:
    """Whether an NFE's final evaluation must run (again): an arm or seed is asked for that ``done``
    (its kept results) lacks, the final noise differs, held-out data is given and ``done`` has no
    comparison of the reference solve itself on it (results from before it was measured), or an
    extra judge (``extra``: name -> ...) is asked for that ``done`` was not judged by."""
    return (jobs != kept or done.get("final_samples") != final_samples
            or (held_out and "reference_heldout" not in done)
            or any(name not in done.get("extra_judges", {}) for name in extra or {}))


def extra_judges(a, held_out: bool) -> dict:
    """{name: (resolved path, held-out moments)} of ``--extra-judges``, named by directory; refused by
    flag without held-out data, or when two nets share a directory name."""
    if not a.extra_judges:
        return {}
    if not held_out:
        raise SystemExit("--extra-judges needs --checkpoint and --feature-net (or --judge-feature-net)")
    names = [Path(net).resolve().name for net in a.extra_judges]
    if len(set(names)) != len(names):
        raise SystemExit(f"--extra-judges: directory names must differ (they name the metrics): {names}")
    return {name: (str(Path(net).resolve()), runtime.held_out_data(net, {"--checkpoint": a.checkpoint}, "--extra-judges"))
            for name, net in zip(names, a.extra_judges)}


def check_extra_judges(path: Path, found: dict, extra: dict, nfe: int) -> None:
    """Refuse kept results of NFE ``nfe`` whose extra judge of a name was another net than this run's."""
    for name, (net, _) in extra.items():
        kept = found.get("extra_judges", {}).get(name)
        if kept is not None and kept != net:
            raise SystemExit(f"{path}: NFE {nfe} was judged as heldout_fd[{name}] by {kept}, this run by {net}; "
                             "allowed: the same net, or another --out")


def _cell(runs: list, metric: str, suffix: str = "") -> str:
    """Ratio best-baseline / arm of one metric: median [range] over seeds, then per seed with its
    95% interval, then the median wall time. ``suffix="_inf"``: the bias-extrapolated ratio."""
    cs = [run["comparisons"][metric] if "comparisons" in run else run["comparison"] for run in runs]
    cs = [{"ratio": c["ratio" + suffix], "ratio_text": c["ratio" + suffix + "_text"]} for c in cs]
    vals = [c["ratio"]["value"] for c in cs if not c["ratio"]["lower_bound_only"]]
    summ = protocol.summarize_seeds(vals)
    agg = (f"{summ['median']:.3g}x [{summ['min']:.3g}, {summ['max']:.3g}]" if summ["n_seeds"] == len(cs)
           else f"{len(cs) - summ['n_seeds']} of {len(cs)} seeds below the noise floor")
    return (f"{agg}; per seed " + " / ".join(c["ratio_text"] for c in cs)
            + f"; {np.median([run['wall_s'] for run in runs]):.0f} s")


def print_table(results: dict, arms) -> None:
    print("\n| NFE | metric | best baseline (final noise) | baseline | " + " | ".join(arms) + " |")
    print("|---|---|---|---|" + "---|" * len(arms))
    for key in sorted(results, key=int):
        r = results[key]
        run0 = next(iter(r["arms"].values()))["runs"][0]
        metrics = [m for m in ("frechet_to_reference", "excess", "heldout_fd", "rmse_to_reference")
                   if m in run0.get("comparisons", {})] \
            + sorted(m for m in run0.get("comparisons", {}) if m.startswith("heldout_fd[")) \
            or [r["headline"]]
        for metric in metrics:
            first = run0["comparisons"][metric] if "comparisons" in run0 else run0["comparison"]
            for suffix, label in (("", metric), ("_inf", metric + " (bias-extrapolated)")):
                if "ratio" + suffix not in first:
                    continue
                base = first["baseline" + suffix]
                print(f"| {r['nfe']} | {label} | {first['baseline_name']} | {base['value']:.4g} [{base['low']:.4g}, "
                      f"{base['high']:.4g}] | " + " | ".join(_cell(r["arms"][arm]["runs"], metric, suffix)
                                                          if arm in r["arms"] else "not run" for arm in arms) + " |")
    search_gmm.print_reference_heldout(results)
    any_r = next(iter(results.values()), None)
    if any_r:
        print(f"\nn = {any_r['final_samples']} fresh noises (seed {any_r['final_seed']}), "
              f"{any_r['bootstrap']['resamples']} paired-bootstrap resamples; {any_r['baselines']} baselines + "
              f"{any_r['tuned_baselines']} GITS-node baselines per NFE; model {any_r.get('model', 'digits_gmm(10)')}"
              + (f"; held-out: {any_r['held_out']}" if any_r.get("held_out") else "")
              + (f", in the feature space of {any_r['judge']}" if any_r.get("judge") else "")
              + (f"; also judged in {', '.join(any_r['extra_judges'].values())} (metrics heldout_fd[name])"
                 if any_r.get("extra_judges") else "")
              + "; cells: ratio best-baseline / arm, median [range] over seeds, then per seed with 95% interval, "
              "then the median wall time.")


if __name__ == "__main__":
    raise SystemExit(main())
