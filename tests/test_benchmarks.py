"""The benchmark scripts that produce the search and learned-plans tables run end to end on the
exact mixture; the learned-plans one resumes without redoing work and refuses kept plans of other
settings."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_search_benchmark_compares_every_seed_with_the_named_best_baseline(tmp_path, capsys):
    bench = _script("search_gmm")
    assert bench.main(["--nfes", "3", "--seeds", "0", "1", "--generations", "1", "--search-samples", "64",
                       "--final-samples", "200", "--resamples", "10", "--final-top-baselines", "4",
                       "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    r = json.loads((tmp_path / "results.json").read_text())["3"]
    assert [run["seed"] for run in r["runs"]] == [0, 1] and r["final_samples"] == 200
    assert len({run["search_noise_seed"] for run in r["runs"]}) == 2 and r["final_seed"] not in (0, 1)
    assert r["baselines"] > 4                       # the 4 best presets + their GITS-node versions
    for run in r["runs"]:
        head = run["comparisons"][r["headline"]]
        assert head["baseline_name"] and head["ratio"]["low"] <= head["ratio"]["high"]
        assert head["ratio_text"] in table
        assert head["ratio_inf_text"] in table          # the bias-extrapolated paired ratio has its row
    assert "frechet_to_reference (bias-extrapolated)" in table and "excess (bias-extrapolated)" not in table
    assert r["ratio_inf_over_seeds"]["n_seeds"] + sum(
        run["comparisons"][r["headline"]]["ratio_inf"]["lower_bound_only"] for run in r["runs"]) == 2
    assert (tmp_path / "final_200_20261201.npz").exists()


@pytest.mark.slow
def test_learned_benchmark_runs_a_search_and_a_learned_arm_then_resumes(tmp_path, capsys):
    bench = _script("learned_gmm")
    common = ["--nfes", "3", "--seeds", "0", "--final-samples", "200", "--resamples", "10", "--search-samples", "64",
              "--gradient-samples", "16", "--final-top-baselines", "4", "--out", str(tmp_path)]
    assert bench.main(["--arms", "dp", *common]) == 0
    first = json.loads((tmp_path / "results.json").read_text())["3"]
    capsys.readouterr()

    # a rerun asking for another arm evaluates it beside the kept one on the same final noise
    args = ["--arms", "predictor", *common]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    r = json.loads((tmp_path / "results.json").read_text())["3"]
    assert set(r["arms"]) == {"dp", "predictor"} and r["final_samples"] == 200
    assert r["final_seed"] != 0 and r["baselines"] == 4 and r["tuned_baselines"] >= 1
    assert r["arms"]["dp"]["runs"][0]["comparisons"] == first["arms"]["dp"]["runs"][0]["comparisons"]
    for arm in ("dp", "predictor"):
        run = r["arms"][arm]["runs"][0]
        assert run["seed"] == 0 and run["settings"] == {"search_samples": 64, "gradient_samples": 16,
                                                        "batch_size": 64}
        head = run["comparisons"][r["headline"]]
        assert head["baseline_name"] and head["ratio"]["low"] <= head["ratio"]["high"]
        assert f"| 3 | {r['headline']} | {head['baseline_name']} |" in table
    assert r["arms"]["predictor"]["runs"][0]["evaluations"] > 0

    # a rerun of either command redoes nothing: the results file is left as it was
    before = (tmp_path / "results.json").stat().st_mtime_ns
    for arms in (["dp"], ["predictor"], ["dp", "predictor"]):
        assert bench.main(["--arms", *arms, *common]) == 0
    assert (tmp_path / "results.json").stat().st_mtime_ns == before

    # the mode-switch split reads the same directory: every kept plan and the best preset by RMSE
    capsys.readouterr()
    assert _script("mode_switches").main(["--out", str(tmp_path)]) == 0
    split = capsys.readouterr().out
    assert "NFE 3: n = 200" in split and "| best preset by RMSE: " in split
    assert "| dp, seed 0 | " in split and "| predictor, seed 0 | " in split
    with pytest.raises(SystemExit, match=r"--nfes: 4 is not in .*allowed: \[3\]"):
        _script("mode_switches").main(["--out", str(tmp_path), "--nfes", "4"])

    # results and kept plans of other search settings are refused by file, not silently mixed in
    other = [a if a != "64" else "32" for a in args]
    with pytest.raises(SystemExit, match=r"results\.json: NFE 3 was evaluated with search settings"):
        bench.main(other)
    (tmp_path / "results.json").unlink()
    with pytest.raises(SystemExit, match=r"nfe3-predictor-0\.rec\.json: found with search settings"):
        bench.main(other)


def test_sampler_profile_counts_each_op_by_its_self_time():
    """A conditional's event spans the ops of its branch: they are its children and count once.
    Hand-made events on one thread: cond [0, 100) holds a [10, 40) and b [50, 70), b holds c
    [55, 60); d [120, 130) follows. Self times: cond 100 - 30 - 20 = 50, a 30, b 20 - 5 = 15, c 5, d 10."""
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        prof = _script("sampler_profile")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    events = [(120, 10, "d"), (0, 100, "cond"), (50, 20, "b"), (10, 30, "a"), (55, 5, "c")]
    got = {name: own for _, name, own in prof.self_times(events)}
    assert got == {"cond": 50, "a": 30, "b": 15, "c": 5, "d": 10}
    assert prof.grouped({"ynn_fusion.2": 1.0, "ynn_fusion": 2.0, "cond.8.clone.3": 0.5, "cond.78": 1.5}) == \
        {"ynn_fusion": 3.0, "cond": 2.0}


def test_skip_benchmark_front_keeps_a_baseline_name_found_at_both_nfes(capsys):
    """A preset name (e.g. UniPC-2 / time-quadratic + AFS) can be the best baseline at NFE B and at
    2B; the Pareto front must hold both plans (names do not carry the NFE), and (f)'s comparison with
    T-Stitch gets its own table."""
    bench = _script("skip_search")
    iv = {"value": 1.0, "low": 0.5, "high": 1.5}
    comp = lambda name: {"plan": iv, "baseline": iv, "baseline_name": name, "ratio_text": "1x"}  # noqa: E731
    row = lambda solver, nfe, cost, fd: {"solver": solver, "nfe": nfe, "cost": cost,  # noqa: E731
                                         "frechet_to_reference": fd}
    results = {"budget": 5, "final_samples": 10, "final_seed": 1,
               "rows_nfe5": [row("f/seed0", 7, 4.3, 0.3), row("unipc/tq", 5, 5.0, 0.07), row("b/k3", 6, 4.2, 0.25)],
               "rows_nfe10": [row("f/seed0", 7, 4.3, 0.3), row("unipc/tq", 10, 10.0, 0.02), row("ddim/tu", 10, 10.0, 0.5)],
               "comparisons": {"vs_best_full_nfe5": {"f/seed0": comp("unipc/tq")},
                               "vs_best_full_nfe10": {"f/seed0": comp("unipc/tq")},
                               "vs_best_tstitch": {"f/seed0": comp("b/k3")}}}
    bench.print_tables(results)
    out = capsys.readouterr().out
    front = out.split("Pareto front")[1]
    assert "| unipc/tq | 5 | 5.000 |" in front and "| unipc/tq | 10 | 10.000 |" in front
    assert "| b/k3 | 6 | 4.200 |" in front and "f/seed0" not in front and "ddim/tu" not in front
    assert "best T-Stitch plan (b)" in out


def test_search_time_counts_until_the_first_generation_holding_the_final_best():
    """Time to the plan = setup + the history's wall time at the FIRST generation whose best equals
    the final best (later generations that keep it do not count), not the search's end."""
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        bench = _script("search_time")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    hist = [{"best": 0.5, "wall_s": 10.0}, {"best": 0.2, "wall_s": 20.0}, {"best": 0.1, "wall_s": 30.0},
            {"best": 0.1, "wall_s": 40.0}]
    assert bench.time_to_plan({"setup_s": 5.0, "history": hist}) == 35.0
    assert bench.time_to_plan({"history": hist[:2]}) == 20.0     # an old search.json without setup_s


