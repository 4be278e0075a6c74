"""Parity with diffusers' schedulers driven by the SAME exact mixture model on the same nodes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import schedules
from stepwise import solvers
from stepwise import samplers
from stepwise.denoisers import x0_eps

import diffusers  # noqa: E402 (the test extra installs both)
import torch  # noqa: E402

SCHED = schedules.VPDiscrete.ddpm_linear()


def _timesteps(n):
    # Integer DDPM steps from 999 down, n of them; the run ends at alphas_cumprod[0] (t = 1/1000).
    return np.unique(np.round(np.linspace(999, 0, n + 1)[:-1]).astype(int))[::-1].copy()


def _ts(steps):
    return np.concatenate([(steps + 1) / 1000.0, [1.0 / 1000.0]])


def _run_diffusers(scheduler, model, steps, x_T):
    scheduler.set_timesteps(timesteps=[int(s) for s in steps])
    x = torch.from_numpy(np.array(x_T))
    eps_fn = jax.jit(lambda x, t: x0_eps(model, x, t)[1])
    for n in scheduler.timesteps:
        t = (int(n) + 1) / 1000.0
        eps = np.asarray(eps_fn(jnp.asarray(x.numpy()), t))
        x = scheduler.step(torch.from_numpy(eps), n, x).prev_sample
    return x.numpy()


def _dpm_scheduler(algorithm, order, solver_type="midpoint"):
    return diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        solver_order=order, algorithm_type=algorithm, solver_type=solver_type,
        prediction_type="epsilon", final_sigmas_type="sigma_min", lower_order_final=True)


@pytest.fixture(scope="module")
def setup(gmm_factory):
    from stepwise import denoisers
    model = denoisers.digits_gmm(components=10, schedule=SCHED)
    x_T = np.asarray(jax.random.normal(jax.random.key(3), (64, 64)), np.float32)
    return model, x_T


@pytest.mark.parametrize("n", [5, 8, 12])
@pytest.mark.parametrize("algorithm,preset", [("dpmsolver++", solvers.dpm_solver_pp),
                                              ("dpmsolver", solvers.dpm_solver)])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_multistep_matches_diffusers(setup, n, algorithm, preset, order):
    model, x_T = setup
    steps = _timesteps(n)
    ref = _run_diffusers(_dpm_scheduler(algorithm, order), model, steps, x_T)
    plan = preset(jnp.asarray(_ts(steps), jnp.float32), order=order)
    ours = np.asarray(samplers.sample(model, SCHED, plan, jnp.asarray(x_T)))
    assert np.max(np.abs(ours - ref)) <= 1e-4


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("algorithm,preset", [("dpmsolver++", solvers.dpm_solver_pp),
                                              ("dpmsolver", solvers.dpm_solver)])
@pytest.mark.parametrize("order", [2])
def test_dpm_solver_heun_variant_matches_taylor(setup, n, algorithm, preset, order):
    """diffusers' 2nd-order solver_type='heun' is the exact-moment ('taylor') variant (its 3rd-order
    update has no heun form)."""
    model, x_T = setup
    steps = _timesteps(n)
    ref = _run_diffusers(_dpm_scheduler(algorithm, order, "heun"), model, steps, x_T)
    plan = preset(jnp.asarray(_ts(steps), jnp.float32), order=order, variant="taylor")
    ours = np.asarray(samplers.sample(model, SCHED, plan, jnp.asarray(x_T)))
    assert np.max(np.abs(ours - ref)) <= 1e-4


@pytest.mark.parametrize("n", [5, 10, 25])
def test_ddim_matches_diffusers(setup, n):
    model, x_T = setup
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                  beta_schedule="linear", prediction_type="epsilon", clip_sample=False,
                                  set_alpha_to_one=False, timestep_spacing="trailing")
    sch.set_timesteps(n)
    steps = sch.timesteps.numpy()
    assert steps[-1] - 1000 // n == -1  # the last step lands on alphas_cumprod[0], i.e. t = 1/1000
    x = torch.from_numpy(x_T.copy())
    eps_fn = jax.jit(lambda x, t: x0_eps(model, x, t)[1])
    for s in sch.timesteps:
        eps = np.asarray(eps_fn(jnp.asarray(x.numpy()), (int(s) + 1) / 1000.0))
        x = sch.step(torch.from_numpy(eps), s, x, eta=0.0).prev_sample
    plan = solvers.ddim(jnp.asarray(_ts(steps), jnp.float32))
    ours = np.asarray(samplers.sample(model, SCHED, plan, jnp.asarray(x_T)))
    assert np.max(np.abs(ours - x.numpy())) <= 1e-4
