"""Feature extractors and batched, sharded feature extraction.

A :class:`FeatureExtractor` is ``apply(params, batch) -> (b, dim)`` plus its params. Three kinds:

* ``inception`` -- the FID Inception-v3 (:mod:`evaluation.inception`), 2048-d pool3;
* ``domain CNN`` -- a small classifier for 8x8..32x32 grayscale domains (digits,
  Fashion-MNIST) whose penultimate layer is the feature space (the small-domain analogue of
  FID's Inception features, as in e.g. the MNIST "FID" of Binkowski et al. 2018);
* ``identity`` -- flattened vectors (exact comparisons in data space).

:func:`stream_features` runs an extractor over an array batch by batch (peak memory bounded
by the batch), sharding each batch over ``jax.devices()`` with a 1-D ``("data",)`` mesh and
padding the last one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stepwise.evaluation import inception as _inception
from stepwise.evaluation.stats import stats_from_batches
from stepwise.io import write_text_atomic

__all__ = [
    "FeatureExtractor", "DomainCNN", "TrainedFeatureNet", "train_feature_net",
    "save_feature_net", "load_feature_net", "feature_net_extractor", "identity_extractor",
    "inception_extractor", "identity_features", "stream_features", "extract_features",
    "feature_stats", "classifier_accuracy", "DOMAIN_SIZES",
]

DOMAIN_SIZES = (8, 16, 28, 32)


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """``apply(params, batch) -> (b, dim)`` features of a float32 batch in [-1, 1].

    ``input_shape`` is the per-example shape ``apply`` expects (None: any); flat rows of the
    same size are reshaped to it on the host.
    """
    name: str
    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any
    dim: int
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "_jitted", jax.jit(self.apply))

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """Host-side reshape of a (b, ...) batch to (b, *input_shape), float32."""
        x = np.asarray(batch, np.float32)
        if self.input_shape is None or x.shape[1:] == self.input_shape:
            return x
        if math.prod(x.shape[1:]) == math.prod(self.input_shape):
            return x.reshape((x.shape[0], *self.input_shape))
        raise ValueError(f"{self.name} features expect examples of shape {self.input_shape} "
                         f"(or {math.prod(self.input_shape)} values), got {x.shape[1:]}")


# ----------------------------------------------------------------------------- CNN
class DomainCNN(nn.Module):
    """conv3x3(w0) -> [conv3x3 stride 2 (w)]* -> global mean -> dense(feature_dim) -> head.

    GELU activations; input (b, H, W) or (b, H, W, 1) in [-1, 1]. ``features`` returns the
    penultimate ``feature_dim`` activations, ``__call__`` the class logits.
    """
    num_classes: int = 10
    feature_dim: int = 128
    widths: tuple[int, ...] = (32, 64, 128)

    def setup(self):
        self.convs = [nn.Conv(w, (3, 3), strides=1 if i == 0 else 2, padding="SAME",
                              name=f"conv{i}") for i, w in enumerate(self.widths)]
        self.embed = nn.Dense(self.feature_dim, name="embed")
        self.head = nn.Dense(self.num_classes, name="head")

    def features(self, x: jax.Array) -> jax.Array:
        if x.ndim == 3:
            x = x[..., None]
        h = x.astype(jnp.float32)
        for conv in self.convs:
            h = nn.gelu(conv(h))
        return nn.gelu(self.embed(jnp.mean(h, axis=(1, 2))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


@dataclasses.dataclass(frozen=True)
class TrainedFeatureNet:
    """A :class:`DomainCNN`, its params, the image shape it was trained on, and its losses."""
    model: DomainCNN
    params: Any
    image_shape: tuple[int, int]
    losses: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.model.num_classes, "feature_dim": self.model.feature_dim,
                "widths": list(self.model.widths), "image_shape": list(self.image_shape)}


def _check_images(images: Any) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] not in DOMAIN_SIZES:
        raise ValueError(f"images must be (n, H, H) or (n, H, H, 1) grayscale with H in "
                         f"{DOMAIN_SIZES}, got shape {np.shape(images)}")
    return x


def train_feature_net(images: Any, labels: Any, *, key: jax.Array, num_classes: int | None = None,
                      steps: int = 1000, batch_size: int = 128, learning_rate: float = 2e-3,
                      feature_dim: int = 128, widths: Sequence[int] = (32, 64, 128)
                      ) -> TrainedFeatureNet:
    """Train a :class:`DomainCNN` classifier with Adam (cosine decay) on softmax cross-entropy.

    ``images`` (n, H, H) in [-1, 1], ``labels`` (n,) ints. Minibatches are drawn uniformly
    with replacement from ``key``; returns the net with its per-step training losses.
    """
    x = _check_images(images)
    y = np.asarray(labels).astype(np.int32)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must be (n,) = ({x.shape[0]},), got shape {y.shape}")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    model = DomainCNN(num_classes=k, feature_dim=feature_dim, widths=tuple(widths))
    init_key, data_key = jax.random.split(key)
    params = jax.jit(model.init)(init_key, jnp.zeros((1, *x.shape[1:])))["params"]   # one compile, not one per layer
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    opt_state = tx.init(params)
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, k_step):
        p, s = carry
        idx = jax.random.randint(k_step, (batch_size,), 0, xd.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(p, xd[idx], yd[idx])
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    # A Python loop over one jitted step: on XLA:CPU, convolutions inside a scan body run
    # an order of magnitude slower than in a top-level computation.
    step_fn = jax.jit(step, donate_argnums=0)
    carry, losses = (params, opt_state), []
    for k_step in jax.random.split(data_key, steps):
        carry, loss = step_fn(carry, k_step)
        losses.append(loss)
    return TrainedFeatureNet(model, carry[0], (x.shape[1], x.shape[2]),
                             np.asarray(jnp.stack(losses)))


def classifier_accuracy(net: TrainedFeatureNet, images: Any, labels: Any,
                        batch_size: int = 1024) -> float:
    """Fraction of ``images`` whose argmax logit equals ``labels``."""
    x, y = _check_images(images), np.asarray(labels)
    logits_fn = jax.jit(lambda p, b: net.model.apply({"params": p}, b))
    pred = np.concatenate([np.asarray(jnp.argmax(logits_fn(net.params, x[i:i + batch_size]), -1))
                           for i in range(0, len(x), batch_size)])
    return float(np.mean(pred == y))


_CONFIG = "feature_net.json"
_PARAMS = "params"


def save_feature_net(directory: str | os.PathLike, net: TrainedFeatureNet) -> str:
    """Save params (orbax StandardCheckpointer) and ``feature_net.json`` under ``directory``."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(directory, _PARAMS), net.params, force=True)
    ckpt.wait_until_finished()
    write_text_atomic(os.path.join(directory, _CONFIG), json.dumps(net.config(), indent=2))
    return directory


