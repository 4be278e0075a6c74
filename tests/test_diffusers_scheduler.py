"""StepwiseScheduler: a schedule file run by diffusers pipelines reproduces stepwise's sampler."""
import json
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import TORCHVISION_SHIM, torch_stack

torch, diffusers = torch_stack()

from stepwise import samplers, solvers  # noqa: E402
from stepwise.denoisers import torch_bridge as tb  # noqa: E402
from stepwise.integrations import StepwiseScheduler  # noqa: E402
from stepwise.search.schedule_file import save_plan  # noqa: E402
from stepwise.solvers.presets import PRESETS  # noqa: E402


def small_unet(seed=0):
    """A random UNet2DModel whose outputs are scaled down, so samples stay O(1)."""
    torch.manual_seed(seed)
    m = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                              layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)
    with torch.no_grad():
        m.conv_out.weight.mul_(0.05)
        m.conv_out.bias.zero_()
    return m.eval()


@pytest.fixture(scope="module")
def unet():
    return small_unet()


@pytest.fixture(scope="module")
def bridged(unet):
    return tb.from_unet2d(unet)


def run_loop(sched, model_fn, x_T, guidance_fn=None):
    """The loop every diffusers pipeline runs (scale_model_input, model, step)."""
    sched.set_timesteps(sched.num_inference_steps)
    x = x_T
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        with torch.no_grad():
            out = model_fn(inp, t, sched.guidance_scale)
        x = sched.step(out, t, inp).prev_sample
    return x


def _plans(schedule):
    out = []
    for name, p in sorted(PRESETS.items()):
        for order in ([1, 2, 3] if "order" in p.options else [None]):
            kw = {"order": order} if order else {}
            out.append((f"{name}-{order}", solvers.build_preset(name, 6, schedule, "time_uniform", **kw)))
    rng = np.random.default_rng(0)   # a random mixed plan: every column varies per step
    base = solvers.build_preset("unipc", 6, schedule, "logsnr", order=3)
    mixed = solvers.make_plan(base.ts, prediction=list(rng.choice(["data", "noise"], 6)),
                              order=[1, 2, 2, 3, 1, 2], variant=list(rng.choice(["taylor", "bh2", "dpmsolver"], 6)),
                              expansion=list(rng.choice(["lambda", "t", "sigma"], 6)),
                              corrector=["unic", "none", "reeval", "unic", "none", "unic"])
    out.append(("mixed", mixed))
    afs = eqx.tree_at(lambda p: p.analytic_first, solvers.build_preset("ipndm", 5, schedule, "time_quadratic"),
                      jnp.asarray(1, jnp.int32))
    out.append(("afs", afs))
    corr = solvers.build_preset("dpm_solver_pp", 5, schedule, "logsnr", order=2)
    corr = eqx.tree_at(lambda p: p.corrections, corr, jnp.asarray(rng.normal(0, 0.05, (5, solvers.HISTORY + 1))))
    out.append(("corrections", corr))
    return out


def test_every_preset_mixed_afs_and_corrections_match_the_sampler(tmp_path, unet, bridged):
    x_T = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    unet64 = small_unet().double()
    worst = {}
    with jax.enable_x64(True):
        for name, plan in _plans(bridged.schedule):
            save_plan(tmp_path / f"{name}.json", plan)
            s = StepwiseScheduler.from_schedule_file(tmp_path / f"{name}.json")
            assert s.num_inference_steps == plan.nfe() == len(s.timesteps)
            out = run_loop(s, lambda x, t, g: unet64(x, t).sample, x_T).permute(0, 2, 3, 1).numpy()
            ref = np.asarray(samplers.sample(bridged, bridged.schedule, plan,
                                             jnp.asarray(x_T.permute(0, 2, 3, 1).numpy())))
            worst[name] = float(np.abs(out - ref).max())
    assert max(worst.values()) <= 1e-4, worst
    assert len(worst) >= 20


