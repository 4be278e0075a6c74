"""The claims layer: paired distances with intervals, ratios that respect the noise floor, baselines
with every free option, and final noise disjoint from search noise."""
from __future__ import annotations

import numpy as np
import pytest

from stepwise import schedules, solvers
from stepwise.search import protocol
from stepwise.search.evaluator import Evaluator, baseline_plans


def test_ratio_of_resolved_distances_is_a_number_with_an_interval():
    rng = np.random.default_rng(0)
    den = 1.0 + 0.05 * rng.standard_normal(400)
    num = 3.0 * den + 0.05 * rng.standard_normal(400)
    r = protocol.ratio(3.0, num, 1.0, den)
    assert not r.lower_bound_only and r.value == 3.0
    assert r.low < 3.0 < r.high and r.high - r.low < 0.5
    assert str(r).startswith("3x [")


def test_ratio_over_a_noise_level_denominator_is_only_a_lower_bound():
    rng = np.random.default_rng(1)
    den = 0.0004 + 0.00026 * rng.standard_normal(500)     # an excess inside its own sampling noise
    num = 0.02 + 0.001 * rng.standard_normal(500)
    r = protocol.ratio(0.02, num, 0.0004, den)
    assert r.lower_bound_only and r.value is None and r.high is None
    lo_num = 2 * 0.02 - np.quantile(num, 0.975)          # basic bootstrap interval ends
    hi_den = 2 * 0.0004 - np.quantile(den, 0.025)
    assert r.low == pytest.approx(lo_num / hi_den)
    assert str(r).startswith("below the noise floor (ratio >= ")
    # a non-positive point estimate is never divided either
    assert protocol.ratio(1.0, np.ones(10), -0.1, np.linspace(0.1, 0.2, 10)).lower_bound_only


def test_unresolved_paired_distance_makes_the_ratio_a_bound():
    """Identical plans whose distance to the reference is inside the estimation noise: the ratio is
    not reported as a number (the bound it gives is consistent with 1)."""
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((600, 6))
    x = ref + 0.1 * rng.standard_normal((600, 6))
    idx = protocol.bootstrap_indices(600, 100, seed=0)
    same = protocol.paired_frechet(x, ref, idx)
    c = protocol.compare("frechet_to_reference", same, "baseline", same, 600)
    assert c.ratio.lower_bound_only and c.ratio.low <= 1.0


def test_interval_contains_its_point_and_names_n():
    reps = np.linspace(0.0, 1.0, 101)
    iv = protocol.interval(0.5, reps, n=1234)
    assert iv.low == pytest.approx(0.025) and iv.high == pytest.approx(0.975)
    assert iv.n == 1234 and iv.resamples == 101 and iv.includes(0.5)


def test_an_interval_that_misses_its_point_says_so():
    """Replicates all well above the point (a resampled Fréchet distance's upward bias larger than
    the spread): the basic interval lies below the point and the printed row says why."""
    iv = protocol.interval(1.0, np.linspace(1.5, 1.7, 101), n=128, nonnegative=True)
    assert iv.high < 1.0 and not iv.includes(1.0)
    assert str(iv).endswith("(bias > half-width: n too small)")
    assert "bias" not in str(protocol.interval(0.5, np.linspace(0.0, 1.0, 101), n=128))


def test_a_plan_that_equals_its_baseline_has_a_ratio_interval_containing_one():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((600, 6))
    x = 1.3 * ref + 0.2          # a solver error well above the estimation noise of 600 samples
    idx = protocol.bootstrap_indices(600, 100, seed=0)
    same = protocol.paired_frechet(x, ref, idx)
    c = protocol.compare("frechet_to_reference", same, "baseline", protocol.paired_frechet(x.copy(), ref, idx), 600)
    assert c.ratio.low <= 1.0 <= c.ratio.high and c.ratio.value == pytest.approx(1.0)
    # a plan twice as far from the reference is resolved as worse (ratio interval below 1)
    worse = protocol.paired_frechet(1.6 * ref + 0.4, ref, idx)
    c2 = protocol.compare("frechet_to_reference", worse, "baseline", same, 600)
    assert c2.ratio.high < 1.0


