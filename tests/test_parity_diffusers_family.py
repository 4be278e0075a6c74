"""Parity of the solver family with diffusers' schedulers, driven by the SAME exact mixture model on
the same nodes (float32, <= 1e-4 max abs), plus closed-form checks where diffusers has no twin.

Nodes follow tests/test_parity_diffusers.py: integer DDPM steps n, t = (n+1)/1000, the run ends at
alphas_cumprod[0] (t = 1/1000, diffusers' final_sigmas_type="sigma_min").
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import samplers
from stepwise import schedules
from stepwise import solvers
from stepwise.denoisers import x0_eps
from stepwise.solvers import presets

import diffusers  # noqa: E402 (the test extra installs both)
import torch  # noqa: E402

SCHED = schedules.VPDiscrete.ddpm_linear()
DDPM = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
            prediction_type="epsilon")


def _timesteps(n):
    return np.unique(np.round(np.linspace(999, 0, n + 1)[:-1]).astype(int))[::-1].copy()


def _ts(steps):
    return jnp.asarray(np.concatenate([(np.asarray(steps) + 1) / 1000.0, [1.0 / 1000.0]]), jnp.float32)


@pytest.fixture(scope="module")
def setup():
    from stepwise import denoisers
    model = denoisers.digits_gmm(components=10, schedule=SCHED)
    x_T = np.asarray(jax.random.normal(jax.random.key(3), (64, 64)), np.float32)
    eps_fn = jax.jit(lambda x, t: x0_eps(model, x, t)[1])
    return model, x_T, eps_fn


def _drive(sch, eps_fn, x_T):
    """Run a scheduler in x-space (VP) on the mixture's eps; returns the endpoint and the nodes."""
    x = torch.from_numpy(x_T.copy())
    for n in sch.timesteps:
        eps = np.asarray(eps_fn(jnp.asarray(x.numpy()), (int(n) + 1) / 1000.0))
        x = sch.step(torch.from_numpy(eps), n, x).prev_sample
    return x.numpy()


def _drive_sigma(sch, eps_fn, x_T, t_first, t_last):
    """Run a k-diffusion-style scheduler in the scaled variable x~ = x / alpha (EDM sigma space),
    in the dtype of ``x_T``."""
    dt = x_T.dtype.type
    a_first, a_last = (float(SCHED.alpha(jnp.asarray(t, x_T.dtype))) for t in (t_first, t_last))
    x = torch.from_numpy(x_T / dt(a_first))
    for n in sch.timesteps:
        x_in = sch.scale_model_input(x, n)                        # = x~ alpha = x
        eps = np.asarray(eps_fn(jnp.asarray(x_in.numpy()), (int(n) + 1) / 1000.0))
        x = sch.step(torch.from_numpy(eps), n, x).prev_sample
    return x.numpy() * dt(a_last)


def _ours(model, plan, x_T):
    return np.asarray(samplers.sample(model, SCHED, plan, jnp.asarray(x_T)))


# ---------------------------------------------------------------- DPM-Solver singlestep

# The noise-form (dpmsolver) singlestep update loses ~1e-4..5e-3 to float32 round-off below 12 steps
# (measured: our float64 and float32 runs differ by that much), so it is compared at n = 12 only.
SINGLE_CASES = [(n, "dpmsolver++", presets.dpm_solver_pp_singlestep) for n in (5, 6, 12)] + \
               [(12, "dpmsolver", presets.dpm_solver_singlestep)]


@pytest.mark.parametrize("n,algorithm,build", SINGLE_CASES, ids=[f"{c[1]}-{c[0]}" for c in SINGLE_CASES])
@pytest.mark.parametrize("order,solver_type", [(2, "midpoint"), (3, "midpoint"), (3, "heun"), (2, "heun")])
def test_dpm_solver_singlestep_matches_diffusers(setup, n, algorithm, build, order, solver_type):
    model, x_T, eps_fn = setup
    steps = _timesteps(n)
    sch = diffusers.DPMSolverSinglestepScheduler(**DDPM, solver_order=order, algorithm_type=algorithm,
                                                 solver_type=solver_type, final_sigmas_type="sigma_min",
                                                 lower_order_final=True)
    sch.set_timesteps(timesteps=[int(s) for s in steps])
    ref = _drive(sch, eps_fn, x_T)
    plan = build(_ts(steps), order=order, variant="dpmsolver" if solver_type == "midpoint" else "taylor")
    assert list(np.asarray(plan.order)) == sch.order_list
    # the noise form's float32 round-off reaches the 1e-4 scale even at n = 12 (measured 1.0006e-4
    # for order 2 / midpoint on one machine, below 1e-4 on another): 2e-4 there, 1e-4 for the data form
    tol = 2e-4 if algorithm == "dpmsolver" else 1e-4
    assert np.max(np.abs(_ours(model, plan, x_T) - ref)) <= tol


