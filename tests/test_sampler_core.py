"""SolverPlan validation, NFE accounting, the jit-once executor, float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import counting_model

from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.solvers.plan import UNIC

SCHED = schedules.VPLinear()


def _random_valid_plan(rng, n):
    ts = np.sort(rng.uniform(SCHED.t_min, SCHED.t_max, size=n + 1))[::-1].copy()
    ts[0], ts[-1] = SCHED.t_max, SCHED.t_min
    order = [int(rng.integers(1, min(i + 1, 3) + 1)) for i in range(n)]
    variant = [int(rng.choice([solvers.VARIANT_CODES["taylor"], solvers.VARIANT_CODES["dpmsolver"],
                               solvers.VARIANT_CODES["free"]])) for _ in range(n)]
    base = [int(rng.integers(0, min(i, 2) + 1)) if rng.random() < 0.3 else 0 for i in range(n)]
    corr = [int(rng.choice([0, 0, 1, 2])) if o < 4 else 0 for o in order]
    return solvers.make_plan(jnp.asarray(ts, jnp.float32), prediction=[int(rng.integers(0, 2)) for _ in range(n)],
                             order=order, variant=variant, base=base, corrector=corr,
                             coef=list(rng.uniform(0.5, 1.5, n)), analytic_first=bool(rng.random() < 0.5))


def test_no_retrace_over_many_random_plans(gmm10):
    rng = np.random.default_rng(0)
    x_T = jax.random.normal(jax.random.key(0), (32, 64))
    before = samplers.trace_count()
    for _ in range(60):
        plan = _random_valid_plan(rng, 6)
        x = samplers.sample(gmm10, SCHED, plan, x_T)
        assert np.all(np.isfinite(np.asarray(x)))
    assert samplers.trace_count() - before == 1


def test_different_step_count_retraces(gmm10):
    # a batch size no other test uses: a program another test compiled in this process is not retraced
    x_T = jax.random.normal(jax.random.key(0), (13, 64))
    before = samplers.trace_count()
    for n in (3, 4):
        samplers.sample(gmm10, SCHED, solvers.ddim(schedules.discretize("logsnr", n, SCHED)), x_T)
    assert samplers.trace_count() - before == 2


def test_nfe_accounting_is_exact(gmm10):
    rng = np.random.default_rng(1)
    model, calls = counting_model(gmm10)
    x_T = jax.random.normal(jax.random.key(0), (4, 64))
    for _ in range(12):
        plan = _random_valid_plan(rng, 5)
        calls["n"] = 0
        jax.block_until_ready(samplers.sample(model, SCHED, plan, x_T))
        assert calls["n"] == plan.nfe(), (calls["n"], plan.nfe(), plan)


def test_nfe_formula():
    ts = schedules.discretize("logsnr", 4, SCHED)
    assert solvers.dpm_solver_pp(ts, order=2).nfe() == 4
    assert solvers.make_plan(ts, analytic_first=True).nfe() == 3
    # UniC after every step but the last: the corrector reuses the next evaluation
    assert solvers.make_plan(ts, corrector=[UNIC, UNIC, UNIC, 0]).nfe() == 4
    assert solvers.make_plan(ts, corrector=[UNIC] * 4).nfe() == 5
    assert solvers.make_plan(ts, corrector=["reeval"] * 4).nfe() == 8


def test_validate_names_step_and_field():
    ts = schedules.discretize("logsnr", 4, SCHED)
    with pytest.raises(ValueError, match=r"step 0: order=2"):
        solvers.make_plan(ts, order=2).validate()
    with pytest.raises(ValueError, match=r"step 3: order=4"):
        solvers.make_plan(ts, order=[1, 2, 3, 4], variant="dpmsolver").validate()
    with pytest.raises(ValueError, match=r"step 1: base=2"):
        solvers.make_plan(ts, base=[0, 2, 0, 0]).validate()
    with pytest.raises(ValueError, match="prediction"):
        solvers.make_plan(ts, prediction="velocity")
    with pytest.raises(ValueError, match=r"step 2: model=1"):
        solvers.make_plan(ts, model=[0, 0, 1, 0]).validate(num_models=1)
    with pytest.raises(ValueError, match="decreasing"):
        solvers.make_plan(ts[::-1]).validate()
    with pytest.raises(ValueError, match="domain"):
        solvers.make_plan(jnp.asarray([2.0, 0.5, 0.001])).validate(SCHED)


def test_sample_rejects_invalid_plan(gmm10):
    ts = schedules.discretize("logsnr", 3, SCHED)
    with pytest.raises(ValueError, match="order"):
        samplers.sample(gmm10, SCHED, solvers.make_plan(ts, order=3), jnp.zeros((2, 64)))


def test_preset_orders_follow_reference_rules():
    assert solvers.multistep_orders(5, 3) == [1, 2, 3, 2, 1]
    assert solvers.multistep_orders(20, 3)[:3] == [1, 2, 3] and solvers.multistep_orders(20, 3)[-1] == 3
    assert solvers.multistep_orders(5, 2, lower_order_final=False) == [1, 2, 2, 2, 2]


def test_float64_and_batch_shapes(gmm10):
    with jax.enable_x64(True):
        ts = schedules.discretize("logsnr", 5, SCHED)
        plan = solvers.dpm_solver_pp(ts, order=2)
        x_T = jax.random.normal(jax.random.key(0), (3, 64), jnp.float64)
        x = samplers.sample(gmm10, SCHED, plan, x_T)
        assert x.dtype == jnp.float64 and x.shape == (3, 64)
        x32 = samplers.sample(gmm10, SCHED, jax.tree.map(lambda a: a.astype(jnp.float32)
                                                         if a.dtype == jnp.float64 else a, plan),
                              x_T.astype(jnp.float32))
        assert np.abs(np.asarray(x) - np.asarray(x32)).max() < 1e-3


def test_trajectory_and_endpoints(gmm10):
    ts = schedules.discretize("time_uniform", 4, SCHED)
    x_T = jax.random.normal(jax.random.key(0), (5, 64))
    x, traj = samplers.sample(gmm10, SCHED, solvers.ddim(ts), x_T, return_trajectory=True)
    assert traj.shape == (5, 5, 64)
    np.testing.assert_array_equal(traj[0], x_T)
    np.testing.assert_array_equal(traj[-1], x)


def test_single_gaussian_ddim_matches_closed_form():
    """For a point mass at mu the ODE is x_t = alpha_t mu + sigma_t eps_T: any solver is exact."""
    from stepwise import denoisers
    mu = np.linspace(-0.5, 0.5, 6)
    m = denoisers.GaussianMixture([1.0], mu[None], np.zeros((1, 6)) + 1e-12, SCHED)
    x_T = jax.random.normal(jax.random.key(0), (4, 6))
    eps = (x_T - SCHED.alpha(SCHED.t_max) * mu) / SCHED.sigma(SCHED.t_max)
    expected = SCHED.alpha(SCHED.t_min) * mu + SCHED.sigma(SCHED.t_min) * eps
    for plan in (solvers.ddim(schedules.discretize("logsnr", 3, SCHED)),
                 solvers.dpm_solver(schedules.discretize("time_uniform", 4, SCHED), order=3)):
        np.testing.assert_allclose(samplers.sample(m, SCHED, plan, x_T), expected, atol=2e-5)


def test_union_length_counts_nested_and_overlapping_spans_once():
    from stepwise.samplers.clock import union_length

    assert union_length([]) == 0.0
    assert union_length([(0.0, 1.0), (2.0, 3.5)]) == pytest.approx(2.5)        # disjoint
    assert union_length([(0.0, 4.0), (1.0, 2.0), (1.5, 3.0)]) == pytest.approx(4.0)   # nested
    assert union_length([(3.0, 5.0), (0.0, 1.0), (0.5, 2.0)]) == pytest.approx(4.0)   # overlap, unsorted


def test_compile_clock_times_compiling_not_running():
    """A block that compiles a fresh program: the clock sees most of its wall time (never more);
    the same program again (cached): nothing; a clock that has exited hears nothing more."""
    import time

    def f(x):   # an unrolled chain: compiling it takes visibly longer than running it on 4 numbers
        for k in range(300):
            x = jnp.sin(x) * (1.0 + k * 1e-3) + jnp.cos(x)
        return x

    fn = jax.jit(f)
    x = jnp.ones(4)
    t0 = time.perf_counter()
    with samplers.CompileClock() as first:
        jax.block_until_ready(fn(x))
    wall = time.perf_counter() - t0
    assert 0.5 * wall < first.seconds <= first.wall <= wall
    with samplers.CompileClock() as again:
        jax.block_until_ready(fn(x))
    assert again.seconds == 0.0
    before = first.seconds
    jax.block_until_ready(jax.jit(f)(jnp.ones(5)))   # compiles outside any clock
    assert first.seconds == before
