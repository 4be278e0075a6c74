"""Train the `small` and `large` UNet presets under a wall-time budget and measure them.

Commands (2-core CPU: each model gets --max-minutes of wall time, setup and compilation included;
the step counts are what fits there; RESULTS_denoisers.md has the output):

    python benchmarks/train_denoisers.py --dataset digits --max-minutes 10 --steps small=2500,large=1000 \
        --batch small=64,large=32 --fd-samples 1000 --out runs/bench-train
    python benchmarks/train_denoisers.py --dataset fashion --max-minutes 15 --steps small=6000,large=2200 \
        --batch small=64,large=32 --fd-samples 1000 --held-out 1000 --feature-steps 3000 \
        --set network_overrides.patch_size=2 prediction=v loss_weighting=uniform --tag _p2v --out runs/bench-train
    python benchmarks/train_denoisers.py --dataset digits --eval-only --fd-samples 1000 --out runs/bench-train

Each preset trains from its config file (configs/{digits,fashion}_unet_{small,large}.py, i.e. what
`stepwise train --config ...` runs) with ``train.steps`` / ``train.batch_size`` from the flags, so
the cosine learning-rate schedule ends inside the budget. Prints per preset: parameters, XLA FLOPs
and measured forward time per batch of 256, steps reached, wall time, held-out loss, and the
pixel-space Fréchet distance (evaluation.stats) of --fd-samples NFE-20 DPM-Solver++(2M) samples
(log-SNR nodes) to the held-out images, plain and with every data prediction clipped to [-1, 1] (DDPM's
``clip_denoised``), next to the noise floor (as many training images vs the
same held-out images).
Held out: digits, the first --held-out images of stepwise.data's seeded test split (359 of the
1797; the models train on its train split, ``train.split=train``), never trained on; Fashion-MNIST,
the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stepwise import samplers
from stepwise import solvers
from stepwise.denoisers import Thresholding
from stepwise.denoisers.base import to_x0_eps
from stepwise.cli.defaults import config_from_file
from stepwise.cli.options import train_options
from stepwise.data import load_digits, load_fashion_mnist
from stepwise.training import export_params, load_denoiser, load_training_data, train
from stepwise.denoisers.unet import forward_flops, forward_seconds
from stepwise.io import write_bytes_atomic, write_text_atomic
from stepwise.evaluation.features import (classifier_accuracy, extract_features, feature_net_extractor,
                                 load_feature_net, save_feature_net, train_feature_net)
from stepwise.evaluation.report import grid_png
from stepwise.evaluation import frechet_between
from stepwise.schedules import discretize

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def sample_nfe20(model, n: int, batch: int, seed: int = 0, clip_x0: bool = False,
                 conditional: bool = False) -> np.ndarray:
    """``n`` samples by DPM-Solver++(2M), 20 log-SNR steps, clipped to the data range [-1, 1];
    ``clip_x0`` also clips every data prediction to [-1, 1] (static thresholding, DDPM's
    ``clip_denoised`` / diffusers' ``clip_sample``); ``conditional`` draws sample i for class
    ``i % num_classes`` (guidance scale 1: the conditional model alone), else the null class."""
    plan = solvers.dpm_solver_pp(discretize("logsnr", 20, model.schedule), order=2)
    threshold = Thresholding("static", max_value=1.0) if clip_x0 else None
    out = []
    for i, start in enumerate(range(0, n, batch)):
        b = min(batch, n - start)
        x_T = jax.random.normal(jax.random.key(seed + i), (b,) + model.data_shape)
        cond = jnp.asarray(class_labels(n)[start:start + b]) if conditional else None
        out.append(np.asarray(samplers.sample(model, model.schedule, plan, x_T, cond=cond, threshold=threshold)))
    return np.clip(np.concatenate(out), -1.0, 1.0)


def class_labels(n: int, num_classes: int = 10) -> np.ndarray:
    """The labels ``conditional`` sampling asks for: 0, 1, ..., 9, 0, 1, ..."""
    return np.arange(n) % num_classes


def sample_quality(model, held_out: np.ndarray, n: int, have: dict | None = None, feature_net=None,
                   grid_dir: str | None = None) -> dict:
    """Fréchet distances of ``n`` NFE-20 samples to ``held_out`` (those not already in ``have``), and
    the seconds each sampling pass took: pixel space (``fd_*``) and, with ``feature_net`` (a trained
    domain classifier), its feature space (``domain_fd_*``) plus the classifier's accuracy on
    class-conditional samples (``class_accuracy_*``: the fraction it labels as the class asked for).
    Modes: the unconditional model (null class), with x0 clipping, and the class-conditional model.
    With ``grid_dir``, the first 100 samples of each mode go to ``<grid_dir>/samples_<mode>.png``."""
    modes = [("fd_nfe20", False, False), ("fd_nfe20_clip_x0", True, False)]
    if getattr(model, "num_classes", 0):
        modes.append(("fd_nfe20_cond", False, True))
    held_feats = None if feature_net is None else domain_features(feature_net, held_out)
    out = {}
    for key, clip, cond in modes:
        if key in (have or {}) and (feature_net is None or "domain_" + key in have):
            continue
        t0 = time.perf_counter()
        x = sample_nfe20(model, n, batch=250, clip_x0=clip, conditional=cond)
        out[key + "_sampling_s"] = round(time.perf_counter() - t0, 1)
        out[key] = frechet_between(x, held_out)
        if feature_net is not None:
            out["domain_" + key] = frechet_between(domain_features(feature_net, x), held_feats)
            if cond:
                out["class_accuracy_nfe20_cond"] = classifier_accuracy(feature_net, x, class_labels(n))
        if grid_dir:
            write_bytes_atomic(os.path.join(grid_dir, f"samples_{key}.png"), grid_png(x[:100], ncols=10, scale=2))
    return out


def x0_error_by_noise(model, images: np.ndarray, labels: np.ndarray | None,
                      ts=(0.2, 0.4, 0.6, 0.8, 0.95, 1.0)) -> dict:
    """Mean squared error of the model's data prediction x0_hat(x_t, t) on ``images`` (fixed noise) at
    each time in ``ts``, next to that of the best constant predictor (the images' mean image): where
    the model is worse than the constant, sampling from pure noise starts from garbage."""
    x0 = jnp.asarray(images[:256])
    cond = None if labels is None or not getattr(model, "num_classes", 0) else jnp.asarray(labels[:256])
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    out = {"constant": float(jnp.mean((x0 - x0.mean(0)) ** 2))}
    for t in ts:
        tt = jnp.full((x0.shape[0],), t)
        shp = (-1,) + (1,) * (x0.ndim - 1)
        xt = model.schedule.alpha(tt).reshape(shp) * x0 + model.schedule.sigma(tt).reshape(shp) * eps
        x0_hat, _ = to_x0_eps(model(xt, tt, cond), model.prediction, xt, tt, model.schedule)
        out[f"t={t}"] = float(jnp.mean((x0_hat - x0) ** 2))
    return out


def domain_features(net, images: np.ndarray) -> np.ndarray:
    """Penultimate-layer features of the domain classifier ``net`` (evaluation.features)."""
    return np.asarray(extract_features(feature_net_extractor(net), images[..., 0]))


def domain_net(out: str, name: str, images: np.ndarray, labels: np.ndarray, held_out: np.ndarray,
               held_labels: np.ndarray, steps: int) -> tuple:
    """The domain classifier for FD in its feature space: loaded from ``<out>/features_<name>`` or
    trained there on the training images (``stepwise train-features`` does the same); returns
    (net, its accuracy on the held-out images)."""
    path = os.path.join(out, f"features_{name}")
    try:
        net = load_feature_net(path)
    except FileNotFoundError:
        net = train_feature_net(images[..., 0], labels, key=jax.random.key(0), steps=steps)
        save_feature_net(path, net)
    return net, classifier_accuracy(net, held_out[..., 0], held_labels)


def overridden(config, sets: dict):
    """``config`` with ``config.train.<key> = value`` for each override; a dotted key sets a nested
    field (``network_overrides.patch_size=2``). Values take the existing field's type, or are parsed
    as JSON (numbers, lists) for fields the config does not have yet."""
    for key, v in sets.items():
        *path, k = key.split(".")
        node = config.train
        for part in path:
            node = node[part]
        if k in node:
            old = node[k]
            node[k] = v.lower() in ("1", "true") if isinstance(old, bool) else type(old)(v)
        else:
            try:
                node[k] = json.loads(v)
            except json.JSONDecodeError:
                node[k] = v
    return config


def split(dataset: str, held_out: int, sets: dict):
    """(config module prefix, training images, training labels, held-out images, held-out labels)."""
    if dataset == "digits":   # stepwise.data's seeded split: train on "train", hold out (part of) "test"
        cfg = overridden(config_from_file(CONFIGS / "digits_unet_small.py"), sets).train
        x, y = load_training_data(train_options(cfg))
        ho, ho_y = load_digits(int(cfg.image_size), split="test")
        return "digits", x, y, ho[:held_out], ho_y[:held_out]
    cfg = overridden(config_from_file(CONFIGS / "fashion_unet_small.py"), sets).train
    x, y = load_training_data(train_options(cfg))
    test, test_y = load_fashion_mnist("test", cfg.data_path or None, pad_to_32=int(cfg.image_size) == 32)
    return "fashion", x, y, test[:held_out, ..., None], test_y[:held_out]


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
    ap.add_argument("--feature-steps", type=int, default=0,
                    help="> 0: also measure in the feature space of a domain classifier trained for this many "
                         "steps on the training images (cached in <out>/features_<data><size>)")
    ap.add_argument("--eval-only", action="store_true",
                    help="re-measure the sample quality of the models a previous run trained (kept timings)")
    args = ap.parse_args(argv)
    per = {k: dict(kv.split("=") for kv in getattr(args, k).split(",") if kv) for k in ("steps", "batch")}

    sets = dict(kv.split("=", 1) for kv in args.set)
    if args.dataset == "digits":
        sets.setdefault("split", "train")   # the test split stays held out (stepwise.data.split_indices)
    prefix, train_x, train_y, held_out, held_y = split(args.dataset, args.held_out, sets)
    out_json = os.path.join(args.out, f"train_{args.dataset}{args.tag}.json")
    net = None
    if args.feature_steps:
        net, net_accuracy = domain_net(args.out, f"{prefix}{train_x.shape[1]}", train_x, train_y,
                                       held_out, held_y, args.feature_steps)
    n_floor = min(args.fd_samples, len(train_x))
    floor_x = train_x[np.random.default_rng(1).choice(len(train_x), n_floor, replace=False)]
    floors = {"fd_floor_train_vs_held_out": frechet_between(floor_x, held_out)}
    if net is not None:
        floors.update(domain_classifier_accuracy_held_out=net_accuracy, domain_fd_floor_train_vs_held_out=
                      frechet_between(domain_features(net, floor_x), domain_features(net, held_out)))
    if args.eval_only:
        results = json.load(open(out_json))
        results.update(floors)
        for preset in args.presets.split(","):
            wd = results[preset]["workdir"]
            model = load_denoiser(wd, which="latest")
            results[preset].update(sample_quality(model, held_out, args.fd_samples, have=results[preset],
                                                  feature_net=net, grid_dir=wd),
                                   x0_mse_by_t=x0_error_by_noise(model, held_out, held_y))
            print(json.dumps({preset: results[preset]}), flush=True)
        write_text_atomic(out_json, json.dumps(results, indent=1) + "\n")
        return
    results = {"device": str(jax.devices()[0].device_kind), "dataset": args.dataset, "overrides": sets,
               "max_minutes": args.max_minutes, "fd_samples": args.fd_samples,
               "held_out": len(held_out), **floors}
    print(json.dumps(results), flush=True)
    for preset in args.presets.split(","):
        config = overridden(config_from_file(CONFIGS / f"{prefix}_unet_{preset}.py"), sets)
        c = config.train
        c.steps = int(per["steps"].get(preset, c.steps))
        c.batch_size = int(per["batch"].get(preset, c.batch_size))
        c.max_minutes = args.max_minutes
        c.warmup_steps = min(int(c.warmup_steps), c.steps // 10)
        c.checkpoint_every = max(c.steps // 4, 1)
        wd = os.path.join(args.out, f"{prefix}_unet_{preset}{args.tag}")
        t0 = time.perf_counter()
        r = train(train_x, train_options(c), wd, labels=train_y if int(c.num_classes) else None, schedule=config.schedule)
        wall = time.perf_counter() - t0
        model = load_denoiser(wd, which="latest")
        export_params(model, wd)       # orbax-free copy of the weights
        results[preset] = dict(params=model.num_params, flops_per_sample=forward_flops(model),
                               forward_s_b256=forward_seconds(model), steps=r.step, steps_planned=c.steps,
                               batch=c.batch_size, train_s_steps=round(r.seconds, 1),
                               train_s_total=round(wall, 1), eval_loss=r.eval_loss,
                               workdir=wd, x0_mse_by_t=x0_error_by_noise(model, held_out, held_y),
                               **sample_quality(model, held_out, args.fd_samples, feature_net=net, grid_dir=wd))
        print(json.dumps({preset: results[preset]}), flush=True)
        write_text_atomic(out_json, json.dumps(results, indent=1) + "\n")   # kept if a later preset fails
    if "small" in results and "large" in results:
        for k in ("flops_per_sample", "forward_s_b256"):
            results[f"ratio_{k}"] = results["large"][k] / results["small"][k]
            print(f"large/small {k}: {results[f'ratio_{k}']:.2f}")
    write_text_atomic(out_json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
