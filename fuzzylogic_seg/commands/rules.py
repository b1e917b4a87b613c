"""`fuzzyseg rules check FILE...`: parse and check rule files;
`fuzzyseg rules show FILE`: the program as the compiler sees it;
`fuzzyseg rules facts [--for USE]`: the facts a rule file can bind to.

Every file is checked (one failure does not hide the next); each prints
``FILE: OK (...)`` on stdout or its error with the caret on stderr. The exit
status is 1 if any file failed. ``--json`` prints one JSON summary instead.
``show`` prints one rule file with its includes resolved, one rule a line,
with the parentheses the grammar needs (``fuzzylogic.printer``): what the
rules mean, without comments or layout.

``check --for USE`` also binds each file to the facts of that use, as the
pipeline will (``boxes``, ``scribbles``, ``points``: SAM fine-tuning on those
weak labels; ``tags``: the tags class head; ``student-voc``,
``student-refuge``: a student rule file): an unknown fact, one those weak
labels cannot feed, a wrong arity or input kind is reported now, with its
file and line, instead of after the embeddings of a run are computed.
"""
from __future__ import annotations

import argparse
import sys

from ..rulefiles import RULE_USES as USES


def register(subparsers) -> None:
    parser = subparsers.add_parser("rules", help="parse and check fuzzy-logic rule files")
    actions = parser.add_subparsers(dest="rules_action", metavar="ACTION")
    check = actions.add_parser(
        "check", help="parse and check rule files; print OK or the error with its position",
        description="Parse every FILE (with its includes) and check it: names, arities, "
        "sorts, closed rules. Exit status 1 if any file has an error.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="rule files")
    check.add_argument("--json", action="store_true",
                       help="print a JSON summary on stdout instead of text")
    check.add_argument("--for", dest="use", choices=USES, metavar="USE",
                       help="also bind the files to the facts of this use, as a run will: "
                            + ", ".join(USES))
    check.add_argument("--dataset", choices=("voc", "refuge"), default=None,
                       help="with --for: also check what depends on the data set (a constant "
                            "that fixes a region names a REFUGE slot: refused for voc)")
    check.set_defaults(func=run_check)
    facts = actions.add_parser(
        "facts", help="list the facts (predicates) a rule file can use",
        description="The facts the pipeline feeds rule files: name, argument roles, input "
        "kind and meaning. With --for USE, only those that use provides.")
    facts.add_argument("--for", dest="use", choices=USES, metavar="USE",
                       help=", ".join(USES) + " (default: every fine-tuning fact)")
    facts.set_defaults(func=run_facts)
    show = actions.add_parser(
        "show", help="print a rule file with its includes resolved, as the compiler reads it",
        description="Parse and check FILE (with its includes) and print the program: "
        "declarations, then one rule a line, with only the parentheses the grammar needs.",
    )
    show.add_argument("file", metavar="FILE", help="a rule file")
    show.set_defaults(func=run_show)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def run_check(args: argparse.Namespace) -> int:
    from fuzzylogic.cli import check_files

    from ..errors import ConfigError
    from ..rule_facts import bind_for, explain_unknown_fact

    use = getattr(args, "use", None)
    dataset = getattr(args, "dataset", None)

    def bind(program, path):  # (ConfigError: the binding, whose message names the file and line)
        bind_for(program, path, use, dataset)

    return check_files(args.files, as_json=args.json, resolve=_resolved,
                       then=bind if use else None, errors=(ConfigError,),
                       note=f"; binds to the {use} facts" if use else "",
                       extra={"for": use} if use else None, explain=lambda e: explain_unknown_fact(e, use))


def _resolved(path: str) -> str:
    """``path``, or the shipped example rule file of that name (``voc_boxes``)."""
    from ..errors import ConfigError
    from ..rulefiles import resolve_rule_file

    try:
        return str(resolve_rule_file(path))
    except ConfigError:
        return path  # (the parser then says it is not found, in its own words)


def run_show(args: argparse.Namespace) -> int:
    from fuzzylogic.cli import run_show as show  # (the core's `fuzzylogic show`, on a resolved name)
    from fuzzylogic.errors import FuzzyLogicError

    try:
        return show(argparse.Namespace(file=_resolved(args.file)))
    except FuzzyLogicError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1


def run_facts(args: argparse.Namespace) -> int:
    from .. import rule_facts as rf

    use = args.use
    if use and use.startswith("student-"):
        return _student_facts(use.split("-", 1)[1])
    if use:  # one use: the facts it provides
        vocab = rf.TAG_VOCABULARY if use == "tags" else rf.VOCABULARY
        names = sorted(vocab) if use == "tags" else rf.available_facts(use)
        _table(("name", "arguments", "input", "meaning"),
               [(n, ", ".join(vocab[n][0]), vocab[n][1], rf.MEANINGS.get(n, "")) for n in names])
        return 0
    # every fine-tuning fact, with the weak labels that feed it
    kinds = ("boxes", "scribbles", "points")
    fed = {k: rf.available_facts(k) for k in kinds}
    rows = []
    for n in sorted(rf.VOCABULARY):
        by = [k for k in kinds if n in fed[k]]
        rows.append((n, ", ".join(rf.VOCABULARY[n][0]), rf.VOCABULARY[n][1],
                     "all" if len(by) == len(kinds) else ", ".join(by), rf.MEANINGS.get(n, "")))
    _table(("name", "arguments", "input", "weak labels", "meaning"), rows)
    print("\n(`--for tags` and `--for student-voc|student-refuge` list the other vocabularies)")
    return 0


def _student_facts(kind: str) -> int:
    from ..student import STUDENT_FACT_DOCS

    _table(("name", "meaning"), sorted(STUDENT_FACT_DOCS[kind].items()))
    return 0


def _table(head, rows) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
