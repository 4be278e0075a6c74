"""Search space: codec round trips, exact NFE under mutation/crossover, schedule files, state,
predictor and strategy determinism (no sampling; fast)."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepwise import schedules
from stepwise import solvers
from stepwise.search import space as S
from stepwise.search.evaluator import baseline_plans
from stepwise.search.schedule_file import load_plan, plan_from_dict, plan_to_dict, save_plan
from stepwise.search.strategies import (Evolution, EvolutionOptions, PredictorOptions, PredictorSearch,
                                        make_strategy, numpy_rng)

SCHED = schedules.VPLinear()


def make_space(nfe, **kw):
    return S.SearchSpace(nfe=nfe, schedule=SCHED, **kw)


def check_genome(g, space):
    plan = S.decode(g, space)
    plan.validate(SCHED)
    assert plan.nfe() == space.nfe
    ts = np.asarray(plan.ts, np.float64)
    assert np.all(np.diff(ts) < 0)
    assert ts[0] == pytest.approx(SCHED.t_max) and ts[-1] == pytest.approx(SCHED.t_min)
    assert np.all(g.incr >= space.min_gap * 0.999)
    assert g.incr.sum() == pytest.approx(1.0)
    assert all(v.shape == (g.num_steps,) for v in g.cols.values())
    return plan


@pytest.mark.parametrize("nfe", [3, 5, 8])
def test_baselines_round_trip(nfe):
    space = make_space(nfe)
    plans = baseline_plans(nfe, SCHED)
    assert len(plans) >= 8
    for name, plan in plans:
        g = S.encode(plan, space)
        back = S.decode(g, space)
        np.testing.assert_allclose(np.asarray(back.ts), np.asarray(plan.ts), rtol=2e-5, err_msg=name)
        for c in S.STEP_COLUMNS:
            np.testing.assert_array_equal(np.asarray(getattr(back, c)), np.asarray(getattr(plan, c)), err_msg=name)
        assert int(back.analytic_first) == int(plan.analytic_first)
        assert back.nfe() == plan.nfe() == nfe


@pytest.mark.parametrize("node_space", ["logsnr", "time"])
def test_genome_round_trip(node_space):
    space = make_space(6, node_space=node_space)
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = S.random_genome(space, rng)
        check_genome(g, space)
        g2 = S.encode(S.decode(g, space), space)
        np.testing.assert_allclose(g2.incr, g.incr, atol=3e-5)
        assert all(np.array_equal(g2.cols[c], g.cols[c]) for c in g.cols)
        assert S.plan_hash(S.decode(g, space)) == S.genome_hash(g, space)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), nfe=st.integers(2, 10), rounds=st.integers(1, 6))
def test_mutation_and_crossover_keep_nfe_and_order(seed, nfe, rounds):
    space = make_space(nfe, p_structure=0.6, p_decision=0.4)
    rng = np.random.default_rng(seed)
    pop = [S.random_genome(space, rng) for _ in range(3)]
    for _ in range(rounds):
        a, b = pop[rng.integers(3)], pop[rng.integers(3)]
        child = S.mutate(S.crossover(a, b, space, rng), space, rng)
        check_genome(child, space)
        pop[rng.integers(3)] = child


def test_crossover_of_different_step_counts_drops_no_evaluation():
    """AutoDiffusion-style crossover can lose steps when parents differ in length; ours keeps the
    budget: every child of parents with 4 and 7 steps at NFE 7 evaluates exactly 7 times."""
    nfe = 7
    space = make_space(nfe)
    rng = np.random.default_rng(1)
    ts7 = schedules.discretize("logsnr", 7, SCHED)
    long = S.encode(solvers.dpm_solver_pp(ts7, order=3), space)                  # 7 steps
    ts4 = schedules.discretize("logsnr", 4, SCHED)
    short_plan = solvers.make_plan(ts4, order=[1, 2, 2, 2], corrector=["reeval", "none", "reeval", "reeval"])
    assert short_plan.nfe() == nfe
    short = S.encode(short_plan, space)                                          # 4 steps
    assert (long.num_steps, short.num_steps) == (7, 4)
    steps_seen = set()
    for _ in range(60):
        for a, b in ((long, short), (short, long)):
            child = S.crossover(a, b, space, rng)
            plan = check_genome(child, space)
            assert int(solvers.evaluations_per_step(plan).sum()) == nfe
            steps_seen.add(child.num_steps)
    assert len(steps_seen) >= 2  # the corrector genes really mix (the budget is re-balanced)


def test_repair_restores_budget_both_ways():
    space = make_space(6)
    rng = np.random.default_rng(2)
    g = S.random_genome(space, rng)
    over = g.replace(cols={**g.cols, "corrector": np.full(g.num_steps, solvers.CORRECTOR_CODES["reeval"])})
    under = g.replace(cols={**g.cols, "corrector": np.zeros(g.num_steps, np.int64)}, analytic_first=1)
    for bad in (over, under):
        fixed = S.repair(bad, space, rng)
        assert fixed is not None
        check_genome(fixed, space)


def test_timesteps_only_mutation_changes_nodes_only():
    space = make_space(5)
    rng = np.random.default_rng(3)
    g = S.encode(solvers.dpm_solver_pp(schedules.discretize("logsnr", 5, SCHED)), space)
    for _ in range(10):
        m = S.mutate(g, space, rng, nodes_only=True)
        assert all(np.array_equal(m.cols[c], g.cols[c]) for c in g.cols)
        assert not np.allclose(m.incr, g.incr)


def test_schedule_file_round_trip(tmp_path):
    space = make_space(6)
    g = S.random_genome(space, np.random.default_rng(4))
    plan = S.decode(g, space)
    path = save_plan(tmp_path / "s.json", plan, {"score": {"x": 1.0}, "schedule": SCHED.describe()})
    d = json.loads(open(path).read())
    assert d["version"] == 1 and d["nfe"] == 6 and len(d["steps"]) == plan.num_steps
    assert isinstance(d["steps"][0]["prediction"], str) and isinstance(d["steps"][0]["corrector"], str)
    back = load_plan(path)
    for f in solvers.SolverPlan.__dataclass_fields__:
        np.testing.assert_array_equal(np.asarray(getattr(back, f)), np.asarray(getattr(plan, f)))
    d["nfe"] = 7
    with pytest.raises(ValueError, match="nfe"):
        plan_from_dict(d)
    with pytest.raises(ValueError, match="format"):
        plan_from_dict({**plan_to_dict(plan), "format": "other"})


def _synthetic(space):
    """A cheap deterministic objective over genomes: prefers wide late steps and higher orders."""
    def score(g):
        return float(np.sum((g.incr - np.linspace(0.5, 1.5, g.num_steps) / g.num_steps) ** 2)
                     + 0.01 * np.sum(g.cols["order"] == 1) + 0.003 * g.num_steps)
    return score


@pytest.mark.parametrize("cls", [Evolution, PredictorSearch])
def test_strategy_is_deterministic_and_improves(cls):
    space = make_space(5)
    kw = dict(options=EvolutionOptions(population=8, top_k=3, children=6, timesteps_only=0))
    if cls is PredictorSearch:
        kw.update(predictor=PredictorOptions(screen=32, warmup=12, train_steps=20, hidden=16))
    init = [S.encode(p, space) for _, p in baseline_plans(5, SCHED)[:6]]
    score = _synthetic(space)
    bests = []
    for _ in range(2):
        strat = cls(space, **kw)
        state = strat.init(jax.random.key(7), init)
        for _ in range(4):
            cands, state = strat.ask(state)
            state = strat.tell(state, cands, [score(c) for c in cands])
        bests.append((S.genome_hash(state.best[0], space), state.best[1], len(state.archive)))
    assert bests[0] == bests[1]
    assert bests[0][1] < min(score(g) for g in init)


def test_state_round_trip(tmp_path):
    from stepwise.search.state import restore_state, save_state

    space = make_space(4)
    strat = PredictorSearch(space, EvolutionOptions(population=6, top_k=2, children=4),
                            PredictorOptions(screen=16, warmup=6, train_steps=5, hidden=8))
    state = strat.init(jax.random.key(0), [S.encode(p, space) for _, p in baseline_plans(4, SCHED)[:4]])
    score = _synthetic(space)
    for _ in range(3):
        cands, state = strat.ask(state)
        state = strat.tell(state, cands, [score(c) for c in cands])
    save_state(str(tmp_path / "ck"), state, {"wall_s": 1.5})
    back, extra = restore_state(str(tmp_path / "ck"), strat.init(jax.random.key(1), []))
    assert extra == {"wall_s": 1.5} and back.generation == state.generation
    np.testing.assert_array_equal(back.key, state.key)
    assert [(S.genome_hash(g, space), s) for g, s in back.population] == \
           [(S.genome_hash(g, space), s) for g, s in state.population]
    assert list(back.archive) == list(state.archive)
    jax.tree.map(np.testing.assert_array_equal, back.predictor_params, state.predictor_params)


def test_predictor_ranks_held_out_plans():
    from stepwise.search.predictor import Predictor, spearman

    space = make_space(6)
    rng = np.random.default_rng(5)
    gs = [S.random_genome(space, rng) for _ in range(160)]
    score = _synthetic(space)
    y = np.array([score(g) for g in gs])
    pred = Predictor(space, hidden=32, train_steps=300)
    params = pred.init(0)
    before = spearman(pred.predict(params, gs[120:]), y[120:])
    fitted, _ = pred.fit(params, gs[:120], y[:120])
    after = spearman(pred.predict(fitted, gs[120:]), y[120:])
    # pure: the initial parameters are unchanged by fitting
    np.testing.assert_array_equal(spearman(pred.predict(params, gs[120:]), y[120:]), before)
    assert after > 0.6 and after > before


def test_rng_from_key_is_deterministic():
    a = numpy_rng(jax.random.key(3)).random(4)
    b = numpy_rng(jax.random.key(3)).random(4)
    np.testing.assert_array_equal(a, b)


def _tree_snapshot(state):
    """Every value of a search state, as plain data (to prove ask/tell mutate nothing)."""
    return json.dumps({"gen": state.generation, "key": np.asarray(state.key).tolist(),
                       "pop": [(g.to_dict(), s) for g, s in state.population],
                       "arch": sorted(state.archive), "hist": list(state.history),
                       "pending": [g.to_dict() for g in state.pending_initial],
                       "pred": None if state.predictor_params is None else
                       [np.asarray(l).tolist() for l in jax.tree.leaves(state.predictor_params)]}, sort_keys=True)


@pytest.mark.parametrize("cls", [Evolution, PredictorSearch])
def test_ask_and_tell_are_pure(cls):
    space = make_space(4)
    kw = {"predictor": PredictorOptions(screen=8, warmup=4, train_steps=3, hidden=8)} if cls is PredictorSearch else {}
    strat = cls(space, EvolutionOptions(population=4, top_k=2, children=3, timesteps_only=0), **kw)
    score = _synthetic(space)
    s0 = strat.init(jax.random.key(2), [S.encode(p, space) for _, p in baseline_plans(4, SCHED)[:3]])
    for _ in range(3):
        before = _tree_snapshot(s0)
        cands, s1 = strat.ask(s0)
        assert _tree_snapshot(s0) == before
        again, _ = strat.ask(s0)                       # the same state asks the same candidates
        assert [c.to_dict() for c in again] == [c.to_dict() for c in cands]
        mid = _tree_snapshot(s1)
        s2 = strat.tell(s1, cands, [score(c) for c in cands])
        assert _tree_snapshot(s1) == mid and s2.generation == s1.generation + 1
        s0 = s2


def test_unused_strategy_options_are_errors():
    space = make_space(4)
    with pytest.raises(ValueError, match="predictor"):
        make_strategy("evolution", space, EvolutionOptions(), PredictorOptions(screen=8))
    with pytest.raises(ValueError, match="allowed"):
        make_strategy("annealing", space)
    with pytest.raises(ValueError, match="search.top_k"):
        EvolutionOptions(top_k=0)


def test_repair_moves_bad_values_to_the_nearest_allowed_code():
    """repair consumes solvers.plan.violations: an order above what a step allows is lowered to the
    largest allowed order (not reset to 1), and the result has no violations left."""
    space = make_space(4, max_order=4)
    ts = schedules.discretize("logsnr", 4, SCHED)
    g = S.encode(solvers.make_plan(ts, order=[3, 3, 3, 3], base=[1, 0, 0, 0]), space)
    fixed = S.repair(g, space, np.random.default_rng(0))
    assert fixed is not None and fixed.cols["order"].tolist() == [1, 2, 3, 3]
    assert fixed.cols["base"].tolist() == [0, 0, 0, 0]
    assert solvers.violations(S.view(fixed, space), SCHED) == []
