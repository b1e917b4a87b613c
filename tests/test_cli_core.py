"""The core command line, `fuzzylogic check|show|signature` (fuzzylogic/cli.py):
rule files from the shell with only torch and lark installed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fuzzylogic as fl
from fuzzylogic.cli import main

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
semantics log_product
sort pixel[2]
sort box
constant target: box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
rule cup_in_disc [weight = 2]: forall p: cup(p) -> disc(p)
rule in_box: forall p: inside(p, target) -> disc(p)
"""

TYPO = """\
sort pixel[2]
predicate cup(pixel) logits
predicate disc(pixel) logits
rule r: forall p: cupp(p) -> disc(p)
"""


@pytest.fixture
def files(tmp_path):
    good, typo = tmp_path / "good.rules", tmp_path / "typo.rules"
    good.write_text(GOOD)
    typo.write_text(TYPO)
    return str(good), str(typo)


def test_check_ok(files, capsys):
    good, _ = files
    assert main(["check", good]) == 0
    out, err = capsys.readouterr()
    assert out == f"{good}: OK (2 rules, 3 predicates, 2 sorts, semantics log_product)\n"
    assert err == ""


def test_check_typo_reports_line_column_and_caret(files, capsys):
    _, typo = files
    assert main(["check", typo]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{typo}:4:19: unknown predicate 'cupp'"
    assert lines[1] == "    rule r: forall p: cupp(p) -> disc(p)"
    assert lines[2] == "    " + " " * 18 + "^"
    assert "did you mean 'cup'?" in err


def test_check_every_file_and_a_total(files, capsys):
    good, typo = files
    assert main(["check", typo, good]) == 1  # the failure does not hide the next file
    out, err = capsys.readouterr()
    assert out == f"{good}: OK (2 rules, 3 predicates, 2 sorts, semantics log_product)\n"
    assert "unknown predicate 'cupp'" in err and err.endswith("1 of 2 files OK\n")
    assert main(["check", good, good]) == 0
    assert capsys.readouterr().out.endswith("2 of 2 files OK\n")


def test_check_semantics_option(files, capsys):
    good, _ = files
    assert main(["check", "--semantics", "godel", good]) == 0
    assert "semantics godel)" in capsys.readouterr().out
    assert main(["check", "--semantics", "no_such_preset", good]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "unknown semantics 'no_such_preset'" in err


def test_check_json(files, capsys):
    good, typo = files
    assert main(["check", "--json", good, typo]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    summary = json.loads(out)
    assert summary["failed"] == 1
    ok, bad = summary["files"]
    assert ok == {"file": good, "ok": True, "rules": ["cup_in_disc", "in_box"],
                  "predicates": ["cup", "disc", "inside"], "sorts": ["pixel", "box"],
                  "semantics": "log_product"}
    assert bad["ok"] is False and bad["kind"] == "CheckError"
    assert (bad["source"], bad["line"], bad["column"]) == (typo, 4, 19)
    assert bad["message"] == "unknown predicate 'cupp'" and bad["hint"] == "did you mean 'cup'?"


def test_check_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nothere.rules")
    assert main(["check", missing]) == 1
    assert "rule file not found" in capsys.readouterr().err


def test_show_round_trips_through_parse(files, capsys):
    good, typo = files
    assert main(["show", good]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "rule cup_in_disc [weight = 2.0]: forall p: cup(p) -> disc(p)" in out
    again = fl.check(fl.parse(out))
    assert fl.format_program(again) == out
    assert [r.name for r in again.rules] == ["cup_in_disc", "in_box"]
    assert main(["show", typo]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{typo}:4:19: unknown predicate 'cupp'")


def test_signature_lines(files, capsys):
    good, typo = files
    assert main(["signature", good]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "cup: [B, H, W] logits",
        "disc: [B, H, W] logits",
        "inside: [B, H, W, BOX] prob",
        "target: int or LongTensor [B] (index into sort box)",
    ]
    assert out.splitlines() == [f"{k}: {v}" for k, v in fl.load(good).signature().items()]
    assert main(["signature", typo]) == 1
    assert "unknown predicate 'cupp'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["check"], ["frobnicate"], ["show"], ["check", "--bogus", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # (argparse's own usage errors)
        rc = exc.code
    assert rc == 2
    assert "usage: fuzzylogic" in capsys.readouterr().err


def test_broken_pipe_is_quiet(files, monkeypatch, capsys):
    import fuzzylogic.cli as cli

    def broken(args):
        raise BrokenPipeError

    monkeypatch.setattr(cli, "run_show", broken)
    assert main(["show", files[0]]) == 141
    assert capsys.readouterr().err == ""


def test_broken_pipe_with_a_real_stdout_exits_141_quietly(files, tmp_path):
    # (stdout a pipe: it is pointed at devnull, so that the exit flush cannot fail again)
    code = ("import sys\n"
            "import fuzzylogic.cli as cli\n"
            "def broken(args):\n"
            "    raise BrokenPipeError\n"
            "cli.run_show = broken\n"
            "rc = cli.main(sys.argv[1:])\n"
            "print('left in the buffer, flushed at exit')\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, "show", files[0]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 141 and proc.stderr == "" and proc.stdout == ""


def test_python_dash_m_fuzzylogic_check(files, tmp_path):
    good, typo = files
    # (from another directory, and with no segmentation package imported)
    code = ("import runpy, sys\n"
            "sys.argv = ['fuzzylogic'] + sys.argv[1:]\n"
            "try:\n"
            "    runpy.run_module('fuzzylogic', run_name='__main__')\n"
            "finally:\n"
            "    heavy = ('torchvision', 'segment_anything', 'segmentation_models_pytorch', 'PIL',\n"
            "             'fuzzylogic_seg')\n"
            "    print('heavy:', ','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    env_cwd = dict(cwd=tmp_path, capture_output=True, text=True, timeout=120)
    proc = subprocess.run([sys.executable, "-m", "fuzzylogic", "check", good], **env_cwd,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{good}: OK (2 rules, 3 predicates, 2 sorts, semantics log_product)\n"
    proc = subprocess.run([sys.executable, "-c", code, "check", good, typo], **env_cwd, env=_env())
    assert proc.returncode == 1
    assert f"{typo}:4:19: unknown predicate 'cupp'" in proc.stderr
    assert proc.stderr.rstrip().endswith("heavy:")


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
