"""Learned plans: the node parameterisation is always valid, gradients through the compiled sampler
match finite differences, gradient descent improves held-out error, and the DP path is optimal."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepwise import samplers, schedules, solvers
from stepwise.search.learned import (GradientOptions, dp_path, endpoint_rmse, learn_nodes, nodes_from_params,
                                     params_from_nodes)

SCHED = schedules.VPLinear()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-60.0, 60.0, allow_nan=False), min_size=1, max_size=12),
       st.sampled_from(["logsnr", "time"]))
def test_any_parameter_vector_decodes_to_a_valid_grid(theta, node_space):
    ts = np.asarray(nodes_from_params(jnp.asarray(theta, jnp.float32), SCHED, node_space, min_gap=1e-3), np.float64)
    assert ts.shape == (len(theta) + 1,) and np.all(np.isfinite(ts))
    assert ts[0] == pytest.approx(SCHED.t_max) and ts[-1] == pytest.approx(SCHED.t_min)
    assert np.all(np.diff(ts) < 0)
    solvers.make_plan(jnp.asarray(ts, jnp.float32)).validate(SCHED)   # inside the schedule's domain


@pytest.mark.parametrize("node_space", ["logsnr", "time"])
def test_parameters_round_trip_a_preset_grid(node_space):
    ts = schedules.discretize("logsnr" if node_space == "logsnr" else "time_uniform", 6, SCHED)
    back = nodes_from_params(params_from_nodes(ts, SCHED, node_space), SCHED, node_space)
    np.testing.assert_allclose(np.asarray(back), np.asarray(ts), rtol=2e-5)


def test_endpoint_gradient_matches_central_finite_differences(gmm_factory):
    """d RMSE / d t_k through the jitted lax.scan sampler, every interior node, in float64."""
    with jax.enable_x64(True):
        model = gmm_factory(3)
        ts = jnp.asarray(schedules.discretize("logsnr", 4, SCHED), jnp.float64)
        plan = solvers.dpm_solver_pp(ts, order=2)
        x_T = jax.random.normal(jax.random.key(0), (16, 64), jnp.float64)
        teacher = samplers.reference_solve(model, SCHED, x_T, rtol=1e-10)
        f = lambda t: endpoint_rmse(model, SCHED, plan.replace(ts=t), x_T, teacher)  # noqa: E731
        g = np.asarray(jax.grad(f)(ts))
        for k in range(1, ts.shape[0] - 1):
            h = 1e-6 * float(ts[k])
            fd = (float(f(ts.at[k].add(h))) - float(f(ts.at[k].add(-h)))) / (2 * h)
            assert g[k] == pytest.approx(fd, rel=1e-4, abs=1e-9), k


def test_gradient_reaches_corrections_the_solver_leaves_at_zero(gmm_factory):
    """The executor reads only the history slots up to the last nonzero weight, but its derivative
    is the full sum's: a DDIM step's zero weights on older slots (learned corrections start there)
    get their gradient, equal to central finite differences (float64)."""
    with jax.enable_x64(True):
        model = gmm_factory(3)
        plan = solvers.ddim(jnp.asarray(schedules.discretize("logsnr", 4, SCHED), jnp.float64))
        x_T = jax.random.normal(jax.random.key(2), (16, 64), jnp.float64)
        teacher = samplers.reference_solve(model, SCHED, x_T, rtol=1e-10)
        f = lambda c: endpoint_rmse(model, SCHED, plan.replace(corrections=c), x_T, teacher)  # noqa: E731
        c0 = jnp.zeros_like(plan.corrections)
        g = np.asarray(jax.grad(f)(c0))
        for i, j in ((2, 1), (3, 2), (3, 0)):        # older slots (weight 0 in DDIM) and the newest one
            fd = (float(f(c0.at[i, j].add(1e-6))) - float(f(c0.at[i, j].add(-1e-6)))) / 2e-6
            assert abs(g[i, j]) > 1e-6 and g[i, j] == pytest.approx(fd, rel=1e-4), (i, j)


@pytest.mark.slow
def test_learned_nodes_lower_validation_error_and_keep_other_columns(gmm_factory):
    model = gmm_factory(3)
    plan = solvers.build_preset("dpm_solver_pp", 4, SCHED, "time_uniform", order=2)
    before = samplers.trace_count()
    learned, info = learn_nodes(model, SCHED, plan, GradientOptions(steps=30, lr=0.05, train_samples=64,
                                                                    val_samples=64, val_every=10))
    assert info["best_validation"] < 0.8 * info["history"][0]["validation"]
    assert info["seeds"]["train"] != info["seeds"]["validation"]
    for c in ("prediction", "order", "variant", "corrector", "model", "analytic_first"):
        np.testing.assert_array_equal(np.asarray(getattr(learned, c)), np.asarray(getattr(plan, c)))
    assert not np.allclose(np.asarray(learned.ts), np.asarray(plan.ts))
    learned.validate(SCHED)
    assert learned.nfe() == plan.nfe()
    # sampling learned plans of this length reuses one executable
    x = jax.random.normal(jax.random.key(3), (8, 64))
    samplers.sample(model, SCHED, learned, x)
    n = samplers.trace_count()
    samplers.sample(model, SCHED, learned.replace(ts=plan.ts), x)
    assert samplers.trace_count() == n and n >= before


@pytest.mark.slow
def test_frechet_loss_lowers_the_validation_frechet_distance(gmm_factory):
    """loss="frechet" descends on the Fréchet distance of the endpoints' Gaussian fit to the teacher's;
    its reported validation value equals scipy's Fréchet distance of the same samples (independent)."""
    from stepwise.evaluation.stats import frechet_distance
    from stepwise.search.learned import teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("dpm_solver_pp", 4, SCHED, "time_uniform", order=2)
    o = GradientOptions(steps=20, lr=0.05, train_samples=128, val_samples=128, val_every=10, loss="frechet")
    teacher = teacher_data(model, SCHED, o)
    learned, info = learn_nodes(model, SCHED, plan, o, teacher=teacher)
    assert info["best_validation"] < 0.8 * info["history"][0]["validation"]
    x = np.asarray(samplers.sample(model, SCHED, learned, teacher.x_val), np.float64)
    y = np.asarray(teacher.val, np.float64)
    fd = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert info["best_validation"] == pytest.approx(fd, abs=5e-3)   # float32 eigvalsh of a 64x64 product


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Flow", "EDM"])
def test_learned_nodes_on_flow_and_edm_schedules(name):
    """Gradient and DP nodes work on every schedule family, not only VP: on a flow-matching
    (rectified-flow) and an EDM mixture, gradient descent lowers validation error and the DP nodes
    are a valid decreasing grid inside the schedule's domain that samples finitely. (Whether DP nodes
    beat time-uniform ones is an empirical question: on this Flow mixture at 4 DDIM steps they do
    not, 0.178 vs 0.172 RMSE; the summed one-step cost they minimise is not the global error.)"""
    from stepwise import denoisers
    from stepwise.search.learned import dp_nodes

    sched = getattr(schedules, name)()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    plan = solvers.build_preset("dpm_solver_pp", 4, sched, "time_uniform", order=2)
    _, info = learn_nodes(model, sched, plan, GradientOptions(steps=10, lr=0.05, train_samples=64,
                                                              val_samples=64, val_every=5))
    assert info["best_validation"] < 0.9 * info["history"][0]["validation"]
    ts = dp_nodes(model, sched, solvers.ddim, 4, grid=32, samples=64)
    assert ts.shape == (5,) and np.all(np.diff(np.asarray(ts)) < 0)
    dp_plan = solvers.ddim(ts)
    dp_plan.validate(sched)
    x = jax.random.normal(jax.random.key(7), (16, 64)) * sched.prior_std()
    assert np.all(np.isfinite(np.asarray(samplers.sample(model, sched, dp_plan, x))))


