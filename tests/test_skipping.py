"""Per-step architecture (AutoDiffusion): skippable network units, the plan's skip column, its cost,
and the search over masks."""
import json
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import samplers, solvers
from stepwise.denoisers import GaussianMixture
from stepwise.denoisers.mlp import MLP
from stepwise.denoisers.skipping import call_flops, unit_shares
from stepwise.denoisers.unet import FlaxDenoiser, UNet, init_params, unet_kwargs
from stepwise.samplers import executor
from stepwise.schedules import VPLinear
from stepwise.search import space as S
from stepwise.search.budget import SkipSensitivity, skip_damage, skip_projection, unit_sensitivity
from stepwise.search.stitching import budget_hooks
from stepwise.search.strategies import Evolution, EvolutionOptions

SHAPE = (8, 8, 1)


def _perturbed(params, scale=0.05, seed=7):
    """Random weights with no zero-initialised layer (so every unit changes the output)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def _unet(preset="small", **kw):
    net = UNet(out_channels=1, **unet_kwargs(preset, **kw))
    return FlaxDenoiser(net, _perturbed(init_params(net, jax.random.key(0), SHAPE)), "eps", VPLinear(), SHAPE)


@pytest.fixture(scope="module")
def unet():
    return _unet()


@pytest.fixture(scope="module")
def attn_unet():
    """Attention in the down, middle and up paths (2 levels, so it stays small)."""
    return _unet("small", down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def _mlp():
    net = MLP(out_dim=16, width=32, depth=3)
    return FlaxDenoiser(net, _perturbed(init_params(net, jax.random.key(0), (16,))), "eps", VPLinear(), (16,))


@pytest.mark.parametrize("which", ["unet", "attn_unet", "mlp"])
def test_zero_mask_is_bit_exact_and_each_unit_changes_the_output(which, request):
    model = _mlp() if which == "mlp" else request.getfixturevalue(which)
    units = model.skip_units
    assert len(units) >= 3
    x = jax.random.normal(jax.random.key(1), (4,) + model.data_shape)
    t = jnp.full((4,), 0.4)
    call = jax.jit(lambda m, x, t: m(x, t))
    full = call(model, x, t)
    assert np.array_equal(np.asarray(call(model.with_skip(jnp.zeros(len(units), jnp.int32)), x, t)),
                          np.asarray(full))                       # all units run: bit-for-bit today's output
    for k in range(len(units)):
        mask = np.zeros(len(units), np.int32)
        mask[k] = 1
        out = call(model.with_skip(jnp.asarray(mask)), x, t)
        assert float(jnp.max(jnp.abs(out - full))) > 1e-4, units[k]


def test_skipped_residual_block_saves_its_convolutions():
    """FLOPs saved by skipping a width-preserving residual block, counted by hand: its two 3x3
    convolutions (2 C^2 FLOPs per valid tap; with zero padding an 8x8 map has 22 valid rows x 22
    valid columns of taps, XLA counts no padding) plus its time-embedding projection (2 * 128 * C),
    within 5% (the rest is its norms and activations)."""
    model = _unet("small", block_out_channels=(32, 32))
    units = list(model.skip_units)
    mask = np.zeros(len(units), np.int32)
    mask[units.index("down_blocks_0__resnets_0")] = 1   # 8x8 input, C = 32 channels
    saved = call_flops(model) - call_flops(model, mask)
    c = 32
    by_hand = 2 * (2 * c * c * 22 * 22) + 2 * (4 * c) * c
    assert abs(saved - by_hand) / by_hand < 0.05, (saved, by_hand)
    assert 0 < unit_shares(model)[units.index("down_blocks_0__resnets_0")] < 0.5


def test_lowered_flops_match_the_compiled_call_with_the_dead_branch_removed(unet):
    """call_flops counts the lowered call with a NumPy mask (one branch traced); the compiled call
    of the traced-cond network with a constant mask (XLA removes the dead branch) agrees within 1%,
    and so does call_flops(compiled=True) (unet.forward_flops' path)."""
    units = len(unet.skip_units)
    mask = np.zeros(units, np.int32)
    mask[[0, 3, 5]] = 1
    x = jnp.zeros((16,) + SHAPE)
    t = jnp.full((16,), 0.5)
    dyn, static = eqx.partition(unet, eqx.is_array)
    f = jax.jit(lambda d, x, t: eqx.combine(d, static).with_skip(jnp.asarray(mask))(x, t))
    cost = f.lower(dyn, x, t).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    compiled = float(cost["flops"]) / 16
    assert abs(compiled - call_flops(unet, mask)) / compiled < 0.01
    assert abs(compiled - call_flops(unet, mask, compiled=True)) / compiled < 0.01


def test_plan_cost_with_masks_matches_measured_flops(unet):
    """solvers.plan.cost with unit shares = the sum over the plan's evaluations of the measured FLOPs
    of each evaluation's mask, relative to the full call (within 1%)."""
    units = len(unet.skip_units)
    shares = unit_shares(unet)
    assert np.all(shares > 0) and shares.sum() < 1
    rng = np.random.default_rng(0)
    ts = np.linspace(1.0, 1e-3, 5)
    skip = rng.integers(0, 2, (4, units))
    plan = solvers.make_plan(ts, order=[1, 2, 2, 2], corrector=["none", "unic", "none", "reeval"], skip=skip)
    full = call_flops(unet)
    measured = sum(call_flops(unet, skip[min(e.node, 3)]) / full for e in solvers.evaluations(plan))
    assert abs(solvers.cost(plan, [1.0], unit_shares=[shares]) - measured) / measured < 0.01
    with pytest.raises(ValueError, match="unit_shares"):
        solvers.cost(plan, [1.0])


def test_one_compile_for_many_masks_and_masks_replay_as_a_fixed_network(unet):
    sched = VPLinear()
    ts = jnp.linspace(sched.t_max, sched.t_min, 5)
    units = len(unet.skip_units)
    x = jax.random.normal(jax.random.key(3), (4,) + SHAPE)
    mask = np.zeros(units, np.int32)
    mask[[1, 5]] = 1
    order = [1, 2, 2, 2]
    masked = samplers.sample(unet, sched, solvers.make_plan(ts, order=order, skip=np.tile(mask, (4, 1))), x)
    fixed = samplers.sample(unet.with_skip(jnp.asarray(mask)), sched, solvers.make_plan(ts, order=order), x)
    plain = samplers.sample(unet, sched, solvers.make_plan(ts, order=order), x)
    np.testing.assert_allclose(np.asarray(masked), np.asarray(fixed), rtol=0, atol=1e-5)
    assert float(jnp.max(jnp.abs(masked - plain))) > 1e-3
    before = executor.trace_count()
    rng = np.random.default_rng(1)
    outs = [samplers.sample(unet, sched, solvers.make_plan(ts, order=order, skip=rng.integers(0, 2, (4, units))), x)
            for _ in range(3)]
    assert executor.trace_count() == before            # same plan length: no retrace across masks
    assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-4


def test_per_row_masks_in_the_compiled_sampler_equal_the_host_program(unet):
    """Every row's own mask, correctors included (a UniC corrector's evaluation of node i+1 and a
    re-evaluation use row min(i+1, N-1)): the compiled sampler equals the host program
    (samplers.program) run with the masked network of each request."""
    from stepwise.denoisers import x0_eps
    from stepwise.samplers.program import compile_plan, run_program

    sched = VPLinear()
    units = len(unet.skip_units)
    skip = np.random.default_rng(4).integers(0, 2, (4, units))
    plan = solvers.make_plan(np.linspace(sched.t_max, sched.t_min, 5), order=[1, 2, 2, 1],
                             corrector=["unic", "none", "reeval", "unic"], skip=skip)
    x = jax.random.normal(jax.random.key(5), (4,) + SHAPE)
    call = jax.jit(lambda m, x, t: x0_eps(m, x, t))

    def evaluate(req, xx):
        mask = np.zeros(units, np.int32)
        mask[list(req.skip)] = 1
        return tuple(np.asarray(v) for v in call(unet.with_skip(jnp.asarray(mask)), jnp.asarray(xx), req.t))

    host = run_program(compile_plan(plan, sched), np.asarray(x), evaluate)
    got = np.asarray(samplers.sample(unet, sched, plan, x))
    np.testing.assert_allclose(got, host, rtol=0, atol=1e-6 * float(np.abs(host).max()))   # float32 rounding
    shifted = solvers.make_plan(plan.ts, order=[1, 2, 2, 1], corrector=["unic", "none", "reeval", "unic"],
                                skip=np.roll(skip, 1, axis=0))
    assert float(np.abs(np.asarray(samplers.sample(unet, sched, shifted, x)) - host).max()) > 1e-3


def test_masks_are_validated(unet):
    sched = VPLinear()
    ts = jnp.linspace(sched.t_max, sched.t_min, 4)
    x = jnp.zeros((2,) + SHAPE)
    units = len(unet.skip_units)
    with pytest.raises(ValueError, match=r"plan.skip: masks of 3 units.*\[9\] skippable"):
        samplers.sample(unet, sched, solvers.make_plan(ts, skip=np.ones((3, 3))), x)
    with pytest.raises(ValueError, match="plan.skip: values other than 0/1"):
        samplers.sample(unet, sched, solvers.make_plan(ts, skip=np.full((3, units), 2)), x)
    mix = GaussianMixture([1.0], np.zeros((1, 4)), np.ones((1, 4)), sched)
    with pytest.raises(ValueError, match=r"plan.skip: masks of 2 units, but the denoisers have \[0\]"):
        samplers.sample(mix, sched, solvers.make_plan(ts, skip=np.ones((3, 2))), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="GaussianMixture has no skippable units"):
        mix.with_skip(jnp.ones(2))


def test_schedule_file_records_masks_and_host_program_names_them(tmp_path, unet):
    from stepwise.samplers.program import compile_plan
    from stepwise.search.schedule_file import load_plan, save_plan

    sched = VPLinear()
    units = len(unet.skip_units)
    skip = np.zeros((3, units), np.int32)
    skip[0, [0, 2]] = 1
    skip[2, 4] = 1
    plan = solvers.make_plan(np.linspace(sched.t_max, sched.t_min, 4), corrector=["unic", "none", "none"], skip=skip)
    path = save_plan(tmp_path / "s.json", plan)
    d = json.loads(open(path).read())
    assert d["skip_units"] == units and d["steps"][0]["skip"] == [0, 2] and d["steps"][1]["skip"] == []
    back = load_plan(path, sched)
    assert np.array_equal(np.asarray(back.skip), skip)
    reqs = compile_plan(back, sched).requests
    assert [r.skip for r in reqs] == [(0, 2), (), (4,)]   # node 1 comes from step 0's corrector: row 1
    export = subprocess.run([sys.executable, "-m", "stepwise", "export", str(path), "--to", "k-diffusion"],
                            capture_output=True, text=True)
    assert export.returncode == 2 and "skips network units per step" in export.stderr   # nodes-only formats refuse
    d["steps"][1]["skip"] = [units]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"step 1 skip \[9\] is invalid; allowed: a list of unit indices 0..8"):
        load_plan(tmp_path / "bad.json", sched)


