"""`stepwise stats`: reference feature statistics (mu, sigma, n) of a data set, as .npz.

Also holds the data / feature helpers that `evaluate` and `train-features` share.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

EXAMPLE = """examples:
  stepwise stats --data digits --out runs/ref/digits_identity.npz
  stepwise stats --data digits --features digits --feature-net runs/features/digits --out ref.npz
  stepwise stats --data fashion_mnist --features inception \\
      --inception-weights pt_inception-2015-12-05-6726825d.npz --out fmnist_inception.npz
  stepwise stats --data path/to/png_folder --features inception --inception-weights w.npz --out ref.npz
"""

DATASETS = ("digits", "fashion_mnist")
FEATURES = ("identity", "inception", "digits", "fashion_mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


# ----------------------------------------------------------------------------- data
def _resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (half-pixel) resize of (n, h, w) images to (n, size, size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import jax
    import jax.numpy as jnp

    out = jax.image.resize(jnp.asarray(images, jnp.float32), (images.shape[0], size, size),
                           "linear")
    return np.asarray(out, np.float32)


def load_dataset(name: str, split: str = "train", image_size: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W) float32 in [-1, 1], labels (n,)) of a bundled data set.

    digits: scikit-learn's 1797 8x8 digits (pixel / 16 * 2 - 1); split 'train' is all of
    them, 'test' a fixed 20% (for classifier accuracy). fashion_mnist: denoisers.data.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)
        labels = d.target.astype(np.int64)
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if split == "test":
            idx = np.random.default_rng(0).permutation(len(images))[: len(images) // 5]
            images, labels = images[idx], labels[idx]
    elif name == "fashion_mnist":
        try:
            from denoisers.data import load_fashion_mnist
        except ImportError as err:
            raise ValueError("data: fashion_mnist needs denoisers.data.load_fashion_mnist "
                             f"({err})") from err
        images, labels = load_fashion_mnist(split=split)
        images, labels = np.asarray(images, np.float32), np.asarray(labels)
    else:
        raise ValueError(f"data must be one of {DATASETS}, got {name!r}")
    if image_size is not None:
        images = _resize_square(images, image_size)
    return images, labels


class ImageFolder:
    """Images of a folder (sorted names), decoded lazily per slice, scaled to [-1, 1].

    Grayscale ('L') images give (n, H, W); anything else is converted to RGB (n, H, W, 3).
    All images must share one size.
    """

    def __init__(self, folder: str):
        from PIL import Image

        self.paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                            if f.lower().endswith(IMAGE_SUFFIXES))
        if not self.paths:
            raise ValueError(f"data: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder!r}")
        with Image.open(self.paths[0]) as im:
            self.size, self.gray = im.size, im.mode in ("L", "1", "I;16")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: slice) -> np.ndarray:
        from PIL import Image

        out = []
        for p in self.paths[index]:
            with Image.open(p) as im:
                if im.size != self.size:
                    raise ValueError(f"data: {p!r} is {im.size}, expected {self.size} like the "
                                     "first image; resize the folder to one size")
                out.append(np.asarray(im.convert("L" if self.gray else "RGB"), np.float32))
        return np.stack(out) / 127.5 - 1.0


def read_array_file(path: str, keys: tuple[str, ...] = ("samples", "arr_0", "images")
                    ) -> np.ndarray:
    """First of ``keys`` in an .npz (or an .npy array); uint8 is mapped to [-1, 1]."""
    if path.endswith(".npy"):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in keys if k in data.files), None)
            if key is None:
                raise ValueError(f"{path!r}: needs one of the keys {keys}, has {sorted(data.files)}")
            arr = data[key]
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"{path!r}: expected an (n, ...) array with n >= 1, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 127.5 - 1.0
    return np.asarray(arr, np.float32)


def load_data_arg(spec: str, split: str = "train", image_size: int | None = None) -> Any:
    """--data: a data set name, an image folder, or an .npz/.npy array file."""
    if spec in DATASETS:
        return load_dataset(spec, split, image_size)[0]
    if os.path.isdir(spec):
        return ImageFolder(spec)
    if os.path.isfile(spec) and spec.endswith((".npz", ".npy")):
        return read_array_file(spec)
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
    import evaluation as ev

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
        return _resize_square(data.reshape(len(data), side, side), shape[0])
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
    p.add_argument("--split", default="train", help="data set split (default train)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize a named data set to this square size first")
    p.add_argument("--format", default="pytorch-fid", choices=("pytorch-fid", "edm", "adm"),
                   help="key layout of the output file (default pytorch-fid)")
    add_feature_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import evaluation as ev

    try:
        data = load_data_arg(args.data, args.split, args.image_size)
        extractor = make_extractor(args, tuple(data[:1].shape[1:]))
        data = fit_to_extractor(data, extractor)
        stats = ev.feature_stats(extractor, data, batch_size=args.batch_size)
        path = ev.save_stats(args.out, stats, format=args.format, feature=args.features)
    except (ValueError, FileNotFoundError) as err:
        print(f"stepwise stats: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: features={args.features} dim={stats.dim} n={stats.n} "
          f"format={args.format}")
    return 0
