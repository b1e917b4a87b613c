"""The checker: inferred sorts, guard shorthand, and every CheckError with its position.

Also the `fuzzyseg rules check` command, which is parse + check per file.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import fuzzylogic as fl
from fuzzylogic import ast
from fuzzylogic.ast import Atom, Implies, Quantified, Term
from fuzzylogic.checker import RESERVED_NAMES, check
from fuzzylogic.errors import CheckError
from fuzzylogic.parser import parse

HEAD = """\
sort pixel[2]
sort box
sort class
constant box: box
constant bg: class = 0
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
predicate seg(class, pixel) softmax(class)
"""
N_HEAD = HEAD.count("\n")


def checked(body: str) -> ast.Program:
    return check(parse(HEAD + body))


def check_error(body: str, line: int, col: int, *words: str) -> CheckError:
    """Assert that HEAD + body fails the checker at (line, col) of body, mentioning words."""
    program = parse(HEAD + body, source="t.rules")
    with pytest.raises(CheckError) as info:
        check(program)
    err = info.value
    assert (err.source, err.line - N_HEAD, err.column) == ("t.rules", line, col), str(err)
    rendered = str(err)
    for w in words:
        assert w in rendered, rendered
    # the caret sits under the reported column of the reported line
    src, caret = err.context().split("\n")
    assert src[4:] == (HEAD + body).split("\n")[err.line - 1]
    assert caret.index("^") - 4 == col - 1
    return err


def quantifiers(f):
    out, stack = [], [f]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Quantified):
            out.append(n)
            stack += [n.body] + ([n.guard] if n.guard is not None else [])
        elif isinstance(n, ast.Not):
            stack.append(n.operand)
        elif isinstance(n, (ast.And, ast.Or, ast.Implies, ast.Iff)):
            stack += [n.left, n.right]
    return out


# ------------------------------------------------------------------ sorts
def test_sorts_are_inferred_from_argument_positions():
    p = checked("rule r: forall p: exists b: inside(p, b) and cup(p)")
    outer, inner = quantifiers(p.rules[0].formula)
    assert (outer.variables, outer.sorts) == (("p",), ("pixel",))
    assert (inner.variables, inner.sorts) == (("b",), ("box",))


def test_sorts_of_several_variables_and_guards():
    p = checked("rule r: forall c, p where inside(p, box): seg(c, p)\n"
                "rule s: forall b: forall p in inside(p, b): cup(p)")
    (q,) = quantifiers(p.rules[0].formula)
    assert q.sorts == ("class", "pixel")
    outer, inner = quantifiers(p.rules[1].formula)
    assert outer.sorts == ("box",) and inner.sorts == ("pixel",)


def test_declared_variables_give_the_sort():
    p = checked("variable x: pixel\nrule r: forall x: cup(x)")
    assert quantifiers(p.rules[0].formula)[0].sorts == ("pixel",)


def test_check_returns_a_new_tree_and_is_idempotent():
    program = parse(HEAD + "rule r: forall p in inside(box): cup(p) -> disc(p)")
    once = check(program)
    assert quantifiers(program.rules[0].formula)[0].sorts == ()  # input untouched
    assert check(once) == once
    assert once.sorts == program.sorts and once.predicates == program.predicates


def test_guard_shorthand_inserts_the_bound_variable_first():
    p = checked("rule r: forall p in inside(box): cup(p) -> disc(p)")
    explicit = checked("rule r: forall p in inside(p, box): cup(p) -> disc(p)")
    assert p.rules[0].formula == explicit.rules[0].formula
    assert p.rules[0].formula == Quantified(
        "forall", ("p",), Implies(Atom("cup", (Term("p"),)), Atom("disc", (Term("p"),))),
        guard=Atom("inside", (Term("p"), Term("box"))), sorts=("pixel",))


def test_the_issue_example_checks():
    p = checked("rule cup_in_disc: forall p: inside(p, box) -> cup(p) -> disc(p)")
    assert quantifiers(p.rules[0].formula)[0].sorts == ("pixel",)


def test_the_design_example_checks():
    from test_parser import DESIGN_EXAMPLE  # tests/ is on sys.path (rootdir conftest)
    p = check(parse(DESIGN_EXAMPLE))
    rows = p.rules[2].formula
    assert [q.sorts for q in quantifiers(rows)] == [("box",), ("row",), ("col",)]
    cup_small = p.rules[3].formula
    assert cup_small.guard == Atom("inside", (Term("p"), Term("disc_box")))


# ------------------------------------------------------------------ every error
def test_unknown_predicate_with_suggestion():
    err = check_error("rule r: forall p: cup(p) -> dsic(p)", 1, 29, "unknown predicate 'dsic'")
    assert err.hint == "did you mean 'disc'?"


def test_unknown_sort_in_each_kind_of_declaration():
    err = check_error("predicate rim(pixel, boxx)", 1, 22, "unknown sort 'boxx'",
                      "argument 2 of predicate 'rim'")
    assert err.hint == "did you mean 'box'?"
    check_error("constant c: colour", 1, 13, "unknown sort 'colour'")
    check_error("variable v: pixl", 1, 13, "unknown sort 'pixl'", "did you mean 'pixel'")


def test_wrong_arity_says_expected_and_got():
    err = check_error("rule r: forall p: inside(p)", 1, 19,
                      "predicate 'inside' takes 2 arguments (pixel, box), got 1")
    assert "declared at line 8:11" in err.hint
    check_error("rule r: forall p: cup(p, p)", 1, 19, "takes 1 argument (pixel), got 2")


def test_guard_shorthand_needs_a_single_variable():
    err = check_error("rule r: forall p, b in inside(box): cup(p)", 1, 24, "got 1")
    assert "single variable" in err.hint


def test_the_guard_shorthand_hint_only_where_the_atom_is_a_guard():
    # not in a guard: the declaration, not the shorthand
    err = check_error("rule r2: forall c: seg(c)", 1, 20,
                      "predicate 'seg' takes 2 arguments (class, pixel), got 1")
    assert err.hint == "'seg' is declared at line 9:11 as 'predicate seg(class, pixel)'"
    assert "shorthand" not in str(err)
    # a guard one argument short: the shorthand did not apply, and the hint says why
    err = check_error("rule r: forall p, b in inside(box): cup(p)", 1, 24, "got 1")
    assert err.hint.endswith("in a guard, the shorthand that inserts the bound variable works when "
                             "the quantifier binds a single variable not already given "
                             "(this one binds p, b)")
    err = check_error("rule r: forall p in inside(p): cup(p)", 1, 21, "got 1")
    assert err.hint.endswith("not already given ('p' is already an argument here)")
    # a guard with a wrong count that no shorthand could fix
    err = check_error("rule r: forall p in inside(p, box, box): cup(p)", 1, 21, "got 3")
    assert "shorthand" not in err.hint


def test_sort_mismatch_of_a_variable_points_at_the_second_use():
    check_error("rule r: forall p: cup(p) and inside(box, p)", 1, 37,
                "argument 1 of inside expects a pixel", "constant 'box' has sort box")
    check_error("rule r: forall p, b: cup(p) and inside(b, p)", 1, 43,
                "variable 'p' is used here as box (argument 2 of inside)",
                "but it is used as pixel at line 10:26 (argument 1 of cup)")
    check_error("variable x: box\nrule r: forall x: cup(x)", 2, 23,
                "used here as pixel", "declared as box ('variable x: box' at line 10:10)")


def test_sort_mismatch_through_the_guard_shorthand_says_so():
    check_error("rule r: forall b in inside(box): exists p: inside(p, b)", 1, 54,
                "variable 'b' is used here as box (argument 2 of inside)",
                "as pixel at line 10:16 (argument 1 of inside, inserted by the guard shorthand)")


def test_constant_at_the_wrong_sort():
    check_error("rule r: forall p: seg(box, p)", 1, 23,
                "argument 1 of seg expects a class, but constant 'box' has sort box")


def test_unbound_variable():
    check_error("rule r: forall p: cup(q)", 1, 23, "unknown name 'q'",
                "neither a variable bound here nor a constant")
    err = check_error("variable q: pixel\nrule r: forall p: cup(p) and cup(q)", 2, 34,
                      "unbound variable 'q'", "rules must be closed")
    assert err.hint == "bind it: forall q: ..."
    # a variable bound in one branch is not visible in the other
    check_error("rule r: (exists p: cup(p)) and disc(p)", 1, 37, "unknown name 'p'")


def test_shadowed_variable():
    check_error("rule r: forall p: cup(p) and exists p: disc(p)", 1, 37,
                "variable 'p' shadows the variable 'p' bound at line 10:16")
    check_error("rule r: forall p, p: cup(p)", 1, 19, "bound twice")
    check_error("rule r: forall box: cup(box)", 1, 16,
                "variable 'box' has the same name as constant 'box'")


def test_quantified_variable_never_used():
    err = check_error("rule r: forall p, q: cup(p)", 1, 19, "quantified variable 'q' is never used")
    assert "remove it" in err.hint
    check_error("rule r: forall p: exists b: cup(p)", 1, 26, "'b' is never used")


@pytest.mark.parametrize("body, line, col, words", [
    ("sort box", 1, 6, ("duplicate sort 'box'", "first declared at line 2:6")),
    ("predicate cup(box)", 1, 11, ("duplicate predicate 'cup'", "line 6:11")),
    ("constant bg: box", 1, 10, ("duplicate constant 'bg'", "line 5:10")),
    ("variable x: box\nvariable x: box", 2, 10, ("duplicate variable 'x'",)),
    ("rule r: true\nrule r: false", 2, 1, ("duplicate rule name 'r'", "first rule with this name at line 10:1")),
    ("rule: true rule: false", 1, 12, ("duplicate rule name 'rule_10'", "give one of them a name")),
    ("constant cup: box", 1, 10, ("same name as predicate 'cup'",)),
    ("variable bg: class", 1, 10, ("same name as constant 'bg'",)),
])
def test_duplicate_and_clashing_names(body, line, col, words):
    check_error(body, line, col, *words)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names(name):
    check_error(f"predicate {name}(pixel)", 1, 11, f"'{name}' is a reserved name")
    check_error(f"constant {name}: box", 1, 10, f"'{name}' is a reserved name")


def test_contract_reserved_names_are_included():
    assert {"domains", "validate", "mode"} <= RESERVED_NAMES


def test_fixed_index_needs_a_one_axis_sort_and_axes_must_be_positive():
    check_error("constant centre: pixel = 3", 1, 10, "spans 2 axes")
    check_error("sort flat[0]", 1, 6, "at least 1 tensor axis, got 0")


def test_include_errors_in_rules_point_into_the_included_file(tmp_path):
    (tmp_path / "decl.rules").write_text(HEAD)
    (tmp_path / "r.rules").write_text("rule r: forall p:\n    cup(p) -> dics(p)")
    program = parse('include "decl.rules"\ninclude "r.rules"', base_dir=tmp_path)
    with pytest.raises(CheckError) as info:
        check(program)
    err = info.value
    assert (err.source, err.line, err.column) == (str(tmp_path / "r.rules"), 2, 15)
    assert err.context() == "        cup(p) -> dics(p)\n" + " " * 18 + "^"


def test_programs_built_by_hand_are_checked_too():
    p = ast.Program(
        sorts=(ast.SortDecl("s"),), predicates=(ast.PredicateDecl("f", ("s",)),),
        rules=(ast.Rule("r", ast.Quantified("forall", ("x",), ast.Atom("f", (ast.Term("x"),)))),))
    assert quantifiers(check(p).rules[0].formula)[0].sorts == ("s",)
    bad = ast.Program(predicates=(ast.PredicateDecl("f", ("s",)),))
    with pytest.raises(CheckError, match="unknown sort 's'"):
        check(bad)
    deep = ast.Atom("f", (ast.Term("x"),))
    for _ in range(5000):
        deep = ast.Not(deep)
    p2 = ast.Program(sorts=p.sorts, predicates=p.predicates,
                     rules=(ast.Rule("r", ast.Quantified("forall", ("x",), deep)),))
    with pytest.raises(CheckError, match="too deeply"):
        check(p2)


@pytest.mark.parametrize("word", ["or", "and"])
def test_a_chain_of_2000_terms_is_checked_operand_by_operand(word):
    # sorts inferred through the whole chain, whose shape and positions are kept
    terms = f" {word} ".join(["cup(p)", "inside(p, b)"] * 1000)
    program = check(parse(HEAD + f"rule r: forall p, b: {terms}"))
    q = program.rules[0].formula
    assert q.sorts == ("pixel", "box")
    links = ast.chain(q.body)
    assert len(links) == 1999 and links[-1].right == Atom("inside", (Term("p"), Term("b")))
    assert links[-1].right.pos.column == len(f"rule r: forall p, b: {terms}") - 11
    # the errors of the last operand are found, at their place, and in text order
    for body, at, message in [
            (f"rule r: forall p: {terms.replace('inside(p, b)', 'disc(p)')} {word} dics(p)",
             "dics(p)", "unknown predicate 'dics'"),
            (f"rule r: forall p: cup(p) {word} seg(bg, p) {word} {terms}", "b)",
             "unknown name 'b'")]:
        with pytest.raises(CheckError, match=message) as info:
            check(parse(HEAD + body))
        err = info.value
        assert (err.line - N_HEAD, err.column) == (1, body.index(at) + 1)
        src, caret = err.context().split("\n")  # (a window around the column)
        assert src[caret.index("^"):].startswith(at)


def test_parse_and_check_take_milliseconds():
    from test_parser import DESIGN_EXAMPLE  # tests/ is on sys.path (rootdir conftest)
    check(parse(DESIGN_EXAMPLE))
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        check(parse(DESIGN_EXAMPLE))
    per_file = (time.perf_counter() - t0) / n
    assert per_file < 0.1, per_file  # about 3 ms measured; only catches blowups


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "rules").glob("*.rules"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_example_rule_files_check(path):
    from fuzzylogic.parser import parse_file

    program = check(parse_file(path))
    assert program.rules
    for rule in program.rules:
        for q in quantifiers(rule.formula):
            assert len(q.sorts) == len(q.variables) and all(q.sorts)
    assert check(program) == program


# ------------------------------------------------------------------ the command
def test_rules_check_command(tmp_path, capsys):
    from fuzzylogic_seg.cli import main

    good = tmp_path / "good.rules"
    good.write_text(HEAD + "rule r: forall p in inside(box): cup(p) -> disc(p)\n")
    bad = tmp_path / "bad.rules"
    bad.write_text(HEAD + "rule r: forall p: cup(p) -> dsic(p)\n")

    assert main(["rules", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: OK (1 rule, 4 predicates, 3 sorts)")

    assert main(["rules", "check", str(bad), str(good), str(tmp_path / "missing.rules")]) == 1
    captured = capsys.readouterr()
    assert f"{good}: OK" in captured.out
    assert f"{bad}:10:29: unknown predicate 'dsic'" in captured.err
    assert "    rule r: forall p: cup(p) -> dsic(p)\n                                ^" in captured.err
    assert "missing.rules" in captured.err and "not found" in captured.err

    assert main(["rules", "check", "--json", str(bad), str(good)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == 1
    first, second = summary["files"]
    assert (first["ok"], first["kind"], first["line"], first["column"]) == (False, "CheckError", 10, 29)
    assert second["ok"] and second["rules"] == ["r"]


def test_misspelt_operators_and_presets_are_placed_and_fail_the_check_command(tmp_path, capsys):
    """Operator and preset names resolve when compiling: their errors still carry
    file, line, column and caret, and `fuzzyseg rules check` reports them."""
    from fuzzylogic_seg.cli import main

    op = tmp_path / "op.rules"
    op.write_text("sort s\npredicate a(s)\nrule r [forall = pmeen(2)]: forall x: a(x)\n")
    with pytest.raises(fl.RuleSemanticsError) as e:
        fl.load(op)
    assert isinstance(e.value, fl.SemanticsError)  # still caught as before
    assert (e.value.source, e.value.line, e.value.column) == (str(op), 3, 18)
    assert "unknown forall operator 'pmeen'" in str(e.value) and "^" in str(e.value)
    preset = tmp_path / "preset.rules"
    preset.write_text("sort s\n  semantics prodcut\npredicate a(s)\nrule r: forall x: a(x)\n")
    with pytest.raises(fl.RuleSemanticsError, match=r"preset.rules:2:3: unknown semantics 'prodcut'"):
        fl.load(preset)
    assert main(["rules", "check", str(op), str(preset)]) == 1
    err = capsys.readouterr().err
    assert f"{op}:3:18:" in err and f"{preset}:2:3:" in err


@pytest.mark.parametrize("axes", [9, 512, 10 ** 9])
def test_an_image_size_written_as_an_axis_count_is_refused_at_its_place(axes):
    text = f"sort pixel[{axes}]\npredicate a(pixel)\nrule r: forall p: a(p)\n"
    with pytest.raises(CheckError, match=rf"sort 'pixel' spans {axes} tensor axes; at most 8") as e:
        check(parse(text, "x.rules"))
    assert (e.value.line, e.value.column) == (1, 6) and "sort pixel[2]" in e.value.hint


def test_offsets_need_a_bound_variable_of_a_one_axis_sort():
    checked("predicate near(box, box)\nrule r: forall a, b: near(a, b + 1) -> near(a + 3, b - 1)")
    check_error("predicate near(box, box)\nrule r: forall a: near(a, box + 1)", 2, 27,
                "'box + 1'", "not one", "forall c: mask(c) <-> mask(c + 1)")
    check_error("rule r: forall p: cup(p + 1)", 1, 23, "'p + 1'", "one-axis sorts",
                "'pixel' spans 2 axes", "sort row / sort col")
    err = check_error("predicate near(box, box)\nrule r: forall a, bb: near(a, b + 1)", 2, 31, "'b + 1'")
    assert err.hint == "did you mean 'bb'?"


def test_rules_show_command_prints_the_program_with_includes_resolved(tmp_path, capsys):
    from fuzzylogic.checker import check
    from fuzzylogic.parser import parse, parse_file
    from fuzzylogic_seg.cli import main

    (tmp_path / "decls.rules").write_text(HEAD)
    main_file = tmp_path / "main.rules"
    main_file.write_text('include "decls.rules"\n# a comment\nrule r [weight = 0.5]:\n'
                         "    forall p in inside(box): (cup(p) -> disc(p))\n")
    assert main(["rules", "show", str(main_file)]) == 0
    out = capsys.readouterr().out
    # as the compiler reads it: checked, the implicit pixel argument written out (the
    # same text as the core's `fuzzylogic show`)
    assert "rule r [weight = 0.5]: forall p in inside(p, box): cup(p) -> disc(p)" in out
    assert "# a comment" not in out and "include" not in out
    assert check(parse(out)).rules == check(parse_file(main_file)).rules  # the same program
    bad = tmp_path / "bad.rules"
    bad.write_text(HEAD + "rule r: forall p: cupp(p)\n")
    assert main(["rules", "show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "cupp" in err and "^" in err


def test_a_reader_that_stops_early_gets_no_traceback():
    # `fuzzyseg rules facts | head -1`: the closed pipe ends the command quietly (the
    # listing is made long here, so that the pipe is closed while it is written)
    import subprocess
    import sys

    code = ("import sys, fuzzylogic_seg.commands.rules as R\n"
            "from fuzzylogic_seg.cli import main\n"
            "R._table = lambda head, rows: [print('x' * 99) for _ in range(200000)]\n"
            "sys.exit(main(['rules', 'facts']))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout.readline()
    p.stdout.close()  # the reader goes away with ~20 MB still to write
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_a_constant_of_a_two_axis_sort_is_refused_by_the_checker_where_it_is_used():
    # (it was refused only when compiling: `check` and `show` passed the file)
    check_error("constant p0: pixel\nrule r: cup(p0) -> disc(p0)\n", 2, 13,
                "constant 'p0'", "constants of the 2-axis sort 'pixel' are not supported",
                "feed a predicate that holds there")
    err = check_error("constant p1: pixel = 3\n", 1, 10, "fixed index 3", "spans 2 axes")
    assert "call time" not in str(err)  # no longer suggests what is not supported either


# ------------------------------------------------ a quantifier's own operator
def test_a_quantifier_operator_is_completed_with_its_defaults():
    rule = checked("rule r: forall[pmean_error] p: exists[at_least(0.5)] b: inside(p, b)\n").rules[0]
    assert rule.formula.operator == ("pmean_error", 2.0)
    assert rule.formula.body.operator == ("at_least", 0.5)


@pytest.mark.parametrize("op, words", [
    ("at_leest(0.5)", ("unknown exists operator 'at_leest'", "at_least")),
    ("at_least(2)", ("at_least needs a share 0 < q <= 1",)),
    ("at_least", ("needs parameter(s) ['q']",)),
    ("min", ("unknown exists operator 'min'",)),  # min is a forall operator; exists has max
    ("max(1)", ("takes 0 parameter(s)",)),
])
def test_a_bad_quantifier_operator_is_reported_at_its_name(op, words):
    check_error(f"rule r: forall p: exists[{op}] b: inside(p, b)\n", 1, 26, *words)
