"""Feature statistics and distances between distributions of features.

* streaming mean / covariance in float64 (Chan, Golub & LeVeque 1979 pairwise update);
* Fréchet distance between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)``
  ``d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (Dowson & Landau 1982; as FID,
  Heusel et al. 2017), with pytorch-fid's safeguards for near-singular products;
* KID: unbiased MMD^2 with the cubic polynomial kernel ``k(x,y) = (x.y/d + 1)^3``, averaged
  over random subsets (Bińkowski et al. 2018, "Demystifying MMD GANs");
* FID_inf: FID at several sample sizes, linear fit in 1/n, extrapolated to 1/n = 0
  (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them");
* bootstrap percentile interval of FID.

Every reported number is a :class:`Metric` carrying the sample size ``n`` it was computed from.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from scipy import linalg

__all__ = [
    "GaussianStats", "Metric", "MomentState", "moments_init", "moments_update",
    "moments_finalize", "gaussian_stats", "stats_from_batches", "frechet_distance",
    "fid_from_stats", "frechet_to_moments", "kid", "polynomial_mmd2", "fid_infinity",
    "fid_bootstrap", "FrechetDistanceError", "frechet_rows", "frechet_rows_to", "covariance_root",
    "inverse_n_fit",
]


class FrechetDistanceError(ValueError):
    """The matrix square root in the Fréchet distance failed (non-finite or complex)."""


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianStats:
    """Mean ``mu`` (d,), covariance ``sigma`` (d, d), both float64, from ``n`` samples.

    ``n`` is None for statistics read from files that do not record it.
    """
    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None

    def __post_init__(self):
        mu = np.asarray(self.mu, np.float64)
        sigma = np.asarray(self.sigma, np.float64)
        if mu.ndim != 1:
            raise ValueError(f"mu must be 1-d (d,), got shape {mu.shape}")
        if sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"sigma must be (d, d) = {(mu.shape[0],) * 2} to match mu, "
                             f"got shape {sigma.shape}")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
            raise ValueError("mu and sigma must be finite")
        if self.n is not None and int(self.n) < 1:
            raise ValueError(f"n must be a positive count or None, got {self.n}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "n", None if self.n is None else int(self.n))

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


@dataclasses.dataclass(frozen=True)
class Metric:
    """A reported number with its sample size(s) and optional spread / interval."""
    name: str
    value: float
    n: int | None
    n_ref: int | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "value", "n", "n_ref", "std", "low",
                                             "high")}
        out.update(self.extra)
        return {k: _plain(v) for k, v in out.items() if v is not None}

    def __str__(self) -> str:
        s = f"{self.name} = {self.value:.6g}"
        if self.std is not None:
            s += f" ± {self.std:.3g}"
        if self.low is not None and self.high is not None:
            s += f" [{self.low:.6g}, {self.high:.6g}]"
        return s + f" (n={self.n}" + (f", n_ref={self.n_ref})" if self.n_ref else ")")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# ----------------------------------------------------------------------------- moments
@dataclasses.dataclass(frozen=True)
class MomentState:
    """Running count, mean and centred sum of outer products ``M2 = sum (x-m)(x-m)^T``."""
    n: int
    mean: np.ndarray
    m2: np.ndarray


def moments_init(dim: int) -> MomentState:
    """Empty accumulator for ``dim``-dimensional features."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return MomentState(0, np.zeros(dim), np.zeros((dim, dim)))


def moments_update(state: MomentState, batch: Any) -> MomentState:
    """Merge a (b, d) batch: ``M2 += M2_b + delta delta^T n_a n_b / n`` (float64)."""
    x = np.asarray(batch, np.float64)
    if x.ndim != 2 or x.shape[1] != state.mean.shape[0]:
        raise ValueError(f"batch must be (b, {state.mean.shape[0]}), got shape {x.shape}")
    nb = x.shape[0]
    if nb == 0:
        return state
    mean_b = x.mean(axis=0)
    xc = x - mean_b
    m2_b = xc.T @ xc
    n = state.n + nb
    delta = mean_b - state.mean
    mean = state.mean + delta * (nb / n)
    m2 = state.m2 + m2_b + np.outer(delta, delta) * (state.n * nb / n)
    return MomentState(n, mean, m2)


