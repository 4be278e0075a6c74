"""Empirical convergence order of every preset against the float64 diffrax reference (median
per-trajectory RMSE on digits_gmm(10), logSNR grid, as tests/test_convergence.py), plus preset rules.

Measured and explained orders (theory in solvers/coefficients.py and solvers/presets.py):
* euler 1, heun 2 (its final Euler step adds an O(h^2) error once).
* DPM-Solver(-++) singlestep 2S: 2; 3S: 3 with both diffusers' midpoint rule (D1 from the base and
  newest point with the exact phi_2 moment: exact up to O(h^4) because the newest point sits at 2/3 of
  the group) and the exact-moment form.
* UniPC: UniP-p + UniC has order p+1 (p = 1, 2 here); without the corrector order p.
* DEIS tAB (t expansion) and the lambda ("logrho") form: order p.
* iPNDM with the fixed equal-step Adams-Bashforth weights: 2 on the (non-uniform in sigma) logSNR grid,
  whatever its nominal order; with variable-step weights: 4 (asymptotically; pre-asymptotic below 80 steps).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.solvers import presets

SCHED = schedules.VPLinear()
STEPS = (40, 80, 160, 320)

CASES = [
    ("euler", {}, 1, STEPS),
    ("heun", {}, 2, STEPS),
    ("dpm_solver_singlestep", {"order": 2}, 2, STEPS),
    ("dpm_solver_singlestep", {"order": 3}, 3, STEPS),
    ("dpm_solver_pp_singlestep", {"order": 2}, 2, STEPS),
    ("dpm_solver_pp_singlestep", {"order": 3}, 3, STEPS),
    ("dpm_solver_pp_singlestep", {"order": 3, "variant": "taylor"}, 3, STEPS),
    ("unipc", {"order": 1}, 2, STEPS),
    ("unipc", {"order": 2}, 3, STEPS),
    ("unipc", {"order": 2, "variant": "bh1"}, 3, STEPS),
    ("unipc", {"order": 2, "prediction": "noise"}, 3, STEPS),
    ("unipc", {"order": 2, "corrector": False}, 2, STEPS),
    ("deis_tab", {"order": 2}, 2, STEPS),
    ("deis_tab", {"order": 3}, 3, STEPS),
    ("deis_tab", {"order": 3, "expansion": "lambda"}, 3, STEPS),
    ("ipndm", {}, 2, STEPS),
    ("ipndm", {"variable_step": True}, 4, (80, 160, 320)),
]


def _fitted_order(gmm, x_T, ref, name, opts, steps):
    p = solvers.PRESETS[name]
    if "lower_order_final" in p.options:
        opts = {"lower_order_final": False, **opts}
    errs = []
    with jax.enable_x64(True):
        for n in steps:
            plan = p.build(schedules.discretize("logsnr", n, SCHED), **opts)
            x = samplers.sample(gmm, SCHED, plan, x_T)
            errs.append(float(jnp.median(jnp.sqrt(jnp.mean((x - ref) ** 2, axis=1)))))
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0], errs


@pytest.mark.slow
@pytest.mark.parametrize("name,opts,order,steps", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_empirical_order(gmm10, problem, name, opts, order, steps):
    slope, errs = _fitted_order(gmm10, *problem, name, opts, steps)
    assert abs(slope - order) <= 0.3, (slope, errs)


def test_every_preset_has_a_convergence_case():
    tested = {c[0] for c in CASES} | {"ddim", "dpm_solver", "dpm_solver_pp"}  # tests/test_convergence.py
    assert set(solvers.PRESETS) <= tested


def test_singlestep_orders_follow_diffusers_rule():
    so = presets.singlestep_orders
    assert so(6, 3) == [1, 2, 3, 1, 2, 1]
    assert so(7, 3) == [1, 2, 3, 1, 2, 3, 1]
    assert so(8, 3) == [1, 2, 3, 1, 2, 3, 1, 2]
    assert so(6, 2) == [1, 2, 1, 2, 1, 1] and so(5, 2) == [1, 2, 1, 2, 1]
    assert so(6, 3, lower_order_final=False) == [1, 2, 3, 1, 2, 3]
    plan = presets.dpm_solver_pp_singlestep(schedules.discretize("logsnr", 7, SCHED), order=3)
    assert list(np.asarray(plan.base)) == [0, 1, 2, 0, 1, 2, 0]


def test_unipc_orders_and_corrector_columns():
    assert presets.unipc_orders(6, 3) == [1, 2, 3, 3, 2, 1]
    assert presets.unipc_orders(20, 3)[-1] == 1                 # no 15-step threshold in UniPC
    assert presets.unipc_orders(5, 2, lower_order_final=False) == [1, 2, 2, 2, 2]
    plan = presets.unipc(schedules.discretize("logsnr", 5, SCHED), disable_corrector=[1])
    assert list(np.asarray(plan.corrector)) == [1, 0, 1, 1, 0] and plan.nfe() == 5
    with pytest.raises(ValueError, match="bh1"):
        presets.unipc(schedules.discretize("logsnr", 5, SCHED), variant="taylor")


@pytest.mark.parametrize("nfe", [3, 4, 5, 8])
def test_every_preset_hits_its_nfe(nfe):
    for name, p in solvers.PRESETS.items():
        plan = solvers.build_preset(name, nfe, SCHED)
        assert plan.num_steps == p.steps(nfe) and plan.nfe() == nfe, name
    assert solvers.build_preset("heun", 5, SCHED).num_steps == 3
    assert solvers.build_preset("heun", 6, SCHED).num_steps == 3


def test_expansions_are_accepted_and_coincide_at_first_order(gmm10):
    """Every expansion is implemented; a one-point interpolant is the same DDIM step in all of them."""
    ts = schedules.discretize("time_uniform", 4, SCHED)
    x_T = jax.random.normal(jax.random.key(2), (8, 64))
    outs = [samplers.sample(gmm10, SCHED, solvers.make_plan(ts, prediction="noise", expansion=e), x_T)
            for e in ("lambda", "t", "sigma")]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=2e-5)
