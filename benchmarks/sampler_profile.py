"""Where the sampler's CPU time goes: XLA op times of samplers.sample() vs the same NFE bare model calls.

Command:  python benchmarks/sampler_profile.py [--batch 4096] [--nfe 10] [--repeats 10]

Both programs (the sampler with DPM-Solver++(2M) / logSNR on the digits mixture, and a jitted
loop of ``nfe`` bare model calls, as in ``sampler_overhead.py``) are traced with
``jax.profiler`` for ``--repeats`` runs each, after a warm-up run. Every XLA op event of the CPU
runtime is summed per op name; ops are grouped by their name without the numeric suffix
(``ynn_fusion.2`` -> ``ynn_fusion``), so the same fusions of the model line up across the two
programs. Groups that occur in both are the model's kernels (their difference is how much slower
the model itself runs inside the sampler); groups only in the sampler are the solver's own work
(history writes, the coefficient arithmetic, conditionals, copies). Times are per run, in ms,
summed over threads (XLA's CPU runtime runs independent ops concurrently, so the sum can exceed
the wall time). The wall time of each program is measured separately (median of the repeats).
"""
from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
import time

import jax
import numpy as np

from sampler_overhead import programs

_WRAPPERS = ("ThunkExecutor", "ThreadpoolListener", "end: ")


def op_times(fn, repeats: int) -> tuple[dict[str, float], float]:
    """(ms per run summed per XLA op name, median wall ms per run) of ``fn`` traced ``repeats``
    times after one warm-up call."""
    jax.block_until_ready(fn())
    walls = []
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            walls.append(time.perf_counter() - t0)
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(sorted(glob.glob(f"{d}/**/*.xplane.pb", recursive=True))[-1])
    total: dict[str, float] = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python" or "XLA" not in line.name or "PjRt" in line.name:
                continue   # the runtime's worker threads only (ops), not Python or the launcher
            for ev in line.events:
                if not ev.name.startswith(_WRAPPERS):
                    total[ev.name] += ev.duration_ns / 1e6 / repeats
    return dict(total), 1e3 * float(np.median(walls))


def grouped(times: dict[str, float]) -> dict[str, float]:
    """Op times summed per op name without its numeric suffix."""
    out: dict[str, float] = collections.Counter()
    for k, v in times.items():
        out[re.sub(r"(\.\d+)+$", "", k.split(".clone")[0])] += v
    return dict(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--components", type=int, default=10)
    a = ap.parse_args(argv)

    fns = programs(a.batch, a.nfe, a.components)[-1]
    samp, wall_s = op_times(fns["sampler"], a.repeats)
    base, wall_b = op_times(fns["bare"], a.repeats)
    gs, gb = grouped(samp), grouped(base)
    shared = sorted(set(gs) & set(gb), key=lambda k: -gs[k])
    own = sorted(set(gs) - set(gb), key=lambda k: -gs[k])
    print(f"device={jax.devices()[0].device_kind} batch={a.batch} nfe={a.nfe} components={a.components} "
          f"repeats={a.repeats}; ms per run, op times summed over threads")
    print(f"wall: sampler {wall_s:.2f} ms, bare {wall_b:.2f} ms (ratio {wall_s / wall_b:.3f}; traced runs)")
    print(f"op time: sampler {sum(gs.values()):.2f} ms, bare {sum(gb.values()):.2f} ms")
    print(f"\nmodel kernels (op groups in both programs): sampler {sum(gs[k] for k in shared):.2f} ms, "
          f"bare {sum(gb[k] for k in shared):.2f} ms")
    print("| op group | sampler ms | bare ms | sampler - bare |\n|---|---|---|---|")
    for k in shared:
        print(f"| {k} | {gs[k]:.2f} | {gb[k]:.2f} | {gs[k] - gb[k]:+.2f} |")
    print(f"\nsolver's own ops (only in the sampler): {sum(gs[k] for k in own):.2f} ms")
    print("| op group | sampler ms |\n|---|---|")
    for k in own:
        if gs[k] >= 0.005 * sum(gs.values()) or k in own[:12]:
            print(f"| {k} | {gs[k]:.2f} |")


if __name__ == "__main__":
    main()