def test_learned_benchmark_records_the_validation_path_of_a_gradient_run():
    """The kept step is the FIRST step with the lowest validation value (learn_nodes keeps a step
    only when it is strictly better), and a DP run (no descent) records nothing."""
    bench = _script("learned_gmm")
    hist = [{"step": 0, "train": 3.0, "validation": 2.0}, {"step": 10, "train": 2.5, "validation": 1.0},
            {"step": 20, "train": 2.0, "validation": 1.5}, {"step": 30, "train": 4.0, "validation": 1.0}]
    info = {"wall_s": 12.5, "resumed_at": None, "loss": "rmse", "history": hist}
    rec = bench.descent_record(info)
    assert rec["validation"] == {"start": 2.0, "best": 1.0, "best_step": 10}
    assert rec["train"] == {"start": 3.0, "end": 4.0} and rec["loss"] == "rmse" and rec["descent_wall_s"] == 12.5
    assert bench.descent_record({"grid": 64}) == {}


def test_learned_benchmark_evaluates_again_only_what_its_results_lack(capsys):
    """An NFE is evaluated again when an arm / seed or the final noise differs, or when held-out data
    is given and the results lack the reference solve's own held-out comparison; the table then
    prints that comparison per NFE."""
    bench = _script("learned_gmm")
    jobs = {"dp": [0, 1]}
    done = {"final_samples": 200}
    assert not bench.needs_evaluation(done, jobs, {"dp": [0, 1]}, 200, held_out=False)
    assert bench.needs_evaluation(done, jobs, {"dp": [0]}, 200, held_out=False)
    assert bench.needs_evaluation(done, jobs, jobs, 500, held_out=False)
    assert bench.needs_evaluation(done, jobs, jobs, 200, held_out=True)
    ref = {"metric": "heldout_fd", "plan": {"value": 31.0, "low": 29.0, "high": 33.0, "n": 200, "resamples": 10},
           "baseline_name": "unipc(order=3)/time_quadratic+afs",
           "baseline": {"value": 20.0, "low": 18.0, "high": 22.0, "n": 200, "resamples": 10},
           "ratio_text": "0.645x [0.6, 0.7]"}
    assert not bench.needs_evaluation({**done, "reference_heldout": ref}, jobs, jobs, 200, held_out=True)
    _script("search_gmm").print_reference_heldout({"6": {"nfe": 6}, "4": {"nfe": 4, "reference_heldout": ref}})
    out = capsys.readouterr().out
    assert "- NFE 4: heldout_fd: reference 31 [29, 33] vs best baseline unipc(order=3)/time_quadratic+afs" in out
    assert "ratio 0.645x [0.6, 0.7]" in out and "NFE 6" not in out


