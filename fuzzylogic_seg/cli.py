"""The `fuzzyseg` command line.

Each sub-command lives in its own module under :mod:`fuzzylogic_seg.commands`
and registers itself with ``register(subparsers)``; this file only assembles
them (a registry, not an if-chain). A module's ``register`` sets
``func=callable(args) -> int`` on its parser.
"""
from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def _own_warnings_as_lines():
    """The package's own warnings printed as one line, `fuzzyseg: warning: ...`, as
    its errors are (not Python's `file.py:762: UserWarning:` and the source line);
    other libraries' warnings keep Python's form. (The format only: code that
    records warnings still gets them.)"""
    import warnings

    fmt = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if "fuzzylogic" in str(filename).replace("\\", "/").split("/site-packages/")[-1]:
            return f"fuzzyseg: warning: {message}\n"
        return fmt(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = fmt


def main(argv: Optional[List[str]] = None) -> int:
    from fuzzylogic.errors import FuzzyLogicError

    from .errors import FuzzySegError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _own_warnings_as_lines():
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
