"""`stepwise evaluate`: distances of generated samples to a reference, written to evaluation.json.

samples.npz layout (written by `stepwise sample`):
  samples     (n, ...) float in [-1, 1] -- flat vectors (n, D) or images (n, H, W[, C])
  exact_mean  (D,)    optional: true mean of the target distribution (data space)
  exact_cov   (D, D)  optional: true covariance of the target distribution
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from stepwise.cli.commands.stats import add_feature_args, fit_to_extractor, make_extractor
from stepwise.data import DATASETS, load_dataset, resize_square
from stepwise.io import write_json_atomic

EXAMPLE = """examples:
  stepwise evaluate --samples runs/x/samples.npz --exact            # exact moments in the file
  stepwise evaluate --samples runs/x/samples.npz --data digits --fid-inf
  stepwise evaluate --samples runs/x/samples.npz --ref ref.npz --features digits \\
      --feature-net runs/features/digits --out runs/x

samples.npz holds `samples` (n, ...) in [-1, 1]; --exact also needs `exact_mean` (D,) and
`exact_cov` (D, D), the true moments of the target in data space (identity features).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="Fréchet distance / KID of samples to a reference; writes evaluation.json",
        description="Score generated samples against reference statistics (--ref), the exact "
                    "moments stored with the samples (--exact), or a bundled data set (--data). "
                    "Every number is reported with its sample size n.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help="samples.npz with key `samples`")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--ref", help="reference statistics .npz (pytorch-fid / EDM / ADM keys)")
    ref.add_argument("--exact", action="store_true",
                     help="use exact_mean / exact_cov from the samples file (identity features)")
    ref.add_argument("--data", choices=DATASETS, help="compare to a bundled data set")
    p.add_argument("--split", default=None, help="split of --data (digits: all | train | test, default all; "
                   "fashion_mnist: train | test, default train)")
    p.add_argument("--out", default=None,
                   help="directory for evaluation.json (default: the samples file's directory; the sampler's own metrics.json is never overwritten)")
    p.add_argument("--fid-inf", action="store_true",
                   help="also report FID_inf (Chong & Forsyth 2020; 1/n extrapolation)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="R",
                   help="bootstrap the Fréchet distance with R resamples (interval in output)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets with --data")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size")
    p.add_argument("--seed", type=int, default=0, help="seed of KID / FID_inf / bootstrap draws")
    add_feature_args(p)
    return p


