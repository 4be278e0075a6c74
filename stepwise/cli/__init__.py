"""The command line: ``stepwise <command> [--config FILE] [--config.field=value ...]``.

Every command takes ``--config`` (an ml_collections file; default: the built-in defaults), except
``evaluate``, ``stats``, ``report``, ``export``, ``convert-inception`` and ``train-features``, which
act on files named by their arguments (samples, statistics, run directories, weights) and have no
experiment to configure. Errors look alike: ``stepwise <command>: error: <field>: <what is wrong>;
allowed: ...`` on stderr, exit status 2; Ctrl-C prints one line and exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under stepwise.cli.commands
COMMANDS = {
    "sample": "sample", "show-config": "show_config", "train": "train", "evaluate": "evaluate",
    "stats": "stats", "search": "search", "stitch": "stitch", "report": "report",
    "convert-inception": "convert_inception", "train-features": "train_features", "export": "export",
}


def _error(command: str, message: str) -> int:
    message = message[len("error: "):] if message.startswith("error: ") else message
    print(f"stepwise {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mods = {name: importlib.import_module(f"stepwise.cli.commands.{mod}") for name, mod in COMMANDS.items()}
    parser = argparse.ArgumentParser(prog="stepwise", description="Few-step diffusion sampling in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in mods.values():
        mod.add_parser(sub)
    if not argv:
        argv = ["sample"]  # the built-in default job
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    command = args.command
    try:
        if hasattr(args, "config") and (args.config is None or isinstance(args.config, str)):
            from stepwise.cli.runtime import load_config
            args.config = load_config(args.config, rest)
            if command != "sample" and "model" in args.config and args.config.model.get("members"):
                return _error(command, "config.model.members is set, but only `stepwise sample` runs a plan over "
                                       "several models; allowed here: config.model.members='' (the default)")
        elif rest:
            return _error(command, f"unrecognized arguments: {' '.join(rest)}")
        return int(mods[command].run(args) or 0)
    except KeyboardInterrupt:
        print(f"stepwise {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        return _error(command, str(e))
    except SystemExit as e:
        if isinstance(e.code, str):
            return _error(command, e.code)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
