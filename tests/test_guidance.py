"""Classifier-free guidance, the exact conditional mixture, thresholding (and diffusers parity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import counting_model

from stepwise import denoisers
from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.denoisers import Thresholding, x0_eps

SCHED = schedules.VPLinear()


@pytest.fixture(scope="module")
def cgmm():
    return denoisers.digits_gmm_conditional(components_per_class=2)


def test_conditional_mixture_moments_and_labels(cgmm):
    assert cgmm.num_classes == 10
    # the mixture over all classes has the class-frequency-weighted moments
    mean, _ = cgmm.moments()
    parts = [cgmm.moments(c)[0] for c in range(10)]
    freq = np.bincount(np.asarray(cgmm.component_class), weights=np.exp(cgmm.log_weights))
    np.testing.assert_allclose(mean, np.einsum("c,cd->d", freq, np.stack(parts)), atol=1e-12)
    xs = np.asarray(cgmm.sample(jax.random.key(0), 20000, label=3))
    assert np.abs(xs.mean(0) - cgmm.moments(3)[0]).max() < 0.03
    with pytest.raises(ValueError, match="label"):
        cgmm.moments(12)


def test_label_minus_one_is_unconditional(cgmm):
    x = jax.random.normal(jax.random.key(1), (6, 64))
    full = cgmm(x, 0.5)
    np.testing.assert_allclose(cgmm(x, 0.5, jnp.full((6,), -1)), full, atol=1e-6)
    # conditioning on a class changes the prediction
    assert float(jnp.abs(cgmm(x, 0.5, jnp.full((6,), 4)) - full).max()) > 1e-2


def test_cfg_combination_and_one_call(cgmm):
    x = jax.random.normal(jax.random.key(2), (5, 64))
    labels = jnp.arange(5)
    t = 0.4
    c = x0_eps(cgmm, x, t, labels)
    u = x0_eps(cgmm, x, t, jnp.full((5,), -1))
    g = denoisers.guided_x0_eps(cgmm, x, t, labels, 3.0)
    for got, pc, pu in zip(g, c, u):
        np.testing.assert_allclose(got, pu + 3.0 * (pc - pu), rtol=1e-5, atol=1e-5)
    one = denoisers.guided_x0_eps(cgmm, x, t, labels, 1.0)
    np.testing.assert_allclose(one[0], c[0], atol=1e-5)


def test_guided_sampling_counts_one_nfe_per_step(cgmm):
    m, calls = counting_model(cgmm)
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", 4, SCHED), order=2).replace(
        guidance=jnp.asarray([1.0, 2.0, 7.5, 7.5]))
    x_T = jax.random.normal(jax.random.key(0), (3, 64))
    jax.block_until_ready(samplers.sample(m, SCHED, plan, x_T, cond=jnp.arange(3)))
    assert calls["n"] == plan.nfe() == 4
    assert calls["rows"] == [3, 6, 6, 6]  # scale 1 runs the conditional batch, CFG a doubled one


def test_guidance_scale_zero_samples_the_unconditional_model(cgmm):
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", 6, SCHED), order=2)
    x_T = jax.random.normal(jax.random.key(0), (8, 64))
    a = samplers.sample(cgmm, SCHED, plan.replace(guidance=jnp.zeros(6)), x_T, cond=jnp.arange(8) % 10)
    b = samplers.sample(cgmm, SCHED, plan, x_T)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_guided_reference_is_approached(cgmm):
    labels = jnp.arange(64) % 10
    x_T = jax.random.normal(jax.random.key(5), (64, 64))
    ref = samplers.reference_solve(cgmm, SCHED, x_T, cond=labels, guidance=3.0, rtol=1e-6)
    errs = []
    for n in (10, 40):
        plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", n, SCHED), order=2,
                                     lower_order_final=False).replace(guidance=jnp.full((n,), 3.0))
        errs.append(float(jnp.median(jnp.sqrt(jnp.mean((samplers.sample(cgmm, SCHED, plan, x_T, cond=labels)
                                                         - ref) ** 2, axis=1)))))
    assert errs[1] < errs[0] / 8  # second order: 4x the steps, ~16x smaller error


def test_guided_denoiser_is_the_guided_ode(cgmm):
    """denoisers.Guided bakes CFG (labels i % 10) into an x0 denoiser: sampling and the reference
    solve agree with the plan-column guidance path; thresholding inside it bounds x0 to [-1, 1]."""
    n, g = 20, 7.5
    labels = jnp.arange(n) % 10
    x_T = jax.random.normal(jax.random.key(3), (n, 64))
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", 6, SCHED), order=2)
    guided = denoisers.Guided(cgmm, g)
    assert guided.cost == 2 * cgmm.cost and guided.prediction == "x0"
    a = samplers.sample(guided, SCHED, plan, x_T)
    b = samplers.sample(cgmm, SCHED, plan.replace(guidance=jnp.full((6,), g)), x_T, cond=labels)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    ra = samplers.reference_solve(guided, SCHED, x_T[:4], rtol=1e-6)
    rb = samplers.reference_solve(cgmm, SCHED, x_T[:4], cond=labels[:4], guidance=g, rtol=1e-6)
    np.testing.assert_allclose(ra, rb, rtol=1e-4, atol=1e-4)
    th = denoisers.Guided(cgmm, g, Thresholding("dynamic", 0.995, 1.0))
    x = jax.random.normal(jax.random.key(4), (n, 64)) * 0.3
    assert float(jnp.abs(guided(x, 0.5)).max()) > 1.5      # CFG extrapolates out of the data range
    assert float(jnp.abs(th(x, 0.5)).max()) <= 1.0 + 1e-6


def _np_dynamic_threshold(x0, ratio, max_value):
    flat = np.abs(x0.reshape(x0.shape[0], -1))
    s = np.clip(np.quantile(flat, ratio, axis=1), 1.0, max_value)[:, None]
    return np.clip(x0, -s, s) / s


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_threshold_semantics(kind):
    x0 = np.asarray(jax.random.normal(jax.random.key(0), (4, 30))) * np.array([[0.5], [1.5], [3.0], [9.0]])
    th = Thresholding(kind, ratio=0.9, max_value=2.0)
    got = np.asarray(denoisers.threshold_x0(jnp.asarray(x0), th))
    want = _np_dynamic_threshold(x0, 0.9, 2.0) if kind == "dynamic" else np.clip(x0, -2.0, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="allowed"):
        Thresholding("percentile")


def test_thresholded_dpm_solver_pp_matches_diffusers(cgmm):
    import diffusers
    import torch
    sched = schedules.VPDiscrete.ddpm_linear()
    model = denoisers.digits_gmm_conditional(components_per_class=2, schedule=sched)
    labels = jnp.arange(16) % 10
    scale = 7.5
    th = Thresholding("dynamic", ratio=0.995, max_value=1.5)
    steps = np.array([999, 799, 599, 399, 199, 99])
    ts = np.concatenate([(steps + 1) / 1000.0, [1e-3]])
    x_T = np.asarray(jax.random.normal(jax.random.key(7), (16, 64)), np.float32)
    sch = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", solver_order=2,
        algorithm_type="dpmsolver++", prediction_type="epsilon", final_sigmas_type="sigma_min",
        thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.5)
    sch.set_timesteps(timesteps=[int(s) for s in steps])
    eps_fn = jax.jit(lambda x, t: denoisers.guided_x0_eps(model, x, t, labels, scale)[1])
    x = torch.from_numpy(x_T.reshape(16, 1, 8, 8).copy())
    for n in sch.timesteps:
        eps = np.asarray(eps_fn(jnp.asarray(x.numpy().reshape(16, 64)), (int(n) + 1) / 1000.0))
        x = sch.step(torch.from_numpy(eps.reshape(16, 1, 8, 8)), n, x).prev_sample
    plan = solvers.dpm_solver_pp(jnp.asarray(ts, jnp.float32), order=2).replace(
        guidance=jnp.full((len(steps),), scale))
    ours = samplers.sample(model, sched, plan, jnp.asarray(x_T), cond=labels, threshold=th)
    assert np.abs(np.asarray(ours) - x.numpy().reshape(16, 64)).max() <= 1e-4
