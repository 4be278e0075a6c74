"""stepwise export: a schedule file for diffusers (a whole-plan scheduler, or nodes), k-diffusion, ComfyUI."""
from __future__ import annotations

import argparse
import json
import os

EXAMPLE = """examples:
  stepwise export runs/search-nfe5/schedule.json --to k-diffusion
  stepwise export plan.json --to diffusers --schedule vp_discrete
  stepwise export plan.json --to diffusers-scheduler --out my_scheduler --scheduler-config model/scheduler
--to diffusers-scheduler writes a StepwiseScheduler (torch extra) that runs EVERY per-step decision
inside a diffusers pipeline (load it with StepwiseScheduler.from_pretrained(DIR)); the other formats
hold time nodes only and print what they drop.
"""


def add_parser(sub):
    p = sub.add_parser("export", help="convert a schedule file's nodes for diffusers / k-diffusion",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="a schedule file (JSON) written by `stepwise search`")
    p.add_argument("--to", choices=["diffusers-scheduler", "diffusers", "diffusers-sigmas", "k-diffusion", "comfyui"],
                   default="k-diffusion")
    p.add_argument("--out", default=None, help="--to diffusers-scheduler: the directory to write")
    p.add_argument("--scheduler-config", default=None,
                   help="--to diffusers-scheduler: the model's scheduler_config.json (or its directory) for betas "
                        "and prediction_type (default: DDPM linear betas, epsilon)")
    p.add_argument("--schedule", default=None,
                   help="noise schedule name (default: the one recorded in the file, else vp_linear)")
    p.add_argument("--num-train-timesteps", type=int, default=1000)
    p.add_argument("--drop-corrections", action="store_true",
                   help="export a plan with learned weight corrections anyway (the corrections are lost)")
    return p


def dropped(plan) -> list[str]:
    """What a node-only format loses of ``plan``: every per-step decision but the time nodes."""
    import numpy as np

    from stepwise.search.space import describe_plan

    out = []
    steps = describe_plan(plan)
    for col in ("prediction", "order", "variant", "expansion", "base", "corrector", "model", "guidance"):
        values = sorted({str(s[col]) for s in steps})
        out.append(f"{col} ({', '.join(values)})")
    if int(plan.analytic_first):
        out.append("the analytic first step")
    if np.any(np.asarray(plan.corrections) != 0):
        out.append("learned weight corrections")
    if np.any(np.asarray(plan.skip) != 0):
        out.append("per-step skip masks")
    return out


def run(args) -> int:
    from stepwise import schedules
    from stepwise.search.schedule_file import load_plan, load_schedule

    import sys

    import numpy as np

    if args.num_train_timesteps < 2:
        raise ValueError(f"--num-train-timesteps: {args.num_train_timesteps} is invalid; allowed: an integer >= 2")
    if args.to == "diffusers-scheduler":
        return _scheduler(args)
    if args.out or args.scheduler_config:
        raise ValueError(f"--out/--scheduler-config: only used with --to diffusers-scheduler, not --to {args.to}")
    meta = load_schedule(args.plan)
    name = args.schedule or _schedule_name(meta) or "vp_linear"
    sched = schedules.by_name(name)
    plan = load_plan(args.plan, sched)          # the same validation as `stepwise sample` (domain included)
    if np.any(np.asarray(plan.skip) != 0):
        raise ValueError(f"--to {args.to}: the plan skips network units per step (a searched architecture); the "
                         "format runs the whole network every call, so the exported schedule would be another sampler; "
                         "run it with `stepwise sample --config.plan=...` on the network it was searched for")
    if np.any(np.asarray(plan.corrections) != 0) and not args.drop_corrections:
        raise ValueError(f"--to {args.to}: the format holds time nodes only and cannot express the plan's learned "
                         "weight corrections (they would be lost); pass --drop-corrections to export the nodes anyway")
    print(f"export: --to {args.to} keeps the time nodes only; dropped: {'; '.join(dropped(plan))}", file=sys.stderr)
    if args.to == "diffusers":
        try:
            out = {"timesteps": schedules.to_diffusers_timesteps(plan.ts, args.num_train_timesteps).tolist(),
                   "final_sigmas_type": "sigma_min"}
        except ValueError as e:
            raise ValueError(f"--to diffusers: {e}") from None
    elif args.to == "diffusers-sigmas":
        out = {"sigmas": schedules.to_sigmas(plan.ts, sched).tolist()}
    else:   # k-diffusion and ComfyUI's SIGMAS: sigma/alpha per node and a final 0
        out = {"sigmas": schedules.to_k_diffusion_sigmas(plan.ts, sched).tolist()}
    out["schedule"] = name
    print(json.dumps(out))
    return 0


def _scheduler(args) -> int:
    """Write a StepwiseScheduler directory (every decision kept; nothing dropped)."""
    if not args.out:
        raise ValueError("--out: --to diffusers-scheduler needs the directory to write")
    if args.drop_corrections:
        raise ValueError("--drop-corrections: the diffusers scheduler keeps the corrections; nothing is dropped")
    try:
        from stepwise.integrations.diffusers_scheduler import StepwiseScheduler
    except ImportError as e:
        raise ValueError(f"--to diffusers-scheduler needs the torch extra (pip install -e '.[torch]'): {e}") from None
    cfg = args.scheduler_config
    if cfg is not None and not os.path.exists(cfg):
        raise ValueError(f"--scheduler-config: {cfg} does not exist")
    sched = StepwiseScheduler.from_schedule_file(args.plan, cfg)
    sched.save_pretrained(args.out)
    print(f"wrote {os.path.join(args.out, StepwiseScheduler.config_name)} ({sched.num_inference_steps} model calls; "
          "every per-step decision kept)")
    return 0


def _schedule_name(meta: dict) -> str | None:
    desc = meta.get("schedule") or meta.get("noise_schedule") or {}
    names = {"VPLinear": "vp_linear", "VPCosine": "vp_cosine", "VPDiscrete": "vp_discrete",
             "EDM": "edm", "Flow": "flow"}
    return names.get(desc.get("name")) if isinstance(desc, dict) else None
