"""Where the sampler's CPU time goes: XLA op times of samplers.sample() vs the same NFE bare model calls.

Command:  python benchmarks/sampler_profile.py [--batch 4096] [--nfe 10] [--repeats 10]

Both programs (the sampler with DPM-Solver++(2M) / logSNR on the digits mixture, and a jitted
loop of ``nfe`` bare model calls, as in ``sampler_overhead.py``) are called in alternation,
``--repeats`` times each after a warm-up call, inside one ``jax.profiler`` trace. Every XLA op event of the CPU
runtime is summed per op name; ops are grouped by their name without the numeric suffix
(``ynn_fusion.2`` -> ``ynn_fusion``), so the same fusions of the model line up across the two
programs. Groups on which the bare loop spends at least a tenth of the sampler's time are the
model's kernels (their difference is how much slower the model itself runs inside the sampler);
the rest are the solver's own work (history writes, the coefficient arithmetic, conditionals,
copies). Times are per run, in ms,
summed over threads (XLA's CPU runtime runs independent ops concurrently, so the sum can exceed
the wall time), each op's SELF time: a conditional's event spans the ops of the branch it runs,
which are counted as themselves. The wall time of each program is measured separately (median of the repeats).
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


def op_times(fns: dict, repeats: int) -> dict[str, tuple[dict[str, float], float]]:
    """Per program: (ms per run of each XLA op name, median wall ms per run). The programs are
    called in alternation (A B A B ...) ``repeats`` times after one warm-up call each, inside one
    trace; each call is marked with a ``jax.profiler.TraceAnnotation`` and every op event is given
    to the call whose window it starts in."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    walls = {k: [] for k in fns}
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(repeats):
            for k, fn in fns.items():
                with jax.profiler.TraceAnnotation(f"call:{k}"):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn())
                    walls[k].append(time.perf_counter() - t0)
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(sorted(glob.glob(f"{d}/**/*.xplane.pb", recursive=True))[-1])
    windows, lines = [], []
    for plane in data.planes:
        for line in plane.lines:
            events = list(line.events)
            windows += [(ev.start_ns, ev.start_ns + ev.duration_ns, ev.name[5:]) for ev in events
                        if ev.name.startswith("call:")]
            if line.name != "python" and "XLA" in line.name and "PjRt" not in line.name:
                lines.append(events)   # the runtime's worker threads (ops), not Python or the launcher
    windows.sort()
    starts = np.asarray([w[0] for w in windows])
    total = {k: collections.Counter() for k in fns}
    for events in lines:
        evs = [(ev.start_ns, ev.duration_ns, ev.name) for ev in events if not ev.name.startswith(_WRAPPERS)]
        for start, name, ns in self_times(evs):
            j = int(np.searchsorted(starts, start, side="right")) - 1
            if j >= 0 and start < windows[j][1]:
                total[windows[j][2]][name] += ns / 1e6 / repeats
    return {k: (dict(total[k]), 1e3 * float(np.median(walls[k]))) for k in fns}


def self_times(events):
    """(start, name, self time) of events (start, duration, name) on one thread: an event that
    starts inside another (a conditional's branch ops inside the conditional) is its child, and a
    parent's self time is its duration less its children's."""
    out, stack = [], []   # stack: [end, start, name, self time]
    for start, dur, name in sorted(events, key=lambda e: (e[0], -e[1])):
        while stack and start >= stack[-1][0]:
            _, s0, n, own = stack.pop()
            out.append((s0, n, own))
        if stack:
            stack[-1][3] -= dur
        stack.append([start + dur, start, name, dur])
    out += [(s0, n, own) for _, s0, n, own in stack]
    return out


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
    res = op_times(fns, a.repeats)
    (samp, wall_s), (base, wall_b) = res["sampler"], res["bare"]
    gs, gb = grouped(samp), grouped(base)
    # a group is the model's when the bare loop spends at least a tenth of the sampler's time on it
    # (the bare loop has a trace of a few groups, e.g. 0.01 ms of `copy`, that are the solver's here)
    shared = sorted((k for k in gs if gb.get(k, 0.0) >= 0.1 * gs[k]), key=lambda k: -gs[k])
    own = sorted(set(gs) - set(shared), key=lambda k: -gs[k])
    print(f"device={jax.devices()[0].device_kind} batch={a.batch} nfe={a.nfe} components={a.components} "
          f"repeats={a.repeats}; ms per run, op times summed over threads")
    print(f"wall: sampler {wall_s:.2f} ms, bare {wall_b:.2f} ms (ratio {wall_s / wall_b:.3f}; traced, interleaved)")
    print(f"op time: sampler {sum(gs.values()):.2f} ms, bare {sum(gb.values()):.2f} ms")
    print(f"\nmodel kernels (op groups in both programs): sampler {sum(gs[k] for k in shared):.2f} ms, "
          f"bare {sum(gb[k] for k in shared):.2f} ms")
    print("| op group | sampler ms | bare ms | sampler - bare |\n|---|---|---|---|")
    for k in shared:
        print(f"| {k} | {gs[k]:.2f} | {gb[k]:.2f} | {gs[k] - gb[k]:+.2f} |")
    print(f"\nsolver's own ops: {sum(gs[k] for k in own):.2f} ms")
    print("| op group | sampler ms |\n|---|---|")
    for k in own:
        if gs[k] >= 0.005 * sum(gs.values()) or k in own[:12]:
            print(f"| {k} | {gs[k]:.2f} |")


if __name__ == "__main__":
    main()
