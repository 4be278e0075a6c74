"""stepwise sample: run a solver plan on the model of a config, report exact distances."""
from __future__ import annotations

import time

import numpy as np

from stepwise.io import savez_atomic, write_json_atomic
from stepwise.cli import runtime

EXAMPLE = """examples:
  stepwise sample                                   # DPM-Solver++(2M), NFE 10, digits mixture
  stepwise sample --config configs/digits_gmm.py --config.solver=dpm_solver_pp \\
      --config.order=3 --config.nfe=5 --config.discretization=logsnr
"""


def add_parser(sub):
    from stepwise.cli.runtime import config_parser

    return config_parser(sub, "sample", "sample with a solver plan and report its exact error", EXAMPLE)


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    from stepwise import evaluation
    from stepwise import samplers

    cfg = args.config
    if cfg.x64:
        jax.config.update("jax_enable_x64", True)
    runtime.init_distributed(cfg)
    sched, plan = runtime.check_sampling_config(cfg)     # bad values fail here: no directory, no model yet
    writer = runtime.is_writer()
    workdir = runtime.make_workdir("sample", args.workdir) if writer else None
    if writer:
        runtime.save_config(workdir, cfg)
        done = runtime.finished_metrics(workdir)
        if done is not None and jax.process_count() == 1:
            print(f"{workdir} already holds this run (same config); its metrics:")
            for k, v in done.items():
                print(f"  {k:>26s}: {v}")
            return 0
    model, denoisers = runtime.build_denoisers(cfg, sched)   # denoisers: model, or the members a plan indexes
    n, bs, hosts = int(cfg.num_samples), int(cfg.batch_size), jax.process_count()
    if n < 2 or bs < 1 or n % hosts:
        raise SystemExit("error: config.num_samples must be >= 2 (and divisible by the number of "
                         "processes) and config.batch_size >= 1")
    n_local = n // hosts
    labels, threshold = runtime.build_guidance(cfg, model, n_local, None)
    if labels is not None and not cfg.plan:
        plan = plan.replace(guidance=jnp.full(plan.guidance.shape, cfg.guidance))
    shape = tuple(model.data_shape)
    dim = int(np.prod(shape))
    stats = evaluation.moments_init(dim)
    keep = np.empty((n_local,) + shape, np.float32) if cfg.save_samples else None
    first_noise = None
    t0 = time.perf_counter()
    for b, i in enumerate(runtime.progress(range(0, n_local, bs), "sampling", enabled=cfg.progress)):
        m = min(bs, n_local - i)
        x_T = batch_noise(cfg.seed, jax.process_index(), b, m, shape, sched)
        first_noise = x_T if first_noise is None else first_noise
        c = None if labels is None else labels[i:i + m]
        try:
            x = np.asarray(samplers.sample(denoisers, sched, plan, x_T, cond=c, threshold=threshold))
        except samplers.NonFiniteError as e:
            raise SystemExit(f"error: batch {b} (rows {i}..{i + m - 1}): {e}{_keep_partial(workdir, keep, i, writer)}") from None
        stats = evaluation.moments_update(stats, x.reshape(m, dim))
        if keep is not None:
            keep[i:i + m] = x
    wall = time.perf_counter() - t0
    stats = _reduce_hosts(stats)
    row = {"nfe": plan.nfe(), "steps": plan.num_steps, "num_samples": n, "processes": hosts,
           "wall_s": round(wall, 3)}
    # Exact moments exist for an unconditional mixture and for ONE class without guidance; labels
    # cycled uniformly over classes, or a guided ODE, have no closed-form target distribution.
    exact = hasattr(model, "moments") and cfg.guidance == 1.0 and (labels is None or cfg.label >= 0)
    arrays = {f"plan_{k}": np.asarray(getattr(plan, k)) for k in plan.__dataclass_fields__}
    if exact:
        mean, cov = model.moments(cfg.label if labels is not None else None)
        g = evaluation.moments_finalize(stats)
        row["frechet_exact"] = float(evaluation.frechet_distance(g.mu, g.sigma, mean, cov))
        arrays.update(exact_mean=mean, exact_cov=cov)
        m = min(int(cfg.reference_samples), first_noise.shape[0])
        if m > 0 and writer:
            ref = np.asarray(samplers.reference_solve(model, sched, first_noise[:m], rtol=1e-6,
                                                      cond=None if labels is None else labels[:m],
                                                      guidance=cfg.guidance))
            x_m = np.asarray(samplers.sample(denoisers, sched, plan, first_noise[:m],
                                             cond=None if labels is None else labels[:m], threshold=threshold))
            row["rmse_to_reference"] = float(np.sqrt(np.mean((x_m - ref) ** 2)))
            row["reference_samples"] = m
            if m > dim:  # same-size comparison: Fréchet distance is biased upward at small n
                row["frechet_exact_first_m"] = evaluation.sample_frechet(x_m, mean, cov)
                row["frechet_reference_first_m"] = evaluation.sample_frechet(ref, mean, cov)
        if labels is not None and cfg.guidance != 1.0:
            row["note"] = "frechet_exact compares with the unguided data distribution"
    if keep is not None:
        keep = runtime.gather_hosts(keep)
    if not writer:
        return 0
    if keep is not None:
        savez_atomic(workdir / "samples.npz", samples=keep, **arrays)
    write_json_atomic(workdir / "metrics.json", row)
    print(f"solver={cfg.solver if not cfg.plan else cfg.plan}  discretization={cfg.discretization}  "
          f"model={cfg.model.kind}")
    for k, v in row.items():
        print(f"  {k:>26s}: {v:.6g}" if isinstance(v, float) else f"  {k:>26s}: {v}")
    print(f"wrote {workdir / ('samples.npz' if keep is not None else 'metrics.json')}")
    return 0


def batch_noise(seed: int, process: int, batch: int, rows: int, shape, schedule):
    """x_T of batch ``batch`` of process ``process`` in `stepwise sample`: each process draws its
    own noise, N(0, prior_std^2) under the key fold_in(fold_in(key(seed), process), batch), so a run's
    noise can be redrawn outside the command."""
    import jax

    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), process), batch)
    return jax.random.normal(key, (rows,) + tuple(shape)) * schedule.prior_std()


def _keep_partial(workdir, keep, rows: int, writer: bool) -> str:
    """Save the finished (finite) rows of a run that diverged; the message's tail says where."""
    if keep is None or rows == 0 or not writer:
        return "; no finished batch to keep"
    path = workdir / "samples.partial.npz"
    savez_atomic(path, samples=keep[:rows])
    return f"; kept the {rows} finished samples in {path}"


def _reduce_hosts(stats):
    """Sum the streaming moment sums of every process (identity on one process)."""
    import jax

    from stepwise import evaluation

    if jax.process_count() == 1:
        return stats
    ns = runtime.gather_hosts(np.asarray([stats.n], np.float64))
    means = runtime.gather_hosts(np.asarray(stats.mean)[None])
    m2s = runtime.gather_hosts(np.asarray(stats.m2)[None])
    total = evaluation.moments_init(means.shape[1])
    for n, mean, m2 in zip(ns, means, m2s):
        total = evaluation.moments_merge(total, evaluation.MomentState(int(n), mean, m2))
    return total