def test_paired_distance_cancels_sample_noise():
    """Two solvers' endpoints on the same noise: the paired distance of the better one is smaller,
    although both sets have the same sample noise that an unpaired distance would add."""
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((2000, 4))
    idx = protocol.bootstrap_indices(2000, 50, seed=1)
    good, _ = protocol.paired_frechet(ref * 1.01, ref, idx)
    bad, _ = protocol.paired_frechet(ref * 1.10, ref, idx)
    assert 0 < good < bad
    with pytest.raises(ValueError, match="same noise"):
        protocol.paired_frechet(ref[:10], ref, idx)


def test_paired_rmse_compares_sample_by_sample_where_a_frechet_distance_cannot():
    """Endpoints that are the reference's own rows, shuffled, have the reference's moments (Fréchet
    distance 0) but are far sample by sample; the paired RMSE and its bootstrap replicates are the
    root-mean-square over the (resampled) rows, computed here directly."""
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((500, 3, 2))
    idx = protocol.bootstrap_indices(500, 20, seed=2)
    shuffled = ref[rng.permutation(500)]
    assert protocol.paired_frechet(shuffled, ref, idx)[0] < 1e-9
    point, reps = protocol.paired_rmse(shuffled, ref, idx)
    assert point == pytest.approx(np.sqrt(np.mean((shuffled - ref) ** 2)), rel=1e-12) and point > 1.0
    for r, rows in zip(reps, idx):
        assert r == pytest.approx(np.sqrt(np.mean((shuffled[rows] - ref[rows]) ** 2)), rel=1e-12)
    close, _ = protocol.paired_rmse(ref * 1.01, ref)
    assert close == pytest.approx(0.01 * np.sqrt(np.mean(ref ** 2)), rel=1e-9)


def test_error_split_separates_mode_switches_from_the_rest():
    """Rows in the mask carry a known error, the rest another: fraction, share and the rest's RMSE
    equal their formulas, and their intervals come from the same bootstrap rows."""
    n, d = 1000, 8
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n, d))
    mask = np.zeros(n, bool)
    mask[rng.choice(n, 50, replace=False)] = True
    x = ref + np.where(mask[:, None], 2.0, 0.1)            # e_i = d * 4 in the mask, d * 0.01 outside
    idx = protocol.bootstrap_indices(n, 100, 1)
    s = protocol.error_split(x, ref, mask, idx)
    assert s.fraction.value == pytest.approx(0.05)
    assert s.share.value == pytest.approx(50 * 4.0 / (50 * 4.0 + 950 * 0.01))
    assert s.rmse_rest.value == pytest.approx(0.1)
    assert s.fraction.low < 0.05 < s.fraction.high and s.fraction.n == n and s.fraction.resamples == 100
    assert s.rmse_rest.low == pytest.approx(0.1) and s.rmse_rest.high == pytest.approx(0.1)
    # the replicates are the formula on the resampled rows: an interval as wide as the fraction's spread
    fr = mask[idx].mean(axis=1)
    assert s.fraction.high - s.fraction.low == pytest.approx(np.quantile(fr, 0.975) - np.quantile(fr, 0.025))
    with pytest.raises(ValueError, match="mask has 999 entries"):
        protocol.error_split(x, ref, mask[1:], idx)


def test_baselines_include_the_analytic_first_step_at_the_same_nfe():
    sched = schedules.VPLinear()
    plans = dict(baseline_plans(5, sched))
    afs = [n for n in plans if n.endswith("+afs")]
    assert len(afs) >= 20 and all(int(plans[n].analytic_first) == 1 for n in afs)
    assert all(p.nfe() == 5 for p in plans.values())
    # the AFS variant of iPNDM-3 / time-quadratic has 6 steps for 5 evaluations
    p = plans["ipndm(order=3)/time_quadratic+afs"]
    assert p.num_steps == 6 and solvers.evaluations(p)[0].node == 1


