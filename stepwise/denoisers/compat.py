"""Denoiser sets: compatibility checked once at construction, log-SNR re-timing, per-model costs.

The plan's ``model`` column picks the denoiser evaluated at each node (``samplers.sample`` switches
with ``lax.switch`` inside one compiled scan). Mixing models is only meaningful when they describe
the same data under the same forward process, so :class:`DenoiserSet` (through :func:`check_compatible`) refuses, before any
sampling, a set whose data shape, noise schedule or value range differ, and says what differs.

Re-timing (a model trained on another schedule). Both processes are ``x_t = alpha(t) x0 +
sigma(t) eps`` with the same data x0 and noise eps; only the path differs. At a time t of the
sampler's schedule O, let lambda = lambda_O(t) (half log-SNR). The model's own schedule I reaches
the same signal-to-noise ratio at t' = t_I(lambda) (its ``t_of_lambda``), where
alpha_I(t') / sigma_I(t') = alpha_O(t) / sigma_O(t). Hence

    x'_{t'} = alpha_I(t') x0 + sigma_I(t') eps = c x_t,   c = alpha_I(t') / alpha_O(t) = sigma_I(t') / sigma_O(t),

so calling the model at (c x_t, t') sees exactly the input distribution it was trained on. Its x0
and eps predictions are properties of (x0, eps), not of the path, so they are returned unchanged;
v, score and flow predictions are path-dependent and are converted to eps through schedule I at
(c x_t, t') first. VP vs VP (e.g. linear vs cosine) gives c = 1 only when alpha_I(t') = alpha_O(t),
which holds for every pair of variance-preserving schedules (alpha^2 = sigmoid(2 lambda) is fixed by
lambda): a pure time remap. VP vs EDM (alpha = 1, sigma = t) needs the scaling c = 1 / alpha_O(t)
(an EDM model driven by a VP sampler) or c = alpha_I(t') (a VP model driven by an EDM sampler).
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.denoisers.base import Wrapper, check_denoiser, check_prediction, to_x0_eps

SCHEDULE_RTOL = 1e-5     # relative tolerance when comparing log alpha / log sigma on a grid
MEAN_TOL = 0.1           # largest RMS difference of data means (in data units) accepted
LAMBDA_SLACK = 0.5       # half log-SNR a re-timed model may be extrapolated past its domain, each end


def _models(denoisers) -> tuple:
    if isinstance(denoisers, DenoiserSet):
        return denoisers.models
    if isinstance(denoisers, (list, tuple)):
        return tuple(denoisers)
    return (denoisers,)


def _concrete(tree) -> bool:
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(tree))


def _describe(schedule) -> str:
    try:
        d = schedule.describe()
    except Exception:  # noqa: BLE001 - a schedule without describe()
        return type(schedule).__name__
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _grid(schedule, n: int = 33) -> np.ndarray:
    lo, hi = float(schedule.t_min), float(schedule.t_max)
    return np.geomspace(lo, hi, n) if lo > 0 else np.linspace(lo, hi, n)


def _curves(schedule, ts: np.ndarray):
    t = jnp.asarray(ts, jnp.float32)
    la = np.asarray(schedule.log_alpha(t), np.float64)
    ls = np.asarray(schedule.log_sigma(t), np.float64)
    return la, ls


def same_schedule(a, b) -> bool:
    """True when two schedules define the same alpha(t) and sigma(t) on ``a``'s time domain."""
    if a is b:
        return True
    try:
        if type(a) is type(b) and a.describe() == b.describe():
            return True
    except Exception:  # noqa: BLE001
        pass
    if not (_concrete(a) and _concrete(b)):
        return True  # cannot compare traced schedules; the concrete call already checked them
    ts = _grid(a)
    with np.errstate(invalid="ignore"):
        la, sa = _curves(a, ts)
        lb, sb = _curves(b, ts)
    ok = np.all(np.isfinite(la)) and np.all(np.isfinite(lb)) and np.all(np.isfinite(sa)) and np.all(np.isfinite(sb))
    return bool(ok and np.allclose(la, lb, rtol=SCHEDULE_RTOL, atol=1e-6)
                and np.allclose(sa, sb, rtol=SCHEDULE_RTOL, atol=1e-6))


