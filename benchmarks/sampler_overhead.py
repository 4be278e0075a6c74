"""Sampler overhead: samplers.sample() at NFE 10 against 10 bare jitted denoiser calls.

Command:  python benchmarks/sampler_overhead.py [--batch 4096] [--repeats 20]  (bare and sampler calls interleaved)
Prints the ratio (sampler time / bare model time) measured in one run; with ``--variants`` also
the bare loop with one piece of the sampler added (the eps computation; a ``lax.switch``).

Before/after in the same run: ``--baseline-executor FILE`` also times the ``sample`` of another
executor module file, e.g. an older commit's:
    git show 171b127:stepwise/samplers/executor.py > /tmp/executor_171b127.py
    python benchmarks/sampler_overhead.py --baseline-executor /tmp/executor_171b127.py
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from stepwise import denoisers
from stepwise import samplers
from stepwise import schedules
from stepwise import solvers


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Median wall time (s) of each function, timed in alternation (A B A B ...) after one warm-up
    call each, so slow drifts of a shared CPU hit every function alike; also each repeat's ratio
    to the first function."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile + warm up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def load_module(path: str):
    """Import a Python file as a module under a private name (it may import stepwise itself)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_baseline_executor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def programs(batch: int, nfe: int, components: int):
    """(model, schedule, plan, x_T, {"bare": f, "sampler": g}): the digits mixture, DPM-Solver++(2M)
    on logSNR nodes, and two zero-argument calls: ``nfe`` bare jitted model calls (a chained loop, so
    none is optimised away) and ``samplers.sample`` of the plan."""
    model = denoisers.digits_gmm(components=components)
    sched = schedules.VPLinear()
    x_T = jax.random.normal(jax.random.key(0), (batch,) + model.data_shape)
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", nfe, sched), order=2)

    @jax.jit
    def bare(model, x, ts):
        return jax.lax.fori_loop(0, nfe, lambda i, x: model(x, ts[i]), x)

    return model, sched, plan, x_T, {"bare": lambda: bare(model, x_T, plan.ts),
                                     "sampler": lambda: samplers.sample(model, sched, plan, x_T)}


def variants(model, nfe: int, x_T, ts) -> dict:
    """Bare loops with one piece of the sampler added each: the model's (x0, eps) as the sampler
    evaluates it (``denoisers.guidance.x0_eps``), and the model call inside a ``lax.switch``."""
    from stepwise.denoisers.guidance import x0_eps

    @jax.jit
    def with_eps(model, x, ts):
        def body(i, x):
            x0, eps = x0_eps(model, x, ts[i])
            return 0.5 * (x0 + eps)
        return jax.lax.fori_loop(0, nfe, body, x)

    @jax.jit
    def in_switch(model, x, ts):
        def body(i, x):
            return jax.lax.switch(jnp.minimum(i, 0) + 1, [lambda x: 2.0 * x, lambda x: model(x, ts[i])], x)
        return jax.lax.fori_loop(0, nfe, body, x)

    return {"bare + eps": lambda: with_eps(model, x_T, ts), "bare in a switch": lambda: in_switch(model, x_T, ts)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--variants", action="store_true",
                    help="also time the bare loop with the eps computation added, and inside a lax.switch")
    ap.add_argument("--baseline-executor", default=None,
                    help="an executor module file whose sample() is timed too (before/after in one run)")
    args = ap.parse_args(argv)

    model, sched, plan, x_T, fns = programs(args.batch, args.nfe, args.components)
    if args.variants:
        fns.update(variants(model, args.nfe, x_T, plan.ts))
    if args.baseline_executor:
        old = load_module(args.baseline_executor)
        fns["baseline sampler"] = lambda: old.sample(model, sched, plan, x_T)
    times = interleaved_times(fns, args.repeats)
    t_bare, t_samp = float(np.median(times["bare"])), float(np.median(times["sampler"]))
    ratios = times["sampler"] / times["bare"]
    lo, hi = np.quantile(ratios, [0.25, 0.75])
    print(f"device={jax.devices()[0].device_kind} batch={args.batch} nfe={args.nfe} "
          f"components={args.components} repeats={args.repeats} (interleaved)")
    print(f"bare model x{args.nfe}: {t_bare * 1e3:.2f} ms   sampler: {t_samp * 1e3:.2f} ms   "
          f"ratio sampler/bare = {t_samp / t_bare:.3f}   per-repeat ratio median {np.median(ratios):.3f} "
          f"IQR [{lo:.3f}, {hi:.3f}]")
    for k in fns:
        if k.startswith("bare "):
            r = times[k] / times["bare"]
            print(f"{k}: {np.median(times[k]) * 1e3:.2f} ms   per-repeat ratio to bare median {np.median(r):.3f} "
                  f"IQR [{np.quantile(r, 0.25):.3f}, {np.quantile(r, 0.75):.3f}]")
    if args.baseline_executor:
        old_r = times["baseline sampler"] / times["bare"]
        print(f"baseline sampler ({args.baseline_executor}): {np.median(times['baseline sampler']) * 1e3:.2f} ms   "
              f"per-repeat ratio to bare median {np.median(old_r):.3f} IQR "
              f"[{np.quantile(old_r, 0.25):.3f}, {np.quantile(old_r, 0.75):.3f}]   "
              f"this sampler / baseline median {np.median(times['sampler'] / times['baseline sampler']):.3f}")


if __name__ == "__main__":
    main()
