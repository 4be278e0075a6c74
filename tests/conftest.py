import functools

import pytest


@functools.lru_cache(maxsize=None)
def _gmm(components: int, size: int = 8, covariance: str = "full"):
    import denoisers
    return denoisers.digits_gmm(components=components, size=size, covariance=covariance)


@pytest.fixture(scope="session")
def gmm10():
    """The benchmark mixture (float32 parameters are cast per call)."""
    return _gmm(10)


@pytest.fixture(scope="session")
def gmm_factory():
    return _gmm
