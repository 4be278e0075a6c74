"""Train the `small` and `large` UNet presets under a wall-time budget and measure them.

Commands (2-core CPU: each model gets --max-minutes of wall time, setup and compilation included;
the step counts are what fits in 10 minutes there; RESULTS_denoisers.md has the output):

    python benchmarks/train_denoisers.py --dataset digits --max-minutes 10 --steps small=2500,large=1000 \
        --batch small=64,large=32 --fd-samples 1000 --out runs/bench-train
    python benchmarks/train_denoisers.py --dataset fashion --max-minutes 10 --steps small=800,large=280 \
        --batch small=64,large=32 --fd-samples 1000 --held-out 1000 --out runs/bench-train
    python benchmarks/train_denoisers.py --dataset digits --eval-only --fd-samples 1000 --out runs/bench-train

Each preset trains from its config file (configs/{digits,fashion}_unet_{small,large}.py, i.e. what
`stepwise train --config ...` runs) with ``train.steps`` / ``train.batch_size`` from the flags, so
the cosine learning-rate schedule ends inside the budget. Prints per preset: parameters, XLA FLOPs
and measured forward time per batch of 256, steps reached, wall time, held-out loss, and the
pixel-space Fréchet distance (evaluation.stats) of --fd-samples NFE-20 DPM-Solver++(2M) samples
(log-SNR nodes) to the held-out images, plain and with every data prediction clipped to [-1, 1] (DDPM's
``clip_denoised``), next to the noise floor (as many training images vs the
same held-out images).
Held out: digits, 300 of the 1797 (fixed permutation, seed 0), never trained on; Fashion-MNIST,
the test split.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import jax
import numpy as np

import samplers
import solvers
from denoisers import Thresholding
from denoisers.data import load_dataset, load_fashion_mnist
from denoisers.train import export_params, load_denoiser, train
from denoisers.unet import forward_flops, forward_seconds
from evaluation.atomic import write_text_atomic
from evaluation.stats import frechet_distance, gaussian_stats
from schedules import discretize


def pixel_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of two image sets, in pixel space."""
    sa, sb = gaussian_stats(a.reshape(len(a), -1)), gaussian_stats(b.reshape(len(b), -1))
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


def sample_nfe20(model, n: int, batch: int, seed: int = 0, clip_x0: bool = False) -> np.ndarray:
    """``n`` samples by DPM-Solver++(2M), 20 log-SNR steps, clipped to the data range [-1, 1];
    ``clip_x0`` also clips every data prediction to [-1, 1] (static thresholding, DDPM's
    ``clip_denoised`` / diffusers' ``clip_sample``)."""
    plan = solvers.dpm_solver_pp(discretize("logsnr", 20, model.schedule), order=2)
    threshold = Thresholding("static", max_value=1.0) if clip_x0 else None
    out = []
    for i, start in enumerate(range(0, n, batch)):
        x_T = jax.random.normal(jax.random.key(seed + i), (min(batch, n - start),) + model.data_shape)
        out.append(np.asarray(samplers.sample(model, model.schedule, plan, x_T, threshold=threshold)))
    return np.clip(np.concatenate(out), -1.0, 1.0)


def sample_quality(model, held_out: np.ndarray, n: int, have: dict | None = None) -> dict:
    """Pixel Fréchet distances of ``n`` NFE-20 samples to ``held_out``, plain and with x0 clipping
    (those not already in ``have``), and the seconds each sampling pass took."""
    out = {}
    for key, clip in (("fd_nfe20", False), ("fd_nfe20_clip_x0", True)):
        if key not in (have or {}):
            t0 = time.perf_counter()
            out[key] = pixel_frechet(sample_nfe20(model, n, batch=250, clip_x0=clip), held_out)
            out[key + "_sampling_s"] = round(time.perf_counter() - t0, 1)
    return out


def overridden(config, sets: dict):
    """``config`` with ``config.train.<key> = value`` for each override (types as in the config)."""
    for k, v in sets.items():
        old = config.train[k]
        config.train[k] = type(old)(v) if not isinstance(old, bool) else v.lower() in ("1", "true")
    return config


