"""stepwise show-config: print the resolved config (file + overrides)."""
from __future__ import annotations

EXAMPLE = """example:
  stepwise show-config --config configs/digits_gmm.py --config.nfe=6
"""


def add_parser(sub):
    from stepwise.cli.runtime import config_parser

    return config_parser(sub, "show-config", "print the resolved config", EXAMPLE, workdir=False)


def run(args) -> int:
    print(args.config)
    return 0
