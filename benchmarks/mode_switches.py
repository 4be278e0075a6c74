"""Where a few-step sampler's paired error comes from on the exact digits mixture: mode switches.

For each plan of a ``benchmarks/learned_gmm.py`` results directory (its ``plans/`` and the final
noise with its reference solve, ``final_<n>_<seed>.npz``) and for the best preset baseline by paired
RMSE on the same noise (every preset x discretization x order x analytic first step), every noise is
labelled by whether the plan's endpoint lies in another mixture component than the reference
solve's endpoint of the same noise (``GaussianMixture.component``: argmax_k p(k | x)). Printed per
plan (basic bootstrap intervals, the final evaluation's resamples):

* ``switched``: the fraction of noises whose endpoint changed component;
* ``share``: those noises' share of the plan's total squared error (``protocol.error_split``);
* ``rmse rest``: the paired RMSE of the other noises;
* ``both stay``: the paired RMSE ratio best-baseline / plan on the noises where NEITHER switched,
  with its paired-bootstrap interval: how much better the plan is where the two are comparable.

A paired RMSE dominated by a few switched noises moves little when a plan improves everywhere else,
while a Fréchet distance of Gaussian fits barely sees switches between components of similar
weight: this is the measurement behind the two metrics' disagreement in RESULTS_search.md.

    python benchmarks/mode_switches.py --out runs/bench-learned-corr --nfes 3 8 10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stepwise import denoisers, schedules
from stepwise.search import protocol
from stepwise.search.evaluator import baseline_plans, run_plan
from stepwise.search.schedule_file import load_plan


def best_preset_by_rmse(model, sched, nfe: int, x_T, ref, batch: int) -> tuple[str, np.ndarray]:
    """(name, endpoints) of the preset baseline with the smallest paired RMSE on this noise."""
    best = None
    for name, plan in baseline_plans(nfe, sched):
        y = run_plan(model, sched, plan, x_T, batch)
        r = protocol.paired_rmse(y, ref)[0]
        if best is None or r < best[0]:
            best = (r, name, y)
    return best[1], best[2]


def row(name: str, y, ref, switched, idx) -> str:
    s = protocol.error_split(y, ref, switched, idx)
    rmse, reps = protocol.paired_rmse(y, ref, idx)
    return (f"| {name} | {protocol.interval(rmse, reps, len(y), nonnegative=True)} | {s.fraction} | {s.share} "
            f"| {s.rmse_rest} |")


def both_stay(y, y_base, ref, stay, resamples: int, seed: int) -> str:
    """Paired RMSE ratio baseline / plan on the noises where neither changed component."""
    rows = np.flatnonzero(stay)
    idx = protocol.bootstrap_indices(len(rows), resamples, seed)
    p = protocol.paired_rmse(y[rows], ref[rows], idx)
    b = protocol.paired_rmse(y_base[rows], ref[rows], idx)
    return f"{protocol.ratio(b[0], b[1], p[0], p[1])} (n = {len(rows)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="a benchmarks/learned_gmm.py results directory (digits mixture)")
    ap.add_argument("--nfes", type=int, nargs="*", help="default: every NFE of its results.json")
    ap.add_argument("--batch-size", type=int, default=2500)
    a = ap.parse_args(argv)
    out = Path(a.out)
    results = json.loads((out / "results.json").read_text())
    model = denoisers.digits_gmm(10, schedule=schedules.VPLinear())
    sched = model.schedule
    for nfe in a.nfes or sorted(int(k) for k in results):
        res = results.get(str(nfe))
        if res is None:
            raise SystemExit(f"--nfes: {nfe} is not in {out / 'results.json'}; allowed: {sorted(map(int, results))}")
        if res.get("model") != "digits_gmm(10)":
            raise SystemExit(f"{out}: NFE {nfe} is on {res.get('model')}; mode switches need the exact mixture")
        with np.load(out / f"final_{res['final_samples']}_{res['final_seed']}.npz") as z:
            x_T, ref = z["x_T"], z["ref"]
        boot = res["bootstrap"]
        idx = protocol.bootstrap_indices(len(x_T), boot["resamples"], boot["seed"])
        c_ref = model.component(ref)
        base_name, y_base = best_preset_by_rmse(model, sched, nfe, x_T, ref, a.batch_size)
        base_switched = model.component(y_base) != c_ref
        print(f"\nNFE {nfe}: n = {len(x_T)} (seed {res['final_seed']}), {boot['resamples']} resamples")
        print("| plan | paired RMSE | switched | share of squared error | RMSE of the rest | both stay: ratio |")
        print("|---|---|---|---|---|---|")
        print(row(f"best preset by RMSE: {base_name}", y_base, ref, base_switched, idx) + " — |")
        for arm, rec in res["arms"].items():
            for run in rec["runs"]:
                plan = load_plan(out / "plans" / f"nfe{nfe}-{arm}-{run['seed']}.json", sched)
                y = run_plan(model, sched, plan, x_T, a.batch_size)
                switched = model.component(y) != c_ref
                stay = both_stay(y, y_base, ref, ~(switched | base_switched), boot["resamples"], boot["seed"])
                print(row(f"{arm}, seed {run['seed']}", y, ref, switched, idx) + f" {stay} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
