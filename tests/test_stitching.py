"""Stitching: model switching in one compile, compatibility checks, re-timing, cost model, T-Stitch
sweep endpoints, budgeted joint search, the ``stepwise stitch`` command."""
from __future__ import annotations

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers
from stepwise.data import load_digits
from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.denoisers import compat as st
from stepwise.denoisers.timing import measure_cost
from stepwise.search.budget import cheapest_first_projection, within_budget

from _helpers import train_digits_mlp

LIN = schedules.VPLinear()


@functools.lru_cache(maxsize=None)
def _mixture(components: int, covariance: str = "full", schedule: str = "vp_linear", size: int = 8):
    sched = {"vp_linear": LIN, "vp_cosine": schedules.VPCosine(), "edm": schedules.EDM()}[schedule]
    return denoisers.fit_mixture(load_digits(size, flat=True, dtype=np.float64)[0], components, covariance=covariance,
                                 schedule=sched)


@pytest.fixture(scope="module")
def pair():
    """(small, large): a 1-component diagonal mixture and a 3-component full one (fast to fit)."""
    return _mixture(1, "diag"), _mixture(3)


def _plan(n=6):
    return solvers.dpm_solver_pp(schedules.discretize("logsnr", n, LIN), order=2)


def _noise(b, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, 64))


# ----------------------------------------------------------------------------- switching
def test_model_switching_reuses_one_compile(pair):
    plan = _plan(6)
    x_T = _noise(37)
    before = samplers.trace_count()
    outs = [np.asarray(samplers.sample(list(pair), LIN, solvers.t_stitch(plan, f), x_T)) for f in (0.0, 0.5, 1.0)]
    mixed = plan.replace(model=[1, 0, 1, 0, 1, 0])
    outs.append(np.asarray(samplers.sample(list(pair), LIN, mixed, x_T)))
    assert samplers.trace_count() - before <= 1     # at most the first call compiles
    # the assignments really select different models
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert np.max(np.abs(outs[i] - outs[j])) > 1e-3


def test_sweep_endpoints_equal_single_model_runs_exactly(pair):
    small, large = pair
    plan = _plan(6)
    x_T = _noise(37, seed=3)  # the shape of the switching test: its executable is reused
    both = list(pair)
    assert np.array_equal(np.asarray(samplers.sample(both, LIN, solvers.t_stitch(plan, 0.0), x_T)),
                          np.asarray(samplers.sample(large, LIN, plan, x_T)))
    assert np.array_equal(np.asarray(samplers.sample(both, LIN, solvers.t_stitch(plan, 1.0), x_T)),
                          np.asarray(samplers.sample(small, LIN, plan.replace(model=[0] * 6), x_T)))


def test_t_stitch_columns_and_fractions():
    plan = _plan(10)
    assert np.asarray(solvers.t_stitch(plan, 0.3).model).tolist() == [0, 0, 0] + [1] * 7
    assert np.asarray(solvers.t_stitch(plan, 0.0).model).tolist() == [1] * 10
    assert solvers.sweep_fractions(10) == [k / 10 for k in range(11)]
    f = solvers.sweep_fractions(10, points=6)
    assert f[0] == 0.0 and f[-1] == 1.0 and len(f) == 6
    with pytest.raises(ValueError, match="fraction"):
        solvers.t_stitch(plan, 1.5)


# ----------------------------------------------------------------------------- compatibility
def test_compatible_set_passes_unchanged(pair):
    out = st.check_compatible(list(pair))
    assert out[0] is pair[0] and out[1] is pair[1]


def test_refuses_different_data_shape(pair):
    big16 = _mixture(1, "diag", size=16)
    with pytest.raises(ValueError, match=r"data shape differs.*\(256,\).*\(64,\)"):
        st.check_compatible([pair[0], big16])


def test_refuses_different_schedule_and_names_both(pair):
    cos = _mixture(1, "diag", schedule="vp_cosine")
    with pytest.raises(ValueError) as e:
        st.check_compatible([pair[0], cos])
    msg = str(e.value)
    assert "noise schedule differs" in msg and "VPCosine" in msg and "VPLinear" in msg
    assert "retime_schedules=True" in msg


