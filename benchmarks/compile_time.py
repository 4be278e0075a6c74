"""Compile time of the sampler: this tree against another commit's, in one run.

Command:

    python benchmarks/compile_time.py --baseline-rev 9a4fd50 --repeats 3 [--commands]

Every measurement runs in a fresh Python process (nothing compiled is reused), alternating this
tree and the baseline tree (``git archive REV stepwise``, unpacked to a temporary directory and put
first on ``PYTHONPATH``), so a drift of a shared CPU hits both alike:

* ``forward``: ``samplers.sample`` on the digits mixture (256 noises) for UniPC-2 plans of 3, 5 and 8
  steps: three sampler programs;
* ``gradient``: ``jax.jit(jax.grad)`` of the mean squared distance of the endpoints to fixed targets
  w.r.t. the time nodes, for an NFE-5 DPM-Solver++(2M) plan (predictor only) and an NFE-5 UniPC-2
  plan (UniC corrector at every step): one program, two calls;
* with ``--commands``: the README tour search (``configs/search_digits_gmm.py``, NFE 5) and a
  60-step gradient run on the nodes of the best NFE-3 baseline (final comparison on 500 noises
  against the 3 best baselines), whole commands.

Reported per measurement and tree: JAX's own compile-path seconds (``samplers.CompileClock``: tracing,
lowering, XLA compilation; nan for a tree older than the clock, whose first-call wall time, mostly
compilation, is then the comparison), the wall time, and a digest of the outputs (sampler endpoints, node
gradients; for the commands the schedule and the search score), so a change that is meant to leave
the numbers alone shows that it did (equal digests: bit-identical).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOUR = ["--config", str(ROOT / "configs" / "search_digits_gmm.py"), "--config.nfe=5"]
GRADIENT = TOUR[:2] + ["--config.nfe=3", "--config.search.strategy=gradient", "--config.search.gradient_steps=60",
                       "--config.search.final_samples=500", "--config.search.final_top_baselines=3"]


def digest(arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:12]


def child(which: str) -> dict:
    """One measurement in this (fresh) process: compile seconds, wall seconds, output digest."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from stepwise import samplers, schedules, solvers
    from stepwise.denoisers import digits_gmm

    sched = schedules.VPLinear()
    model = digits_gmm(components=10)
    x = jax.random.normal(jax.random.key(0), (256,) + model.data_shape)
    if which == "forward":
        plans = [solvers.build_preset("unipc", n, sched, "logsnr", order=2) for n in (3, 5, 8)]
        run = lambda: [samplers.sample(model, sched, p, x) for p in plans]  # noqa: E731
    else:
        plans = [solvers.build_preset("dpm_solver_pp", 5, sched, "logsnr", order=2),
                 solvers.build_preset("unipc", 5, sched, "logsnr", order=2)]
        target = jax.random.normal(jax.random.key(1), x.shape)

        def loss(ts, plan):
            y = samplers.sample(model, sched, eqx.tree_at(lambda q: q.ts, plan, ts), x, check_finite=False)
            return jnp.mean((y - target) ** 2)

        grad = jax.jit(jax.grad(loss))
        run = lambda: [grad(p.ts, p) for p in plans]  # noqa: E731
    if not hasattr(samplers, "CompileClock"):   # a tree from before the clock: first-call wall time only
        t0 = time.perf_counter()
        out = jax.block_until_ready(run())
        return {"compile_s": float("nan"), "wall_s": time.perf_counter() - t0, "digest": digest(out)}
    with samplers.CompileClock() as clock:
        out = jax.block_until_ready(run())
    return {"compile_s": clock.seconds, "wall_s": clock.wall, "digest": digest(out)}


def run_search(args: list[str], env: dict) -> tuple[float, dict, dict]:
    """One whole `stepwise search` command in a fresh process: (wall seconds, search.json, schedule.json)."""
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stepwise", "search", *args, "--workdir", wd], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        return wall, json.loads((Path(wd) / "search.json").read_text()), json.loads((Path(wd) / "schedule.json").read_text())


def command(args: list[str], env: dict) -> dict:
    """A whole `stepwise search` command: its wall time, the compile seconds it records, its result."""
    wall, summary, schedule = run_search(args, env)
    compile_s = summary.get("compile_s", summary.get("learned", {}).get("compile_s", 0.0)) + summary["final_compile_s"]
    result = json.dumps([schedule["ts"], schedule["steps"], summary["search_score"]], sort_keys=True)
    return {"compile_s": compile_s, "wall_s": wall, "digest": hashlib.sha1(result.encode()).hexdigest()[:12]}


def measure(name: str, src: str) -> dict:
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if name in ("forward", "gradient"):
        out = subprocess.run([sys.executable, __file__, "--child", name], env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    return command(TOUR if name == "tour" else GRADIENT, env)


def export_tree(rev: str, into: str, paths: tuple[str, ...] = ("stepwise",)) -> str:
    """``git archive REV <paths>`` unpacked under ``into``; returns the directory to put on PYTHONPATH."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-rev", required=False, help="the commit to compare against (e.g. 9a4fd50)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--commands", action="store_true", help="also time the tour search and a gradient run")
    ap.add_argument("--child", choices=["forward", "gradient"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return
    if not a.baseline_rev:
        ap.error("--baseline-rev: required (the commit whose sampler to compare against, e.g. 9a4fd50)")
    names = ["forward", "gradient"] + (["tour", "gradient_run"] if a.commands else [])
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": str(ROOT), a.baseline_rev: export_tree(a.baseline_rev, tmp)}
        rows = {(n, t): [] for n in names for t in trees}
        for r in range(a.repeats):
            for n in names:
                for t, src in trees.items():
                    rows[(n, t)].append(measure(n, src))
                    m = rows[(n, t)][-1]
                    print(f"repeat {r}: {n:12s} {t:10s} compile {m['compile_s']:7.2f} s  wall {m['wall_s']:7.2f} s  "
                          f"digest {m['digest']}", flush=True)
    print(f"\nmedian over {a.repeats} repeats (fresh process each; trees alternated)")
    print(f"{'measurement':14s} {'tree':10s} {'compile s':>10s} {'wall s':>8s}  digest")
    for n in names:
        med = {}
        for t in trees:
            ms = rows[(n, t)]
            med[t] = (float(np.median([m["compile_s"] for m in ms])), float(np.median([m["wall_s"] for m in ms])))
            digests = sorted({m["digest"] for m in ms})
            print(f"{n:14s} {t:10s} {med[t][0]:10.2f} {med[t][1]:8.2f}  {','.join(digests)}")
        (c0, w0), (c1, w1) = med["this tree"], med[a.baseline_rev]
        same = {m["digest"] for m in rows[(n, "this tree")]} == {m["digest"] for m in rows[(n, a.baseline_rev)]}
        print(f"{'':14s} this / baseline: compile {c0 / c1:.2f}, wall {w0 / w1:.2f}; outputs "
              f"{'bit-identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
