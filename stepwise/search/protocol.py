"""How a comparison is made: paired distances with bootstrap intervals, ratios that respect noise.

The headline of every comparison is PAIRED: the Fréchet distance of a plan's endpoints to the
reference (tight ODE) solve of the SAME fresh noise, so the sample noise common to both cancels.
Intervals come from a paired bootstrap: one set of resampled noise indices per replicate is applied
to the plan, to the best baseline and to the reference together, so the interval of their ratio
reflects the pairing. They are basic (reverse-percentile) intervals, [2 t - q_hi, 2 t - q_lo] for a
point t and replicate quantiles q (Davison & Hinkley 1997, eq. 5.6): a resampled Fréchet distance is
biased upward (duplicated rows inflate the covariance error), and the basic interval is the one that
moves down with that first-order bias. When the bias exceeds the half-width (few samples for the
dimension) the interval lies wholly below the plug-in point; it is printed marked "bias > half-width"
so nobody reads such a row as a resolved estimate. Ratios use
the same construction on the log scale. A ratio is a number only when its denominator is resolved: when the
interval of the denominator includes zero (an excess over the exact ODE inside its own sampling
noise), the ratio is reported as a lower bound, "below the noise floor (ratio >= L)".

Bias-extrapolated distances (:class:`Extrapolation`, :func:`debiased`): the plug-in distance's
bias is O(1/n), so the distance on random halves of the rows (twice the bias) and on all rows give a
line in 1/n whose intercept is nearly unbiased (FID_inf, Chong & Forsyth 2020); its basic interval
is centred on the plug-in value, the bootstrap world's truth. The final comparison reports both for
the paired distance.

Measured coverage (benchmarks/interval_coverage.py, RESULTS_search.md): single distances 0.93-1.00
once n >> d; a plug-in paired ratio's interval carries the resampling spread but not the plug-in
bias, which mostly pulls the ratio toward 1 (0.67-0.74 of the truth at n = 8-16 d) but inflated it
by 2-7% in one constructed case. The bias-extrapolated paired ratio at n = 8-16 d: 1.00-1.03 of the
truth, coverage 0.80-1.00; distances to FIXED moments extrapolate badly when a half has fewer rows
than dimensions (then their intervals reach 0: unresolved, not wrong).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from stepwise.evaluation import covariance_root, frechet_rows, frechet_rows_to, inverse_n_fit, sample_frechet

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its basic bootstrap interval (``n`` samples, ``resamples`` replicates)."""

    value: float
    low: float
    high: float
    n: int
    resamples: int

    def includes(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        text = f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"
        return text if self.includes(self.value) else text + " (bias > half-width: n too small)"


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``baseline / plan`` of a distance: a point, its paired-bootstrap interval and, when the
    denominator is not resolved from zero, only a lower bound."""

    value: float | None
    low: float
    high: float | None
    lower_bound_only: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        if self.lower_bound_only:
            return f"below the noise floor (ratio >= {self.low:.3g})"
        return f"{self.value:.3g}x [{self.low:.3g}, {self.high:.3g}]"


def _quantiles(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return float(lo), float(hi)


def _flat(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], -1)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) row indices drawn with replacement: shared by every quantity of one comparison."""
    if resamples < 2:
        raise ValueError(f"resamples: {resamples} is invalid; allowed: an integer >= 2")
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


@dataclasses.dataclass(frozen=True)
class PairedReference:
    """The reference endpoints (flattened) and the shared bootstrap rows of one comparison."""

    rows: np.ndarray          # (n, d) reference endpoints, flattened
    idx: np.ndarray           # (resamples, n) shared bootstrap rows


def paired_reference(ref, idx: np.ndarray) -> PairedReference:
    return PairedReference(_flat(ref), np.asarray(idx))


def paired_frechet(x, ref, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Fréchet distance of endpoints ``x`` to the reference endpoints of the same noise, and its
    replicates on the shared bootstrap rows (rows of x and ref stay paired). ``ref`` is a
    :class:`PairedReference` (built once per comparison) or the raw endpoints with ``idx``.
    Exact, by one SVD of size min(n, d) per replicate (:func:`stepwise.evaluation.frechet_rows`)."""
    if not isinstance(ref, PairedReference):
        ref = paired_reference(ref, idx)
    x = _flat(x)
    if x.shape != ref.rows.shape:
        raise ValueError(f"paired distance: samples {x.shape} and reference {ref.rows.shape} must be the same noise")
    point = frechet_rows(x, ref.rows)
    reps = np.array([frechet_rows(x[i], ref.rows[i]) for i in ref.idx])
    return point, reps


def paired_rmse(x, ref, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Root-mean-square distance sqrt(mean_i mean_d (x_id - ref_id)^2) of endpoints ``x`` to the
    reference endpoints of the same noise, and its replicates on the bootstrap rows ``idx``. Unlike a
    Fréchet distance it compares sample by sample, so a plan cannot lower it by matching the first two
    moments of the reference alone."""
    per_row = np.mean((_flat(x).astype(np.float64) - _flat(ref).astype(np.float64)) ** 2, axis=1)
    reps = np.sqrt(per_row[np.asarray(idx)].mean(axis=1)) if idx is not None else np.zeros(0)
    return float(np.sqrt(per_row.mean())), reps


@dataclasses.dataclass(frozen=True)
class ErrorSplit:
    """The paired squared error of endpoints split by a per-noise mask (e.g. "the endpoint lies in
    another mode of the data than the reference's"): the fraction of noises in the mask, their share
    of the total squared error, and the RMSE of the noises outside it, each with its interval."""

    fraction: Interval
    share: Interval
    rmse_rest: Interval

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name).to_dict() for f in dataclasses.fields(self)}


