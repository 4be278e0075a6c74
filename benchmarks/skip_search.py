"""Benchmark: per-step architecture search (AutoDiffusion-style skip masks) under a compute budget.

On a trained Flax UNet checkpoint, for a budget of B full-model evaluations and ``--seeds`` search
seeds (seed s: its own search noise, proposals and predictor; the arms of one seed share that noise):

* (a) the full network with the best baseline at NFE B: every preset x discretization x order x
  {analytic first step off, on}, the ``--top-baselines`` best by search score evaluated on the
  final noise and the best chosen there (the same compute, every free option);
* (c) nodes + solver search at NFE B, full network (what stepwise searched before masks);
* (d) AutoDiffusion's two-stage schedule at NFE M > B: nodes and solver decisions with the full
  network first, then per-step skip masks only, every candidate projected onto the budget;
* (e) the joint search of nodes, solver decisions and masks at NFE M under the same budget;
* with ``--earliest``, (d) and (e) again with the fixed projection order (earliest steps skipped
  first) instead of the measured one (``search.skip_order``: least measured damage per cost saved);
* with ``--small-checkpoint`` (a smaller denoiser of the same data and schedule; the budget then
  counts evaluations of ``--checkpoint``'s model, the small one costing its FLOP ratio per call):
  (b) T-Stitch with every solver: each preset x discretization x order x AFS at NFE B+1 .. 2B with
  its first k steps on the small model, k the least that fits the budget, the ``--top-baselines``
  best by search score evaluated on the final noise; and (f) the joint search of nodes, solver
  decisions, the model column and both models' masks at NFE M (its first population: the NFE-M
  presets projected onto the budget, i.e. T-Stitch plans);

then ONE final evaluation on fresh noise (``--final-seed``) of every plan: the paired Fréchet
distance to the reference solve of the same noise, with 95% paired-bootstrap intervals, each
searched plan against the best baseline (a). The searched plans are also compared with the best
full-network baseline at NFE 2B (the "half the cost" target), and with a small network (f) with the
best T-Stitch plan (b) on the same noise. Plan costs come from the one plan
accounting (``solvers.cost`` with unit shares measured from XLA's cost analysis).

    python benchmarks/skip_search.py --checkpoint runs/digits_unet_small --budget 5 --masked-nfe 7 \\
        --seeds 0 1 2 --out runs/bench-skip
    python benchmarks/skip_search.py --checkpoint runs/digits_unet_large \\
        --small-checkpoint runs/digits_unet_small --budget 5 --masked-nfe 7 --out runs/bench-skip-pair

Finished searches are kept in ``<out>/searches.json``, the baselines and T-Stitch plans chosen by
search score in ``<out>/baselines_nfe*.json`` / ``tstitch.json``, the reference solve of the final
noise in ``<out>/final_ref_*.npz`` (all written atomically) and reused on a rerun.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stepwise import denoisers, solvers
from stepwise.cli.options import search_evaluator, search_space, search_strategy, section, skip_setup
from stepwise.cli.runtime import load_model_path
from stepwise.denoisers.skipping import call_flops
from stepwise.evaluation import pareto_front
from stepwise.io import savez_atomic, write_json_atomic
from stepwise.search.evaluator import baseline_plans, reference_endpoints
from stepwise.search.run import FinalMemo, final_evaluation, final_noise, initial_genomes, search_loop
from stepwise.search.schedule_file import plan_from_dict, plan_to_dict
from stepwise.search.space import decode
from stepwise.search.stitching import ranked_tstitch

ARMS = {"c_nodes_solver": dict(skip=False),
        "d_two_stage_masks": dict(skip=True, skip_schedule="two_stage", skip_order="sensitivity"),
        "e_joint_masks": dict(skip=True, skip_schedule="joint", skip_order="sensitivity")}
# the projection of the first measurement (earliest steps skipped first), kept for the comparison
EARLIEST = {"d_two_stage_masks_earliest": dict(skip=True, skip_schedule="two_stage", skip_order="earliest"),
            "e_joint_masks_earliest": dict(skip=True, skip_schedule="joint", skip_order="earliest")}
# with a smaller model beside the checkpoint's (--small-checkpoint)
PAIR = {"f_joint_model_masks": dict(skip=True, skip_schedule="joint", skip_order="sensitivity")}


_SETUPS: dict = {}   # (pair arm, skip order, seed) -> skip_setup's result (one sensitivity measurement)


def search_arm(model, sched, evaluator, arm: str, seed: int, nfe: int, budget: float, settings: dict, workdir: Path,
               pair=None, costs=None):
    """One resumable search; returns (best plan, its search score, evaluations, wall seconds, unit
    shares). Arms of ``PAIR`` search the model column of ``pair`` (relative ``costs``) too."""
    opts = {**settings, **{**ARMS, **EARLIEST, **PAIR}[arm], "seed": seed}
    if opts["skip"]:
        opts["budget"] = budget
    s = section("search", opts)
    models = pair if arm in PAIR else model
    key = (arm in PAIR, opts.get("skip_order"), seed)   # what the hooks depend on: arms d and e share them
    if key not in _SETUPS:
        _SETUPS[key] = skip_setup(s, models, costs=costs if arm in PAIR else None)
    units, make_hooks, shares = _SETUPS[key]
    space = search_space(s, nfe, sched, num_models=len(pair) if arm in PAIR else 1, unit_counts=units)
    strategy = search_strategy(s, space, make_hooks(space))
    _, initial = initial_genomes(nfe, space, seed)
    st, info = search_loop(strategy, evaluator, initial, seed, str(workdir / "checkpoints"), log=lambda m: None)
    g, score = st.best
    return decode(g, space), score, len(st.archive), info["search_wall_s"], shares


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--masked-nfe", type=int, default=7)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--search-samples", type=int, default=128)
    ap.add_argument("--final-samples", type=int, default=1000)
    ap.add_argument("--final-seed", type=int, default=20261201)
    ap.add_argument("--top-baselines", type=int, default=12,
                    help="baselines in the final evaluation: the best k by search score (seed-0 search noise)")
    ap.add_argument("--out", default="runs/bench-skip")
    ap.add_argument("--timing-only", action="store_true", help="only the wall-time cross-check of mask costs")
    ap.add_argument("--projection-only", action="store_true",
                    help="only the controlled check: two presets at --masked-nfe projected onto --budget by each "
                         "search.skip_order, teacher RMSE on --search-samples noises (seed --seeds[0])")
    ap.add_argument("--earliest", action="store_true",
                    help="also the mask arms with the earliest-steps-first projection (search.skip_order=earliest)")
    ap.add_argument("--small-checkpoint", default=None,
                    help="a smaller denoiser (same data and schedule): adds (b) T-Stitch with every solver and "
                         "(f) the joint search of solver, model column and masks")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model_path(a.checkpoint)
    sched = model.schedule
    if a.timing_only:
        shares = skip_setup(section("search", {"skip": True}), model)[2][0]
        rows = timing(model, shares)
        write_json_atomic(out / "timing.json", rows)
        for r in rows:
            print(r)
        return 0
    if a.projection_only:
        rows = projection_check(model, a.budget, a.masked_nfe, a.search_samples, a.seeds[0])
        write_json_atomic(out / "projection.json", rows)
        for r in rows:
            print(r)
        return 0
    settings = dict(strategy="predictor", objective="teacher_rmse", generations=a.generations,
                    children=a.children, search_samples=a.search_samples, batch_size=a.search_samples,
                    timesteps_only_generations=1, p_skip=0.1)
    pair, costs = None, [1.0]
    if a.small_checkpoint:   # index 0: the checkpoint's model (a plan's default model column), 1: the small one
        small = load_model_path(a.small_checkpoint)
        pair = denoisers.DenoiserSet([model, small], sched)
        costs = [1.0, call_flops(small) / call_flops(model)]
    arms = {**ARMS, **(EARLIEST if a.earliest else {}), **(PAIR if pair is not None else {})}
    store = out / "searches.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    evaluators: dict = {}

    def evaluator_of(seed: int):   # built when first needed (a teacher solve: minutes on a large network)
        if seed not in evaluators:
            evaluators[seed] = search_evaluator(section("search", {**settings, "seed": seed}), model, sched,
                                                log=None, denoisers=pair)
        return evaluators[seed]

    def first_score(plans):   # the first seed's search score: what the baselines and T-Stitch plans are chosen by
        return evaluator_of(a.seeds[0]).score(plans)

    shares = None
    for seed in a.seeds:
        for arm in arms:
            key = f"{arm}/seed{seed}"
            if key in done:
                continue
            nfe = a.budget if arm == "c_nodes_solver" else a.masked_nfe
            t0 = time.perf_counter()
            plan, score, evals, wall, sh = search_arm(model, sched, evaluator_of(seed), arm, seed, nfe, float(a.budget),
                                                      settings, out / key.replace("/", "-"), pair=pair, costs=costs)
            shares = sh if sh is not None and len(sh) == len(costs) else shares
            done[key] = {"plan": plan_to_dict(plan), "search_score": score, "evaluations": evals,
                         "search_wall_s": round(wall, 1), "wall_s": round(time.perf_counter() - t0, 1)}
            write_json_atomic(store, done)
            print(f"{key}: nfe {nfe}, search score {score:.5g}, {evals} evaluations, {wall:.0f} s", flush=True)
    if shares is None:
        shares = skip_setup(section("search", {"skip": True}), pair if pair is not None else model, costs=costs)[2]
    searched = {k: plan_from_dict(v["plan"], sched) for k, v in done.items()}
    picked = {"top": a.top_baselines, "seed": a.seeds[0], "samples": a.search_samples}   # what a choice depends on
    if pair is not None:
        searched.update(cached_plans(out / "tstitch.json", {"budget": a.budget, **picked}, sched,
                                     lambda: tstitch_plans(sched, a.budget, costs, first_score, a.top_baselines)))

    x_T = final_noise(model, sched, a.final_samples, a.final_seed)
    t0 = time.perf_counter()
    cached = out / f"final_ref_{a.final_samples}_{a.final_seed}.npz"
    if cached.exists():
        ref = np.load(cached)["ref"]
    else:
        ref = reference_endpoints(model, sched, x_T, 500)
        savez_atomic(cached, ref=ref)
    ref_wall = time.perf_counter() - t0
    results = {"budget": a.budget, "masked_nfe": a.masked_nfe, "seeds": a.seeds, "final_samples": a.final_samples,
               "final_seed": a.final_seed, "reference_wall_s": round(ref_wall, 1), "checkpoint": a.checkpoint,
               "small_checkpoint": a.small_checkpoint, "model_costs": costs,
               "unit_shares": [[float(v) for v in sh] for sh in shares], "searches": done, "comparisons": {}}
    memo = FinalMemo()   # the searched plans are sampled and bootstrapped once for both targets
    for target in (a.budget, 2 * a.budget):
        every = baseline_plans(target, sched)

        def best_baselines():
            scores = first_score([p for _, p in every])
            order = np.argsort(np.asarray(scores, np.float64), kind="stable")[:a.top_baselines]
            return {every[i][0]: every[i][1] for i in order}

        base = cached_plans(out / f"baselines_nfe{target}.json", picked, sched, best_baselines)
        results[f"baselines_nfe{target}"] = {"total": len(every), "final": len(base)}
        rows, info = final_evaluation(pair if pair is not None else model, sched, {**searched, **base},
                                      num_samples=a.final_samples, seed=a.final_seed, batch_size=500, final_data=(x_T, ref),
                                      focus=tuple(searched), memo=memo)
        cost = {r["solver"]: solvers.cost(({**searched, **base})[r["solver"]], costs, unit_shares=shares)
                for r in rows}
        results["comparisons"][f"vs_best_full_nfe{target}"] = {
            k: v["frechet_to_reference"] for k, v in info["comparisons"].items()}
        results[f"rows_nfe{target}"] = [{**r, "cost": round(cost[r["solver"]], 4)} for r in rows]
        write_json_atomic(out / "results.json", results)   # after each target: the NFE-B comparison first
    if pair is not None:   # (f) against T-Stitch with the best solver: (b)'s plans are its baselines here
        joint = {k: p for k, p in searched.items() if k.startswith("f_")}
        stitched = {k: p for k, p in searched.items() if k.startswith("b_")}
        _, info = final_evaluation(pair, sched, {**joint, **stitched}, num_samples=a.final_samples, seed=a.final_seed,
                                   batch_size=500, final_data=(x_T, ref), focus=tuple(joint), memo=memo)
        results["comparisons"]["vs_best_tstitch"] = {k: v["frechet_to_reference"]
                                                     for k, v in info["comparisons"].items()}
        write_json_atomic(out / "results.json", results)
    print_tables(results)
    return 0


def cached_plans(path: Path, key: dict, sched, make) -> dict:
    """``make()`` (name -> plan), stored in ``path`` with ``key`` (written atomically) and reused by a
    rerun with the same key: scoring hundreds of candidates on a large network takes most of an hour."""
    if path.exists():
        d = json.loads(path.read_text())
        if d.get("key") == key:
            return {k: plan_from_dict(v, sched) for k, v in d["plans"].items()}
    plans = make()
    write_json_atomic(path, {"key": key, "plans": {k: plan_to_dict(p) for k, p in plans.items()}})
    return plans


def tstitch_plans(sched, budget: int, costs, score, top: int) -> dict:
    """Arm (b): every preset x discretization x order x AFS at NFE budget+1 .. 2*budget with its
    first k steps on the small model (index 1), k the least that fits ``budget`` (cost in
    evaluations of model 0); the ``top`` best by search ``score``, named
    ``b_tstitch/nfe<n>/<preset>/k<k>``."""
    named = [(f"nfe{nfe}/{name}", p) for nfe in range(budget + 1, 2 * budget + 1)
             for name, p in baseline_plans(nfe, sched)]
    ranked = ranked_tstitch([p for _, p in named], budget, costs, 1, 0, score, least_prefix=True)
    return {f"b_tstitch/{named[i][0]}/k{k}": p for i, k, p in ranked[:top]}


def projection_check(model, budget: float, nfe: int, samples: int, seed: int, resamples: int = 200) -> list[dict]:
    """The same full-network plans (DPM-Solver++(2M) / logSNR and iPNDM(3) / time-quadratic at
    ``nfe``) projected onto ``budget`` by each skip order; teacher RMSE to the adaptive reference
    solve of ``samples`` noises (seed ``seed``), beside the full network at ``nfe`` and at
    ``round(budget)`` evaluations, each with its 95% paired-bootstrap interval (the same rows for
    every plan), and the paired ratios earliest / measured order and masked / full network at
    ``round(budget)``. Also the measured sensitivity table (``search.budget.unit_sensitivity``)."""
    import equinox as eqx
    import jax.numpy as jnp

    from stepwise import samplers, schedules
    from stepwise.denoisers.skipping import unit_shares
    from stepwise.search import protocol
    from stepwise.search.budget import skip_damage, skip_projection, unit_sensitivity

    sched = model.schedule
    sens = unit_sensitivity(model, sched, seed=seed)
    shares = [unit_shares(model)]
    x_T = final_noise(model, sched, samples, seed)
    ref = np.asarray(reference_endpoints(model, sched, x_T, 500), np.float64).reshape(samples, -1)
    idx = protocol.bootstrap_indices(samples, resamples, seed)

    def rmse(plan):   # (RMSE, its replicates on the shared rows idx)
        x = np.asarray(samplers.sample(model, sched, plan, jnp.asarray(x_T)), np.float64).reshape(samples, -1)
        row_mse = np.mean((x - ref) ** 2, axis=1)
        return float(np.sqrt(row_mse.mean())), np.sqrt(row_mse[idx].mean(axis=1))

    def cell(r):
        return {"rmse": str(protocol.interval(r[0], r[1], samples, nonnegative=True))}

    presets = {"dpm_solver_pp(2)/logsnr": lambda n: solvers.dpm_solver_pp(schedules.discretize("logsnr", n, sched), order=2),
               "ipndm(3)/time_quadratic": lambda n: solvers.ipndm(schedules.discretize("time_quadratic", n, sched), order=3)}
    rows = [{"samples": samples, "seed": seed, "resamples": resamples, "units": list(model.skip_units),
             "sensitivity_lam": [round(float(v), 3) for v in sens.lam],
             "sensitivity_rms": [[round(float(v), 4) for v in r] for r in sens.rms]}]
    for name, make in presets.items():
        full = eqx.tree_at(lambda p: p.skip, make(nfe), jnp.zeros((nfe, len(model.skip_units)), jnp.int32))
        at_budget = rmse(make(round(budget)))
        row = {"plan": name, f"full_nfe{nfe}": cell(rmse(make(nfe))), f"full_nfe{round(budget)}": cell(at_budget)}
        masked = {}
        for order, damage in (("earliest", None), ("sensitivity", skip_damage(sens, sched, full))):
            mask = skip_projection(full, [1.0], budget, shares, damage=damage)
            plan = eqx.tree_at(lambda p: p.skip, full, jnp.asarray(mask))
            masked[order] = rmse(plan)
            row[order] = {**cell(masked[order]), "cost": round(solvers.cost(plan, [1.0], unit_shares=shares), 4),
                          "skipped_per_step": mask.sum(1).tolist()}
        row["earliest / sensitivity"] = str(protocol.ratio(*masked["earliest"], *masked["sensitivity"]))
        row[f"sensitivity / full_nfe{round(budget)}"] = str(protocol.ratio(*masked["sensitivity"], *at_budget))
        rows.append(row)
    return rows


def timing(model, shares, batch: int = 256, repeats: int = 7, seed: int = 0) -> list[dict]:
    """Wall-time cross-check of the FLOP accounting: one jitted call with a TRACED mask (the sampler's
    case: nn.cond picks the branch at run time) for the full network and for random masks, calls
    interleaved, best of ``repeats``; wall fraction vs the FLOP fraction 1 - sum of skipped shares."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(seed), (batch,) + tuple(model.data_shape))
    t = jnp.full((batch,), 0.5)
    call = eqx.filter_jit(lambda m, mask, x, t: m.with_skip(mask)(x, t))
    units = len(model.skip_units)
    rng = np.random.default_rng(seed)
    masks = [np.zeros(units, np.int32)] + [(rng.random(units) < p).astype(np.int32) for p in (0.25, 0.5, 0.75)]
    best = [float("inf")] * len(masks)
    for m in masks:
        call(model, jnp.asarray(m), x, t).block_until_ready()
    for _ in range(repeats):
        for k, m in enumerate(masks):
            t0 = time.perf_counter()
            call(model, jnp.asarray(m), x, t).block_until_ready()
            best[k] = min(best[k], time.perf_counter() - t0)
    return [{"skipped_units": int(m.sum()), "flop_fraction": round(1 - float(np.dot(m, shares)), 4),
             "wall_fraction": round(best[k] / best[0], 4)} for k, m in enumerate(masks)]


