"""Feature-extraction throughput: FID Inception-v3 (random weights) and the digits CNN.

    python benchmarks/features_speed.py [--batch 256] [--inception-batches 2] [--cnn-batches 50]
        [--results benchmarks/RESULTS_evaluation.md]

Times `evaluation.extract_features` (host -> device, jitted apply sharded over all devices,
device -> host) after one warm-up batch that includes compilation; prints features/second
and, with --results, writes a Markdown section.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np


from stepwise import evaluation as ev  # noqa: E402
from stepwise.io import write_text_atomic  # noqa: E402


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _time(extractor, data: np.ndarray, batch: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ev.extract_features(extractor, data[:batch], batch_size=batch)  # compile + warm-up
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = ev.extract_features(extractor, data, batch_size=batch)
    dt = time.perf_counter() - t0
    assert feats.shape == (len(data), extractor.dim)
    return len(data) / dt, compile_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--inception-batches", type=int, default=2)
    p.add_argument("--inception-size", type=int, default=32, help="input side before the 299 resize")
    p.add_argument("--cnn-batches", type=int, default=50)
    p.add_argument("--results", default=None, help="write a Markdown section here")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    devices = jax.devices()
    print(f"devices: {len(devices)} x {devices[0].device_kind}; cpu: {_cpu_model()}")

    rows = []
    cnn = ev.DomainCNN()
    params = cnn.init(jax.random.key(0), np.zeros((1, 8, 8)))["params"]
    fx = ev.feature_net_extractor(ev.TrainedFeatureNet(cnn, params, (8, 8)))
    x = rng.uniform(-1, 1, (args.batch * args.cnn_batches, 8, 8)).astype(np.float32)
    rate, comp = _time(fx, x, args.batch)
    rows.append(("digits CNN (8x8, 128-d)", rate, comp, len(x)))
    print(f"digits CNN: {rate:,.0f} features/s (n={len(x)}, compile+warm-up {comp:.1f} s)")

    inc = ev.inception_extractor(ev.init_inception(jax.random.key(0)))
    s = args.inception_size
    x = rng.uniform(-1, 1, (args.batch * args.inception_batches, s, s, 3)).astype(np.float32)
    rate, comp = _time(inc, x, args.batch)
    rows.append((f"Inception-v3 FID ({s}x{s} -> 299x299, 2048-d)", rate, comp, len(x)))
    print(f"Inception-v3: {rate:,.1f} features/s (n={len(x)}, compile+warm-up {comp:.1f} s)")

    if args.results:
        cmd = "python benchmarks/features_speed.py " + " ".join(sys.argv[1:])
        lines = ["## Feature extraction speed (evaluation/)", "",
                 f"Command: `{cmd.strip()}`  ", f"Machine: {_cpu_model()}, {os.cpu_count()} "
                 f"cores visible, {len(devices)} JAX device(s) ({devices[0].platform}); "
                 f"jax {jax.__version__}. Batch {args.batch}, random weights, float32; the "
                 "machine was shared with other jobs, so treat rates as lower bounds.", "",
                 "| network | features/s | compile + warm-up (s) | n timed |", "|---|---|---|---|"]
        lines += [f"| {name} | {rate:,.1f} | {comp:.1f} | {n} |" for name, rate, comp, n in rows]
        write_text_atomic(args.results, "\n".join(lines) + "\n")
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
