"""A built wheel carries the grammar and the example rule files: installed
elsewhere, fuzzylogic parses from any directory and fuzzylogic_seg finds its
default rules (no --rules needed)."""
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
PROJECT_DIRS = ["grammars", "fuzzylogic", "fuzzylogic_seg", "examples/rules"]


def _copy_project(dst: Path) -> None:
    """Copy the buildable sources, so the build writes nothing into the checkout."""
    for name in PROJECT_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_DIRS:
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    # the weights are package data too, but the rule lookup does not need them
    for w in (dst / "fuzzylogic_seg" / "weights").glob("*.pt"):
        w.unlink()


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
        rules = {Path(n).name: zf.read(n).decode() for n in zf.namelist()
                 if n.startswith("fuzzylogic_seg/_rules/")}
    assert shipped == (REPO / "grammars" / "fuzzylogic.lark").read_text()
    repo_rules = {p.name: p.read_text() for p in (REPO / "examples" / "rules").glob("*.rules")}
    assert rules == repo_rules and "voc_boxes.rules" in rules and "refuge.rules" in rules
    # the console scripts: `fuzzylogic` (the core alone) next to `fuzzyseg`
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    assert {"fuzzylogic/cli.py", "fuzzylogic/__main__.py"} <= names
    assert "fuzzylogic = fuzzylogic.cli:main" in scripts and "fuzzyseg = fuzzylogic_seg.cli:main" in scripts

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

    # the core command line, installed: `python -m fuzzylogic check FILE` from elsewhere
    rule_file = elsewhere / "mine.rules"
    rule_file.write_text("sort s\npredicate a(s)\nrule r: forall x: a(x)\n")
    out = run([sys.executable, "-m", "fuzzylogic", "check", "mine.rules"], cwd=elsewhere, env=env).stdout
    assert out == "mine.rules: OK (1 rule, 1 predicate, 1 sort)\n"

    # the default rule files: found in the installed package, from another directory
    probe = textwrap.dedent("""
        import json
        from fuzzylogic.checker import check
        from fuzzylogic.parser import parse
        from fuzzylogic_seg.finetune import default_rules
        from fuzzylogic_seg.rulefiles import rules_dir
        out = {"dir": str(rules_dir())}
        for kind in ("voc", "refuge"):
            path = default_rules(kind, "boxes")
            program = check(parse(path.read_text(), source=str(path), base_dir=path.parent))
            out[kind] = [str(path), len(program.rules)]
        from fuzzylogic_seg.rulefiles import resolve_rule_file
        out["by_name"] = str(resolve_rule_file("voc_boxes"))  # --rules voc_boxes, from anywhere
        print(json.dumps(out))
    """)
    out = run([sys.executable, "-c", probe], cwd=elsewhere, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    packaged = (site / "fuzzylogic_seg" / "_rules").resolve()
    assert Path(result["dir"]).resolve() == packaged, result
    assert Path(result["voc"][0]).resolve() == packaged / "voc_boxes.rules" and result["voc"][1] == 11
    assert Path(result["refuge"][0]).resolve() == packaged / "refuge.rules" and result["refuge"][1] == 9
    assert Path(result["by_name"]).resolve() == packaged / "voc_boxes.rules"