def test_mask_moves_crossover_and_two_stage_schedule(unet):
    sched = VPLinear()
    space = S.SearchSpace(nfe=4, schedule=sched, unit_counts=(len(unet.skip_units),), p_skip=0.2)
    rng = np.random.default_rng(0)
    g = S.random_genome(space, rng)
    assert g.cols[S.MASK].shape == (g.num_steps, 9) and not g.cols[S.MASK].any()
    m = S.mutate(g, space, rng, moves=("masks",))
    assert np.array_equal(m.incr, g.incr) and m.cols[S.MASK].any()
    assert all(np.array_equal(m.cols[c], g.cols[c]) for c in S.STEP_COLUMNS)
    n = S.mutate(g, space, rng, moves=("nodes", "decisions"))
    assert np.array_equal(n.cols[S.MASK], g.cols[S.MASK])
    child = S.crossover(m, g, space, rng, moves=("masks",))
    assert all(r in (tuple(a) for a in np.concatenate([m.cols[S.MASK], g.cols[S.MASK]])) for r in map(tuple, child.cols[S.MASK]))
    assert S.Genome.from_dict(json.loads(json.dumps(m.to_dict()))).cols[S.MASK].tolist() == m.cols[S.MASK].tolist()
    plan = S.decode(m, space)
    assert np.array_equal(np.asarray(plan.skip), m.cols[S.MASK])
    assert S.plan_hash(plan) == S.genome_hash(m, space)
    two = EvolutionOptions(generations=10, timesteps_only=1, skip_schedule="two_stage")
    assert [two.moves_at(k) for k in (1, 3, 6)] == [("nodes",), ("nodes", "decisions"), ("masks",)]
    with pytest.raises(ValueError, match="search.skip_schedule: 'x' is invalid; allowed: \\['joint', 'two_stage'\\]"):
        EvolutionOptions(skip_schedule="x")