def _load_samples(path: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--samples: file not found: {path!r}")
    from stepwise.io import open_npz
    with open_npz(path, "--samples") as data:
        if "samples" not in data.files:
            raise ValueError(f"--samples: {path!r} has no key 'samples' (keys: {sorted(data.files)})")
        raw = data["samples"]
        if raw.dtype == np.uint8:        # images in [0, 255], scaled like `stepwise stats` does
            samples = raw.astype(np.float32) / 127.5 - 1.0
        elif raw.dtype.kind == "f":
            samples = np.asarray(raw, np.float32)
        else:
            raise ValueError(f"--samples: {path!r}['samples'] has dtype {raw.dtype}; allowed: a float array or "
                             "uint8 images")
        mean = np.asarray(data["exact_mean"]) if "exact_mean" in data.files else None
        cov = np.asarray(data["exact_cov"]) if "exact_cov" in data.files else None
    if samples.ndim < 2 or len(samples) < 2:
        raise ValueError(f"--samples: 'samples' must be (n, ...) with n >= 2, got {samples.shape}")
    return samples, mean, cov


def evaluation_path(out_dir: str, doc: dict) -> str:
    """Where an evaluation is written without losing another: the file that already holds the same
    (samples, reference, features, seed) is replaced (a rerun), otherwise the first free name of
    evaluation.json, evaluation.1.json, ..."""
    k = 0
    while True:
        path = os.path.join(out_dir, "evaluation.json" if k == 0 else f"evaluation.{k}.json")
        if not os.path.exists(path):
            return path
        try:
            old = json.loads(open(path).read())
        except (OSError, ValueError):
            old = {}
        if all(old.get(f) == doc.get(f) for f in ("samples", "reference", "features", "seed")):
            return path
        k += 1


def evaluate(args: argparse.Namespace) -> dict:
    """Compute the metrics selected by ``args``; returns the metrics.json document."""
    import jax

    from stepwise import evaluation as ev

    samples, exact_mean, exact_cov = _load_samples(args.samples)
    key = jax.random.key(args.seed)
    metrics: list = []
    ref_desc: str
    if args.exact:
        if exact_mean is None or exact_cov is None:
            raise ValueError(f"--exact: {args.samples!r} needs keys 'exact_mean' and 'exact_cov'")
        if args.features != "identity":
            raise ValueError("--exact compares in data space: use --features identity")
        feats = samples.reshape(len(samples), -1)
        ref = ev.GaussianStats(exact_mean.reshape(-1), exact_cov, None)
        if ref.dim != feats.shape[1]:
            raise ValueError(f"--exact: exact_mean has {ref.dim} values, samples have "
                             f"{feats.shape[1]} per example")
        ref_feats, ref_desc = None, "exact moments"
        metrics.append(ev.frechet_to_moments(feats, ref.mu, ref.sigma))
    else:
        extractor = make_extractor(args, tuple(samples.shape[1:]))
        feats = ev.extract_features(extractor, fit_to_extractor(samples, extractor),
                                    batch_size=args.batch_size)
        if args.ref:
            ref = ev.load_stats(args.ref)
            info = ev.stats_file_info(args.ref)
            if "feature" in info and info["feature"] != args.features:
                raise ValueError(f"--ref: {args.ref!r} holds {info['feature']!r} statistics, "
                                 f"but --features is {args.features!r}")
            ref_feats, ref_desc = None, f"stats file {args.ref}"
        else:
            data = load_dataset(args.data, args.split)[0]
            if extractor.name != "domain_cnn" and samples.ndim in (2, 3):
                # square grayscale samples of another size (e.g. digits upsampled to 16x16):
                # compare to the data set resized the same way
                flat = int(np.prod(samples.shape[1:]))
                side = int(round(np.sqrt(flat)))
                if side * side == flat and data.shape[1] != side:
                    data = resize_square(data, side)
            ref_feats = ev.extract_features(extractor, fit_to_extractor(data, extractor),
                                            batch_size=args.batch_size)
            ref = ev.gaussian_stats(ref_feats)
            ref_desc = f"data set {args.data} ({args.split or 'default split'})"
        if ref.dim != feats.shape[1]:
            raise ValueError(f"reference has dimension {ref.dim}, sample features have "
                             f"{feats.shape[1]}: use the same --features for both")
        metrics.append(ev.fid_from_stats(ev.gaussian_stats(feats), ref, name="fid"))
        if ref_feats is not None:
            metrics.append(ev.kid(feats, ref_feats, key=jax.random.fold_in(key, 1),
                                  num_subsets=args.kid_subsets, subset_size=args.kid_subset_size))
    if args.fid_inf:
        metrics.append(ev.fid_infinity(feats, ref, key=jax.random.fold_in(key, 2)))
    if args.bootstrap:
        m = ev.fid_bootstrap(feats, ref, key=jax.random.fold_in(key, 3),
                             num_resamples=args.bootstrap)
        metrics.append(ev.Metric(metrics[0].name + "_bootstrap", m.value, m.n, m.n_ref, m.std,
                                 m.low, m.high, m.extra))
    return {"samples": os.path.abspath(args.samples), "features": args.features,
            "reference": ref_desc, "seed": args.seed,
            "metrics": [m.to_dict() for m in metrics]}


def run(args: argparse.Namespace) -> int:
    from stepwise import evaluation as ev

    doc = evaluate(args)
    rows = [{k: m.get(k) for k in ("name", "value", "std", "low", "high", "n", "n_ref")}
            for m in doc["metrics"]]
    print(f"samples: {doc['samples']}\nreference: {doc['reference']}  features: {doc['features']}")
    print(ev.format_table_markdown(rows))
    out_dir = os.path.abspath(args.out or os.path.dirname(os.path.abspath(args.samples)))
    path = evaluation_path(out_dir, doc)
    write_json_atomic(path, doc)
    print(f"wrote {path}")
    return 0