def _iv(d: dict) -> str:
    return f"{d['value']:.4g} [{d['low']:.4g}, {d['high']:.4g}]"


def print_tables(results: dict) -> None:
    b = results["budget"]
    print(f"budget {b} full-model evaluations; final n={results['final_samples']} (seed {results['final_seed']}); "
          f"paired Fréchet distance to the reference solve, 95% paired-bootstrap intervals")
    rows = {r["solver"]: r for r in results[f"rows_nfe{b}"]}
    against = {f"vs_best_full_nfe{t}": f"best full-network NFE {t} baseline" for t in (b, 2 * b)}
    against["vs_best_tstitch"] = "best T-Stitch plan (b)"
    for key, what in against.items():
        if key not in results["comparisons"]:
            continue
        comps = results["comparisons"][key]
        print(f"\n| plan | NFE | cost | paired FD | {what} | its FD | ratio (baseline / plan) |")
        print("|---|---|---|---|---|---|---|")
        for k, c in sorted(comps.items()):
            r = rows[k]
            print(f"| {k} | {r['nfe']} | {r['cost']:.3f} | {_iv(c['plan'])} | {c['baseline_name']} | "
                  f"{_iv(c['baseline'])} | {c['ratio_text']} |")
    seen = {(r["solver"], r["nfe"]) for r in results[f"rows_nfe{b}"]}   # baseline names do not carry the NFE
    every = results[f"rows_nfe{b}"] + [r for r in results[f"rows_nfe{2 * b}"] if (r["solver"], r["nfe"]) not in seen]
    front = pareto_front([r["cost"] for r in every], [r["frechet_to_reference"] for r in every])
    print("\nPareto front of (cost, paired FD) over every plan evaluated (point values):")
    print("| plan | NFE | cost | paired FD |\n|---|---|---|---|")
    for i in front:
        r = every[i]
        print(f"| {r['solver']} | {r['nfe']} | {r['cost']:.3f} | {r['frechet_to_reference']:.4g} |")


if __name__ == "__main__":
    raise SystemExit(main())
