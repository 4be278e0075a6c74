"""Align Your Steps' closed form (Sabour et al. 2024, Thm 3.1) as an exact oracle for learned nodes.

Isotropic Gaussian data N(0, c^2 I) under the EDM schedule (alpha = 1, sigma = t): the denoiser is
D(x, s) = c^2/(c^2+s^2) x and the probability-flow ODE dx/ds = (x - D)/s = x s/(c^2+s^2) has the
solution x(s) ∝ sqrt(c^2+s^2). Write s = c tan(th). One DDIM step (= Euler in s) from s to s':

    x' = x [1 + (s' - s) s/(c^2+s^2)] = x [1 + (tan th' - tan th) sin th cos th]
       = x [cos th' + sin(th' - th) sin th] / cos th'          (tan th' - tan th = sin(th'-th)/(cos th cos th'))
       = x cos th cos(th' - th) / cos th'                      (cos th' = cos th cos d - sin th sin d)

while the exact flow maps x to x cos th / cos th'. So N steps give the exact endpoint times
prod_i cos(th_{i+1} - th_i): the paired error |x_N - x_exact| = |x_exact| (1 - prod_i cos d_i). For
fixed end points sum_i d_i is fixed and -log cos is strictly convex (second derivative sec^2 >= 1),
so the error is minimised exactly by equal increments in th = arctan(s/c):

    s_i = c tan((1 - i/N) arctan(s_max/c) + (i/N) arctan(s_min/c)),

AYS's tangent law, for every N (not only asymptotically). The same strong convexity bounds how far
nodes with objective q = prod cos d_i can be from it: sum_i (d_i - d*)^2 <= 2 (log q* - log q), so
max_i |th_i - th*_i| <= sqrt(2 N (log q* - log q)) — the tolerance the tests derive.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers, samplers, schedules, solvers
from stepwise.search.learned import GradientOptions, dp_path, learn_nodes

C, DIM = 0.5, 4


def gaussian(schedule):
    return denoisers.GaussianMixture([1.0], np.zeros((1, DIM)), np.full((1, DIM), C**2), schedule=schedule)


def theta(ts) -> np.ndarray:
    return np.arctan(np.asarray(ts, np.float64) / C)


def ays_nodes(n: int, schedule) -> np.ndarray:
    """AYS Theorem 3.1 for data std C, written independently of stepwise's discretizations."""
    i = np.arange(n + 1) / n
    return C * np.tan((1 - i) * np.arctan(schedule.t_max / C) + i * np.arctan(schedule.t_min / C))


def log_q(ts) -> float:
    """log prod_i cos(th_{i+1} - th_i): the DDIM endpoint over the exact one (module doc)."""
    return float(np.sum(np.log(np.cos(np.diff(theta(ts))))))


def test_ddim_endpoint_is_the_exact_flow_times_a_product_of_cosines():
    """The compiled sampler against the closed form above, on random decreasing node sets (float64)."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        sched = schedules.EDM()
        model = gaussian(sched)
        x_T = jax.random.normal(jax.random.key(1), (5, DIM), jnp.float64) * sched.prior_std()
        for n in (1, 3, 7):
            inner = np.sort(rng.uniform(sched.t_min, sched.t_max, n - 1))[::-1]
            ts = np.concatenate([[sched.t_max], inner, [sched.t_min]])
            out = np.asarray(samplers.sample(model, sched, solvers.ddim(jnp.asarray(ts)), x_T))
            exact = np.asarray(x_T) * np.sqrt((C**2 + ts[-1] ** 2) / (C**2 + ts[0] ** 2))
            np.testing.assert_allclose(out, exact * np.exp(log_q(ts)), rtol=1e-11)


def test_the_tangent_law_beats_every_other_grid():
    """The closed-form objective is largest at the AYS nodes: random grids and the presets' grids
    with the same end points all score lower (a check of the optimality claim, not of stepwise)."""
    rng = np.random.default_rng(1)
    sched = schedules.EDM()
    for n in (2, 5, 10):
        best = log_q(ays_nodes(n, sched))
        for _ in range(200):
            inner = np.sort(rng.uniform(sched.t_min, sched.t_max, n - 1))[::-1]
            assert log_q(np.concatenate([[sched.t_max], inner, [sched.t_min]])) < best
        for kind in ("karras", "logsnr", "time_uniform"):
            assert log_q(schedules.discretize(kind, n, sched)) < best


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 8])
def test_gradient_nodes_are_the_ays_tangent_law(n):
    """learn_nodes (paired RMSE to the reference solve, through the compiled sampler) from a
    time-uniform DDIM grid ends on AYS's closed form: its closed-form objective is within 1e-9 of the
    optimum and its nodes within the derived bound sqrt(2 N (log q* - log q)) of the tangent law."""
    with jax.enable_x64(True):
        sched = schedules.EDM()
        model = gaussian(sched)
        start = jnp.asarray(schedules.discretize("time_uniform", n, sched))
        learned, info = learn_nodes(model, sched, solvers.ddim(start),
                                    GradientOptions(steps=300, lr=0.05, train_samples=16, val_samples=16,
                                                    val_every=20))
        ts = np.asarray(learned.ts, np.float64)
    target = ays_nodes(n, sched)
    gap = log_q(target) - log_q(ts)
    assert -1e-12 <= gap <= 1e-9, gap          # gradient descent reached the optimum's objective
    assert log_q(target) - log_q(np.asarray(start)) > 1e3 * max(gap, 1e-12)  # ...from far away
    bound = np.sqrt(2 * n * max(gap, 0.0)) + 1e-9
    assert np.max(np.abs(theta(ts) - theta(target))) <= bound
    assert bound < 2e-4                        # so the nodes ARE the tangent law, to 2e-4 in arctan(s/c)
    assert info["best_validation"] < info["history"][0]["validation"]


def test_dp_path_over_the_closed_form_step_costs_is_the_tangent_law():
    """GITS's DP (``dp_path``) over a grid uniform in arctan(s/c) with the exact per-step cost
    -log cos(th_k - th_j) picks every (grid/N)-th node: the AYS nodes, exactly."""
    sched = schedules.EDM()
    grid = C * np.tan(np.linspace(np.arctan(sched.t_max / C), np.arctan(sched.t_min / C), 61))
    th = theta(grid)
    cost = np.full((61, 61), np.inf)
    for j in range(61):
        for k in range(j + 1, 61):
            cost[j, k] = -np.log(np.cos(th[k] - th[j]))
    for n in (3, 4, 5, 6):
        path = dp_path(cost, n)
        np.testing.assert_allclose(grid[path], ays_nodes(n, sched), rtol=1e-12)
