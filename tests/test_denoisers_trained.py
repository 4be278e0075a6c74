"""Trained denoisers: training, checkpoint resume after SIGKILL, diffusers import, loaders, conversions."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import denoisers
from stepwise.cli.defaults import train_defaults
from stepwise.training import TrainOptions
from _helpers import require, write_fashion_fixture
from stepwise.data import load_digits, load_fashion_mnist, load_image_folder, load_npz
from stepwise.denoisers.mlp import MLP, mlp_kwargs
from stepwise.training import diffusion_loss, load_denoiser, loss_weight, train
from stepwise.denoisers.unet import FlaxDenoiser, init_params
from stepwise.schedules import EDM, Flow, VPCosine, VPLinear

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEDULES = {"vp_linear": VPLinear(), "vp_cosine": VPCosine(), "edm": EDM(), "flow": Flow()}


def _mlp_cfg(**kw):
    return TrainOptions(**{**dict(arch="mlp", preset="small", measure_cost=False, batch_size=32, learning_rate=2e-3,
                                  warmup_steps=5, log_every=1, checkpoint_every=10, eval_examples=64), **kw})


@pytest.fixture(scope="module")
def flat_digits():
    x, y = load_digits(8, flat=True)
    return x, y


# ------------------------------------------------------------------------------------------- training
def test_training_reduces_fixed_batch_loss_and_reloads(tmp_path, flat_digits):
    x, _ = flat_digits
    wd = str(tmp_path / "run")
    cfg = _mlp_cfg(steps=80, ema_decay=0.9, checkpoint_every=40, log_every=20)
    first = train(x, cfg, wd, stop_after=1)           # fixed held-out batch, fixed noise: eval_loss
    assert first.step == 1
    last = train(x, cfg, wd)                           # resumes at step 1
    assert last.step == 80
    assert last.eval_loss < 0.7 * first.eval_loss, (first.eval_loss, last.eval_loss)
    model = load_denoiser(wd)
    assert model.prediction == "eps" and model.data_shape == (64,)
    xt = jnp.asarray(x[:8])
    np.testing.assert_allclose(np.asarray(model(xt, 0.3)), np.asarray(last.denoiser(xt, 0.3)), atol=1e-6)
    meta = json.load(open(os.path.join(wd, "model.json")))
    assert meta["cost"] > 0 and meta["flops_per_sample"] > 0
    lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
    assert any("loss" in r for r in lines) and any("eval_loss" in r for r in lines)


def test_wall_time_budget_stops_checkpointed_and_resumes(tmp_path, flat_digits):
    """train.max_minutes ends the call once the budget is spent (here: after the first step), with a
    checkpoint at that step; the next call resumes from it; 0 means no limit."""
    x, _ = flat_digits
    wd = str(tmp_path / "run")
    cfg = _mlp_cfg(steps=30, max_minutes=1e-6, checkpoint_every=10)
    assert train(x, cfg, wd).step == 1
    assert sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints")) if d.isdigit()) == [1]
    assert train(x, cfg, wd).step == 2
    assert train(x, cfg.replace(max_minutes=0.0), wd).step == 30


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, flat_digits):
    x, _ = flat_digits
    steps = 20
    script = textwrap.dedent(f"""
        import sys, time
        import stepwise.training as T
        from stepwise.data import load_digits
        orig = T.JsonlWriter.write_scalars
        def slow(self, step, scalars):
            orig(self, step, scalars); self.flush(); time.sleep(0.25)
        T.JsonlWriter.write_scalars = slow
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_denoisers_trained import _mlp_cfg
        x, _ = load_digits(8, flat=True)
        T.train(x, _mlp_cfg(steps={steps}), sys.argv[1])
        print("FINISHED")
    """)
    wd_killed = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-c", script, wd_killed], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = os.path.join(wd_killed, "checkpoints", "10")
    deadline = time.time() + 180
    while not os.path.isdir(ckpt) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, out
    assert "FINISHED" not in out
    done = [int(d) for d in os.listdir(os.path.join(wd_killed, "checkpoints")) if d.isdigit()]
    assert done and max(done) < steps

    resumed = train(x, _mlp_cfg(steps=steps), wd_killed)
    straight = train(x, _mlp_cfg(steps=steps), str(tmp_path / "straight"))
    assert resumed.step == straight.step == steps
    for a, b in zip(jax.tree.leaves(resumed.denoiser.params), jax.tree.leaves(straight.denoiser.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)

    def losses(wd):
        out = {}
        for line in open(os.path.join(wd, "metrics.jsonl")):
            r = json.loads(line)
            if "loss" in r:
                out[r["step"]] = r["loss"]
        return out
    la, lb = losses(wd_killed), losses(str(tmp_path / "straight"))
    nxt = max(done) + 1            # the first step the resumed run took
    assert la[nxt] == pytest.approx(lb[nxt], abs=1e-6)


# ---------------------------------------------------------------------------------------- contract
def test_flax_denoiser_contract_and_no_retrace():
    module = MLP(out_dim=16, **mlp_kwargs("small"), num_class_embeds=4)
    p1 = init_params(module, jax.random.key(0), (16,), 4)
    p2 = jax.tree.map(lambda a: a + 0.1, p1)
    m = FlaxDenoiser(module, p1, "v", VPCosine(), (16,), cost=2.0, null_class=3)
    assert m.prediction == "v" and m.cost == 2.0 and m.data_mean.shape == (16,)
    traces = []

    @eqx.filter_jit
    def f(model, x, t):
        traces.append(1)
        return model(x, t)

    x = jnp.ones((5, 16))
    a = f(m, x, 0.5)
    b = f(m.with_params(p2), x, jnp.full((5,), 0.5))
    c = f(m.with_params(p2), x, jnp.full((5,), 0.5))
    assert len(traces) == 2          # a scalar t and a (batch,) t; new params do not retrace
    assert not np.allclose(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
    # cond=None is the null class
    m2 = m.with_params(p2)      # the output layer starts at zero: use the perturbed weights
    np.testing.assert_allclose(np.asarray(m2(x, 0.5)), np.asarray(m2(x, 0.5, jnp.full((5,), 3))))
    assert not np.allclose(np.asarray(m2(x, 0.5)), np.asarray(m2(x, 0.5, jnp.zeros((5,), jnp.int32))))
    with pytest.raises(ValueError, match="shape"):
        m(jnp.ones((5, 8)), 0.5)


# ------------------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_parameterisation_round_trip(name):
    sched = SCHEDULES[name]
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x0 = jax.random.normal(k1, (6, 10), jnp.float64 if jax.config.x64_enabled else jnp.float32)
    eps = jax.random.normal(k2, x0.shape, x0.dtype)
    t = jnp.linspace(sched.t_min + 0.05 * (sched.t_max - sched.t_min), 0.9 * sched.t_max, 6).astype(x0.dtype)
    a, s = sched.alpha(t)[:, None], sched.sigma(t)[:, None]
    x = a * x0 + s * eps
    preds = {k: denoisers.from_x0_eps(x0, eps, k, x, t, sched) for k in ("eps", "x0", "v", "score", "flow")}
    np.testing.assert_allclose(preds["v"], a * eps - s * x0, rtol=1e-5, atol=1e-5)
    for kin in ("eps", "x0", "v", "flow"):
        rx0, reps = denoisers.to_x0_eps(preds[kin], kin, x, t, sched)
        np.testing.assert_allclose(rx0, x0, rtol=1e-3, atol=2e-3 * max(1.0, float(sched.t_max)))
        np.testing.assert_allclose(reps, eps, rtol=1e-3, atol=2e-3)
        for kout in ("eps", "x0", "v"):
            got = denoisers.convert(preds[kin], kin, kout, x, t, sched)
            np.testing.assert_allclose(got, preds[kout], rtol=1e-3, atol=2e-3 * max(1.0, float(sched.t_max)))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_eps_weighting_makes_losses_equal_across_parameterisations(name):
    """With loss_weighting="eps", an eps-error delta costs |delta|^2 whatever the prediction kind."""
    sched = SCHEDULES[name]
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    x0, eps = jax.random.normal(k1, (4, 8)), jax.random.normal(k2, (4, 8))
    delta = 0.1 * jax.random.normal(k3, (4, 8))
    t = jnp.linspace(sched.t_min + 0.1 * (sched.t_max - sched.t_min), 0.8 * sched.t_max, 4)
    x = sched.alpha(t)[:, None] * x0 + sched.sigma(t)[:, None] * eps
    want = jnp.sum(delta**2, axis=1)
    for kind in ("eps", "x0", "v", "flow"):
        exact = denoisers.from_x0_eps(x0, eps, kind, x, t, sched)
        x0_wrong = (x - sched.sigma(t)[:, None] * (eps + delta)) / sched.alpha(t)[:, None]
        wrong = denoisers.from_x0_eps(x0_wrong, eps + delta, kind, x, t, sched)
        w = loss_weight(kind, t, sched, "eps")
        np.testing.assert_allclose(w * jnp.sum((wrong - exact) ** 2, axis=1), want, rtol=2e-3)


def test_auto_weighting_per_parameterisation():
    """auto: eps-MSE for eps, the plain v-MSE for v (= x0-MSE * (SNR + 1) for VP), min-SNR for x0."""
    sched = VPLinear()
    t = jnp.linspace(0.05, 1.0, 7)
    snr = jnp.exp(2.0 * sched.lambda_(t))
    np.testing.assert_allclose(loss_weight("eps", t, sched, "auto"), 1.0)
    np.testing.assert_allclose(loss_weight("v", t, sched, "auto"), 1.0)
    # a v error delta is an x0 error -sigma*delta: v-MSE = x0-MSE / sigma^2 = x0-MSE * (SNR + 1)
    np.testing.assert_allclose(1.0 / sched.sigma(t) ** 2, snr + 1.0, rtol=1e-4)
    np.testing.assert_allclose(loss_weight("x0", t, sched, "auto"), jnp.minimum(snr, 5.0), rtol=1e-4)
    with pytest.raises(ValueError, match="allowed: \\['auto', 'eps', 'min_snr', 'uniform'\\]"):
        loss_weight("v", t, sched, "snr")


# ------------------------------------------------------------------------------------ diffusers
def test_diffusers_unet_import_parity(tmp_path):
    sys.modules.setdefault("torchvision._meta_registrations",
                           type(sys)("torchvision._meta_registrations"))  # torchvision vs torch 2.13
    import diffusers
    import torch
    from stepwise.denoisers.diffusers_import import load_diffusers_unet

    torch.manual_seed(0)
    net = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8, flip_sin_to_cos=False, freq_shift=1).eval()
    with torch.no_grad():      # zero-initialised layers would hide mapping mistakes
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.save_pretrained(str(tmp_path / "unet"))
    with open(tmp_path / "unet" / "scheduler_config.json", "w") as f:
        json.dump({"num_train_timesteps": 500, "beta_start": 2e-4, "beta_end": 0.03,
                   "beta_schedule": "linear"}, f)
    model = load_diffusers_unet(str(tmp_path / "unet"))
    assert model.prediction == "eps" and model.data_shape == (8, 8, 3)
    assert int(model.schedule.ts_grid.shape[0]) == 500
    np.testing.assert_allclose(np.exp(2 * np.asarray(model.schedule.log_alphas)),
                               np.cumprod(1 - np.linspace(2e-4, 0.03, 500)), rtol=1e-6)
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    for n in (0, 7, 250, 499):
        with torch.no_grad():
            ref = net(torch.from_numpy(x), n).sample.numpy()
        out = np.asarray(model(jnp.asarray(x.transpose(0, 2, 3, 1)), (n + 1) / 500)).transpose(0, 3, 1, 2)
        assert np.abs(out - ref).max() <= 1e-4, (n, np.abs(out - ref).max())
        assert np.abs(ref).max() > 0.1


# ---------------------------------------------------------------------------------------- loaders
def test_digits_loader_shapes():
    x, y = load_digits(16)
    assert x.shape == (1797, 16, 16, 1) and x.dtype == np.float32 and y.shape == (1797,)
    assert x.min() >= -1.0 and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    assert load_digits(8, flat=True)[0].shape == (1797, 64)


def test_image_folder_and_npz_loaders(tmp_path):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no usable"):
        load_image_folder(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="no usable"):
        load_image_folder(str(broken))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.full((6, 6), 255, np.uint8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="different shapes"):
        load_image_folder(str(mixed))
    ok = load_image_folder(str(mixed), size=4)
    assert ok.shape == (2, 4, 4, 1) and ok[0].max() == -1.0 and ok[1].min() == 1.0
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(mixed / "c.jpg")
    assert load_image_folder(str(mixed), size=4, grayscale=True).shape == (3, 4, 4, 1)
    with pytest.raises(FileNotFoundError):
        load_image_folder(str(tmp_path / "missing"))

    np.savez(tmp_path / "u8.npz", images=np.full((3, 4, 4), 255, np.uint8), labels=np.arange(3))
    x, y = load_npz(str(tmp_path / "u8.npz"))
    assert x.shape == (3, 4, 4, 1) and np.all(x == 1.0) and list(y) == [0, 1, 2]
    np.savez(tmp_path / "bad.npz", images=np.full((3, 4, 4), 3.0, np.float32))
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        load_npz(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "lab.npz", images=np.zeros((3, 4, 4), np.float32), labels=np.arange(2))
    with pytest.raises(ValueError, match="labels"):
        load_npz(str(tmp_path / "lab.npz"))


def test_fashion_mnist_loader(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", path=str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("valid")
    fixture = write_fashion_fixture(tmp_path / "fixture", n_train=20, n_test=10)
    xf, yf = load_fashion_mnist("train", path=fixture)
    assert xf.shape == (20, 28, 28) and xf.min() >= -1.0 and xf.max() <= 1.0 and yf.tolist() == [i % 10 for i in range(20)]
    # the real data (Debian's dataset-fashion-mnist)
    require(os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
            "Debian's dataset-fashion-mnist")
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.float32 and y.shape == (10000,)
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [1000] * 10
    xp, yp = load_fashion_mnist("test", pad_to_32=True)
    assert xp.shape == (10000, 32, 32) and np.all(xp[:, :2] == -1.0) and np.all(xp[:, 2:30, 2:30] == x)
    xtr, ytr = load_fashion_mnist("train")
    assert xtr.shape == (60000, 28, 28) and np.bincount(ytr).tolist() == [6000] * 10


# -------------------------------------------------------------------------------------------- CLI
def test_train_command_runs_from_namespace(tmp_path, capsys):
    from stepwise.cli import defaults
    from stepwise.cli.commands import train as cmd

    c = defaults.get_config()
    c.train.update(dict(dataset="digits", image_size=8, flat=True, arch="mlp", steps=4, batch_size=16,
                        measure_cost=False, log_every=2, checkpoint_every=2, warmup_steps=1))
    wd = tmp_path / "cli"
    assert cmd.run(argparse.Namespace(config=c, workdir=str(wd))) == 0
    assert "trained to step 4" in capsys.readouterr().out
    assert load_denoiser(str(wd), which="latest").data_shape == (64,)
    c.train.dataset, c.train.data_path = "npz", str(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):   # the CLI's main turns it into exit 2
        cmd.run(argparse.Namespace(config=c, workdir=str(tmp_path / "cli2")))


@pytest.mark.slow
def test_unet_presets_cost_ratio():
    """large costs about 10x small, xl more (XLA FLOPs at batch 256: deterministic)."""
    from stepwise.denoisers.unet import UNet, forward_flops, unet_kwargs

    flops = {}
    for preset in ("small", "large", "xl"):
        module = UNet(out_channels=1, **unet_kwargs(preset))
        m = FlaxDenoiser(module, init_params(module, jax.random.key(0), (16, 16, 1)), "eps", VPLinear(),
                         (16, 16, 1))
        flops[preset] = forward_flops(m)
    assert 7.0 < flops["large"] / flops["small"] < 13.0, flops
    assert flops["xl"] > 2 * flops["large"], flops


# ------------------------------------------------------------------------------------ patchified UNet
def test_space_to_depth_layout_and_inverse():
    """Pixel (i, j) of patch-image position (I, J) is x[p*I + di, p*J + dj] at channel (di*p + dj)*C + c."""
    from stepwise.denoisers.unet import depth_to_space, space_to_depth

    x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
    s = np.asarray(space_to_depth(x, 2))
    assert s.shape == (2, 3, 2, 12)
    xn = np.asarray(x)
    for I in range(3):
        for J in range(2):
            for di in range(2):
                for dj in range(2):
                    np.testing.assert_array_equal(s[:, I, J, (di * 2 + dj) * 3:(di * 2 + dj + 1) * 3],
                                                  xn[:, 2 * I + di, 2 * J + dj, :])
    np.testing.assert_array_equal(np.asarray(depth_to_space(space_to_depth(x, 2), 2)), xn)
    assert space_to_depth(x, 1) is x
    with pytest.raises(ValueError, match="patch_size 4 must divide the image size 6x4"):
        space_to_depth(x, 4)


def test_patched_unet_shape_cost_and_trains_and_reloads(tmp_path):
    """patch_size=2 keeps the data shape, costs about 1/4 of the unpatched network (XLA FLOPs),
    rejects bad sizes naming the field, and survives training -> model.json -> load_denoiser."""
    from stepwise.denoisers.unet import UNet, forward_flops, unet_kwargs

    flops = {}
    for p in (1, 2):
        module = UNet(out_channels=1, **unet_kwargs("small", patch_size=p))
        params = init_params(module, jax.random.key(0), (16, 16, 1))
        m = FlaxDenoiser(module, params, "eps", VPLinear(), (16, 16, 1))
        assert m(jnp.ones((3, 16, 16, 1)), 0.5).shape == (3, 16, 16, 1)
        flops[p] = forward_flops(m)
    assert 3.0 < flops[1] / flops[2] < 5.0, flops
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        UNet(out_channels=1, **unet_kwargs("small", patch_size=0)).init(
            jax.random.key(0), jnp.ones((1, 16, 16, 1)), jnp.zeros((1,)))

    x, _ = load_digits(16)
    c = TrainOptions(arch="unet", preset="small", image_size=16, steps=3, batch_size=8, measure_cost=False,
                     log_every=1, checkpoint_every=3, warmup_steps=1, eval_examples=16,
                     network_overrides={"patch_size": 2})
    r = train(x, c, str(tmp_path / "p2"))
    loaded = load_denoiser(str(tmp_path / "p2"), which="latest")
    assert loaded.module.patch_size == 2
    xt = jax.random.normal(jax.random.key(1), (4, 16, 16, 1))
    out = np.asarray(r.denoiser(xt, 0.3))
    assert np.abs(out).max() > 1e-4            # the zero-initialised output layer has moved
    np.testing.assert_allclose(np.asarray(loaded(xt, 0.3)), out, atol=1e-6)