def test_budget_projection_and_every_candidate_fits(unet):
    """A budget below the NFE is met by skipping units (earliest steps first); every candidate a
    budgeted strategy proposes fits it, by the one plan-accounting function."""
    sched = VPLinear()
    shares = [unit_shares(unet)]
    space = S.SearchSpace(nfe=5, schedule=sched, unit_counts=(9,), p_skip=0.1)
    g = S.random_genome(space, np.random.default_rng(0))
    mask = skip_projection(g, [1.0], 3.5, shares)
    assert mask is not None and mask[0].any() and not mask[-1].any()   # early steps give way first
    view = S.PlanView(space.u_to_ts(g.u), {**g.cols, S.MASK: mask}, g.analytic_first)
    assert 3.2 < solvers.cost(view, [1.0], unit_shares=shares) <= 3.5
    assert skip_projection(g, [1.0], 1.0, shares) is None              # even all-skipped costs more
    strat = Evolution(space, EvolutionOptions(population=6, children=6, timesteps_only=0),
                      budget_hooks([1.0], 3.5, p_swap=0.0, unit_shares=shares))
    st = strat.init(jax.random.key(0), [g])
    seen = []
    for _ in range(3):
        cands, st = strat.ask(st)
        seen += cands
        st = strat.tell(st, cands, list(np.random.default_rng(len(seen)).random(len(cands))))
    assert len(seen) >= 10
    assert all(solvers.cost(S.view(c, space), [1.0], unit_shares=shares) <= 3.5 * (1 + 1e-9) for c in seen)


