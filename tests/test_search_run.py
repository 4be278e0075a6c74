"""End to end: a tiny search through the command line improves on its initial population, and a
search SIGKILLed mid-run and restarted with the same command ends with the same result."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from _helpers import sigkill_at_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--config", str(ROOT / "configs" / "search_digits_gmm.py"), "--config.nfe=3",
        "--config.search.generations=8", "--config.search.search_samples=64", "--config.search.batch_size=64",
        "--config.search.population=6", "--config.search.top_k=3", "--config.search.children=4",
        "--config.search.screen=16", "--config.search.predictor_warmup=8", "--config.search.predictor_train_steps=20",
        "--config.search.predictor_hidden=16", "--config.search.timesteps_only_generations=1",
        "--config.search.final_samples=128", "--config.search.final_top_baselines=3",
        "--config.search.final_tuned_baselines=1", "--config.search.final_reference=False"]   # [:-1]: with a reference


def _cmd(workdir):
    return [sys.executable, "-m", "stepwise", "search", *TINY, "--workdir", str(workdir)]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _result(workdir):
    sched = json.loads((Path(workdir) / "schedule.json").read_text())
    summ = json.loads((Path(workdir) / "search.json").read_text())
    return sched, summ


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The search through the entry point's function, in this process (the killed run below is a real
    process)."""
    from stepwise.cli import main

    wd = tmp_path_factory.mktemp("search") / "full"
    assert main(["search", *TINY, "--workdir", str(wd)]) == 0
    return wd


@pytest.mark.slow
def test_tiny_search_improves_on_initial_population(uninterrupted):
    sched, summ = _result(uninterrupted)
    initial_best = summ["history"][0]["best"]       # generation 0 = the initial population
    assert summ["search_score"] < initial_best
    assert sched["nfe"] == 3 and sched["version"] == 1
    assert sched["score"]["search_value"] == summ["search_score"]
    assert summ["evaluations"] > summ["history"][0]["evaluations"]
    assert 0 < summ["compile_s"] < summ["search_wall_s"]   # compiles in the generations, counted once
    for f in ("report.md", "report.html", "config.json"):
        assert (Path(uninterrupted) / f).exists()
    # the schedule file drives `stepwise sample`
    from stepwise.search.schedule_file import load_plan
    assert load_plan(Path(uninterrupted) / "schedule.json").nfe() == 3


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_result(uninterrupted, tmp_path, capsys):
    from stepwise.cli import main

    wd = tmp_path / "killed"
    killed_at = sigkill_at_checkpoint(_cmd(wd), wd / "checkpoints", 3, poll=0.05, cwd=ROOT, env=_env())
    assert killed_at is not None, "the search finished or stalled before it could be killed"
    assert not (wd / "schedule.json").exists()
    capsys.readouterr()
    assert main(["search", *TINY, "--workdir", str(wd)]) == 0
    assert "resumed from generation" in capsys.readouterr().out
    a_sched, a_summ = _result(uninterrupted)
    b_sched, b_summ = _result(wd)
    assert b_summ["resumed_from"] is not None and b_summ["resumed_from"] >= killed_at
    assert b_sched["steps"] == a_sched["steps"] and b_sched["ts"] == a_sched["ts"]
    assert b_summ["search_score"] == a_summ["search_score"]
    assert b_summ["evaluations"] == a_summ["evaluations"]
    assert [h["best"] for h in b_summ["history"]] == [h["best"] for h in a_summ["history"]]


def test_search_on_a_network_without_exact_moments(tmp_path):
    """A trained network has no moments(): the search runs on a teacher objective and the final
    comparison ranks by the paired Fréchet distance to the reference solve of the same fresh noise;
    the exact-moment objective and a final comparison without reference are refused by name."""
    import jax

    from stepwise.denoisers.mlp import MLP, mlp_kwargs
    from stepwise.denoisers.unet import FlaxDenoiser, init_params
    from stepwise.schedules import VPLinear
    from stepwise.cli.options import run_search_section, section

    module = MLP(out_dim=16, **mlp_kwargs("small"))
    params = jax.tree.map(lambda a: a + 0.05, init_params(module, jax.random.key(0), (16,)))
    model = FlaxDenoiser(module, params, "eps", VPLinear(), (16,))
    settings = dict(objective="teacher_rmse", generations=2, search_samples=32, batch_size=32, population=4,
                    top_k=2, children=3, screen=8, predictor_warmup=4, predictor_train_steps=5,
                    predictor_hidden=8, timesteps_only_generations=1, final_samples=64,
                    final_top_baselines=2, final_tuned_baselines=1)
    summ = run_search_section(section("search", settings), model, VPLinear(), 3, tmp_path / "s", log=lambda m: None)
    assert summ["final_key"] == "frechet_to_reference"
    for row in summ["final_table"]:
        assert "frechet" not in row and "excess" not in row
        assert row["rmse_to_reference"] >= 0 and row["frechet_to_reference"] >= 0
    # the baselines are in the initial population: the searched plan scores no worse on the search noise
    assert summ["final_table"][0]["search_score"] <= min(r["search_score"] for r in summ["final_table"][1:])
    assert (tmp_path / "s" / "report.html").exists()
    with pytest.raises(ValueError, match="objective 'frechet' needs a model with exact moments"):
        run_search_section(section("search", {**settings, "objective": "frechet"}), model, VPLinear(), 3,
                           tmp_path / "f", log=lambda m: None)
    with pytest.raises(ValueError, match="search.final_reference=True"):
        run_search_section(section("search", {**settings, "final_reference": False}), model, VPLinear(), 3,
                           tmp_path / "g", log=lambda m: None)
    assert not (tmp_path / "g" / "checkpoints").exists()   # refused before any search work


