"""Rule text from the AST: the parser's inverse.

``parse(format_program(p))`` gives back ``p`` (positions aside), so a program
built in Python (or by a Hypothesis strategy) can be shown, saved as a rule
file, or fed through the real front end. Formulas get the parentheses the
grammar needs and no others: ``and`` binds tighter than ``or``, then ``->``
(right-associative), then ``<->``; a quantifier's body reaches as far right as
possible, so a quantifier is parenthesised wherever anything could follow it.
"""
from __future__ import annotations

from typing import List

from . import ast
from .errors import FuzzyLogicError

__all__ = ["format_formula", "format_rule", "format_program"]

# Binding strength: an operand weaker than its slot needs parentheses.
_IFF, _IMPLIES, _OR, _AND, _NOT, _ATOM = range(6)
_QUANT = -1  # weaker than everything: it swallows whatever follows


def _level(f: ast.Formula) -> int:
    return {ast.Iff: _IFF, ast.Implies: _IMPLIES, ast.Or: _OR, ast.And: _AND, ast.Not: _NOT,
            ast.Quantified: _QUANT}.get(type(f), _ATOM)


def _fmt(f: ast.Formula, slot: int) -> str:
    """``f`` where an operand of at least strength ``slot`` may stand."""
    # (a chain `a or b or ...` in a loop: it may be thousands of terms long; other
    # formulas deeper than the parser's nesting limit cannot be read back anyway)
    if isinstance(f, ast.Atom):
        s = f"{f.predicate}({', '.join(str(t) for t in f.args)})"
    elif isinstance(f, ast.Truth):
        if f.value not in (0.0, 1.0):
            raise FuzzyLogicError(f"a truth constant {f.value} has no rule syntax "
                                  "(only true and false)")
        s = "true" if f.value == 1.0 else "false"
    elif isinstance(f, ast.Not):
        s = f"not {_fmt(f.operand, _NOT)}"
    elif isinstance(f, (ast.And, ast.Or)):  # left-associative
        word, right = (" and ", _NOT) if isinstance(f, ast.And) else (" or ", _AND)
        first, *rest = ast.chain_operands(f)
        s = word.join([_fmt(first, _level(f))] + [_fmt(g, right) for g in rest])
    elif isinstance(f, ast.Implies):  # right-associative: a -> b -> c is a -> (b -> c)
        s = f"{_fmt(f.left, _OR)} -> {_fmt(f.right, _IMPLIES)}"
    elif isinstance(f, ast.Iff):
        s = f"{_fmt(f.left, _IFF)} <-> {_fmt(f.right, _IMPLIES)}"
    elif isinstance(f, ast.Quantified):
        guard = "" if f.guard is None else f" in {_fmt(f.guard, _IFF)}"
        op = f.operator
        op = "" if op is None else f"[{op if isinstance(op, str) else _option_value(tuple(op))}]"
        s = f"{f.kind}{op} {', '.join(f.variables)}{guard}: {_fmt(f.body, _QUANT)}"
    else:
        raise FuzzyLogicError(f"not a formula node: {type(f).__name__}")
    return f"({s})" if _level(f) < slot else s


def format_formula(f: ast.Formula) -> str:
    """One line of rule syntax for a formula."""
    return _fmt(f, _QUANT)


def _option_value(v) -> str:
    if isinstance(v, tuple):  # (operator, parameter, ...)
        return f"{v[0]}({', '.join(repr(x) for x in v[1:])})" if len(v) > 1 else str(v[0])
    return str(v)


def format_rule(rule: ast.Rule) -> str:
    """``rule name [weight = w, ...]: formula`` (options only where set)."""
    opts = ([f"weight = {rule.weight!r}"] if rule.weight != 1.0 else [])
    opts += [f"{k} = {_option_value(v)}" for k, v in rule.options]
    return (f"rule {rule.name}{' [' + ', '.join(opts) + ']' if opts else ''}: "
            f"{format_formula(rule.formula)}")


def format_program(program: ast.Program) -> str:
    """A whole rule file: declarations, then the rules (includes already resolved)."""
    lines: List[str] = []
    if program.semantics:
        lines.append(f"semantics {program.semantics}")
    for s in program.sorts:
        lines.append(f"sort {s.name}" + (f"[{s.axes}]" if s.axes != 1 else ""))
    for c in program.constants:
        lines.append(f"constant {c.name}: {c.sort}" + ("" if c.index is None else f" = {c.index}"))
    for v in program.variables:
        lines.append(f"variable {v.name}: {v.sort}")
    for p in program.predicates:
        kind = {"prob": "", "logits": " logits"}.get(p.input)
        if kind is None:  # softmax over the axis of one argument, named by its sort
            sort = p.args[p.softmax_arg]
            # (by position where another argument has the same sort)
            kind = f" softmax({sort if p.args.count(sort) == 1 else p.softmax_arg + 1})"
        lines.append(f"predicate {p.name}({', '.join(p.args)}){kind}")
    lines += [format_rule(r) for r in program.rules]
    return "\n".join(lines) + "\n"