def test_relaxation_projection_keeps_every_row_in_its_ball():
    from stepwise.search.learned import _project

    x = jax.random.normal(jax.random.key(0), (6, 4, 4))
    d = 3.0 * jax.random.normal(jax.random.key(1), (6, 4, 4))
    p = _project(d, x, 0.1)
    norm = lambda a: np.sqrt(np.sum(np.asarray(a) ** 2, axis=(1, 2)))  # noqa: E731
    assert np.all(norm(p) <= 0.1 * norm(x) * (1 + 1e-5))
    small = 1e-4 * d
    np.testing.assert_array_equal(np.asarray(_project(small, x, 0.1)), np.asarray(small))   # inside: unchanged


def _plain_and_variant(model, discretization: str, **variant):
    """learn_nodes on a 3-step DDIM plan twice: default options and with ``variant``; (plain, variant, info)."""
    plan = solvers.build_preset("ddim", 3, SCHED, discretization)
    o = dict(steps=20, lr=0.05, train_samples=64, val_samples=64, val_every=10)
    plain, _ = learn_nodes(model, SCHED, plan, GradientOptions(**o))
    other, info = learn_nodes(model, SCHED, plan, GradientOptions(**o, **variant))
    return plain, other, info


@pytest.mark.slow
def test_relaxed_target_trains_other_nodes_and_still_lowers_validation(gmm_factory):
    plain, relaxed, info = _plain_and_variant(gmm_factory(3), "time_uniform", relax=0.2)
    assert info["best_validation"] < info["history"][0]["validation"]
    assert not np.allclose(np.asarray(relaxed.ts), np.asarray(plain.ts))
    with pytest.raises(ValueError, match="gradient_relax"):
        GradientOptions(relax=1.5)


