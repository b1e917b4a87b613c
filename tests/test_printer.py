"""The printer is the parser's inverse: parse(format_program(p)) == p, on random
programs (every connective, guards, offsets) and on the shipped rule files."""
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings

from fuzzylogic import ast
from fuzzylogic.errors import FuzzyLogicError
from fuzzylogic.parser import parse, parse_file
from fuzzylogic.printer import format_formula, format_program, format_rule
from fuzzylogic.testing import programs

RULES = sorted((Path(__file__).resolve().parent.parent / "examples" / "rules").glob("*.rules"))


def _same(a: ast.Program, b: ast.Program) -> None:
    for name in ("sorts", "predicates", "constants", "variables", "rules", "semantics"):
        assert getattr(a, name) == getattr(b, name), name


def _unsorted(node):
    """``node`` with every Quantified.sorts emptied (the checker fills them in; the
    strategy does too, and its programs need not pass the checker's style checks)."""
    if isinstance(node, ast.Quantified):
        return dataclasses.replace(node, sorts=(), body=_unsorted(node.body),
                                   guard=None if node.guard is None else _unsorted(node.guard))
    if isinstance(node, ast.Not):
        return dataclasses.replace(node, operand=_unsorted(node.operand))
    if isinstance(node, (ast.And, ast.Or, ast.Implies, ast.Iff)):
        return dataclasses.replace(node, left=_unsorted(node.left), right=_unsorted(node.right))
    return node


@settings(max_examples=150, deadline=None)
@given(programs(max_rules=3, depth=4))
def test_random_programs_survive_printing_and_parsing(prog):
    back = parse(format_program(prog))
    prog = dataclasses.replace(prog, rules=tuple(
        dataclasses.replace(r, formula=_unsorted(r.formula)) for r in prog.rules))
    _same(back, prog)


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_the_shipped_rule_files_survive_printing_and_parsing(path):
    prog = parse_file(path)
    _same(parse(format_program(prog)), prog)


def a(name, *args):
    return ast.Atom(name, tuple(ast.Term(x) if isinstance(x, str) else x for x in args))


P, Q, R = a("p", "x"), a("q", "x"), a("r", "x")


@pytest.mark.parametrize("formula, text", [
    (ast.And(ast.Or(P, Q), R), "(p(x) or q(x)) and r(x)"),
    (ast.Or(P, ast.And(Q, R)), "p(x) or q(x) and r(x)"),
    (ast.And(P, ast.And(Q, R)), "p(x) and (q(x) and r(x))"),  # left-associative
    (ast.And(ast.And(P, Q), R), "p(x) and q(x) and r(x)"),
    (ast.Implies(P, ast.Implies(Q, R)), "p(x) -> q(x) -> r(x)"),  # right-associative
    (ast.Implies(ast.Implies(P, Q), R), "(p(x) -> q(x)) -> r(x)"),
    (ast.Iff(P, ast.Iff(Q, R)), "p(x) <-> (q(x) <-> r(x))"),
    (ast.Not(ast.And(P, Q)), "not (p(x) and q(x))"),
    (ast.Not(ast.Not(P)), "not not p(x)"),
    (ast.Quantified("forall", ("x",), ast.Implies(P, Q)), "forall x: p(x) -> q(x)"),
    # a quantifier swallows what follows it: parenthesised unless nothing can follow
    (ast.And(ast.Quantified("exists", ("x",), P), ast.Truth(1.0)), "(exists x: p(x)) and true"),
    (ast.Not(ast.Quantified("exists", ("x",), P)), "not (exists x: p(x))"),
    (ast.Quantified("forall", ("x", "y"), ast.Quantified("exists", ("z",), a("e", "x", "z")),
                    guard=ast.Or(P, Q)),
     "forall x, y in p(x) or q(x): exists z: e(x, z)"),
    (a("mask", "a", "r", ast.Term("c", offset=1)), "mask(a, r, c + 1)"),
    (a("mask", ast.Term("r", offset=-2), "c"), "mask(r - 2, c)"),
    (ast.Implies(ast.Truth(0.0), a("zero")), "false -> zero()"),
])
def test_formulas_get_the_parentheses_the_grammar_needs(formula, text):
    assert format_formula(formula) == text
    rule = parse(f"rule r: {text}").rules[0]
    assert rule.formula == formula


def test_rules_print_their_options():
    r = ast.Rule("box_rows", P, 0.5, (("forall", ("pmean_error", 2)), ("semantics", "product")))
    assert format_rule(r) == ("rule box_rows [weight = 0.5, forall = pmean_error(2), "
                              "semantics = product]: p(x)")
    assert format_rule(ast.Rule("r", P)) == "rule r: p(x)"


def test_what_has_no_rule_syntax_is_refused():
    with pytest.raises(FuzzyLogicError, match="0.5"):
        format_formula(ast.And(P, ast.Truth(0.5)))


def test_a_softmax_over_one_of_two_same_sorted_arguments_prints_by_position():
    rel = ast.PredicateDecl("rel", ("class", "class"), "softmax", 1)
    prog = ast.Program(sorts=(ast.SortDecl("class"),), predicates=(rel,))
    assert "predicate rel(class, class) softmax(2)" in format_program(prog)
    assert parse(format_program(prog)).predicates == (rel,)


@pytest.mark.parametrize("word", ["or", "and"])
def test_a_chain_of_2000_terms_prints_flat_and_reads_back(word):
    n = 2000
    preds = "".join(f"predicate a{i}(s)\n" for i in range(n))
    # operands that need parentheses (the other connective, a quantifier) and some
    # that do not (`not`, the tighter connective)
    other = "and" if word == "or" else "or"
    terms = [f"a{i}(x)" for i in range(n)]
    terms[5] = f"(a5(x) {other} a4(x))" if word == "and" else f"a5(x) {other} a4(x)"
    terms[7] = "not a7(x)"
    terms[9] = "(exists y: a9(y))"
    text = f"sort s\n{preds}rule r: forall x: {f' {word} '.join(terms)}\n"
    prog = parse(text)
    out = format_program(prog)
    assert out.splitlines()[-1] == f"rule r: forall x: {f' {word} '.join(terms)}"
    _same(parse(out), prog)
    # a chain under `not`, or on the right of its own connective, keeps its parentheses
    chain = f" {word} ".join(terms[:300])
    for f in (f"not ({chain})", f"a0(x) {word} ({chain})"):
        g = parse(f"rule r: {f}").rules[0].formula
        assert format_formula(g) == f
