"""The command line: ``stepwise <command> [--config FILE] [--config.field=value ...]``."""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under stepwise.commands; config-driven commands take --config overrides.
COMMANDS = {
    "sample": "sample",
    "show-config": "show_config",
}
OPTIONAL_COMMANDS = {  # added by later modules when present
    "train": "train", "evaluate": "evaluate", "stats": "stats", "search": "search",
    "stitch": "stitch", "report": "report", "convert-inception": "convert_inception",
    "train-features": "train_features", "export": "export",
}


def _modules():
    mods = {}
    for name, mod in {**COMMANDS, **OPTIONAL_COMMANDS}.items():
        try:
            mods[name] = importlib.import_module(f"stepwise.commands.{mod}")
        except ModuleNotFoundError as e:
            if name in COMMANDS or not e.name or not e.name.startswith("stepwise.commands"):
                raise
    return mods


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mods = _modules()
    parser = argparse.ArgumentParser(prog="stepwise", description="Few-step diffusion sampling in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in mods.items():
        mod.add_parser(sub)
    if not argv:
        argv = ["sample"]  # the built-in default job
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if hasattr(args, "config") and (args.config is None or isinstance(args.config, str)):
        from stepwise.runtime import load_config
        args.config = load_config(args.config, rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(mods[args.command].run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