def test_dp_path_is_the_optimum_over_every_path():
    rng = np.random.default_rng(0)
    m, steps = 7, 3
    cost = rng.uniform(0.1, 1.0, (m, m))
    path = dp_path(cost, steps)
    assert path[0] == 0 and path[-1] == m - 1 and len(path) == steps + 1 and np.all(np.diff(path) > 0)
    brute = min((sum(cost[a, b] for a, b in zip(p, p[1:])), p)
                for p in ((0, *mid, m - 1) for mid in itertools.combinations(range(1, m - 1), steps - 1)))
    assert tuple(path) == brute[1]
    with pytest.raises(ValueError, match="steps"):
        dp_path(cost, m)


def test_reference_trajectory_equals_separate_solves(gmm_factory):
    model = gmm_factory(3)
    ts = schedules.discretize("logsnr", 5, SCHED)
    x_T = jax.random.normal(jax.random.key(1), (16, 64))
    traj = samplers.reference_trajectory(model, SCHED, x_T, ts)
    assert traj.shape == (6, 16, 64)
    np.testing.assert_array_equal(np.asarray(traj[0]), np.asarray(x_T))
    for k in (2, 5):
        sep = samplers.reference_solve(model, SCHED, x_T, t_start=float(ts[0]), t_end=float(ts[k]))
        np.testing.assert_allclose(np.asarray(traj[k]), np.asarray(sep), atol=2e-4)


def test_ddim_cost_matrix_equals_the_generic_one_step_costs(gmm_factory):
    """The one-model-call-per-row DDIM costs equal one-step runs of the DDIM preset (the solver family)."""
    from stepwise.search.learned import ddim_cost_matrix, step_cost_matrix

    model = gmm_factory(3)
    grid = nodes_from_params(jnp.zeros((7,)), SCHED, "logsnr", 0.0)
    x_T = jax.random.normal(jax.random.key(2), (32, 64))
    fast = ddim_cost_matrix(model, SCHED, grid, x_T)
    slow = step_cost_matrix(model, SCHED, solvers.ddim, grid, x_T)
    upper = np.triu(np.ones((8, 8), bool), 1)
    np.testing.assert_allclose(fast[upper], slow[upper], rtol=1e-4, atol=1e-7)
    assert np.all(np.isinf(fast[~upper]))


