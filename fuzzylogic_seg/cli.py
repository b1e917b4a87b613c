"""The `fuzzyseg` command line.

Each sub-command lives in its own module under :mod:`fuzzylogic_seg.commands`
and registers itself with ``register(subparsers)``; this file only assembles
them (a registry, not an if-chain). A module's ``register`` sets
``func=callable(args) -> int`` on its parser.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# Order is the order of `fuzzyseg --help`.
COMMAND_MODULES = (
    "rules",      # fuzzyseg rules check FILE...
    "data",       # fuzzyseg data synth|check|weak ...
    "sam",        # fuzzyseg sam pretrain|info ...
    "pseudo",     # fuzzyseg pseudo-label ...
    "evaluate",   # fuzzyseg evaluate ...
    "run",        # fuzzyseg run ...
    "predict",    # fuzzyseg predict ...
    "demo",       # fuzzyseg demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fuzzyseg",
        description="Weakly supervised segmentation with fuzzy-logic rules and SAM.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"fuzzylogic_seg.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fuzzylogic_seg.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from fuzzylogic.errors import FuzzyLogicError

    from .errors import FuzzySegError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FuzzySegError, FuzzyLogicError) as exc:
        print(f"fuzzyseg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fuzzyseg: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`fuzzyseg rules facts | head`): stop quietly, as Unix
        # tools do; stdout goes to devnull so that Python's exit flush cannot fail again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
