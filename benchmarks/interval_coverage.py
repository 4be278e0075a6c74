"""Benchmark: do the protocol's 95% intervals cover the distances they claim to estimate?

Every comparison in RESULTS reports a Fréchet distance with a basic bootstrap interval and a ratio
of two paired distances with a log-scale basic interval (``stepwise.search.protocol``). This
script measures their coverage where the truth is known, with the protocol's own functions:

* ``gaussian`` — closed form. Reference endpoints ``x ~ N(0, diag(lam))`` (d dims, lam_i = 1/i),
  a plan's endpoints ``(1 - c) x + s u + m`` with ``u ~ N(0, I)`` independent of ``x``: a contraction
  ``c`` (a solver's blur, a deterministic function of the noise), an error ``s`` that the reference
  endpoint does not explain, and a mean shift ``m``. The population Fréchet distance of the plan to
  the reference distribution is ``d m^2 + sum_i (sqrt((1-c)^2 lam_i + s^2) - sqrt(lam_i))^2``.
  Plan B has half of plan A's error parameters; the ratio is A / B.
* ``mixture`` — the exact digits mixture, two real plans at one NFE; the "truth" is the same
  metric on ``--truth-samples`` noises (its own plug-in bias is ``n / truth_samples`` times smaller).

Per metric (``paired``: to the reference solve of the same noise; ``fixed``: to fixed moments, as
the held-out and exact-moment metrics are) and per ratio: coverage of the population value, the
share of intervals reaching 0 (reported as unresolved / lower bounds), the mean point / truth
(plug-in bias), and for the ratio the share of trials that claim more than the truth.

    python benchmarks/interval_coverage.py --trials 100 --out runs/bench-coverage
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from stepwise.evaluation.stats import frechet_between, sample_frechet
from stepwise.io import write_json_atomic
from stepwise.search import protocol


@dataclasses.dataclass(frozen=True)
class Error:
    """A plan's endpoint error model: contraction ``c``, unexplained spread ``s``, mean shift ``m``."""

    c: float = 0.0
    s: float = 0.0
    m: float = 0.0

    def half(self) -> "Error":
        return Error(self.c / 2, self.s / 2, self.m / 2)

    def apply(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        return (1.0 - self.c) * x + self.s * u + self.m

    def population_frechet(self, lam: np.ndarray) -> float:
        """Fréchet distance of N(m, (1-c)^2 lam + s^2) to N(0, lam), both diagonal."""
        return float(len(lam) * self.m ** 2 + np.sum((np.sqrt((1 - self.c) ** 2 * lam + self.s ** 2)
                                                      - np.sqrt(lam)) ** 2))


def measure(ref: np.ndarray, a: np.ndarray, b: np.ndarray, mean: np.ndarray, cov: np.ndarray,
            resamples: int, seed: int, extrapolation: protocol.Extrapolation | None = None) -> dict:
    """One trial: the protocol's estimates of both plans on both metrics, and of the ratio A / B;
    with ``extrapolation``, also the bias-extrapolated estimates ("paired FD_inf", "fixed FD_inf")."""
    n = len(ref)
    idx = protocol.bootstrap_indices(n, resamples, seed)
    pref = protocol.paired_reference(ref, idx)
    out = {}
    for metric, fn in (("paired", lambda x: protocol.paired_frechet(x, pref)),
                       ("fixed", lambda x: protocol.exact_frechet(x, mean, cov, idx))):
        (pa, ra), (pb, rb) = fn(a), fn(b)
        out[metric] = {"a": protocol.interval(pa, ra, n, nonnegative=True),
                       "b": protocol.interval(pb, rb, n, nonnegative=True),
                       "ratio": protocol.ratio(pa, ra, pb, rb)}
    if extrapolation is not None:
        for metric, dist in (("paired", lambda x: protocol.paired_distance(x, ref)),
                             ("fixed", lambda x: protocol.fixed_distance(x, mean, cov))):
            (pa, ra, ca), (pb, rb, cb) = (protocol.debiased(dist(x), idx, extrapolation) for x in (a, b))
            out[f"{metric} FD_inf"] = {"a": protocol.interval(pa, ra, n, nonnegative=True, center=ca),
                                       "b": protocol.interval(pb, rb, n, nonnegative=True, center=cb),
                                       "ratio": protocol.ratio(pa, ra, pb, rb, centers=(ca, cb))}
    return out


TOL = 1e-6   # relative: a degenerate interval (a ratio that is exact for every sample) covers its truth (to rounding)


def covers(low: float, high: float, truth: float) -> bool:
    return low * (1 - TOL) <= truth <= high * (1 + TOL)


def summarize(trials: list[dict], truth: dict) -> dict:
    """Coverage, unresolved share and bias of each interval over the trials."""
    rows = {}
    for metric in trials[0]:
        true = truth[metric.split()[0]]
        for plan in ("a", "b"):
            iv = [t[metric][plan] for t in trials]
            rows[f"{metric} {plan}"] = {
                "truth": true[plan],
                "coverage": float(np.mean([covers(i.low, i.high, true[plan]) for i in iv])),
                "reaches_zero": float(np.mean([i.low <= 0.0 for i in iv])),
                "point_over_truth": float(np.mean([i.value for i in iv]) / true[plan])
                if true[plan] > 0 else None}
        r = [t[metric]["ratio"] for t in trials]
        true_ratio = true["a"] / true["b"]
        resolved = [x for x in r if not x.lower_bound_only]
        rows[f"{metric} ratio"] = {
            "truth": true_ratio,
            "coverage": float(np.mean([covers(x.low, x.high, true_ratio) for x in resolved])) if resolved else None,
            "reaches_zero": float(np.mean([x.lower_bound_only for x in r])),
            "point_over_truth": float(np.median([x.value for x in resolved]) / true_ratio) if resolved else None,
            "overclaims": float(np.mean([x.low > true_ratio * (1 + TOL) for x in r]))}
    return rows


def gaussian_cells(d: int, ns: list[int], trials: int, resamples: int, seed: int,
                   extrapolation: protocol.Extrapolation | None = None) -> dict:
    lam = 1.0 / np.arange(1, d + 1)
    mean, cov = np.zeros(d), np.diag(lam)
    errors = {"contraction": Error(c=0.2), "unexplained": Error(s=0.2), "mixed": Error(c=0.1, s=0.1, m=0.03)}
    cells = {}
    for name, err in errors.items():
        truth = {k: {"a": err.population_frechet(lam), "b": err.half().population_frechet(lam)}
                 for k in ("paired", "fixed")}
        for n in ns:
            rng = np.random.default_rng([seed, n])
            res = []
            for k in range(trials):
                x = rng.standard_normal((n, d)) * np.sqrt(lam)
                u = rng.standard_normal((n, d))
                res.append(measure(x, err.apply(x, u), err.half().apply(x, u), mean, cov, resamples, seed + k,
                                   extrapolation))
            cells[f"gaussian d={d} {name} n={n}"] = summarize(res, truth)
    return cells


def mixture_cells(nfe: int, ns: list[int], trials: int, resamples: int, truth_samples: int, seed: int,
                  extrapolation: protocol.Extrapolation | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    from stepwise import denoisers, samplers, schedules, solvers

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(10, schedule=sched)
    plans = {"a": solvers.build_preset("dpm_solver_pp", nfe, sched, "logsnr", order=2),
             "b": solvers.build_preset("ipndm", nfe, sched, "time_quadratic")}
    x_T = jax.random.normal(jax.random.key(seed), (truth_samples, 64), jnp.float32)
    ref = np.asarray(samplers.reference_solve(model, sched, x_T), np.float64)
    ends = {k: np.asarray(samplers.sample(model, sched, p, x_T), np.float64) for k, p in plans.items()}
    mean, cov = model.moments()
    truth = {"paired": {k: frechet_between(e, ref) for k, e in ends.items()},
             "fixed": {k: sample_frechet(e, mean, cov) for k, e in ends.items()}}
    cells = {}
    for n in ns:
        rng = np.random.default_rng([seed, n])
        res = []
        for k in range(trials):
            rows = rng.choice(truth_samples, n, replace=False)
            res.append(measure(ref[rows], ends["a"][rows], ends["b"][rows], mean, cov, resamples, seed + k,
                               extrapolation))
        cells[f"mixture NFE {nfe} dpm++2M/logsnr vs ipndm/time-quadratic n={n}"] = summarize(res, truth)
    return cells


def print_table(cells: dict) -> None:
    print("| case | estimate | truth | coverage | reaches 0 / lower bound | point / truth | ratio overclaims |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
    for case, rows in cells.items():
        for what, r in rows.items():
            print(f"| {case} | {what} | {fmt(r['truth'])} | {fmt(r['coverage'])} | {fmt(r['reaches_zero'])} | "
                  f"{fmt(r['point_over_truth'])} | {fmt(r.get('overclaims'))} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--samples", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--truth-samples", type=int, default=20000)
    ap.add_argument("--parts", nargs="+", default=["gaussian", "mixture"], choices=["gaussian", "mixture"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extrapolate", type=float, nargs="*", default=None, metavar="FRACTION",
                    help="also measure the bias-extrapolated estimates (protocol.Extrapolation) on subsets "
                         "of these fractions of the samples, e.g. 0.5 1")
    ap.add_argument("--draws", type=int, default=4, help="random partitions per subset fraction below 1")
    ap.add_argument("--out", default="runs/bench-coverage")
    a = ap.parse_args(argv)
    if a.trials < 2:
        ap.error(f"--trials: {a.trials} is invalid; allowed: an integer >= 2")
    ex = None if a.extrapolate is None else protocol.Extrapolation(tuple(a.extrapolate or (0.5, 1.0)), a.draws, a.seed)
    t0 = time.time()
    cells = {}
    if "gaussian" in a.parts:
        cells.update(gaussian_cells(a.dim, a.samples, a.trials, a.resamples, a.seed, ex))
    if "mixture" in a.parts:
        cells.update(mixture_cells(a.nfe, a.samples, a.trials, a.resamples, a.truth_samples, a.seed, ex))
    print_table(cells)
    out = Path(a.out)
    write_json_atomic(out / "coverage.json", {"args": vars(a), "cells": cells, "wall_s": time.time() - t0})
    print(f"wrote {out / 'coverage.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
