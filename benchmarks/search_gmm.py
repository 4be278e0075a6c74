"""Benchmark: searched plans vs every baseline on the exact digits mixture, by the fair protocol.

For each NFE, ``--seeds`` independent searches (search seed s: its own search noise, proposals and
predictor), then ONE final evaluation on fresh noise (``--final-seed``, never used while
searching) of every searched plan and every baseline: each preset x discretization x order x
{analytic first step off, on}, plus GITS-node versions of the 8 best by search score. The best baseline is chosen on that noise per metric and named.
Reported per NFE: the paired Fréchet distance to the reference solve of the same noise (headline)
and the excess Fréchet distance over that solve, each with a 95% paired-bootstrap interval, and
the ratio best-baseline / searched per seed, with its interval, or "below the noise floor
(ratio >= L)" where the searched plan's distance is not resolved from zero; then the median and
range of the ratio over seeds.

    python benchmarks/search_gmm.py --nfes 4 5 6 8 10 --seeds 0 1 2 --out runs/bench-fair

On a trained network instead of the mixture (no exact moments: paired distance to its own
reference solve, plus the domain-feature Fréchet distance to held-out test images that neither
training nor the search saw, ``--feature-net``; the model must record ``train.split=train``):

    python benchmarks/search_gmm.py --checkpoint runs/bench-train/digits_unet_small_heldout \
        --feature-net runs/bench-train/features_digits16 --nfes 5 --search-samples 512 \
        --final-samples 1000 --final-top-baselines 24 --batch-size 500 --out runs/bench-fair-unet

Searches resume from ``<out>/nfe<N>-seed<S>/checkpoints``; finished NFEs are kept in
``<out>/results.json`` (written atomically), so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stepwise import denoisers, schedules
from stepwise.cli import runtime
from stepwise.cli.options import search_evaluator, search_space, search_strategy, section
from stepwise.io import savez_atomic, write_json_atomic
from stepwise.search import learned, protocol
from stepwise.search.evaluator import baseline_plans, reference_endpoints
from stepwise.search.run import final_evaluation, final_noise, initial_genomes, search_loop
from stepwise.search.space import decode


def search_one(model, sched, nfe: int, seed: int, settings: dict, workdir: Path, data=None):
    """One search (resumable); returns (best plan, its search score, evaluations, wall seconds).
    ``data``: the training images' feature moments (objective ``data_frechet``)."""
    s = section("search", {**settings, "seed": seed})
    space = search_space(s, nfe, sched)
    strategy = search_strategy(s, space)
    evaluator = search_evaluator(s, model, sched, log=None, data=data)
    _, initial = initial_genomes(nfe, space, seed)
    st, info = search_loop(strategy, evaluator, initial, seed, str(workdir / "checkpoints"), log=lambda m: None)
    g, score = st.best
    return decode(g, space), score, len(st.archive), info["search_wall_s"], evaluator.seed


def load_model(a, judge: str = "", judge_field: str = "--feature-net"):
    """(model, held-out target or None): the digits mixture, or the ``--checkpoint`` network with
    the held-out test images in the feature space of ``judge`` (default ``--feature-net``; refused
    unless the model left them out of training). ``judge_field`` names that net's flag in errors."""
    judge, field = (judge, judge_field) if judge else (a.feature_net, "--feature-net")
    if not a.checkpoint:
        if judge:
            raise SystemExit(f"{field} needs --checkpoint (the mixture is scored exactly)")
        return denoisers.digits_gmm(10, schedule=schedules.VPLinear()), None
    held_out = runtime.held_out_data(judge, {"--checkpoint": a.checkpoint}, field) if judge else None
    return runtime.load_model_path(a.checkpoint), held_out


def final_data(out: Path, model, sched, num_samples: int, seed: int, batch_size: int):
    """(x_T, reference endpoints) of the final evaluation's fresh noise, solved once and kept in
    ``<out>/final_<n>_<seed>.npz`` for every later (resumed or extended) run."""
    cache = out / f"final_{num_samples}_{seed}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["x_T"], z["ref"]
    t0 = time.perf_counter()
    print(f"reference solve of {num_samples} fresh noises (kept in {cache} for later runs) ...", flush=True)
    x_T = final_noise(model, sched, num_samples, seed)
    ref = reference_endpoints(model, sched, x_T, batch_size)
    savez_atomic(cache, x_T=x_T, ref=ref)      # a run killed while writing leaves no half file to load
    print(f"reference solve of {num_samples} fresh noises: {time.perf_counter() - t0:.0f}s", flush=True)
    return x_T, ref


