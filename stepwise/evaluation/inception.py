"""Inception-v3 FID feature network in Flax (linen).

The network is the 2015-12-05 TensorFlow Inception graph as ported by pytorch-fid
(Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium"; Szegedy et al. 2016, "Rethinking the Inception Architecture"), including the
three FID-specific differences from torchvision's Inception-v3:

* the average pools inside the A, C and first E blocks exclude the zero padding from the
  average (TensorFlow's ``count_include_pad=False`` behaviour);
* the last E block (``Mixed_7c``) uses a 3x3 *max* pool in its pool branch;
* batch norm uses ``eps = 1e-3``.

Inputs are images in ``[-1, 1]`` of any size; they are bilinearly resized to 299x299 exactly
as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` does (no
antialiasing), and the 2048-d ``pool3`` features (global average of ``Mixed_7c``) are
returned.

Weights: :func:`load_inception` reads the standard ``pt_inception-2015-12-05-*.pth`` file
(needs torch) or the ``.npz`` written by :func:`convert_inception` (needs only numpy).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.io import savez_atomic
from jax import lax

__all__ = [
    "FID_INPUT_SIZE", "INCEPTION_FEATURE_DIM", "InceptionV3FID", "resize_bilinear",
    "bilinear_matrix", "init_inception", "inception_params_from_state_dict",
    "load_inception", "convert_inception", "inception_apply", "DATA_FORMATS",
]

FID_INPUT_SIZE = 299
INCEPTION_FEATURE_DIM = 2048
DATA_FORMATS = ("NHWC", "NCHW")
_BN_EPS = 1e-3
Pad = tuple[int, int]


# ----------------------------------------------------------------------------- resize
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) interpolation matrix of half-pixel bilinear resampling without antialias.

    Output pixel ``o`` samples source coordinate ``s = (o + 1/2) * in/out - 1/2`` clamped at 0,
    mixing pixels ``floor(s)`` and ``min(floor(s) + 1, in - 1)`` -- PyTorch's
    ``align_corners=False`` rule.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"in_size and out_size must be >= 1, got {in_size}, {out_size}")
    # float32 arithmetic, as PyTorch's CPU kernel does, so the weights agree to the last bit
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    src = (np.arange(out_size, dtype=f32) + f32(0.5)) * scale - f32(0.5)
    src = np.maximum(src, f32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = (src - i0.astype(f32)).astype(np.float64)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    return m.astype(np.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int] = (FID_INPUT_SIZE, FID_INPUT_SIZE)
                    ) -> jax.Array:
    """Resize NHWC images to ``size`` like ``F.interpolate(bilinear, align_corners=False)``."""
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-d), got shape {x.shape}")
    _, h, w, _ = x.shape
    if (h, w) == tuple(size):
        return x
    mh = jnp.asarray(bilinear_matrix(h, size[0]))
    mw = jnp.asarray(bilinear_matrix(w, size[1]))
    hp = lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hp)
    return jnp.einsum("pw,nowc->nopc", mw, x, precision=hp)


# ----------------------------------------------------------------------------- layers
class ConvBN(nn.Module):
    """Conv (no bias) -> inference batch norm (eps 1e-3) -> ReLU; torchvision's BasicConv2d."""
    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.he_normal(),
                            (*self.kernel, cin, self.features))
        y = lax.conv_general_dilated(
            x, kernel.astype(x.dtype), window_strides=self.strides,
            padding=[(self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        c = (self.features,)
        scale = self.param("scale", nn.initializers.ones, c)
        bias = self.param("bias", nn.initializers.zeros, c)
        mean = self.param("mean", nn.initializers.zeros, c)
        var = self.param("var", nn.initializers.ones, c)
        return nn.relu((y - mean) * (scale * lax.rsqrt(var + _BN_EPS)) + bias)


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                             [(0, 0), (pad, pad), (pad, pad), (0, 0)])


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool, padding 1, dividing by the count of *real* pixels."""
    pads = [(0, 0), (1, 1), (1, 1), (0, 0)]
    total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    return total / count


class BlockA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (pytorch-fid FIDInceptionA)."""
    pool_features: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        p = self.precision
        b1 = ConvBN(64, (1, 1), precision=p, name="branch1x1")(x)
        b5 = ConvBN(48, (1, 1), precision=p, name="branch5x5_1")(x)
        b5 = ConvBN(64, (5, 5), padding=(2, 2), precision=p, name="branch5x5_2")(b5)
        b3 = ConvBN(64, (1, 1), precision=p, name="branch3x3dbl_1")(x)
        b3 = ConvBN(96, (3, 3), padding=(1, 1), precision=p, name="branch3x3dbl_2")(b3)
        b3 = ConvBN(96, (3, 3), padding=(1, 1), precision=p, name="branch3x3dbl_3")(b3)
        bp = ConvBN(self.pool_features, (1, 1), precision=p,
                    name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class BlockB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        p = self.precision
        b3 = ConvBN(384, (3, 3), strides=(2, 2), precision=p, name="branch3x3")(x)
        bd = ConvBN(64, (1, 1), precision=p, name="branch3x3dbl_1")(x)
        bd = ConvBN(96, (3, 3), padding=(1, 1), precision=p, name="branch3x3dbl_2")(bd)
        bd = ConvBN(96, (3, 3), strides=(2, 2), precision=p, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class BlockC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches (pytorch-fid FIDInceptionC)."""
    channels_7x7: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        p, c7 = self.precision, self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = ConvBN(192, (1, 1), precision=p, name="branch1x1")(x)
        b7 = ConvBN(c7, (1, 1), precision=p, name="branch7x7_1")(x)
        b7 = ConvBN(c7, **row, precision=p, name="branch7x7_2")(b7)
        b7 = ConvBN(192, **col, precision=p, name="branch7x7_3")(b7)
        bd = ConvBN(c7, (1, 1), precision=p, name="branch7x7dbl_1")(x)
        bd = ConvBN(c7, **col, precision=p, name="branch7x7dbl_2")(bd)
        bd = ConvBN(c7, **row, precision=p, name="branch7x7dbl_3")(bd)
        bd = ConvBN(c7, **col, precision=p, name="branch7x7dbl_4")(bd)
        bd = ConvBN(192, **row, precision=p, name="branch7x7dbl_5")(bd)
        bp = ConvBN(192, (1, 1), precision=p, name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class BlockD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        p = self.precision
        b3 = ConvBN(192, (1, 1), precision=p, name="branch3x3_1")(x)
        b3 = ConvBN(320, (3, 3), strides=(2, 2), precision=p, name="branch3x3_2")(b3)
        b7 = ConvBN(192, (1, 1), precision=p, name="branch7x7x3_1")(x)
        b7 = ConvBN(192, (1, 7), padding=(0, 3), precision=p, name="branch7x7x3_2")(b7)
        b7 = ConvBN(192, (7, 1), padding=(3, 0), precision=p, name="branch7x7x3_3")(b7)
        b7 = ConvBN(192, (3, 3), strides=(2, 2), precision=p, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class BlockE(nn.Module):
    """Mixed_7b (avg pool, padding excluded) and Mixed_7c (max pool): expanded filter banks."""
    pool: str  # "avg" | "max"
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        p = self.precision
        wide, tall = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = ConvBN(320, (1, 1), precision=p, name="branch1x1")(x)
        b3 = ConvBN(384, (1, 1), precision=p, name="branch3x3_1")(x)
        b3 = jnp.concatenate([ConvBN(384, **wide, precision=p, name="branch3x3_2a")(b3),
                              ConvBN(384, **tall, precision=p, name="branch3x3_2b")(b3)], -1)
        bd = ConvBN(448, (1, 1), precision=p, name="branch3x3dbl_1")(x)
        bd = ConvBN(384, (3, 3), padding=(1, 1), precision=p, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([ConvBN(384, **wide, precision=p, name="branch3x3dbl_3a")(bd),
                              ConvBN(384, **tall, precision=p, name="branch3x3dbl_3b")(bd)], -1)
        pooled = _max_pool(x, 1, pad=1) if self.pool == "max" else _avg_pool_exclude_pad(x)
        bp = ConvBN(192, (1, 1), precision=p, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
    """FID Inception-v3: NHWC images in [-1, 1] (any size) -> (n, 2048) pool3 features.

    ``resize=True`` first resamples to 299x299 (see :func:`resize_bilinear`).
    """
    resize: bool = True
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        if self.resize:
            x = resize_bilinear(x)
        x = ConvBN(32, (3, 3), strides=(2, 2), precision=p, name="Conv2d_1a_3x3")(x)
        x = ConvBN(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)
        x = ConvBN(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)
        x = _max_pool(x, 2)
        x = ConvBN(80, (1, 1), precision=p, name="Conv2d_3b_1x1")(x)
        x = ConvBN(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)
        x = _max_pool(x, 2)
        x = BlockA(32, p, name="Mixed_5b")(x)
        x = BlockA(64, p, name="Mixed_5c")(x)
        x = BlockA(64, p, name="Mixed_5d")(x)
        x = BlockB(p, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = BlockC(c7, p, name=name)(x)
        x = BlockD(p, name="Mixed_7a")(x)
        x = BlockE("avg", p, name="Mixed_7b")(x)
        x = BlockE("max", p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------- params
def init_inception(key: jax.Array, *, dtype: Any = jnp.float32) -> dict:
    """Random (He-normal conv, identity batch norm) parameters; for tests and benchmarks."""
    params = jax.jit(InceptionV3FID(resize=False).init)(key, jnp.zeros((1, 75, 75, 3), dtype))["params"]  # one compile
    return jax.tree.map(lambda a: a.astype(dtype), params)


@functools.lru_cache(maxsize=1)
def _param_shapes() -> dict:
    tree = jax.eval_shape(lambda: init_inception(jax.random.key(0)))
    return jax.tree.map(lambda s: tuple(s.shape), tree)


# pytorch-fid's wrapper ``InceptionV3`` names the same layers ``blocks.<i>.<j>``.
_WRAPPER_NAMES = {
    "0": ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    "1": ["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    "2": ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e"],
    "3": ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
}
_BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _canonical_key(key: str) -> str:
    if key.startswith("module."):  # DataParallel checkpoints
        key = key[len("module."):]
    parts = key.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        names = _WRAPPER_NAMES.get(parts[1], [])
        j = int(parts[2]) if parts[2].isdigit() else -1
        if 0 <= j < len(names):
            return ".".join([names[j], *parts[3:]])
    return key


def inception_params_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
    """Map a PyTorch FID-Inception state dict (numpy/torch arrays) to this module's params.

    Accepts the key names of the standard weight file (``Mixed_5b.branch1x1.conv.weight``)
    and of pytorch-fid's wrapper (``blocks.2.0.branch1x1.conv.weight``). Conv kernels go
    OIHW -> HWIO; batch norm ``weight, bias, running_mean, running_var`` become
    ``scale, bias, mean, var``. The classifier (``fc``) and aux head are ignored.
    """
    shapes = _param_shapes()
    params: dict = {}
    for raw_key, value in state_dict.items():
        key = _canonical_key(raw_key)
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked" or parts[0] in ("fc", "AuxLogits"):
            continue
        *path, kind, field = parts
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value,
                         dtype=np.float32)
        if kind == "conv" and field == "weight":
            leaf, arr = "kernel", arr.transpose(2, 3, 1, 0)
        elif kind == "bn" and field in _BN_FIELDS:
            leaf = _BN_FIELDS[field]
        else:
            raise ValueError(f"state_dict: unexpected key {raw_key!r} for the FID Inception")
        node, expected = params, shapes
        for name in path:
            if name not in expected:
                raise ValueError(f"state_dict: unknown layer {'.'.join(path)!r} in key {raw_key!r}")
            expected = expected[name]
            node = node.setdefault(name, {})
        if tuple(arr.shape) != expected[leaf]:
            raise ValueError(f"state_dict[{raw_key!r}]: shape {arr.shape} after layout change, "
                             f"expected {expected[leaf]}")
        node[leaf] = arr
    missing = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda s: isinstance(s, tuple))[0]
        if _lookup(params, p) is None]
    if missing:
        raise ValueError(f"state_dict: {len(missing)} FID-Inception parameters missing, "
                         f"e.g. {missing[:3]}")
    return jax.tree.map(jnp.asarray, params)


def _lookup(tree: dict, path) -> Any:
    for entry in path:
        if not isinstance(tree, dict) or entry.key not in tree:
            return None
        tree = tree[entry.key]
    return tree


def _read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path!r} needs torch; convert it once with "
                          "evaluation.convert_inception(pth, npz) where torch is installed"
                          ) from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path!r}: expected a state dict, got {type(state).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def load_inception(path: str | os.PathLike) -> dict:
    """FID-Inception params from ``pt_inception-2015-12-05-*.pth`` (torch) or its ``.npz``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weight file not found: {path!r}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            state = {k: data[k] for k in data.files}
    elif path.endswith((".pth", ".pt")):
        state = _read_torch_state_dict(path)
    else:
        raise ValueError(f"path: weight file must end in .pth, .pt or .npz, got {path!r}")
    return inception_params_from_state_dict(state)


def convert_inception(pth_path: str | os.PathLike, npz_path: str | os.PathLike) -> str:
    """Write the ``.pth`` state dict as an ``.npz`` (same keys, float32) so loading needs no torch.

    The weights are validated against the architecture before writing. Returns the npz path.
    """
    state = _read_torch_state_dict(os.fspath(pth_path))
    inception_params_from_state_dict(state)  # validate
    keep = {k: v.astype(np.float32) for k, v in state.items()
            if not k.endswith("num_batches_tracked")}
    npz_path = os.path.abspath(os.fspath(npz_path))
    if not npz_path.endswith(".npz"):
        raise ValueError(f"npz_path: must end in .npz, got {npz_path!r}")
    savez_atomic(npz_path, **keep)
    return npz_path


# ----------------------------------------------------------------------------- apply
def _to_nhwc_rgb(x: jax.Array, data_format: str) -> jax.Array:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if x.ndim == 3:  # (n, H, W) grayscale
        x = x[..., None] if data_format == "NHWC" else x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (n,H,W) or 4-d {data_format}, got shape {x.shape}")
    if data_format == "NCHW":
        x = jnp.transpose(x, (0, 2, 3, 1))
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[-1]} "
                         f"(shape {x.shape}, data_format {data_format!r})")
    return x


def inception_apply(params: dict, images: jax.Array, *, data_format: str = "NHWC",
                    precision: Any = None) -> jax.Array:
    """pool3 features (n, 2048) of images in [-1, 1]; grayscale is repeated to RGB."""
    x = _to_nhwc_rgb(jnp.asarray(images, jnp.float32), data_format)
    return InceptionV3FID(resize=True, precision=precision).apply({"params": params}, x)


def inception_apply_fn(data_format: str = "NHWC", precision: Any = None
                       ) -> Callable[[dict, jax.Array], jax.Array]:
    """``(params, images) -> features`` with the layout fixed, for feature extractors."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return functools.partial(inception_apply, data_format=data_format, precision=precision)
