"""Where the rule grammar lives.

The grammar is kept once, at the top of the repository (`grammars/`). A built
wheel carries a copy inside the package (`fuzzylogic/_grammars/`, copied by
setup.py's build hook), so an installed fuzzylogic finds it from any working
directory; a source checkout falls back to the repository's copy.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import FuzzyLogicError

GRAMMAR_NAME = "fuzzylogic.lark"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates():
    yield _PACKAGE_DIR / "_grammars" / GRAMMAR_NAME  # installed wheel
    yield _PACKAGE_DIR.parent / "grammars" / GRAMMAR_NAME  # source checkout / editable install


def grammar_path() -> Path:
    """The path of `fuzzylogic.lark` (the packaged copy first)."""
    for path in _candidates():
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in _candidates())
    raise FuzzyLogicError(
        f"the rule grammar {GRAMMAR_NAME} is missing (looked in {tried}); "
        "reinstall fuzzylogic (a wheel ships it in fuzzylogic/_grammars/)"
    )


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar's text (read once)."""
    return grammar_path().read_text(encoding="utf-8")
