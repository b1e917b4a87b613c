"""The code style the project keeps ([tool.ruff] in pyproject.toml: pycodestyle and
pyflakes), checked with the tests so that it stays kept."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff comes with the test extras (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("package", ["fuzzylogic", "fuzzylogic_seg"])
def test_each_package_raises_its_own_errors(package):
    # One exception hierarchy per package: fuzzylogic raises FuzzyLogicError
    # subclasses, the plugin FuzzySegError ones (its argument errors are also
    # ValueErrors), never a bare built-in error that a caller catching the
    # package's base class (as the CLI does) would miss. Allowed: KeyError from a
    # lookup by name or id, TypeError for an argument of the wrong type (and from
    # json's `default` hook).
    import ast
    import builtins

    allowed = {"KeyError", "TypeError", "NotImplementedError"}
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                builtin = getattr(builtins, getattr(exc, "id", ""), None)
                if isinstance(builtin, type) and issubclass(builtin, Exception) \
                        and builtin.__name__ not in allowed:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: raise {builtin.__name__}")
    assert not found, "\n".join(found)