@pytest.mark.slow
def test_search_with_reference_reports_paired_and_excess_with_intervals(tmp_path, gmm_factory):
    """A small exact-model search with final_reference=True: the excess and paired paths run, every
    comparison carries n, seeds and an interval, the best baseline is named (AFS variants included),
    and the final noise is not the search noise."""
    from stepwise.cli.options import run_search_section, section

    model = gmm_factory(3)
    sched = schedules.VPLinear()
    s = section("search", dict(generations=1, search_samples=64, batch_size=128, population=4, top_k=2,
                               children=2, screen=8, predictor_warmup=4, predictor_train_steps=5,
                               predictor_hidden=8, timesteps_only_generations=0, final_samples=256,
                               final_top_baselines=0, final_reference=True))
    summ = run_search_section(s, model, sched, 4, tmp_path / "s", log=lambda m: None)
    assert summ["headline"] == "frechet_to_reference"
    assert set(summ["comparisons"]) == {"frechet_to_reference", "excess", "frechet", "rmse_to_reference"}
    for c in summ["comparisons"].values():
        for side in ("plan", "baseline"):
            assert c[side]["n"] == 256 and c[side]["resamples"] >= 100
            assert 0.0 <= c[side]["low"] <= c[side]["high"] or c["metric"] == "excess"
        assert c["baseline_name"] in {r["solver"] for r in summ["final_table"]}
        assert "x [" in c["ratio_text"] or c["ratio_text"].startswith("below the noise floor")
        # beside the plug-in paired distances: bias-extrapolated ones (not for fixed moments)
        assert ("ratio_inf" in c) == (c["metric"] == "frechet_to_reference")
        if "ratio_inf" in c:
            for side in ("plan", "baseline"):
                assert c[side + "_inf"]["n"] == 256 and 0.0 <= c[side + "_inf"]["low"] <= c[side + "_inf"]["high"]
                assert c[side + "_inf"]["value"] < c[side]["value"]     # the plug-in bias is positive
    assert summ["final"]["extrapolation"]["draws"] == 4
    assert any(r["solver"].endswith("+afs") for r in summ["final_table"])
    gits = [r for r in summ["final_table"] if "/gits" in r["solver"]]     # tuned-node (DP) baselines
    assert 1 <= len(gits) <= 8 and all(r["nfe"] == 4 for r in gits)
    assert summ["baselines_total"] == len(baseline_plans(4, sched)) + len(gits)
    # seeds recorded and disjoint: the final noise differs from the search noise
    final_seed, search_seed = summ["final"]["seed"], summ["seed"]
    assert final_seed != search_seed
    ev = Evaluator(model, sched, objective="frechet", num_samples=64, seed=search_seed)
    from stepwise.search.run import final_noise
    fresh = final_noise(model, sched, 64, final_seed)
    assert not np.allclose(fresh, ev.x_T)
    # the best baseline is the minimum of the table on the headline metric
    key = summ["headline"]
    best = min((r for r in summ["final_table"] if r["solver"] != "searched"), key=lambda r: r[key])
    assert summ["comparisons"][key]["baseline_name"] == best["solver"]


def test_guided_model_has_no_exact_moments():
    from stepwise import denoisers

    model = denoisers.Guided(denoisers.digits_gmm_conditional(components_per_class=1), 3.0)
    assert not hasattr(model, "moments")
    with pytest.raises(ValueError, match="exact moments"):
        Evaluator(model, schedules.VPLinear(), objective="frechet", num_samples=8)


def _fixed_moment_intervals(s: float, trials: int = 40, n: int = 48, d: int = 8) -> list:
    """Intervals of the Fréchet distance of n samples of N(0, s^2 lam) to the fixed N(0, lam)."""
    lam = 1.0 / np.arange(1, d + 1)
    rng = np.random.default_rng(7)
    out = []
    for k in range(trials):
        x = rng.standard_normal((n, d)) * np.sqrt(lam) * s
        p, reps = protocol.exact_frechet(x, np.zeros(d), np.diag(lam), protocol.bootstrap_indices(n, 100, k))
        out.append(protocol.interval(p, reps, n, nonnegative=True))
    return out


def test_basic_interval_covers_a_known_frechet_distance_and_reaches_zero_when_it_is_zero():
    """Coverage where the truth is closed form: the plug-in distance is biased upward (here ~1.3x),
    the basic interval moves down with that bias and covers the population distance
    sum_i lam_i (s - 1)^2 in most trials (a percentile interval would lie above it); a distance
    whose population value is 0 is unresolved (its interval reaches 0), not a number."""
    lam = 1.0 / np.arange(1, 9)
    truth = float(np.sum(lam) * 0.6 ** 2)
    iv = _fixed_moment_intervals(1.6)
    assert np.mean([i.value for i in iv]) > 1.2 * truth          # the bias the interval must absorb
    assert np.mean([i.includes(truth) for i in iv]) >= 0.85
    assert np.mean([i.low > 0 for i in iv]) >= 0.8               # resolved from zero
    assert np.mean([i.low == 0 for i in _fixed_moment_intervals(1.0)]) >= 0.9


