"""Schedule export: nodes as diffusers timesteps / sigmas and k-diffusion sigmas."""
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import schedules
from stepwise import solvers


def test_diffusers_timesteps_round_trip():
    steps = np.array([999, 749, 499, 249, 99])
    ts = np.concatenate([(steps + 1) / 1000.0, [1e-3]])
    np.testing.assert_array_equal(schedules.to_diffusers_timesteps(ts), steps)
    with pytest.raises(ValueError, match="sigmas instead"):
        schedules.to_diffusers_timesteps(np.array([1.0, 0.5003, 0.001]))
    with pytest.raises(ValueError, match="last node"):
        schedules.to_diffusers_timesteps(np.array([1.0, 0.5]))


def test_k_diffusion_sigmas_of_a_karras_grid():
    edm = schedules.EDM()
    ts = schedules.discretize("karras", 6, edm)
    ramp = np.linspace(0, 1, 7)
    expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    got = schedules.to_k_diffusion_sigmas(ts, edm)
    np.testing.assert_allclose(got[:-1], expected, rtol=1e-5)
    assert got[-1] == 0.0


def test_vp_sigmas_are_sqrt_of_one_minus_abar_over_abar():
    sched = schedules.VPDiscrete.ddpm_linear()
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    steps = np.array([999, 500, 20])
    got = schedules.to_sigmas((steps + 1) / 1000.0, sched)
    np.testing.assert_allclose(got, np.sqrt((1 - abar[steps]) / abar[steps]), rtol=1e-5)


def test_export_command_on_a_schedule_file(tmp_path):
    from stepwise.search.schedule_file import save_plan
    sched = schedules.VPDiscrete.ddpm_linear()
    steps = np.array([999, 666, 333, 99])
    plan = solvers.dpm_solver_pp(jnp.asarray(np.concatenate([(steps + 1) / 1000.0, [1e-3]])), order=2)
    path = tmp_path / "plan.json"
    save_plan(path, plan, {"schedule": sched.describe()})
    out = subprocess.run([sys.executable, "-m", "stepwise", "export", str(path), "--to", "diffusers"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["timesteps"] == steps.tolist() and res["schedule"] == "vp_discrete"