def moments_merge(a: MomentState, b: MomentState) -> MomentState:
    """Combine two accumulators (Chan et al. 1979): the statistics of the union of their data."""
    n = a.n + b.n
    if n == 0:
        return a
    delta = np.asarray(b.mean) - np.asarray(a.mean)
    mean = a.mean + delta * (b.n / n)
    m2 = a.m2 + b.m2 + np.outer(delta, delta) * (a.n * b.n / n)
    return MomentState(n, mean, m2)


def moments_finalize(state: MomentState, ddof: int = 1) -> GaussianStats:
    """Mean and covariance ``M2 / (n - ddof)`` (ddof=1: unbiased, as ``np.cov``)."""
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    if state.n <= ddof:
        raise ValueError(f"need more than {ddof} samples for a covariance, got n={state.n}")
    sigma = state.m2 / (state.n - ddof)
    return GaussianStats(state.mean.copy(), 0.5 * (sigma + sigma.T), state.n)


def stats_from_batches(batches: Iterable[Any], dim: int | None = None,
                       ddof: int = 1) -> GaussianStats:
    """Mean / covariance of features streamed as (b, d) batches; memory O(d^2)."""
    state = None if dim is None else moments_init(dim)
    for batch in batches:
        b = np.asarray(batch)
        if state is None:
            if b.ndim != 2:
                raise ValueError(f"batches must be (b, d), got shape {b.shape}")
            state = moments_init(b.shape[1])
        state = moments_update(state, b)
    if state is None:
        raise ValueError("batches: no batches given")
    return moments_finalize(state, ddof)