def test_unit_sensitivity_is_the_measured_shift_of_the_data_prediction(unet):
    """rms[k, u] = RMS of D_u - D at the k-th state of the model's own DPM-Solver++(2M) solve,
    recomputed here with constant masks (the other branch of each unit: no traced condition)."""
    from stepwise.denoisers.base import x0_eps
    from stepwise.schedules import discretize

    sched = VPLinear()
    sens = unit_sensitivity(unet, sched, num_samples=8, nodes=4, seed=3)
    units = len(unet.skip_units)
    assert sens.rms.shape == (4, units) and np.all(np.diff(sens.lam) > 0)
    ts = discretize("logsnr", 4, sched)
    x_T = jax.random.normal(jax.random.key(3), (8,) + SHAPE) * sched.prior_std()
    _, traj = samplers.sample(unet, sched, solvers.dpm_solver_pp(ts, order=2), x_T, return_trajectory=True)
    k, u = 2, 4   # ts decrease, so log-SNR increases along the nodes: node k is row k of the table
    mask = np.zeros(units, np.int32)
    full = x0_eps(unet.with_skip(mask), traj[k], ts[k])[0]
    mask[u] = 1
    want = float(jnp.sqrt(jnp.mean((x0_eps(unet.with_skip(mask), traj[k], ts[k])[0] - full) ** 2)))
    assert sens.rms[k, u] == pytest.approx(want, rel=1e-4)
    assert np.all(sens.rms > 0)                       # every unit of the perturbed net moves D somewhere
    assert sens.at(sens.lam[[0, -1]] + np.array([-5.0, 5.0])) == pytest.approx(sens.rms[[0, -1]])  # clamped ends
    mid = sens.at([0.5 * (sens.lam[0] + sens.lam[1])])[0]
    assert mid == pytest.approx(0.5 * (sens.rms[0] + sens.rms[1]))


