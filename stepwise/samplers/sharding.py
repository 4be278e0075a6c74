"""Data parallelism with jax.sharding: the batch axis split over every device of a 1-D mesh.

The sampler's per-sample arithmetic is independent across the batch, so placing x_T (and the
condition) with a NamedSharding over a ("data",) mesh lets XLA partition the whole compiled scan;
no hand-written collectives are needed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def pad_batch(x, multiple: int):
    """Pad the leading axis to a multiple (repeating the last row); returns (padded, original size)."""
    n = x.shape[0]
    extra = (-n) % multiple
    if extra:
        x = jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)
    return x, n


def shard_batch(x, mesh: Mesh):
    """Place an array with its leading axis split over the mesh's data axis."""
    spec = P("data", *([None] * (x.ndim - 1)))
    return jax.device_put(x, NamedSharding(mesh, spec))