def lambda_range(schedule) -> tuple[float, float]:
    """(lambda at t_max, lambda at t_min): the half log-SNR interval a schedule covers."""
    lam = np.asarray(schedule.lambda_(jnp.asarray([schedule.t_max, schedule.t_min], jnp.float32)), np.float64)
    return float(lam[0]), float(lam[1])


class Retimed(Wrapper):
    """A denoiser trained on schedule ``inner.schedule`` presented on ``schedule`` (see module doc).

    ``Retimed(model, target)(x, t)`` evaluates ``model(c x, t')`` with t' = t_I(lambda_target(t)) and
    c = alpha_I(t') / alpha_target(t); its ``schedule`` is ``target``. Cost, data mean and shape are
    the inner model's.
    """

    target: eqx.Module
    kind: str = eqx.field(static=True)

    def __init__(self, inner, schedule):
        self.inner, self.target = inner, schedule
        kind = check_prediction(inner.prediction)
        self.kind = kind if kind in ("x0", "eps") else "eps"

    @property
    def schedule(self):
        return self.target

    @property
    def prediction(self):
        return self.kind

    def inner_time_and_scale(self, t):
        """(t', c) for sampler times t: the model's time of equal log-SNR and the input scale."""
        lam = self.schedule.lambda_(t)
        t_in = self.inner.schedule.t_of_lambda(lam)
        c = jnp.exp(self.inner.schedule.log_alpha(t_in) - self.schedule.log_alpha(t))
        return t_in, c

    def __call__(self, x, t, cond=None):
        t = jnp.asarray(t, x.dtype)
        t_in, c = self.inner_time_and_scale(t)
        c = c.astype(x.dtype)
        c = c.reshape(c.shape + (1,) * (x.ndim - c.ndim))
        x_in = c * x
        pred = self.inner(x_in, t_in.astype(x.dtype), cond)
        if self.inner.prediction == self.prediction:
            return pred
        _, eps = to_x0_eps(pred, self.inner.prediction, x_in, t_in.astype(x.dtype), self.inner.schedule)
        return eps


def retime(denoiser, schedule, lambda_slack: float = LAMBDA_SLACK):
    """``denoiser`` presented on ``schedule`` (unchanged when its schedule already is that one).

    Refuses when the sampler's half log-SNR range exceeds the model's own by more than
    ``lambda_slack`` at either end (the model would be queried far outside its training range)."""
    if same_schedule(schedule, denoiser.schedule):
        return denoiser
    lo, hi = lambda_range(schedule)
    ilo, ihi = lambda_range(denoiser.schedule)
    if lo < ilo - lambda_slack or hi > ihi + lambda_slack:
        raise ValueError(
            f"stitching: cannot re-time a denoiser from schedule ({_describe(denoiser.schedule)}) onto "
            f"({_describe(schedule)}): the sampler needs half log-SNR [{lo:.4g}, {hi:.4g}] but the model "
            f"covers only [{ilo:.4g}, {ihi:.4g}] (slack {lambda_slack})")
    return Retimed(denoiser, schedule)