# ---------------------------------------------------------------- UniPC

# noise prediction loses ~2e-4 to float32 round-off at 6 steps (as DPM-Solver's noise form): n = 10 only
UNIPC_CASES = [(n, o, v, p, c) for o in (1, 2, 3) for v in ("bh1", "bh2") for p in ("data", "noise")
               for c in (True, False) for n in (6, 10)
               if (p == "data" and (n == 10 or v == "bh2")) or (o == 2 and c and n == 10)]


@pytest.mark.parametrize("n,order,variant,prediction,corrector", UNIPC_CASES,
                         ids=[f"n{n}-o{o}-{v}-{p}-{'C' if c else 'noC'}" for n, o, v, p, c in UNIPC_CASES])
def test_unipc_matches_diffusers(setup, n, order, variant, prediction, corrector):
    model, x_T, eps_fn = setup
    sch = diffusers.UniPCMultistepScheduler(**DDPM, solver_order=order, solver_type=variant,
                                            predict_x0=prediction == "data", final_sigmas_type="sigma_min",
                                            lower_order_final=True,
                                            disable_corrector=[] if corrector else list(range(n)))
    sch.set_timesteps(n)
    ref = _drive(sch, eps_fn, x_T)
    plan = presets.unipc(_ts(sch.timesteps.numpy()), order=order, variant=variant, prediction=prediction,
                         corrector=corrector)
    assert plan.nfe() == n
    assert np.max(np.abs(_ours(model, plan, x_T) - ref)) <= 1e-4


def test_unipc_disable_corrector_at_chosen_steps(setup):
    model, x_T, eps_fn = setup
    n, off = 8, [0, 3, 4]
    sch = diffusers.UniPCMultistepScheduler(**DDPM, solver_order=3, solver_type="bh2",
                                            final_sigmas_type="sigma_min", disable_corrector=off)
    sch.set_timesteps(n)
    ref = _drive(sch, eps_fn, x_T)
    plan = presets.unipc(_ts(sch.timesteps.numpy()), order=3, disable_corrector=off)
    assert np.max(np.abs(_ours(model, plan, x_T) - ref)) <= 1e-4


def test_unipc_bh_only_matters_for_two_point_interpolants():
    """Claim of solvers.coefficients: with >= 3 points UniPC's system is square and B(h) cancels, so
    bh1 and bh2 give the same weights; with 2 points (order-2 predictor, order-1 corrector) they differ."""
    lam = jnp.asarray([0.3, -0.2, -0.9, -1.5, 1.0])
    geom = solvers.StepGeometry(lam=lam, t=jnp.zeros(5), valid=jnp.ones(5, bool), base=jnp.asarray(0),
                                h=lam[4] - lam[0], z=-(lam[4] - lam[0]))
    w = lambda f, o, v: np.asarray(f(geom, o, solvers.VARIANT_CODES[v], 0, 1.0))
    P, C = solvers.predictor_weights, solvers.corrector_weights
    np.testing.assert_allclose(w(P, 3, "bh1"), w(P, 3, "bh2"), rtol=1e-6)
    np.testing.assert_allclose(w(C, 2, "bh1"), w(C, 2, "bh2"), rtol=1e-6)
    assert np.abs(w(P, 2, "bh1") - w(P, 2, "bh2")).max() > 1e-3
    assert np.abs(w(C, 1, "bh1") - w(C, 1, "bh2")).max() > 1e-3


# ---------------------------------------------------------------- DEIS

@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_logrho_matches_diffusers(setup, n, order):
    """diffusers' DEIS ("logrho") is a polynomial in log(sigma/alpha) = -lambda integrated exactly:
    deis_tab with the lambda expansion (order 1 coincides with tAB's t expansion too)."""
    model, x_T, eps_fn = setup
    sch = diffusers.DEISMultistepScheduler(**DDPM, solver_order=order, lower_order_final=True)
    sch.set_timesteps(n)
    ref = _drive(sch, eps_fn, x_T)
    ts = _ts(sch.timesteps.numpy())
    for expansion in (["lambda", "t"] if order == 1 else ["lambda"]):
        plan = presets.deis_tab(ts, order=order, expansion=expansion)
        assert np.max(np.abs(_ours(model, plan, x_T) - ref)) <= 1e-4, expansion


# ---------------------------------------------------------------- Euler / Heun (EDM sigma space)