def error_split(x, ref, mask, idx: np.ndarray, confidence: float = CONFIDENCE) -> ErrorSplit:
    """:class:`ErrorSplit` of endpoints ``x`` against the reference endpoints ``ref`` of the same
    noise: with e_i = ||x_i - ref_i||^2 and m_i the mask, fraction = mean(m), share = sum(m e) / sum(e),
    rmse_rest = sqrt(sum((1 - m) e) / (d sum(1 - m))); basic intervals on the bootstrap rows ``idx``."""
    x, ref = _flat(x), _flat(ref)
    if x.shape != ref.shape:
        raise ValueError(f"error split: samples {x.shape} and reference {ref.shape} must be the same noise")
    m = np.asarray(mask, bool).reshape(-1)
    if m.shape[0] != x.shape[0]:
        raise ValueError(f"error split: mask has {m.shape[0]} entries for {x.shape[0]} samples")
    e = np.sum((x - ref) ** 2, axis=1)
    d = x.shape[1]

    def stats(rows):
        mm, ee = m[rows], e[rows]
        rest = np.sum(~mm)
        return (np.mean(mm), np.sum(ee[mm]) / max(np.sum(ee), 1e-300),
                np.sqrt(np.sum(ee[~mm]) / (d * rest)) if rest else np.nan)

    point = stats(np.arange(x.shape[0]))
    reps = np.array([stats(r) for r in np.asarray(idx)])
    return ErrorSplit(*(interval(point[j], reps[:, j], x.shape[0], confidence, nonnegative=True) for j in range(3)))


def exact_frechet(x, mean, cov, idx: np.ndarray) -> tuple[float, np.ndarray]:
    """Fréchet distance of ``x`` to exact moments, and its replicates on the bootstrap rows ``idx``."""
    x = _flat(x)
    return sample_frechet(x, mean, cov), np.array([sample_frechet(x[i], mean, cov) for i in idx])


