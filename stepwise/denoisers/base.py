"""The denoiser contract and conversions between parameterisations.

A denoiser is an ``equinox.Module`` (a PyTree: its array leaves are parameters) with

* ``prediction``: one of ``PREDICTIONS`` (what ``__call__`` returns),
* ``schedule``: the noise schedule it was trained with,
* ``cost``: relative cost of one evaluation per sample (FLOPs where known),
* ``data_mean``: the data mean (used by the analytical first step; zeros if unknown),
* ``__call__(x, t, cond=None)``: x of shape (batch, *data_shape), t a scalar or (batch,).

With ``x_t = alpha x0 + sigma eps`` the parameterisations relate as
``v = alpha eps - sigma x0`` (Salimans & Ho 2022), ``score = -eps / sigma``,
``flow = alpha' x0 + sigma' eps`` (the velocity dx_t/dt).
"""

import abc
from typing import Any

import equinox as eqx
from equinox import AbstractVar
import jax
import jax.numpy as jnp

PREDICTIONS = ("eps", "x0", "v", "score", "flow")


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"prediction: unknown kind {kind!r}; allowed: {list(PREDICTIONS)}")
    return kind


def _bcast(a, x):
    a = jnp.asarray(a, dtype=x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _alpha_sigma_and_rates(schedule, t):
    alpha, dalpha = jax.jvp(schedule.alpha, (t,), (jnp.ones_like(t),))
    sigma, dsigma = jax.jvp(schedule.sigma, (t,), (jnp.ones_like(t),))
    return alpha, sigma, dalpha, dsigma


def to_x0_eps(pred, kind: str, x, t, schedule):
    """Return (x0, eps) implied by a prediction of the given kind at (x, t)."""
    check_prediction(kind)
    t = jnp.asarray(t, dtype=x.dtype)
    if kind == "flow":
        a, s, da, ds = (_bcast(v, x) for v in _alpha_sigma_and_rates(schedule, t))
        det = a * ds - s * da
        return (ds * x - s * pred) / det, (a * pred - da * x) / det
    a, s = _bcast(schedule.alpha(t), x), _bcast(schedule.sigma(t), x)
    if kind == "x0":
        return pred, (x - a * pred) / s
    if kind == "eps":
        eps = pred
    elif kind == "score":
        eps = -s * pred
    else:  # v: x0 = (alpha x - sigma v)/(alpha^2+sigma^2), eps = (sigma x + alpha v)/(alpha^2+sigma^2)
        n = a**2 + s**2
        return (a * x - s * pred) / n, (s * x + a * pred) / n
    return (x - s * eps) / a, eps


def from_x0_eps(x0, eps, kind: str, x, t, schedule):
    """Express (x0, eps) at (x, t) as a prediction of the given kind (inverse of ``to_x0_eps``)."""
    check_prediction(kind)
    t = jnp.asarray(t, dtype=x.dtype)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "flow":
        a, s, da, ds = (_bcast(v, x) for v in _alpha_sigma_and_rates(schedule, t))
        return da * x0 + ds * eps
    a, s = _bcast(schedule.alpha(t), x), _bcast(schedule.sigma(t), x)
    if kind == "score":
        return -eps / s
    return a * eps - s * x0


def convert(pred, from_kind: str, to_kind: str, x, t, schedule):
    """Convert a prediction between parameterisations through the schedule."""
    x0, eps = to_x0_eps(pred, from_kind, x, t, schedule)
    return from_x0_eps(x0, eps, to_kind, x, t, schedule)


def x0_eps(model, x, t, cond=None):
    """Evaluate a denoiser and return its (x0, eps) predictions."""
    return to_x0_eps(model(x, t, cond), model.prediction, x, t, model.schedule)


CONTRACT = ("prediction", "schedule", "cost", "data_mean", "data_shape")


def check_denoiser(model, name: str = "denoiser") -> None:
    """Check the contract's attributes: ``prediction`` one of PREDICTIONS, ``data_shape`` a tuple of
    positive ints, ``cost`` a positive number, a ``schedule`` and a ``data_mean``. TypeError or
    ValueError naming the attribute."""
    missing = [a for a in CONTRACT if not hasattr(model, a)]
    if missing or not callable(model):
        raise TypeError(f"{name} ({type(model).__name__}): missing {missing or ['__call__']}; a denoiser "
                        "subclasses stepwise.denoisers.Denoiser (see stepwise/denoisers/base.py)")
    check_prediction(model.prediction)
    shape = model.data_shape
    if not isinstance(shape, tuple) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"{name}.data_shape: {shape!r} is invalid; allowed: a tuple of positive ints")
    cost = model.cost
    if isinstance(cost, (int, float)) and not (cost > 0 and cost < float("inf")):
        raise ValueError(f"{name}.cost: {cost!r} is invalid; allowed: a positive finite number")