def test_gits_baselines_take_the_dp_path_of_their_step_count():
    """DP nodes replace each baseline's nodes (its own number of steps), every other column kept;
    baselines that differ only in their discretization give one tuned plan."""
    from stepwise.search.learned import dp_baselines

    rng = np.random.default_rng(0)
    m = 12
    grid_ts = np.asarray(nodes_from_params(jnp.zeros((m - 1,)), SCHED, "logsnr", 0.0))
    cost = rng.uniform(0.1, 1.0, (m, m))
    base = [(f"dpm_solver_pp(order=2)/{d}", solvers.build_preset("dpm_solver_pp", 4, SCHED, d, order=2))
            for d in ("logsnr", "time_uniform")]
    afs = solvers.build_preset("ipndm", 5, SCHED, "logsnr", order=3).replace(analytic_first=1)
    tuned = dp_baselines(base + [("ipndm(order=3)/logsnr+afs", afs)], grid_ts, cost, SCHED)
    assert [n for n, _ in tuned] == ["dpm_solver_pp(order=2)/gits", "ipndm(order=3)/gits+afs"]
    for (_, p), (_, q) in zip(tuned, [base[0], ("", afs)]):
        np.testing.assert_allclose(np.asarray(p.ts), grid_ts[dp_path(cost, q.num_steps)], rtol=1e-6)
        assert p.nfe() == q.nfe() and int(p.analytic_first) == int(q.analytic_first)
        np.testing.assert_array_equal(np.asarray(p.order), np.asarray(q.order))


@pytest.mark.slow
def test_gradient_strategy_through_the_search_entry_point(tmp_path, gmm_factory):
    """`stepwise search --config.search.strategy=gradient`: the learned plan replays from its schedule
    file, is compared by the protocol against every baseline, and foreign options are refused."""
    from stepwise.cli.options import check_search_section, run_search_section, section
    from stepwise.search.schedule_file import load_plan

    model = gmm_factory(3)
    s = section("search", dict(strategy="gradient", gradient_steps=10, gradient_samples=32, search_samples=64,
                               batch_size=256, final_samples=256, final_top_baselines=4,
                               final_tuned_baselines=1))
    summ = run_search_section(s, model, SCHED, 3, tmp_path / "g", log=lambda m: None)
    assert summ["strategy"] == "gradient" and summ["start"] in {r["solver"] for r in summ["final_table"]}
    assert summ["headline"] == "frechet_to_reference" and summ["comparisons"]["frechet_to_reference"]["plan"]["n"] == 256
    plan = load_plan(tmp_path / "g" / "schedule.json", SCHED)
    assert plan.nfe() == 3
    assert summ["search_score"] <= min(r["search_score"] for r in summ["final_table"] if r["solver"] == summ["start"])
    # compile time is a part of the learning's and the final comparison's wall time (rounding aside)
    assert 0 <= summ["learned"]["compile_s"] <= summ["learn_s"] + 0.01
    assert 0 <= summ["final_compile_s"] <= summ["final_wall_s"] + 0.01
    with pytest.raises(ValueError, match="search.gradient_steps: only strategy 'gradient'"):
        check_search_section(section("search", dict(gradient_steps=5)), 3, SCHED)
    with pytest.raises(ValueError, match="search.population: only strategy"):
        check_search_section(section("search", dict(strategy="dp", population=3)), 3, SCHED)