def excess_frechet(x, ref, mean, cov, idx: np.ndarray) -> tuple[float, np.ndarray]:
    """Excess of ``x``'s Fréchet distance to the exact moments over the reference solve's (same
    noise, same bootstrap rows): the error the solver adds to the exact ODE; may be negative."""
    px, rx = exact_frechet(x, mean, cov, idx)
    pr, rr = exact_frechet(ref, mean, cov, idx)
    return px - pr, rx - rr


@dataclasses.dataclass(frozen=True)
class Extrapolation:
    """How :func:`extrapolated` removes the plug-in bias of a Fréchet distance: the distance on
    random row subsets of each of ``fractions`` of the ``n`` samples (``draws`` random partitions into
    disjoint blocks per fraction below 1), a least-squares line in ``1 / m`` through the mean of each
    size ``m``, and its intercept at ``1 / m = 0`` ("FID_inf", Chong & Forsyth 2020, "Effectively
    unbiased FID and Inception Score and where to find them"; the plug-in bias is ``O(1/m)``)."""

    fractions: tuple[float, ...] = (0.5, 1.0)
    draws: int = 4
    seed: int = 0

    def levels(self, n: int) -> list[tuple[int, np.ndarray]]:
        """[(m, (blocks, m) row positions in 0..n-1)] per fraction, fixed by ``seed``."""
        sizes = sorted({int(round(f * n)) for f in self.fractions})
        if any(not 0.0 < f <= 1.0 for f in self.fractions) or len(sizes) < 2 or sizes[0] < 2:
            raise ValueError(f"extrapolation fractions: {self.fractions} at n={n} is invalid; allowed: values "
                             f"in (0, 1] giving at least two subset sizes of at least 2 samples")
        if self.draws < 1:
            raise ValueError(f"extrapolation draws: {self.draws} is invalid; allowed: an integer >= 1")
        rng = np.random.default_rng(self.seed)
        out = []
        for m in sizes:
            if m == n:
                out.append((m, np.arange(n)[None]))
                continue
            blocks = [rng.permutation(n)[: (n // m) * m].reshape(-1, m) for _ in range(self.draws)]
            out.append((m, np.concatenate(blocks)))
        return out


def extrapolated(dist: Callable[[np.ndarray], float], rows: np.ndarray, levels) -> float:
    """Intercept at ``1/m = 0`` of the line through the mean distance ``dist(rows[block])`` of each
    subset size ``m`` of :meth:`Extrapolation.levels`."""
    vals = [float(np.mean([dist(rows[p]) for p in pos])) for _, pos in levels]
    return inverse_n_fit([m for m, _ in levels], vals)[0]


def debiased(dist: Callable[[np.ndarray], float], idx: np.ndarray, extrapolation: Extrapolation
             ) -> tuple[float, np.ndarray, float]:
    """(extrapolated point, its replicates on the bootstrap rows ``idx``, the plug-in value on all
    rows): a resample's extrapolation estimates the plug-in value (the bootstrap world's truth), so
    the plug-in value is the ``center`` of the basic interval (:func:`interval`, :func:`ratio`)."""
    n = idx.shape[1]
    levels = extrapolation.levels(n)
    rows = np.arange(n)
    return (extrapolated(dist, rows, levels), np.array([extrapolated(dist, r, levels) for r in idx]),
            float(dist(rows)))


def paired_distance(x, ref) -> Callable[[np.ndarray], float]:
    """``rows -> `` Fréchet distance of ``x[rows]`` to the reference endpoints ``ref[rows]`` of the
    same noise (exact, by one SVD: :func:`stepwise.evaluation.frechet_rows`)."""
    x, r = _flat(x), _flat(ref)
    return lambda rows: frechet_rows(x[rows], r[rows])


def fixed_distance(x, mean, cov) -> Callable[[np.ndarray], float]:
    """``rows -> `` Fréchet distance of ``x[rows]`` to fixed moments (exact or held-out)."""
    x, root = _flat(x), covariance_root(cov)
    return lambda rows: frechet_rows_to(x[rows], mean, root)


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureMoments:
    """Feature-space moments of a set of real images: the data-feature Fréchet distance ("FID" in a
    domain classifier's feature space). Of held-out test images that neither the models' training
    nor the search saw, it is the final protocol's image-quality metric for trained networks; of the
    training images, the ``data_frechet`` search objective (S³ / AutoDiffusion score candidates by
    FID to data), which then never sees the held-out images it is judged on."""

    label: str
    extractor: Any            # evaluation.FeatureExtractor
    mean: np.ndarray
    cov: np.ndarray
    n: int

    def distance(self, x) -> float:
        """Fréchet distance of samples ``x`` to these moments."""
        return sample_frechet(_features(self.extractor, x), self.mean, self.cov)

    def frechet(self, x, idx: np.ndarray) -> tuple[float, np.ndarray]:
        """Distance of samples ``x`` to these moments, and its replicates on the rows ``idx``
        (the comparison's shared bootstrap rows, so two plans' distances stay paired)."""
        return exact_frechet(_features(self.extractor, x), self.mean, self.cov, idx)


def _features(extractor, x) -> np.ndarray:
    from stepwise.evaluation import extract_features

    return np.asarray(extract_features(extractor, np.asarray(x, np.float32)), np.float64)


def feature_moments(extractor, images, label: str) -> FeatureMoments:
    """:class:`FeatureMoments` of ``images`` in ``extractor``'s feature space (float64 moments)."""
    f = _features(extractor, images)
    if len(f) < 2:
        raise ValueError(f"{label}: {len(f)} images; need at least 2")
    return FeatureMoments(label, extractor, f.mean(0), np.cov(f, rowvar=False), len(f))


def _basic(point: float, reps: np.ndarray, confidence: float, center: float | None = None) -> tuple[float, float]:
    """``[point - (q_hi - center), point - (q_lo - center)]``: the replicates' spread around the
    bootstrap world's true value ``center`` (the plug-in value on all samples; ``point`` itself for a
    plug-in estimate, giving ``2 point - q``), moved onto the estimate."""
    q_lo, q_hi = _quantiles(reps, confidence)
    c = point if center is None else center
    return point - (q_hi - c), point - (q_lo - c)


def interval(point: float, reps: np.ndarray, n: int, confidence: float = CONFIDENCE,
             nonnegative: bool = False, center: float | None = None) -> Interval:
    """The point with the basic bootstrap interval of its replicates (``n`` samples each); a
    ``nonnegative`` quantity (a distance) has its lower end clipped at 0. ``center``: the plug-in
    value when ``point`` is another estimator of it (:func:`extrapolated`)."""
    lo, hi = _basic(float(point), np.asarray(reps, np.float64), confidence, center)
    if nonnegative:
        lo, hi = max(lo, 0.0), max(hi, 0.0)
    return Interval(float(point), lo, hi, int(n), int(len(reps)))


def ratio(num: float, num_reps: np.ndarray, den: float, den_reps: np.ndarray,
          confidence: float = CONFIDENCE, centers: tuple[float, float] | None = None) -> Ratio:
    """``num / den`` with the basic interval (log scale) of the paired replicates ``num_reps / den_reps``.

    When the denominator's interval includes zero (or a point, center or replicate is not positive)
    the ratio is not a number: it is reported as the lower bound ``max(num_low, 0) / den_high`` (how
    many times better the denominator is AT LEAST), never as a point. ``centers``: the plug-in values
    (numerator, denominator) when ``num`` / ``den`` are :func:`extrapolated` estimates.
    """
    num_reps, den_reps = np.asarray(num_reps, np.float64), np.asarray(den_reps, np.float64)
    c_num, c_den = (None, None) if centers is None else centers
    d_lo, d_hi = _basic(float(den), den_reps, confidence, c_den)
    n_lo, _ = _basic(float(num), num_reps, confidence, c_num)
    c_pos = centers is None or min(centers) > 0
    if d_lo <= 0.0 or den <= 0.0 or num <= 0.0 or not c_pos or np.any(den_reps <= 0) or np.any(num_reps <= 0):
        bound = max(n_lo, 0.0) / d_hi if d_hi > 0 else float("inf")
        return Ratio(None, float(bound), None, True)
    c_log = None if centers is None else float(np.log(c_num / c_den))
    lo, hi = _basic(float(np.log(num / den)), np.log(num_reps / den_reps), confidence, c_log)
    return Ratio(float(num / den), float(np.exp(lo)), float(np.exp(hi)), False)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A plan against the best baseline on one metric (lower is better), chosen on the final noise;
    ``*_inf``: the same with bias-extrapolated distances (:func:`debiased`), when computed."""

    metric: str
    plan: Interval
    baseline_name: str
    baseline: Interval
    ratio: Ratio
    plan_inf: Interval | None = None
    baseline_inf: Interval | None = None
    ratio_inf: Ratio | None = None

    def to_dict(self) -> dict:
        out = {"metric": self.metric, "plan": self.plan.to_dict(), "baseline_name": self.baseline_name,
               "baseline": self.baseline.to_dict(), "ratio": self.ratio.to_dict(), "ratio_text": str(self.ratio)}
        if self.ratio_inf is not None:
            out.update(plan_inf=self.plan_inf.to_dict(), baseline_inf=self.baseline_inf.to_dict(),
                       ratio_inf=self.ratio_inf.to_dict(), ratio_inf_text=str(self.ratio_inf))
        return out

    def __str__(self) -> str:
        text = (f"{self.metric}: {self.plan} vs best baseline {self.baseline_name} {self.baseline}; "
                f"ratio {self.ratio}")
        if self.ratio_inf is not None:
            text += (f"; bias-extrapolated: {self.plan_inf} vs {self.baseline_inf}; ratio {self.ratio_inf}")
        return text


def describe(c: dict, who: str) -> str:
    """One line of a comparison's dict (:meth:`Comparison.to_dict`): ``who``'s interval against the
    best baseline's, and the paired ratio best baseline / ``who``."""
    return (f"{c['metric']}: {who} {Interval(**c['plan'])} vs best baseline {c['baseline_name']} "
            f"{Interval(**c['baseline'])}; ratio {c['ratio_text']}")


def compare(metric: str, plan: tuple[float, np.ndarray], baseline_name: str, baseline: tuple[float, np.ndarray],
            n: int, confidence: float = CONFIDENCE, debiased: tuple | None = None) -> Comparison:
    """A plan against a (the best) baseline: both with intervals, and their paired ratio.
    ``debiased``: ((point, replicates, plug-in) of the plan, the same of the baseline) from
    :func:`debiased` on the same bootstrap rows: adds the bias-extrapolated intervals and ratio."""
    (p, p_reps), (b, b_reps) = plan, baseline
    nonneg = metric != "excess"
    extra = {}
    if debiased is not None:
        (pi, pi_reps, pc), (bi, bi_reps, bc) = debiased
        extra = {"plan_inf": interval(pi, pi_reps, n, confidence, nonneg, center=pc),
                 "baseline_inf": interval(bi, bi_reps, n, confidence, nonneg, center=bc),
                 "ratio_inf": ratio(bi, bi_reps, pi, pi_reps, confidence, centers=(bc, pc))}
    return Comparison(metric, interval(p, p_reps, n, confidence, nonneg), baseline_name,
                      interval(b, b_reps, n, confidence, nonneg),
                      ratio(b, b_reps, p, p_reps, confidence), **extra)


def summarize_seeds(values: Sequence[float]) -> dict:
    """Median and range of a per-seed quantity (e.g. the paired ratio of several search seeds)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"n_seeds": 0}
    return {"n_seeds": int(v.size), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
