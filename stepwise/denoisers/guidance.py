"""Classifier-free guidance and thresholding of the data prediction.

CFG (Ho & Salimans 2022): with guidance scale w, pred = pred_u + w (pred_c - pred_u); w = 1 is the
plain conditional model. The two branches run as ONE call on a doubled batch (one NFE).
Guiding eps or x0 is the same thing at fixed x (x0 = (x - sigma eps) / alpha is affine in eps).

Thresholding (Saharia et al. 2022, Imagen; diffusers' ``thresholding``): static clipping of x0 to
[-max, max], or dynamic: s = clip(quantile_ratio(|x0|), 1, max) per sample, x0 <- clip(x0, -s, s) / s.
eps is then recomputed from the thresholded x0 so both stay consistent.
"""
from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from stepwise.denoisers.base import Wrapper, _bcast, x0_eps

NULL_LABEL = -1  # the unconditional "class" of label-conditioned denoisers

NO_THRESHOLD, STATIC, DYNAMIC = 0, 1, 2
THRESHOLD_CODES = {"none": NO_THRESHOLD, "static": STATIC, "dynamic": DYNAMIC}


class Thresholding(eqx.Module):
    """Plan-level thresholding option (array leaves: searchable values, no retrace)."""

    kind: jnp.ndarray
    ratio: jnp.ndarray
    max_value: jnp.ndarray

    def __init__(self, kind="none", ratio: float = 0.995, max_value: float = 1.0):
        if isinstance(kind, str):
            if kind not in THRESHOLD_CODES:
                raise ValueError(f"thresholding: unknown kind {kind!r}; allowed: {sorted(THRESHOLD_CODES)}")
            kind = THRESHOLD_CODES[kind]
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"thresholding.ratio: must be in (0, 1], got {ratio}")
        if max_value <= 0:
            raise ValueError(f"thresholding.max_value: must be positive, got {max_value}")
        self.kind = jnp.asarray(kind, jnp.int32)
        self.ratio = jnp.asarray(ratio)
        self.max_value = jnp.asarray(max_value)


def threshold_x0(x0, th: Thresholding):
    """Apply static or dynamic thresholding to a batch of data predictions."""
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.quantile(flat, th.ratio.astype(x0.dtype), axis=1)
    s = jnp.clip(s, 1.0, th.max_value.astype(x0.dtype))
    s = _bcast(s, x0)
    dynamic = jnp.clip(x0, -s, s) / s
    static = jnp.clip(x0, -th.max_value.astype(x0.dtype), th.max_value.astype(x0.dtype))
    return jnp.where(th.kind == DYNAMIC, dynamic, jnp.where(th.kind == STATIC, static, x0))


def null_condition(cond, model=None):
    """The unconditional counterpart of a condition batch: the model's own (``model.null_condition``,
    e.g. an empty-prompt embedding; wrappers are looked through), else labels -> NULL_LABEL."""
    while model is not None:
        own = getattr(type(model), "null_condition", None)
        if own is not None:
            return model.null_condition(cond)
        model = getattr(model, "inner", None)
    return jnp.full_like(cond, NULL_LABEL)


def guided_x0_eps(model, x, t, cond=None, scale=1.0, threshold: Thresholding | None = None):
    """(x0, eps) of a (guided, thresholded) denoiser evaluation; CFG runs as one doubled batch."""
    if cond is None:
        x0, eps = x0_eps(model, x, t)
    else:
        def single(_):
            return x0_eps(model, x, t, cond)

        def doubled(_):
            both = x0_eps(model, jnp.concatenate([x, x]), t,
                          jnp.concatenate([cond, null_condition(cond, model)]))
            b = x.shape[0]
            w = jnp.asarray(scale, x.dtype)
            return tuple(p[b:] + w * (p[:b] - p[b:]) for p in both)

        x0, eps = lax.cond(jnp.asarray(scale) == 1.0, single, doubled, None)
    if threshold is not None:
        x0 = threshold_x0(x0, threshold)
        t_ = jnp.asarray(t, x.dtype)
        a, s = _bcast(model.schedule.alpha(t_), x), _bcast(model.schedule.sigma(t_), x)
        eps = (x - a * x0) / s
    return x0, eps


class Guided(Wrapper):
    """A label-conditioned denoiser with classifier-free guidance (and optionally thresholding)
    baked in: an x0-predicting denoiser of the guided ODE, so every sampler, reference solve and
    search applies unchanged, and the reference solve of this denoiser is the exact guided
    (thresholded) ODE endpoint.

    Sample i of a batch gets label ``i % num_classes`` unless ``cond`` is given (chunks whose size
    is a multiple of ``num_classes`` see the same labels); one call is one NFE of a doubled batch.

    It has no ``moments()``: the guided ODE's endpoint distribution has no closed form (it is not
    the mixture with sharpened components), so exact-moment objectives refuse it and comparisons
    are paired, against the reference solve of this denoiser.
    """

    scale: float = eqx.field(static=True, default=1.0)
    threshold: Thresholding | None = None

    @property
    def prediction(self):
        return "x0"

    @property
    def cost(self):
        return 2.0 * self.inner.cost

    def labels(self, n: int):
        return jnp.arange(n) % self.inner.num_classes

    def __call__(self, x, t, cond=None):
        labels = self.labels(x.shape[0]) if cond is None else cond
        return guided_x0_eps(self.inner, x, t, labels, self.scale, self.threshold)[0]