def gaussian_stats(features: Any, batch_size: int = 4096, ddof: int = 1) -> GaussianStats:
    """Mean / covariance of an (n, d) feature array, accumulated in float64 by batches."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {x.shape}")
    return stats_from_batches((x[i:i + batch_size] for i in range(0, len(x), batch_size)),
                              dim=x.shape[1], ddof=ddof)


# ----------------------------------------------------------------------------- Fréchet
def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6
                     ) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrtm(sigma1 sigma2)``. If the square
    root is not finite, ``eps * I`` is added to both covariances (pytorch-fid); a complex
    root whose diagonal has imaginary parts above 1e-3 raises :class:`FrechetDistanceError`.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be 1-d of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means, got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} must be finite")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):
        warnings.warn(f"Fréchet distance: sqrtm(sigma1 sigma2) is singular; adding eps={eps} "
                      "to the covariance diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise FrechetDistanceError(
                f"Fréchet distance: sqrtm(sigma1 sigma2) is not finite even with eps={eps}; "
                "use more samples than feature dimensions or a larger eps")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise FrechetDistanceError(
                f"Fréchet distance: sqrtm(sigma1 sigma2) has imaginary component {m:.3g} "
                "(> 1e-3 on the diagonal): the covariances are not positive semi-definite or "
                "are badly conditioned; use more samples or a larger eps")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_stats(stats: GaussianStats, ref: GaussianStats, *, name: str = "fid",
                   eps: float = 1e-6) -> Metric:
    """Fréchet distance of ``stats`` (n samples) to reference statistics ``ref``."""
    value = frechet_distance(stats.mu, stats.sigma, ref.mu, ref.sigma, eps)
    return Metric(name, value, stats.n, ref.n)


def frechet_to_moments(samples_or_stats: Any, mean: Any, cov: Any, *,
                       name: str = "frechet_exact", eps: float = 1e-6) -> Metric:
    """Fréchet distance of samples (n, d) -- or their :class:`GaussianStats` -- to known
    moments (mean, cov) of the true distribution; ``n_ref`` is None (exact)."""
    st = (samples_or_stats if isinstance(samples_or_stats, GaussianStats)
          else gaussian_stats(samples_or_stats))
    exact = GaussianStats(np.asarray(mean, np.float64).reshape(-1),
                          np.asarray(cov, np.float64), None)
    if exact.dim != st.dim:
        raise ValueError(f"mean/cov have dimension {exact.dim}, samples have {st.dim}")
    return fid_from_stats(st, exact, name=name, eps=eps)


def sample_frechet(x: Any, mean: Any, cov: Any) -> float:
    """Fréchet distance (a float) of samples ``x`` (n, ...), flattened, to moments (mean, cov);
    ``inf`` when any sample is non-finite (a diverged sampler)."""
    x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    if not np.all(np.isfinite(x)):
        return float("inf")
    return float(frechet_distance(x.mean(0), np.cov(x, rowvar=False), mean, cov))


def frechet_between(a: Any, b: Any) -> float:
    """Fréchet distance between the Gaussian fits of two sets of vectors (arrays are flattened per row:
    images compare in pixel space, feature arrays in that feature space)."""
    b = np.asarray(b, np.float64).reshape(np.shape(b)[0], -1)
    return sample_frechet(a, b.mean(0), np.cov(b, rowvar=False))


def _reduced(a: np.ndarray) -> np.ndarray:
    """``R`` of ``a = Q R`` (Q with orthonormal columns) when ``a`` is tall, else ``a``: the nuclear
    norm of ``a b^T`` is that of ``R_a R_b^T``. ``R^T R = a^T a``, so ``R`` is the Cholesky factor of
    the Gram matrix (a QR when that is singular)."""
    if a.shape[0] <= a.shape[1]:
        return a
    try:
        return np.linalg.cholesky(a.T @ a).T
    except np.linalg.LinAlgError:
        return np.linalg.qr(a, mode="r")


def _nuclear(a: np.ndarray, b: np.ndarray) -> float:
    """``||a b^T||_*`` (sum of singular values) without forming a matrix larger than min(m, d)^2."""
    return float(np.linalg.svd(_reduced(a) @ _reduced(b).T, compute_uv=False).sum())


def frechet_rows(x: Any, y: Any) -> float:
    """Fréchet distance between the Gaussian fits (``np.cov``) of two row sets of equal size ``m``,
    exactly, with one SVD of size min(m, d) instead of a d x d ``sqrtm``: with centred rows
    ``X, Y``, ``tr (S_x S_y)^(1/2) = ||X Y^T||_* / (m - 1)`` (the nonzero eigenvalues of ``S_x S_y``
    are the squared singular values of ``X Y^T / (m - 1)``). ``inf`` for non-finite samples."""
    x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    y = np.asarray(y, np.float64).reshape(np.shape(y)[0], -1)
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"frechet_rows: row sets {x.shape} and {y.shape} must have the same shape, >= 2 rows")
    if not np.all(np.isfinite(x)):
        return float("inf")
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    k = x.shape[0] - 1
    return float(np.sum((xm - ym) ** 2) + (np.sum(xc ** 2) + np.sum(yc ** 2) - 2.0 * _nuclear(xc, yc)) / k)


def covariance_root(cov: Any) -> np.ndarray:
    """The symmetric square root of a covariance matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(np.asarray(cov, np.float64))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_rows_to(x: Any, mean: Any, cov_root: np.ndarray) -> float:
    """Fréchet distance of the Gaussian fit of rows ``x`` to fixed moments ``(mean, cov_root^2)``
    (:func:`covariance_root`), exactly: ``tr (S_x C)^(1/2) = ||X C^(1/2)||_* / sqrt(m - 1)``."""
    x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    if not np.all(np.isfinite(x)):
        return float("inf")
    xm = x.mean(0)
    xc = x - xm
    k = x.shape[0] - 1
    return float(np.sum((xm - np.asarray(mean, np.float64)) ** 2) + np.sum(xc ** 2) / k
                 + np.sum(cov_root ** 2) - 2.0 * _nuclear(xc, cov_root) / np.sqrt(k))


# ----------------------------------------------------------------------------- KID
def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with ``k(a,b) = (gamma a.b + coef0)^degree`` (gamma default 1/d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (g * x @ x.T + coef0) ** degree
    kyy = (g * y @ y.T + coef0) ** degree
    kxy = (g * x @ y.T + coef0) ** degree
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.sum() / (m * n))


def _generator(key: jax.Array) -> np.random.Generator:
    data = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng([int(v) for v in data.ravel()])