def test_refuses_different_value_range(pair):
    small, large = pair
    scaled = eqx.tree_at(lambda m: m.means, large, (np.asarray(large.means) + 1.0) / 2.0)  # [0, 1] data
    with pytest.raises(ValueError, match=r"value range differs.*data means"):
        st.check_compatible([small, scaled])

    class Declared(denoisers.Wrapper):   # a wrapper that declares its value range
        data_range: tuple = eqx.field(static=True)

        def __call__(self, x, t, cond=None):
            return self.inner(x, t, cond)

    with pytest.raises(ValueError, match=r"value range differs.*data_range \(0\.0, 1\.0\)"):
        st.check_compatible([Declared(small, (-1.0, 1.0)), Declared(large, (0.0, 1.0))])


@pytest.mark.parametrize("other", ["vp_cosine", "edm"])
def test_retimed_model_equals_native_model(other):
    """The exact mixture on another schedule, re-timed onto VP-linear, is the VP-linear mixture."""
    native, foreign = _mixture(1, "diag"), _mixture(1, "diag", schedule=other)
    wrapped = st.Retimed(foreign, LIN)
    x = _noise(16, seed=5)
    for t in (0.02, 0.3, 0.8):
        xt = x * LIN.sigma(t) + LIN.alpha(t) * 0.1
        np.testing.assert_allclose(np.asarray(wrapped(xt, t)), np.asarray(native(xt, t)), atol=2e-4)
    if other == "vp_cosine":  # VP vs VP: a pure time remap (input scale 1)
        _, c = wrapped.inner_time_and_scale(jnp.asarray([0.1, 0.5, 0.9]))
        np.testing.assert_allclose(np.asarray(c), 1.0, atol=1e-5)
    else:  # VP sampler, EDM model: x is scaled by 1/alpha
        _, c = wrapped.inner_time_and_scale(jnp.asarray(0.5))
        np.testing.assert_allclose(float(c), 1.0 / float(LIN.alpha(0.5)), rtol=1e-5)
    # EDM(0.002, 80) reaches half log-SNR -4.38 at most; VP-linear starts at -5.03: allow the gap
    out = st.check_compatible([native, foreign], LIN, retime_schedules=True, lambda_slack=1.0)
    assert isinstance(out[1], st.Retimed) and out[0] is native


def test_retime_refuses_uncovered_log_snr_range():
    narrow = denoisers.fit_mixture(load_digits(8, flat=True, dtype=np.float64)[0], 1, covariance="diag",
                                   schedule=schedules.EDM(sigma_min=0.1, sigma_max=2.0))
    with pytest.raises(ValueError, match="log-SNR"):
        st.check_compatible([_mixture(1, "diag"), narrow], LIN, retime_schedules=True)


def test_sampler_refuses_incompatible_set_before_sampling(pair):
    with pytest.raises(ValueError, match="stitching: data shape differs"):
        samplers.sample([pair[0], _mixture(1, "diag", size=16)], LIN, _plan(4), _noise(8))


def test_denoiser_set_is_checked_once_not_per_sample_call(pair, monkeypatch):
    calls = []
    real = st.check_compatible
    monkeypatch.setattr(st, "check_compatible", lambda *a, **k: calls.append(1) or real(*a, **k))
    models = denoisers.DenoiserSet(list(pair), LIN)
    assert len(calls) == 1 and len(models) == 2
    plan = solvers.t_stitch(_plan(4), 0.5)
    a = samplers.sample(models, LIN, plan, _noise(8))
    b = samplers.sample(models, LIN, plan, _noise(8))
    assert len(calls) == 1                        # sampling a set never re-checks it
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="data shape differs"):
        denoisers.DenoiserSet([pair[0], _mixture(1, "diag", size=16)], LIN)