def test_learned_benchmark_judges_held_out_fd_in_the_judge_nets_space(tmp_path):
    """--judge-feature-net: the held-out moments are the test digits' in the JUDGE net's feature space
    (recomputed here by hand), while the data objective's target stays the training digits in
    --feature-net's space; kept results judged by another net are refused by file, results from
    before the judge was recorded are not, and a judge without --checkpoint is refused by flag."""
    import argparse

    import numpy as np

    from _helpers import train_digits_mlp
    from stepwise.cli import main
    from stepwise.data import load_digits
    from stepwise.evaluation import extract_features, feature_net_extractor, load_feature_net

    model = train_digits_mlp(tmp_path / "m", "train", steps=3)
    nets = [tmp_path / "objective", tmp_path / "judge"]
    for i, net in enumerate(nets):
        assert main(["train-features", "--data", "digits", "--out", str(net), "--steps", "3", "--feature-dim", "8",
                     "--image-size", "8", "--seed", str(i)]) == 0
    a = argparse.Namespace(checkpoint=model, feature_net=str(nets[0]))
    _, held = _script("search_gmm").load_model(a, str(nets[1]), "--judge-feature-net")
    test = load_digits(8, split="test")[0][..., 0]
    in_space = lambda net, images: np.asarray(   # noqa: E731
        extract_features(feature_net_extractor(load_feature_net(str(net))), images), np.float64)
    np.testing.assert_allclose(held.mean, in_space(nets[1], test).mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(held.mean, in_space(nets[0], test).mean(0), rtol=1e-2)   # two different spaces
    with pytest.raises(SystemExit, match="--judge-feature-net needs --checkpoint"):
        _script("search_gmm").load_model(argparse.Namespace(checkpoint="", feature_net=""), "x",
                                         "--judge-feature-net")
    bench = _script("learned_gmm")
    bench.check_judge(tmp_path / "results.json", {}, "/j", 4, "/f")                  # nothing kept
    bench.check_judge(tmp_path / "results.json", {"judge": "/j"}, "/j", 4, "/f")
    bench.check_judge(tmp_path / "results.json", {"nfe": 4}, "/f", 4, "/f")          # before judges were kept
    with pytest.raises(SystemExit, match=r"results\.json: NFE 4 was judged by the feature net /k, this run by /j"):
        bench.check_judge(tmp_path / "results.json", {"judge": "/k"}, "/j", 4, "/f")
    with pytest.raises(SystemExit, match=r"NFE 4 was judged by the feature net /f, this run by /j"):
        bench.check_judge(tmp_path / "results.json", {"nfe": 4}, "/j", 4, "/f")     # a new judge is not 'done'


def test_comparison_baselines_join_each_objectives_best_without_repeats(monkeypatch):
    """comparison_baselines keeps the ``top`` presets by the search evaluator's score, then adds the
    ``top`` best by each evaluator in ``also`` that are not kept already (in that order); the GITS
    baselines are built from the scores of ALL presets, before that cut."""
    import numpy as np

    from stepwise import schedules
    from stepwise.search.evaluator import baseline_plans

    bench = _script("search_gmm")
    sched = schedules.VPLinear()
    names = [n for n, _ in baseline_plans(4, sched)]
    n = len(names)
    assert n > 8

    class Scored:                      # an evaluator that scores the presets by a fixed vector
        seed = 7

        def __init__(self, values):
            self.values = np.asarray(values, float)

        def score(self, plans):
            assert len(plans) == n
            return self.values

    rng = np.random.default_rng(0)
    teacher, data = rng.permutation(n), rng.permutation(n)
    seen = {}

    def gits(model, sched_, baselines, scores, k, seed, samples):
        seen.update(count=len(baselines), scores=np.asarray(scores), k=k, seed=seed)
        return [("tuned", None)]

    monkeypatch.setattr(bench.learned, "gits_baselines", gits)
    kept, tuned = bench.comparison_baselines(None, sched, 4, Scored(teacher), top=3, also=[Scored(data)])
    by_teacher, by_data = list(np.argsort(teacher)[:3]), list(np.argsort(data)[:3])
    expect = by_teacher + [i for i in by_data if i not in by_teacher]
    assert [name for name, _ in kept] == [names[i] for i in expect]
    assert len({name for name, _ in kept}) == len(kept)
    assert seen == {"count": n, "scores": seen["scores"], "k": 8, "seed": 7} and np.array_equal(seen["scores"], teacher)
    assert tuned == [("tuned", None)]

    overlap = teacher.copy()                 # the data objective ranks the same three best: nothing added
    kept, _ = bench.comparison_baselines(None, sched, 4, Scored(teacher), top=3, also=[Scored(overlap)])
    assert [name for name, _ in kept] == [names[i] for i in by_teacher]
    everything, _ = bench.comparison_baselines(None, sched, 4, Scored(teacher))          # top=0: all presets
    assert [name for name, _ in everything] == names


def test_learned_benchmark_table_names_the_judge_net(capsys):
    """The printed table's footer names the feature net that judged the held-out FD (a results file
    judged by a second net must not read as judged by the search objective's net)."""
    bench = _script("learned_gmm")
    iv = {"value": 6.0, "low": 5.0, "high": 7.0, "n": 200, "resamples": 10}
    comp = {"baseline_name": "ipndm(order=2)/time_uniform+afs", "baseline": iv, "ratio_text": "1.2x [1.1, 1.3]",
            "ratio": {"value": 1.2, "low": 1.1, "high": 1.3, "lower_bound_only": False}}
    run = {"seed": 0, "wall_s": 10.0, "comparisons": {"heldout_fd": comp}}
    r = {"nfe": 4, "final_samples": 200, "final_seed": 5, "bootstrap": {"resamples": 10}, "baselines": 3,
         "tuned_baselines": 1, "headline": "heldout_fd", "arms": {"predictor_data": {"runs": [run]}},
         "model": "m", "held_out": "domain-CNN Fréchet distance to 359 held-out digits test images",
         "judge": "/nets/features_judge"}
    bench.print_table({"4": r}, ["predictor_data"])
    out = capsys.readouterr().out
    assert "| 4 | heldout_fd | ipndm(order=2)/time_uniform+afs | 6 [5, 7] | 1.2x [1.2, 1.2]; per seed 1.2x [1.1, 1.3]" in out
    assert "held-out: domain-CNN Fréchet distance to 359 held-out digits test images, in the feature space of " \
           "/nets/features_judge" in out
    bench.print_table({"4": {**r, "judge": None}}, ["predictor_data"])
    assert "in the feature space of" not in capsys.readouterr().out


@pytest.mark.slow
def test_learned_benchmark_extra_judges_add_a_held_out_metric_per_net(tmp_path, capsys):
    """--extra-judges: the same final evaluation also judges the held-out FD in each extra net
    (heldout_fd[<dir name>] with its own best baseline, and the reference solve's own comparison),
    printed in the table; a rerun with nothing new evaluates nothing again; a rerun that adds a
    judge evaluates again and keeps the first judge's cells; another net under a kept name is refused."""
    from _helpers import train_digits_mlp
    from stepwise.cli import main

    model = train_digits_mlp(tmp_path / "m", "train", steps=3)
    nets = {name: tmp_path / name for name in ("objective", "judge_a", "judge_b")}
    for i, net in enumerate(nets.values()):
        assert main(["train-features", "--data", "digits", "--out", str(net), "--steps", "3", "--feature-dim", "8",
                     "--image-size", "8", "--seed", str(i)]) == 0
    bench = _script("learned_gmm")
    common = ["--checkpoint", model, "--feature-net", str(nets["objective"]), "--nfes", "3", "--seeds", "0",
              "--arms", "dp", "--final-samples", "100", "--resamples", "10", "--search-samples", "32",
              "--gradient-samples", "8", "--final-top-baselines", "2", "--batch-size", "100", "--out", str(tmp_path / "o")]
    assert bench.main([*common, "--extra-judges", str(nets["judge_a"])]) == 0
    table = capsys.readouterr().out
    r = json.loads((tmp_path / "o" / "results.json").read_text())["3"]
    comps = r["arms"]["dp"]["runs"][0]["comparisons"]
    assert {"heldout_fd", "heldout_fd[judge_a]"} <= set(comps)
    assert comps["heldout_fd[judge_a]"]["baseline"] != comps["heldout_fd"]["baseline"]   # another feature space
    assert r["extra_judges"] == {"judge_a": str(nets["judge_a"].resolve())}
    assert set(r["reference_by_judge"]) == {"judge_a"} and "reference_heldout" in r
    assert "| 3 | heldout_fd[judge_a] |" in table and comps["heldout_fd[judge_a]"]["ratio_text"] in table

    assert bench.main([*common, "--extra-judges", str(nets["judge_a"])]) == 0      # nothing new: kept
    assert "baselines ranked" not in capsys.readouterr().out
    assert bench.main([*common, "--extra-judges", str(nets["judge_a"]), str(nets["judge_b"])]) == 0
    r2 = json.loads((tmp_path / "o" / "results.json").read_text())["3"]
    comps2 = r2["arms"]["dp"]["runs"][0]["comparisons"]
    assert comps2["heldout_fd[judge_a]"] == comps["heldout_fd[judge_a]"] and "heldout_fd[judge_b]" in comps2
    other = tmp_path / "elsewhere" / "judge_a"
    assert main(["train-features", "--data", "digits", "--out", str(other), "--steps", "3", "--feature-dim", "8",
                 "--image-size", "8", "--seed", "5"]) == 0
    with pytest.raises(SystemExit, match=r"judged as heldout_fd\[judge_a\] by .*, this run by .*elsewhere"):
        bench.main([*common, "--extra-judges", str(other)])
    with pytest.raises(SystemExit, match="--extra-judges: directory names must differ"):
        bench.main([*common, "--extra-judges", str(nets["judge_a"]), str(other)])
