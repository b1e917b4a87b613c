"""The rule language's parser: constructs -> AST, precedence, positions, errors, includes."""
from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import time

import pytest

from fuzzylogic import ast
from fuzzylogic.ast import (And, Atom, ConstantDecl, Iff, Implies, Not, Or, PredicateDecl,
                            Quantified, SortDecl, Term, Truth, VariableDecl)
from fuzzylogic.errors import CheckError, FuzzyLogicError, IncludeError, ParseError
from fuzzylogic.grammar import grammar_path, grammar_text
from fuzzylogic.parser import MAX_NESTING, parse, parse_file


# ------------------------------------------------------------------ helpers
def A(pred, *args):
    return Atom(pred, tuple(Term(a) for a in args))


def Q(kind, variables, body, guard=None):
    return Quantified(kind, tuple(variables.split(",")), body, guard)


def formula(text):
    """The formula of the single rule `rule r: text`."""
    program = parse(f"rule r: {text}")
    assert len(program.rules) == 1
    return program.rules[0].formula


def raises(cls, text, **kw):
    with pytest.raises(cls) as info:
        parse(text, **kw)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    return info.value


def caret_of(err):
    """(source line, caret column) of an error's rendered context."""
    src, caret = err.context().split("\n")
    return src[4:], caret.index("^") - 4 + 1


def nodes(x):
    """Every AST node below (and including) x, iteratively."""
    stack, out = [x], []
    while stack:
        n = stack.pop()
        if isinstance(n, (list, tuple)):
            stack.extend(n)
        elif dataclasses.is_dataclass(n) and not isinstance(n, ast.Pos):
            out.append(n)
            stack.extend(getattr(n, f.name) for f in dataclasses.fields(n))
    return out


DESIGN_EXAMPLE = """\
# comment to end of line
semantics log_product                   # the file's default semantics (optional)

sort pixel[2]                           # a sort spanning 2 tensor axes (H, W)
sort box                                # one axis (default)
sort class
sort row
sort col

predicate cup(pixel) logits             # fed logits: sigmoid applied by the compiler
predicate disc(pixel) logits
predicate inside(pixel, box)            # fed probabilities in [0, 1] ("prob", the default)
predicate seg(class, pixel) softmax(class)  # fed logits, softmax over the class argument's axis
predicate inbox(pixel, box)
predicate rowin(row, box)
predicate inrow(row, col, box)
predicate obj(row, col, box)

constant disc_box: box                  # index bound at call time (int, or LongTensor [B])
constant background: class = 0          # fixed index

variable p, q: pixel                    # optional: sorts are inferred from use

rule cup_in_disc: forall p: inside(p, disc_box) -> cup(p) -> disc(p)
rule outside_bg [weight = 0.5, semantics = product, forall = pmean_error(2)]:
    forall p where not (exists b: inbox(p, b)): seg(background, p)
rule rows [exists = log_sum_exp(8)]:
    forall b: forall r in rowin(r, b): exists x in inrow(r, x, b): obj(r, x, b)
rule cup_small: forall p in inside(disc_box): cup(p) -> disc(p)   # guard shorthand
"""


# ------------------------------------------------------------------ grammar file
def test_grammar_is_found_in_the_checkout():
    assert grammar_path().name == "fuzzylogic.lark"
    assert "start:" in grammar_text()


# ------------------------------------------------------------------ declarations
def test_declarations_parse_to_the_expected_nodes():
    p = parse(DESIGN_EXAMPLE)
    assert p.semantics == "log_product"
    assert p.sorts[:2] == (SortDecl("pixel", 2), SortDecl("box", 1))
    assert p.predicates[:4] == (
        PredicateDecl("cup", ("pixel",), "logits"),
        PredicateDecl("disc", ("pixel",), "logits"),
        PredicateDecl("inside", ("pixel", "box"), "prob"),
        PredicateDecl("seg", ("class", "pixel"), "softmax", softmax_arg=0),
    )
    assert p.constants == (ConstantDecl("disc_box", "box", None), ConstantDecl("background", "class", 0))
    assert p.variables == (VariableDecl("p", "pixel"), VariableDecl("q", "pixel"))
    assert [r.name for r in p.rules] == ["cup_in_disc", "outside_bg", "rows", "cup_small"]


def test_softmax_argument_is_the_index_of_the_named_sort():
    p = parse("predicate rel(pixel, class, box) softmax(class)\npredicate e(a) prob")
    assert p.predicates[0].softmax_arg == 1 and p.predicates[0].input == "softmax"
    assert p.predicates[1].input == "prob" and p.predicates[1].softmax_arg is None