def comparison_baselines(model, sched, nfe: int, evaluator, top: int = 0, also=()):
    """(baselines, tuned) of a final comparison: every preset baseline at ``nfe`` (or the ``top``
    best by search score, joined by the ``top`` best by the score of each evaluator in ``also``, e.g.
    another objective's, so a plan searched on it meets the baselines that objective ranks best), and
    GITS-node versions of the 8 best by ``evaluator``'s score."""
    baselines = baseline_plans(nfe, sched)
    scores = evaluator.score([p for _, p in baselines])
    tuned = learned.gits_baselines(model, sched, baselines, scores, 8, seed=evaluator.seed, samples=256)
    if top:
        keep = [int(i) for i in np.argsort(scores, kind="stable")[:top]]
        for ev in also:
            extra = np.argsort(ev.score([p for _, p in baselines]), kind="stable")[:top]
            keep += [int(i) for i in extra if int(i) not in keep]
        baselines = [baselines[i] for i in keep]
    return baselines, tuned


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfes", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategy", default="predictor")
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--search-samples", type=int, default=1024)
    ap.add_argument("--final-samples", type=int, default=10000)
    ap.add_argument("--final-seed", type=int, default=20261201, help="fresh: not used while developing")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", default="runs/bench-fair")
    ap.add_argument("--checkpoint", default="", help="a `stepwise train` run to search on instead of the mixture")
    ap.add_argument("--feature-net", default="", help="with --checkpoint: score on held-out test images too")
    ap.add_argument("--batch-size", type=int, default=2500, help="sampler chunk of the final evaluation")
    ap.add_argument("--final-top-baselines", type=int, default=0,
                    help="0: every baseline in the final evaluation; k: the k best by search score (+ GITS)")
    a = ap.parse_args(argv)

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, held_out = load_model(a)
    sched = model.schedule
    settings = {"strategy": a.strategy, "generations": a.generations, "search_samples": a.search_samples,
                "batch_size": min(a.search_samples, 2048)}
    if set(a.seeds) & {a.final_seed}:
        raise SystemExit("--final-seed must differ from every search seed")
    x_T, ref = final_data(out, model, sched, a.final_samples, a.final_seed, a.batch_size)

    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for nfe in a.nfes:
        if str(nfe) in results:
            continue
        searched, runs = {}, []
        for seed in a.seeds:
            plan, score, evals, wall, noise_seed = search_one(model, sched, nfe, seed, settings,
                                                              out / f"nfe{nfe}-seed{seed}")
            searched[f"searched(seed={seed})"] = plan
            runs.append({"seed": seed, "search_noise_seed": noise_seed, "search_score": score,
                         "evaluations": evals, "search_wall_s": round(wall, 1)})
            print(f"nfe {nfe} seed {seed}: search score {score:.6g}, {evals} evaluations, {wall:.0f}s", flush=True)
        ev = search_evaluator(section("search", {**settings, "seed": a.seeds[0]}), model, sched, log=None)
        baselines, tuned = comparison_baselines(model, sched, nfe, ev, a.final_top_baselines)
        baselines += tuned
        rows, info = final_evaluation(model, sched, {**searched, **dict(baselines)}, num_samples=len(x_T),
                                      seed=a.final_seed, batch_size=a.batch_size, final_data=(x_T, ref),
                                      focus=tuple(searched), resamples=a.resamples, held_out=held_out)
        for r, name in zip(runs, searched):
            r["comparisons"] = info["comparisons"][name]
        head = info["headline"]
        ratios = [r["comparisons"][head]["ratio"] for r in runs]
        results[str(nfe)] = {
            "nfe": nfe, "final_samples": len(x_T), "final_seed": a.final_seed, "baselines": len(baselines),
            "headline": head, "bootstrap": info["bootstrap"], "reference_frechet": info.get("reference_frechet"),
            "model": a.checkpoint or "digits_gmm(10)", "held_out": held_out and held_out.label,
            "runs": runs,
            "ratio_over_seeds": protocol.summarize_seeds([q["value"] for q in ratios if not q["lower_bound_only"]]),
            "seeds_below_noise_floor": sum(q["lower_bound_only"] for q in ratios),
            "ratio_inf_over_seeds": protocol.summarize_seeds(
                [q["value"] for r in runs if (q := r["comparisons"][head].get("ratio_inf")) and not q["lower_bound_only"]]),
            "table": rows,
        }
        if "reference_heldout" in info:   # the reference solve itself by held-out FD (search.run.final_evaluation)
            results[str(nfe)]["reference_heldout"] = info["reference_heldout"]
        write_json_atomic(results_path, results)
        print(f"nfe {nfe}: " + "; ".join(r["comparisons"][head]["ratio_text"] for r in runs), flush=True)
    print_tables(results)
    return 0


