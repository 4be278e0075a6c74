"""Versioned JSON schedule files: a SolverPlan with every per-step decision in readable names.

``save_plan(path, plan, meta)`` writes ``{"format": "stepwise.schedule", "version": 1, "nfe",
"num_steps", "analytic_first", "ts", "steps": [{"step", "t_from", "t_to", "prediction": "data",
"order": 2, "variant": "dpmsolver", ...}], **meta}``; ``load_plan(path)`` rebuilds the plan from
the names (codes are looked up in :mod:`solvers.plan`, so files stay valid when codes are added)
and checks that the stored NFE matches the plan's.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "stepwise.schedule"
VERSION = 1
_RESERVED = {"format", "version", "nfe", "num_steps", "analytic_first", "ts", "steps"}


def plan_to_dict(plan, meta: dict | None = None) -> dict:
    from search.space import describe_plan

    meta = dict(meta or {})
    clash = _RESERVED & set(meta)
    if clash:
        raise ValueError(f"save_plan: meta may not set {sorted(clash)}")
    return {"format": FORMAT, "version": VERSION, "nfe": plan.nfe(), "num_steps": plan.num_steps,
            "analytic_first": bool(int(plan.analytic_first)),
            "ts": [float(t) for t in np.asarray(plan.ts, np.float64)],
            "steps": describe_plan(plan), **meta}


def plan_from_dict(d: dict):
    import solvers
    from search.space import STEP_COLUMNS

    if d.get("format") != FORMAT:
        raise ValueError(f"schedule file: format {d.get('format')!r} is not {FORMAT!r}")
    if int(d.get("version", -1)) > VERSION:
        raise ValueError(f"schedule file: version {d.get('version')} is newer than supported ({VERSION})")
    steps = d["steps"]
    ts = np.asarray(d["ts"], np.float64)
    if len(steps) != ts.shape[0] - 1:
        raise ValueError(f"schedule file: {len(steps)} steps but {ts.shape[0]} time nodes")
    cols = {}
    for c in STEP_COLUMNS:
        if all(c in s for s in steps):
            cols[c] = [s[c] for s in steps]
    import jax.numpy as jnp
    plan = solvers.make_plan(jnp.asarray(ts), analytic_first=bool(d.get("analytic_first", False)), **cols)
    plan.validate()
    if "nfe" in d and plan.nfe() != int(d["nfe"]):
        raise ValueError(f"schedule file: stored nfe {d['nfe']} but the plan evaluates {plan.nfe()} times")
    return plan


def save_plan(path, plan, meta: dict | None = None) -> str:
    """Write a plan (+ JSON-able ``meta``) atomically; returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(plan_to_dict(plan, meta), indent=2, default=_plain) + "\n"
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".schedule.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def load_plan(path):
    """The SolverPlan stored in a schedule file."""
    with open(os.fspath(path)) as f:
        return plan_from_dict(json.load(f))


def load_schedule(path) -> dict:
    """The whole schedule file as a dict (plan decisions and metadata)."""
    with open(os.fspath(path)) as f:
        return json.load(f)


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
