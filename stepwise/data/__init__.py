"""Data as arrays in [-1, 1]: one loader per source (bundled digits, Fashion-MNIST idx files, image
folders, npz/npy arrays), one notion of "an image file", and seeded train/test splits.

Images are float32 ``(n, H, W, C)`` (channels last) unless a loader says otherwise; ``flatten`` turns
them into vectors ``(n, H*W*C)`` for the MLP. This layer imports no other stepwise package.
"""
from __future__ import annotations

import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.io import open_npz

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DATASETS = ("digits", "fashion_mnist")
SPLITS = {"digits": ("all", "train", "test"), "fashion_mnist": ("train", "test")}
TEST_FRACTION = 0.2
SPLIT_SEED = 0
GRAY_MODES = ("L", "1", "I;16")


def flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1)


def split_indices(n: int, split: str, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """Row indices of a seeded split: ``test`` is a fixed random ``test_fraction`` of the rows,
    ``train`` the rest (disjoint from test), ``all`` every row."""
    if split not in ("all", "train", "test"):
        raise ValueError(f"split: {split!r} is invalid; allowed: ['all', 'train', 'test']")
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    k = int(n * test_fraction)
    return np.sort(perm[:k]) if split == "test" else np.sort(perm[k:])


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (half-pixel) resize of (n, h, w[, c]) images to (n, size, size[, c])."""
    images = np.asarray(images)
    if images.shape[1] == size and images.shape[2] == size:
        return images
    shape = (images.shape[0], size, size) + tuple(images.shape[3:])
    return np.asarray(jax.image.resize(jnp.asarray(images), shape, "linear"))


def load_digits(size: int = 8, flat: bool = False, split: str = "all", dtype=np.float32
                ) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (pixel / 16 * 2 - 1, in [-1, 1]), bilinearly resized to ``size``.

    Returns (images (n, size, size, 1), or (n, size*size) when ``flat``, and labels int32 (n,)) of the
    ``split`` (:func:`split_indices`: all 1797, or a seeded 80/20 train/test split).
    """
    from sklearn.datasets import load_digits as sk_digits

    if size < 8:
        raise ValueError(f"digits: size must be >= 8, got {size}")
    d = sk_digits()
    idx = split_indices(len(d.images), split)
    imgs = d.images[idx].astype(np.float64) / 16.0 * 2.0 - 1.0
    imgs = resize_square(imgs, size).astype(dtype)[..., None]
    return (flatten(imgs) if flat else imgs), d.target[idx].astype(np.int32)


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"fashion-mnist: {path} is not an idx file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(f"fashion-mnist: {path}: unsupported idx element type 0x{dtype_code:02x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"fashion-mnist: {path} is truncated ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


def load_fashion_mnist(split: str = "train", path: str | None = None, pad_to_32: bool = False):
    """Fashion-MNIST from the idx.gz files of Debian's ``dataset-fashion-mnist`` package.

    Returns (images float32 in [-1, 1] of shape (n, 28, 28) — (n, 32, 32) with ``pad_to_32``, padded
    with the background value -1 — and labels int32 (n,)). ``path`` is a directory holding the four
    idx.gz files (default ``/usr/share/datasets/fashion-mnist``).
    """
    if split not in FASHION_FILES:
        raise ValueError(f"fashion-mnist: split must be 'train' or 'test', got {split!r}")
    root = FASHION_DIR if path is None else path
    img_file, lab_file = (os.path.join(root, f) for f in FASHION_FILES[split])
    for f in (img_file, lab_file):
        if not os.path.exists(f):
            raise FileNotFoundError(
                f"fashion-mnist: {f} not found. Install the data with "
                "`apt-get install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist) "
                "or pass path= to a directory holding the idx.gz files.")
    imgs, labels = _read_idx(img_file), _read_idx(lab_file)
    if imgs.ndim != 3 or labels.shape != imgs.shape[:1]:
        raise ValueError(f"fashion-mnist: images {imgs.shape} and labels {labels.shape} do not match")
    x = imgs.astype(np.float32) / 127.5 - 1.0
    if pad_to_32:
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    return x, labels.astype(np.int32)


def image_files(folder: str) -> list[str]:
    """The image files of a folder (by extension, :data:`IMAGE_EXTENSIONS`), sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"images: {folder} is not a directory")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


class ImageFolder:
    """The images of a folder, decoded lazily per slice (``folder[a:b]``), scaled to [-1, 1].

    ``size`` resizes each image to size x size; ``grayscale`` forces 1 channel (True) or RGB (False);
    None keeps grayscale files grayscale and converts anything else to RGB. Without ``size`` every
    image must have the first one's size.
    """

    def __init__(self, folder: str, size: int | None = None, grayscale: bool | None = None,
                 paths: list[str] | None = None):
        from PIL import Image

        self.paths = image_files(folder) if paths is None else list(paths)
        if not self.paths:
            raise ValueError(f"images: no usable images in {folder} (looked for {IMAGE_EXTENSIONS})")
        self.size, self.grayscale = size, grayscale
        with Image.open(self.paths[0]) as im:
            self.first_size = im.size
            if grayscale is None:
                self.grayscale = im.mode in GRAY_MODES

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, path: str) -> np.ndarray:
        """One image as float32 (H, W, C) in [-1, 1]."""
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if self.grayscale else "RGB")
            if self.size is not None:
                im = im.resize((self.size, self.size), Image.BILINEAR)
            elif im.size != self.first_size:
                raise ValueError(f"images: {path} is {im.size}, the first image is {self.first_size}: files "
                                 "have different shapes; pass size= to resize them")
            a = np.asarray(im, np.float32) / 127.5 - 1.0
        return a[..., None] if a.ndim == 2 else a

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.stack([self.read(p) for p in self.paths[index]])


def load_image_folder(path: str, size: int | None = None, grayscale: bool | None = None) -> np.ndarray:
    """Every readable image of a folder as float32 images in [-1, 1], shape (n, H, W, C).

    Unreadable files are skipped (and named when none is usable); with ``grayscale=None`` the images
    stay grayscale when every file is, and become RGB otherwise."""
    from PIL import Image, UnidentifiedImageError

    good, bad, modes = [], [], set()
    for p in image_files(path):
        try:
            with Image.open(p) as im:
                im.verify()
            with Image.open(p) as im:
                modes.add("L" if im.mode in GRAY_MODES else "RGB")
            good.append(p)
        except (UnidentifiedImageError, OSError):
            bad.append(os.path.basename(p))
    if not good:
        raise ValueError(f"images: no usable images in {path}"
                         + (f" (unreadable: {bad[:5]})" if bad else f" (looked for {IMAGE_EXTENSIONS})"))
    return ImageFolder(path, size, modes == {"L"} if grayscale is None else grayscale, paths=good)[:]


def load_array(path: str, keys: tuple[str, ...] = ("samples", "images", "x", "data", "arr_0")
               ) -> tuple[np.ndarray, str | None, np.ndarray | None]:
    """(array, its key, labels or None) of an ``.npy`` file or the first of ``keys`` (or the only
    array) in an ``.npz``; uint8 arrays are scaled from [0, 255] to [-1, 1]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz: {path} does not exist")
    labels, key = None, None
    if path.endswith(".npy"):
        arr = open_npz(path, "npz")
    else:
        with open_npz(path, "npz") as z:
            names = list(z.keys())
            key = next((k for k in keys if k in names), names[0] if len(names) == 1 else None)
            if key is None:
                raise ValueError(f"npz: {path} holds {names}; needs one of the keys {list(keys)}")
            arr = z[key]
            labels = z["labels"] if "labels" in names else None
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"npz: {path}[{key!r}] has shape {arr.shape}; expected (n, ...) with n >= 1")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 127.5 - 1.0, key, labels
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"npz: {path}[{key!r}] has dtype {arr.dtype}; allowed: uint8 images or real numbers")
    return np.asarray(arr, np.float32), key, labels


