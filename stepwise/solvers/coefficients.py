"""The exponential-integrator step, written once.

With lambda = log(alpha/sigma) and h = lambda_t - lambda_b, the probability-flow ODE has the
exact solutions (Lu et al. 2022, DPM-Solver eq. 3.4; DPM-Solver++ eq. 9)

    data  (x0):  x_t = (sigma_t/sigma_b) x_b + alpha_t * int_0^1 h e^{-h(1-r)} x0(lambda_b + r h) dr
    noise (eps): x_t = (alpha_t/alpha_b) x_b - sigma_t * int_0^1 h e^{+h(1-r)} eps(lambda_b + r h) dr

Interpolating the prediction through evaluated points (r_j, f_j) by a polynomial
P(r) = sum_k a_k r^k turns the integral into sum_k g_k a_k with the moments
g_k = int_0^1 h e^{z(1-r)} r^k dr = k! h phi_{k+1}(z), z = -h (data) or +h (noise), where
phi_k(z) = int_0^1 e^{(1-r) z} r^{k-1}/(k-1)! dr. Since P is linear in the f_j, every solver of
the family is a weight vector w over the history: x_t = A x_b + B sum_j w_j f_j. Solvers differ
only in which points they use and how they set the moments of the highest term:

* ``taylor``: exact moments (DPM-Solver's "heun"/taylor form, Lu et al. 2022, App. B).
* ``dpmsolver``: DPM-Solver's published coefficients (order 2: g_1 = h phi_1 / 2; order 3
  multistep: g_2 halved; order 3 singlestep: first derivative from the base and newest point).
* ``free``: the highest moment scaled by a free coefficient (a searchable relaxation).
* ``bh1``/``bh2``: UniPC's B(h) = h or e^h - 1 (Zhao et al. 2023), which only changes the moment
  of a 2-point interpolant (see ``_two_point_moment``).
* ``equispaced``: the points are placed as if every step had the current step's length in the
  expansion variable (fixed Adams-Bashforth coefficients: PNDM/iPNDM, Zhang & Chen 2023).

The variable in which the prediction is a polynomial is the ``expansion`` (column of the plan):

* ``lambda``: r = (lambda - lambda_b)/h itself (DPM-Solver, UniPC, diffusers' "logrho" DEIS).
* ``t``: u = (t - t_b)/(t_target - t_b) (DEIS tAB, Zhang & Chen 2023).
* ``sigma``: u = (s - s_b)/(s_target - s_b) in the scaled sigma s = sigma/alpha = e^{-lambda}
  (Euler/Heun/iPNDM in EDM's sigma space, Karras et al. 2022; on eps these are linear multistep
  methods for dx~/ds = eps with x~ = x/alpha).

In every case the moments are G_k = int_0^1 h e^{z(1-r)} u(r)^k dr (closed form for lambda, 16-node
Gauss-Legendre quadrature in r otherwise) and the weights are the Lagrange monomials at the points'
positions u_j times G. The DPM-Solver and B(h) moment rules are defined in lambda only; with the
t or sigma expansion those variants use exact moments.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.solvers.plan import BH1, BH2, DPMSOLVER, EQUISPACED, EXPAND_LAMBDA, EXPAND_SIGMA, EXPAND_T, FREE, TAYLOR

_SERIES_TERMS = 16


def phis(n: int, z):
    """(phi_1(z), ..., phi_n(z)) stacked on a new leading axis, phi_k(z) = sum_{m>=0} z^m / (m+k)!,
    stable for all z: the series near 0, the recursion phi_{k+1} = (phi_k - 1/k!)/z elsewhere, both
    evaluated for every k at once."""
    z = jnp.asarray(z)
    z = z if jnp.issubdtype(z.dtype, jnp.floating) else z.astype(float)
    k = np.arange(1, n + 1).reshape((n,) + (1,) * z.ndim)
    const = lambda c: jnp.asarray(c, z.dtype)  # noqa: E731  (each constant rounded once to z's precision)
    small = jnp.abs(z) < 1.0
    zs = jnp.where(small, z, 0.0)
    # Horner form: no zs**0 term, whose derivative 0 * zs**-1 is NaN at zs = 0 (so jax.grad stays finite)
    inv_fact = np.vectorize(lambda j: 1.0 / math.factorial(j))
    series = jnp.broadcast_to(const(inv_fact(_SERIES_TERMS - 1 + k)), (n,) + zs.shape)
    for m in range(_SERIES_TERMS - 2, -1, -1):
        series = series * zs + const(inv_fact(m + k))
    zr = jnp.where(small, 1.0, z)
    rec = jnp.broadcast_to(jnp.expm1(zr) / zr, (n,) + zr.shape)
    for j in range(1, n):
        rec = jnp.where(k > j, (rec - 1.0 / math.factorial(j)) / zr, rec)
    return jnp.where(small, series, rec)


def phi(k: int, z):
    """phi_k(z) = sum_{m>=0} z^m / (m+k)! (see :func:`phis`)."""
    return phis(k, z)[k - 1]


def exact_moments(h, z, size: int):
    """g_k = k! h phi_{k+1}(z) for k < size: the exact integrals of h e^{z(1-r)} r^k over [0, 1]."""
    p = phis(size, z)
    fact = np.array([float(math.factorial(k)) for k in range(size)]).reshape((size,) + (1,) * (p.ndim - 1))
    return jnp.asarray(fact, jnp.result_type(h, p)) * h * p


def lagrange_monomials(rho, mask):
    """Monomial coefficients a[j, k] of the Lagrange basis L_j(r) through the masked points rho.

    Unmasked rows are zero. Shape (S, S) for S candidate points.
    """
    s = rho.shape[0]
    idx = jnp.arange(s)
    poly = jnp.zeros((s, s), rho.dtype).at[:, 0].set(1.0)
    for i in range(s):
        # only rows of masked points: an unmasked row may sit at the same position (a 0/0 that
        # jnp.where hides in the value but not in the gradient)
        use = mask[i] & (idx != i) & mask
        denom = jnp.where(use, rho - rho[i], 1.0)
        shifted = jnp.concatenate([jnp.zeros((s, 1), rho.dtype), poly[:, :-1]], axis=1)
        new = (shifted - rho[i] * poly) / denom[:, None]
        poly = jnp.where(use[:, None], new, poly)
    return jnp.where(mask[:, None], poly, 0.0)


def interpolation_weights(rho, mask, moments):
    """w_j = sum_k g_k a[j, k]: the weight of point j in int kernel * P (moments g beyond use are 0)."""
    return lagrange_monomials(rho, mask) @ moments


_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
GL_NODES = 0.5 * (_GL_X + 1.0)   # Gauss-Legendre nodes on [0, 1]
GL_WEIGHTS = 0.5 * _GL_W


def quadrature_moments(h, z, u_of_r, size: int):
    """G_k = int_0^1 h e^{z(1-r)} u(r)^k dr, k < size, by 16-node Gauss-Legendre quadrature in r."""
    r = jnp.asarray(GL_NODES, jnp.result_type(h))
    kern = h * jnp.exp(z * (1.0 - r)) * jnp.asarray(GL_WEIGHTS, r.dtype)
    u = u_of_r(r)
    return jnp.stack([jnp.sum(kern * u**k) for k in range(size)])


def _sigma_u(h):
    """u(r) in the scaled sigma e^{-lambda}, normalised so the base is at 0 and the target at 1."""
    return lambda r: jnp.expm1(-r * h) / jnp.expm1(-h)


def _t_u(geom, schedule):
    """u(r) in time along the step (needs the schedule's inverse t_of_lambda)."""
    if schedule is None:  # no schedule: t is taken linear in lambda (exact only for such schedules)
        return lambda r: r
    lam_b = geom.lam[geom.base]
    t_b = schedule.t_of_lambda(lam_b)
    t_t = schedule.t_of_lambda(lam_b + geom.h)
    return lambda r: (schedule.t_of_lambda(lam_b + r * geom.h) - t_b) / (t_t - t_b)


def expansion_positions(geom, expansion, variant):
    """Normalised positions u_j (S,) of the slots (base at 0, target slot S-1 at 1)."""
    s = geom.lam.shape[0]
    b = geom.base
    rho = geom.rho
    lam_b = geom.lam[b]
    u_sigma = jnp.expm1(-(geom.lam - lam_b)) / jnp.expm1(-geom.h)
    t_b, t_t = geom.t[b], geom.t[s - 1]
    u_t = (geom.t - t_b) / (t_t - t_b)
    u = jnp.where(expansion == EXPAND_SIGMA, u_sigma, jnp.where(expansion == EXPAND_T, u_t, rho))
    slots = jnp.arange(s)
    equi = jnp.where(slots == s - 1, 1.0, (b - slots) / (b + 1.0)).astype(rho.dtype)
    u = jnp.where(variant == EQUISPACED, equi, u)
    return jnp.where(geom.valid, u, 0.0)


def expansion_moments(geom, expansion, schedule, size: int):
    """Moments G_k (size,) of the kernel against u^k for the step's expansion variable."""
    h, z = geom.h, geom.z
    g_lam = exact_moments(h, z, size)
    g_sig = quadrature_moments(h, z, _sigma_u(h), size)
    g_t = quadrature_moments(h, z, _t_u(geom, schedule), size)
    return jnp.where(expansion == EXPAND_SIGMA, g_sig, jnp.where(expansion == EXPAND_T, g_t, g_lam))


def _latest(n_points, size: int):
    return jnp.arange(size) < n_points


def _top_scale(moments, q, factor):
    """Multiply the moment of the highest used power (q-1) by ``factor``."""
    return jnp.where(jnp.arange(moments.shape[0]) == q - 1, moments * factor, moments)


def _set(g, k: int, cond, value):
    return g.at[k].set(jnp.where(cond, value, g[k]))


def _two_point_moment(g, h, z, q, variant):
    """B(h) relaxations of the first-derivative moment of a 2-point (linear) interpolant.

    UniPC's bh1 (B(h) = h) and bh2 (B(h) = e^h - 1) and DPM-Solver's midpoint rule give
    g_1 = B(h)/2; bh2 and dpmsolver coincide (Zhao et al. 2023, Sec. 3.3). With more points
    UniPC's linear system has as many equations as unknowns and B(h) cancels (exact moments).
    """
    g = _set(g, 1, (q == 2) & (variant == BH1), 0.5 * h)
    return _set(g, 1, (q == 2) & ((variant == BH2) | (variant == DPMSOLVER)), 0.5 * h * phi(1, z))


class StepGeometry(NamedTuple):
    """Where the points of one step sit. Slots 0..S-2: history (newest first); slot S-1: target.

    ``lam``/``t`` are the points' log-SNR and time, ``valid`` marks filled slots, ``base`` is the
    slot of the step's starting node; h = lambda_target - lambda_base, z = -h (data) or +h (noise).
    """

    lam: jnp.ndarray
    t: jnp.ndarray
    valid: jnp.ndarray
    base: jnp.ndarray
    h: jnp.ndarray
    z: jnp.ndarray

    @property
    def rho(self):
        """Positions in the step's normalised log-SNR, (lambda_j - lambda_base) / h."""
        return jnp.where(self.valid, (self.lam - self.lam[self.base]) / self.h, 0.0)


class StepBasis(NamedTuple):
    """What a step's predictor and corrector share: the slots' positions u_j (S,) in the expansion
    variable and the kernel's moments G_k (S,) against u^k (before either rule adjusts them)."""

    positions: jnp.ndarray
    moments: jnp.ndarray


def step_basis(geom: StepGeometry, variant, expansion, schedule=None) -> StepBasis:
    """The positions and moments of one step, computed once for its predictor and its corrector."""
    s = geom.lam.shape[0]
    return StepBasis(expansion_positions(geom, expansion, variant), expansion_moments(geom, expansion, schedule, s))


def _predictor_rule(geom: StepGeometry, order, variant, expansion, coef, moments):
    """(mask of the points, adjusted moments) of the predictor; it never uses the target slot."""
    h, z, base = geom.h, geom.z, geom.base
    s = geom.lam.shape[0]
    slots = jnp.arange(s)
    mask = _latest(order, s) & (slots < s - 1)
    # the DPM-Solver / B(h) rules are lambda-space rules; elsewhere those variants are exact
    lam_rule = jnp.where(expansion == EXPAND_LAMBDA, variant, TAYLOR)
    # DPM-Solver-3 singlestep: first derivative from the base and newest points only, exact phi_2.
    single3 = (lam_rule == DPMSOLVER) & (order == 3) & (base > 0)
    mask = jnp.where(single3, (slots == 0) | (slots == base), mask)
    q = jnp.where(single3, 2, order)
    g = _two_point_moment(moments, h, z, q, jnp.where(single3, TAYLOR, lam_rule))
    # DPM-Solver-3 multistep: its published D2 term carries half the exact moment.
    g = _set(g, 2, (lam_rule == DPMSOLVER) & (q == 3), 0.5 * g[2])
    return mask, _top_scale(g, q, jnp.where(variant == FREE, coef, 1.0))


def _corrector_rule(geom: StepGeometry, order, variant, expansion, coef, moments):
    """(mask, adjusted moments) of the corrector: the predictor's ``order`` points and the target slot."""
    s = geom.lam.shape[0]
    slots = jnp.arange(s)
    mask = (_latest(order, s) & (slots < s - 1)) | (slots == s - 1)
    q = order + 1
    lam_rule = jnp.where((expansion == EXPAND_LAMBDA) & (variant != DPMSOLVER), variant, TAYLOR)
    g = _two_point_moment(moments, geom.h, geom.z, q, lam_rule)
    return mask, _top_scale(g, q, jnp.where(variant == FREE, coef, 1.0))


def predictor_weights(geom: StepGeometry, order, variant, expansion, coef, schedule=None):
    """Weights (S,) over the candidate points; the predictor never uses the target slot."""
    basis = step_basis(geom, variant, expansion, schedule)
    return interpolation_weights(basis.positions, *_predictor_rule(geom, order, variant, expansion, coef, basis.moments))


def corrector_weights(geom: StepGeometry, order, variant, expansion, coef, schedule=None):
    """Corrector weights (S,): the predictor's ``order`` points plus the new value at the target slot
    (UniC, Zhao et al. 2023; with ``order`` 1 and the sigma expansion: Heun's trapezoid rule)."""
    basis = step_basis(geom, variant, expansion, schedule)
    return interpolation_weights(basis.positions, *_corrector_rule(geom, order, variant, expansion, coef, basis.moments))


def step_weights(geom: StepGeometry, order, variant, expansion, coef, schedule=None):
    """(predictor weights, corrector weights) of one step, equal to :func:`predictor_weights` and
    :func:`corrector_weights`: the positions and moments are computed once and both Lagrange bases
    in one batched recursion. The executor calls this; the smaller program compiles faster
    (benchmarks/compile_time.py) and its samples are bit-identical in float32."""
    basis = step_basis(geom, variant, expansion, schedule)
    rules = (_predictor_rule(geom, order, variant, expansion, coef, basis.moments),
             _corrector_rule(geom, order, variant, expansion, coef, basis.moments))
    masks, moments = (jnp.stack(parts) for parts in zip(*rules))
    w = jax.vmap(interpolation_weights, in_axes=(None, 0, 0))(basis.positions, masks, moments)
    return w[0], w[1]