@pytest.mark.slow
def test_search_on_a_trained_network_is_also_scored_on_held_out_digits(tmp_path, capsys):
    """search.feature_net: the final comparison adds the domain-feature Fréchet distance to the
    held-out test digits (best baseline chosen on it, paired interval), recomputed here by hand for
    the searched plan; a model trained on all digits (test split included) is refused by name."""
    import jax
    import numpy as np

    from _helpers import train_digits_mlp
    from stepwise import samplers
    from stepwise.cli import main
    from stepwise.data import load_digits
    from stepwise.evaluation import extract_features, feature_net_extractor, load_feature_net, sample_frechet
    from stepwise.schedules import VPLinear
    from stepwise.search.schedule_file import load_plan
    from stepwise.training import load_denoiser

    held, seen = train_digits_mlp(tmp_path / "m", "train"), train_digits_mlp(tmp_path / "all", "all")
    net = tmp_path / "net"
    assert main(["train-features", "--data", "digits", "--out", str(net), "--steps", "40", "--feature-dim", "16"]) == 0
    args = [*TINY[:-1], "--config.search.generations=1", "--config.search.objective=teacher_frechet",
            "--config.model.kind=checkpoint", f"--config.search.feature_net={net}",
            "--config.search.final_tuned_baselines=0"]
    capsys.readouterr()
    assert main(["search", *args, f"--config.model.checkpoint={seen}", "--workdir", str(tmp_path / "no")]) == 2
    assert "config.model.checkpoint" in capsys.readouterr().err and not (tmp_path / "no").exists()
    wd = tmp_path / "s"
    assert main(["search", *args, f"--config.model.checkpoint={held}", "--workdir", str(wd)]) == 0
    summ = json.loads((wd / "search.json").read_text())
    comp = summ["comparisons"]["heldout_fd"]
    assert summ["headline"] == "frechet_to_reference" and comp["plan"]["n"] == 128
    rows = {r["solver"]: r for r in summ["final_table"]}
    assert comp["baseline_name"] == min((n for n in rows if n != "searched"), key=lambda n: rows[n]["heldout_fd"])
    model = load_denoiser(held)
    x_T = np.asarray(jax.random.normal(jax.random.key(summ["final"]["seed"]), (128, 64)) * VPLinear().prior_std(),
                     np.float32)
    x = np.asarray(samplers.sample(model, VPLinear(), load_plan(wd / "schedule.json"), x_T))
    ext = feature_net_extractor(load_feature_net(str(net)))
    h = np.asarray(extract_features(ext, load_digits(8, split="test")[0][..., 0]), np.float64)
    want = sample_frechet(np.asarray(extract_features(ext, x), np.float64), h.mean(0), np.cov(h, rowvar=False))
    assert rows["searched"]["heldout_fd"] == pytest.approx(want, rel=1e-3)
    out = capsys.readouterr().out
    assert "heldout_fd" in out
    # the reference solve itself by held-out FD, against the same best baseline, printed and in the report
    ref = summ["final"]["reference_heldout"]
    assert ref["baseline_name"] == comp["baseline_name"] and ref["plan"]["n"] == 128
    assert "reference solve" in out and "The reference solve itself" in (wd / "report.md").read_text()
    # gradient_loss=features: nodes learned on the paired RMSE in the same feature net's space
    g = tmp_path / "g"
    plain = [a for a in args if not a.startswith(("--config.search.generations", "--config.search.population",
                                                  "--config.search.top_k", "--config.search.children",
                                                  "--config.search.screen", "--config.search.predictor",
                                                  "--config.search.timesteps_only"))]
    assert main(["search", *plain, f"--config.model.checkpoint={held}", "--workdir", str(g),
                 "--config.search.strategy=gradient", "--config.search.gradient_loss=features",
                 "--config.search.gradient_steps=4", "--config.search.gradient_samples=16"]) == 0
    learned = json.loads((g / "search.json").read_text())["learned"]
    assert learned["loss"] == "features" and learned["best_validation"] <= learned["history"][0]["validation"]
    # objective=data_frechet: the search scores against the TRAINING digits in the feature net's space
    # (recomputed by hand for the searched plan on the search noise), then the gradient strategy
    # descends on the same distance
    d = tmp_path / "d"
    assert main(["search", *args, f"--config.model.checkpoint={held}", "--workdir", str(d),
                 "--config.search.objective=data_frechet"]) == 0
    sd = json.loads((d / "search.json").read_text())
    assert sd["objective"] == "data_frechet"
    x_s = np.asarray(jax.random.normal(jax.random.key(sd["seed"]), (64, 64)) * VPLinear().prior_std(),
                     np.float32)
    xs = np.asarray(samplers.sample(model, VPLinear(), load_plan(d / "schedule.json"), x_s))
    tr = np.asarray(extract_features(ext, load_digits(8, split="train")[0][..., 0]), np.float64)
    want = sample_frechet(np.asarray(extract_features(ext, xs), np.float64), tr.mean(0), np.cov(tr, rowvar=False))
    assert sd["final_table"][0]["solver"] == "searched"
    assert sd["final_table"][0]["search_score"] == pytest.approx(want, rel=1e-3)
    gd = tmp_path / "gd"
    assert main(["search", *plain, f"--config.model.checkpoint={held}", "--workdir", str(gd),
                 "--config.search.objective=data_frechet", "--config.search.strategy=gradient",
                 "--config.search.gradient_steps=4", "--config.search.gradient_samples=16"]) == 0
    learned = json.loads((gd / "search.json").read_text())["learned"]
    assert learned["loss"] == "data_frechet" and learned["best_validation"] <= learned["history"][0]["validation"]
