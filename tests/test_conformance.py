"""Conformance table: every registered preset, and random valid plans mixing every per-step choice."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import counting_model
from hypothesis import HealthCheck, given, settings, strategies as st

from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.solvers import plan as P

SCHED = schedules.VPLinear()
NAMES = sorted(solvers.PRESETS)
N_STEPS = 6


def _plan(name, discretization="logsnr", n=N_STEPS, dtype=jnp.float32):
    ts = jnp.asarray(schedules.discretize(discretization, n, SCHED), dtype)
    return solvers.PRESETS[name].build(ts)


@pytest.fixture(scope="module")
def counted(gmm10):
    return counting_model(gmm10)


def test_all_presets_share_one_executable_per_length(gmm10):
    """Plans of the same length never retrace, whatever the preset or the grid."""
    x_T = jax.random.normal(jax.random.key(0), (7, 64))
    samplers.sample(gmm10, SCHED, _plan("ddim"), x_T)
    before = samplers.trace_count()
    for name in NAMES:
        for disc in ("logsnr", "karras", "time_quadratic"):
            x = samplers.sample(gmm10, SCHED, _plan(name, disc), x_T)
            assert np.all(np.isfinite(np.asarray(x))), (name, disc)
    assert samplers.trace_count() == before


@pytest.mark.parametrize("name", NAMES)
def test_preset_conformance(gmm10, counted, name):
    model, calls = counted
    plan = _plan(name)
    plan.validate(SCHED)
    # exact NFE, counted on real model calls
    calls["n"] = 0
    x_T = jax.random.normal(jax.random.key(1), (64, 64))
    x64b = jax.block_until_ready(samplers.sample(model, SCHED, plan, x_T))
    assert calls["n"] == plan.nfe() == solvers.nfe(plan), (calls["n"], plan.nfe())
    # batch shapes: one sample does not depend on its batch-mates
    for b in (1, 7):
        xb = samplers.sample(gmm10, SCHED, plan, x_T[:b])
        assert xb.shape == (b, 64) and xb.dtype == jnp.float32
        np.testing.assert_allclose(xb, x64b[:b], atol=1e-4)  # noise forms: float32 round-off
    # under an outer jit, with the plan as a traced argument
    outer = jax.jit(lambda p, x: samplers.sample(gmm10, SCHED, p, x))
    np.testing.assert_allclose(outer(plan, x_T[:7]), x64b[:7], atol=1e-4)
    # float64 agrees with float32 (the model's NumPy leaves are made jnp float64 arrays first: the
    # same NumPy leaves passed in both modes confuse jax's argument cache)
    with jax.enable_x64(True):
        plan64 = _plan(name, dtype=jnp.float64)
        gmm64 = jax.tree.map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, gmm10)
        x64 = samplers.sample(gmm64, SCHED, plan64, jnp.asarray(np.asarray(x_T[:3]), jnp.float64))
        assert x64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(x64), np.asarray(x64b[:3]), atol=2e-3)


def _valid_plan(draw, n):
    """Hypothesis: every per-step choice drawn independently among the valid ones."""
    ts = np.sort(np.asarray(draw(st.lists(st.floats(0.01, 0.99), min_size=n - 1, max_size=n - 1,
                                          unique=True))))[::-1]
    ts = np.concatenate([[SCHED.t_max], ts, [SCHED.t_min]])
    if not np.all(np.diff(ts) < -1e-4):
        ts = np.asarray(schedules.discretize("time_uniform", n, SCHED))
    cols = {k: [] for k in ("prediction", "order", "variant", "expansion", "base", "corrector", "coef")}
    for i in range(n):
        corr = draw(st.sampled_from(list(P.CORRECTOR_CODES.values())))
        max_order = min(i + 1, P.MAX_ORDER - (corr == P.UNIC))
        variant = draw(st.sampled_from(list(P.VARIANT_CODES.values())))
        if variant == P.DPMSOLVER:
            max_order = min(max_order, 3)
        cols["order"].append(draw(st.integers(1, max_order)))
        cols["variant"].append(variant)
        cols["corrector"].append(corr)
        cols["prediction"].append(draw(st.sampled_from([P.NOISE, P.DATA])))
        cols["expansion"].append(draw(st.sampled_from(list(P.EXPANSION_CODES.values()))))
        cols["base"].append(draw(st.integers(0, min(i, P.HISTORY - 1))))
        cols["coef"].append(draw(st.floats(0.5, 1.5)))
    return solvers.make_plan(jnp.asarray(ts, jnp.float32), analytic_first=draw(st.booleans()), **cols)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_valid_plans_sample_finite_with_their_nfe(counted, data):
    model, calls = counted
    plan = _valid_plan(data.draw, 5)
    plan.validate(SCHED)
    calls["n"] = 0
    x = jax.block_until_ready(samplers.sample(model, SCHED, plan, jax.random.normal(jax.random.key(4), (16, 64))))
    assert np.all(np.isfinite(np.asarray(x))), plan
    assert calls["n"] == plan.nfe(), (calls["n"], plan.nfe(), plan)
