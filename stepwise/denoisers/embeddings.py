"""Pieces shared by the Flax networks (UNet, MLP): the noise-level embedding and named presets."""
from __future__ import annotations

import math

import jax.numpy as jnp


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0):
    """Sinusoidal embedding of a (B,) array of (possibly fractional) noise levels: (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    arg = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def preset_kwargs(presets: dict, network: str, preset: str, **overrides) -> dict:
    """Constructor keyword arguments of a named preset of ``network``, with ``overrides`` applied."""
    if preset not in presets:
        raise ValueError(f"{network} preset: unknown {preset!r}; allowed: {sorted(presets)}")
    return {**presets[preset], **overrides}
