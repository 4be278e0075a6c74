"""Scoring candidates: on-device scoring of stacked candidates equals the per-candidate host path;
the data_frechet objective scores against training images, not the teacher."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers, evaluation, schedules, solvers
from stepwise.search.evaluator import BAD_SCORE, Evaluator


def _plans(sched):
    out = [solvers.build_preset(n, 5, sched, d, **kw) for n, kw in
           [("dpm_solver_pp", {"order": 2}), ("unipc", {"order": 3}), ("ipndm", {}), ("ddim", {})]
           for d in ("logsnr", "time_uniform")]
    blown = eqx.tree_at(lambda p: p.corrections, out[0], jnp.full(out[0].corrections.shape, 1e38))
    return out + [blown, solvers.build_preset("heun", 5, sched, "karras")]   # a diverging one; another length


@pytest.mark.parametrize("objective", ["teacher_frechet", "teacher_rmse", "frechet"])
def test_device_scores_equal_host_scores_in_float64(objective):
    with jax.enable_x64(True):
        sched = schedules.VPLinear()
        model = denoisers.digits_gmm(schedule=sched)
        plans = _plans(sched)
        host = Evaluator(model, sched, objective=objective, num_samples=256)
        dev = Evaluator(model, sched, objective=objective, num_samples=256, use_vmap=True, chunk=3)
        sh, sd = np.array(host.score(plans)), np.array(dev.score(plans))
    assert sh[-2] == sd[-2] == BAD_SCORE
    ok = sh < BAD_SCORE
    np.testing.assert_allclose(sd[ok], sh[ok], rtol=1e-8)
    assert dev.evaluations == len(plans)


def test_frechet_to_reference_matches_scipy_in_float32():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)) * 0.3
    b = rng.normal(size=(300, 16)) + 0.1
    ref = evaluation.frechet_reference(b.mean(0), np.cov(b, rowvar=False))
    got = float(evaluation.frechet_to_reference(jnp.asarray(a, jnp.float32), ref))
    want = evaluation.frechet_between(a, b)
    assert got == pytest.approx(want, rel=1e-4)


def test_a_candidate_whose_frechet_distance_fails_gets_the_worst_score_and_a_reason(monkeypatch):
    """A candidate whose Fréchet distance cannot be computed (e.g. samples on a subspace: sqrtm of a
    singular product) is a failed candidate, logged with the error, not a crashed search."""
    import stepwise.search.evaluator as ev
    from stepwise.evaluation.stats import FrechetDistanceError

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=2, schedule=sched)
    logged = []
    e = Evaluator(model, sched, objective="teacher_frechet", num_samples=32, log=logged.append)

    def singular(*a, **k):
        raise FrechetDistanceError("sqrtm(sigma1 sigma2) has imaginary component 0.1")

    monkeypatch.setattr(ev, "sample_frechet", singular)
    assert e.score([solvers.build_preset("ddim", 4, sched, "logsnr")]) == [BAD_SCORE]
    assert "Fréchet distance not computable" in list(e.diverged.values())[0] and "imaginary" in logged[-1]


def test_data_frechet_objective_scores_samples_against_the_training_images():
    """objective="data_frechet" needs no teacher solve; a plan's score is the Fréchet distance of its
    samples on the search noise to the images' moments (recomputed with scipy); it refuses to run
    without images, to take images under another objective, and the on-device path."""
    import scipy.linalg

    from stepwise.search import protocol
    from stepwise.search.evaluator import reference_endpoints, run_plan

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=3, schedule=sched)
    y = reference_endpoints(model, sched, np.asarray(jax.random.normal(jax.random.key(9), (300, 64))
                                                     * sched.prior_std(), np.float32), 300)
    images = protocol.feature_moments(evaluation.identity_extractor(64), y, "exact samples")
    ev = Evaluator(model, sched, objective="data_frechet", num_samples=128, data=images)
    assert ev.teacher is None
    plans = _plans(sched)[:3]
    scores = ev.score(plans)
    for p, got in zip(plans, scores):
        x = run_plan(model, sched, p, ev.x_T, 128).astype(np.float64)
        c1, c2 = np.cov(x, rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
        want = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(c1 + c2)
                - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
        assert got == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="objective 'data_frechet' needs the training images"):
        Evaluator(model, sched, objective="data_frechet")
    with pytest.raises(ValueError, match="only it takes them"):
        Evaluator(model, sched, objective="teacher_rmse", data=images)
    with pytest.raises(ValueError, match="search.vmap: objective 'data_frechet' scores features on the host"):
        Evaluator(model, sched, objective="data_frechet", data=images, use_vmap=True)
