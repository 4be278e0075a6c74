"""Every solver preset on the exact digits mixture: Frechet distance to the true moments and RMSE to the
exact ODE solution, over discretizations and NFE budgets.

    python benchmarks/baselines_gmm.py            # full table (~20 min on 2 CPU cores)
    python benchmarks/baselines_gmm.py --quick    # smoke run (~2 min)

Same noise for every solver. ``floor`` is the distance of the reference (diffrax, rtol 1e-6) solve of
the same noises: finite-sample error of the exact ODE map; ``excess`` = distance - floor. Plans of
one length share one compiled sampler (presets differ only in array values).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from stepwise import denoisers  # noqa: E402
from stepwise import samplers  # noqa: E402
from stepwise import schedules  # noqa: E402
from stepwise import solvers  # noqa: E402
from stepwise.evaluation import sample_frechet  # noqa: E402

# (label, preset, options): every registered preset at its default, plus notable variants
CONFIGS = [
    ("ddim", "ddim", {}),
    ("euler", "euler", {}),
    ("heun", "heun", {}),
    ("dpm_solver(2M)", "dpm_solver", {"order": 2}),
    ("dpm_solver_pp(2M)", "dpm_solver_pp", {"order": 2}),
    ("dpm_solver_pp(3M)", "dpm_solver_pp", {"order": 3}),
    ("dpm_solver_pp(3M,taylor)", "dpm_solver_pp", {"order": 3, "variant": "taylor"}),
    ("dpm_solver(2S)", "dpm_solver_singlestep", {"order": 2}),
    ("dpm_solver_pp(2S)", "dpm_solver_pp_singlestep", {"order": 2}),
    ("dpm_solver_pp(3S)", "dpm_solver_pp_singlestep", {"order": 3}),
    ("unipc(bh2,2)", "unipc", {"order": 2}),
    ("unipc(bh1,2)", "unipc", {"order": 2, "variant": "bh1"}),
    ("unipc(bh2,3)", "unipc", {"order": 3}),
    ("deis_tab(3)", "deis_tab", {"order": 3}),
    ("ipndm", "ipndm", {}),
    ("ipndm(variable)", "ipndm", {"variable_step": True}),
]
DISCRETIZATIONS = ["time_uniform", "time_quadratic", "logsnr", "karras"]
NFES = [4, 5, 6, 8, 10]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few samples, two grids, NFE 5 and 10")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "RESULTS_baselines.md"))
    args = ap.parse_args(argv)
    n_samples = args.samples or (2000 if args.quick else 20000)
    n_ref = 100 if args.quick else 500
    discs = ["logsnr", "karras"] if args.quick else DISCRETIZATIONS
    nfes = [5, 10] if args.quick else NFES
    t_start = time.time()

    sched = schedules.VPLinear()
    model = denoisers.digits_gmm(components=10)
    mu, cov = (np.asarray(a, np.float64) for a in model.moments())
    x_T = jax.random.normal(jax.random.key(0), (n_samples, 64), jnp.float32)

    ref_fn = lambda x: samplers.reference_solve(model, sched, x, rtol=1e-6)  # noqa: E731
    ref_all = samplers.chunked(ref_fn, x_T, 5000)
    floor = sample_frechet(ref_all, mu, cov)
    ref_head = ref_all[:n_ref]
    print(f"reference solve of {n_samples} noises: {time.time() - t_start:.0f}s, floor FD = {floor:.5f}",
          flush=True)

    rows = []
    for nfe in nfes:
        for label, name, opts in CONFIGS:
            p = solvers.PRESETS[name]
            for disc in discs:
                plan = solvers.build_preset(name, nfe, sched, disc, **opts)
                x = np.asarray(samplers.sample(model, sched, plan, x_T))
                fd = sample_frechet(x, mu, cov)
                rmse = float(np.sqrt(np.mean((x[:n_ref] - ref_head) ** 2)))
                rows.append(dict(nfe=nfe, solver=label, disc=disc, steps=p.steps(nfe), fd=fd,
                                 excess=fd - floor, rmse=rmse))
            print(f"nfe={nfe:2d} {label:26s} " + " ".join(
                f"{r['disc']}={r['excess']:.4f}" for r in rows[-len(discs):]), flush=True)
    wall = time.time() - t_start

    header = ("| NFE | solver | " + " | ".join(f"{d} excess FD / RMSE" for d in discs) + " |\n"
              "|---:|---|" + "---:|" * len(discs) + "\n")
    lines = []
    for nfe in nfes:
        for label, _, _ in CONFIGS:
            rs = {r["disc"]: r for r in rows if r["nfe"] == nfe and r["solver"] == label}
            lines.append(f"| {nfe} | {label} | " + " | ".join(
                f"{rs[d]['excess']:.4f} / {rs[d]['rmse']:.4f}" for d in discs) + " |")
    table = header + "\n".join(lines)
    best = []
    for nfe in nfes:
        r = min((r for r in rows if r["nfe"] == nfe), key=lambda r: r["fd"])
        q = min((r for r in rows if r["nfe"] == nfe), key=lambda r: r["rmse"])
        best.append(f"| {nfe} | {r['solver']} on {r['disc']} ({r['excess']:.4f}) | "
                    f"{q['solver']} on {q['disc']} ({q['rmse']:.4f}) |")
    best_table = ("| NFE | lowest excess FD | lowest RMSE to the exact ODE solution |\n|---:|---|---|\n"
                  + "\n".join(best))
    print(table)
    print(best_table)
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = "\n".join(l for l in cpu.splitlines() if l.split(":")[0].strip() in
                        ("Architecture", "CPU(s)", "Model name", "Thread(s) per core"))
    except OSError:
        cpu = "(lscpu unavailable)"
    cmd = "python benchmarks/baselines_gmm.py" + (" --quick" if args.quick else "")
    text = f"""# Baseline solvers on the exact digits mixture

Command: `{cmd}` (wall time {wall / 60:.1f} min, jax {jax.__version__}, float32).

Machine (`lscpu`):
```
{cpu}
```

Model: `denoisers.digits_gmm(10)` (64 dims) on `schedules.VPLinear()`, t from 1 to 1e-3. {n_samples}
samples from the same noise for every solver. FD = Frechet distance of the samples to the exact
mixture moments; the reference (diffrax, rtol 1e-6) solve of the same noises has FD {floor:.5f}
(the floor: finite-sample error of the exact ODE map), and the table gives **excess = FD - floor**
(can be slightly negative: a solver error may cancel sampling noise). RMSE: root mean square
difference to the reference solve on the first {n_ref} noises (the solver's own error). Heun spends
2 NFE per step (odd NFE: final Euler step as in diffusers); every other preset 1 NFE per step.

{table}

Best per NFE:

{best_table}
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out} in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