# ----------------------------------------------------------------------------- cost model
def test_plan_cost_counts_each_evaluation_with_its_model():
    ts = schedules.discretize("logsnr", 3, LIN)
    costs = [1.0, 10.0]
    # plain: nodes 0,1,2 with models 0,1,0
    p = solvers.make_plan(ts, model=[0, 1, 0])
    assert [e.model for e in solvers.evaluations(p)] == [0, 1, 0]
    assert solvers.cost(p, costs) == 12.0
    # a final re-evaluating corrector uses the last step's model
    p = solvers.make_plan(ts, model=[0, 1, 1], corrector=["none", "none", "reeval"])
    assert [e.model for e in solvers.evaluations(p)] == [0, 1, 1, 1] and p.nfe() == 4
    assert solvers.cost(p, costs) == 31.0
    # UniC at step 0: its call at node 1 (model 1) is node 1's value; analytic first step: no call at node 0
    p = solvers.make_plan(ts, model=[0, 1, 0], corrector=["unic", "none", "none"], analytic_first=True)
    assert [e.model for e in solvers.evaluations(p)] == [1, 0] and p.nfe() == 2
    assert solvers.cost(p, costs) == 11.0
    # every preset: the per-model counts add up to the NFE
    for f in (0.0, 0.4, 1.0):
        for plan in (_plan(10), solvers.build_preset("unipc", 8, LIN, "logsnr"), solvers.build_preset("heun", 9, LIN, "karras")):
            q = solvers.t_stitch(plan, f)
            counts = solvers.evaluations_per_model(q, 2)
            assert counts.sum() == q.nfe() == solvers.evaluations_per_step(q).sum()
            assert solvers.cost(q, costs) == counts[0] * 1.0 + counts[1] * 10.0
    # CFG doubles the batch where the guidance scale is not 1
    p = solvers.make_plan(ts, model=[0, 0, 0], guidance=[1.0, 2.0, 2.0])
    assert solvers.cost(p, costs, guidance_doubles=True) == 5.0


def test_budgets_and_declared_costs(pair):
    small, large = pair
    d = st.model_costs(pair)
    assert d.tolist() == [64.0 ** 2, 3 * 64.0 ** 2]          # K d^2 (dense evaluation)
    rel = st.relative_costs(st.model_costs(pair))
    assert rel.tolist() == pytest.approx([1 / 3, 1.0])
    plan = solvers.t_stitch(_plan(10), 0.4)
    assert solvers.cost(plan, rel) == pytest.approx(4 / 3 + 6)
    assert within_budget(plan, 10, "nfe") and not within_budget(plan, 9, "nfe")
    assert within_budget(plan, 4 / 3 + 6, "cost", rel) and not within_budget(plan, 7.3, "cost", rel)
    with pytest.raises(ValueError, match="unit"):
        within_budget(plan, 1, "flops", rel)
    with pytest.raises(ValueError, match="costs"):
        solvers.cost(plan.replace(model=[2] * 10), rel)
    full = _plan(10).replace(model=np.ones(10, int))
    col = cheapest_first_projection(full, rel, 8.0)
    assert col.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]      # earliest steps move first
    assert cheapest_first_projection(full, rel, 3.0) is None


def test_measure_cost_is_a_positive_time(pair):
    t = measure_cost(pair[0], batch=64, repeats=2)
    assert 0 < t < 5


# ----------------------------------------------------------------------------- joint search
@pytest.mark.slow
def test_budgeted_search_respects_budget_and_beats_its_seed(pair):
    from stepwise.search.stitching import budget_hooks, joint_front, model_only_space, pareto_rows, stitch_evaluator
    from stepwise.search.strategies import Evolution, EvolutionOptions

    rel = st.relative_costs(st.model_costs(pair))
    plan = _plan(6)
    models = denoisers.DenoiserSet(list(pair), LIN)
    ev = stitch_evaluator(models, LIN, reference=pair[1], objective="frechet", num_samples=300, seed=0)
    budgets = [solvers.cost(solvers.t_stitch(plan, f), rel) for f in (0.5, 0.0)]
    space = model_only_space(plan.nfe(), LIN, 2)
    options = EvolutionOptions(population=6, top_k=3, children=4, timesteps_only=0, generations=2)
    rows = joint_front(models, space, plan, budgets, ev, costs=rel, options=options, log=None)
    strat = Evolution(space, options, budget_hooks(rel, budgets[0]))
    for r, b in zip(rows, sorted(budgets)):
        assert r["cost"] <= b + 1e-9 and r["plan"].nfe() == plan.nfe()
    seed_score = ev.score([solvers.t_stitch(plan, 0.5)])[0]
    assert rows[0]["score"] <= seed_score            # elitist: never worse than the T-Stitch seed
    # every proposal of the adapter is within budget
    from stepwise.search.space import decode, encode
    s0 = strat.init(jax.random.key(1), [encode(plan, space)])
    cands, s0 = strat.ask(s0)
    s0 = strat.tell(s0, cands, ev.score([decode(g, space) for g in cands]))
    cands, _ = strat.ask(s0)
    assert cands and all(solvers.cost(g, rel) <= budgets[0] + 1e-9 for g in cands)
    front = pareto_rows(rows)
    assert front and all(front[i]["cost"] <= front[i + 1]["cost"] for i in range(len(front) - 1))