def test_skip_damage_weights_each_evaluation_by_its_first_order_step():
    """damage[r, u] = sum over the evaluations using row r of (alpha_{j+1} - sigma_{j+1} alpha_j /
    sigma_j) rms_u(lambda_j): written out by hand for a 3-step plan with a UniC corrector on its last
    step (row 2 then has the node-2 call and the corrector's call at node 3)."""
    sched = VPLinear()
    ts = np.array([1.0, 0.6, 0.3, 0.05])
    plan = solvers.make_plan(ts, order=[1, 2, 2], corrector=["none", "none", "unic"], analytic_first=True,
                             skip=np.zeros((3, 2), np.int32))
    lam = np.asarray(sched.lambda_(jnp.asarray(ts)), np.float64)
    sens = SkipSensitivity(np.array([lam.min() - 1, lam.max() + 1]), np.array([[1.0, 2.0], [3.0, 6.0]]))
    rms_u0 = 1.0 + 2.0 * (lam - (lam.min() - 1)) / (lam.max() - lam.min() + 2)   # the linear table at lam
    a, s = (np.asarray(f(jnp.asarray(ts)), np.float64) for f in (sched.alpha, sched.sigma))
    w = a[1:] - s[1:] * a[:-1] / s[:-1]
    got = skip_damage(sens, sched, plan)
    assert got[0] == pytest.approx([0.0, 0.0])                                   # analytic first step: no call
    assert got[1] == pytest.approx(w[1] * rms_u0[1] * np.array([1.0, 2.0]), rel=1e-5)
    assert got[2] == pytest.approx((w[2] * rms_u0[2] + w[2] * rms_u0[3]) * np.array([1.0, 2.0]), rel=1e-5)


def test_damage_ordered_projection_skips_least_damage_per_cost_saved():
    """With a damage matrix the projection skips, greedily, the least damage per unit of cost
    saved (not the earliest step); units already skipped stay; the budget holds; without damage the
    order is the old one (earliest step first)."""
    shares = [np.array([0.1, 0.4, 0.2])]
    plan = solvers.make_plan(np.linspace(1.0, 0.01, 4), order=[1, 2, 2], skip=np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]]))
    damage = np.array([[9.0, 9.0, 9.0], [9.0, 4.0, 0.0], [0.5, 8.0, 1.0]])
    # per cost saved: row 2 unit 0: 5.0, row 2 unit 2: 5.0, row 1 unit 1: 10.0, row 2 unit 1: 20.0, ...
    got = skip_projection(plan, [1.0], 3.0 - 0.2 - 0.1 - 0.2, shares, damage=damage)
    want = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 1]])
    assert np.array_equal(got, want)
    assert solvers.cost(eqx.tree_at(lambda p: p.skip, plan, jnp.asarray(got)), [1.0], unit_shares=shares) <= 2.5 + 1e-9
    got = skip_projection(plan, [1.0], 2.1, shares, damage=damage)   # needs 0.7 more: + row 1 unit 1 (10.0)
    assert np.array_equal(got, np.array([[0, 0, 0], [0, 1, 1], [1, 0, 1]]))
    early = skip_projection(plan, [1.0], 2.5, shares)
    assert np.array_equal(early, np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]]))    # earliest step, dearest unit
    assert skip_projection(plan, [1.0], 0.5, shares, damage=damage) is None


