"""Time to reach the default search's fair-protocol gain: this tree against another commit's, in one run.

Command (the throughput issue's "before" is 171b127, the last commit before its work):

    python benchmarks/search_time.py --baseline-rev 171b127 --repeats 2

Runs the README tour search (``configs/search_digits_gmm.py``, NFE 5: search, then the final
comparison on fresh noise by the fair protocol) as a whole command in a fresh process per run,
alternating this tree and the baseline tree (``git archive REV stepwise configs`` first on
``PYTHONPATH``, as ``compile_time.py`` does; each tree runs its own config file), so a drift of a
shared CPU hits both alike. Per run, from the command's own search.json:

* ``to plan``: seconds until the search first held its final plan's score (setup, i.e. the teacher
  solve, plus the generation wall time recorded in its history);
* ``search``: the whole search (all generations; setup included);
* ``command``: the whole command, final comparison included (when the gain is printed);
* the gain it printed: best baseline / searched plan, per paired metric, with its 95% interval.

The two trees need not take the same search path (float32 sums in another order can change a
generation's ranking), so the gains are printed beside the times: a faster tree that reaches a
smaller gain has not reached the same thing sooner.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from compile_time import export_tree, run_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_to_plan(summary: dict) -> float:
    """Setup plus the history's wall time at the first generation whose best is the final best."""
    hist = summary["history"]
    final = min(h["best"] for h in hist)
    first = next(h for h in hist if h["best"] == final)
    return summary.get("setup_s", 0.0) + first["wall_s"]


def one_run(src: str) -> dict:
    """The tour search of the tree at ``src`` (its own package and config file)."""
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tour = ["--config", os.path.join(src, "configs", "search_digits_gmm.py"), "--config.nfe=5"]
    wall, summary, _ = run_search(tour, env)
    gains = {m: c["ratio_text"] for m, c in summary["comparisons"].items()}
    return {"to_plan_s": time_to_plan(summary), "search_s": summary.get("setup_s", 0.0) + summary["search_wall_s"],
            "command_s": wall, "evaluations": summary["evaluations"], "search_score": summary["search_score"],
            "gains": gains}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-rev", required=True, help="the commit to compare against (e.g. 171b127)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error(f"--repeats: {a.repeats} is invalid; allowed: an integer >= 1")
    times = ("to_plan_s", "search_s", "command_s")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT, a.baseline_rev: export_tree(a.baseline_rev, tmp, ("stepwise", "configs"))}
        rows = {t: [] for t in trees}
        for r in range(a.repeats):
            for t, src in trees.items():
                m = one_run(src)
                rows[t].append(m)
                print(f"repeat {r}: {t:10s} " + "  ".join(f"{k} {m[k]:6.1f}" for k in times)
                      + f"  evaluations {m['evaluations']}  search score {m['search_score']:.6g}  gains "
                      + "; ".join(f"{k} {v}" for k, v in m["gains"].items()), flush=True)
    med = {t: {k: statistics.median(m[k] for m in rows[t]) for k in times} for t in trees}
    print(f"\nmedian seconds over {a.repeats} repeats (fresh process each; trees alternated)")
    print(f"{'tree':10s} " + " ".join(f"{k:>10s}" for k in times))
    for t in trees:
        print(f"{t:10s} " + " ".join(f"{med[t][k]:10.1f}" for k in times))
    print(f"{'ratio':10s} " + " ".join(f"{med['this tree'][k] / med[a.baseline_rev][k]:10.3f}" for k in times)
          + f"   (this tree / {a.baseline_rev})")


if __name__ == "__main__":
    main()