def test_an_operator_parameter_must_be_finite():
    with pytest.raises(CheckError) as e:
        parse("rule r [forall = pmean_error(1e999)]: true")
    assert "must be finite numbers, got 1e999" in str(e.value) and e.value.column == 30
    with pytest.raises(CheckError) as e:  # each of several
        parse("rule r [exists = two(8, -1e999)]: true")
    assert "got -1e999" in str(e.value) and e.value.column == 25


def test_an_operator_option_takes_several_parameters():
    # as fl.Semantics(exists=("two", 8.0, 0.5)) does; printed back the same way
    import fuzzylogic as fl

    p = parse("rule r [exists = two(8, 0.5), forall = pmean_error(3)]: true")
    assert dict(p.rules[0].options) == {"exists": ("two", 8, 0.5), "forall": ("pmean_error", 3)}
    assert "[exists = two(8, 0.5), forall = pmean_error(3)]" in fl.format_program(p)
    assert parse(fl.format_program(p)) == p


def test_softmax_by_position_for_a_sort_that_two_arguments_share():
    p = parse("predicate rel(class, class) softmax(2)\npredicate one(pixel, class) softmax(1)")
    assert p.predicates[0].softmax_arg == 1 and p.predicates[1].softmax_arg == 0
    with pytest.raises(CheckError) as e:
        parse("predicate rel(class, class) softmax(3)")
    assert "it has 2 arguments" in str(e.value) and "counting from 1" in str(e.value)
    assert e.value.line == 1 and e.value.column == 37
    with pytest.raises(CheckError) as e:
        parse("predicate rel(class, class) softmax(class)")
    assert "softmax(1) or softmax(2)" in str(e.value)


def test_rules_options_and_default_names():
    p = parse("""
rule a [weight = 0.5, semantics = product, forall = pmean_error(2), exists = pmean(1.5)]: true
rule: false
rule [loss = log, implication = reichenbach, weight = 2]:
  true
""")
    a, anon, anon2 = p.rules
    assert a.weight == 0.5
    assert a.options == (("semantics", "product"), ("forall", ("pmean_error", 2)),
                         ("exists", ("pmean", 1.5)))
    assert isinstance(a.options[1][1][1], int)
    assert anon.name == "rule_3" and anon.weight == 1.0 and anon.options == ()
    assert anon2.name == "rule_4" and anon2.weight == 2.0
    assert anon2.options == (("loss", "log"), ("implication", "reichenbach"))
    assert anon.formula == Truth(0.0) and a.formula == Truth(1.0)


def test_comments_and_whitespace_are_ignored():
    p = parse("# only a comment")
    assert p == ast.Program()
    p = parse("sort a # trailing\n\n\t# another\r\nsort b#no space")
    assert [s.name for s in p.sorts] == ["a", "b"]
    assert parse('include "x#y.rules"'.replace("include", "#include")) == ast.Program()


def test_keywords_are_reserved_but_their_prefixes_are_names():
    p = parse("predicate index(pixel)\npredicate notable(pixel)\npredicate order(pixel)\n"
              "predicate forall_(pixel)\nrule r: forall x in index(x): notable(x) or order(x)")
    q = p.rules[0].formula
    assert q.guard == A("index", "x") and q.body == Or(A("notable", "x"), A("order", "x"))
    for text, col in [("predicate forall(x)", 11), ("sort and", 6), ("rule r: cup(not)", 13),
                      ("constant true: box", 10), ("variable in: pixel", 10)]:
        err = raises(ParseError, text)
        assert (err.line, err.column) == (1, col), text
        assert "is a keyword" in err.message


def test_input_kind_words_stay_usable_as_names():
    p = parse("sort prob\npredicate logits(prob) softmax(prob)\nrule r: forall softmax: logits(softmax)")
    assert p.predicates[0] == PredicateDecl("logits", ("prob",), "softmax", softmax_arg=0)