def load_feature_net(directory: str | os.PathLike) -> TrainedFeatureNet:
    """Restore a net written by :func:`save_feature_net`."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    cfg_path = os.path.join(directory, _CONFIG)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"no feature net at {directory!r} (missing {_CONFIG}); "
                                "train one with `stepwise train-features`")
    with open(cfg_path) as f:
        cfg = json.load(f)
    model = DomainCNN(num_classes=cfg["num_classes"], feature_dim=cfg["feature_dim"],
                      widths=tuple(cfg["widths"]))
    shape = tuple(cfg["image_shape"])
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract["params"])
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, _PARAMS), target)
    return TrainedFeatureNet(model, params, shape)


# ----------------------------------------------------------------------------- extractors
def feature_net_extractor(net: TrainedFeatureNet) -> FeatureExtractor:
    """Penultimate-layer features of a trained :class:`DomainCNN`."""
    model = net.model

    def apply(params, batch):
        return model.apply({"params": params}, batch, method=DomainCNN.features)

    return FeatureExtractor("domain_cnn", apply, net.params, model.feature_dim,
                            tuple(net.image_shape))


def identity_features(batch: jax.Array) -> jax.Array:
    """Flatten each example: (b, ...) -> (b, prod(...))."""
    return jnp.reshape(batch, (batch.shape[0], -1))


def identity_extractor(dim: int) -> FeatureExtractor:
    """Identity features for ``dim``-dimensional vectors (or images of ``dim`` pixels)."""
    return FeatureExtractor("identity", lambda params, b: identity_features(b), {}, int(dim),
                            (int(dim),))


def inception_extractor(params: Any, data_format: str = "NHWC") -> FeatureExtractor:
    """FID Inception-v3 pool3 features (2048-d) of images in [-1, 1], any size."""
    return FeatureExtractor("inception", _inception.inception_apply_fn(data_format), params,
                            _inception.INCEPTION_FEATURE_DIM)


# ----------------------------------------------------------------------------- extraction
def _mesh(devices: Sequence[jax.Device] | None) -> Mesh:
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices: need at least one device")
    return Mesh(np.array(devs), ("data",))


def stream_features(extractor: FeatureExtractor, data: Any, *, batch_size: int = 256,
                    devices: Sequence[jax.Device] | None = None) -> Iterator[np.ndarray]:
    """Yield (b, dim) float32 feature batches of ``data`` (an (n, ...) array, np.memmap, or
    anything sliceable with ``len``).

    Each batch (``batch_size`` rounded up to a multiple of the device count) is placed with
    ``NamedSharding(mesh, P("data"))`` over a 1-D mesh of ``devices``; params are replicated.
    The last batch is zero-padded to the full size (one compiled shape) and the padding rows
    are dropped from the output.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    bs = -(-batch_size // ndev) * ndev
    data_sharding = NamedSharding(mesh, P("data"))
    params = jax.device_put(extractor.params, NamedSharding(mesh, P()))
    n = len(data)
    for start in range(0, n, bs):
        chunk = extractor.prepare(data[start:start + bs])
        m = chunk.shape[0]
        if m < bs:
            chunk = np.concatenate([chunk, np.zeros((bs - m, *chunk.shape[1:]), chunk.dtype)])
        out = extractor._jitted(params, jax.device_put(chunk, data_sharding))
        feats = np.asarray(out, np.float32)
        if feats.shape != (bs, extractor.dim):
            raise ValueError(f"{extractor.name}: apply returned shape {feats.shape}, "
                             f"expected ({bs}, {extractor.dim})")
        yield feats[:m]


def extract_features(extractor: FeatureExtractor, data: Any, *, batch_size: int = 256,
                     devices: Sequence[jax.Device] | None = None) -> np.ndarray:
    """All features of ``data`` as one (n, dim) float32 array (see :func:`stream_features`)."""
    parts = list(stream_features(extractor, data, batch_size=batch_size, devices=devices))
    if not parts:
        return np.zeros((0, extractor.dim), np.float32)
    return np.concatenate(parts)


def feature_stats(extractor: FeatureExtractor, data: Any, *, batch_size: int = 256,
                  devices: Sequence[jax.Device] | None = None):
    """Mean/covariance (float64) of the features of ``data``, never holding all features."""

    return stats_from_batches(stream_features(extractor, data, batch_size=batch_size,
                                              devices=devices), dim=extractor.dim)