def split(dataset: str, held_out: int, sets: dict):
    """(config module prefix, training images, training labels, held-out images)."""
    if dataset == "digits":
        cfg = overridden(importlib.import_module("configs.digits_unet_small").get_config(), sets).train
        x, y = load_dataset(cfg)
        perm = np.random.default_rng(0).permutation(len(x))
        return "digits", x[perm[held_out:]], y[perm[held_out:]], x[perm[:held_out]]
    cfg = overridden(importlib.import_module("configs.fashion_unet_small").get_config(), sets).train
    x, y = load_dataset(cfg)
    test, _ = load_fashion_mnist("test", cfg.data_path or None, pad_to_32=int(cfg.image_size) == 32)
    return "fashion", x, y, test[:held_out, ..., None]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["digits", "fashion"], default="digits")
    ap.add_argument("--out", default="runs/bench-train")
    ap.add_argument("--presets", default="small,large")
    ap.add_argument("--max-minutes", type=float, default=12.0)
    ap.add_argument("--steps", default="", help="per preset, e.g. small=3000,large=600 (default: the config's)")
    ap.add_argument("--batch", default="", help="per preset, e.g. small=64,large=32 (default: the config's)")
    ap.add_argument("--fd-samples", type=int, default=1000)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="train-config overrides for every preset, e.g. image_size=28 num_classes=0")
    ap.add_argument("--tag", default="", help="suffix of the run directories and the results file")
    ap.add_argument("--eval-only", action="store_true",
                    help="re-measure the sample quality of the models a previous run trained (kept timings)")
    args = ap.parse_args(argv)
    per = {k: dict(kv.split("=") for kv in getattr(args, k).split(",") if kv) for k in ("steps", "batch")}

    sets = dict(kv.split("=", 1) for kv in args.set)
    prefix, train_x, train_y, held_out = split(args.dataset, args.held_out, sets)
    out_json = os.path.join(args.out, f"train_{args.dataset}{args.tag}.json")
    if args.eval_only:
        results = json.load(open(out_json))
        for preset in args.presets.split(","):
            results[preset].update(sample_quality(load_denoiser(results[preset]["workdir"], which="latest"),
                                                  held_out, args.fd_samples, have=results[preset]))
            print(json.dumps({preset: results[preset]}), flush=True)
        write_text_atomic(out_json, json.dumps(results, indent=1) + "\n")
        return
    n_floor = min(args.fd_samples, len(train_x))
    floor_idx = np.random.default_rng(1).choice(len(train_x), n_floor, replace=False)
    results = {"device": str(jax.devices()[0].device_kind), "dataset": args.dataset, "overrides": sets,
               "max_minutes": args.max_minutes, "fd_samples": args.fd_samples,
               "held_out": len(held_out),
               "fd_floor_train_vs_held_out": pixel_frechet(train_x[floor_idx], held_out)}
    print(json.dumps(results), flush=True)
    for preset in args.presets.split(","):
        config = overridden(importlib.import_module(f"configs.{prefix}_unet_{preset}").get_config(), sets)
        c = config.train
        c.steps = int(per["steps"].get(preset, c.steps))
        c.batch_size = int(per["batch"].get(preset, c.batch_size))
        c.max_minutes = args.max_minutes
        c.warmup_steps = min(int(c.warmup_steps), c.steps // 10)
        c.checkpoint_every = max(c.steps // 4, 1)
        wd = os.path.join(args.out, f"{prefix}_unet_{preset}{args.tag}")
        t0 = time.perf_counter()
        r = train(train_x, c, wd, labels=train_y if int(c.num_classes) else None, schedule=config.schedule)
        wall = time.perf_counter() - t0
        model = load_denoiser(wd, which="latest")
        export_params(model, wd)       # orbax-free copy of the weights
        results[preset] = dict(params=model.num_params, flops_per_sample=forward_flops(model),
                               forward_s_b256=forward_seconds(model), steps=r.step, steps_planned=c.steps,
                               batch=c.batch_size, train_s_steps=round(r.seconds, 1),
                               train_s_total=round(wall, 1), eval_loss=r.eval_loss,
                               workdir=wd, **sample_quality(model, held_out, args.fd_samples))
        print(json.dumps({preset: results[preset]}), flush=True)
    if "small" in results and "large" in results:
        for k in ("flops_per_sample", "forward_s_b256"):
            results[f"ratio_{k}"] = results["large"][k] / results["small"][k]
            print(f"large/small {k}: {results[f'ratio_{k}']:.2f}")
    write_text_atomic(out_json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
