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


def test_two_process_sampling(tmp_path):
    port = _free_port()
    work = tmp_path / "run"
    common = ["-m", "stepwise", "sample", "--workdir", str(work), "--config.distributed=True",
              f"--config.coordinator=127.0.0.1:{port}", "--config.num_processes=2",
              "--config.num_samples=400", "--config.batch_size=100", "--config.reference_samples=0",
              "--config.model.components=3", "--config.nfe=4"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, *common, f"--config.process_id={i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
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