class Denoiser(eqx.Module):
    """The denoiser contract, as an abstract module to subclass (diffrax's ``AbstractVar`` style).

    A subclass provides each attribute as a field or a property, and ``__call__(x, t, cond=None)``
    returning its ``prediction`` for x of shape (batch, *data_shape); they are checked when an
    instance is built (:func:`check_denoiser`).
    """

    prediction: AbstractVar[str]
    schedule: AbstractVar[Any]
    cost: AbstractVar[float]
    data_mean: AbstractVar[Any]
    data_shape: AbstractVar[tuple]

    @abc.abstractmethod
    def __call__(self, x, t, cond=None):
        """The model's prediction at (x, t) (class labels or other conditioning in ``cond``)."""

    def __check_init__(self):
        check_denoiser(self, type(self).__name__)

    @property
    def skip_units(self) -> tuple[str, ...]:
        """Names of the units a per-call skip mask may bypass (none unless the network has some)."""
        return ()

    def with_skip(self, mask) -> "Denoiser":
        """This denoiser with ``mask`` (shape (len(skip_units),), 1 = unit bypassed) applied to its
        calls; a denoiser without skippable units accepts only the empty mask."""
        if jnp.shape(mask) != (0,):
            raise ValueError(f"skip: {type(self).__name__} has no skippable units; a skip mask needs a network "
                             "that exposes them (the Flax UNet and MLP do)")
        return self


class Wrapper(Denoiser):
    """Base for denoisers that wrap another: the contract's attributes come from ``inner``."""

    inner: Denoiser

    @property
    def prediction(self):
        return self.inner.prediction

    @property
    def schedule(self):
        return self.inner.schedule

    @property
    def cost(self):
        return self.inner.cost

    @property
    def data_mean(self):
        return self.inner.data_mean

    @property
    def data_shape(self):
        return self.inner.data_shape

    @property
    def num_classes(self):
        return getattr(self.inner, "num_classes", 0)

    @property
    def skip_units(self):
        return self.inner.skip_units

    def with_skip(self, mask):
        return eqx.tree_at(lambda m: m.inner, self, self.inner.with_skip(mask))


class Converted(Wrapper):
    """Wrap a denoiser so that it returns another parameterisation of the same prediction."""

    to: str = eqx.field(static=True)

    def __init__(self, inner, prediction: str):
        self.inner, self.to = inner, check_prediction(prediction)

    @property
    def prediction(self):
        return self.to

    def __call__(self, x, t, cond=None):
        return convert(self.inner(x, t, cond), self.inner.prediction, self.to, x, t, self.schedule)


class LowPrecision(Wrapper):
    """Evaluate a denoiser in a lower precision (e.g. bfloat16); the sampler keeps its float32 state.

    Inputs and floating parameters are cast to ``dtype``; outputs come back in ``dtype`` and the
    executor casts them to the solver's dtype.
    """

    dtype: str = eqx.field(static=True, default="bfloat16")

    def __call__(self, x, t, cond=None):
        dt = jnp.dtype(self.dtype)
        low = jax.tree.map(lambda a: a.astype(dt) if eqx.is_inexact_array(a) else a, self.inner)
        return low(x.astype(dt), jnp.asarray(t).astype(dt), cond).astype(dt)