def _unexplained_error_trials(trials: int, n: int, d: int = 8, s: float = 0.3):
    """(reference, plan) endpoint pairs x ~ N(0, diag(1/i)), x + s u (u independent of x), and the
    population paired distance sum_i (sqrt(lam_i + s^2) - sqrt(lam_i))^2."""
    lam = 1.0 / np.arange(1, d + 1)
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(trials):
        x = rng.standard_normal((n, d)) * np.sqrt(lam)
        pairs.append((x, x + s * rng.standard_normal((n, d))))
    return pairs, float(np.sum((np.sqrt(lam + s ** 2) - np.sqrt(lam)) ** 2))


def test_extrapolated_paired_distance_removes_the_plug_in_bias():
    """FID_inf (Chong & Forsyth 2020): the paired distance on half-size subsets has twice the
    O(1/n) bias, so the line through (1/n, FD_n) and (2/n, FD_{n/2}) meets 1/n = 0 near the population
    distance while the plug-in value sits well above it."""
    pairs, truth = _unexplained_error_trials(40, 48)
    levels = protocol.Extrapolation().levels(48)
    plug = [protocol.paired_distance(x, ref)(np.arange(48)) for ref, x in pairs]
    ex = [protocol.extrapolated(protocol.paired_distance(x, ref), np.arange(48), levels) for ref, x in pairs]
    assert np.mean(plug) > 1.4 * truth
    assert abs(np.mean(ex) / truth - 1) < 0.15


def test_extrapolated_interval_centres_on_the_plug_in_value_and_covers():
    """A resample's extrapolation estimates the plug-in value, so the interval is the replicates'
    spread around it moved onto the extrapolated point; it covers the population distance. Centred
    on the extrapolated point instead (as for a plug-in estimate), it would sit one bias too low."""
    pairs, truth = _unexplained_error_trials(40, 48)
    ex = protocol.Extrapolation()
    cover, cover_wrong = [], []
    for k, (ref, x) in enumerate(pairs):
        idx = protocol.bootstrap_indices(48, 100, k)
        point, reps, center = protocol.debiased(protocol.paired_distance(x, ref), idx, ex)
        assert center == pytest.approx(protocol.paired_frechet(x, ref, idx)[0])
        cover.append(protocol.interval(point, reps, 48, nonnegative=True, center=center).includes(truth))
        cover_wrong.append(protocol.interval(point, reps, 48, nonnegative=True).includes(truth))
    assert np.mean(cover) >= 0.85
    assert np.mean(cover_wrong) < 0.7