def print_reference_heldout(results: dict) -> None:
    """Per NFE, the reference solve itself against the best baseline by held-out FD (when measured),
    in the judge's feature space and in each extra judge's (``reference_by_judge``)."""
    refs = [(r["nfe"], c) for _, r in sorted(results.items(), key=lambda kv: int(kv[0]))
            for c in ([r["reference_heldout"]] if "reference_heldout" in r else [])
            + [r["reference_by_judge"][k] for k in sorted(r.get("reference_by_judge", {}))]]
    if refs:
        print("\nThe reference solve itself (the ODE solution the paired metrics aim at) by held-out FD, same rows:")
        for nfe, c in refs:
            print(f"- NFE {nfe}: {protocol.describe(c, 'reference')}")


def _iv(d: dict) -> str:
    return f"{d['value']:.4g} [{d['low']:.4g}, {d['high']:.4g}]"


def print_tables(results: dict) -> None:
    print("\n| NFE | metric | best baseline (final noise) | baseline | searched, per seed | ratio per seed "
          "(95% CI) | ratio median [range] over seeds |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(results, key=int):
        r = results[key]
        first = r["runs"][0]["comparisons"]
        rows = [(m, "") for m in ("frechet_to_reference", "excess", "heldout_fd", "rmse_to_reference") if m in first]
        rows += [(m, "_inf") for m, _ in rows if "ratio_inf" in first[m]]   # the paired metric only
        for metric, suffix in rows:
            cs = [run["comparisons"][metric] for run in r["runs"]]
            base = {c["baseline_name"] for c in cs}
            vals = [c["ratio" + suffix]["value"] for c in cs if not c["ratio" + suffix]["lower_bound_only"]]
            summ = protocol.summarize_seeds(vals)
            agg = (f"{summ['median']:.3g} [{summ['min']:.3g}, {summ['max']:.3g}]" if summ["n_seeds"] == len(cs)
                   else f"{len(cs) - summ['n_seeds']} of {len(cs)} seeds below the noise floor")
            label = metric + (" (bias-extrapolated)" if suffix else "")
            print(f"| {r['nfe']} | {label} | {', '.join(sorted(base))} | {_iv(cs[0]['baseline' + suffix])} | "
                  + " / ".join(_iv(c["plan" + suffix]) for c in cs) + " | "
                  + " / ".join(c["ratio" + suffix + "_text"] for c in cs) + f" | {agg} |")
    print_reference_heldout(results)
    any_r = next(iter(results.values()), None)
    if any_r:
        print(f"\nn = {any_r['final_samples']} fresh noises (seed {any_r['final_seed']}), "
              f"{any_r['bootstrap']['resamples']} paired bootstrap resamples; search seeds "
              f"{[run['seed'] for run in any_r['runs']]}; baselines per NFE "
              + ", ".join(f"{r['nfe']}: {r['baselines']}" for r in sorted(results.values(), key=lambda r: r["nfe"]))
              + "; model "
              f"{any_r.get('model', 'digits_gmm(10)')}" + (f"; held-out: {any_r['held_out']}" if any_r.get("held_out") else "") + ".")


if __name__ == "__main__":
    raise SystemExit(main())