@pytest.mark.slow
def test_weight_corrections_column(tmp_path, gmm_factory):
    """Zero corrections are the default of every preset; nonzero ones change the endpoint without a
    retrace, have finite gradients, survive the schedule file, and node-only exports refuse them."""
    import subprocess
    import sys

    from stepwise.search.schedule_file import load_plan, save_plan

    model = gmm_factory(3)
    plan = solvers.build_preset("dpm_solver_pp", 4, SCHED, "logsnr", order=2)
    assert plan.corrections.shape == (4, solvers.HISTORY + 1) and not np.any(np.asarray(plan.corrections))
    x = jax.random.normal(jax.random.key(0), (16, 64))
    base = samplers.sample(model, SCHED, plan, x)
    n = samplers.trace_count()
    tweaked = plan.replace(corrections=plan.corrections.at[2, 0].set(0.05))   # step 2, newest history point
    moved = samplers.sample(model, SCHED, tweaked, x)
    assert samplers.trace_count() == n and not np.allclose(np.asarray(moved), np.asarray(base))
    teacher = samplers.reference_solve(model, SCHED, x)
    g = jax.grad(lambda c: endpoint_rmse(model, SCHED, plan.replace(corrections=c), x, teacher))(plan.corrections)
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)
    path = save_plan(tmp_path / "s.json", tweaked, {"schedule": {"name": "VPLinear"}})
    back = load_plan(path, SCHED)
    np.testing.assert_allclose(np.asarray(back.corrections), np.asarray(tweaked.corrections), rtol=1e-7)
    out = subprocess.run([sys.executable, "-m", "stepwise", "export", path, "--to", "k-diffusion"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "learned" in out.stderr and "corrections" in out.stderr
    out = subprocess.run([sys.executable, "-m", "stepwise", "export", path, "--to", "k-diffusion", "--drop-corrections"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "dropped:" in out.stderr and "learned weight corrections" in out.stderr


def test_corrections_get_their_own_adam_rate():
    """Adam's first update is -lr * g / (|g| + eps): the nodes move by ``lr``, the corrections by
    ``corrections_lr``; without corrections the optimizer is plain ``optax.adam(lr)``."""
    import optax

    from stepwise.search.learned import _optimizer

    theta = {"nodes": jnp.zeros(4), "corrections": jnp.zeros((4, 5))}
    grad = {"nodes": jnp.full(4, 3.0), "corrections": jnp.full((4, 5), -2.0)}
    opt = _optimizer(theta, 0.05, 0.002)
    updates, _ = opt.update(grad, opt.init(theta), theta)
    np.testing.assert_allclose(np.asarray(updates["nodes"]), -0.05, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(updates["corrections"]), 0.002, rtol=1e-4)
    nodes = {"nodes": theta["nodes"]}
    plain, mine = optax.adam(0.05), _optimizer(nodes, 0.05, 0.002)
    np.testing.assert_array_equal(np.asarray(mine.update({"nodes": grad["nodes"]}, mine.init(nodes), nodes)[0]["nodes"]),
                                  np.asarray(plain.update({"nodes": grad["nodes"]}, plain.init(nodes), nodes)[0]["nodes"]))
    with pytest.raises(ValueError, match="gradient_corrections_lr"):
        GradientOptions(corrections_lr=0.0)


def test_cosine_rate_decays_both_adams_towards_zero_over_the_steps():
    """Under a constant gradient Adam's update k is -rate_k * sign(g) (up to eps): with
    ``lr_schedule="cosine"`` rate_k = lr (1 + cos(pi k / steps)) / 2 for the nodes AND the
    corrections, so update 0 is at the full rate, update steps/2 at half, update ``steps`` at zero; the
    constant schedule keeps the full rate. A checkpoint of one schedule is not resumed by the other."""
    from stepwise.search.learned import _fingerprint, _optimizer

    theta = {"nodes": jnp.zeros(3), "corrections": jnp.zeros((3, 5))}
    grad = {"nodes": jnp.full(3, 3.0), "corrections": jnp.full((3, 5), -2.0)}
    steps = 8
    for schedule, expect in (("cosine", lambda k: 0.5 * (1 + np.cos(np.pi * k / steps))), ("constant", lambda k: 1.0)):
        opt = _optimizer(theta, 0.05, 0.002, schedule, steps)
        state, moves = opt.init(theta), []
        for _ in range(steps + 1):
            updates, state = opt.update(grad, state, theta)
            moves.append((float(updates["nodes"][0]), float(updates["corrections"][0, 0])))
        for k, (node, corr) in enumerate(moves):
            np.testing.assert_allclose([-node / 0.05, corr / 0.002], expect(k), rtol=1e-4, atol=1e-7)
    plan = solvers.build_preset("dpm_solver_pp", 3, SCHED, "time_uniform", order=2)
    prints = {sch: _fingerprint(plan, GradientOptions(lr_schedule=sch)) for sch in ("constant", "cosine")}
    assert prints["constant"] != prints["cosine"]
    assert "lr_schedule" not in prints["constant"]["options"]   # checkpoints written before the option resume
    with pytest.raises(ValueError, match="gradient_lr_schedule.*allowed"):
        GradientOptions(lr_schedule="linear")


@pytest.mark.slow
def test_learning_corrections_too_lowers_validation_error(gmm_factory):
    _, both, info = _plain_and_variant(gmm_factory(3), "logsnr", learn="nodes+corrections")
    assert np.any(np.asarray(both.corrections) != 0)
    assert info["best_validation"] < info["history"][0]["validation"]
    with pytest.raises(ValueError, match="gradient_learn"):
        GradientOptions(learn="everything")


def _random_domain_cnn(seed: int = 0, feature_dim: int = 16):
    """An untrained DomainCNN on 8x8 images as a FeatureExtractor: a fixed nonlinear feature map."""
    from stepwise.evaluation import DomainCNN, TrainedFeatureNet, feature_net_extractor

    net = DomainCNN(num_classes=10, feature_dim=feature_dim, widths=(8, 16))
    params = jax.jit(net.init)(jax.random.key(seed), jnp.zeros((1, 8, 8)))["params"]
    return feature_net_extractor(TrainedFeatureNet(net, params, (8, 8)))


def test_feature_loss_with_identity_features_is_the_paired_rmse_value(gmm_factory):
    """Under the identity feature map the feature RMSE IS the paired RMSE (same value, one plan),
    and loss="features" without a feature map is refused, naming the option to set."""
    from stepwise.evaluation import identity_extractor
    from stepwise.search.learned import endpoint_feature_rmse, feature_target, teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("ddim", 3, SCHED, "time_uniform")
    o = GradientOptions(steps=2, lr=0.05, train_samples=16, val_samples=16, val_every=1, loss="features")
    teacher = teacher_data(model, SCHED, o)
    a = float(endpoint_rmse(model, SCHED, plan, teacher.x_val, teacher.val))
    b = float(endpoint_feature_rmse(model, SCHED, plan, teacher.x_val, feature_target(identity_extractor(64), teacher.val)))
    assert b == pytest.approx(a, rel=1e-6)
    with pytest.raises(ValueError, match="'features' needs a feature network; allowed: set search.feature_net"):
        learn_nodes(model, SCHED, plan, o, teacher=teacher)


@pytest.mark.slow
def test_feature_loss_with_identity_features_follows_the_rmse_run(gmm_factory):
    """loss="features" under the identity map follows the rmse run's history step for step and ends
    on the same nodes (the gradient path, not only the value, is the paired RMSE's)."""
    from stepwise.evaluation import identity_extractor
    from stepwise.search.learned import teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("ddim", 3, SCHED, "time_uniform")
    o = GradientOptions(steps=6, lr=0.05, train_samples=32, val_samples=32, val_every=3)
    teacher = teacher_data(model, SCHED, o)
    rmse, i_r = learn_nodes(model, SCHED, plan, o, teacher=teacher)
    feat, i_f = learn_nodes(model, SCHED, plan, GradientOptions(**{**o.__dict__, "loss": "features"}),
                            teacher=teacher, features=identity_extractor(64))
    for r, f in zip(i_r["history"], i_f["history"]):
        assert f["validation"] == pytest.approx(r["validation"], rel=1e-5)
    np.testing.assert_allclose(np.asarray(feat.ts), np.asarray(rmse.ts), rtol=1e-5)


@pytest.mark.slow
def test_feature_loss_descends_in_a_nonlinear_feature_space(gmm_factory):
    """loss="features" with a (random, fixed) conv net phi: the learned nodes lower the validation
    feature RMSE; its reported value equals phi's features of the samples recomputed by the
    evaluation code (independent path)."""
    from stepwise.evaluation import extract_features
    from stepwise.search.learned import teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("ddim", 4, SCHED, "time_uniform")
    o = GradientOptions(steps=20, lr=0.05, train_samples=64, val_samples=64, val_every=10, loss="features")
    teacher = teacher_data(model, SCHED, o)
    phi = _random_domain_cnn(0)
    learned, info = learn_nodes(model, SCHED, plan, o, teacher=teacher, features=phi)
    assert info["best_validation"] < 0.9 * info["history"][0]["validation"]
    x = np.asarray(samplers.sample(model, SCHED, learned, teacher.x_val))
    fx = np.asarray(extract_features(phi, x), np.float64)
    fy = np.asarray(extract_features(phi, np.asarray(teacher.val)), np.float64)
    assert info["best_validation"] == pytest.approx(float(np.sqrt(np.mean((fx - fy) ** 2))), rel=1e-4)


@pytest.mark.slow
def test_feature_loss_checkpoint_refuses_another_feature_net(tmp_path, gmm_factory):
    """A feature-loss gradient checkpoint records its feature net: a rerun with other weights is refused."""
    from stepwise.search.learned import teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("ddim", 3, SCHED, "time_uniform")
    o = GradientOptions(steps=2, lr=0.05, train_samples=8, val_samples=8, val_every=1, loss="features")
    teacher = teacher_data(model, SCHED, o)
    ck = str(tmp_path / "g")
    first, _ = learn_nodes(model, SCHED, plan, o, teacher=teacher, features=_random_domain_cnn(0), checkpoint_dir=ck)
    again, _ = learn_nodes(model, SCHED, plan, o, teacher=teacher, features=_random_domain_cnn(0), checkpoint_dir=ck)
    np.testing.assert_array_equal(np.asarray(again.ts), np.asarray(first.ts))
    with pytest.raises(ValueError, match="another feature network"):
        learn_nodes(model, SCHED, plan, o, teacher=teacher, features=_random_domain_cnn(1), checkpoint_dir=ck)


@pytest.mark.slow
def test_data_frechet_loss_descends_towards_the_training_images(tmp_path, gmm_factory):
    """loss="data_frechet": no teacher target, the Fréchet distance of the endpoints' features to the
    training images' feature moments. Under the identity map with exact mixture samples as the
    images, descent lowers it on validation noise; the reported value equals scipy's Fréchet distance
    of the same samples to the images (independent path); a checkpoint made for other images is refused,
    and the loss without images is refused by name."""
    from stepwise.evaluation import identity_extractor
    from stepwise.evaluation.stats import frechet_distance
    from stepwise.search import protocol
    from stepwise.search.learned import teacher_data

    model = gmm_factory(3)
    plan = solvers.build_preset("dpm_solver_pp", 4, SCHED, "time_uniform", order=2)
    exact = lambda seed: np.asarray(samplers.reference_solve(
        model, SCHED, jax.random.normal(jax.random.key(seed), (400, 64)) * SCHED.prior_std()))
    y = exact(77)
    images = protocol.feature_moments(identity_extractor(64), y, "exact samples")
    o = GradientOptions(steps=20, lr=0.05, train_samples=128, val_samples=128, val_every=10, loss="data_frechet")
    teacher = teacher_data(model, SCHED, o)
    assert teacher.train is None and teacher.val is None      # no reference solve for a data target
    ck = str(tmp_path / "g")
    learned, info = learn_nodes(model, SCHED, plan, o, teacher=teacher, images=images, checkpoint_dir=ck)
    assert info["loss"] == "data_frechet"
    assert info["best_validation"] < 0.8 * info["history"][0]["validation"]
    x = np.asarray(samplers.sample(model, SCHED, learned, teacher.x_val), np.float64)
    y64 = y.astype(np.float64)
    fd = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y64.mean(0), np.cov(y64, rowvar=False))
    assert info["best_validation"] == pytest.approx(fd, abs=5e-3)   # float32 eigvalsh of a 64x64 product
    other = protocol.feature_moments(identity_extractor(64), exact(78), "other exact samples")
    with pytest.raises(ValueError, match="other training images"):
        learn_nodes(model, SCHED, plan, o, teacher=teacher, images=other, checkpoint_dir=ck)
    with pytest.raises(ValueError, match="'data_frechet' needs the training images' features"):
        learn_nodes(model, SCHED, plan, o, teacher=teacher)