def kid(features: Any, ref_features: Any, *, key: jax.Array, num_subsets: int = 100,
        subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
        coef0: float = 1.0) -> Metric:
    """Kernel Inception Distance: mean ± std of unbiased polynomial MMD^2 over random subsets
    of ``min(subset_size, n, n_ref)`` points drawn without replacement from each set."""
    x, y = np.asarray(features), np.asarray(ref_features)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (n, d) and (n_ref, d), got {x.shape}, {y.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, len(x), len(y))
    rng = _generator(key)
    vals = np.array([polynomial_mmd2(x[rng.choice(len(x), m, replace=False)],
                                     y[rng.choice(len(y), m, replace=False)],
                                     degree, gamma, coef0) for _ in range(num_subsets)])
    return Metric("kid", float(vals.mean()), len(x), len(y), std=float(vals.std()),
                  extra={"subset_size": m, "num_subsets": num_subsets})


# ----------------------------------------------------------------------------- FID_inf
def fid_infinity(features: Any, ref: GaussianStats, *, key: jax.Array,
                 ns: Any = None, num_points: int = 15, eps: float = 1e-6) -> Metric:
    """FID extrapolated to infinitely many samples (Chong & Forsyth 2020).

    FID_N is computed on random subsets of size N for each N in ``ns`` (default
    ``num_points`` values evenly spaced from n/10 to n), ``FID_N = a + b / N`` is fitted by
    least squares, and ``a`` is returned; ``extra`` holds slope, ns and the FID_N.
    """
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != ref.dim:
        raise ValueError(f"features must be (n, {ref.dim}), got shape {x.shape}")
    n = len(x)
    if ns is None:
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {num_points}")
        ns = np.linspace(max(n // 10, 2), n, num_points)
    ns = np.unique(np.asarray(ns, dtype=np.int64))
    if len(ns) < 2 or ns.min() < 2 or ns.max() > n:
        raise ValueError(f"ns must hold >= 2 distinct sizes in [2, {n}], got {ns.tolist()}")
    rng = _generator(key)
    fids = np.array([frechet_distance(*_moments(x[rng.choice(n, k, replace=False)]),
                                      ref.mu, ref.sigma, eps) for k in ns])
    intercept, slope = inverse_n_fit(ns, fids)
    return Metric("fid_inf", float(intercept), n, ref.n,
                  extra={"slope": float(slope), "ns": ns.tolist(), "fids": fids.tolist()})


def inverse_n_fit(sizes: Any, values: Any) -> tuple[float, float]:
    """``(a, b)`` of the least-squares line ``value = a + b / size``: ``a`` is a plug-in estimate
    extrapolated to infinitely many samples when its bias is ``O(1/size)`` (Chong & Forsyth 2020)."""
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, np.float64), np.asarray(values, np.float64), 1)
    return float(intercept), float(slope)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    st = gaussian_stats(x)
    return st.mu, st.sigma


def fid_bootstrap(features: Any, ref: GaussianStats, *, key: jax.Array,
                  num_resamples: int = 50, confidence: float = 0.95,
                  eps: float = 1e-6) -> Metric:
    """FID with a bootstrap percentile interval: resample the n feature rows with
    replacement ``num_resamples`` times (reference statistics held fixed).

    Resampling duplicates rows, so replicates are biased upward relative to the point
    estimate; report the interval as spread, not as a corrected estimate.
    """
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != ref.dim:
        raise ValueError(f"features must be (n, {ref.dim}), got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_resamples < 2:
        raise ValueError(f"num_resamples must be >= 2, got {num_resamples}")
    n = len(x)
    point = frechet_distance(*_moments(x), ref.mu, ref.sigma, eps)
    rng = _generator(key)
    reps = np.array([frechet_distance(*_moments(x[rng.integers(0, n, n)]), ref.mu, ref.sigma,
                                      eps) for _ in range(num_resamples)])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return Metric("fid", point, n, ref.n, std=float(reps.std(ddof=1)), low=float(low),
                  high=float(high), extra={"confidence": confidence,
                                           "num_resamples": num_resamples})
