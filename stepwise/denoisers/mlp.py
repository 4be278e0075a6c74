"""An MLP denoiser network for vector data (flat images, low-dimensional toy data).

Residual MLP blocks (LayerNorm, SiLU, Dense) conditioned on a sinusoidal noise-level embedding and an
optional class embedding (with a null class for classifier-free guidance). Same call signature as
``denoisers.unet.UNet``: ``__call__(x, c_noise, labels=None)`` with x of shape (B, d); wrap it in
``denoisers.unet.FlaxDenoiser`` to obtain a denoiser.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from stepwise.denoisers.embeddings import preset_kwargs, timestep_embedding
from stepwise.denoisers.skipping import bypassable, unit_flags


class MLP(nn.Module):
    out_dim: int
    width: int = 256
    depth: int = 3
    emb_dim: int = 64
    num_class_embeds: int | None = None

    def skippable_units(self) -> tuple[str, ...]:
        """Every residual block (h + f(h) -> h) may be bypassed by a per-call ``skip`` mask."""
        return tuple(f"block_{i}" for i in range(self.depth))

    @nn.compact
    def __call__(self, x, c_noise, labels=None, skip=None):
        """``skip`` (optional, (depth,), 0/1): residual block i is bypassed where ``skip[i] = 1``."""
        flag = unit_flags(self.skippable_units(), skip).get
        c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), x.shape[:1])
        emb = timestep_embedding(c_noise, self.emb_dim).astype(x.dtype)
        emb = nn.Dense(self.width, name="time_1")(emb)
        emb = nn.Dense(self.width, name="time_2")(nn.silu(emb))
        if self.num_class_embeds is not None:
            if labels is None:
                raise ValueError("MLP: this network is class-conditional; pass labels")
            emb = emb + nn.Embed(self.num_class_embeds, self.width, name="class_embedding")(labels)
        h = nn.Dense(self.width, name="dense_in")(x)
        for i in range(self.depth):
            h = bypassable(self, flag(f"block_{i}"), lambda mdl, h, e: h,
                           lambda mdl, h, e, i=i: h + mdl._block(i, h, e), h, emb)
        h = nn.silu(nn.LayerNorm(name="norm_out")(h))
        return nn.Dense(self.out_dim, name="dense_out", kernel_init=nn.initializers.zeros)(h)

    def _block(self, i: int, h, emb):
        """Residual branch of block i (LayerNorm + embedding, Dense-SiLU-Dense)."""
        r = nn.silu(nn.LayerNorm(name=f"block_{i}_norm")(h) + nn.Dense(self.width, name=f"block_{i}_emb")(
            nn.silu(emb)))
        r = nn.Dense(self.width * 2, name=f"block_{i}_dense1")(r)
        return nn.Dense(self.width, name=f"block_{i}_dense2")(nn.silu(r))


MLP_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(width=128, depth=2),
    "large": dict(width=384, depth=4),
}


def mlp_kwargs(preset: str, **overrides) -> dict:
    """Keyword arguments of the MLP preset ``preset`` (see ``MLP_PRESETS``) with ``overrides``."""
    return preset_kwargs(MLP_PRESETS, "mlp", preset, **overrides)
