"""`stepwise stats`: reference feature statistics (mu, sigma, n) of a data set, as .npz.

Also holds the ``--data`` / ``--features`` argument helpers that `evaluate` and `train-features` share.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from stepwise.data import DATASETS, ImageFolder, load_array, load_dataset, resize_square

EXAMPLE = """examples:
  stepwise stats --data digits --out runs/ref/digits_identity.npz
  stepwise stats --data digits --features digits --feature-net runs/features/digits --out ref.npz
  stepwise stats --data fashion_mnist --features inception \\
      --inception-weights pt_inception-2015-12-05-6726825d.npz --out fmnist_inception.npz
  stepwise stats --data path/to/png_folder --features inception --inception-weights w.npz --out ref.npz
"""

FEATURES = ("identity", "inception", "digits", "fashion_mnist")


def load_data_arg(spec: str, split: str | None = None, image_size: int | None = None) -> Any:
    """--data: a data set name, an image folder, or an .npz/.npy array file."""
    if spec in DATASETS:
        return load_dataset(spec, split, image_size)[0]
    if os.path.isdir(spec):
        return ImageFolder(spec)
    if os.path.isfile(spec) and spec.endswith((".npz", ".npy")):
        return load_array(spec)[0]
    raise ValueError(f"data must be one of {DATASETS}, an image folder, or an .npz/.npy file; "
                     f"got {spec!r}")


# ----------------------------------------------------------------------------- features
def add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default="identity", choices=FEATURES,
                   help="feature space: identity (raw values), inception (FID Inception-v3, "
                        "needs --inception-weights), digits / fashion_mnist (a domain CNN from "
                        "`stepwise train-features`, see --feature-net); default identity")
    p.add_argument("--feature-net", default=None,
                   help="directory of a trained domain CNN (default runs/features/<features>)")
    p.add_argument("--inception-weights", default=os.environ.get("STEPWISE_INCEPTION_WEIGHTS"),
                   help="pt_inception-2015-12-05-*.pth or its .npz from `stepwise "
                        "convert-inception` (default $STEPWISE_INCEPTION_WEIGHTS)")
    p.add_argument("--data-format", default="NHWC", choices=("NHWC", "NCHW"),
                   help="layout of 4-d colour images for inception features (default NHWC)")
    p.add_argument("--batch-size", type=int, default=256, help="feature batch size (default 256)")


def make_extractor(args: argparse.Namespace, example_shape: tuple[int, ...]):
    """The FeatureExtractor selected by --features for examples of ``example_shape``."""
    from stepwise import evaluation as ev

    kind = args.features
    if kind == "identity":
        return ev.identity_extractor(int(np.prod(example_shape)))
    if kind == "inception":
        if not args.inception_weights:
            raise ValueError("--features inception needs --inception-weights PATH (the "
                             "pt_inception-2015-12-05 .pth or .npz; nothing is downloaded)")
        return ev.inception_extractor(ev.load_inception(args.inception_weights),
                                      args.data_format)
    if kind in DATASETS:
        path = args.feature_net or os.path.join("runs", "features", kind)
        if not os.path.isfile(os.path.join(path, "feature_net.json")):
            raise ValueError(f"--features {kind} needs a trained net at {path!r}; make one with "
                             f"`stepwise train-features --data {kind} --out {path}`")
        return ev.feature_net_extractor(ev.load_feature_net(path))
    raise ValueError(f"features must be one of {FEATURES}, got {kind!r}")


def fit_to_extractor(data: Any, extractor) -> Any:
    """Resize square grayscale data to a domain CNN's input size when they differ."""
    shape = getattr(extractor, "input_shape", None)
    if shape is None or extractor.name != "domain_cnn" or not isinstance(data, np.ndarray):
        return data
    side = int(round(np.sqrt(np.prod(data.shape[1:]))))
    if side * side == np.prod(data.shape[1:]) and (side, side) != tuple(shape):
        return resize_square(data.reshape(len(data), side, side), shape[0])
    return data


# ----------------------------------------------------------------------------- command
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "stats", help="write reference feature statistics (mu, sigma, n) of a data set",
        description="Compute the mean and covariance of features of a data set (streamed in "
                    "batches, float64) and write them as an .npz readable by pytorch-fid, "
                    "EDM and guided-diffusion.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="digits | fashion_mnist | an image folder | an .npz (key samples, "
                        "arr_0 or images; uint8 is read as [0, 255]) or .npy file")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--split", default=None, help="data set split (digits: all | train | test, default all; "
                   "fashion_mnist: train | test, default train)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize a named data set to this square size first")
    p.add_argument("--format", default="pytorch-fid", choices=("pytorch-fid", "edm", "adm"),
                   help="key layout of the output file (default pytorch-fid)")
    add_feature_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from stepwise import evaluation as ev

    data = load_data_arg(args.data, args.split, args.image_size)
    extractor = make_extractor(args, tuple(data[:1].shape[1:]))
    data = fit_to_extractor(data, extractor)
    stats = ev.feature_stats(extractor, data, batch_size=args.batch_size)
    path = ev.save_stats(args.out, stats, format=args.format, feature=args.features)
    print(f"wrote {path}: features={args.features} dim={stats.dim} n={stats.n} "
          f"format={args.format}")
    return 0
