"""Non-finite states are located (step, model, node times, fraction of rows) and reported."""
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers, samplers, schedules, solvers
from stepwise.denoisers.base import Wrapper
from stepwise.search.evaluator import BAD_SCORE, Evaluator
from stepwise.search.schedule_file import save_plan


class NaNBelow(Wrapper):
    """The inner denoiser, but NaN in the first quarter of the rows at times t < t_bad."""

    t_bad: float = eqx.field(static=True)

    def __call__(self, x, t, cond=None):
        out = self.inner(x, t, cond)
        rows = (jnp.arange(x.shape[0]) < x.shape[0] // 4).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(rows & (jnp.asarray(t) < self.t_bad), jnp.nan, out)


@pytest.fixture(scope="module")
def gmm():
    sched = schedules.VPLinear()
    return denoisers.digits_gmm(schedule=sched), sched


def test_first_nonfinite_step_is_located(gmm):
    model, sched = gmm
    plan = solvers.build_preset("ddim", 8, sched, "time_uniform")
    ts = np.asarray(plan.ts)
    t_bad = float((ts[4] + ts[5]) / 2)          # the evaluation at node 5 is the first NaN one
    bad = NaNBelow(model, t_bad)
    x = jax.random.normal(jax.random.key(0), (16, 64))
    with pytest.raises(samplers.NonFiniteError) as e:
        samplers.sample(bad, sched, plan, x)
    assert (e.value.step, e.value.model) == (5, 0)
    assert e.value.t_from == pytest.approx(ts[5]) and e.value.t_to == pytest.approx(ts[6])
    assert e.value.fraction == pytest.approx(0.25)
    assert "step 5" in str(e.value) and "25.0%" in str(e.value)
    # opt-out: the NaN comes back silently, exactly where the check said
    out = np.asarray(samplers.sample(bad, sched, plan, x, check_finite=False))
    assert np.isnan(out[:4]).all() and np.isfinite(out[4:]).all()
    # under an outer jit nothing can be raised: the caller gets the array
    out_jit = jax.jit(lambda xx: samplers.sample(bad, sched, plan, xx))(x)
    assert np.isnan(np.asarray(out_jit)[:4]).all()
    # a healthy model passes the same check
    assert np.isfinite(np.asarray(samplers.sample(model, sched, plan, x))).all()


def test_shape_and_empty_batch_errors_name_x_T(gmm):
    model, sched = gmm
    plan = solvers.build_preset("ddim", 4, sched, "logsnr")
    with pytest.raises(ValueError, match="x_T.*data_shape"):
        samplers.sample(model, sched, plan, jnp.zeros((3, 65)))
    with pytest.raises(ValueError, match="x_T: empty batch"):
        samplers.sample(model, sched, plan, jnp.zeros((0, 64)))


def test_diverging_candidate_gets_bad_score_and_a_logged_reason(gmm):
    model, sched = gmm
    lines = []
    ev = Evaluator(model, sched, objective="frechet", num_samples=128, batch_size=128, log=lines.append)
    good = solvers.build_preset("dpm_solver_pp", 5, sched, "logsnr", order=2)
    blown = eqx.tree_at(lambda p: p.corrections, good, jnp.full(good.corrections.shape, 1e38))
    s_good, s_bad = ev.score([good, blown])
    assert np.isfinite(s_good) and s_good < BAD_SCORE and s_bad == BAD_SCORE
    reasons = [l for l in lines if "diverged" in l]
    assert len(reasons) == 1 and "step" in reasons[0]


def test_cli_reports_where_a_plan_diverges(tmp_path, gmm):
    _, sched = gmm
    plan = solvers.build_preset("dpm_solver_pp", 5, sched, "logsnr", order=2)
    corr = np.zeros(plan.corrections.shape)
    corr[2] = 1e38
    blown = eqx.tree_at(lambda p: p.corrections, plan, jnp.asarray(corr))
    save_plan(tmp_path / "blown.json", blown)
    # where it really breaks, read off the unchecked trajectory (node k+1 non-finite = step k)
    model = denoisers.digits_gmm(schedule=sched)
    x = jax.random.normal(jax.random.key(0), (32, 64))
    _, traj = samplers.sample(model, sched, blown, x, return_trajectory=True, check_finite=False)
    finite = np.isfinite(np.asarray(traj)).reshape(traj.shape[0], -1).all(axis=1)
    expected = int(np.argmin(finite)) - 1
    assert expected >= 2
    r = subprocess.run([sys.executable, "-m", "stepwise", "sample", "--workdir", str(tmp_path / "run"),
                        f"--config.plan={tmp_path / 'blown.json'}", "--config.num_samples=64",
                        "--config.batch_size=32"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-1500:]
    assert f"non-finite at step {expected}" in r.stderr and "batch 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "samples.npz").exists()
