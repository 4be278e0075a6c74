"""Candidate evaluations per minute through the search's real ``Evaluator``: the per-candidate
path (sample, pull to host, NumPy/SciPy Fréchet) against the on-device path (chunks of stacked
plans vmapped, the objective on device, one score vector per chunk), same candidates, same run.

    python benchmarks/evaluator_throughput.py --nfes 5 10 --candidates 96 --samples 512

Candidates are random valid genomes of the default search space (fresh plans: no cache hits);
both paths are warmed up (compiled) on other candidates first. Also prints the largest relative
difference between the two paths' scores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfes", type=int, nargs="+", default=[5, 10])
    p.add_argument("--candidates", type=int, default=96)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--objective", default="teacher_frechet")
    a = p.parse_args(argv)
    import jax

    from stepwise import denoisers, schedules
    from stepwise.search.evaluator import Evaluator
    from stepwise.search.space import SearchSpace, decode, random_genome

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(schedule=sched)
    print(f"digits mixture (10 components, 64 dims), objective {a.objective}, {a.samples} noises, "
          f"{a.candidates} fresh candidates per path, chunk {a.chunk}, device {jax.devices()[0].device_kind}")
    for nfe in a.nfes:
        space = SearchSpace(nfe=nfe, schedule=sched)
        rng = np.random.default_rng(nfe)
        plans = [decode(random_genome(space, rng), space) for _ in range(2 * a.candidates + 2 * a.chunk)]
        warm, timed = plans[:2 * a.chunk], plans[2 * a.chunk:]
        host = Evaluator(model, sched, objective=a.objective, num_samples=a.samples, seed=0)
        dev = Evaluator(model, sched, objective=a.objective, num_samples=a.samples, seed=0, use_vmap=True,
                        chunk=a.chunk)
        host.score(warm[:a.chunk])
        dev.score(warm[a.chunk:])
        rows = {}
        for name, ev, part in (("per-candidate (host)", host, timed[:a.candidates]),
                               ("on device (chunks)", dev, timed[a.candidates:])):
            t0 = time.perf_counter()
            ev.score(part)
            rows[name] = 60.0 * len(part) / (time.perf_counter() - t0)
        same = timed[:a.chunk]
        sh, sd = np.array(host.score(same)), np.array(dev.score(same))
        ok = (sh < 1e5) & (sd < 1e5)
        rel = float(np.max(np.abs(sh[ok] - sd[ok]) / np.abs(sh[ok]))) if ok.any() else float("nan")
        print(f"NFE {nfe}: " + "; ".join(f"{k} {v:,.0f} evaluations/min" for k, v in rows.items())
              + f"; ratio {rows['on device (chunks)'] / rows['per-candidate (host)']:.2f}; "
              f"largest relative score difference {rel:.2g} over {int(ok.sum())} shared candidates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
