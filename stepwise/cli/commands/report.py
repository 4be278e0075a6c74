"""stepwise report RUN_DIR...: gather run directories into one Markdown file and one HTML page.

Each run directory contributes its ``metrics.json`` (a table row, with its config's solver,
discretization and NFE), its figures (``*.png``) and a grid of its samples (``samples.npz``).
Sample runs of several NFEs/solvers also give a "distance vs NFE per solver" plot.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stepwise.cli import runtime
from stepwise.io import write_text_atomic

EXAMPLE = """examples:
  stepwise report runs/sample-*                       # every sample run in one page
  stepwise report runs/search-nfe5 runs/stitch-1 --out runs/report-paper
"""


def add_parser(sub):
    p = sub.add_parser("report", help="gather run directories into Markdown + self-contained HTML",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (each with metrics.json)")
    p.add_argument("--out", default=None, help="output directory (default runs/report-<timestamp>)")
    p.add_argument("--title", default="stepwise report")
    p.add_argument("--grid", type=int, default=64, help="samples per grid (0: none)")
    return p


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _flat_scalars(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def run_row(run: Path) -> dict | None:
    """One table row for a run directory (None when it holds no metrics)."""
    metrics = _load_json(run / "metrics.json")
    if not isinstance(metrics, dict):
        return None
    cfg = _load_json(run / "config.json") or {}
    row = {"run": run.name}
    keys = ("plan",) if cfg.get("plan") else ("solver", "order", "discretization")
    for key in keys:
        if key in cfg and cfg[key] not in ("", None):
            row[key] = cfg[key]
    if "model" in cfg and isinstance(cfg["model"], dict):
        row["model"] = cfg["model"].get("kind")
    row.update(_flat_scalars(metrics))
    return row


def _grid(run: Path, n: int) -> bytes | None:
    from stepwise import evaluation

    path = run / "samples.npz"
    if n <= 0 or not path.exists():
        return None
    with np.load(path) as z:
        if "samples" not in z:
            return None
        x = np.asarray(z["samples"][:n])
    try:
        return evaluation.grid_png(x, scale=4)
    except ValueError:
        return None  # not image-shaped data


def run(args) -> int:
    from stepwise import evaluation

    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise ValueError(f"runs: not run directories: {missing}")
    rows = [r for r in (run_row(run) for run in runs) if r is not None]
    if not rows:
        unfinished = [str(r) for r in runs if (r / "checkpoints").is_dir() and not (r / "search.json").exists()]
        raise ValueError("runs: none of the run directories holds a metrics.json"
                         + (f"; unfinished searches (no search.json; rerun them to resume): {unfinished}"
                            if unfinished else ""))
    out = runtime.make_workdir("report", args.out)
    sections: list[tuple[str, object]] = [("Runs", rows)]
    curve = [dict(r) for r in rows if "frechet_exact" in r and "nfe" in r]
    if len({r["nfe"] for r in curve}) > 1:
        for r in curve:
            name = r.get("solver") or r.get("plan") or "plan"
            r["solver_label"] = f"{name}({r.get('order', '')}) {r.get('discretization', '')}".strip()
        sections.append(("Distance to the exact distribution vs NFE",
                         evaluation.plot_distance_vs_nfe(curve, distance="frechet_exact",
                                                         solver="solver_label")))
    for run in runs:
        for png in sorted(run.glob("*.png")):
            sections.append((f"{run.name}: {png.stem}", png.read_bytes()))
        grid = _grid(run, args.grid)
        if grid is not None:
            sections.append((f"{run.name}: samples", grid))
    md = evaluation.markdown_report(args.title, sections, image_dir=out)
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.html", evaluation.html_report(args.title, sections))
    print(evaluation.format_table_markdown(rows))
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")
    return 0
