"""A Flax (Linen) UNet in the DDPM++/ADM style, and the wrapper that makes any Flax network a denoiser.

Architecture (Ho et al. 2020; Song et al. 2021 "DDPM++"; Dhariwal & Nichol 2021 "ADM"): a 3x3 input
convolution, a stack of down blocks (residual blocks with GroupNorm + SiLU and a projected noise-level
embedding, optional self-attention, a strided-conv downsampler), a middle block (residual, attention,
residual), up blocks fed by skip connections (nearest-neighbour upsampling + conv), and GroupNorm + SiLU + a
3x3 output convolution. The noise level enters through a sinusoidal embedding and a two-layer MLP; an
optional class embedding is added to it (with one extra "null" class for classifier-free guidance).

Submodule names follow the layout of diffusers' ``UNet2DModel`` (``conv_in``, ``time_embedding.linear_1``,
``down_blocks_<i>.resnets_<j>.conv1`` ...), so ``denoisers.diffusers_import`` maps a PyTorch state dict onto
this network name by name
(a diffusers path ``down_blocks.0.resnets.1`` is the top-level Flax module ``down_blocks_0__resnets_1``).
Images are NHWC: the denoiser's ``data_shape`` is ``(H, W, C)``.

Noise-level input convention (``FlaxDenoiser.time_input``): the network receives
``c_noise = scale * f(t) + shift`` with ``f`` either ``t`` itself (``"t"``) or the half log-SNR
``lambda(t) = log alpha - log sigma`` (``"logsnr"``). Networks trained here use ``("logsnr", 50.0, 0.0)``,
which is defined for every schedule (VP, EDM, flow); imported DDPM checkpoints use
``("t", N, -1.0)``: the discrete step index n = N t - 1 in DPM-Solver's convention t_n = (n+1)/N.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.denoisers.base import Denoiser, check_prediction
from stepwise.denoisers.embeddings import preset_kwargs, timestep_embedding
from stepwise.denoisers.mlp import MLP
from stepwise.denoisers.skipping import bypassable, call_flops, unit_flags

DOWN_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_TYPES = ("UpBlock2D", "AttnUpBlock2D")


class TimestepEmbedding(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, e):
        e = nn.Dense(self.dim, name="linear_1")(e)
        return nn.Dense(self.dim, name="linear_2")(nn.silu(e))


class ResnetBlock(nn.Module):
    out_channels: int
    groups: int
    eps: float = 1e-5
    time_scale_shift: str = "default"   # "default": h + emb ; "scale_shift": norm(h) * (1 + s) + b (ADM)
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x, temb, skip=None):
        """(shortcut(x) + f(x, temb)) / output_scale_factor; with ``skip`` = 1 the residual branch f is
        not computed (the block is its shortcut: the identity, or the 1x1 conv when the width changes)."""
        return bypassable(self, skip, ResnetBlock._shortcut, ResnetBlock._full, x, temb)

    def _shortcut(self, x, temb):
        if x.shape[-1] != self.out_channels:
            x = nn.Conv(self.out_channels, (1, 1), name="conv_shortcut")(x)
        return x / self.output_scale_factor

    def _full(self, x, temb):
        h = nn.silu(nn.GroupNorm(self.groups, epsilon=self.eps, name="norm1")(x))
        h = nn.Conv(self.out_channels, (3, 3), padding=1, name="conv1")(h)
        mult = 2 if self.time_scale_shift == "scale_shift" else 1
        e = nn.Dense(self.out_channels * mult, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
        if self.time_scale_shift == "scale_shift":
            scale, shift = jnp.split(e, 2, axis=-1)
            h = nn.GroupNorm(self.groups, epsilon=self.eps, name="norm2")(h) * (1.0 + scale) + shift
        else:
            h = nn.GroupNorm(self.groups, epsilon=self.eps, name="norm2")(h + e)
        h = nn.Conv(self.out_channels, (3, 3), padding=1, name="conv2")(nn.silu(h))
        if x.shape[-1] != self.out_channels:
            x = nn.Conv(self.out_channels, (1, 1), name="conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class SelfAttention(nn.Module):
    """Spatial multi-head self-attention with a pre-GroupNorm and a residual connection."""

    head_dim: int
    groups: int
    eps: float = 1e-5
    rescale_output_factor: float = 1.0

    @nn.compact
    def __call__(self, x, skip=None):
        """x + attention(x) (rescaled); with ``skip`` = 1 only the residual x (rescaled) is returned."""
        return bypassable(self, skip, lambda mdl, x: x / mdl.rescale_output_factor, SelfAttention._full, x)

    def _full(self, x):
        b, hgt, wid, c = x.shape
        heads = max(c // self.head_dim, 1)
        dh = c // heads
        h = nn.GroupNorm(self.groups, epsilon=self.eps, name="group_norm")(x).reshape(b, hgt * wid, c)
        q = nn.Dense(c, name="to_q")(h).reshape(b, -1, heads, dh)
        k = nn.Dense(c, name="to_k")(h).reshape(b, -1, heads, dh)
        v = nn.Dense(c, name="to_v")(h).reshape(b, -1, heads, dh)
        w = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(v.dtype)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hgt * wid, c)
        o = nn.Dense(c, name="to_out_0")(o).reshape(b, hgt, wid, c)
        return (o + x) / self.rescale_output_factor


class UNet(nn.Module):
    """UNet on NHWC images; ``__call__(x, c_noise, labels=None)`` with c_noise (B,) and labels (B,) int.

    Fields mirror diffusers' ``UNet2DModel`` config (so imported checkpoints and our presets share code).
    ``num_class_embeds``: number of label embeddings (include the null class for guidance), or None.
    ``patch_size`` p > 1 (not a diffusers field; 1 for imported checkpoints) runs the whole network on
    (H/p, W/p, p*p*C) patches (:func:`space_to_depth`) and unpacks the output: about p*p times cheaper
    at the same widths, which is what makes 32x32 training fit a CPU budget.
    """

    out_channels: int
    block_out_channels: Sequence[int] = (32, 64)
    down_block_types: Sequence[str] = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: Sequence[str] = ("AttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int | None = 8
    norm_num_groups: int = 8
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    time_embedding_dim: int | None = None
    num_class_embeds: int | None = None
    mid_block: bool = True
    add_attention: bool = True
    mid_block_scale_factor: float = 1.0
    resnet_time_scale_shift: str = "default"
    downsample_padding: int = 1
    patch_size: int = 1

    def setup_check(self):
        n = len(self.block_out_channels)
        if int(self.patch_size) < 1:
            raise ValueError(f"UNet: patch_size must be >= 1, got {self.patch_size}")
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError("UNet: block_out_channels, down_block_types and up_block_types differ in length")
        for kind in self.down_block_types:
            if kind not in DOWN_TYPES:
                raise ValueError(f"UNet: unsupported down block {kind!r}; supported: {DOWN_TYPES}")
        for kind in self.up_block_types:
            if kind not in UP_TYPES:
                raise ValueError(f"UNet: unsupported up block {kind!r}; supported: {UP_TYPES}")
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            raise ValueError(f"UNet: resnet_time_scale_shift {self.resnet_time_scale_shift!r} unsupported")

    def _head_dim(self, channels):
        return self.attention_head_dim if self.attention_head_dim is not None else channels

    def skippable_units(self) -> tuple[str, ...]:
        """Names of the units a per-call ``skip`` mask may bypass, in mask order: every residual block
        (skipped, it is its shortcut: the identity or its 1x1 conv) and every self-attention block
        (skipped, the identity), down path, middle, up path. The in/out convolutions, the resamplers
        and the embeddings always run."""
        units = []
        for i, kind in enumerate(self.down_block_types):
            for j in range(self.layers_per_block):
                units.append(f"down_blocks_{i}__resnets_{j}")
                if kind == "AttnDownBlock2D":
                    units.append(f"down_blocks_{i}__attentions_{j}")
        if self.mid_block:
            units.append("mid_block__resnets_0")
            if self.add_attention:
                units.append("mid_block__attentions_0")
            units.append("mid_block__resnets_1")
        for i, kind in enumerate(self.up_block_types):
            for j in range(self.layers_per_block + 1):
                units.append(f"up_blocks_{i}__resnets_{j}")
                if kind == "AttnUpBlock2D":
                    units.append(f"up_blocks_{i}__attentions_{j}")
        return tuple(units)

    @nn.compact
    def __call__(self, x, c_noise, labels=None, skip=None):
        """``skip`` (optional, shape (len(skippable_units()),), 0/1): unit k is bypassed where
        ``skip[k] = 1`` (AutoDiffusion's per-step architecture, Li et al. 2023); None runs all."""
        self.setup_check()
        flag = unit_flags(self.skippable_units(), skip).get
        chans = tuple(self.block_out_channels)
        g, eps = self.norm_num_groups, self.norm_eps
        res = dict(groups=g, eps=eps, time_scale_shift=self.resnet_time_scale_shift)
        temb_dim = self.time_embedding_dim or chans[0] * 4
        c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), x.shape[:1])
        emb = timestep_embedding(c_noise, chans[0], self.flip_sin_to_cos, self.freq_shift).astype(x.dtype)
        emb = TimestepEmbedding(temb_dim, name="time_embedding")(emb)
        if self.num_class_embeds is not None:
            if labels is None:
                raise ValueError("UNet: this network is class-conditional; pass labels")
            emb = emb + nn.Embed(self.num_class_embeds, temb_dim, name="class_embedding")(labels)

        patch = int(self.patch_size)
        h = nn.Conv(chans[0], (3, 3), padding=1, name="conv_in")(space_to_depth(x, patch))
        skips = [h]
        for i, kind in enumerate(self.down_block_types):
            out = chans[i]
            for j in range(self.layers_per_block):
                name = f"down_blocks_{i}__resnets_{j}"
                h = ResnetBlock(out, **res, name=name)(h, emb, flag(name))
                if kind == "AttnDownBlock2D":
                    name = f"down_blocks_{i}__attentions_{j}"
                    h = SelfAttention(self._head_dim(out), g, eps, name=name)(h, flag(name))
                skips.append(h)
            if i < len(chans) - 1:
                p = self.downsample_padding
                pad = ((p, p), (p, p)) if p else ((0, 1), (0, 1))
                h = nn.Conv(out, (3, 3), strides=(2, 2), padding=pad,
                            name=f"down_blocks_{i}__downsamplers_0__conv")(h)
                skips.append(h)

        if self.mid_block:
            s = self.mid_block_scale_factor
            for k in (0, 1):
                name = f"mid_block__resnets_{k}"
                h = ResnetBlock(chans[-1], **res, output_scale_factor=s, name=name)(h, emb, flag(name))
                if k == 0 and self.add_attention:
                    ag = self.attn_norm_num_groups or g
                    h = SelfAttention(self._head_dim(chans[-1]), ag, eps, s, name="mid_block__attentions_0")(
                        h, flag("mid_block__attentions_0"))

        rev = chans[::-1]
        for i, kind in enumerate(self.up_block_types):
            out = rev[i]
            for j in range(self.layers_per_block + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                name = f"up_blocks_{i}__resnets_{j}"
                h = ResnetBlock(out, **res, name=name)(h, emb, flag(name))
                if kind == "AttnUpBlock2D":
                    name = f"up_blocks_{i}__attentions_{j}"
                    h = SelfAttention(self._head_dim(out), g, eps, name=name)(h, flag(name))
            if i < len(chans) - 1:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(out, (3, 3), padding=1, name=f"up_blocks_{i}__upsamplers_0__conv")(h)
        h = nn.silu(nn.GroupNorm(g, epsilon=eps, name="conv_norm_out")(h))
        return depth_to_space(nn.Conv(self.out_channels * patch * patch, (3, 3), padding=1, name="conv_out")(h),
                              patch)


def space_to_depth(x, p: int):
    """(B, H, W, C) -> (B, H/p, W/p, p*p*C): each p x p patch becomes one pixel ("patchify", as in
    Hoogeboom et al. 2023, "simple diffusion"; p = 1 is the identity). H and W must divide by p."""
    if p == 1:
        return x
    b, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"UNet: patch_size {p} must divide the image size {h}x{w}")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x, p: int):
    """Inverse of :func:`space_to_depth`: (B, h, w, p*p*C) -> (B, h*p, w*p, C)."""
    if p == 1:
        return x
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, p, p, c // (p * p)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * p, w * p, c // (p * p))


