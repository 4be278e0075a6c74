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


def _geometries(rng, count: int):
    """Random step geometries on SCHED: 4 history slots (newest first, some empty) and the target."""
    for _ in range(count):
        filled = int(rng.integers(1, 5))
        lam = np.sort(rng.uniform(-6.0, 4.0, 5))                          # increasing log-SNR
        lam = jnp.asarray(np.concatenate([lam[:4][::-1], lam[4:]]))        # history newest first, target last
        valid = jnp.asarray([True] * filled + [False] * (4 - filled) + [True])
        base = int(rng.integers(0, filled))
        h = lam[4] - lam[base]
        yield solvers.StepGeometry(lam=lam, t=SCHED.t_of_lambda(lam), valid=valid, base=jnp.asarray(base), h=h,
                                   z=jnp.where(rng.random() < 0.5, -h, h)), filled


def test_step_weights_are_the_predictor_and_corrector_weights():
    """The executor's one batched computation of both weight vectors (and its derivatives w.r.t. the
    nodes) equals the two separate functions, for every variant, expansion and order."""
    combos = np.array([(o, v, e) for o in range(1, 5) for v in solvers.VARIANT_CODES.values()
                       for e in solvers.EXPANSION_CODES.values()])

    def weights(lam, geom, f):
        """f's weights at every (order, variant, expansion) of ``combos`` for the nodes ``lam``."""
        h = lam[4] - lam[geom.base]
        g = geom._replace(lam=lam, t=SCHED.t_of_lambda(lam), h=h, z=jnp.sign(geom.z) * h)
        w = jax.vmap(lambda o, v, e: jnp.stack(f(g, o, v, e, 0.7, SCHED)))(*combos.T)
        return w.reshape(len(combos), -1, 5)

    separate = lambda g, *a: (solvers.predictor_weights(g, *a), solvers.corrector_weights(g, *a))  # noqa: E731
    value = jax.jit(weights, static_argnums=2)
    slope = jax.jit(jax.jacfwd(weights), static_argnums=2)
    with jax.enable_x64(True):
        for geom, filled in _geometries(np.random.default_rng(0), 8):
            use = combos[:, 0] <= filled
            np.testing.assert_allclose(value(geom.lam, geom, solvers.step_weights)[use],
                                       value(geom.lam, geom, separate)[use], rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(slope(geom.lam, geom, solvers.step_weights)[use],
                                       slope(geom.lam, geom, separate)[use], rtol=1e-9, atol=1e-10)


def test_phis_agree_with_their_integral_definition():
    """phi_k(z) = int_0^1 e^{(1-r) z} r^{k-1}/(k-1)! dr, by 64-node Gauss-Legendre quadrature, on both
    sides of the series/recursion switch at |z| = 1 (and phi = phis' k-th row)."""
    import math
    x, w = np.polynomial.legendre.leggauss(64)
    r, w = 0.5 * (x + 1.0), 0.5 * w
    z = np.array([-8.0, -1.5, -1.0, -0.999, -0.3, 0.0, 1e-6, 0.5, 0.999, 1.0, 2.5, 6.0])
    with jax.enable_x64(True):
        got = np.asarray(solvers.phis(5, jnp.asarray(z)))
        for k in range(1, 6):
            want = [np.sum(w * np.exp((1 - r) * zz) * r ** (k - 1)) / math.factorial(k - 1) for zz in z]
            np.testing.assert_allclose(got[k - 1], want, rtol=1e-10)
            np.testing.assert_array_equal(np.asarray(solvers.phi(k, jnp.asarray(z))), got[k - 1])
