"""The `fuzzylogic` command line (also ``python -m fuzzylogic``): rule files
from the shell, with the core package alone (torch, lark, the standard library).

``fuzzylogic check FILE...``
    parse, check and compile every file (one failure does not hide the next);
    each prints ``FILE: OK (...)`` on stdout or its error, with the place and a
    caret, on stderr. Exit status 1 if any file failed. ``--json`` prints one
    JSON summary instead; ``--semantics NAME`` compiles with that preset.
``fuzzylogic show FILE``
    the program as the compiler reads it: includes resolved, one rule a line,
    only the parentheses the grammar needs (:func:`fuzzylogic.format_program`).
``fuzzylogic signature FILE``
    what to bind: each fact's shape and input kind, one a line
    (:meth:`fuzzylogic.Theory.signature`).

The output is that of ``fuzzyseg rules check|show`` (the segmentation plugin),
for what the core knows. Exit status 2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fuzzylogic",
        description="Check, print and inspect fuzzy-logic rule files.",
    )
    parser.add_argument("--version", action="version", version=f"fuzzylogic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check", help="parse, check and compile rule files; print OK or the error with its position",
        description="Parse every FILE (with its includes), check it (names, arities, sorts, "
        "closed rules) and compile it (operator and semantics names). Exit status 1 if any "
        "file has an error.")
    check.add_argument("files", nargs="+", metavar="FILE", help="rule files")
    check.add_argument("--semantics", metavar="NAME",
                       help="compile with this preset instead of the file's semantics line")
    check.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of text")
    check.set_defaults(func=run_check)

    show = sub.add_parser(
        "show", help="print a rule file with its includes resolved, as the compiler reads it",
        description="Parse and check FILE (with its includes) and print the program: "
        "declarations, then one rule a line, with only the parentheses the grammar needs.")
    show.add_argument("file", metavar="FILE", help="a rule file")
    show.set_defaults(func=run_show)

    signature = sub.add_parser(
        "signature", help="print the facts (and constants) a rule file's theory is called with",
        description="Compile FILE and print what theory.loss(...) must be given, one a line: "
        "'name: [B, ...] kind' for each fact the rules use, and the constants bound at call time.")
    signature.add_argument("file", metavar="FILE", help="a rule file")
    signature.add_argument("--semantics", metavar="NAME",
                           help="compile with this preset instead of the file's semantics line")
    signature.set_defaults(func=run_signature)
    return parser


def _summary(program, semantics: Optional[str]) -> str:
    from .checker import _plural

    parts = [_plural(len(program.rules), "rule"), _plural(len(program.predicates), "predicate"),
             _plural(len(program.sorts), "sort")]
    if semantics or program.semantics:
        parts.append(f"semantics {semantics or program.semantics}")
    return ", ".join(parts)


def _compiled(path: str, semantics: Optional[str]):
    """The checked program of the rule file at ``path`` and its theory."""
    from .checker import check
    from .compiler import compile_program
    from .parser import parse_file

    program = check(parse_file(path))
    return program, compile_program(program, semantics)  # (operator and semantics names resolve here)


def check_files(paths: Sequence[str], *, as_json: bool = False, semantics: Optional[str] = None,
                resolve: Optional[Callable[[str], str]] = None,
                then: Optional[Callable[[object, str], None]] = None,
                errors: Tuple[type, ...] = (), note: str = "", extra: Optional[dict] = None,
                explain: Optional[Callable[[Exception], Exception]] = None) -> int:
    """What ``check`` prints and returns, for these ``paths``: each file parsed,
    checked and compiled (``resolve`` maps a given path to the file to read), then
    ``then(program, path)`` (a caller's further check, which raises one of
    ``errors``); ``note`` ends each OK line and ``extra`` joins each OK JSON entry
    (``fuzzyseg rules check --for`` binds files to its facts this way); ``explain``
    may return an error with a better hint (one the caller knows more about)."""
    from .errors import FuzzyLogicError, SourceError

    results: List[dict] = []
    for path in paths:
        entry = {"file": path, "ok": False}
        try:
            program, _ = _compiled(resolve(path) if resolve else path, semantics)
            if then is not None:
                then(program, path)
        except (FuzzyLogicError,) + tuple(errors) as caught:
            exc = explain(caught) if explain is not None else caught
            entry["error"] = str(exc)
            entry["kind"] = type(exc).__name__
            if isinstance(exc, SourceError):
                entry.update(source=exc.source, line=exc.line, column=exc.column,
                             message=exc.message, hint=exc.hint)
            if not as_json:
                print(str(exc), file=sys.stderr, flush=True)
        else:
            entry.update(ok=True, rules=[r.name for r in program.rules],
                         predicates=[p.name for p in program.predicates],
                         sorts=[s.name for s in program.sorts],
                         semantics=semantics or program.semantics, **(extra or {}))
            if not as_json:
                print(f"{path}: OK ({_summary(program, semantics)}{note})", flush=True)
        results.append(entry)
    failed = sum(not r["ok"] for r in results)
    if as_json:
        print(json.dumps({"files": results, "failed": failed}, indent=2))
    elif len(results) > 1:
        print(f"{len(results) - failed} of {len(results)} files OK", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def run_check(args: argparse.Namespace) -> int:
    return check_files(args.files, as_json=args.json, semantics=args.semantics)


def run_show(args: argparse.Namespace) -> int:
    from .checker import check
    from .parser import parse_file
    from .printer import format_program

    sys.stdout.write(format_program(check(parse_file(args.file))))
    return 0


def run_signature(args: argparse.Namespace) -> int:
    _, theory = _compiled(args.file, args.semantics)
    for name, what in theory.signature().items():
        print(f"{name}: {what}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import FuzzyLogicError

    parser = build_parser()
    args = parser.parse_args(argv)  # (a usage error: SystemExit(2), as argparse does)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except FuzzyLogicError as exc:
        # (a SourceError renders its own place: FILE:LINE:COL: message, the line, a caret)
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("fuzzylogic: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`fuzzylogic show FILE | head`): stop quietly, as Unix
        # tools do; stdout goes to devnull so that Python's exit flush cannot fail again
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError):
            return 141  # (no file descriptor behind stdout: nothing left to flush)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
