import functools

import pytest


@functools.lru_cache(maxsize=None)
def _gmm(components: int, size: int = 8, covariance: str = "full"):
    from stepwise import denoisers
    return denoisers.digits_gmm(components=components, size=size, covariance=covariance)


@pytest.fixture(scope="session")
def gmm10():
    """The benchmark mixture (float32 parameters are cast per call)."""
    return _gmm(10)


@pytest.fixture(scope="session")
def gmm_factory():
    return _gmm


@pytest.fixture(scope="session")
def problem(gmm10):
    """(x_T, its float64 diffrax reference endpoint at rtol 1e-10): 128 noises on VPLinear."""
    import jax
    import jax.numpy as jnp

    from stepwise import samplers
    from stepwise import schedules

    with jax.enable_x64(True):
        x_T = jax.random.normal(jax.random.key(0), (128, 64), jnp.float64)
        ref = samplers.reference_solve(gmm10, schedules.VPLinear(), x_T, rtol=1e-10)
    return x_T, ref


TORCH_MODULES = ("test_diffusers_scheduler.py", "test_torch_bridge.py")


def pytest_collection_modifyitems(config, items):
    """The tests that load torchax and diffusers' models run last: the rest of the suite never
    shares a process with their torch state (one full run crashed in an XLA compile after them)."""
    items.sort(key=lambda it: it.path.name in TORCH_MODULES)


# STEPWISE_TEST_COMPILE_REPORT=FILE: each test's wall time and the part of it JAX spent tracing,
# lowering and compiling (samplers.CompileClock), appended as JSON lines to FILE (one line per
# test; every pytest process of scripts/test appends to the same file). Off unless set.
_COMPILE_REPORT = __import__("os").environ.get("STEPWISE_TEST_COMPILE_REPORT")
if _COMPILE_REPORT:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import json

        from stepwise.samplers import CompileClock

        with CompileClock() as clock:
            yield
        with open(_COMPILE_REPORT, "a") as f:
            f.write(json.dumps({"test": item.nodeid, "wall_s": round(clock.wall, 3),
                                "compile_s": round(clock.seconds, 3)}) + "\n")