def test_search_hooks_project_by_the_configured_skip_order():
    """skip_setup's hooks (what every CLI search uses) project an over-budget genome exactly as
    skip_projection with the measured damage (skip_order=sensitivity, on the search seed's noise) or
    with the earliest-first order (skip_order=earliest); a genome within budget is left as it is."""
    from stepwise.cli.options import search_space, section, skip_setup

    model, sched = _mlp(), VPLinear()
    projected = {}
    for order in ("sensitivity", "earliest"):
        s = section("search", dict(skip=True, budget=2.5, seed=4, skip_order=order))
        units, make_hooks, shares = skip_setup(s, model)
        space = search_space(s, 3, sched, unit_counts=units)
        g = S.random_genome(space, np.random.default_rng(1)).replace(cols=None)
        g.cols[S.MASK] = np.zeros_like(g.cols[S.MASK])
        projected[order] = make_hooks(space).constraint(g).cols[S.MASK]
        damage = None
        if order == "sensitivity":
            damage = skip_damage(unit_sensitivity(model, sched, seed=4), sched, S.view(g, space))
        assert np.array_equal(projected[order], skip_projection(g, [1.0], 2.5, shares, damage=damage))
        roomy = section("search", dict(skip=True, budget=3.0, seed=4, skip_order=order))
        assert np.array_equal(skip_setup(roomy, model)[1](space).constraint(g).cols[S.MASK], g.cols[S.MASK])
    assert not np.array_equal(projected["sensitivity"], projected["earliest"])


def test_budgeted_mask_search_compares_against_full_network_baselines_within_budget(tmp_path):
    from stepwise.cli.options import run_search_section, section

    model = _mlp()   # 3 residual blocks: the same search as on a UNet, at a fraction of the time

    settings = dict(objective="teacher_rmse", generations=2, search_samples=32, batch_size=32, population=4,
                    top_k=2, children=3, screen=8, predictor_warmup=4, predictor_train_steps=5, predictor_hidden=8,
                    timesteps_only_generations=0, final_samples=256, final_top_baselines=2, skip=True,
                    budget=3.0, p_skip=0.2)
    summ = run_search_section(section("search", settings), model, VPLinear(), 4, tmp_path / "s", log=lambda m: None)
    assert summ["cost"] <= 3.0 and summ["budget"] == 3.0 and summ["nfe"] == 4
    assert all(r["nfe"] == 3 for r in summ["final_table"][1:])      # baselines: the full network at NFE 3
    d = json.loads((tmp_path / "s" / "schedule.json").read_text())
    assert d["skip_units"] == 3 and d["skip_unit_names"] == list(model.skip_units)
    assert d["cost"]["plan_cost"] == summ["cost"]
    with pytest.raises(ValueError, match="search.budget: 3.0 is below nfe=4"):
        run_search_section(section("search", {**settings, "skip": False, "p_skip": 0.05}), model, VPLinear(), 4,
                           tmp_path / "t", log=lambda m: None)
    with pytest.raises(ValueError, match="search.p_skip: only used with search.skip=True"):
        run_search_section(section("search", {**settings, "skip": False, "budget": 0.0}), model, VPLinear(), 4,
                           tmp_path / "u", log=lambda m: None)
    mix = GaussianMixture([1.0], np.zeros((1, 4)), np.ones((1, 4)), VPLinear())
    with pytest.raises(ValueError, match=r"search.skip: the model \(GaussianMixture\) has no skippable units"):
        run_search_section(section("search", settings), mix, VPLinear(), 4, tmp_path / "v", log=lambda m: None)


