"""Sampler overhead: samplers.sample() at NFE 10 against 10 bare jitted denoiser calls.

Command:  python benchmarks/sampler_overhead.py [--batch 4096] [--repeats 20]
Prints the ratio (sampler time / bare model time) measured in one run; target <= 1.10.
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


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--components", type=int, default=10)
    args = ap.parse_args(argv)

    model = denoisers.digits_gmm(components=args.components)
    sched = schedules.VPLinear()
    x_T = jax.random.normal(jax.random.key(0), (args.batch,) + model.data_shape)
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", args.nfe, sched), order=2)
    ts = plan.ts

    @jax.jit
    def bare(model, x, ts):
        # the same NFE model calls with nothing else: a chained loop so none is optimised away
        def body(i, x):
            return model(x, ts[i])
        return jax.lax.fori_loop(0, args.nfe, body, x)

    t_bare = best_time(lambda: bare(model, x_T, ts), args.repeats)
    t_samp = best_time(lambda: samplers.sample(model, sched, plan, x_T), args.repeats)
    print(f"device={jax.devices()[0].device_kind} batch={args.batch} nfe={args.nfe} "
          f"components={args.components}")
    print(f"bare model x{args.nfe}: {t_bare * 1e3:.2f} ms   sampler: {t_samp * 1e3:.2f} ms   "
          f"ratio sampler/bare = {t_samp / t_bare:.3f}")


if __name__ == "__main__":
    main()