@pytest.mark.parametrize("n", [5, 10])
def test_heun_matches_diffusers(setup, n):
    """HeunDiscreteScheduler on the DDPM schedule's scaled sigma; its final node (sigma = 0) is moved
    to sigma_min = sigma~(t = 1/1000) as final_sigmas_type="sigma_min" does elsewhere. The last step
    stays Euler: NFE = 2N - 1. Compared in float64 on both sides: in float32 one sample near a
    mixture boundary amplifies round-off to ~4e-4 on some CPUs (median difference 4e-7)."""
    model, x_T, _ = setup
    steps = _timesteps(n)
    sch = diffusers.HeunDiscreteScheduler(**DDPM)
    sch.set_timesteps(timesteps=[int(s) for s in steps])
    sch.sigmas = sch.sigmas.double()
    ac0 = sch.alphas_cumprod[0].double()
    sch.sigmas[-1] = float(((1 - ac0) / ac0) ** 0.5)
    assert len(sch.timesteps) == 2 * n - 1
    with jax.enable_x64(True):
        eps64 = jax.jit(lambda x, t: x0_eps(model, x, t)[1])
        x64 = x_T.astype(np.float64)
        ref = _drive_sigma(sch, eps64, x64, (steps[0] + 1) / 1000.0, 1.0 / 1000.0)
        plan = presets.heun(jnp.asarray(np.append((steps + 1) / 1000.0, 1.0 / 1000.0)))
        assert plan.nfe() == 2 * n - 1
        ours = _ours(model, plan, x64)
    assert ref.dtype == ours.dtype == np.float64
    # diffusers' sigmas come from float32 alphas_cumprod (1e-7 relative): max 1.5e-5, median 4e-7
    assert np.max(np.abs(ours - ref)) <= 1e-4


@pytest.mark.parametrize("n", [5, 12])
def test_euler_matches_diffusers(setup, n):
    model, x_T, eps_fn = setup
    steps = _timesteps(n)
    sch = diffusers.EulerDiscreteScheduler(**DDPM, final_sigmas_type="sigma_min")
    sch.set_timesteps(timesteps=[int(s) for s in steps])
    ac0 = sch.alphas_cumprod[0].double()
    assert abs(float(sch.sigmas[-1]) - float(((1 - ac0) / ac0) ** 0.5)) < 1e-6
    ref = _drive_sigma(sch, eps_fn, x_T, (steps[0] + 1) / 1000.0, 1.0 / 1000.0)
    ours = _ours(model, presets.euler(_ts(steps)), x_T)
    assert np.max(np.abs(ours - ref)) <= 1e-4
    np.testing.assert_allclose(ours, _ours(model, solvers.ddim(_ts(steps)), x_T), atol=2e-5)


# ---------------------------------------------------------------- closed forms (no diffusers twin)

def _geometry(lams, ts, base=0, data=False):
    lam = jnp.asarray(lams, jnp.float64)
    h = lam[-1] - lam[base]
    return solvers.StepGeometry(lam=lam, t=jnp.asarray(ts, jnp.float64), valid=jnp.ones(lam.shape, bool),
                                base=jnp.asarray(base), h=h, z=-h if data else h)


def _lagrange_integral(xs, j, a, b, f=lambda x: 1.0, n=200):
    """int_a^b L_j(x) f(x) dx through the nodes xs (Gauss-Legendre, independent of the library)."""
    xg, wg = np.polynomial.legendre.leggauss(n)
    x = 0.5 * (b - a) * xg + 0.5 * (b + a)
    L = np.prod([(x - xs[m]) / (xs[j] - xs[m]) for m in range(len(xs)) if m != j], axis=0)
    return float(np.sum(0.5 * (b - a) * wg * L * f(x)))


def test_ipndm_weights_are_adams_bashforth_in_scaled_sigma():
    """On eps, x~ = x/alpha obeys dx~/ds = eps (s = sigma/alpha = e^{-lambda}): the noise-form update
    x_t = (alpha_t/alpha_b) x_b - sigma_t sum_j w_j eps_j is x~_t = x~_b + (s_t - s_b) sum_j c_j eps_j
    with c_j = -s_t w_j / (s_t - s_b). Fixed iPNDM: c = (55, -59, 37, -9)/24; variable step: the exact
    integral of the Lagrange basis in s."""
    with jax.enable_x64(True):
        lams = [0.1, -0.35, -0.7, -1.2, 0.5]
        geom = _geometry(lams, np.zeros(5))
        s = np.exp(-np.asarray(lams))
        to_c = lambda w: -s[-1] * np.asarray(w)[:4] / (s[-1] - s[0])
        eq = solvers.predictor_weights(geom, 4, solvers.VARIANT_CODES["equispaced"], 2, 1.0)
        np.testing.assert_allclose(to_c(eq), np.array([55, -59, 37, -9]) / 24, rtol=1e-10)
        var = solvers.predictor_weights(geom, 4, solvers.VARIANT_CODES["taylor"], 2, 1.0)
        expect = [_lagrange_integral(s[:4], j, s[0], s[-1]) / (s[-1] - s[0]) for j in range(4)]
        np.testing.assert_allclose(to_c(var), expect, rtol=1e-9)
        # Heun: trapezoid in s (order-1 corrector on the sigma expansion)
        wc = solvers.corrector_weights(geom, 1, solvers.VARIANT_CODES["taylor"], 2, 1.0)
        c = -s[-1] * np.asarray(wc) / (s[-1] - s[0])
        np.testing.assert_allclose(c[[0, 4]], [0.5, 0.5], rtol=1e-10)


