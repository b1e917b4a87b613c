"""Every `fuzzyseg ...` command line in the README's and docs' shell blocks parses
with the real command-line parser (a renamed or removed flag fails here, not in a
reader's terminal). Synopses with [optional] or {a,b} parts are left out."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fuzzylogic_seg.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def shell_blocks(text):
    out, cur, lang = [], None, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if cur is None:
                cur, lang = [], line.strip()[3:].strip()
            else:
                out.append((lang, "\n".join(cur)))
                cur = None
        elif cur is not None:
            cur.append(line)
    return [b for lang, b in out if lang in ("", "bash", "sh", "console")]


def command_lines():
    found = []
    for path in DOCS:
        for block in shell_blocks(path.read_text(encoding="utf-8")):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.strip().removeprefix("$ ")
                if not line.startswith("fuzzyseg "):
                    continue
                argv = [a for a in shlex.split(re.sub(r"\s+#.*$", "", line))[1:] if a != "..."]
                if any(a.startswith(("[", "{")) or a.endswith("]") or "|" in a for a in argv):
                    continue  # a synopsis, not a command
                found.append(pytest.param(argv, id=f"{path.name}: {' '.join(argv[:3])}"))
    return found


COMMANDS = command_lines()


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("argv", COMMANDS)
def test_documented_command_parses(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"fuzzyseg {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1]}")