@pytest.mark.slow
def test_cli_search_with_skip_on_a_trained_checkpoint_and_sample_replays_it(tmp_path, monkeypatch):
    """`stepwise train` a tiny UNet, `stepwise search --config.search.skip=True --config.search.budget=...`
    on it, then `stepwise sample --config.plan=<schedule.json>` replays the masks (the plan it stores
    has the file's masks). The commands run through the entry point's function, in this process."""
    from stepwise.cli import main

    monkeypatch.chdir(tmp_path)
    run = lambda *a: main(list(a))  # noqa: E731
    train = run("train", "--workdir", "ck", "--config.train.image_size=8", "--config.train.steps=3",
                "--config.train.batch_size=8", "--config.train.measure_cost=False", "--config.train.log_every=1",
                "--config.train.checkpoint_every=3", "--config.train.warmup_steps=1", "--config.train.eval_examples=8")
    assert train == 0
    model = ["--config.model.kind=checkpoint", "--config.model.checkpoint=ck"]
    search = run("search", "--workdir", "s", *model, "--config.nfe=4", "--config.search.skip=True",
                 "--config.search.budget=3", "--config.search.objective=teacher_rmse", "--config.search.generations=1",
                 "--config.search.search_samples=16", "--config.search.batch_size=16", "--config.search.population=4",
                 "--config.search.children=2", "--config.search.strategy=evolution",
                 "--config.search.final_samples=128", "--config.search.final_top_baselines=1",
                 "--config.search.final_tuned_baselines=0")
    assert search == 0
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["cost"] <= 3.0
    sample = run("sample", "--workdir", "smp", *model, "--config.plan=s/schedule.json", "--config.num_samples=8",
                 "--config.batch_size=8")
    assert sample == 0
    from stepwise.cli.runtime import load_model_path
    from stepwise.search.schedule_file import load_plan

    den = load_model_path(str(tmp_path / "ck"))
    plan = load_plan(tmp_path / "s" / "schedule.json", den.schedule)
    assert np.asarray(plan.skip).any()
    with np.load(tmp_path / "smp" / "samples.npz") as f:
        got = f["samples"] if "samples" in f else f[list(f.keys())[0]]
        assert np.array_equal(f["plan_skip"], np.asarray(plan.skip))
    assert got.shape[0] == 8 and np.all(np.isfinite(got))


def test_mask_search_is_deterministic_and_resumes(tmp_path):
    """Two budgeted mask searches with one seed give the same plan; a rerun in the same run
    directory resumes from its last generation and gives that plan again."""
    from stepwise.cli.options import run_search_section, section

    model = _mlp()
    settings = dict(objective="teacher_rmse", generations=2, search_samples=16, batch_size=16, population=4,
                    top_k=2, children=3, screen=8, predictor_warmup=4, predictor_train_steps=5, predictor_hidden=8,
                    timesteps_only_generations=0, final_samples=128, final_top_baselines=1, skip=True,
                    budget=2.5, p_skip=0.3)
    run = lambda wd: run_search_section(section("search", settings), model, VPLinear(), 3, wd, log=lambda m: None)
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a["steps"] == b["steps"] and a["cost"] == b["cost"] <= 2.5
    assert any(st.get("skip") for st in a["steps"])            # a 3-evaluation plan under 2.5 must skip units
    again = run(tmp_path / "a")
    assert again["resumed_from"] == 3 and again["steps"] == a["steps"]


def test_skip_damage_prices_each_evaluation_with_its_own_models_table():
    """With one table per model (a stitched plan), row r's price uses the table of the model that
    row evaluates; units a model lacks cost 0, and a model without a table (None) prices nothing."""
    sched = VPLinear()
    ts = np.array([1.0, 0.6, 0.3, 0.05])
    plan = solvers.make_plan(ts, order=[1, 2, 2], model=[0, 1, 0], skip=np.zeros((3, 2), np.int32))
    lam = np.asarray(sched.lambda_(jnp.asarray(ts)), np.float64)
    ends = np.array([lam.min() - 1, lam.max() + 1])
    big = SkipSensitivity(ends, np.array([[1.0, 2.0], [1.0, 2.0]]))     # constant in log-SNR
    small = SkipSensitivity(ends, np.array([[5.0], [5.0]]))            # one unit only
    a, s = (np.asarray(f(jnp.asarray(ts)), np.float64) for f in (sched.alpha, sched.sigma))
    w = a[1:] - s[1:] * a[:-1] / s[:-1]
    got = skip_damage([big, small], sched, plan)
    assert got == pytest.approx(np.array([[w[0] * 1.0, w[0] * 2.0], [w[1] * 5.0, 0.0], [w[2] * 1.0, w[2] * 2.0]]))
    assert skip_damage([big, None], sched, plan)[1] == pytest.approx([0.0, 0.0])
    assert skip_damage(big, sched, plan.replace(model=np.zeros(3, np.int32))) == pytest.approx(
        skip_damage([big, small], sched, plan.replace(model=np.zeros(3, np.int32))))
    with pytest.raises(ValueError, match="model 1"):
        skip_damage([big], sched, plan)