# Named presets (16x16 or 32x32 images). ``large`` costs about 9x ``small`` per forward pass (XLA
# FLOPs: 264 vs 28.6 M per 16x16 sample, 1189 vs 127 M per 32x32 one); ``xl`` (the former ``large``,
# 6.8 M parameters) about 24x, for accelerators. Measured: benchmarks/RESULTS_denoisers.md.
_ATTN_DOWN = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
_ATTN_UP = ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                  attention_head_dim=32, norm_num_groups=8),
    "large": dict(block_out_channels=(48, 96, 96), down_block_types=_ATTN_DOWN, up_block_types=_ATTN_UP,
                  layers_per_block=1, attention_head_dim=32, norm_num_groups=16),
    "xl": dict(block_out_channels=(64, 128, 128), down_block_types=_ATTN_DOWN, up_block_types=_ATTN_UP,
               layers_per_block=2, attention_head_dim=32, norm_num_groups=16),
}


def unet_kwargs(preset: str, **overrides) -> dict:
    """Keyword arguments of the UNET preset ``preset`` (see ``UNET_PRESETS``) with ``overrides``."""
    return preset_kwargs(UNET_PRESETS, "unet", preset, **overrides)


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(u) for u in v)
    return v


def build_network(arch: str, kwargs: dict) -> nn.Module:
    """Build a Flax network from a JSON-able description (used by training and checkpoint loading)."""
    kwargs = {k: _freeze(v) for k, v in kwargs.items()}
    if arch == "unet":
        return UNet(**kwargs)
    if arch == "mlp":
        return MLP(**kwargs)
    raise ValueError(f"network: unknown arch {arch!r}; allowed: ['unet', 'mlp']")