def test_deis_tab_weights_integrate_the_t_polynomial():
    """DEIS tAB: x~_t - x~_b = int_{t_b}^{t_t} P(tau) ds/dtau dtau with P the Lagrange polynomial in t
    (Zhang & Chen 2023, eq. 14 in x~ form); checked by an independent quadrature in t."""
    with jax.enable_x64(True):
        sch = schedules.VPLinear()
        ts = np.array([0.62, 0.7, 0.79, 0.9, 0.55])   # history newest first, then the target
        lams = np.asarray(sch.lambda_(jnp.asarray(ts)))
        geom = _geometry(lams, ts)
        w = solvers.predictor_weights(geom, 4, 0, solvers.EXPANSION_CODES["t"], 1.0, sch)
        s_of_t = lambda t: np.exp(-np.asarray(sch.lambda_(jnp.asarray(t))))
        ds = jax.vmap(jax.grad(lambda t: jnp.exp(-sch.lambda_(t))))
        s_t, s_b = s_of_t(ts[-1]), s_of_t(ts[0])
        c = -s_t * np.asarray(w)[:4] / (s_t - s_b)
        expect = [_lagrange_integral(ts[:4], j, ts[0], ts[-1], lambda x: np.asarray(ds(jnp.asarray(x))))
                  / (s_t - s_b) for j in range(4)]
        np.testing.assert_allclose(c, expect, rtol=1e-7)


def _gaussian_case(dim=6):
    """Data N(mu, diag(v)): the PF-ODE keeps z = (x - alpha mu)/sqrt(alpha^2 v + sigma^2) constant, so
    x_end = alpha_end mu + sqrt(alpha_end^2 v + sigma_end^2) z(x_T)."""
    from stepwise import denoisers
    sch = schedules.VPLinear()
    mu, v = np.linspace(-0.5, 0.5, dim), np.linspace(0.05, 1.5, dim)
    model = denoisers.GaussianMixture([1.0], mu[None], v[None], sch)
    x_T = jax.random.normal(jax.random.key(1), (16, dim), jnp.float64)
    a0, s0 = sch.alpha(sch.t_max), sch.sigma(sch.t_max)
    a1, s1 = sch.alpha(sch.t_min), sch.sigma(sch.t_min)
    z = (x_T - a0 * mu) / jnp.sqrt(a0**2 * v + s0**2)
    return sch, model, x_T, a1 * mu + jnp.sqrt(a1**2 * v + s1**2) * z


# (preset, options, (bounds on the observed order between 32 and 64 logSNR steps, max error at 64)). The fixed-coefficient
# iPNDM is only second order on a non-uniform sigma grid (its equal-step Adams-Bashforth weights match
# the variable-step ones up to O(step ratio - 1) = O(1/N)); the variable-step form is not limited so.
GAUSS_CASES = [("dpm_solver_pp", {"order": 3, "variant": "taylor", "lower_order_final": False}, (2.7, 4.5, 3e-4)),
               ("deis_tab", {"order": 3}, (2.6, 3.4, 2e-3)),
               ("ipndm", {"variable_step": True}, (3.0, 4.5, 5e-3)),
               ("ipndm", {}, (1.7, 2.4, 6e-3)),
               ("heun", {"final_euler": False}, (1.7, 2.4, 2e-2)),
               ("euler", {}, (0.7, 1.3, 0.2))]


@pytest.mark.parametrize("name,opts,bounds", GAUSS_CASES, ids=[f"{c[0]}-{c[1]}" for c in GAUSS_CASES])
def test_single_gaussian_closed_form(name, opts, bounds):
    """No diffusers twin: compare with the analytic ODE solution of a Gaussian; the error must shrink
    at the method's rate between 32 and 64 steps (and the high-order solvers reach it closely)."""
    with jax.enable_x64(True):
        sch, model, x_T, exact = _gaussian_case()
        errs = []
        for n in (32, 64):
            plan = solvers.PRESETS[name].build(schedules.discretize("logsnr", n, sch), **opts)
            errs.append(float(jnp.abs(samplers.sample(model, sch, plan, x_T) - exact).max()))
        rate = np.log2(errs[0] / errs[1])
        assert bounds[0] <= rate <= bounds[1], errs
        assert errs[1] < bounds[2], errs
