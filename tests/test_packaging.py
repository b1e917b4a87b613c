"""A built wheel carries the grammar: installed elsewhere, fuzzylogic parses from any directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["pyproject.toml", "setup.py", "README.md", "constraints.txt", "LICENSE"]
PROJECT_DIRS = ["grammars", "fuzzylogic", "fuzzylogic_seg"]


def _copy_project(dst: Path) -> None:
    """Copy the buildable sources, so the build writes nothing into the checkout."""
    for name in PROJECT_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_DIRS:
        shutil.copytree(REPO / name, dst / name, ignore=ignore)


def test_wheel_ships_the_grammar_and_parses_from_another_directory(tmp_path):
    src, wheels, site, elsewhere = (tmp_path / d for d in ("src", "wheels", "site", "elsewhere"))
    for d in (src, wheels, elsewhere):
        d.mkdir()
    _copy_project(src)

    def run(cmd, **kw):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
        assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."], cwd=src)
    (wheel,) = wheels.glob("fuzzylogic-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("fuzzylogic/_grammars/fuzzylogic.lark").decode()
    assert shipped == (REPO / "grammars" / "fuzzylogic.lark").read_text()

    run(pip + ["install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)])

    probe = textwrap.dedent("""
        import json, sys
        from fuzzylogic.parser import parse
        from fuzzylogic.checker import check
        from fuzzylogic.grammar import grammar_path
        import fuzzylogic.parser as parser_module
        program = check(parse(
            "sort pixel[2]\\nsort box\\nconstant box: box\\npredicate inside(pixel, box)\\n"
            "predicate cup(pixel) logits\\npredicate disc(pixel) logits\\n"
            "rule cup_in_disc: forall p: inside(p, box) -> cup(p) -> disc(p)\\n"))
        print(json.dumps({"module": parser_module.__file__, "grammar": str(grammar_path()),
                          "rules": [r.name for r in program.rules],
                          "sorts": list(program.rules[0].formula.sorts)}))
    """)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    out = run([sys.executable, "-c", probe], cwd=elsewhere, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    # the installed copy answered, not the checkout, and it found its packaged grammar
    assert Path(result["module"]).resolve().is_relative_to(site.resolve()), result
    assert Path(result["grammar"]).resolve() == (site / "fuzzylogic" / "_grammars" /
                                                 "fuzzylogic.lark").resolve()
    assert result["rules"] == ["cup_in_disc"] and result["sorts"] == ["pixel"]

