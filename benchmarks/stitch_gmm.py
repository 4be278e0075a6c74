"""T-Stitch sweep + joint search at NFE 10 (DPM-Solver++ 2M, logSNR) for the stitching pairs.

Runs ``stepwise stitch`` for (1) the exact mixture pair (small = 1-component diagonal mixture,
large = the 10-component full mixture) and (2) the trained small/large UNets when their training
directories exist (``benchmarks/train_denoisers.py --dataset digits --out runs/bench-train``;
the trained pair runs the same ``stepwise stitch`` command as RESULTS_stitching.md), then prints the numbers of benchmarks/RESULTS_stitching.md.

Command:  python benchmarks/stitch_gmm.py [--workdir runs/bench_stitch] [--trained DIR] [--only gmm|trained]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from stepwise.cli import main as cli


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
        labels = [k[len("T-Stitch / "):] for k in summary["comparison"][0] if k.startswith("T-Stitch / ")]
        print(f"\n[{name}] | budget | best T-Stitch (preset, k) | T-Stitch paired | "
              + " | ".join(f"{lb} paired | T-Stitch / {lb}" for lb in labels) + " |")
        print("|---|---|---|" + "---|---|" * len(labels))
        presets = summary["tstitch_presets"]
        by_name = {r["name"]: r for r in summary["sweep"]}
        for c in summary["comparison"]:
            t = by_name[c["T-Stitch"]]
            print(f"| {c['budget']:.4g} | {t['preset']}, k={t['small_steps']} | {c['T-Stitch quality']} | "
                  + " | ".join(f"{c.get(lb + ' quality', '-')} | {c.get('T-Stitch / ' + lb, '-')}" for lb in labels)
                  + " |")
        print(f"\n[{name}] n = {summary['num_samples']} fresh noises (seed {summary['seed']}); T-Stitch presets: "
              f"{presets}")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/bench_stitch")
    ap.add_argument("--trained", default="runs/bench-train",
                    help="directory holding digits_unet_{small,large} (benchmarks/train_denoisers.py --out)")
    ap.add_argument("--only", choices=["gmm", "trained"], default=None)
    a = ap.parse_args()
    if a.only in (None, "gmm"):
        run_pair("gmm", [], os.path.join(a.workdir, "gmm"))
    small, large = (os.path.join(a.trained, f"digits_unet_{s}") for s in ("small", "large"))
    if a.only in (None, "trained"):
        if not (os.path.isdir(small) and os.path.isdir(large)):
            print(f"[trained] skipped: {small} / {large} not found")
            return
        run_pair("trained", ["--config.stitch.pair=checkpoints", f"--config.stitch.small_checkpoint={small}",
                             f"--config.stitch.large_checkpoint={large}", "--config.stitch.num_samples=1000",
                             "--config.stitch.batch_size=500", "--config.stitch.points=6",
                             "--config.stitch.search=True", "--config.stitch.model_only=False",
                             "--config.stitch.search_samples=500", "--config.stitch.generations=4",
                             "--config.stitch.children=6", "--config.stitch.population=8",
                             "--config.stitch.budgets=4.9,6.6"], os.path.join(a.workdir, "trained"))


if __name__ == "__main__":
    main()
