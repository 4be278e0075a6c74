"""The host program of a plan (samplers.program) equals the compiled executor, exactly in float64."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise import denoisers, samplers, schedules, solvers
from stepwise.samplers.program import compile_plan, run_program
from stepwise.solvers.presets import PRESETS


def test_program_equals_executor_for_every_preset_in_float64():
    with jax.enable_x64(True):
        sched = schedules.VPLinear()
        model = denoisers.digits_gmm(schedule=sched)
        x = jax.random.normal(jax.random.key(0), (8, 64), jnp.float64)

        def evaluate(req, xx):
            return tuple(np.asarray(v) for v in denoisers.x0_eps(model, jnp.asarray(xx), req.t))

        worst = 0.0
        for name, p in sorted(PRESETS.items()):
            for order in ([1, 2, 3] if "order" in p.options else [None]):
                for afs in (0, 1):
                    plan = solvers.build_preset(name, 6, sched, "logsnr", **({"order": order} if order else {}))
                    plan = eqx.tree_at(lambda q: q.analytic_first, plan, jnp.asarray(afs, jnp.int32))
                    program = compile_plan(plan, sched)
                    assert len(program.requests) == plan.nfe()
                    out = run_program(program, np.asarray(x), evaluate, np.asarray(model.data_mean))
                    ref = np.asarray(samplers.sample(model, sched, plan, x))
                    worst = max(worst, float(np.abs(out - ref).max()))
        assert worst < 1e-9, worst
