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
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from solvers.plan import BH1, BH2, DPMSOLVER, FREE, TAYLOR

_SERIES_TERMS = 16


def phi(k: int, z):
    """phi_k(z) = sum_{m>=0} z^m / (m+k)!, stable for all z (series near 0, recursion elsewhere)."""
    z = jnp.asarray(z)
    small = jnp.abs(z) < 1.0
    zs = jnp.where(small, z, 0.0)
    series = sum(zs**m * (1.0 / math.factorial(m + k)) for m in range(_SERIES_TERMS))
    zr = jnp.where(small, 1.0, z)
    rec = jnp.expm1(zr) / zr
    for j in range(1, k):
        rec = (rec - 1.0 / math.factorial(j)) / zr
    return jnp.where(small, series, rec)


def exact_moments(h, z, size: int):
    """g_k = k! h phi_{k+1}(z) for k < size: the exact integrals of h e^{z(1-r)} r^k over [0, 1]."""
    return jnp.stack([float(math.factorial(k)) * h * phi(k + 1, z) for k in range(size)])


def lagrange_monomials(rho, mask):
    """Monomial coefficients a[j, k] of the Lagrange basis L_j(r) through the masked points rho.

    Unmasked rows are zero. Shape (S, S) for S candidate points.
    """
    s = rho.shape[0]
    idx = jnp.arange(s)
    poly = jnp.zeros((s, s), rho.dtype).at[:, 0].set(1.0)
    for i in range(s):
        use = mask[i] & (idx != i)
        denom = jnp.where(use, rho - rho[i], 1.0)
        shifted = jnp.concatenate([jnp.zeros((s, 1), rho.dtype), poly[:, :-1]], axis=1)
        new = (shifted - rho[i] * poly) / denom[:, None]
        poly = jnp.where(use[:, None], new, poly)
    return jnp.where(mask[:, None], poly, 0.0)


def interpolation_weights(rho, mask, moments):
    """w_j = sum_k g_k a[j, k]: the weight of point j in int kernel * P (moments g beyond use are 0)."""
    return lagrange_monomials(rho, mask) @ moments


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


def predictor_weights(rho, h, z, order, variant, base, coef):
    """Weights (S,) over candidate points (slots 0..S-2: history, newest first; slot S-1: target).

    rho: (S,) positions (lambda_j - lambda_base)/h of the points; the predictor never uses the
    target slot.
    """
    s = rho.shape[0]
    slots = jnp.arange(s)
    mask = _latest(order, s) & (slots < s - 1)
    g = exact_moments(h, z, s)
    # DPM-Solver-3 singlestep: first derivative from the base and newest points only, exact phi_2.
    single3 = (variant == DPMSOLVER) & (order == 3) & (base > 0)
    mask = jnp.where(single3, (slots == 0) | (slots == base), mask)
    q = jnp.where(single3, 2, order)
    g = _two_point_moment(g, h, z, q, variant)
    # DPM-Solver-3 multistep: its published D2 term carries half the exact moment.
    g = _set(g, 2, (variant == DPMSOLVER) & (q == 3), 0.5 * g[2])
    g = _top_scale(g, q, jnp.where(variant == FREE, coef, 1.0))
    return interpolation_weights(rho, mask, g)


def corrector_weights(rho, h, z, order, variant, base, coef):
    """UniC weights (S,): the predictor's ``order`` points plus the new value at the target slot."""
    s = rho.shape[0]
    slots = jnp.arange(s)
    mask = (_latest(order, s) & (slots < s - 1)) | (slots == s - 1)
    q = order + 1
    g = _two_point_moment(exact_moments(h, z, s), h, z, q, jnp.where(variant == DPMSOLVER, TAYLOR, variant))
    g = _top_scale(g, q, jnp.where(variant == FREE, coef, 1.0))
    return interpolation_weights(rho, mask, g)