def noise_input(schedule, t, time_input: tuple):
    """The network's noise-level input c_noise for times t (see the module docstring)."""
    kind, scale, shift = time_input
    if kind == "t":
        f = t
    elif kind == "logsnr":
        f = schedule.lambda_(t)
    else:
        raise ValueError(f"time_input: unknown kind {kind!r}; allowed: ['t', 'logsnr']")
    return scale * f + shift


class FlaxDenoiser(Denoiser):
    """A Flax network and its parameters as a contract-following denoiser.

    ``params`` (a PyTree of arrays) is the only dynamic part besides the schedule's arrays and
    ``data_mean``; the network (``module``) and all metadata are static fields, so ``eqx.filter_jit``
    compiles once per structure and reuses the executable when only parameter values change.

    The call computes ``net(c_in(t) * x, c_noise(t), labels)`` where ``c_in = 1/sqrt(alpha^2 sd^2 + sigma^2)``
    when ``scale_input`` is set (sd = ``sigma_data``; 1 for VP schedules when sd = 1) and 1 otherwise, and
    ``c_noise`` follows ``time_input`` (see ``noise_input``). ``cond`` is an int label array (B,) or None;
    None selects ``null_class`` (the unconditional embedding) for class-conditional networks.
    """

    params: Any
    schedule: Any
    data_mean: jnp.ndarray
    module: nn.Module = eqx.field(static=True)
    prediction: str = eqx.field(static=True)
    data_shape: tuple = eqx.field(static=True)
    cost: float = eqx.field(static=True, default=1.0)
    time_input: tuple = eqx.field(static=True, default=("logsnr", 50.0, 0.0))
    scale_input: bool = eqx.field(static=True, default=False)
    sigma_data: float = eqx.field(static=True, default=0.5)
    null_class: int | None = eqx.field(static=True, default=None)
    skip: Any = None          # (len(skip_units),) 0/1 mask applied to every call (None: all units run)

    @property
    def num_classes(self) -> int:
        """Classes of a conditional network (the null class excluded), 0 if unconditional."""
        return 0 if self.null_class is None else int(self.null_class)

    def __init__(self, module, params, prediction, schedule, data_shape, cost=1.0, data_mean=None,
                 time_input=("logsnr", 50.0, 0.0), scale_input=False, sigma_data=0.5, null_class=None, skip=None):
        self.module, self.params, self.schedule = module, params, schedule
        self.prediction = check_prediction(prediction)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.cost = float(cost)
        self.data_mean = (jnp.zeros(self.data_shape, jnp.float32) if data_mean is None
                          else jnp.asarray(data_mean, jnp.float32).reshape(self.data_shape))
        self.time_input = (str(time_input[0]), float(time_input[1]), float(time_input[2]))
        self.scale_input, self.sigma_data = bool(scale_input), float(sigma_data)
        self.null_class = None if null_class is None else int(null_class)
        self.skip = skip

    @property
    def skip_units(self) -> tuple[str, ...]:
        units = getattr(self.module, "skippable_units", None)
        return tuple(units()) if units is not None else ()

    def with_skip(self, mask) -> "FlaxDenoiser":
        """This denoiser with the skip mask ``mask`` (1 = unit bypassed; see ``skip_units``)."""
        mask = mask if isinstance(mask, np.ndarray) else jnp.asarray(mask)   # NumPy: a constant (one branch traced)
        if mask.shape != (len(self.skip_units),):
            raise ValueError(f"skip: mask of shape {mask.shape}, expected ({len(self.skip_units)},) for the "
                             f"units {list(self.skip_units)}")
        if not self.skip_units:
            return self
        return eqx.tree_at(lambda m: m.skip, self, mask, is_leaf=lambda v: v is None)

    def __call__(self, x, t, cond=None):
        if x.shape[1:] != self.data_shape:
            raise ValueError(f"FlaxDenoiser: x has shape {x.shape}, expected (batch, *{self.data_shape})")
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        if self.scale_input:
            a, s = self.schedule.alpha(t), self.schedule.sigma(t)
            c_in = jax.lax.rsqrt(a**2 * self.sigma_data**2 + s**2)
            x_in = x * c_in.reshape((-1,) + (1,) * (x.ndim - 1))
        else:
            x_in = x
        c_noise = noise_input(self.schedule, t, self.time_input)
        labels = cond
        if labels is None and self.null_class is not None:
            labels = jnp.full(x.shape[:1], self.null_class, jnp.int32)
        elif labels is not None:
            labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), x.shape[:1])
            if self.null_class is not None:  # label -1 (denoisers.NULL_LABEL) = unconditional
                labels = jnp.where(labels < 0, self.null_class, labels)
        if self.skip is None:
            return self.module.apply({"params": self.params}, x_in, c_noise, labels).astype(x.dtype)
        return self.module.apply({"params": self.params}, x_in, c_noise, labels, skip=self.skip).astype(x.dtype)

    def with_params(self, params) -> "FlaxDenoiser":
        return eqx.tree_at(lambda m: m.params, self, params)

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(p.shape) for p in jax.tree.leaves(self.params)))


def init_params(module: nn.Module, key, data_shape, num_class_embeds: int | None = None):
    """Initialise a network's parameters for inputs of ``data_shape`` (a batch of 1), as ONE compiled
    program (run eagerly, every initializer is its own XLA compile: minutes for a UNet on a CPU)."""
    x = jnp.zeros((1,) + tuple(data_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if num_class_embeds else None
    return jax.jit(module.init)(key, x, jnp.zeros((1,), jnp.float32), labels)["params"]


def forward_seconds(model, batch: int = 256, repeats: int = 3) -> float:
    """Measured wall time of one jitted forward pass at ``batch`` (best of ``repeats``), in seconds."""
    import time

    x = jnp.zeros((batch,) + tuple(model.data_shape), jnp.float32)
    t = jnp.full((batch,), 0.5, jnp.float32)
    f = eqx.filter_jit(lambda m, x, t: m(x, t))
    f(model, x, t).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(model, x, t).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return best


def forward_flops(model: FlaxDenoiser, batch: int = 256) -> float:
    """FLOPs of one forward pass per sample, from XLA's cost analysis of the compiled call at ``batch``
    (``denoisers.skipping.call_flops``)."""
    return call_flops(model, batch=batch, compiled=True)
