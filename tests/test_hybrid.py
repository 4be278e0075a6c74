"""The hybrid (memetic) strategy and resumable gradient runs.

* Memetic on a constructed problem: refined elites are evaluated and enter the population, each
  genome is refined once, the run is deterministic, a save/restore in the middle continues exactly,
  and it beats the same evolution without refinement.
* ``node_refiner`` on the exact mixture keeps every decision and does not worsen validation error.
* A gradient run SIGKILLed mid-way resumes from its orbax checkpoint to the same plan bit for bit.
* ``stepwise search --config.search.strategy=hybrid`` end to end.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from _helpers import sigkill_at_checkpoint
from stepwise import samplers, schedules, solvers
from stepwise.search.space import SearchSpace, decode, encode, genome_hash, with_nodes
from stepwise.search.state import restore_state, save_state
from stepwise.search.strategies import Evolution, EvolutionOptions, Memetic, run_generations

ROOT = Path(__file__).resolve().parent.parent
SCHED = schedules.VPLinear()
SPACE = SearchSpace(nfe=4, schedule=SCHED, choices=(("order", (1, 2, 3)),), allow_analytic_first=False,
                    p_structure=0.0)
TARGET = np.array([0.1, 0.2, 0.3, 0.4])          # the optimum's node increments (u coordinate)
OPTS = EvolutionOptions(population=6, top_k=3, children=4, timesteps_only=1, generations=6)


def _score(genomes):
    """A constructed objective: distance of the node increments to TARGET (plus the order's share)."""
    return [float(np.sum((g.incr - TARGET) ** 2) + 1e-3 * np.sum(g.cols["order"])) for g in genomes]


def _halfway(g):
    """A deterministic local search: node increments half way to TARGET."""
    return g.replace(incr=0.5 * (g.incr + TARGET))


def _initial():
    return [encode(solvers.build_preset("dpm_solver_pp", 4, SCHED, "time_uniform", order=2), SPACE)]


def _run(strategy, generations, st=None):
    st = st if st is not None else strategy.init(jax.random.key(0), _initial())
    return run_generations(strategy, st, _score, generations)


def test_memetic_refines_elites_once_and_they_enter_the_population():
    calls = []
    memetic = Memetic(Evolution(SPACE, OPTS), lambda g: calls.append(genome_hash(g, SPACE)) or _halfway(g), top=2)
    st = _run(memetic, OPTS.generations)
    assert len(calls) == len(set(calls)) == len(st.refined) > 0           # each elite refined once
    refined = {genome_hash(_halfway(g), SPACE) for g, _ in st.archive.values()} & set(st.archive)
    assert refined                                                          # refined genomes were evaluated
    assert any(genome_hash(g, SPACE) in refined for g, _ in st.population)  # ... and survive selection
    plain = _run(Evolution(SPACE, OPTS), OPTS.generations)
    assert st.best[1] < 0.5 * plain.best[1]                                 # local search pays off here
    again = _run(Memetic(Evolution(SPACE, OPTS), _halfway, top=2), OPTS.generations)
    assert [s for _, s in again.population] == [s for _, s in st.population]
    assert again.refined == st.refined


def test_memetic_resumes_from_a_saved_generation(tmp_path):
    memetic = Memetic(Evolution(SPACE, OPTS), _halfway, top=2)
    full = _run(memetic, OPTS.generations)
    half = _run(memetic, 3)
    save_state(str(tmp_path / "ck"), half)
    template = memetic.init(jax.random.key(0), _initial())
    restored, _ = restore_state(str(tmp_path / "ck"), template)
    assert restored.refined == half.refined and restored.generation == half.generation
    resumed = _run(memetic, OPTS.generations, restored)
    assert [(genome_hash(g, SPACE), s) for g, s in resumed.population] == \
        [(genome_hash(g, SPACE), s) for g, s in full.population]
    assert resumed.refined == full.refined


def test_memetic_refinement_obeys_the_constraint():
    """A refined genome the constraint rejects is dropped, never evaluated."""
    from stepwise.search.strategies import Hooks

    reject = lambda g: None if g.incr[0] < 0.12 else g  # noqa: E731
    memetic = Memetic(Evolution(SPACE, OPTS, Hooks(constraint=reject)), _halfway, top=2)
    st = _run(memetic, 4)
    assert all(g.incr[0] >= 0.12 for g, _ in st.archive.values())
    assert len(st.refined) > sum(genome_hash(_halfway(g), SPACE) in st.archive for g, _ in st.archive.values())


@pytest.mark.slow
def test_node_refiner_keeps_decisions_and_does_not_worsen_validation(gmm_factory):
    from stepwise.search.learned import GradientOptions, learn_nodes, node_refiner, teacher_data

    model = gmm_factory(3)
    space = SearchSpace(nfe=4, schedule=SCHED)
    g = encode(solvers.build_preset("unipc", 4, SCHED, "time_uniform", order=2), space)
    o = GradientOptions(steps=10, train_samples=64, val_samples=64, val_every=5)
    teacher = teacher_data(model, SCHED, o)
    r = node_refiner(model, SCHED, space, o, teacher=teacher)(g)
    assert r.cols.keys() == g.cols.keys()
    for c in g.cols:
        np.testing.assert_array_equal(r.cols[c], g.cols[c])
    assert not np.allclose(r.incr, g.incr) and np.all(r.incr >= space.min_gap - 1e-12)
    plan, refined = decode(g, space), decode(r, space)
    refined.validate(SCHED)
    assert refined.nfe() == plan.nfe() == 4
    rmse = lambda p: float(np.sqrt(np.mean((np.asarray(samplers.sample(model, SCHED, p, teacher.x_val))  # noqa: E731
                                            - np.asarray(teacher.val)) ** 2)))
    assert rmse(refined) <= rmse(plan) * (1 + 1e-4)
    # the refined genome holds exactly the nodes learn_nodes finds in the space's coordinate and floor
    import dataclasses
    direct, _ = learn_nodes(model, SCHED, plan, dataclasses.replace(o, min_gap=space.min_gap), teacher=teacher)
    np.testing.assert_allclose(np.asarray(refined.ts), np.asarray(direct.ts), rtol=1e-5)
    again = decode(with_nodes(g, np.asarray(direct.ts, np.float64), space), space)
    np.testing.assert_allclose(np.asarray(again.ts), np.asarray(refined.ts), rtol=1e-6)


def test_gradient_checkpoint_of_another_plan_is_refused(tmp_path, gmm_factory):
    from stepwise.search.learned import GradientOptions, learn_nodes, teacher_data

    model = gmm_factory(2)
    o = GradientOptions(steps=2, train_samples=8, val_samples=8, val_every=1)
    teacher = teacher_data(model, SCHED, o)
    a = solvers.build_preset("ddim", 3, SCHED, "logsnr")
    _, first = learn_nodes(model, SCHED, a, o, teacher=teacher, checkpoint_dir=str(tmp_path / "g"))
    again, info = learn_nodes(model, SCHED, a, o, teacher=teacher, checkpoint_dir=str(tmp_path / "g"))
    assert info["history"][-1]["step"] == 2                 # finished run: restored, nothing redone
    assert first["resumed_at"] is None and info["resumed_at"] == 2
    # the resumed run reports the first run's descent time too, not only its own (milliseconds)
    assert first["wall_s"] > 0 and info["wall_s"] >= 0.9 * first["wall_s"]
    with pytest.raises(ValueError, match="gradient checkpoint .* another start plan"):
        learn_nodes(model, SCHED, solvers.build_preset("ddim", 3, SCHED, "time_uniform"), o, teacher=teacher,
                    checkpoint_dir=str(tmp_path / "g"))


# ----------------------------------------------------------------------------- command line
GRADIENT = ["--config", str(ROOT / "configs" / "search_digits_gmm.py"), "--config.nfe=3",
            "--config.search.strategy=gradient", "--config.search.gradient_steps=60",
            "--config.search.gradient_samples=64", "--config.search.search_samples=64",
            "--config.search.batch_size=64", "--config.search.final_samples=128",
            "--config.search.final_top_baselines=3", "--config.search.final_reference=False",
            "--config.search.final_tuned_baselines=0"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _search(args, workdir):
    return [sys.executable, "-m", "stepwise", "search", *args, "--workdir", str(workdir)]


@pytest.mark.slow
def test_gradient_run_resumes_after_sigkill_to_the_same_plan(tmp_path, capsys):
    """The uninterrupted and the resumed run go through the entry point's function in this process;
    the killed one is a real process, SIGKILLed between two checkpoints."""
    from stepwise.cli import main

    full = tmp_path / "full"
    assert main(["search", *GRADIENT, "--workdir", str(full)]) == 0
    wd = tmp_path / "killed"
    killed_at = sigkill_at_checkpoint(_search(GRADIENT, wd), wd / "gradient", 20, 60, cwd=ROOT, env=_env())
    assert killed_at is not None, "the gradient run finished or stalled before it could be killed"
    assert not (wd / "schedule.json").exists()
    capsys.readouterr()
    assert main(["search", *GRADIENT, "--workdir", str(wd)]) == 0
    assert "gradient: resumed at step" in capsys.readouterr().out
    a = json.loads((full / "schedule.json").read_text())
    b = json.loads((wd / "schedule.json").read_text())
    assert b["ts"] == a["ts"] and b["steps"] == a["steps"]
    ha = json.loads((full / "search.json").read_text())["learned"]["history"]
    hb = json.loads((wd / "search.json").read_text())["learned"]["history"]
    assert hb == ha and len(ha) == 7             # step 0 and every 10th of 60


@pytest.mark.slow
def test_hybrid_search_through_the_command_line(tmp_path, capsys):
    from stepwise.search.schedule_file import load_plan

    args = ["--config", str(ROOT / "configs" / "search_digits_gmm.py"), "--config.nfe=4",
            "--config.search.strategy=hybrid", "--config.search.hybrid_base=evolution",
            "--config.search.hybrid_top=2", "--config.search.hybrid_steps=5", "--config.search.generations=3",
            "--config.search.population=6", "--config.search.top_k=3", "--config.search.children=4",
            "--config.search.timesteps_only_generations=1", "--config.search.search_samples=64",
            "--config.search.batch_size=64", "--config.search.gradient_steps=20",
            "--config.search.gradient_samples=64", "--config.search.final_samples=256",
            "--config.search.final_top_baselines=3", "--config.search.final_tuned_baselines=1",
            "--config.search.gradient_learn=nodes+corrections", "--config.search.gradient_corrections_lr=0.02"]
    from stepwise.cli import main

    capsys.readouterr()
    assert main(["search", *args, "--workdir", str(tmp_path / "h")]) == 0
    printed = capsys.readouterr().out
    summ = json.loads((tmp_path / "h" / "search.json").read_text())
    assert summ["strategy"] == "hybrid" and summ["refined_elites"] >= 2
    r = summ["refinement"]
    assert r["kept"] == (r["search_score_after"] <= r["search_score_before"])
    assert summ["search_score"] == min(r["search_score_before"], r["search_score_after"])
    # the record names the loss it validated (the objective's: teacher_frechet -> frechet), not a fixed one
    assert r["loss"] == "frechet" and r["best_validation"] == min(h["validation"] for h in r["history"])
    assert "final refinement: search score" in printed
    assert summ["comparisons"]["frechet_to_reference"]["plan"]["n"] == 256
    plan = load_plan(tmp_path / "h" / "schedule.json", SCHED)
    assert plan.nfe() == 4
    # the memetic steps learn nodes only (a genome holds no corrections); the final refinement learns
    # corrections too, and the schedule file carries them exactly when that refinement was kept
    assert np.any(np.asarray(plan.corrections) != 0) == r["kept"]
    assert ("corrections" in json.loads((tmp_path / "h" / "schedule.json").read_text())) == r["kept"]
