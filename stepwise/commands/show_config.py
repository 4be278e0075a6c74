"""stepwise show-config: print the resolved config (file + overrides)."""
from __future__ import annotations

import argparse

EXAMPLE = """example:
  stepwise show-config --config configs/digits_gmm.py --config.nfe=6
"""


def add_parser(sub):
    p = sub.add_parser("show-config", help="print the resolved config", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="ml_collections config file (default configs/base.py)")
    return p


def run(args) -> int:
    print(args.config)
    return 0
