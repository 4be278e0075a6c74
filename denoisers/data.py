"""Training data as arrays in [-1, 1]: bundled digits, Fashion-MNIST, mixture samples, the user's images.

Images are float32 ``(n, H, W, C)`` (channels last) unless a loader says otherwise; ``flatten`` turns
them into vectors ``(n, H*W*C)`` for the MLP.
"""
from __future__ import annotations

import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1)


def load_digits(size: int = 8, flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits in [-1, 1], bilinearly resized to ``size`` (8, 16, 32 ...).

    Returns (images float32 (n, size, size, 1) or (n, size*size) when ``flat``, labels int32 (n,)).
    """
    from sklearn.datasets import load_digits as sk_digits

    if size < 8:
        raise ValueError(f"digits: size must be >= 8, got {size}")
    d = sk_digits()
    imgs = d.images.astype(np.float32) / 16.0 * 2.0 - 1.0
    if size != 8:
        imgs = np.asarray(jax.image.resize(jnp.asarray(imgs), (len(imgs), size, size), "linear"))
    imgs = imgs[..., None].astype(np.float32)
    return (flatten(imgs) if flat else imgs), d.target.astype(np.int32)


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


def gmm_samples(mixture, n: int, seed: int = 0) -> np.ndarray:
    """n exact samples of a Gaussian-mixture denoiser's data distribution (shape (n, *data_shape))."""
    return np.asarray(mixture.sample(jax.random.key(seed), n), np.float32)


def load_image_folder(path: str, size: int | None = None, grayscale: bool | None = None) -> np.ndarray:
    """PNG/JPEG files of a folder as float32 images in [-1, 1], shape (n, H, W, C).

    All images must share one shape unless ``size`` is given (then each is resized to size x size).
    ``grayscale`` forces 1 channel (True) or RGB (False); None keeps the files' mode when they agree.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(path):
        raise FileNotFoundError(f"images: {path} is not a directory")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    arrays, bad = [], []
    for name in names:
        try:
            with Image.open(os.path.join(path, name)) as im:
                if grayscale is True:
                    im = im.convert("L")
                elif grayscale is False or im.mode not in ("L", "RGB"):
                    im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, np.float32)
        except (UnidentifiedImageError, OSError):
            bad.append(name)
            continue
        arrays.append(a[..., None] if a.ndim == 2 else a)
    if not arrays:
        raise ValueError(f"images: no usable PNG/JPEG images in {path}"
                         + (f" (unreadable: {bad[:5]})" if bad else f" (looked for {IMAGE_EXTENSIONS})"))
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"images: files in {path} have different shapes {shapes[:4]}; pass size= to "
                         "resize them or grayscale= to unify channels")
    return np.stack(arrays) / 127.5 - 1.0


def load_npz(path: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images from an ``.npz``: array ``key`` (default: 'images', 'x' or the only array), labels if present.

    uint8 arrays are scaled from [0, 255] to [-1, 1]; float arrays must already lie in [-1, 1].
    A (n, H, W) array gains a channel axis.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"npz: {path} does not exist")
    with np.load(path) as z:
        names = list(z.keys())
        if key is None:
            key = next((k for k in ("images", "x", "data") if k in names), names[0] if len(names) == 1 else None)
        if key is None or key not in names:
            raise ValueError(f"npz: {path} holds {names}; pass key= to choose the image array")
        x = z[key]
        labels = z["labels"] if "labels" in names else None
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4) or len(x) == 0:
        raise ValueError(f"npz: {path}[{key!r}] has shape {x.shape}; expected (n, H, W[, C]) or (n, d)")
    if np.abs(x).max() > 1.0 + 1e-6:
        raise ValueError(f"npz: {path}[{key!r}] has values outside [-1, 1] (max |x| = {np.abs(x).max():.3g})")
    if labels is not None and labels.shape != x.shape[:1]:
        raise ValueError(f"npz: labels {labels.shape} do not match images {x.shape}")
    return x, (None if labels is None else labels.astype(np.int32))


def load_dataset(cfg) -> tuple[np.ndarray, np.ndarray | None]:
    """Training arrays named by a train config (``configs.train_defaults``): (data, labels or None)."""
    kind = cfg.dataset
    if kind == "digits":
        x, y = load_digits(int(cfg.image_size))
    elif kind == "fashion_mnist":
        if int(cfg.image_size) not in (28, 32):
            raise ValueError("fashion_mnist: image_size must be 28 or 32")
        x, y = load_fashion_mnist("train", cfg.data_path or None, pad_to_32=int(cfg.image_size) == 32)
        x = x[..., None]
    elif kind == "npz":
        x, y = load_npz(cfg.data_path)
    elif kind == "folder":
        x, y = load_image_folder(cfg.data_path), None
    elif kind == "gmm_samples":
        from denoisers.gmm import digits_gmm
        g = digits_gmm(size=int(cfg.image_size))
        x, y = gmm_samples(g, 4096, int(cfg.seed)).reshape(-1, cfg.image_size, cfg.image_size, 1), None
    else:
        raise ValueError(f"dataset: unknown {kind!r}; allowed: digits, fashion_mnist, npz, folder, gmm_samples")
    if cfg.get("flat", False):
        x = flatten(x)
    return x, y
