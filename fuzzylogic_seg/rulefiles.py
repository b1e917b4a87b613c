"""Where the example rule files are (no torch: the CLI imports this at start).

They live once, in the repository's ``examples/rules/``; a built wheel
carries a copy in ``fuzzylogic_seg/_rules/`` (copied by setup.py's build
hook, as the grammar is into ``fuzzylogic/_grammars/``). A source checkout or
an editable install reads the repository's copy (the one you edit); an
installed wheel its packaged copy, from any working directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

from .errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent

# What a rule file can be bound to (`fuzzyseg rules check --for USE`): SAM fine-tuning on
# a weak-label kind, the tags class head, or a student's own predictions.
RULE_USES = ("boxes", "scribbles", "points", "tags", "student-voc", "student-refuge")


def rules_dirs() -> Tuple[Path, ...]:
    """The candidate folders, in order: the checkout's, then the packaged copy."""
    return (_PACKAGE_DIR.parent / "examples" / "rules", _PACKAGE_DIR / "_rules")


def example_rules(name: str) -> Path:
    """The path of the example rule file ``name`` (e.g. ``"voc_boxes.rules"``)."""
    for d in rules_dirs():
        if (d / name).is_file():
            return d / name
    raise ConfigError(f"the example rule file {name} is missing (looked in "
                      f"{' and '.join(map(str, rules_dirs()))}); reinstall fuzzylogic or pass "
                      "rule files explicitly (--rules FILE)")


def rules_dir() -> Path:
    """The folder of the example rule files (the first candidate that has any)."""
    for d in rules_dirs():
        if d.is_dir() and any(d.glob("*.rules")):
            return d
    return rules_dirs()[0]


def example_names() -> List[str]:
    """The shipped example rule files, by name (``voc_boxes``, ``refuge``, ...)."""
    return sorted(p.stem for p in rules_dir().glob("*.rules"))


def resolve_rule_file(path: Union[str, Path]) -> Path:
    """A rule file given by path, or by the name of a shipped example file
    (``voc_boxes`` or ``voc_boxes.rules``, found from any folder and in an
    installed wheel): ``--rules voc_boxes my_prior.rules`` adds a prior to a
    shipped file without copying it. An existing file of that name wins.
    Also makes the shipped files includable by name (``include "refuge.rules"``
    in a file of one's own, then one more rule): the fuzzylogic include path."""
    from fuzzylogic.parser import add_include_dir

    for d in rules_dirs():  # `include "refuge.rules"` from a user's file, from anywhere
        if d.is_dir():
            add_include_dir(d)
    p = Path(path).expanduser()
    if _is_file(p):
        return p
    name = str(path)
    if p.parent == Path(".") and name:
        for candidate in (name, f"{name}.rules"):
            for d in rules_dirs():
                if _is_file(d / candidate):
                    return d / candidate
    raise ConfigError(f"{path}: no such rule file (the shipped ones, usable by name: "
                      f"{', '.join(example_names())})")


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # a name the OS refuses: not a file
        return False
