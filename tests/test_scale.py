"""Sharding over devices gives the single-device result; precision of the solver state."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp

from stepwise import samplers
from stepwise import schedules
from stepwise import solvers

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from stepwise import denoisers, samplers, schedules, solvers
    assert jax.device_count() == 4, jax.devices()
    m = denoisers.digits_gmm(components=3)
    sched = schedules.VPLinear()
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", 5, sched), order=2)
    x_T = jax.random.normal(jax.random.key(0), (10, 64))   # not a multiple of 4: padded
    sharded = samplers.sample(m, sched, plan, x_T)
    single = samplers.sample(m, sched, plan, x_T, devices=jax.devices()[:1])
    print(json.dumps({"diff": float(jnp.abs(sharded - single).max()), "shape": list(sharded.shape),
                      "ndev": len(sharded.sharding.device_set) if hasattr(sharded, "sharding") else 1}))
""")


def test_sharded_sampling_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["shape"] == [10, 64]
    assert res["diff"] < 1e-5


def test_bfloat16_model_keeps_float32_solver_state(gmm10):
    """A bf16 model evaluation leaves the sampler state float32."""
    from stepwise import denoisers
    sched = schedules.VPLinear()
    m = denoisers.LowPrecision(gmm10, "bfloat16")
    assert m(jnp.zeros((2, 64)), 0.5).dtype == jnp.bfloat16
    plan = solvers.dpm_solver_pp(schedules.discretize("logsnr", 5, sched), order=2)
    x_T = jax.random.normal(jax.random.key(0), (16, 64))
    x, traj = samplers.sample(m, sched, plan, x_T, return_trajectory=True)
    assert x.dtype == jnp.float32 and traj.dtype == jnp.float32
    full = samplers.sample(gmm10, sched, plan, x_T)
    assert 0 < float(jnp.mean(jnp.abs(x - full))) < 0.05  # bf16 noise, not a broken run