def test_search_hooks_of_a_model_pair_stitch_first_then_skip_by_each_models_damage():
    """skip_setup on a DenoiserSet (the joint search of solver, model column and masks): a genome
    over budget moves its earliest steps to the cheaper model (T-Stitch's projection) and keeps its
    masks while that suffices; below the all-cheap cost every step takes the cheaper model and units
    are skipped, in the order of the damage
    priced with each member's own measured sensitivity; every projected genome fits the budget."""
    from stepwise.cli.options import search_space, section, skip_setup
    from stepwise.denoisers import DenoiserSet

    big = _mlp()
    net = MLP(out_dim=16, width=8, depth=2)
    small = FlaxDenoiser(net, _perturbed(init_params(net, jax.random.key(1), (16,))), "eps", VPLinear(), (16,))
    sched = VPLinear()
    pair = DenoiserSet([big, small], sched)
    costs = [1.0, call_flops(small) / call_flops(big)]
    assert costs[1] < 0.5
    for budget, stitched in ((2.0 + costs[1], True), (2.5 * costs[1], False)):
        s = section("search", dict(skip=True, budget=budget, seed=4))
        units, make_hooks, shares = skip_setup(s, pair, costs=costs)
        assert units == (len(big.skip_units), len(small.skip_units)) and units[1] < units[0]
        space = search_space(s, 3, sched, num_models=2, unit_counts=units)
        g = S.random_genome(space, np.random.default_rng(1)).replace(cols=None)
        g.cols["model"] = np.zeros(3, np.int64)
        g.cols[S.MASK] = np.zeros_like(g.cols[S.MASK])
        g = g.replace(analytic_first=0)
        hooks = make_hooks(space)
        if stitched:   # a unit the small model lacks, skipped in the step that moves to it
            g.cols[S.MASK][0, units[0] - 1] = 1
        out = hooks.constraint(g)
        assert solvers.cost(S.view(out, space), costs, unit_shares=shares) <= budget * (1 + 1e-9)
        if stitched:   # one step to the small model (the earliest), which runs it whole
            assert out.cols["model"].tolist() == [1, 0, 0] and not out.cols[S.MASK].any()
            swapped = hooks.moves[0](out.replace(cols={**out.cols, S.MASK: np.eye(3, units[0], dtype=np.int64)}),
                                     np.random.default_rng(0))   # trades models AND their mask rows
            i = int(np.flatnonzero(swapped.cols["model"] == 1)[0])
            assert i != 0 and swapped.cols[S.MASK][i].tolist() == np.eye(3, units[0], dtype=int)[0].tolist()
            assert swapped.cols[S.MASK][0].tolist() == np.eye(3, units[0], dtype=int)[i].tolist()
        else:          # even all-small is over budget: every step on the small model, then units skipped
            assert out.cols["model"].tolist() == [1, 1, 1]
            moved = g.replace(cols={**g.cols, "model": out.cols["model"]})
            sens = [unit_sensitivity(m, sched, seed=4) for m in (big, small)]
            damage = skip_damage(sens, sched, S.view(moved, space))
            assert np.array_equal(out.cols[S.MASK], skip_projection(moved, costs, budget, shares, damage=damage))
            assert out.cols[S.MASK].any() and not out.cols[S.MASK][:, units[1]:].any()