def test_extrapolation_subsets_are_disjoint_blocks_and_bad_fractions_are_named():
    levels = protocol.Extrapolation((0.5, 1.0), draws=3).levels(10)
    assert [m for m, _ in levels] == [5, 10]
    halves = levels[0][1]
    assert halves.shape == (6, 5)
    for d in range(3):   # each draw partitions the rows
        assert sorted(np.concatenate(halves[2 * d: 2 * d + 2]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="extrapolation fractions"):
        protocol.Extrapolation((1.0,)).levels(10)
    with pytest.raises(ValueError, match="extrapolation fractions"):
        protocol.Extrapolation((0.05, 1.0)).levels(10)
    with pytest.raises(ValueError, match="extrapolation draws"):
        protocol.Extrapolation(draws=0).levels(10)


def test_final_evaluation_compares_a_plan_found_twice_once(monkeypatch):
    """Two searches that found the SAME plan (e.g. two-stage and joint mask searches) get the same
    comparison, and its bootstrap (the extrapolated replicates, the costly part in high dimension)
    runs once: ``protocol.debiased`` is called for the best baseline and for each distinct plan."""
    from stepwise import denoisers
    from stepwise.search import run as R

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    same = solvers.ipndm(schedules.discretize("time_quadratic", 4, sched), order=3)
    plans = {"a": same, "b": same, "c": solvers.ddim(schedules.discretize("logsnr", 4, sched)),
             "ddim/time_uniform": solvers.ddim(schedules.discretize("time_uniform", 4, sched)),
             "dpm(2)/logsnr": solvers.dpm_solver_pp(schedules.discretize("logsnr", 4, sched), order=2)}
    calls = []
    real = protocol.debiased
    monkeypatch.setattr(protocol, "debiased", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, info = R.final_evaluation(model, sched, plans, num_samples=200, seed=5, batch_size=200,
                                 focus=("a", "b", "c"), resamples=20)
    assert info["comparisons"]["a"] == info["comparisons"]["b"] != info["comparisons"]["c"]
    assert len(calls) == 1 + 2        # the best baseline, then "a" and "c" ("b" is "a"'s plan)


def test_final_evaluation_memo_samples_and_bootstraps_each_plan_once_across_calls(monkeypatch):
    """Two comparisons on the same noise (e.g. against the best baseline at NFE B and at 2B) that
    share a ``FinalMemo``: the searched plan is sampled once and bootstrapped once over both calls,
    the results equal those of calls without a memo, and a memo filled on other noise is refused."""
    from stepwise import denoisers
    from stepwise.search import run as R

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    grid = lambda kind, n: schedules.discretize(kind, n, sched)
    searched = {"s": solvers.ipndm(grid("time_quadratic", 4), order=3)}
    low = {"ddim/time_uniform": solvers.ddim(grid("time_uniform", 4)), "dpm(2)/logsnr":
           solvers.dpm_solver_pp(grid("logsnr", 4), order=2)}
    high = {"ipndm(3)/logsnr8": solvers.ipndm(grid("logsnr", 8), order=3), "dpm(2)/logsnr": low["dpm(2)/logsnr"]}
    x_T = R.final_noise(model, sched, 200, 5)
    data = (x_T, R.reference_endpoints(model, sched, x_T, 200))
    kw = dict(num_samples=200, seed=5, batch_size=200, final_data=data, focus=("s",), resamples=20)
    plain = [R.final_evaluation(model, sched, {**searched, **b}, **kw) for b in (low, high)]
    runs, boots = [], []
    real_run, real_deb = R.run_plan, protocol.debiased
    monkeypatch.setattr(R, "run_plan", lambda *a, **k: runs.append(1) or real_run(*a, **k))
    monkeypatch.setattr(protocol, "debiased", lambda *a, **k: boots.append(1) or real_deb(*a, **k))
    memo = R.FinalMemo()
    shared = [R.final_evaluation(model, sched, {**searched, **b}, memo=memo, **kw) for b in (low, high)]
    assert shared == plain
    assert plain[0][1]["comparisons"]["s"] != plain[1][1]["comparisons"]["s"]   # two different best baselines
    assert len(runs) == 5             # s once; the baselines per call (only focus samples are kept)
    assert len(boots) == 3            # s once, and each call's best baseline
    other = (R.final_noise(model, sched, 200, 6), data[1])
    with pytest.raises(ValueError, match="memo"):
        R.final_evaluation(model, sched, searched | low, memo=memo, **{**kw, "final_data": other})


def test_final_evaluation_scores_the_reference_solve_itself_on_held_out_data():
    """With held-out data, the reference solve ITSELF is compared with the best baseline by held-out
    FD on the same bootstrap rows: its value is the Fréchet distance of the reference endpoints to the
    held-out moments (recomputed here with scipy), the baseline is the one with the smallest held-out
    FD, and the ratio is baseline / reference. Without held-out data nothing is added."""
    import scipy.linalg

    from stepwise import denoisers
    from stepwise.evaluation import identity_extractor
    from stepwise.search import run as R

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    grid = lambda kind, n: schedules.discretize(kind, n, sched)
    plans = {"s": solvers.ipndm(grid("time_quadratic", 3), order=3),
             "ddim/time_uniform": solvers.ddim(grid("time_uniform", 3)),
             "dpm(2)/logsnr": solvers.dpm_solver_pp(grid("logsnr", 3), order=2)}
    x_T = R.final_noise(model, sched, 300, 5)
    ref = R.reference_endpoints(model, sched, x_T, 300)
    images = R.reference_endpoints(model, sched, R.final_noise(model, sched, 400, 9), 400)   # exact samples
    held = protocol.feature_moments(identity_extractor(64), images, "other samples")
    kw = dict(num_samples=300, seed=5, batch_size=300, final_data=(x_T, ref), focus=("s",), resamples=30)
    rows, info = R.final_evaluation(model, sched, plans, held_out=held, **kw)
    c = info["reference_heldout"]
    r64, h64 = ref.reshape(300, -1).astype(np.float64), images.reshape(400, -1).astype(np.float64)
    c1, c2 = np.cov(r64, rowvar=False), np.cov(h64, rowvar=False)
    want = float(np.sum((r64.mean(0) - h64.mean(0)) ** 2) + np.trace(c1 + c2)
                 - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
    assert c["plan"]["value"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    bases = [r for r in rows if r["solver"] != "s"]
    best = min(bases, key=lambda r: r["heldout_fd"])
    assert c["baseline_name"] == best["solver"] and c["baseline"]["value"] == pytest.approx(best["heldout_fd"])
    assert c["ratio"]["value"] == pytest.approx(best["heldout_fd"] / want, rel=1e-6)
    assert c["plan"]["n"] == 300 and c["plan"]["resamples"] == 30
    # the exact reference is closer to other exact samples than 3-step plans are
    assert c["ratio"]["low"] > 1
    assert "reference_heldout" not in R.final_evaluation(model, sched, plans, **kw)[1]


def test_final_evaluation_judges_held_out_fd_in_every_judge_given():
    """``judges`` adds one held-out metric per extra feature space: ``heldout_fd[name]`` with its own
    best baseline, comparison and reference-solve comparison, each equal to what a call judging in
    that space alone gives on the same noise and bootstrap rows; the primary ``heldout_fd`` is
    unchanged by the extra judge; a name with brackets is refused by name."""
    from stepwise import denoisers
    from stepwise.evaluation import identity_extractor
    from stepwise.evaluation.features import FeatureExtractor, identity_features
    from stepwise.search import run as R

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    grid = lambda kind, n: schedules.discretize(kind, n, sched)
    plans = {"s": solvers.ipndm(grid("time_quadratic", 3), order=3),
             "ddim/time_uniform": solvers.ddim(grid("time_uniform", 3)),
             "dpm(2)/logsnr": solvers.dpm_solver_pp(grid("logsnr", 3), order=2),
             "unipc(2)/time_uniform": solvers.unipc(grid("time_uniform", 3), order=2)}
    x_T = R.final_noise(model, sched, 300, 5)
    ref = R.reference_endpoints(model, sched, x_T, 300)
    images = R.reference_endpoints(model, sched, R.final_noise(model, sched, 400, 9), 400)
    first = protocol.feature_moments(identity_extractor(64), images, "identity")
    squares = FeatureExtractor("squares", lambda params, b: identity_features(b) ** 2, {}, 64, (64,))
    second = protocol.feature_moments(squares, images, "squares")
    kw = dict(num_samples=300, seed=5, batch_size=300, final_data=(x_T, ref), focus=("s",), resamples=30)
    rows, both = R.final_evaluation(model, sched, plans, held_out=first, judges={"sq": second}, **kw)
    _, alone_first = R.final_evaluation(model, sched, plans, held_out=first, **kw)
    rows2, alone_second = R.final_evaluation(model, sched, plans, held_out=second, **kw)
    got = both["comparisons"]["s"]
    assert got["heldout_fd"] == alone_first["comparisons"]["s"]["heldout_fd"]
    want = dict(alone_second["comparisons"]["s"]["heldout_fd"], metric="heldout_fd[sq]")
    assert got["heldout_fd[sq]"] == want and want["baseline"] != got["heldout_fd"]["baseline"]
    assert got["heldout_fd[sq]"]["baseline_name"] == min(
        (r for r in rows2 if r["solver"] != "s"), key=lambda r: r["heldout_fd"])["solver"]
    assert [r["heldout_fd[sq]"] for r in rows] == [r["heldout_fd"] for r in rows2]
    assert both["reference_heldout"] == alone_first["reference_heldout"]
    ref_sq, ref_alone = both["reference_by_judge"]["sq"], alone_second["reference_heldout"]
    assert ref_sq == dict(ref_alone, metric="heldout_fd[sq]")
    assert "reference_by_judge" not in alone_first
    with pytest.raises(ValueError, match=r"judges: name 'a\[1\]'"):
        R.final_evaluation(model, sched, plans, held_out=first, judges={"a[1]": second}, **kw)
