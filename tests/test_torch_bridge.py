"""PyTorch denoisers inside the compiled sampler (torchax bridge): parity with the torch forward,
one compile for many plans, gradients through the whole sampler, offline loading."""
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import torch_stack

torch, diffusers = torch_stack()

from stepwise import samplers, solvers  # noqa: E402
from stepwise.denoisers import torch_bridge as tb  # noqa: E402
from stepwise.samplers.executor import trace_count  # noqa: E402

T = np.array([0.9, 0.5, 0.02], np.float32)


def tiny_unet(seed=0, **kw):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=4, **kw).eval()


def nchw(x):
    return torch.tensor(np.transpose(x, (0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.mark.parametrize("kind,pred", [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")])
def test_unet2d_forward_matches_torch(unet, kind, pred):
    d = tb.from_unet2d(unet, {"prediction_type": kind, "beta_schedule": "linear"})
    assert d.prediction == pred and d.data_shape == (8, 8, 1)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        ref = nhwc(unet(nchw(x), torch.tensor(T * 1000 - 1)).sample)   # step n = N t - 1
    np.testing.assert_allclose(np.asarray(d(jnp.asarray(x), jnp.asarray(T))), ref, atol=1e-5)
    assert d.cost > 1e4  # FLOPs per sample from XLA's cost analysis, not a placeholder


def test_low_precision_runs_the_bridged_network_in_bfloat16(unet):
    """denoisers.LowPrecision(bridged) computes the network in bfloat16: every convolution of the
    lowered call takes bfloat16 operands, and the output differs from torch's float32 forward by far
    more than rounding that forward to bfloat16 would (it is not a float32 computation cast at the
    end); the sampler keeps its float32 state."""
    from stepwise import denoisers

    d = tb.from_unet2d(unet, {"prediction_type": "epsilon"})
    low = denoisers.LowPrecision(d, "bfloat16")
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        ref32 = nhwc(unet(nchw(x), torch.tensor(T * 1000 - 1)).sample)
    hlo = jax.jit(lambda x, t: low(x, t)).lower(jnp.asarray(x), jnp.asarray(T)).as_text()
    convs = [ln for ln in hlo.splitlines() if "stablehlo.convolution" in ln]
    assert convs and all("bf16" in ln and "f32" not in ln for ln in convs), convs[:2]
    got = low(jnp.asarray(x), jnp.asarray(T))
    assert got.dtype == jnp.bfloat16
    rounding = np.abs(np.asarray(jnp.asarray(ref32).astype(jnp.bfloat16).astype(jnp.float32)) - ref32).max()
    assert np.abs(np.asarray(got.astype(jnp.float32)) - ref32).max() > 4 * rounding
    plan = solvers.build_preset("dpm_solver_pp", 3, d.schedule, "logsnr", order=2)
    out = samplers.sample(low, d.schedule, plan, jnp.asarray(x))
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_unet2d_condition_forward_and_null_embedding():
    torch.manual_seed(1)
    cu = diffusers.UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=12,
                                        norm_num_groups=4, attention_head_dim=4).eval()
    rng = np.random.default_rng(1)
    null = rng.normal(size=(3, 12)).astype(np.float32)
    d = tb.from_unet2d_condition(cu, None, null_embedding=null)
    x, emb = rng.normal(size=(3, 8, 8, 1)).astype(np.float32), rng.normal(size=(3, 3, 12)).astype(np.float32)
    with torch.no_grad():
        ref = nhwc(cu(nchw(x), torch.tensor(T * 1000 - 1), encoder_hidden_states=torch.tensor(emb)).sample)
        ref_null = nhwc(cu(nchw(x), torch.tensor(T * 1000 - 1),
                           encoder_hidden_states=torch.tensor(np.broadcast_to(null, emb.shape).copy())).sample)
    np.testing.assert_allclose(np.asarray(d(jnp.asarray(x), jnp.asarray(T), jnp.asarray(emb))), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(d(jnp.asarray(x), jnp.asarray(T))), ref_null, atol=1e-5)
    # guidance builds the unconditional half from the model's null embedding, not from label -1
    from stepwise.denoisers import guided_x0_eps, x0_eps
    g, t = jnp.asarray(3.0), jnp.asarray(0.5)
    x0g, _ = guided_x0_eps(d, jnp.asarray(x), t, jnp.asarray(emb), g)
    x0c, _ = x0_eps(d, jnp.asarray(x), t, jnp.asarray(emb))
    x0u, _ = x0_eps(d, jnp.asarray(x), t, None)
    np.testing.assert_allclose(np.asarray(x0g), np.asarray(x0u + 3.0 * (x0c - x0u)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="null_embedding"):
        tb.from_unet2d_condition(cu, None)


def test_dit_forward_null_class_and_learned_sigma():
    torch.manual_seed(2)
    dit = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2, out_channels=4,
                                          num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=5).eval()
    d = tb.from_dit(dit)
    assert d.num_classes == 5 and d.data_shape == (8, 8, 2)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 2)).astype(np.float32)
    with torch.no_grad():   # label -1 is the unconditional class = DiT's extra row (index 5)
        ref = nhwc(dit(nchw(x), timestep=torch.tensor(T * 1000 - 1), class_labels=torch.tensor([1, 5, 4])).sample[:, :2])
    out = d(jnp.asarray(x), jnp.asarray(T), jnp.asarray([1, -1, 4]))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


class EDMNet(torch.nn.Module):
    """A tiny EDM-preconditioned network: D(x; s) = c_skip x + c_out F(c_in x, c_noise)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.f = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x, sigma):
        sd = 0.5
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), s.log() / 4
        h = torch.cat([c_in * x, c_noise.expand_as(x)], dim=1)
        return c_skip * x + c_out * self.f(h)


def test_edm_forward_and_sampling():
    net = EDMNet().eval()
    d = tb.from_edm(net, (8, 8, 1))
    assert d.prediction == "x0" and float(d.schedule.t_max) == 80.0
    sig = np.array([80.0, 1.0, 0.01], np.float32)
    x = np.random.default_rng(3).normal(size=(3, 8, 8, 1)).astype(np.float32) * sig[:, None, None, None]
    with torch.no_grad():
        ref = nhwc(net(nchw(x), torch.tensor(sig)))
    np.testing.assert_allclose(np.asarray(d(jnp.asarray(x), jnp.asarray(sig))), ref, atol=1e-5)
    plan = solvers.build_preset("heun", 7, d.schedule, "karras")
    out = samplers.sample(d, d.schedule, plan, jax.random.normal(jax.random.key(0), (2, 8, 8, 1)) * 80.0)
    assert np.isfinite(np.asarray(out)).all()


def test_bridged_model_compiles_once_for_many_plans(unet):
    d = tb.from_unet2d(unet)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    plans = [solvers.build_preset(n, 5, d.schedule, disc, **kw) for n, disc, kw in
             [("dpm_solver_pp", "logsnr", {"order": 2}), ("unipc", "time_uniform", {"order": 3}),
              ("ipndm", "time_quadratic", {}), ("ddim", "logsnr", {})]]
    samplers.sample(d, d.schedule, plans[0], x).block_until_ready()
    before = trace_count()
    outs = [np.asarray(samplers.sample(d, d.schedule, p, x)) for p in plans]
    assert trace_count() == before
    assert not np.allclose(outs[0], outs[2])    # the plans really differ


@pytest.mark.slow
def test_grad_through_sampler_matches_finite_differences(unet):
    d = tb.from_unet2d(unet)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    base = solvers.build_preset("dpm_solver_pp", 4, d.schedule, "logsnr", order=2)

    def loss(t1):
        plan = eqx.tree_at(lambda p: p.ts, base, base.ts.at[2].set(t1))
        return jnp.mean(jnp.tanh(samplers.sample(d, d.schedule, plan, x)))

    t1 = base.ts[2]
    g = float(jax.grad(loss)(t1))
    h = 2e-3
    fd = float((loss(t1 + h) - loss(t1 - h)) / (2 * h))
    assert np.isfinite(g) and g != 0.0
    assert abs(g - fd) <= 0.05 * abs(fd) + 1e-4, (g, fd)


def test_load_directory_safetensors_and_pipeline_dir(tmp_path, unet):
    from safetensors.torch import save_file
    unet.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "prediction_type": "v_prediction", "beta_schedule": "linear",
         "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}))
    a = tb.load_diffusers(str(tmp_path / "model"))
    assert a.prediction == "v"
    save_file(unet.state_dict(), str(tmp_path / "weights.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(dict(unet.config)))
    b = tb.load_diffusers(str(tmp_path / "weights.safetensors"))
    assert b.prediction == "eps"              # no scheduler config beside it: DDPM's epsilon
    pipe = tmp_path / "pipe"
    unet.save_pretrained(pipe / "unet")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    (pipe / "scheduler").mkdir()
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "sample"}))
    c = tb.load_diffusers(str(pipe))
    assert c.prediction == "x0"
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
    outs = [np.asarray(m(x, jnp.asarray([0.7, 0.1]))) for m in (a, b, c)]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-6)
    with pytest.raises(ValueError, match="_class_name"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
        tb.load_diffusers(str(tmp_path / "bad"))
    with pytest.raises(FileNotFoundError, match="model.path"):
        tb.load_diffusers(str(tmp_path / "missing"))


@pytest.mark.slow
def test_bridge_agrees_with_the_flax_import(tmp_path, unet):
    """Two independent paths from one checkpoint: torch through torchax, and the weights converted
    into stepwise's Flax UNet (denoisers.diffusers_import)."""
    from stepwise.denoisers.diffusers_import import load_diffusers_unet
    unet.save_pretrained(tmp_path / "m")
    flax_model = load_diffusers_unet(str(tmp_path / "m"))
    bridged = tb.load_diffusers(str(tmp_path / "m"))
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
    t = jnp.asarray([0.95, 0.3])
    np.testing.assert_allclose(np.asarray(bridged(x, t)), np.asarray(flax_model(x, t)), atol=2e-4)


def _cli(*args, cwd=None):
    import subprocess
    import sys
    from _helpers import TORCHVISION_SHIM
    return subprocess.run([sys.executable, "-c", f"{TORCHVISION_SHIM}; from stepwise.cli import main; raise SystemExit(main())",
                           *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_cli_searches_and_samples_a_local_diffusers_model(tmp_path, unet):
    """`stepwise search --config.model.kind=diffusers --config.model.path=DIR` (paired RMSE to the
    bridged model's own reference solve; the final comparison on fresh noise by the paired Fréchet
    distance), then `stepwise sample --config.plan=<schedule.json>` on the same directory runs the
    searched plan: its samples equal samplers.sample of the loaded plan, with the bridged model here,
    on sample's noise of seed 0. A schedule the model was not trained with, or a missing directory,
    is refused by name."""
    from stepwise.cli.commands.sample import batch_noise
    from stepwise.search.schedule_file import load_plan

    unet.save_pretrained(tmp_path / "m")
    model = ["--config.model.kind=diffusers", f"--config.model.path={tmp_path / 'm'}", "--config.schedule=vp_discrete"]
    r = _cli("search", "--workdir", str(tmp_path / "s"), *model, "--config.nfe=3",
             "--config.search.objective=teacher_rmse", "--config.search.strategy=evolution",
             "--config.search.generations=1", "--config.search.population=3", "--config.search.top_k=2",
             "--config.search.children=2", "--config.search.timesteps_only_generations=0",
             "--config.search.search_samples=8", "--config.search.batch_size=8",
             "--config.search.final_samples=8", "--config.search.final_top_baselines=1",
             "--config.search.final_tuned_baselines=0", "--config.search.final_reference=True")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["evaluations"] >= 5 and np.isfinite(summary["search_score"])
    paired = summary["comparisons"]["frechet_to_reference"]          # the paired headline metric
    assert paired["plan"]["n"] == 8 and paired["plan"]["low"] <= paired["plan"]["value"] <= paired["plan"]["high"]
    bridged = tb.load_diffusers(str(tmp_path / "m"))
    plan = load_plan(tmp_path / "s" / "schedule.json", bridged.schedule)
    assert plan.nfe() == 3
    r = _cli("sample", "--workdir", str(tmp_path / "smp"), *model, f"--config.plan={tmp_path / 's' / 'schedule.json'}",
             "--config.num_samples=4", "--config.batch_size=4", "--config.reference_samples=0")
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(tmp_path / "smp" / "samples.npz") as f:
        got = f["samples"]
    x_T = batch_noise(0, 0, 0, 4, (8, 8, 1), bridged.schedule)     # sample's noise: seed 0, process 0, batch 0
    want = np.asarray(samplers.sample(bridged, bridged.schedule, plan, x_T))
    assert got.shape == (4, 8, 8, 1) and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-5)
    r = _cli("sample", "--workdir", str(tmp_path / "run2"), "--config.model.kind=diffusers",
             f"--config.model.path={tmp_path / 'm'}", "--config.schedule=vp_linear")
    assert r.returncode == 2 and "config.schedule" in r.stderr
    r = _cli("sample", "--workdir", str(tmp_path / "run3"), "--config.model.kind=diffusers",
             f"--config.model.path={tmp_path / 'nope'}", "--config.schedule=vp_discrete")
    assert r.returncode == 2 and "model.path" in r.stderr


SHARDED = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
{shim}
import jax, jax.numpy as jnp, numpy as np, torch, diffusers
from stepwise import samplers, solvers
from stepwise.denoisers import torch_bridge as tb
torch.manual_seed(0)
unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
d = tb.from_unet2d(unet, {{"prediction_type": "sample"}})
plan = solvers.build_preset("unipc", 4, d.schedule, "logsnr", order=2)
x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
one = np.asarray(samplers.sample(d, d.schedule, plan, x, devices=jax.local_devices()[:1]))
many = samplers.sample(d, d.schedule, plan, x)          # default: every local device (batch padded to 8)
print(json.dumps({{"devices": jax.local_device_count(), "diff": float(np.abs(np.asarray(many) - one).max()),
                  "shape": list(many.shape)}}))
"""


@pytest.mark.slow
def test_bridged_model_shards_over_devices():
    import json
    import subprocess
    import sys
    from _helpers import TORCHVISION_SHIM
    r = subprocess.run([sys.executable, "-c", SHARDED.format(shim=TORCHVISION_SHIM)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["shape"] == [6, 8, 8, 1]
    assert out["diff"] < 1e-5, out


@pytest.mark.slow
def test_cli_stitches_a_pair_of_local_diffusers_models(tmp_path):
    """`stepwise stitch --config.stitch.pair=checkpoints` on two saved diffusers UNets of different
    width: T-Stitch sweep over presets, joint search per budget, paired comparison, report; costs are
    the bridged models' XLA FLOPs (small < large) and each plan's cost is its model column's."""
    from stepwise.search.schedule_file import load_plan

    def unet_of(width, seed):
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=width,
                                     layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()

    unet_of((4, 8), 0).save_pretrained(tmp_path / "small")
    unet_of((8, 16), 1).save_pretrained(tmp_path / "large")
    run = tmp_path / "run"
    r = _cli("stitch", "--config", "configs/stitch_digits.py", "--workdir", str(run),
             "--config.stitch.pair=checkpoints", f"--config.stitch.small_checkpoint={tmp_path / 'small'}",
             f"--config.stitch.large_checkpoint={tmp_path / 'large'}", "--config.schedule=vp_discrete",
             "--config.nfe=3", "--config.stitch.num_samples=128", "--config.stitch.batch_size=128",
             "--config.stitch.points=2", "--config.stitch.search_samples=128", "--config.stitch.generations=1",
             "--config.stitch.population=3", "--config.stitch.children=2", "--config.stitch.cost_batch=8",
             "--config.stitch.model_only=False", "--config.stitch.resamples=20",
             "--config.stitch.tstitch_presets=2", cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((run / "stitch.json").read_text())
    small_cost, large_cost = s["costs"]["declared"]
    assert 0 < small_cost < large_cost
    rel = small_cost / large_cost
    for row in s["sweep"]:       # the points=2 sweep points run one model: cost = NFE x its relative cost
        assert row["nfe"] == 3 and np.isfinite(row["quality"])
        assert 3 * rel - 1e-9 <= row["cost"] <= 3 + 1e-9
        if row["sweep_point"]:
            (m,) = set(row["model_column"])
            assert row["cost"] == pytest.approx(row["nfe"] * (1.0 if m == 1 else rel))
    assert {row["fraction"] for row in s["sweep"] if row["sweep_point"]} == {0.0, 1.0}
    assert len(s["tstitch_presets"]) == 3
    for name in s["tstitch_presets"]:   # the budget comparison still sees T-Stitch at every k
        ks = sorted(r["small_steps"] for r in s["sweep"] if r["preset"] == name)
        assert ks == list(range(ks[-1] + 1)) and len(ks) >= 3   # more than the 2 sweep points
    assert len(s["comparison"]) == 2
    for c in s["comparison"]:
        assert "[" in c["T-Stitch quality"] and "[" in c["joint quality"]
        assert c["joint cost"] <= c["budget"] * (1 + 1e-9)
    for f in ("report.md", "report.html", "costs.json"):
        assert (run / f).exists(), f
    fronts = sorted((run / "front" / "joint").glob("front_*.json"))
    assert len(fronts) == 2 and all(load_plan(f).nfe() == 3 for f in fronts)
