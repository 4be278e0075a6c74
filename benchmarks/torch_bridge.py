"""Bridged (torchax, jitted) vs torch-eager forward time of one diffusers UNet2DModel, and the
sampler's overhead with the bridged model (sampler at NFE 10 / 10 bare jitted model calls).

    python benchmarks/torch_bridge.py --batch 64 --repeats 7

Random weights (no downloads); a DDPM-CIFAR-like layout scaled down so the CPU run stays short.
Timings are interleaved (A, B, A, B ...) in one process; the medians and their ratio are printed.
"""
from __future__ import annotations

import argparse
import sys
import time
import types

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", default="32,64,64")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--nfe", type=int, default=10)
    a = p.parse_args(argv)
    # a torchvision wheel that does not match torch (as in some test environments) breaks diffusers' imports
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import jax
    import jax.numpy as jnp
    import torch
    import diffusers

    from stepwise import samplers, solvers
    from stepwise.denoisers import torch_bridge as tb

    torch.manual_seed(0)
    chans = tuple(int(c) for c in a.channels.split(","))
    unet = diffusers.UNet2DModel(sample_size=a.size, in_channels=3, out_channels=3, block_out_channels=chans,
                                 layers_per_block=2, down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (len(chans) - 1),
                                 up_block_types=("AttnUpBlock2D",) * (len(chans) - 1) + ("UpBlock2D",),
                                 norm_num_groups=8).eval()
    params = sum(p.numel() for p in unet.parameters())
    d = tb.from_unet2d(unet, cost=1.0)   # the FLOP count is not needed here
    x_np = np.random.default_rng(0).normal(size=(a.batch, a.size, a.size, 3)).astype(np.float32)
    x_t = torch.tensor(x_np.transpose(0, 3, 1, 2))
    t_t = torch.full((a.batch,), 500.0)
    x = jnp.asarray(x_np)
    t = jnp.full((a.batch,), 0.5)
    plan = solvers.build_preset("dpm_solver_pp", a.nfe, d.schedule, "logsnr", order=2)
    fwd = jax.jit(lambda m, x, t: m(x, t))

    def bare():      # nfe model calls, each its own jitted call (what the sampler does inside one)
        out = x
        for _ in range(a.nfe):
            out = fwd(d, x, t)
        return out.block_until_ready()

    def eager():
        with torch.no_grad():
            return unet(x_t, t_t).sample

    runs = {"torch eager forward": eager, "bridged forward": lambda: fwd(d, x, t).block_until_ready(),
            f"{a.nfe} bare bridged calls": bare,
            f"sampler NFE {a.nfe}": lambda: samplers.sample(d, d.schedule, plan, x).block_until_ready()}
    for k, f in runs.items():  # compile / warm up
        t0 = time.perf_counter()
        f()
        print(f"  warm-up {k}: {time.perf_counter() - t0:.1f}s", flush=True)
    times = {k: [] for k in runs}
    for _ in range(a.repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"UNet2DModel {a.size}x{a.size}x3, channels {chans}, {params / 1e6:.2f}M parameters, batch {a.batch}, "
          f"{a.repeats} interleaved repeats, device {jax.devices()[0].device_kind}")
    for k, v in times.items():
        print(f"  {k:28s} median {med[k] * 1e3:9.1f} ms  (min {min(v) * 1e3:.1f}, max {max(v) * 1e3:.1f})")
    print(f"  bridged / eager forward      {med['bridged forward'] / med['torch eager forward']:.3f}")
    ratios = [s / b for s, b in zip(times[f"sampler NFE {a.nfe}"], times[f"{a.nfe} bare bridged calls"])]
    print(f"  sampler / {a.nfe} bare calls       {med[f'sampler NFE {a.nfe}'] / med[f'{a.nfe} bare bridged calls']:.3f}"
          f"  (per-repeat range {min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