@pytest.mark.slow
def test_stitch_command_writes_report_and_resumes(tmp_path):
    from stepwise.search.schedule_file import load_plan
    from stepwise.cli import main

    args = ["stitch", "--config", "configs/stitch_digits.py", "--workdir", str(tmp_path),
            "--config.model.components=3", "--config.nfe=5", "--config.stitch.num_samples=300",
            "--config.stitch.batch_size=300", "--config.stitch.points=3", "--config.stitch.search_samples=200",
            "--config.stitch.generations=1", "--config.stitch.population=4", "--config.stitch.children=3",
            "--config.stitch.cost_batch=64", "--config.stitch.model_only=False"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "stitch.json").read_text())
    presets = summary["tstitch_presets"]
    assert len(presets) > 1                                    # T-Stitch also sweeps the best baselines
    sweep = [r for r in summary["sweep"] if r["preset"] == presets[0]]
    shown = [r for r in sweep if r["sweep_point"]]
    assert [r["fraction"] for r in shown] == [0.0, 0.4, 1.0]   # k = round(linspace(0, 5, 3)), half to even
    assert shown[0]["cost"] == pytest.approx(5.0) and shown[-1]["cost"] == pytest.approx(5 / 3)
    # the budget comparison sees T-Stitch at EVERY k of every preset, not only the thinned sweep points
    for name in presets:
        assert sorted(r["small_steps"] for r in summary["sweep"] if r["preset"] == name)[-1] >= 5
    assert [r["small_steps"] for r in sweep] == [0, 1, 2, 3, 4, 5]
    # budget by budget: the best T-Stitch plan within the budget (any preset) against the search, with intervals
    comp = summary["comparison"]
    assert [c["budget"] for c in comp] == sorted(c["budget"] for c in comp) and len(comp) == 3
    for c in comp:
        best = min((r for r in summary["sweep"] if r["cost"] <= c["budget"] * (1 + 1e-9)), key=lambda r: r["quality"])
        assert c["T-Stitch"] == best["name"] and "[" in c["T-Stitch quality"]
        assert "x [" in c["T-Stitch / joint"] or c["T-Stitch / joint"].startswith("below the noise floor")
    assert "joint_gain_median" not in summary                 # no median of ratios
    for f in ("report.md", "report.html", "fig01.png", "costs.json"):
        assert (tmp_path / f).exists(), f
    fronts = sorted((tmp_path / "front" / "joint").glob("front_*.json"))
    assert len(fronts) == 3 and load_plan(fronts[0]).nfe() == 5
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "points").glob("*.json")}
    assert main(args) == 0                             # rerun: every point and budget is reused
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "points").glob("*.json")} == stamps


def test_ranked_tstitch_least_prefix_keeps_one_plan_per_base_with_the_least_k_that_fits():
    """Costs (large 1, small 0.25), 4 steps: k small steps cost 4 - 0.75 k, so budget 2.5 admits
    k = 2, 3, 4 and the least is k = 2 (by hand); a 5-step base needs k = 4 (5 - 3 = 2 <= 2.5).
    The score is a function of the plan (its number of small steps, negated), so the order is known."""
    from stepwise.search.stitching import ranked_tstitch

    costs = np.array([0.25, 1.0])
    bases = [solvers.ddim(schedules.discretize("logsnr", n, LIN)) for n in (4, 5)]
    small_steps = lambda ps: [-float(np.sum(np.asarray(p.model) == 0)) for p in ps]
    every = ranked_tstitch(bases, 2.5, costs, 0, 1, small_steps)
    assert sorted((i, k) for i, k, _ in every) == [(0, 2), (0, 3), (0, 4), (1, 4), (1, 5)]
    assert [-s for s in small_steps([p for _, _, p in every])] == sorted((k for _, k, _ in every), reverse=True)
    least = ranked_tstitch(bases, 2.5, costs, 0, 1, small_steps, least_prefix=True)
    assert [(i, k) for i, k, _ in least] == [(1, 4), (0, 2)]   # ascending score = most small steps first
    for _, k, p in least:
        assert within_budget(p, 2.5, "cost", costs) and int(np.sum(np.asarray(p.model) == 0)) == k
    assert ranked_tstitch(bases, 0.9, costs, 0, 1, small_steps) == []   # even all-small is over budget


