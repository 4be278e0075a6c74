"""stepwise search: find a solver schedule (a SolverPlan) with exactly config.nfe evaluations.

Resumes from the last generation when ``--workdir`` already holds a search of the same config.
"""
from __future__ import annotations

from stepwise import runtime

EXAMPLE = """examples:
  stepwise search --config configs/search_digits_gmm.py --config.nfe=5
  stepwise search --config configs/search_digits_gmm.py --config.nfe=10 --config.search.strategy=evolution \\
      --workdir runs/search-nfe10          # run again with the same --workdir to resume
  stepwise sample --config configs/digits_gmm.py --config.plan=runs/search-nfe10/schedule.json
"""


def add_parser(sub):
    from stepwise.runtime import config_parser

    return config_parser(sub, "search", "search a per-step solver schedule at a fixed NFE", EXAMPLE,
                         "run directory; an existing one is resumed (default config.workdir or "
                         "runs/search-<timestamp>)")


def run(args) -> int:
    import jax

    from configs.search_defaults import search_defaults
    from search.run import SCHEDULE_FILE, run_search

    cfg = args.config
    if cfg.x64:
        jax.config.update("jax_enable_x64", True)
    settings = search_defaults().to_dict()
    if "search" in cfg:
        unknown = set(cfg.search.to_dict()) - set(settings)
        if unknown:
            raise SystemExit(f"error: unknown config.search fields {sorted(unknown)}")
        settings.update(cfg.search.to_dict())
    if not isinstance(cfg.nfe, int) or cfg.nfe < 1:
        raise SystemExit(f"error: config.nfe must be an integer >= 1, got {cfg.nfe!r}")
    workdir = runtime.make_workdir("search", args.workdir or cfg.workdir or None)
    runtime.save_config(workdir, cfg)
    sched = runtime.build_schedule(cfg)
    model = runtime.build_model(cfg, sched)
    info = {"kind": cfg.model.kind, **{k: v for k, v in cfg.model.to_dict().items() if k != "kind"}}
    try:
        summary = run_search(model, sched, cfg.nfe, workdir, settings, model_info=info)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    key = summary["final_key"]
    print(f"  {'nfe':>24s}: {summary['nfe']}")
    print(f"  {'evaluations':>24s}: {summary['evaluations']}")
    print(f"  {'search_wall_s':>24s}: {summary['search_wall_s']}")
    print(f"  {'searched_' + key:>24s}: {summary['searched_' + key]:.6g}")
    print(f"  {'best_baseline':>24s}: {summary['best_baseline']}")
    print(f"  {'best_baseline_' + key:>24s}: {summary['best_baseline_' + key]:.6g}")
    print(f"  {'ratio':>24s}: {summary['ratio_' + key]:.3g}")
    print(f"wrote {workdir / SCHEDULE_FILE}, {workdir / 'report.md'}, {workdir / 'report.html'}")
    return 0
