"""Versioned JSON schedule files: a SolverPlan with every per-step decision in readable names.

``save_plan(path, plan, meta)`` writes ``{"format": "stepwise.schedule", "version": 1, "nfe",
"num_steps", "analytic_first", "ts", "steps": [{"step", "t_from", "t_to", "prediction": "data",
"order": 2, "variant": "dpmsolver", ...}], **meta}``; ``load_plan(path)`` rebuilds the plan from
the names (codes are looked up in :mod:`solvers.plan`, so files stay valid when codes are added)
and checks that the stored NFE matches the plan's.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from stepwise import solvers
from stepwise.io import read_json, write_json_atomic
from stepwise.search.space import STEP_COLUMNS, describe_plan

FORMAT = "stepwise.schedule"
VERSION = 1
_RESERVED = {"format", "version", "nfe", "num_steps", "analytic_first", "ts", "steps", "corrections", "skip_units"}


def plan_to_dict(plan, meta: dict | None = None) -> dict:
    meta = dict(meta or {})
    clash = _RESERVED & set(meta)
    if clash:
        raise ValueError(f"save_plan: meta may not set {sorted(clash)}")
    return {"format": FORMAT, "version": VERSION, "nfe": plan.nfe(), "num_steps": plan.num_steps,
            "analytic_first": bool(int(plan.analytic_first)),
            "ts": [float(t) for t in np.asarray(plan.ts, np.float64)],
            "steps": describe_plan(plan), **corrections_entry(plan), **skip_entry(plan), **meta}


def skip_entry(plan) -> dict:
    """``{"skip_units": U}`` when the plan skips network units (each step then lists the indices of
    its skipped units under ``"skip"``, in the order of ``Denoiser.skip_units``), else {}."""
    skip = np.asarray(plan.skip)
    return {"skip_units": int(skip.shape[1])} if np.any(skip) else {}


def _skip_from_steps(d: dict, steps: list):
    """The (N, U) skip mask of a schedule-file dict (None when it has none)."""
    units = d.get("skip_units")
    if units is None:
        if any("skip" in st for st in steps):
            raise ValueError("schedule file: steps list skipped units but 'skip_units' (the network's unit count) is missing")
        return None
    if not isinstance(units, int) or units < 1:
        raise ValueError(f"schedule file: skip_units {units!r} is invalid; allowed: a positive integer")
    mask = np.zeros((len(steps), units), np.int32)
    for i, st in enumerate(steps):
        idx = st.get("skip", [])
        if not isinstance(idx, list) or not all(isinstance(u, int) and 0 <= u < units for u in idx):
            raise ValueError(f"schedule file: step {i} skip {idx!r} is invalid; allowed: a list of unit indices "
                             f"0..{units - 1}")
        mask[i, idx] = 1
    return mask


def corrections_entry(plan) -> dict:
    """``{"corrections": [[...], ...]}`` when the plan has learned weight corrections, else {}."""
    c = np.asarray(plan.corrections, np.float64)
    return {"corrections": c.tolist()} if np.any(c != 0) else {}


def plan_from_dict(d: dict, schedule=None):
    """The plan of a schedule-file dict, validated (against ``schedule``'s domain when given)."""
    if not isinstance(d, dict):
        raise ValueError(f"schedule file: expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ValueError(f"schedule file: format {d.get('format')!r} is not {FORMAT!r}")
    if int(d.get("version", -1)) > VERSION:
        raise ValueError(f"schedule file: version {d.get('version')} is newer than supported ({VERSION})")
    if not isinstance(d.get("steps"), list) or not isinstance(d.get("ts"), list):
        raise ValueError("schedule file: needs a list 'ts' of time nodes and a list 'steps' of per-step decisions")
    steps = d["steps"]
    if not all(isinstance(s, dict) for s in steps):
        raise ValueError("schedule file: every entry of 'steps' must be an object")
    ts = np.asarray(d["ts"], np.float64)
    if len(steps) != ts.shape[0] - 1:
        raise ValueError(f"schedule file: {len(steps)} steps but {ts.shape[0]} time nodes")
    cols = {}
    for c in STEP_COLUMNS:
        have = [i for i, s in enumerate(steps) if c in s]
        if have and len(have) != len(steps):
            missing = sorted(set(range(len(steps))) - set(have))
            raise ValueError(f"schedule file: steps {have} set {c!r} but steps {missing} do not; give a column "
                             "for every step or for none (then its default applies)")
        if have:
            cols[c] = [s[c] for s in steps]
    corrections = d.get("corrections")
    if corrections is not None:
        corrections = np.asarray(corrections, np.float64)
        if corrections.shape != (len(steps), solvers.HISTORY + 1):
            raise ValueError(f"schedule file: corrections have shape {corrections.shape}, expected "
                             f"({len(steps)}, {solvers.HISTORY + 1})")
    plan = solvers.make_plan(jnp.asarray(ts), analytic_first=bool(d.get("analytic_first", False)),
                             corrections=None if corrections is None else jnp.asarray(corrections),
                             skip=_skip_from_steps(d, steps), **cols)
    plan.validate(schedule)
    if "nfe" in d and plan.nfe() != int(d["nfe"]):
        raise ValueError(f"schedule file: stored nfe {d['nfe']} but the plan evaluates {plan.nfe()} times")
    return plan


def save_plan(path, plan, meta: dict | None = None) -> str:
    """Write a plan (+ JSON-able ``meta``) atomically; returns the absolute path."""
    return write_json_atomic(path, plan_to_dict(plan, meta))


def load_plan(path, schedule=None):
    """The SolverPlan stored in a schedule file: THE reader every command uses. Errors name the file;
    with ``schedule`` the nodes must lie in its domain."""
    try:
        d = read_json(path, "schedule file")
        _check_finished(path, d)
        return plan_from_dict(d, schedule)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if os.fspath(path) in msg else f"{os.fspath(path)}: {msg}") from None


def _check_finished(path, d) -> None:
    """A schedule file inside a search's run directory counts once the search wrote search.json
    (its completion marker, written last); a killed search leaves schedule.json without it."""
    here = os.path.dirname(os.path.abspath(os.fspath(path)))
    if isinstance(d, dict) and "search_score" in d and os.path.isdir(os.path.join(here, "checkpoints")) \
            and not os.path.exists(os.path.join(here, "search.json")):
        raise ValueError("the search that wrote this file did not finish (no search.json beside it); "
                         "rerun the same search command to resume it")


def load_schedule(path) -> dict:
    """The whole schedule file as a dict (plan decisions and metadata)."""
    return read_json(path, "schedule file")