@pytest.mark.slow
def test_joint_front_starts_from_the_best_tstitch_plan_of_any_preset(pair):
    """Seeded with the T-Stitch variants of SEVERAL presets, every budget's result is at least as
    good (search noise) as the best of them that fits; with zero generations nothing but the seeds
    and random genomes is scored, so a seed drawn from the first preset only would fail here."""
    from stepwise.cli import defaults, options as cli_options
    from stepwise.search.stitching import joint_front, stitch_evaluator, tstitch_seeds
    from stepwise.search.strategies import EvolutionOptions

    rel = st.relative_costs(st.model_costs(pair))
    grid = schedules.discretize("logsnr", 5, LIN)
    weak, strong = solvers.ddim(grid), solvers.ipndm(schedules.discretize("time_quadratic", 5, LIN), order=3)
    models = denoisers.DenoiserSet(list(pair), LIN)
    ev = stitch_evaluator(models, LIN, reference=pair[1], objective="teacher_frechet", num_samples=300, seed=3)
    budgets = [solvers.cost(solvers.t_stitch(weak, f), rel) for f in (0.6, 0.2)]
    space = cli_options.search_space(defaults.get_config().search, 5, LIN, num_models=2)
    options = EvolutionOptions(population=4, top_k=2, children=2, timesteps_only=0, generations=0)
    rows = joint_front(models, space, [weak, strong], budgets, ev, costs=rel, options=options, log=None)
    for r, b in zip(rows, sorted(budgets)):
        fits = [solvers.t_stitch(p, k / p.num_steps) for p in (weak, strong) for k in range(p.num_steps + 1)]
        fits = [p for p in fits if within_budget(p, b, "cost", rel)]
        best_weak = min(ev.score([p for p in fits if p.order.max() == 1]))
        best_any = min(ev.score(fits))
        assert best_any < 0.9 * best_weak                     # the second preset matters at this budget
        assert r["score"] <= best_any * (1 + 1e-3) and r["cost"] <= b + 1e-9
    # the helper ranks by the score it is given, any preset, within the budget
    picked = tstitch_seeds([weak, strong], budgets[1], rel, 0, 1, ev.score, count=1)
    assert len(picked) == 1 and ev.score(picked)[0] == pytest.approx(min(ev.score(
        [p for p in (solvers.t_stitch(q, k / 5) for q in (weak, strong) for k in range(6))
         if within_budget(p, budgets[1], "cost", rel)])))