def load_npz(path: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Training images from an ``.npz``: array ``key`` (default: 'images', 'x', 'data' or the only
    array) and its ``labels`` if present. uint8 is scaled to [-1, 1]; float arrays must already lie
    in [-1, 1]; a (n, H, W) array gains a channel axis."""
    x, key, labels = load_array(path, (key,) if key else ("images", "x", "data"))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise ValueError(f"npz: {path}[{key!r}] has shape {x.shape}; expected (n, H, W[, C]) or (n, d)")
    if np.abs(x).max() > 1.0 + 1e-6:
        raise ValueError(f"npz: {path}[{key!r}] has values outside [-1, 1] (max |x| = {np.abs(x).max():.3g})")
    if labels is not None and labels.shape != x.shape[:1]:
        raise ValueError(f"npz: labels {labels.shape} do not match images {x.shape}")
    return x, (None if labels is None else labels.astype(np.int32))


def load_dataset(name: str, split: str | None = None, image_size: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W) float32 in [-1, 1], labels (n,)) of a bundled data set: ``digits`` (split
    all | train | test, default all) or ``fashion_mnist`` (train | test, default train)."""
    if name not in DATASETS:
        raise ValueError(f"data: {name!r} is invalid; allowed: {list(DATASETS)}")
    split = split or SPLITS[name][0]
    if split not in SPLITS[name]:
        raise ValueError(f"split: {split!r} is invalid for {name}; allowed: {list(SPLITS[name])}")
    if name == "digits":
        images, labels = load_digits(8, split=split)
        images = images[..., 0]
    else:
        images, labels = load_fashion_mnist(split)
    if image_size is not None:
        images = resize_square(images, image_size).astype(np.float32)
    return images, labels
