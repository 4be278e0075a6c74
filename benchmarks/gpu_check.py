"""One-shot accelerator check (run by benchmarks/gpu_check.sh; under 5 minutes on one H100/H200).

(a) sampler time / bare model time at NFE 10 for a CIFAR-sized Flax UNet (DDPM's CIFAR-10
    layout, about 35M parameters, random weights, batch 512);
(b) Inception-v3 FID features per second (random weights, batch 256, 32x32 inputs resized to 299);
(c) candidate plans evaluated per minute in a search generation (digits mixture, NFE 10, 2048
    paired noises per candidate, every candidate on the one compiled sampler).
Prints one JSON line per part and a summary; each part is timed after its compile.
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def timed(fn, repeats: int = 3) -> float:
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def part_a(batch: int = 512, nfe: int = 10) -> dict:
    from stepwise import samplers
    from stepwise import schedules
    from stepwise import solvers
    from stepwise.denoisers.unet import FlaxDenoiser, UNet, init_params

    net = UNet(out_channels=3, block_out_channels=(128, 256, 256, 256),
               down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
               layers_per_block=2, attention_head_dim=None, norm_num_groups=32)
    params = init_params(net, jax.random.key(0), (32, 32, 3))
    n_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
    sched = schedules.VPLinear()
    model = FlaxDenoiser(net, params, "eps", sched, (32, 32, 3))
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", nfe, sched), order=2)
    x_T = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))

    @jax.jit
    def bare(params, x, ts):
        m = FlaxDenoiser(net, params, "eps", sched, (32, 32, 3))
        return jax.lax.fori_loop(0, nfe, lambda i, x: m(x, ts[i]), x)

    t_bare = timed(lambda: bare(params, x_T, plan.ts))
    t_samp = timed(lambda: samplers.sample(model, sched, plan, x_T))
    return {"part": "a_unet_sampler_overhead", "params": n_params, "batch": batch, "nfe": nfe,
            "bare_s": t_bare, "sampler_s": t_samp, "ratio": t_samp / t_bare}


def part_b(batch: int = 256) -> dict:
    from stepwise import evaluation as ev

    params = ev.init_inception(jax.random.key(0))
    imgs = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3), minval=-1, maxval=1)
    f = jax.jit(lambda p, x: ev.inception_apply(p, x))
    t = timed(lambda: f(params, imgs))
    return {"part": "b_inception_features", "batch": batch, "seconds_per_batch": t,
            "features_per_s": batch / t}


def part_c(num_plans: int = 40, noises: int = 2048, nfe: int = 10) -> dict:
    from stepwise import denoisers
    from stepwise import samplers
    from stepwise import schedules
    from stepwise import solvers

    model = denoisers.digits_gmm(components=10)
    sched = schedules.VPLinear()
    rng = np.random.default_rng(0)
    x_T = jax.random.normal(jax.random.key(0), (noises, 64))
    ref = samplers.reference_solve(model, sched, x_T, rtol=1e-5)

    def random_plan():
        ts = np.array(schedules.discretize("logsnr", nfe, sched), dtype=np.float64)
        ts[1:-1] = np.sort(ts[0] + (ts[-1] - ts[0]) * rng.uniform(0.02, 0.98, nfe - 1))[::-1]
        orders = [int(rng.integers(1, min(i + 1, 3) + 1)) for i in range(nfe)]
        return solvers.make_plan(jnp.asarray(ts, jnp.float32), prediction=list(rng.integers(0, 2, nfe)),
                                 order=orders, variant=list(rng.choice([0, 1, 2, 3], nfe)))

    score = jax.jit(lambda x: jnp.sqrt(jnp.mean((x - ref) ** 2)))
    plans = [random_plan() for _ in range(num_plans)]
    jax.block_until_ready(score(samplers.sample(model, sched, plans[0], x_T)))  # compile
    t0 = time.perf_counter()
    [float(score(samplers.sample(model, sched, p, x_T))) for p in plans]
    bare = time.perf_counter() - t0
    # the search's real scoring path: the Evaluator (paired noise, cache, host-side objective)
    from stepwise.search.evaluator import Evaluator
    ev = Evaluator(model, sched, objective="teacher_rmse", num_samples=noises, batch_size=noises)
    ev.score([random_plan()])  # compile and warm up
    t0 = time.perf_counter()
    scores = ev.score(plans)
    dt = time.perf_counter() - t0
    return {"part": "c_search_candidates", "plans": num_plans, "noises": noises, "nfe": nfe,
            "evaluator_seconds": dt, "evaluator_plans_per_minute": 60 * num_plans / dt,
            "bare_sampler_plus_device_rmse_plans_per_minute": 60 * num_plans / bare,
            "best_rmse": min(scores), "traces": samplers.trace_count()}


def main() -> None:
    import os
    import sys

    out = open(sys.argv[1], "a") if len(sys.argv) > 1 else None
    dev = jax.devices()[0]

    def emit(r):
        print(json.dumps(r), flush=True)
        if out:
            out.write(json.dumps(r) + "\n")
            out.flush()
            os.fsync(out.fileno())

    emit({"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__})
    for part in (part_a, part_b, part_c):
        t0 = time.perf_counter()
        try:
            r = part()
        except Exception as e:  # report and go on: one broken part must not hide the others
            r = {"part": part.__name__, "error": f"{type(e).__name__}: {e}"[:500]}
        r["wall_s_incl_compile"] = time.perf_counter() - t0
        emit(r)


if __name__ == "__main__":
    main()
