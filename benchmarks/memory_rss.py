"""Peak resident memory of `stepwise sample` for 10k vs 50k samples (streamed in batches).

Command:  python benchmarks/memory_rss.py
Each run is a fresh process; peak RSS is its ru_maxrss. Statistics are streamed per batch, so
without saving samples the peak is set by the batch, not by the number of samples.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile


def peak_rss_mb(args: list[str]) -> float:
    code = ("import resource, sys; from stepwise.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    kb = [int(l.split()[1]) for l in out.stdout.splitlines() if l.startswith("PEAK_KB")][0]
    return kb / 1024.0


def main() -> None:
    print("| samples | save_samples | batch | peak RSS (MB) |\n|---|---|---|---|")
    for save in (False, True):
        for n in (10_000, 50_000):
            with tempfile.TemporaryDirectory() as d:
                mb = peak_rss_mb(["sample", "--workdir", d, f"--config.num_samples={n}", "--config.batch_size=2000",
                                  "--config.reference_samples=0", f"--config.save_samples={save}",
                                  "--config.progress=False"])
            print(f"| {n} | {save} | 2000 | {mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