def test_guided_plan_with_per_step_scale(tmp_path):
    """A class-conditional plan whose guidance changes per step, run the way CFG pipelines do
    (doubled batch, pred_u + w (pred_c - pred_u) with w = scheduler.guidance_scale)."""
    torch.manual_seed(5)
    m = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                              layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=4).eval()
    with torch.no_grad():
        m.conv_out.weight.mul_(0.01)
        m.conv_out.bias.zero_()
    d = tb.from_unet2d(m, null_class=3)    # this network's "unconditional" class for the test: label 3
    ts = solvers.build_preset("dpm_solver_pp", 5, d.schedule, "logsnr").ts
    plan = solvers.make_plan(ts, order=[1, 2, 2, 2, 2], guidance=[3.0, 2.0, 1.5, 1.0, 1.0])
    save_plan(tmp_path / "g.json", plan)
    s = StepwiseScheduler.from_schedule_file(tmp_path / "g.json")
    assert s.guidance_scales == [3.0, 2.0, 1.5, 1.0, 1.0]
    labels = torch.tensor([1, 2])
    null = torch.tensor([3, 3])

    def model(x, t, g):
        both = m(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
        c, u = both.chunk(2)
        return u + g * (c - u) if g != 1.0 else m(x, t, class_labels=labels).sample

    x_T = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    out = run_loop(s, model, x_T).permute(0, 2, 3, 1).numpy()
    ref = samplers.sample(d, d.schedule, plan, jnp.asarray(x_T.permute(0, 2, 3, 1).numpy()),
                          cond=jnp.asarray([1, 2]))
    np.testing.assert_allclose(out, np.asarray(ref), rtol=1e-5, atol=1e-4)   # float32 on both sides


SAMPLE = {"prediction_type": "sample"}   # x0-predicting random nets keep samples O(1) (an eps net near 0 would not)


def test_ddpm_pipeline_end_to_end(tmp_path, unet):
    bridged = tb.from_unet2d(unet, SAMPLE)
    plan = solvers.build_preset("unipc", 6, bridged.schedule, "logsnr", order=2)
    save_plan(tmp_path / "p.json", plan)
    s = StepwiseScheduler.from_schedule_file(tmp_path / "p.json", SAMPLE)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=s)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, num_inference_steps=s.num_inference_steps,
                  generator=torch.Generator().manual_seed(7), output_type="np").images
    x_T = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    ref = samplers.sample(bridged, bridged.schedule, plan, jnp.asarray(x_T.permute(0, 2, 3, 1).numpy()))
    ref = np.clip(np.asarray(ref) / 2 + 0.5, 0, 1)
    assert 0.05 < float(np.mean((ref > 0) & (ref < 1)))   # not all clipped: the comparison has content
    np.testing.assert_allclose(images, ref, atol=1e-4)
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(num_inference_steps=50)


def test_dit_pipeline_end_to_end_with_guidance(tmp_path):
    torch.manual_seed(6)
    dit = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                          num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=1000).eval()
    with torch.no_grad():
        dit.proj_out_2.weight.mul_(0.05)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                  norm_num_groups=4, sample_size=4).eval()
    d = tb.from_dit(dit, SAMPLE)
    plan = solvers.build_preset("dpm_solver_pp", 5, d.schedule, "logsnr", order=2)
    plan = eqx.tree_at(lambda p: p.guidance, plan, jnp.full((5,), 2.5))
    save_plan(tmp_path / "p.json", plan)
    s = StepwiseScheduler.from_schedule_file(tmp_path / "p.json", SAMPLE)
    pipe = diffusers.DiTPipeline(transformer=dit, vae=vae, scheduler=s)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=[3, 7], guidance_scale=2.5, num_inference_steps=s.num_inference_steps,
                  generator=torch.Generator().manual_seed(8), output_type="np").images
    x_T = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(8))
    lat = samplers.sample(d, d.schedule, plan, jnp.asarray(x_T.permute(0, 2, 3, 1).numpy()), cond=jnp.asarray([3, 7]))
    with torch.no_grad():
        dec = vae.decode(torch.tensor(np.asarray(lat)).permute(0, 3, 1, 2) / vae.config.scaling_factor).sample
    ref = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert 0.05 < float(np.mean((ref > 0) & (ref < 1)))
    np.testing.assert_allclose(images, ref, atol=1e-4)


