"""One exception hierarchy for the whole package.

Every error a user can cause derives from :class:`FuzzyLogicError`. Errors tied
to a place in a rule file carry that place and render a caret line, in the way
lark's ``UnexpectedInput.get_context`` does.
"""
from __future__ import annotations

from typing import Optional

_WIDTH = 100  # longest source excerpt shown under an error


class FuzzyLogicError(Exception):
    """Base class of every error raised by :mod:`fuzzylogic`."""


class SourceError(FuzzyLogicError):
    """An error at a place in a rule text: source name, line, column, caret."""

    def __init__(self, message: str, source: str = "<string>", line: int = 0,
                 column: int = 0, text: Optional[str] = None, hint: Optional[str] = None):
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.text = text
        self.hint = hint
        super().__init__(self._render())

    def context(self) -> str:
        """The offending source line and a caret under the column ('' if unknown)."""
        if not self.text or self.line <= 0:
            return ""
        # Count lines as the lexer does (only "\n" ends a line; str.splitlines
        # would also split at \f, \x1c, \u2028... and point at the wrong line).
        lines = self.text.split("\n")
        if self.line > len(lines):
            return ""
        src = lines[self.line - 1].rstrip("\r").expandtabs(1)
        col = max(self.column - 1, 0)
        if len(src) > _WIDTH:  # show a window around the column of a very long line
            start = min(max(col - _WIDTH // 2, 0), len(src) - _WIDTH)
            src = ("..." if start else "") + src[start:start + _WIDTH] + (
                "..." if start + _WIDTH < len(src) else "")
            col = col - start + (3 if start else 0)
        caret = " " * col + "^"
        return f"    {src}\n    {caret}"

    def _render(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}: " if self.line else f"{self.source}: "
        out = where + self.message
        ctx = self.context()
        if ctx:
            out += "\n" + ctx
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out


class ParseError(SourceError):
    """The text does not follow the grammar."""


class CheckError(SourceError):
    """The text parses but is not a well-formed theory (unknown name, arity, sort...)."""


class IncludeError(SourceError):
    """An included file is missing, unreadable or included in a cycle."""


class SemanticsError(FuzzyLogicError):
    """An unknown or badly configured operator or semantics."""


class RuleSemanticsError(SemanticsError, SourceError):
    """A :class:`SemanticsError` from a rule file, at the place that names the
    operator or semantics (a misspelt ``[forall = pmeen]`` or ``semantics prodcut``)."""


class FactError(FuzzyLogicError):
    """A fact bound to a theory is missing, extra, mis-shaped or out of range."""
