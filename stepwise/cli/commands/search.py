"""stepwise search: find a solver schedule (a SolverPlan) with exactly config.nfe evaluations.

Resumes from the last generation when ``--workdir`` already holds a search of the same config.
With ``--config.distributed=True`` (one process per host, ``jax.distributed``) every process
evaluates its share of each generation and all hold the same state; process 0 writes the files.
"""
from __future__ import annotations

from stepwise.cli import runtime

EXAMPLE = """examples:
  stepwise search --config configs/search_digits_gmm.py --config.nfe=5
  stepwise search --config configs/search_digits_gmm.py --config.nfe=10 --config.search.strategy=evolution \\
      --workdir runs/search-nfe10          # run again with the same --workdir to resume
  stepwise sample --config configs/digits_gmm.py --config.plan=runs/search-nfe10/schedule.json
  stepwise search --config configs/search_digits_gmm.py --config.nfe=5 --config.search.strategy=hybrid
  stepwise search --config configs/search_digits_gmm.py --config.search.strategy=gradient   # or dp
"""


def add_parser(sub):
    from stepwise.cli.runtime import config_parser

    return config_parser(sub, "search", "search a per-step solver schedule at a fixed NFE", EXAMPLE,
                         "run directory; an existing one is resumed (default config.workdir or "
                         "runs/search-<timestamp>)")


def run(args) -> int:
    import jax

    from stepwise.cli.options import check_search_section, run_search_section
    from stepwise.search.protocol import Interval, describe
    from stepwise.search.run import SCHEDULE_FILE

    cfg = args.config
    if cfg.x64:
        jax.config.update("jax_enable_x64", True)
    if not isinstance(cfg.nfe, int) or cfg.nfe < 1:
        raise SystemExit(f"error: config.nfe must be an integer >= 1, got {cfg.nfe!r}")
    sched = runtime.build_schedule(cfg)
    check_search_section(cfg.search, cfg.nfe, sched)   # bad options fail before a run directory exists
    if cfg.search.skip and cfg.model.kind != "checkpoint":
        raise ValueError(f"search.skip: model.kind {cfg.model.kind!r} has no skippable units; allowed: model.kind="
                         "'checkpoint' (a Flax UNet or MLP trained by `stepwise train`)")
    if cfg.distributed and not (args.workdir or cfg.workdir):
        raise ValueError("workdir: a multi-process search (config.distributed) needs --workdir, the same "
                         "directory for every process")
    held_out = data = None
    if cfg.search.objective == "data_frechet" and not cfg.search.feature_net:
        raise ValueError("search.objective: 'data_frechet' scores samples against the model's training images in "
                         "search.feature_net's feature space; allowed: set search.feature_net (a `stepwise "
                         "train-features` directory) with model.kind='checkpoint', or objective 'teacher_frechet' | "
                         "'teacher_rmse'")
    if cfg.search.feature_net:      # checked (model's training split, the net) before a run directory exists
        if cfg.model.kind != "checkpoint":
            raise ValueError(f"search.feature_net: model.kind {cfg.model.kind!r} is not a trained network; allowed: "
                             "model.kind='checkpoint' (a `stepwise train` run)")
        models = {"config.model.checkpoint": cfg.model.checkpoint}
        held_out = runtime.held_out_data(cfg.search.feature_net, models, "config.search.feature_net")
        if cfg.search.objective == "data_frechet":
            data = runtime.training_data(cfg.search.feature_net, models, "config.search.feature_net")
    runtime.init_distributed(cfg)
    writer = runtime.is_writer()
    if writer:
        workdir = runtime.make_workdir("search", args.workdir or cfg.workdir or None)
        runtime.save_config(workdir, cfg)
    else:
        from pathlib import Path
        workdir = Path(args.workdir or cfg.workdir).resolve()
    model = runtime.build_model(cfg, sched)
    info = {"kind": cfg.model.kind, **{k: v for k, v in cfg.model.to_dict().items() if k != "kind"}}
    try:
        summary = run_search_section(cfg.search, model, sched, cfg.nfe, workdir, held_out=held_out, data=data,
                                     model_info=info,
                                     log=print if writer else (lambda m: None))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not writer:
        return 0
    key = summary["headline"]
    print(f"  {'nfe':>24s}: {summary['nfe']}")
    print(f"  {'evaluations':>24s}: {summary['evaluations']}")
    print(f"  {'search_wall_s':>24s}: {summary['search_wall_s']}")
    print(f"  {'final noise':>24s}: n={summary['final']['num_samples']}, seed {summary['final']['seed']} "
          f"(search noise seed {summary['seed']})")
    for c in summary["comparisons"].values():   # every number with its 95% paired-bootstrap interval
        print(f"  {c['metric'] + (' (headline)' if c['metric'] == key else ''):>24s}: searched "
              f"{Interval(**c['plan'])} vs {c['baseline_name']} {Interval(**c['baseline'])}")
        print(f"  {'ratio':>24s}: {c['ratio_text']}")
        if "ratio_inf" in c:   # the same with bias-extrapolated distances (FID_inf), see search.protocol
            print(f"  {'bias-extrapolated':>24s}: searched {Interval(**c['plan_inf'])} vs "
                  f"{Interval(**c['baseline_inf'])}; ratio {c['ratio_inf_text']}")
    ref = summary["final"].get("reference_heldout")
    if ref:   # the ODE solution itself by held-out FD: the ceiling of every teacher-matching objective
        print(f"  {'reference solve':>24s}: {describe(ref, 'reference')}")
    wrote = [str(workdir / f) for f in (SCHEDULE_FILE, "search.json", "report.md", "report.html") if (workdir / f).exists()]
    print(f"wrote {', '.join(wrote)}")
    return 0
