"""Candidate evaluations per minute through the search's real ``Evaluator``, against what sampling
alone costs, same candidates, same run.

    python benchmarks/evaluator_throughput.py --nfes 5 10 --candidates 96 --samples 512 \
        [--baseline-executor FILE]

Candidates are random valid genomes of the default search space (fresh plans: no cache hits). A
plan's step count varies with its correctors, and the sampler compiles once per step count, as in a
search after its first generations: every step count of the timed candidates is compiled on every
path BEFORE timing (on other plans), so compile time is reported apart, not folded into the rates.

Paths: the per-candidate host path (sample, pull to host, NumPy/SciPy Fréchet; the default), the
on-device path (chunks of stacked plans under ``lax.map``, the objective on device, one score
vector per chunk; ``search.vmap=True``), the bare sampler on the same plans (``samplers.sample``,
no evaluator: the floor the evaluator can reach) and, with ``--baseline-executor``, the host path
with another executor module's ``sample`` patched in (before/after in one run, e.g. an older
commit's ``stepwise/samplers/executor.py`` from ``git show``).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from sampler_overhead import load_module   # the benchmarks' one loader of an executor file


def candidates(space, count: int, seed: int, decode, random_genome):
    """``count`` timed and as many warm-up plans with the same multiset of step counts."""
    rng = np.random.default_rng(seed)
    plans = [decode(random_genome(space, rng), space) for _ in range(2 * count)]
    return plans[:count], plans[count:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfes", type=int, nargs="+", default=[5, 10])
    p.add_argument("--candidates", type=int, default=96)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--objective", default="teacher_frechet")
    p.add_argument("--baseline-executor", default=None)
    a = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    import stepwise.samplers as samplers
    from stepwise import denoisers, schedules
    from stepwise.search.evaluator import Evaluator
    from stepwise.search.space import SearchSpace, decode, random_genome

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(schedule=sched)
    print(f"digits mixture (10 components, 64 dims), objective {a.objective}, {a.samples} noises, "
          f"{a.candidates} fresh candidates per path, chunk {a.chunk}, device {jax.devices()[0].device_kind}")
    new_sample = (samplers.sample, samplers.NonFiniteError)
    old = load_module(a.baseline_executor) if a.baseline_executor else None
    old_sample = (old.sample, old.NonFiniteError) if old is not None else None

    def use(fn):
        samplers.sample, samplers.NonFiniteError = fn
    for nfe in a.nfes:
        space = SearchSpace(nfe=nfe, schedule=sched)
        timed, warm = candidates(space, a.candidates, nfe, decode, random_genome)
        lengths = Counter(q.num_steps for q in timed)
        warm_by_len = {}
        for q in warm + timed:       # a warm-up plan of every timed step count (a timed one if needed)
            warm_by_len.setdefault(q.num_steps, q)
        make = lambda vmap: Evaluator(model, sched, objective=a.objective, num_samples=a.samples, seed=0,  # noqa: E731
                                      use_vmap=vmap, chunk=a.chunk)
        paths = {"host": (make(False), new_sample), "device": (make(True), new_sample)}
        if old_sample is not None:
            paths["host, baseline executor"] = (make(False), old_sample)
        x_T = None
        t0 = time.perf_counter()
        for name, (ev, fn) in paths.items():
            use(fn)
            ev.score(list(warm_by_len.values()))          # compile each step count on this path
            if name == "device":                          # full chunks of each length compile too
                for q in warm_by_len.values():
                    ev._score_on_device([q] * a.chunk)
            x_T = ev.x_T
        use(new_sample)
        xd = jnp.asarray(x_T)
        for q in warm_by_len.values():
            jax.block_until_ready(samplers.sample(model, sched, q, xd))
        compile_s = time.perf_counter() - t0
        rates = {}
        for name, (ev, fn) in paths.items():
            use(fn)
            t0 = time.perf_counter()
            ev.score(timed)
            rates[name] = 60.0 * len(timed) / (time.perf_counter() - t0)
        use(new_sample)
        t0 = time.perf_counter()
        for q in timed:
            jax.block_until_ready(samplers.sample(model, sched, q, xd))
        rates["bare sampler (no evaluator)"] = 60.0 * len(timed) / (time.perf_counter() - t0)
        sh, sd = np.array(paths["host"][0].score(timed)), np.array(paths["device"][0].score(timed))
        ok = (sh < 1e5) & (sd < 1e5)
        rel = float(np.max(np.abs(sh[ok] - sd[ok]) / np.abs(sh[ok]))) if ok.any() else float("nan")
        print(f"NFE {nfe} (step counts {dict(sorted(lengths.items()))}; warm-up compiles {compile_s:.0f} s): "
              + "; ".join(f"{k} {v:,.0f}/min" for k, v in rates.items()))
        print(f"  host / bare sampler {rates['host'] / rates['bare sampler (no evaluator)']:.2f}; "
              f"device / host {rates['device'] / rates['host']:.2f}"
              + (f"; host / host with baseline executor {rates['host'] / rates['host, baseline executor']:.2f}"
                 if old_sample is not None else "")
              + f"; largest relative host-device score difference {rel:.2g} over {int(ok.sum())} candidates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
