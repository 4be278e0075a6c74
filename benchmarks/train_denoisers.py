"""Train the small and large UNet presets on 16x16 digits and time them; compare forward costs.

Command:  python benchmarks/train_denoisers.py --out /work/trained [--presets small,large --small-steps 8000 ...]

Prints, per preset: parameters, forward time at batch 256, training steps, wall time and final
held-out loss; the large/small forward-time ratio; and, when the sampler package is available, the
pixel-space Frechet distance of 2000 NFE-20 samples (DPM-Solver++(2M)) to held-out digits.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.train_defaults import train_defaults
from denoisers.data import load_digits
from denoisers.train import export_params, load_denoiser, train
from denoisers.unet import forward_seconds


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    import scipy.linalg

    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb)
    return float(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2.0 * np.real(root)))


def fid_nfe20(model, held_out, n=2000, seed=0):
    try:
        import samplers
        import solvers
        from schedules import discretize
    except ImportError:
        return None
    try:
        ts = discretize("logsnr", 20, model.schedule)
        plan = solvers.dpm_solver_pp(ts, order=2)
        x_T = jax.random.normal(jax.random.key(seed), (n,) + model.data_shape)
        x = samplers.sample(model, model.schedule, plan, x_T)
    except Exception as e:  # the sampler's API may still be moving
        print(f"FID skipped: {type(e).__name__}: {e}")
        return None
    return frechet(np.clip(np.asarray(x), -1, 1), held_out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/work/trained")
    ap.add_argument("--small-steps", type=int, default=8000)
    ap.add_argument("--large-steps", type=int, default=6000)
    ap.add_argument("--small-batch", type=int, default=128)
    ap.add_argument("--large-batch", type=int, default=128)
    ap.add_argument("--presets", default="small,large")
    ap.add_argument("--fid-samples", type=int, default=2000)
    args = ap.parse_args()

    x, y = load_digits(16)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    held_out, train_x = x[perm[:300]], x[perm[300:]]
    results = {"device": str(jax.devices()[0].device_kind),
               "fd_train_vs_held_out": frechet(train_x[:2000], held_out)}   # the noise floor
    for preset in args.presets.split(","):
        c = train_defaults()
        c.preset = preset
        c.steps = args.small_steps if preset == "small" else args.large_steps
        c.batch_size = args.small_batch if preset == "small" else args.large_batch
        c.checkpoint_every = max(c.steps // 4, 1)
        c.warmup_steps = min(200, c.steps // 10)
        wd = os.path.join(args.out, f"digits16_unet_{preset}")
        t0 = time.perf_counter()
        r = train(train_x, c, wd)
        wall = time.perf_counter() - t0
        model = load_denoiser(wd)
        export_params(model, wd)       # orbax-free copy of the weights
        fwd = forward_seconds(model)
        fid = fid_nfe20(model, held_out, n=args.fid_samples)
        results[preset] = dict(params=int(sum(p.size for p in jax.tree.leaves(model.params))),
                               forward_s_b256=fwd, steps=r.step, batch=c.batch_size,
                               train_s_steps=r.seconds, train_s_total=wall, eval_loss=r.eval_loss,
                               cost=model.cost, fd_nfe20=fid, workdir=wd)
        print(json.dumps({preset: results[preset]}), flush=True)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}))
    if "small" in results and "large" in results:
        print("forward time ratio large/small at batch 256:",
              results["large"]["forward_s_b256"] / results["small"]["forward_s_b256"])
    name = "benchmark_results_" + args.presets.replace(",", "_") + ".json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