def check_compatible(denoisers, schedule=None, *, retime_schedules: bool = False,
                     mean_tol: float = MEAN_TOL, lambda_slack: float = LAMBDA_SLACK) -> tuple:
    """Check that ``denoisers`` can share one sampling run; return them (re-timed if asked).

    Refuses (ValueError naming the models and what differs) a set whose

    * data shapes differ;
    * noise schedules differ from ``schedule`` (default: the first model's). With
      ``retime_schedules=True`` a model on another schedule is wrapped in :class:`Retimed` instead,
      provided its log-SNR range covers the sampler's;
    * value ranges differ: a declared ``data_range`` attribute that disagrees, or data means whose
      RMS difference exceeds ``mean_tol`` (e.g. [0, 1] vs [-1, 1] data).

    One model is returned unchanged. Checks that need concrete values are skipped for traced inputs.
    """
    models = _models(denoisers)
    if not models:
        raise ValueError("stitching: need at least one denoiser")
    ref_sched = models[0].schedule if schedule is None else schedule
    out = []
    shape0 = tuple(getattr(models[0], "data_shape", ()) or ())
    for j, m in enumerate(models):
        check_denoiser(m, f"denoiser {j}")
        shape = tuple(m.data_shape)
        if shape != shape0:
            raise ValueError(f"stitching: data shape differs: denoiser {j} ({type(m).__name__}) has "
                             f"{shape}, denoiser 0 ({type(models[0]).__name__}) has {shape0}")
        if not same_schedule(ref_sched, m.schedule):
            if not retime_schedules:
                raise ValueError(
                    f"stitching: noise schedule differs: denoiser {j} ({type(m).__name__}) uses "
                    f"({_describe(m.schedule)}) but the sampler uses ({_describe(ref_sched)}); pass "
                    "retime_schedules=True (or denoisers.retime) to match them through log-SNR")
            m = retime(m, ref_sched, lambda_slack)
        out.append(m)
    r0 = getattr(models[0], "data_range", None)
    mean0 = models[0].data_mean
    for j, m in enumerate(models[1:], start=1):
        r = getattr(m, "data_range", None)
        if r0 is not None and r is not None and not np.allclose(np.asarray(r0, float), np.asarray(r, float)):
            raise ValueError(f"stitching: value range differs: denoiser {j} declares data_range {tuple(r)}, "
                             f"denoiser 0 declares {tuple(r0)}")
        if _concrete((mean0, m.data_mean)):
            a = np.asarray(mean0, np.float64).reshape(-1)
            b = np.asarray(m.data_mean, np.float64).reshape(-1)
            rms = float(np.sqrt(np.mean((a - b) ** 2))) if a.size == b.size else float("inf")
            if not rms <= mean_tol:
                raise ValueError(
                    f"stitching: value range differs: data means of denoiser {j} and denoiser 0 are "
                    f"{rms:.3g} apart (RMS; tolerance {mean_tol}); means {b.mean():.3g} vs {a.mean():.3g} "
                    "(averaged over pixels): are the models trained on data scaled the same way?")
    return tuple(out)




class DenoiserSet(eqx.Module):
    """Denoisers that may share one sampling run (the plan's ``model`` column indexes them).

    Compatibility (:func:`check_compatible`) is checked ONCE, here; ``samplers.sample`` then runs the
    set without checking again. ``costs`` are the declared per-evaluation costs.
    """

    models: tuple

    def __init__(self, denoisers, schedule=None, *, retime_schedules: bool = False,
                 mean_tol: float = MEAN_TOL, lambda_slack: float = LAMBDA_SLACK):
        self.models = check_compatible(denoisers, schedule, retime_schedules=retime_schedules,
                                       mean_tol=mean_tol, lambda_slack=lambda_slack)

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, i):
        return self.models[i]

    @property
    def costs(self) -> np.ndarray:
        return model_costs(self.models)


def model_costs(denoisers) -> np.ndarray:
    """Each denoiser's declared ``cost`` per evaluation (float64, shape (M,))."""
    c = np.asarray([float(getattr(m, "cost", 1.0)) for m in _models(denoisers)], np.float64)
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"denoisers: costs must be positive and finite, got {c.tolist()}")
    return c


def relative_costs(costs) -> np.ndarray:
    """Costs divided by the largest (the most expensive model costs 1 per evaluation)."""
    c = np.asarray(costs, np.float64).reshape(-1)
    if c.size == 0 or np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"costs: must be positive and finite, got {c.tolist()}")
    return c / c.max()
