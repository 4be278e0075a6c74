"""Benchmark: does S3-style predictor screening reach a fixed target with fewer true evaluations?

Both arms (``predictor``, ``evolution``) run the same search space, generations and search noise
per seed, ``--seeds`` seeds each. The target is fixed independently of both arms: ``--fraction``
times the best baseline's search score on that seed's search noise (the initial population holds
every baseline, so both arms start from it). Reported per arm: true evaluations and search wall
time until the best score first reaches the target (None when it never does), median and
interquartile range over seeds.

    python benchmarks/predictor_vs_evolution.py --nfe 5 --seeds 0 1 2 3 4 --out runs/bench-s3
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stepwise import denoisers, schedules
from stepwise.cli.options import search_evaluator, search_space, search_strategy, section
from stepwise.io import write_json_atomic
from stepwise.search.run import initial_genomes, search_loop


def reach(history, target: float):
    """(evaluations, wall seconds) when the best score first reached ``target``, or (None, None)."""
    for h in history:
        if h["best"] <= target:
            return int(h["evaluations"]), float(h["wall_s"])
    return None, None


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(med), "q1": float(q1), "q3": float(q3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--fraction", type=float, default=0.5, help="target = fraction x best baseline search score")
    ap.add_argument("--out", default="runs/bench-s3")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(10, schedule=sched)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in a.seeds:
        for arm in ("predictor", "evolution"):
            tag = f"{arm}-seed{seed}"
            if tag in results:
                continue
            s = section("search", {"strategy": arm, "seed": seed, "generations": a.generations})
            space = search_space(s, a.nfe, sched)
            strategy = search_strategy(s, space)
            evaluator = search_evaluator(s, model, sched, log=None)
            baselines, initial = initial_genomes(a.nfe, space, seed)
            best_baseline = min(evaluator.score([p for _, p in baselines]))
            st, info = search_loop(strategy, evaluator, initial, seed, str(out / tag / "checkpoints"), log=lambda m: None)
            results[tag] = {"arm": arm, "seed": seed, "best_baseline_score": best_baseline,
                            "final_best": st.best[1], "evaluations": len(st.archive),
                            "search_wall_s": info["search_wall_s"], "history": list(st.history)}
            write_json_atomic(results_path, results)
            print(json.dumps({k: v for k, v in results[tag].items() if k != "history"}), flush=True)
    print(f"\nNFE {a.nfe}, target = {a.fraction} x best baseline search score (per seed), "
          f"{a.generations} generations, seeds {a.seeds}\n")
    print("| arm | reached target | evaluations to target: median [IQR] | wall s to target: median [IQR] | "
          "final best search score: median |")
    print("|---|---|---|---|---|")
    for arm in ("predictor", "evolution"):
        rows = [r for r in results.values() if r["arm"] == arm and r["seed"] in a.seeds]
        hits = [reach(r["history"], a.fraction * r["best_baseline_score"]) for r in rows]
        e, w = spread([h[0] for h in hits]), spread([h[1] for h in hits])
        fmt = lambda d: f"{d['median']:.0f} [{d['q1']:.0f}, {d['q3']:.0f}]" if d["n"] else "-"  # noqa: E731
        print(f"| {arm} | {e['n']} of {len(rows)} | {fmt(e)} | {fmt(w)} | "
              f"{np.median([r['final_best'] for r in rows]):.5g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
