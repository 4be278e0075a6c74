"""Benchmark: searched schedules vs every baseline on the exact digits mixture (issue 6).

For each NFE: run a search (predictor strategy by default), then evaluate the searched plan and
every preset x discretization (x order) on the SAME fresh noise (default 50k samples, a seed the
search never saw). Reported: Fréchet distance to the exact mixture moments, the excess over the
reference solve of that same noise, the ratio best-baseline-excess / searched-excess, the search
cost (true evaluations, wall time). ``--compare`` additionally runs the evolution strategy at
the given NFEs and reports how many true evaluations each strategy needed to reach the same
search score.

    python benchmarks/search_gmm.py --nfes 5 10 --compare 5 --out runs/bench-search
    python benchmarks/search_gmm.py --nfes 4 5 6 8 10                  # everything (long)

Each NFE's search runs in ``<out>/nfe<N>-<strategy>`` and resumes if interrupted. Results are
appended to ``<out>/results.json``; the Markdown tables are printed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def evaluations_to_reach(history: list[dict], score: float) -> int | None:
    for h in history:
        if h["best"] <= score:
            return int(h["evaluations"])
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfes", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    ap.add_argument("--strategy", default="predictor")
    ap.add_argument("--compare", type=int, nargs="*", default=[], help="NFEs where evolution also runs")
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--search-samples", type=int, default=2048)
    ap.add_argument("--final-samples", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-search")
    ap.add_argument("--report-only", action="store_true", help="no searches: tables from <out>/results.json")
    ap.add_argument("--set", nargs="*", default=[], help="extra search settings key=value (python literals)")
    a = ap.parse_args(argv)

    import ast

    import jax

    import denoisers
    import schedules
    from configs.search_defaults import search_defaults
    from search.evaluator import reference_endpoints
    from search.run import final_noise, run_search

    out = Path(os.path.abspath(a.out))
    out.mkdir(parents=True, exist_ok=True)
    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(10, schedule=sched)
    settings = search_defaults().to_dict()
    settings.update(generations=a.generations, search_samples=a.search_samples, seed=a.seed,
                    final_samples=a.final_samples)
    for kv in a.set:
        k, v = kv.split("=", 1)
        if k not in settings:
            raise SystemExit(f"--set: unknown search field {k!r}")
        settings[k] = ast.literal_eval(v) if not isinstance(settings[k], str) else v

    final_seed = a.seed + int(settings["final_seed_offset"])
    cache = out / f"final_noise_{a.final_samples}_{final_seed}.npz"
    if cache.exists():
        z = np.load(cache)
        x_T, ref = z["x_T"], z["ref"]
    else:
        t0 = time.perf_counter()
        x_T = final_noise(model, sched, a.final_samples, final_seed)
        ref = reference_endpoints(model, sched, x_T, 2500)
        np.savez(cache, x_T=x_T, ref=ref)
        print(f"reference solve of {a.final_samples} fresh noises: {time.perf_counter() - t0:.1f}s", flush=True)

    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    jobs = [(n, a.strategy) for n in a.nfes] + [(n, "evolution") for n in a.compare if a.strategy != "evolution"]
    for nfe, strategy in ([] if a.report_only else jobs):
        tag = f"nfe{nfe}-{strategy}"
        print(f"=== {tag}", flush=True)
        s = dict(settings, strategy=strategy)
        summ = run_search(model, sched, nfe, out / tag, s, model_info={"kind": "digits_gmm", "components": 10},
                          final_data=(x_T, ref), log=lambda m: print(m, flush=True))
        results[tag] = {k: summ[k] for k in ("nfe", "strategy", "evaluations", "search_wall_s", "search_score",
                                             "best_baseline", "best_baseline_excess", "searched_excess",
                                             "ratio_excess", "history", "mean_rank_correlation",
                                             "rank_correlations", "final")}
        results[tag]["searched_frechet"] = summ["final_table"][0]["frechet"]
        results[tag]["best_baseline_frechet"] = min(r["frechet"] for r in summ["final_table"][1:])
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    from search.evaluator import frechet_to_moments, run_plan
    from search.schedule_file import load_plan
    import solvers
    r64 = ref.reshape(ref.shape[0], -1).astype(np.float64)
    ref_stats = (r64.mean(0), np.cov(r64, rowvar=False))
    for tag, r in results.items():  # paired distance to the reference solve of the same 50k noises
        if "paired_searched" in r:
            continue
        label = r["best_baseline"]
        name, disc = label.split("/")
        opts = {}
        if "(order=" in name:
            name, o = name[:-1].split("(order=")
            opts["order"] = int(o)
        base = solvers.build_preset(name, r["nfe"], sched, disc, **opts)
        ours = load_plan(out / tag / "schedule.json")
        r["paired_searched"] = frechet_to_moments(run_plan(model, sched, ours, x_T, 2500), *ref_stats)
        r["paired_baseline"] = frechet_to_moments(run_plan(model, sched, base, x_T, 2500), *ref_stats)
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| NFE | best baseline | baseline excess | searched excess | ratio | searched FD | ref FD | "
          "paired FD baseline | paired FD searched | paired ratio | evaluations | search wall (s) | predictor Spearman |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tag, r in sorted(results.items(), key=lambda kv: (kv[1]["nfe"], kv[1]["strategy"])):
        rc = r.get("mean_rank_correlation")
        print(f"| {r['nfe']} ({r['strategy']}) | {r['best_baseline']} | {r['best_baseline_excess']:.5f} | "
              f"{r['searched_excess']:.5f} | {r['ratio_excess']:.2f} | {r['searched_frechet']:.5f} | "
              f"{r['final']['reference_frechet']:.5f} | {r['paired_baseline']:.6f} | {r['paired_searched']:.6f} | "
              f"{r['paired_baseline'] / r['paired_searched']:.1f} | {r['evaluations']} | {r['search_wall_s']:.0f} | "
              f"{'' if rc is None else f'{rc:.2f}'} |")
    for nfe in a.compare:
        p, e = results.get(f"nfe{nfe}-predictor"), results.get(f"nfe{nfe}-evolution")
        if not p or not e:
            continue
        target = max(p["search_score"], e["search_score"])
        print(f"\nNFE {nfe}: score {target:.6g} reached after {evaluations_to_reach(p['history'], target)} "
              f"evaluations (predictor) vs {evaluations_to_reach(e['history'], target)} (evolution); "
              f"final search scores {p['search_score']:.6g} / {e['search_score']:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
