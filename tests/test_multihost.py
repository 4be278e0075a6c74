"""Two processes on loopback (CPU devices): jax.distributed, per-host noise, reduced statistics."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from stepwise import evaluation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args, env, timeout=900, beside=()):
    """Run ``python args --config.process_id=i`` for i = 0, 1, and the ``beside`` runs (argument
    lists) at the same time; (stdout, stderr) of each, all exit 0."""
    runs = [[*args, f"--config.process_id={i}"] for i in range(2)] + list(beside)
    procs = [subprocess.Popen([sys.executable, *r], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in runs]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return outs


def test_two_process_sampling(tmp_path):
    port = _free_port()
    work = tmp_path / "run"
    common = ["-m", "stepwise", "sample", "--workdir", str(work), "--config.distributed=True",
              f"--config.coordinator=127.0.0.1:{port}", "--config.num_processes=2",
              "--config.num_samples=400", "--config.batch_size=100", "--config.reference_samples=0",
              "--config.model.components=3", "--config.nfe=4"]
    outs = _two_processes(common, dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert "frechet_exact" in outs[0][0] and "frechet_exact" not in outs[1][0]  # only process 0 reports
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["num_samples"] == 400
    with np.load(work / "samples.npz") as z:
        x, mean, cov = z["samples"], z["exact_mean"], z["exact_cov"]
    assert x.shape == (400, 64)
    assert np.abs(x[:200] - x[200:]).max() > 0.1  # each host drew its own noise
    s = evaluation.gaussian_stats(x)
    direct = evaluation.frechet_distance(s.mu, s.sigma, mean, cov)
    np.testing.assert_allclose(metrics["frechet_exact"], direct, rtol=1e-6)


def test_two_process_search_equals_one_process(tmp_path):
    """`stepwise search --config.distributed=True` on 2 processes: each evaluates its share of every
    generation, scores are all-gathered, and the result is the single-process search's, bit for bit
    (plan, search score, evaluation count, history); only process 0 writes files."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tiny = ["-m", "stepwise", "search", "--config", os.path.join(root, "configs", "search_digits_gmm.py"),
            "--config.nfe=3", "--config.search.generations=3", "--config.search.search_samples=64",
            "--config.search.batch_size=64", "--config.search.population=6", "--config.search.top_k=3",
            "--config.search.children=4", "--config.search.screen=16", "--config.search.predictor_warmup=8",
            "--config.search.predictor_train_steps=20", "--config.search.predictor_hidden=16",
            "--config.search.timesteps_only_generations=1", "--config.search.final_samples=128",
            "--config.search.final_top_baselines=3", "--config.search.final_reference=False",
            "--config.search.final_tuned_baselines=2"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    port = _free_port()
    two = [*tiny, "--workdir", str(tmp_path / "two"), "--config.distributed=True",
           f"--config.coordinator=127.0.0.1:{port}", "--config.num_processes=2"]
    outs = _two_processes(two, env, beside=[[*tiny, "--workdir", str(tmp_path / "one")]])   # one process, alongside
    assert "searched nfe=3" in outs[0][0] and "searched nfe=3" not in outs[1][0]   # only process 0 reports
    a = json.loads((tmp_path / "one" / "schedule.json").read_text())
    b = json.loads((tmp_path / "two" / "schedule.json").read_text())
    assert b["ts"] == a["ts"] and b["steps"] == a["steps"]
    sa = json.loads((tmp_path / "one" / "search.json").read_text())
    sb = json.loads((tmp_path / "two" / "search.json").read_text())
    assert sb["processes"] == 2 and sa["processes"] == 1
    assert sa["evaluated_by_writer"] >= sa["evaluations"]                      # one process: all of them
    assert 0.4 * sa["evaluated_by_writer"] <= sb["evaluated_by_writer"] <= 0.6 * sa["evaluated_by_writer"]
    assert sb["search_score"] == sa["search_score"] and sb["evaluations"] == sa["evaluations"]
    assert [h["best"] for h in sb["history"]] == [h["best"] for h in sa["history"]]