@pytest.mark.slow
def test_stitch_scores_a_trained_pair_on_held_out_digits_with_several_search_seeds(tmp_path, capsys):
    """pair=checkpoints + feature_net: every point also gets the domain-feature Fréchet distance to
    the held-out test digits (checked against a direct computation); models that trained on the
    test digits are refused by name; two search seeds give two fronts and a median over seeds."""
    from stepwise.cli import main
    from stepwise.evaluation import extract_features, feature_net_extractor, load_feature_net, sample_frechet
    from stepwise.training import trained_on

    small_all = train_digits_mlp(tmp_path / "small_all", "all", "small")
    small, large = train_digits_mlp(tmp_path / "small", "train", "small"), train_digits_mlp(tmp_path / "large", "train", "large")
    assert trained_on(small) == ("digits", "train") and trained_on(small_all) == ("digits", "all")
    net_dir = tmp_path / "net"
    assert main(["train-features", "--data", "digits", "--out", str(net_dir), "--steps", "40",
                 "--feature-dim", "16"]) == 0
    args = ["stitch", "--config", "configs/stitch_digits.py", "--config.nfe=3", "--config.stitch.pair=checkpoints",
            f"--config.stitch.large_checkpoint={large}",
            f"--config.stitch.feature_net={net_dir}", "--config.stitch.num_samples=128",
            "--config.stitch.batch_size=128", "--config.stitch.points=2", "--config.stitch.tstitch_presets=1",
            "--config.stitch.search_samples=100", "--config.stitch.generations=1", "--config.stitch.population=3",
            "--config.stitch.children=2", "--config.stitch.cost_batch=32", "--config.stitch.model_only=False",
            "--config.stitch.resamples=20", "--config.stitch.search_seeds=0,1"]
    capsys.readouterr()
    assert main(args + [f"--config.stitch.small_checkpoint={small_all}", "--workdir", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "config.stitch.small_checkpoint" in err and "train.split=train" in err
    assert not (tmp_path / "no").exists()
    wd = tmp_path / "run"
    assert main(args + [f"--config.stitch.small_checkpoint={small}", "--workdir", str(wd)]) == 0
    summary = json.loads((wd / "stitch.json").read_text())
    assert summary["held_out"]["images"] == 359 and summary["search_seeds"] == [0, 1]
    assert set(summary["search"]) == {"joint s0", "joint s1"}
    # the held-out distance of one point, recomputed from its samples by hand
    from stepwise.cli import runtime
    from stepwise.search.schedule_file import load_plan

    models = denoisers.DenoiserSet([runtime.load_model_path(small), runtime.load_model_path(large)], LIN)
    plan = load_plan(summary["search"]["joint s1"]["schedule_files"][-1])
    x_T = np.asarray(jax.random.normal(jax.random.key(summary["seed"]), (128, 64)) * LIN.prior_std(), np.float32)
    x = np.asarray(samplers.sample(models, LIN, plan, jnp.asarray(x_T)))
    ext = feature_net_extractor(load_feature_net(str(net_dir)))
    held = np.asarray(extract_features(ext, load_digits(8, split="test")[0][..., 0]), np.float64)
    want = sample_frechet(np.asarray(extract_features(ext, x), np.float64), held.mean(0), np.cov(held, rowvar=False))
    row = json.loads((wd / "points" / "joint_s1_001.json").read_text())
    assert row["heldout_fd"] == pytest.approx(want, rel=1e-4) and len(row["heldout_fd_reps"]) == 20
    for line in summary["comparison"]:
        assert "T-Stitch quality (held-out FD)" in line and "joint s0 quality (held-out FD)" in line
        assert "over 2 seeds" in line["T-Stitch / joint, seeds"] or "below the noise floor" in line["T-Stitch / joint, seeds"]
    assert (wd / "front" / "joint_s0").is_dir() and "held-out digits test images" in (wd / "report.md").read_text()


@pytest.mark.slow
def test_stitch_searches_skip_masks_jointly_with_the_model_column(tmp_path, capsys):
    """``stepwise stitch --config.search.skip=True`` on a trained MLP pair: at a budget below the cost
    of running every step on the small network, the front's plan must skip units; its cost, recomputed
    here from the saved schedule file with unit shares measured here, is the row's and within the
    budget. ``search.skip`` with the exact (mixture) pair is refused before a run directory exists."""
    from stepwise.cli import main, runtime
    from stepwise.denoisers.skipping import unit_shares
    from stepwise.search.schedule_file import load_plan

    small, large = (train_digits_mlp(tmp_path / n, "train", n) for n in ("small", "large"))
    members = [runtime.load_model_path(small), runtime.load_model_path(large)]
    costs = st.relative_costs(denoisers.DenoiserSet(members, LIN).costs)
    shares = [unit_shares(m) for m in members]
    nfe = 3
    all_small = nfe * costs[0]
    floor = nfe * costs[0] * (1 - shares[0].sum())          # every step small, every unit skipped
    budget = 0.5 * (floor + all_small)
    assert floor < budget < all_small
    args = ["stitch", "--config", "configs/stitch_digits.py", f"--config.nfe={nfe}", "--config.stitch.pair=checkpoints",
            f"--config.stitch.small_checkpoint={small}", f"--config.stitch.large_checkpoint={large}",
            "--config.stitch.num_samples=128", "--config.stitch.batch_size=128", "--config.stitch.points=2",
            "--config.stitch.tstitch_presets=1", "--config.stitch.search_samples=64", "--config.stitch.generations=1",
            "--config.stitch.population=4", "--config.stitch.children=2", "--config.stitch.cost_batch=32",
            "--config.stitch.model_only=False", "--config.stitch.resamples=20", "--config.stitch.cost=declared",
            f"--config.stitch.budgets={budget},{costs[1] * nfe}", "--config.search.skip=True"]
    wd = tmp_path / "run"
    assert main(args + ["--workdir", str(wd)]) == 0
    summary = json.loads((wd / "stitch.json").read_text())
    files = summary["search"]["joint"]["schedule_files"]
    rows = [json.loads((wd / "points" / f"joint_{k:03d}.json").read_text()) for k in range(len(files))]
    for f, row, b in zip(files, rows, sorted([budget, costs[1] * nfe])):
        plan = load_plan(f)
        cost = solvers.cost(plan, costs, unit_shares=shares)
        assert cost == pytest.approx(row["cost"], rel=1e-6) and cost <= b * (1 + 1e-9)
    tight = load_plan(files[0])
    assert np.asarray(tight.skip).shape[1] == max(len(m.skip_units) for m in members)
    assert np.asarray(tight.skip).sum() > 0 and np.all(np.asarray(tight.model) == 0)
    capsys.readouterr()
    gmm = ["stitch", "--config", "configs/stitch_digits.py", "--config.nfe=3", "--config.search.skip=True"]
    assert main(gmm + ["--workdir", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "search.skip" in err and "stitch.pair='checkpoints'" in err and not (tmp_path / "no").exists()


def test_sample_replays_a_stitched_plan_over_the_members_it_names(tmp_path, capsys):
    """`stepwise sample --config.model.members=SMALL,LARGE --config.plan=FILE` runs a stitched plan
    over both checkpoints: its samples equal a direct ``samplers.sample`` of the DenoiserSet on the
    command's own noise (``batch_noise``). Without members the plan is refused before a run
    directory exists, naming ``config.model.members``; members need kind=checkpoint."""
    from stepwise.cli import main, runtime
    from stepwise.cli.commands.sample import batch_noise
    from stepwise.search.schedule_file import save_plan

    small, large = (train_digits_mlp(tmp_path / n, "train", n, steps=10) for n in ("small", "large"))
    plan = solvers.t_stitch(solvers.dpm_solver_pp(schedules.discretize("logsnr", 4, LIN), order=2), 0.5)
    assert np.asarray(plan.model).tolist() == [0, 0, 1, 1]
    path = save_plan(str(tmp_path / "stitched.json"), plan)
    base = ["sample", "--config.model.kind=checkpoint", f"--config.plan={path}", "--config.num_samples=96",
            "--config.batch_size=64", "--config.save_samples=True", "--config.reference_samples=0"]
    capsys.readouterr()
    assert main(base + [f"--config.model.checkpoint={large}", "--workdir", str(tmp_path / "no")]) == 2
    assert "config.model.members" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert main(["sample", "--config.model.members=a,b", "--workdir", str(tmp_path / "no2")]) == 2
    assert "config.model.kind='checkpoint'" in capsys.readouterr().err
    assert main(base + [f"--config.model.members={small},{large}", "--workdir", str(tmp_path / "run")]) == 0
    with np.load(tmp_path / "run" / "samples.npz") as z:
        got = z["samples"]
    models = denoisers.DenoiserSet([runtime.load_model_path(small), runtime.load_model_path(large)], LIN)
    want = np.concatenate([np.asarray(samplers.sample(models, LIN, plan, batch_noise(0, 0, b, m, (64,), LIN)))
                           for b, m in enumerate((64, 32))])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    one = np.asarray(samplers.sample(models[1], LIN, plan.replace(model=jnp.zeros_like(plan.model)),
                                     batch_noise(0, 0, 0, 64, (64,), LIN)))
    assert np.max(np.abs(one - got[:64])) > 1e-3      # the small model's steps changed the samples


def test_summary_over_seeds_counts_lower_bounds_and_never_averages_them():
    from stepwise.cli.commands.stitch import summarize_over_seeds

    def r(v, bound=False):
        return {"value": None if bound else v, "low": 0.5, "high": None if bound else 2 * v, "lower_bound_only": bound}

    lines = [{"budget": 1.0, "_joint s0_ratio": r(1.0), "_joint s1_ratio": r(4.0), "_joint s2_ratio": r(2.0)},
             {"budget": 2.0, "_joint s0_ratio": r(3.0), "_joint s1_ratio": r(0, True), "_joint s2_ratio": r(5.0)},
             {"budget": 3.0, "_joint s0_ratio": r(0, True), "_joint s1_ratio": r(0, True)}]
    summarize_over_seeds(lines, {"joint": ["joint s0", "joint s1", "joint s2"], "model-only": ["model-only s0"]})
    assert lines[0]["T-Stitch / joint, seeds"] == "median 2x [1, 4] over 3 seeds"
    assert lines[1]["_joint_seeds"] == {"n_seeds": 2, "median": 4.0, "min": 3.0, "max": 5.0, "lower_bounds": 1}
    assert lines[1]["T-Stitch / joint, seeds"].endswith("(1 below the noise floor)")
    assert lines[2]["T-Stitch / joint, seeds"] == "no resolved ratio (2 below the noise floor)"
    assert not any(k.startswith("T-Stitch / model-only") for line in lines for k in line)   # one seed: no summary
