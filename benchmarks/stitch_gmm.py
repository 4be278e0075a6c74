"""T-Stitch sweep + joint search at NFE 10 (DPM-Solver++ 2M, logSNR) for the stitching pairs.

Runs ``stepwise stitch`` for (1) the exact mixture pair (small = 1-component diagonal mixture,
large = the 10-component full mixture) and (2) the trained small/large UNets when their training
directories exist (``benchmarks/train_denoisers.py --dataset digits --tag _heldout --feature-steps
3000 --out runs/bench-train``: trained on the digits' train split, with the domain classifier for
the held-out score), then prints the tables of benchmarks/RESULTS_stitching.md: per budget, the
best T-Stitch plan (any preset) against each search seed's front, and the median and range over seeds.

Command:  python benchmarks/stitch_gmm.py [--workdir runs/bench_stitch] [--trained DIR] [--tag _heldout]
                                          [--search-seeds 0,1,2] [--only gmm|trained]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from stepwise.cli import main as cli


def print_comparison(name: str, summary: dict) -> None:
    """Budget by budget: T-Stitch, every front (paired distance, ratio T-Stitch / front), and the
    summaries over seeds; the held-out feature distance likewise when present."""
    fronts = list(summary["search"])
    by_name = {r["name"]: r for r in summary["sweep"]}
    for suffix in ("", " (held-out FD)"):
        if f"T-Stitch quality{suffix}" not in summary["comparison"][0]:
            continue
        seeds = sorted({k[len("T-Stitch / "):-len(", seeds")] for c in summary["comparison"] for k in c
                        if k.startswith("T-Stitch / ") and k.endswith(", seeds")
                        and (" (held-out FD)" in k) == bool(suffix)})
        print(f"\n[{name}]{suffix or ' paired distance'} | budget | best T-Stitch (preset, k) | T-Stitch | "
              + " | ".join(f"{f} | T-Stitch / {f}" for f in fronts) + "".join(f" | T-Stitch / {v}, seeds" for v in seeds) + " |")
        print("|---|---|---|" + "---|---|" * len(fronts) + "---|" * len(seeds))
        for c in summary["comparison"]:
            t = by_name[c["T-Stitch"]]
            print(f"| {c['budget']:.4g} | {t['preset']}, k={t['small_steps']} | {c[f'T-Stitch quality{suffix}']} | "
                  + " | ".join(f"{c.get(f'{f} quality{suffix}', '-')} | {c.get(f'T-Stitch / {f}{suffix}', '-')}"
                               for f in fronts)
                  + "".join(f" | {c.get(f'T-Stitch / {v}, seeds', '-')}" for v in seeds) + " |")
    print(f"\n[{name}] n = {summary['num_samples']} fresh noises (seed {summary['seed']}); search seeds "
          f"{summary.get('search_seeds')}; T-Stitch presets: {summary['tstitch_presets']}")


def run_pair(name: str, argv: list[str], workdir: str) -> dict:
    t0 = time.perf_counter()
    rc = cli(["stitch", "--config", "configs/stitch_digits.py", "--workdir", workdir] + argv)
    if rc:
        raise SystemExit(f"{name}: stepwise stitch failed with {rc}")
    summary = json.load(open(os.path.join(workdir, "stitch.json")))
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] max fraction {summary['max_fraction']:.2f}  speed-up {summary['max_fraction_speedup']:.2f}x  "
          f"cost ratio declared {summary['costs']['declared_ratio']:.2f} measured {summary['costs']['measured_ratio']:.2f}"
          f"  total {summary['total_s']} s")
    if "comparison" in summary:   # budget by budget, paired, with intervals (no median of ratios)
        print_comparison(name, summary)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/bench_stitch")
    ap.add_argument("--trained", default="runs/bench-train",
                    help="directory holding digits_unet_{small,large}<tag> and features_digits16 "
                         "(benchmarks/train_denoisers.py --out)")
    ap.add_argument("--tag", default="_heldout", help="suffix of the trained run directories")
    ap.add_argument("--search-seeds", default="0,1,2", help="search seeds (one front each)")
    ap.add_argument("--only", choices=["gmm", "trained"], default=None)
    a = ap.parse_args()
    seeds = [f"--config.stitch.search_seeds={a.search_seeds}"]
    if a.only in (None, "gmm"):
        run_pair("gmm", seeds, os.path.join(a.workdir, "gmm"))
    small, large = (os.path.join(a.trained, f"digits_unet_{s}{a.tag}") for s in ("small", "large"))
    if a.only in (None, "trained"):
        if not (os.path.isdir(small) and os.path.isdir(large)):
            print(f"[trained] skipped: {small} / {large} not found")
            return
        run_pair("trained", seeds + [
            "--config.stitch.pair=checkpoints", f"--config.stitch.small_checkpoint={small}",
            f"--config.stitch.large_checkpoint={large}",
            f"--config.stitch.feature_net={os.path.join(a.trained, 'features_digits16')}",
            "--config.stitch.cost=measured", "--config.stitch.cost_batch=256", "--config.nfe=6",
            "--config.stitch.num_samples=500", "--config.stitch.batch_size=500", "--config.stitch.points=0",
            "--config.stitch.reference_rtol=1e-3", "--config.stitch.objective=teacher_rmse",
            "--config.stitch.tstitch_presets=2", "--config.stitch.search=True", "--config.stitch.model_only=False",
            "--config.stitch.search_samples=128", "--config.stitch.generations=2", "--config.stitch.children=4",
            "--config.stitch.population=6", "--config.stitch.budgets=2.5,4"], os.path.join(a.workdir, "trained"))


if __name__ == "__main__":
    main()
