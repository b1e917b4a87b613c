"""Where the example rule files are (no torch: the CLI imports this at start).

They live once, in the repository's ``examples/rules/``; a built wheel
carries a copy in ``fuzzylogic_seg/_rules/`` (copied by setup.py's build
hook, as the grammar is into ``fuzzylogic/_grammars/``). A source checkout or
an editable install reads the repository's copy (the one you edit); an
installed wheel its packaged copy, from any working directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

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