def test_refusals(tmp_path, bridged):
    sched = bridged.schedule
    stitched = solvers.t_stitch(solvers.build_preset("ddim", 4, sched, "logsnr"), 0.5)
    save_plan(tmp_path / "s.json", stitched)
    with pytest.raises(ValueError, match="models \\[0, 1\\]"):
        StepwiseScheduler.from_schedule_file(tmp_path / "s.json")
    afs = eqx.tree_at(lambda p: p.analytic_first, solvers.build_preset("ddim", 4, sched, "logsnr"), jnp.asarray(1, jnp.int32))
    save_plan(tmp_path / "a.json", afs)
    s = StepwiseScheduler.from_schedule_file(tmp_path / "a.json")
    with pytest.raises(ValueError, match="scale_model_input"):
        s.step(torch.zeros(1, 1, 8, 8), s.timesteps[0], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="prediction_type"):
        StepwiseScheduler.from_schedule_file(tmp_path / "a.json", {"prediction_type": "flow"})
    out = tmp_path / "bad.json"
    out.write_text(json.dumps({**json.loads((tmp_path / "a.json").read_text()), "ts": [5.0, 0.5, 0.2, 0.1, 0.001]}))
    with pytest.raises(ValueError, match="ts"):
        StepwiseScheduler.from_schedule_file(out)   # outside the discrete schedule's domain
    ddim = solvers.build_preset("ddim", 4, sched, "logsnr")
    save_plan(tmp_path / "k.json", ddim.replace(skip=np.eye(4, 6, dtype=np.int32)))
    with pytest.raises(ValueError, match="skips network units per step"):
        StepwiseScheduler.from_schedule_file(tmp_path / "k.json")


def test_export_writes_a_loadable_scheduler(tmp_path, unet, bridged):
    plan = solvers.build_preset("unipc", 5, bridged.schedule, "logsnr", order=3)
    save_plan(tmp_path / "p.json", plan)
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "prediction_type": "epsilon", "num_train_timesteps": 1000}))
    cmd = [sys.executable, "-c", f"{TORCHVISION_SHIM}; from stepwise.cli import main; raise SystemExit(main())",
           "export", str(tmp_path / "p.json"), "--to", "diffusers-scheduler", "--out", str(tmp_path / "out"),
           "--scheduler-config", str(tmp_path / "sc")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "every per-step decision kept" in r.stdout
    loaded = StepwiseScheduler.from_pretrained(str(tmp_path / "out"))
    direct = StepwiseScheduler.from_schedule_file(tmp_path / "p.json")
    x_T = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    fn = lambda x, t, g: unet(x, t).sample
    np.testing.assert_array_equal(run_loop(loaded, fn, x_T).numpy(), run_loop(direct, fn, x_T).numpy())
    r = subprocess.run([sys.executable, "-m", "stepwise", "export", str(tmp_path / "p.json"), "--to", "comfyui",
                        "--schedule", "vp_discrete"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stderr and "corrector (none, unic)" in r.stderr
    assert len(json.loads(r.stdout)["sigmas"]) == plan.num_steps + 2


def test_stable_diffusion_pipeline_with_per_step_guidance(tmp_path):
    """A tiny StableDiffusionPipeline (prompt embeddings given directly: no tokenizer needed) runs
    a plan whose guidance changes per step, through ``guidance_callback``."""
    torch.manual_seed(9)
    unet = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                          layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=12,
                                          norm_num_groups=4, attention_head_dim=4).eval()
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.05)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                  norm_num_groups=4, sample_size=8).eval()
    rng = np.random.default_rng(9)
    emb = torch.tensor(rng.normal(size=(2, 3, 12)), dtype=torch.float32)
    null = torch.tensor(rng.normal(size=(3, 12)), dtype=torch.float32)
    d = tb.from_unet2d_condition(unet, SAMPLE, null_embedding=null.numpy())
    ts = solvers.build_preset("dpm_solver_pp", 5, d.schedule, "logsnr").ts
    plan = solvers.make_plan(ts, order=[1, 2, 2, 2, 2], guidance=[3.0, 2.5, 2.0, 1.5, 1.5])
    save_plan(tmp_path / "p.json", plan)
    s = StepwiseScheduler.from_schedule_file(tmp_path / "p.json", SAMPLE)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=s,
                                            safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = pipe(prompt_embeds=emb, negative_prompt_embeds=null[None].expand(2, -1, -1).contiguous(),
                   guidance_scale=s.guidance_scales[0], num_inference_steps=s.num_inference_steps,
                   callback_on_step_end=s.guidance_callback, generator=torch.Generator().manual_seed(10),
                   output_type="latent").images
    x_T = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(10))
    ref = samplers.sample(d, d.schedule, plan, jnp.asarray(x_T.permute(0, 2, 3, 1).numpy()), cond=jnp.asarray(emb.numpy()))
    np.testing.assert_allclose(latents.permute(0, 2, 3, 1).numpy(), np.asarray(ref), rtol=1e-5, atol=1e-4)
