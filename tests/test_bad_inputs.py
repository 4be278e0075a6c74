"""Bad inputs across every command and the public API: a named error (exit 2 / ValueError or
TypeError) within 2 s, before any model is fitted or any result file is written."""
import json
import time

import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.io import LOCK_NAME

GOOD = {"format": "stepwise.schedule", "version": 1, "nfe": 2, "num_steps": 2, "analytic_first": False,
        "ts": [1.0, 0.5, 0.001], "steps": [{"prediction": "data", "order": 1}, {"prediction": "data", "order": 1}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")

    def plan(name, **kw):
        (d / f"{name}.json").write_text(json.dumps({**GOOD, **kw}))
    (d / "empty.json").write_text("")
    (d / "trunc.json").write_text('{"format": "stepwise.schedule", "ts": [1.0, 0.5')
    (d / "list.json").write_text("[1, 2]")
    plan("good")
    plan("nan", ts=[1.0, float("nan"), 0.001])
    plan("domain", ts=[5.0, 0.5, 0.001])
    plan("increasing", ts=[0.5, 1.0, 0.001])
    plan("order", steps=[{"order": 7}, {"order": 1}])
    plan("partial", steps=[{"variant": "bh2"}, {}])
    plan("unknown", steps=[{"variant": "nope"}, {"variant": "bh2"}])
    plan("steps_object", steps={"a": 1})
    plan("nfe_mismatch", nfe=9)
    (d / "pickle.npz").write_text("not a numpy file")
    np.savez(d / "int.npz", samples=np.zeros((10, 64), np.int64))
    np.savez(d / "complex.npz", samples=np.zeros((10, 64), np.complex64))
    np.savez(d / "nokey.npz", other=np.zeros((10, 64)))
    (d / "afile").write_text("x")
    return d


# (command argv with {F} for the fixture directory, regex the message must match)
CLI_CASES = [
    (["sample", "--config.nfe=0"], r"nfe: 0 .*1\.\.1000"),
    (["sample", "--config.nfe=-3"], r"nfe: -3"),
    (["sample", "--config.nfe=1000000000"], r"nfe: 1000000000 .*allowed"),
    (["sample", "--config.order=0"], r"order: .*1\.\.4"),
    (["sample", "--config.order=5"], r"order: .*1\.\.4"),
    (["sample", "--config.solver=nope"], r"solver: unknown preset 'nope'; allowed"),
    (["sample", "--config.discretization=nope"], r"discretize: unknown kind 'nope'; allowed"),
    (["sample", "--config.schedule=nope"], r"schedule: unknown name 'nope'; allowed"),
    (["sample", "--config.guidance=-1"], r"config.guidance=-1.0; allowed"),
    (["sample", "--config.guidance=-1", "--config.model.kind=digits_gmm_conditional"], r"config.guidance"),
    (["sample", "--config.num_samples=0"], r"config.num_samples=0"),
    (["sample", "--config.batch_size=0"], r"config.batch_size=0"),
    (["sample", "--config.model.kind=nope"], r"config.model.kind='nope' .*allowed"),
    (["sample", "--config.model.precision=float16"], r"config.model.precision='float16'; allowed"),
    (["sample", "--config.model.components=0"], r"components: must be >= 1"),
    (["sample", "--config.model.size=7"], r"size must be >= 8"),
    (["sample", "--config.model.covariance=nope"], r"covariance: must be 'full' or 'diag'"),
    (["sample", "--config.threshold=nope"], r"thresholding: unknown kind 'nope'"),
    (["sample", "--config.threshold_ratio=2"], r"thresholding.ratio"),
    (["sample", "--config.label=99", "--config.model.kind=digits_gmm_conditional"], r"config.label=99; allowed"),
    (["sample", "--config.nope=1"], r"bad config or override \(nope\)"),
    (["sample", "--config.nfe=abc"], r"config.nfe=abc"),
    (["sample", "--config.plan={F}/empty.json"], r"empty.json is empty"),
    (["sample", "--config.plan={F}/trunc.json"], r"trunc.json is not valid JSON"),
    (["sample", "--config.plan={F}/list.json"], r"list.json: .*expected a JSON object"),
    (["sample", "--config.plan={F}/nan.json"], r"nan.json: plan.ts: .*non-finite"),
    (["sample", "--config.plan={F}/domain.json"], r"domain.json: plan.ts: .*outside the schedule's domain"),
    (["sample", "--config.plan={F}/increasing.json"], r"increasing.json: plan.ts: .*strictly decreasing"),
    (["sample", "--config.plan={F}/order.json"], r"order.json: plan step 0: order=7 .*allowed"),
    (["sample", "--config.plan={F}/partial.json"], r"partial.json: .*set 'variant' but steps \[1\] do not"),
    (["sample", "--config.plan={F}/unknown.json"], r"unknown.json: variant: unknown value 'nope'; allowed"),
    (["sample", "--config.plan={F}/steps_object.json"], r"steps_object.json: .*list 'steps'"),
    (["sample", "--config.plan={F}/nfe_mismatch.json"], r"nfe_mismatch.json: .*stored nfe 9"),
    (["sample", "--config.plan={F}/missing.json"], r"missing.json does not exist"),
    (["sample", "--workdir", "{F}/afile"], r"workdir: .*afile is a file"),
    (["search", "--config.search.max_order=7"], r"search.max_order: 7 .*1\.\.4"),
    (["search", "--config.search.strategy=nope"], r"search.strategy: unknown 'nope'; allowed"),
    (["search", "--config.search.objective=nope"], r"search.objective: unknown 'nope'; allowed"),
    (["search", "--config.search.population=0"], r"search.population: 0"),
    (["search", "--config.search.predictions=nope"], r"search.predictions: unknown 'nope'"),
    (["search", "--config.search.node_space=nope"], r"search.node_space: 'nope'"),
    (["search", "--config.search.min_gap=-1"], r"min_gap: -1.0 is invalid; allowed"),
    (["search", "--config.search.search_samples=1"], r"search.search_samples: 1 is invalid"),
    (["search", "--config.search.vmap_chunk=0"], r"search.vmap_chunk: 0 is invalid"),
    (["search", "--config.nfe=0"], r"config.nfe must be an integer >= 1"),
    (["search", "--config.search.skip=True"], r"search.skip: model.kind 'digits_gmm' has no skippable units; allowed"),
    (["search", "--config.search.budget=-1"], r"search.budget: -1.0 is invalid; allowed: 0 \(none\) or a cost"),
    (["search", "--config.search.budget=3"], r"search.budget: 3.0 is below nfe=\d+; only plans that skip"),
    (["search", "--config.search.skip_schedule=nope"], r"search.skip_schedule: 'nope' is invalid; allowed: \['joint', 'two_stage'\]"),
    (["search", "--config.search.skip_order=nope"], r"search.skip_order: 'nope' is invalid; allowed: \['sensitivity', 'earliest'\]"),
    (["search", "--config.search.skip_order=earliest"], r"search.skip_order: only used with search.skip=True"),
    (["search", "--config.search.strategy=hybrid", "--config.search.hybrid_base=gradient"],
     r"search.hybrid_base: 'gradient' is invalid; allowed: \['evolution', 'predictor'\]"),
    (["search", "--config.search.strategy=hybrid", "--config.search.hybrid_top=0"],
     r"search.hybrid_top: 0 is invalid; allowed: an integer >= 1"),
    (["search", "--config.search.strategy=hybrid", "--config.search.hybrid_steps=0"],
     r"search.hybrid_steps: 0 is invalid; allowed: an integer >= 1"),
    (["search", "--config.search.hybrid_top=3"], r"search.hybrid_top: only strategy 'hybrid' uses it"),
    (["search", "--config.search.final_extrapolation_draws=-1"],
     r"search.final_extrapolation_draws: -1 is invalid; allowed: 0 \(off\) or a positive integer"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_relax=2"],
     r"search.gradient_relax: 2.0 is invalid; allowed: 0 <= relax < 1"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_corrections_lr=0"],
     r"search.gradient_corrections_lr: 0.0 is invalid; allowed: a positive number"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_lr_schedule=linear"],
     r"search.gradient_lr_schedule: 'linear' is invalid; allowed: \['constant', 'cosine'\]"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_loss=l1"],
     r"search.gradient_loss: 'l1' is invalid; allowed: \['objective', 'rmse', 'frechet', 'features', 'data_frechet'\]"),
    (["search", "--config.search.objective=data_frechet"],
     r"search.objective: 'data_frechet' scores samples against the model's training images in search.feature_net"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_loss=data_frechet"],
     r"search.gradient_loss: 'data_frechet' descends on the training images of objective 'data_frechet'; "
     r"allowed: search.objective='data_frechet'"),
    (["search", "--config.search.strategy=gradient", "--config.search.gradient_loss=features"],
     r"search.gradient_loss: 'features' needs search.feature_net"),
    (["search", "--config.search.strategy=hybrid", "--config.search.hybrid_base=evolution",
      "--config.search.screen=8"], r"search.screen: only strategy 'predictor' \(or 'hybrid' with hybrid_base"),
    (["stitch", "--config.stitch.pair=nope"], r"config.stitch.pair='nope'; allowed"),
    (["stitch", "--config.stitch.cost=nope"], r"config.stitch.cost='nope'; allowed"),
    (["stitch", "--config.stitch.tolerance=-1"], r"config.stitch.tolerance=-1.0 is invalid"),
    (["stitch", "--config.stitch.budgets=a,b"], r"config.stitch.budgets"),
    (["stitch", "--config.nfe=0"], r"nfe: 0"),
    (["stitch", "--config.stitch.search_seeds=a"], r"config.stitch.search_seeds='a'; allowed: comma-separated integers"),
    (["stitch", "--config.stitch.search_seeds=1,1"], r"config.stitch.search_seeds='1,1'; allowed: distinct"),
    (["stitch", "--config.stitch.search_seeds=10007"], r"search_seeds contains the final noise seed 10007"),
    (["stitch", "--config.stitch.feature_net=net"], r"config.stitch.feature_net is for pair=checkpoints"),
    (["stitch", "--config.stitch.tstitch_seeds=-1"], r"config.stitch.tstitch_seeds=-1 is invalid"),
    (["stitch", "--config.stitch.reference_rtol=0"], r"config.stitch.reference_rtol=0.0 is invalid"),
    (["search", "--config.search.feature_net=net"], r"search.feature_net: model.kind 'digits_gmm' is not a trained network"),
    (["search", "--config.model.members=a,b"], r"config.model.members is set, but only `stepwise sample`"),
    (["sample", "--config.model.members=a,b"], r"config.model.members needs config.model.kind='checkpoint'"),
    (["train", "--config.train.steps=0"], r"train.steps: 0 is invalid"),
    (["train", "--config.train.arch=nope"], r"train.arch: 'nope' is invalid; allowed"),
    (["train", "--config.train.dataset=nope"], r"train.dataset: 'nope' is invalid; allowed"),
    (["train", "--config.train.split=test"], r"train.split: 'test' is invalid for dataset 'digits'; allowed"),
    (["evaluate", "--samples", "{F}/missing.npz", "--exact"], r"--samples: file not found"),
    (["evaluate", "--samples", "{F}/pickle.npz", "--exact"], r"--samples: .*pickle.npz' is not a readable NumPy file"),
    (["evaluate", "--samples", "{F}/int.npz", "--exact"], r"dtype int64; allowed"),
    (["evaluate", "--samples", "{F}/complex.npz", "--exact"], r"dtype complex64; allowed"),
    (["evaluate", "--samples", "{F}/nokey.npz", "--exact"], r"has no key 'samples'"),
    (["stats", "--data", "{F}/missingdir", "--out", "{F}/s.npz"], r"data must be one of"),
    (["export", "{F}/empty.json"], r"empty.json is empty"),
    (["export", "{F}/nan.json"], r"nan.json: plan.ts"),
    (["export", "{F}/domain.json"], r"domain.json: plan.ts: .*outside"),
    (["export", "{F}/missing.json"], r"missing.json does not exist"),
    (["export", "{F}/good.json", "--to", "diffusers", "--num-train-timesteps", "0"], r"--num-train-timesteps: 0"),
    (["export", "{F}/good.json", "--to", "k-diffusion", "--out", "{F}/x"], r"--out/--scheduler-config: only used"),
    (["report", "{F}/missingdir"], r"runs: not run directories"),
    (["report", "{F}"], r"runs: none of the run directories holds a metrics.json"),
]
RUN_COMMANDS = ("sample", "search", "stitch", "train")


RUNNER = r"""
import contextlib, io, json, sys, time
from pathlib import Path
from stepwise.cli import main
cases = json.loads(sys.argv[1])
main(cases[0]["warm"])                                  # imports happen once, outside the timed calls
out = []
for c in cases:
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(c["argv"])
    elapsed = time.perf_counter() - t0
    wd = Path(c["workdir"])
    out.append({"rc": rc, "err": err.getvalue(), "elapsed": elapsed,
                "left": sorted(p.name for p in wd.iterdir()) if wd.exists() else []})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cli_results(files, tmp_path_factory):
    """Every CLI case run in ONE fresh process (the commands' imports and state stay out of the
    test process), each timed there; results by case index."""
    import subprocess
    import sys
    root = tmp_path_factory.mktemp("runs")
    cases = []
    for i, (argv, _) in enumerate(CLI_CASES):
        argv = [a.replace("{F}", str(files)) for a in argv]
        workdir = root / f"run{i}"
        if argv[0] in RUN_COMMANDS and "--workdir" not in argv:
            argv = argv[:1] + ["--workdir", str(workdir)] + argv[1:]
        cases.append({"argv": argv, "workdir": str(workdir),
                      "warm": ["sample", "--workdir", str(root / "warm"), "--config.nfe=0"]})
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CLI_CASES)), ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_bad_input(case, cli_results):
    import re
    pattern = CLI_CASES[case][1]
    res = cli_results[case]
    err = res["err"]
    assert res["rc"] == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert res["elapsed"] < 2.0, f"{res['elapsed']:.2f}s"
    assert set(res["left"]) <= {"config.json", LOCK_NAME}, res["left"]   # nothing that locks a corrected rerun


def test_corrected_command_reuses_the_directory_of_a_failed_one(tmp_path):
    import subprocess
    import sys
    wd = str(tmp_path / "run")
    run = lambda *a: subprocess.run([sys.executable, "-m", "stepwise", "sample", "--workdir", wd, *a],
                                    capture_output=True, text=True)
    assert run("--config.model.components=0").returncode == 2
    r = run("--config.nfe=2", "--config.num_samples=64", "--config.batch_size=64", "--config.reference_samples=0")
    assert r.returncode == 0, r.stderr[-2000:]


def _api_cases():
    from stepwise import denoisers, samplers, schedules, solvers
    from stepwise.search.evaluator import Evaluator
    sched = schedules.VPLinear()
    gmm = denoisers.digits_gmm(schedule=sched)
    plan = solvers.build_preset("ddim", 4, sched, "logsnr")
    return [
        (lambda: samplers.sample(gmm, sched, plan, jnp.zeros((3, 65))), ValueError, r"x_T: shape"),
        (lambda: samplers.sample(gmm, sched, plan, jnp.zeros((0, 64))), ValueError, r"x_T: empty batch"),
        (lambda: samplers.sample(gmm, sched, plan, jnp.zeros((64,))), ValueError, r"x_T: expected shape"),
        (lambda: samplers.sample(gmm, sched, plan, jnp.zeros((4, 64)), cond=jnp.zeros(3)), ValueError, r"cond: leading"),
        (lambda: samplers.sample([gmm, gmm], sched, plan.replace(model=jnp.full((4,), 2)), jnp.zeros((2, 64))),
         ValueError, r"model"),
        (lambda: solvers.make_plan(plan.ts, variant="nope"), ValueError, r"variant: unknown value 'nope'; allowed"),
        (lambda: solvers.build_preset("nope", 4, sched), ValueError, r"solver: unknown preset"),
        (lambda: solvers.build_preset("ddim", 0, sched), ValueError, r"nfe: 0"),
        (lambda: solvers.build_preset("dpm_solver_pp", 4, sched, order=9), ValueError, r"order"),
        (lambda: schedules.by_name("nope"), ValueError, r"schedule: unknown name"),
        (lambda: denoisers.Thresholding("static", ratio=0.0), ValueError, r"thresholding.ratio"),
        (lambda: Evaluator(gmm, sched, objective="nope"), ValueError, r"objective"),
        (lambda: Evaluator(gmm, sched, num_samples=1), ValueError, r"num_samples"),
        (lambda: Evaluator(gmm, sched, objective="data_frechet"), ValueError,
         r"objective 'data_frechet' needs the training images' feature moments"),
        (lambda: denoisers.check_prediction("nope"), ValueError, r"prediction: unknown kind"),
        (lambda: samplers.chunked(lambda x: x, np.zeros((4, 2)), 0), ValueError, r"batch_size"),
    ]


def test_api_bad_inputs():
    cases = _api_cases()
    assert len(cases) + len(CLI_CASES) >= 40
    for fn, exc, pattern in cases:
        t0 = time.perf_counter()
        with pytest.raises(exc, match=pattern):
            fn()
        assert time.perf_counter() - t0 < 2.0