# ------------------------------------------------------------- formulas
@pytest.mark.parametrize("text, expected", [
    ("a(x) or b(x) and c(x)", Or(A("a", "x"), And(A("b", "x"), A("c", "x")))),
    ("a(x) and b(x) or c(x)", Or(And(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("not a(x) and b(x)", And(Not(A("a", "x")), A("b", "x"))),
    ("not not a(x)", Not(Not(A("a", "x")))),
    ("a(x) -> b(x) -> c(x)", Implies(A("a", "x"), Implies(A("b", "x"), A("c", "x")))),
    ("(a(x) -> b(x)) -> c(x)", Implies(Implies(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("a(x) or b(x) -> c(x) and d(x)",
     Implies(Or(A("a", "x"), A("b", "x")), And(A("c", "x"), A("d", "x")))),
    ("a(x) <-> b(x) -> c(x)", Iff(A("a", "x"), Implies(A("b", "x"), A("c", "x")))),
    ("a(x) -> b(x) <-> c(x)", Iff(Implies(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("a(x) <-> b(x) <-> c(x)", Iff(Iff(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("a(x) and b(x) and c(x)", And(And(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("a(x) or b(x) or c(x)", Or(Or(A("a", "x"), A("b", "x")), A("c", "x"))),
    ("not (a(x) or b(x))", Not(Or(A("a", "x"), A("b", "x")))),
    ("((a(x)))", A("a", "x")),
    ("true and false", And(Truth(1.0), Truth(0.0))),
    ("a()", Atom("a", ())),
    ("r(x, y, z)", A("r", "x", "y", "z")),
])
def test_precedence_and_associativity(text, expected):
    assert formula(text) == expected


@pytest.mark.parametrize("text, expected", [
    # the body reaches as far right as possible
    ("forall x: a(x) and b(x) -> c(x)",
     Q("forall", "x", Implies(And(A("a", "x"), A("b", "x")), A("c", "x")))),
    ("a(y) and forall x: b(x) or c(x)",
     And(A("a", "y"), Q("forall", "x", Or(A("b", "x"), A("c", "x"))))),
    ("a(y) -> exists x: b(x) <-> c(x)",
     Implies(A("a", "y"), Q("exists", "x", Iff(A("b", "x"), A("c", "x"))))),
    ("not forall x: a(x) and b(x)", Not(Q("forall", "x", And(A("a", "x"), A("b", "x"))))),
    ("(forall x: a(x)) and b(y)", And(Q("forall", "x", A("a", "x")), A("b", "y"))),
    ("forall x, y: r(x, y)", Q("forall", "x,y", A("r", "x", "y"))),
    ("forall x: exists y: r(x, y)", Q("forall", "x", Q("exists", "y", A("r", "x", "y")))),
    ("forall x in g(x): a(x)", Q("forall", "x", A("a", "x"), guard=A("g", "x"))),
    ("forall x where g(x) and h(x): a(x) or b(x)",
     Q("forall", "x", Or(A("a", "x"), A("b", "x")), guard=And(A("g", "x"), A("h", "x")))),
    ("forall p where not (exists b: inbox(p, b)): seg(bg, p)",
     Q("forall", "p", A("seg", "bg", "p"), guard=Not(Q("exists", "b", A("inbox", "p", "b"))))),
    # a quantifier in a guard ends at the guard's colon
    ("forall x where exists y: r(x, y): a(x)",
     Q("forall", "x", A("a", "x"), guard=Q("exists", "y", A("r", "x", "y")))),
    ("forall b: forall r in rowin(r, b): exists x in inrow(r, x, b): obj(r, x, b)",
     Q("forall", "b", Q("forall", "r", Q("exists", "x", A("obj", "r", "x", "b"),
                                          guard=A("inrow", "r", "x", "b")),
                        guard=A("rowin", "r", "b")))),
    ("forall p in inside(disc_box): cup(p) -> disc(p)",
     Q("forall", "p", Implies(A("cup", "p"), A("disc", "p")), guard=A("inside", "disc_box"))),
])
def test_quantifiers_and_guards(text, expected):
    assert formula(text) == expected


def test_in_and_where_are_synonyms():
    assert formula("forall x in g(x): a(x)") == formula("forall x where g(x): a(x)")


def test_the_issue_example_parses_as_is():
    p = parse("sort pixel[2]\nsort box\nconstant box: box\npredicate inside(pixel, box)\n"
              "predicate cup(pixel) logits\npredicate disc(pixel) logits\n"
              "rule cup_in_disc: forall p: inside(p, box) -> cup(p) -> disc(p)")
    assert p.rules[0].formula == Q("forall", "p", Implies(A("inside", "p", "box"),
                                                          Implies(A("cup", "p"), A("disc", "p"))))


def test_a_rule_may_span_lines():
    p = parse("rule r:\n  forall x:\n    a(x)\n    -> b(x)\nrule s: true")
    assert p.rules[0].formula == Q("forall", "x", Implies(A("a", "x"), A("b", "x")))


# ------------------------------------------------------------- positions
def test_every_node_has_a_position():
    p = parse(DESIGN_EXAMPLE, source="design.rules")
    checked = 0
    for node in nodes(p):
        if hasattr(node, "pos"):
            assert node.pos.source == "design.rules", node
            assert node.pos.line >= 1 and node.pos.column >= 1, node
            assert (node.pos.end_line, node.pos.end_column) >= (node.pos.line, node.pos.column)
            checked += 1
    assert checked > 60


def test_positions_point_at_the_source():
    text = "sort pixel[2]\nrule cup_in_disc:\n  forall p, q: inside(p, box) -> cup(q)\n"
    p = parse(text, source="x.rules")
    lines = text.split("\n")

    def at(pos):
        return lines[pos.line - 1][pos.column - 1:]

    assert at(p.sorts[0].pos).startswith("pixel")
    rule = p.rules[0]
    assert (rule.pos.line, rule.pos.column) == (2, 1)
    q = rule.formula
    assert (q.pos.line, q.pos.column, q.pos.end_line, q.pos.end_column) == (3, 3, 3, 40)
    assert [at(v)[:1] for v in q.var_pos] == ["p", "q"]
    inside = q.body.left
    assert (inside.pos.line, inside.pos.column) == (3, 16)
    assert at(inside.args[1].pos).startswith("box)")
    assert at(q.body.right.args[0].pos) == "q)"


# ------------------------------------------------------------- parse errors
def test_missing_colon_error_has_position_message_and_caret():
    err = raises(ParseError, "sort a\nrule r forall p: cup(p)", source="f.rules")
    assert (err.source, err.line, err.column) == ("f.rules", 2, 8)
    assert err.message == "expected one of ':' or '[', got 'forall'"
    assert str(err).startswith("f.rules:2:8: expected")
    assert err.context() == "    rule r forall p: cup(p)\n           ^"


def test_missing_operator_lists_the_operators():
    err = raises(ParseError, "rule r: cup(p) disc(p)")
    assert (err.line, err.column) == (1, 16)
    for word in ("'and'", "'or'", "'->'", "'<->'", "got name 'disc'"):
        assert word in err.message
    assert "')'" not in err.message  # only what really fits at the top level


def test_end_of_input_points_after_the_last_token():
    err = raises(ParseError, "predicate cup(pixel   # comment\n")
    assert (err.line, err.column) == (1, 20)
    assert err.message == "expected one of ')' or ',', got end of input"
    err = raises(ParseError, "rule r:\n  a(x) and\n")
    assert (err.line, err.column) == (2, 11)
    assert "got end of input" in err.message and "'not'" in err.message


@pytest.mark.parametrize("text, col, hint", [
    ("rule r: a(x) && b(x)", 14, "'and'"),
    ("rule r: a(x) || b(x)", 14, "'or'"),
    ("rule r: ! a(x)", 9, "'not'"),
    ("rule r: a(x) => b(x)", 14, "'->'"),
    ("rule r: a(x) <=> b(x)", 14, "'<->'"),
    ("rule r: ∀x: a(x)", 9, "'forall'"),
    ("rule r: a(x) ∧ b(x)", 14, "'and'"),
    ("include 'x.rules'", 9, "double quotes"),
])
def test_other_spellings_get_a_hint(text, col, hint):
    err = raises(ParseError, text)
    assert (err.line, err.column) == (1, col)
    assert hint in err.hint


@pytest.mark.parametrize("text, hint", [
    ("rule r [weight = 0,5]: a(x)", "a decimal is written with a point: 0.5"),
    ("rule r: m(r + 2.5, c)", "a whole number is needed here (2, not 2.5)"),
    ("constant k: class = 1.5", "a whole number is needed here (1, not 1.5)"),
])
def test_numbers_split_where_they_should_not_be_get_a_hint(text, hint):
    err = raises(ParseError, text)
    assert hint in (err.hint or "")
    # and a comma or point that belongs there gets none
    assert "decimal" not in (raises(ParseError, "rule r: m(a, 5 b)").hint or "")


def test_unexpected_character_with_tab_keeps_the_caret_under_it():
    err = raises(ParseError, "sort a\n\tsort $b")
    assert (err.line, err.column) == (2, 7)
    assert err.message.startswith("unexpected character '$'")
    assert caret_of(err) == (" sort $b", 7)


SEG_HEAD = "sort pixel[2]\nsort k\npredicate seg(k, pixel)\nconstant bg: k\n"


@pytest.mark.parametrize("end, after", [("->", "'->'"), ("and not", "'not'")])
def test_a_formula_cut_short_by_the_next_rule_says_so_at_that_rule(end, after):
    """`... ->` at a line's end: the next line's `rule` is read as a predicate name, and
    lark stumbles over the word after it; the error names the incomplete rule instead."""
    text = SEG_HEAD + f"rule r5: forall p: seg(bg, p) {end}\nrule last: forall p: seg(bg, p)\n"
    err = raises(ParseError, text, source="f.rules")
    assert (err.source, err.line, err.column) == ("f.rules", 6, 1)
    assert err.message == (f"rule 'r5' is incomplete: expected a formula after {after}, got the "
                           "keyword 'rule' (the next rule starts here)")
    col = len(f"rule r5: forall p: seg(bg, p) {end}") - len(after) + 3
    assert err.hint == f"complete the formula of rule 'r5', which ends with {after} at 5:{col}"
    assert "keyword and cannot be used" not in str(err)
    assert caret_of(err) == ("rule last: forall p: seg(bg, p)", 1)


@pytest.mark.parametrize("text, line, col, message", [
    # an anonymous rule, the last line, another statement, a cut argument list
    ("rule: a(x) <->\n  rule [weight = 2]: b(x)", 2, 3,
     "the rule at line 1 is incomplete: expected a formula after '<->', got the keyword 'rule' "
     "(the next rule starts here)"),
    ("rule r: forall p: a(p) or\nrule", 2, 1,
     "rule 'r' is incomplete: expected a formula after 'or', got the keyword 'rule'"),
    ("rule r: forall p in\nconstant c: k", 2, 1,
     "rule 'r' is incomplete: expected a formula after 'in', got the keyword 'constant' "
     "(a constant declaration starts here)"),
    ('rule r:\ninclude "x.rules"', 2, 1, "expected a formula after ':', got the keyword 'include'"),
    ("rule r: forall p: seg(bg,\nsort s", 2, 1,
     "rule 'r' is incomplete: expected a name after ',', got the keyword 'sort'"),
    ("predicate p(k,\nrule r: true", 2, 1,
     "the 'predicate' statement at line 1 is incomplete: expected a name after ','"),
    ("rule r [semantics =\nrule q: true", 2, 1, "rule 'r' is incomplete: expected one of a name"),
])
def test_every_statement_cut_short_by_the_next_one_is_named(text, line, col, message):
    err = raises(ParseError, text)
    assert (err.line, err.column) == (line, col), str(err)
    assert message in err.message and "keyword and cannot be used" not in str(err)


def test_a_statement_keyword_inside_a_formula_is_still_a_keyword_used_as_a_name():
    err = raises(ParseError, "rule r: forall p: seg(rule p)")
    assert (err.line, err.column) == (1, 28)
    assert err.hint == "'rule' is a keyword and cannot be used as a name"


def test_quantifier_with_a_sort_gets_a_hint():
    err = raises(ParseError, "rule r: forall p pixel: cup(p)")
    assert (err.line, err.column) == (1, 18)
    assert "variable p: sort" in err.hint


@pytest.mark.parametrize("text, line, col, words", [
    ("rule r [wieght = 2]: true", 1, 9, ("unknown rule option 'wieght'", "did you mean 'weight'")),
    ("rule r [weight = 1, weight = 2]: true", 1, 21, ("given twice",)),
    ("rule r [weight = -1]: true", 1, 18, ("finite number >= 0",)),
    ("rule r [weight = 1e999]: true", 1, 18, ("finite number >= 0",)),
    ("rule r [weight = product]: true", 1, 18, ("weight must be a number",)),
    ("rule r [loss = squared]: true", 1, 16, ("loss must be 'linear' or 'log'",)),
    ("rule r [semantics = 3]: true", 1, 21, ("takes a name",)),
    ("rule r [forall = 2]: true", 1, 18, ("operator name",)),
    ("sort a\nsort c\npredicate p(a, c) softmax(b)", 3, 27, ("not one of its arguments (a, c)",)),
    ("predicate p(a, a) softmax(a)", 1, 27, ("ambiguous",)),
    ("semantics godel\nsemantics product", 2, 11, ("conflicting default semantics",)),
])
def test_statement_level_mistakes_are_check_errors_at_the_place(text, line, col, words):
    err = raises(CheckError, text)
    assert (err.line, err.column) == (line, col)
    for w in words:
        assert w in str(err)


def test_repeating_the_same_semantics_is_fine():
    assert parse("semantics godel\nsemantics godel").semantics == "godel"


def test_deep_nesting_is_a_parse_error_not_a_crash():
    ok = "rule r: " + "not " * (MAX_NESTING - 1) + "a(x)"
    assert isinstance(formula(ok[8:]), Not)
    err = raises(ParseError, "rule r: " + "not " * MAX_NESTING + "a(x)")
    assert "nested more than" in err.message
    t0 = time.perf_counter()
    raises(ParseError, "rule r: " + "not " * 20_000 + "a(x)")
    raises(ParseError, "rule r: " + "(a(x) and " * 2000 + "a(x)" + ")" * 2000)
    assert time.perf_counter() - t0 < 20
    # parentheses alone do not nest the AST
    assert formula("(" * 3000 + "a(x)" + ")" * 3000) == A("a", "x")


def chain_of(cls, operands):
    """The left-nested tree ((a op b) op c) ..., built in a loop."""
    f = operands[0]
    for g in operands[1:]:
        f = cls(f, g)
    return f


@pytest.mark.parametrize("word, cls", [("or", Or), ("and", And)])
def test_a_flat_chain_is_one_level_however_long(word, cls):
    atoms = [A(f"a{i}", "x") for i in range(2000)]
    f = formula(f" {word} ".join(f"a{i}(x)" for i in range(2000)))
    assert f == chain_of(cls, atoms)  # left-associative, as a short chain
    links = ast.chain(f)
    assert len(links) == 1999 and links[0].left == atoms[0]
    assert [n.right for n in links] == atoms[1:]
    assert links[-1].right.pos.column == 9 + sum(len(f"a{i}(x) {word} ") for i in range(1999))
    # the AST's own methods walk the chain in a loop
    other = chain_of(cls, atoms)
    assert hash(f) == hash(other) and f != chain_of(cls, atoms[:-1] + [A("b", "x")])
    assert f != chain_of(And if cls is Or else Or, atoms)
    assert repr(f).startswith(f"{cls.__name__}(left={cls.__name__}(left=")
    assert pickle.loads(pickle.dumps(f)) == f and copy.deepcopy(f) == f
    short = cls(cls(atoms[0], atoms[1]), Not(atoms[2]), ast.Pos("s", 1, 2, 3, 4))
    assert repr(short) == (f"{cls.__name__}(left={cls.__name__}(left={atoms[0]!r}, "
                           f"right={atoms[1]!r}, pos={ast.NOPOS!r}), right={Not(atoms[2])!r}, "
                           f"pos={ast.Pos('s', 1, 2, 3, 4)!r})")
    # a chain whose operands are chains of the other connective: 3 levels
    mixed = formula(" or ".join("a(x) and b(x)" for _ in range(1000)))
    assert mixed == chain_of(Or, [And(A("a", "x"), A("b", "x"))] * 1000)


def test_a_chain_counts_one_level_and_real_nesting_still_counts():
    chain = " or ".join(["a(x)"] * 500)  # 2 levels
    ok = "not " * (MAX_NESTING - 2) + f"({chain})"
    assert isinstance(formula(ok), Not)
    err = raises(ParseError, "rule r: not " + ok)
    assert "nested more than" in err.message
    # right-nested (parenthesised) chains and `not`s are real nesting, with their place
    for text, word in [("(a(x) or " * 300 + "a(x)" + ")" * 300, "a(x)"),
                       ("a(x) and (" * 300 + "a(x)" + ")" * 300, "a(x)"),
                       ("not " * 300 + "a(x)", "not")]:
        err = raises(ParseError, "rule r: " + text)
        assert f"formula nested more than {MAX_NESTING} levels deep" in err.message
        src, col = caret_of(err)
        assert err.line == 1 and src[col - 1:].startswith(word), text
        assert "^" in err.context()


def test_long_lines_are_shown_as_a_window_around_the_column():
    err = raises(ParseError, "rule r: " + "a(x) and " * 40 + "$")
    src, col = caret_of(err)
    assert len(src) <= 110 and src[col - 1] == "$"


def test_non_ascii_and_control_characters_are_parse_errors():
    for text in ["sort é", "rule r: a(x)\x00", "sort a\x0bb", "rule r: a(x) ∨ b(x)"]:
        raises(ParseError, text)


def test_bytes_are_decoded_as_utf8():
    assert parse(b"sort a").sorts == (SortDecl("a"),)
    raises(ParseError, b"sort \xff")


# ------------------------------------------------------------- includes
def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_are_relative_to_the_including_file(tmp_path):
    write(tmp_path / "rules" / "sub" / "decl.rules", 'include "sorts.rules"\npredicate cup(pixel)')
    write(tmp_path / "rules" / "sub" / "sorts.rules", "sort pixel[2]")
    main = write(tmp_path / "rules" / "main.rules",
                 'include "sub/decl.rules"\nrule r: forall p: cup(p)')
    p = parse_file(main)
    assert [s.name for s in p.sorts] == ["pixel"] and [d.name for d in p.predicates] == ["cup"]
    assert p.sorts[0].pos.source == os.path.join(str(tmp_path), "rules", "sub", "sorts.rules")
    assert p.rules[0].pos.source == str(main) and p.source == str(main)
    # the same text given as a string resolves against base_dir, or the source's folder
    from_string = parse(main.read_text(), base_dir=main.parent)
    assert from_string.source == "<string>"
    assert dataclasses.replace(from_string, source=str(main)) == p
    assert parse(main.read_text(), source=str(main)) == p


def test_string_sources_include_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "a.rules", "sort a")
    monkeypatch.chdir(tmp_path)
    assert parse('include "a.rules"').sorts == (SortDecl("a"),)


def test_included_declarations_come_at_the_include(tmp_path):
    write(tmp_path / "b.rules", "sort b")
    p = parse('sort a\ninclude "b.rules"\nsort c', base_dir=tmp_path)
    assert [s.name for s in p.sorts] == ["a", "b", "c"]


def test_a_file_included_twice_is_read_once(tmp_path):
    write(tmp_path / "common.rules", "sort pixel")
    write(tmp_path / "x.rules", 'include "common.rules"')
    write(tmp_path / "y.rules", 'include "./common.rules"')
    p = parse('include "x.rules"\ninclude "y.rules"\ninclude "common.rules"', base_dir=tmp_path)
    assert [s.name for s in p.sorts] == ["pixel"]


def test_missing_include_is_an_include_error_at_the_include_line(tmp_path):
    write(tmp_path / "common.rules", "sort a")
    err = raises(IncludeError, 'sort a\n  include "comon.rules"', source="m.rules", base_dir=tmp_path)
    assert (err.source, err.line, err.column) == ("m.rules", 2, 11)
    assert "not found" in err.message and "comon.rules" in err.message
    assert err.hint == "did you mean 'common.rules'?"
    assert caret_of(err) == ('  include "comon.rules"', 11)


def test_missing_include_hint_is_two_sentences(tmp_path, monkeypatch):
    from fuzzylogic.parser import INCLUDE_ENV

    write(tmp_path / "common.rules", "sort a")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv(INCLUDE_ENV, str(elsewhere))
    err = raises(IncludeError, 'include "commn.rules"', source="m.rules", base_dir=tmp_path)
    assert (err.line, err.column) == (1, 9)
    assert err.hint == f"did you mean 'common.rules'? Also searched: {elsewhere}"
    assert "?;" not in str(err)


def test_include_cycle_names_the_chain(tmp_path):
    write(tmp_path / "a.rules", 'sort a\ninclude "b.rules"')
    write(tmp_path / "b.rules", 'include "a.rules"')
    err = raises(IncludeError, 'include "a.rules"', base_dir=tmp_path)
    a, b = str(tmp_path / "a.rules"), str(tmp_path / "b.rules")
    assert err.message == f"include cycle: {a} -> {b} -> {a}"
    assert (err.source, err.line, err.column) == (b, 1, 9)
    # a file including itself
    me = write(tmp_path / "self.rules", 'sort s\n\ninclude "self.rules"')
    err = raises(IncludeError, me.read_text(), source=str(me))
    assert (err.line, err.column) == (3, 9) and "cycle" in err.message
    with pytest.raises(IncludeError, match="cycle"):
        parse_file(tmp_path / "self.rules")


def test_errors_inside_an_included_file_name_that_file(tmp_path):
    inc = write(tmp_path / "inc.rules", "sort a\n\nsort b[")
    err = raises(ParseError, 'include "inc.rules"', base_dir=tmp_path)
    assert (err.source, err.line, err.column) == (str(inc), 3, 8)
    assert err.context() == "    sort b[\n           ^"


def test_unreadable_includes(tmp_path):
    (tmp_path / "dir.rules").mkdir()
    err = raises(IncludeError, 'include "dir.rules"', base_dir=tmp_path)
    assert "not a regular file" in err.message
    (tmp_path / "latin1.rules").write_bytes(b"sort \xe9")
    err = raises(IncludeError, 'include "latin1.rules"', base_dir=tmp_path)
    assert "not UTF-8" in err.message
    raises(IncludeError, 'include ""', base_dir=tmp_path)


def test_parse_file_missing(tmp_path):
    with pytest.raises(IncludeError, match="rule file not found"):
        parse_file(tmp_path / "nope.rules")


# ------------------------------------------------------------- speed
def test_parsing_a_typical_file_takes_milliseconds():
    parse(DESIGN_EXAMPLE)  # builds the cached parser
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        parse(DESIGN_EXAMPLE)
    per_file = (time.perf_counter() - t0) / n
    # measured about 2 ms on a shared laptop-class core; the bound only catches blowups
    assert per_file < 0.1, per_file


def test_only_fuzzylogic_errors_escape():
    for text in ["rule r: (", "rule r [", "sort a[", "include", ")", "rule r: a(x,)", "rule r: a(,x)"]:
        with pytest.raises(FuzzyLogicError):
            parse(text)


def test_a_byte_order_mark_at_the_start_is_ignored(tmp_path):
    import fuzzylogic as fl

    (tmp_path / "inc.rules").write_text("\ufeffsort s\n", encoding="utf-8")
    (tmp_path / "main.rules").write_text('\ufeffinclude "inc.rules"\npredicate a(s)\n'
                                         "rule r: forall x: a(x)\n", encoding="utf-8")
    th = fl.load(tmp_path / "main.rules")
    assert th.rules == ("r",)
    with pytest.raises(fl.CheckError) as e:
        fl.compile("\ufeffsort s\npredicate a(s)\nrule r: forall x: b(x)\n")
    assert (e.value.line, e.value.column) == (3, 19)


# ------------------------------------------------------------------ neighbour offsets
def test_offsets_parse_with_or_without_spaces_and_print_back():
    f = formula("forall a, r, c: mask(a, r, c+1) <-> mask(a, r - 2, c)")
    left, right = f.body.left, f.body.right
    assert [t.offset for t in left.args] == [0, 0, 1] and [t.offset for t in right.args] == [0, -2, 0]
    assert left.args[2] == Term("c", offset=1) and left.args[2] != Term("c")
    assert str(left.args[2]) == "c + 1" and str(right.args[1]) == "r - 2" and str(Term("c")) == "c"
    # the caret of an offset term sits on its variable, its span covers the whole term
    pos = left.args[2].pos
    assert (pos.line, pos.column, pos.end_column) == (1, 36, 39)


@pytest.mark.parametrize("text, col, expected", [
    ("rule r: forall c: m(c +)", 24, "expected an integer"),
    ("rule r: forall c: m(c + -1)", 25, "expected an integer"),
    ("rule r: forall c: m(c + 1.5)", 26, "got number '.5'"),
])
def test_malformed_offsets_are_placed(text, col, expected):
    err = raises(ParseError, text)
    assert err.column == col and expected in str(err), str(err)


def test_an_include_not_beside_its_file_is_looked_for_on_the_include_path(tmp_path, monkeypatch):
    from fuzzylogic.parser import INCLUDE_ENV, add_include_dir, include_path

    shipped = write(tmp_path / "pkg" / "base.rules", "sort pixel[2]\npredicate cup(pixel)")
    mine = write(tmp_path / "me" / "mine.rules", 'include "base.rules"\nrule r: forall p: cup(p)')
    err = raises(IncludeError, mine.read_text(), source=str(mine))
    assert "not found" in err.message and err.hint is None  # nothing registered yet
    add_include_dir(shipped.parent)
    add_include_dir(shipped.parent)  # (once is enough)
    assert include_path() == (str(shipped.parent),)
    p = parse_file(mine)
    assert [d.name for d in p.predicates] == ["cup"] and p.sorts[0].pos.source == str(shipped)
    # a file beside the including one wins over the search path
    write(tmp_path / "me" / "base.rules", "sort pixel[2]\npredicate disc(pixel)\npredicate cup(pixel)")
    assert [d.name for d in parse_file(mine).predicates] == ["disc", "cup"]
    # the environment's folders come first; a miss names every folder searched
    env = write(tmp_path / "env" / "other.rules", "sort e")
    monkeypatch.setenv(INCLUDE_ENV, str(env.parent))
    assert include_path() == (str(env.parent), str(shipped.parent))
    assert parse('include "other.rules"', base_dir=tmp_path).sorts == (SortDecl("e"),)
    err = raises(IncludeError, 'include "none.rules"', base_dir=tmp_path)
    assert err.hint == f"also searched: {env.parent}, {shipped.parent}"


@pytest.mark.parametrize("path, message", [
    ("a\x00b.rules", "include path holds a NUL character"),
    ("x" * 5000, "cannot read included file"),  # longer than any file name may be
])
def test_include_paths_the_os_refuses_are_include_errors(tmp_path, path, message):
    from fuzzylogic.parser import add_include_dir

    for searched in (False, True):  # with and without the include search path
        if searched:
            add_include_dir(tmp_path)
        err = raises(IncludeError, f'include "{path}"', base_dir=tmp_path)
        assert message in err.message
