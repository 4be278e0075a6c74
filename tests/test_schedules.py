import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import schedules

ALL = [schedules.VPLinear(), schedules.VPCosine(), schedules.VPDiscrete.ddpm_linear(),
       schedules.EDM(), schedules.Flow()]
IDS = [type(s).__name__ for s in ALL]


@pytest.mark.parametrize("s", ALL, ids=IDS)
def test_identities_and_round_trip_float64(s):
    with jax.enable_x64(True):
        t = jnp.linspace(s.t_min, s.t_max, 101, dtype=jnp.float64)
        a, sig, lam = s.alpha(t), s.sigma(t), s.lambda_(t)
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(lam, jnp.log(a) - jnp.log(sig), rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.t_of_lambda(lam), t, rtol=1e-6, atol=1e-9)
        assert np.all(np.diff(np.asarray(lam)) < 0), "lambda must decrease with t"
        if isinstance(s, (schedules.VPLinear, schedules.VPCosine, schedules.VPDiscrete)):
            np.testing.assert_allclose(a**2 + sig**2, 1.0, atol=1e-12)


def test_closed_forms():
    with jax.enable_x64(True):
        t = jnp.asarray([0.1, 0.5, 0.9], jnp.float64)
        vp = schedules.VPLinear(beta_min=0.1, beta_max=20.0)
        # alpha = exp(-int_0^t beta / 2), beta(t) = b0 + (b1-b0) t
        np.testing.assert_allclose(vp.alpha(t), np.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t**2)), rtol=1e-12)
        np.testing.assert_allclose(schedules.EDM().sigma(t), t)
        np.testing.assert_allclose(schedules.Flow().alpha(t), 1 - t)
        cos = schedules.VPCosine()
        f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2)
        np.testing.assert_allclose(cos.alpha(t), f(np.asarray(t)) / f(0.0), rtol=1e-12)


def test_discrete_matches_ddpm_alphas_cumprod():
    betas = np.linspace(1e-4, 0.02, 1000)
    s = schedules.VPDiscrete(betas)
    with jax.enable_x64(True):
        t = (np.arange(1000) + 1) / 1000.0
        np.testing.assert_allclose(np.asarray(s.alpha(jnp.asarray(t))) ** 2, np.cumprod(1 - betas), rtol=1e-10)


def test_differentiable():
    for s in ALL:
        g = jax.grad(lambda t: s.lambda_(t))(0.5 * (s.t_min + s.t_max))
        assert np.isfinite(g) and g < 0


@pytest.mark.parametrize("kind", sorted(schedules.DISCRETIZATIONS))
@pytest.mark.parametrize("s", ALL, ids=IDS)
def test_discretize_shapes_and_endpoints(kind, s):
    ts = np.asarray(schedules.discretize(kind, 7, s))
    assert ts.shape == (8,)
    assert np.all(np.diff(ts) < 0)
    np.testing.assert_allclose([ts[0], ts[-1]], [s.t_max, s.t_min], rtol=1e-6)


def test_logsnr_is_uniform_in_lambda():
    s = schedules.VPLinear()
    with jax.enable_x64(True):
        lam = np.asarray(s.lambda_(jnp.asarray(np.asarray(schedules.discretize("logsnr", 9, s)))))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-4)


def test_karras_sigmas():
    s = schedules.EDM()
    ts = np.asarray(schedules.discretize("karras", 5, s), np.float64)
    ramp = np.linspace(0, 1, 6)
    expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(ts, expected, rtol=1e-5)


def test_invalid_inputs_name_the_problem():
    s = schedules.VPLinear()
    with pytest.raises(ValueError, match="n"):
        schedules.discretize("logsnr", 0, s)
    with pytest.raises(ValueError, match="allowed"):
        schedules.discretize("bogus", 4, s)
    with pytest.raises(ValueError, match="decreasing"):
        schedules.discretize(np.array([0.5, 0.7, 0.1]), 2, s)
    with pytest.raises(ValueError, match="domain"):
        schedules.discretize(np.array([2.0, 0.5, 0.1]), 2, s)
    with pytest.raises(ValueError, match="t_start"):
        schedules.discretize("logsnr", 3, s, t_start=0.1, t_end=0.5)
