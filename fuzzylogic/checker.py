"""Static checks of a parsed :class:`fuzzylogic.ast.Program`.

:func:`check` returns a new program in which every ``Quantified.sorts`` is
filled (from ``variable`` declarations or inferred from the predicate argument
positions where each variable is used) and every guard written in the
shorthand form (``forall p in inside(box): ...``) has the bound variable
inserted. Anything that would make the theory meaningless raises a
:class:`CheckError` that points at the offending name: unknown names, wrong
arity, sort mismatches, open formulas, shadowing, unused quantified
variables, duplicate or reserved names.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence

from . import ast
from .errors import CheckError, SemanticsError

__all__ = ["check", "RESERVED_NAMES"]

# Predicates and call-time constants are passed to Theory.truth()/loss() as
# keyword arguments, so they may not take the names of those methods' own
# parameters.
RESERVED_NAMES = frozenset({"domains", "validate", "mode", "reduction", "self"})

INPUT_KINDS = ("prob", "logits", "softmax")

# axes one sort may span: torch tensors have at most 64, and a fact holds the batch
# axis and its arguments' axes; more than a few is a size written as an axis count
MAX_AXES = 8


def check(program: ast.Program) -> ast.Program:
    """Check `program`; return it with quantifier sorts filled and guards expanded."""
    return _Checker(program).run()


@dataclass
class _Binding:
    """A variable bound by a quantifier, while its scope is being checked."""

    name: str
    pos: ast.Pos
    sort: Optional[str] = None
    # How the sort became known, for mismatch messages: "{at}" is filled with
    # the place of origin_pos, written relative to the error's place.
    origin: str = ""
    origin_pos: ast.Pos = ast.NOPOS
    used: bool = False


def _did_you_mean(word: str, candidates: Iterable[str]) -> Optional[str]:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class _Checker:
    def __init__(self, program: ast.Program):
        self.program = program
        self.texts: Dict[str, str] = dict(program.texts)
        self._inserted: set = set()  # ids of terms added by the guard shorthand
        # atoms written as a whole guard (`in inside(box)`): id -> the variables bound there
        self._guards: Dict[int, List[str]] = {}

    # ------------------------------------------------------------- reporting
    def error(self, message: str, pos: ast.Pos, hint: Optional[str] = None) -> CheckError:
        return CheckError(message, pos.source, pos.line, pos.column,
                          self.texts.get(pos.source), hint)

    @staticmethod
    def at(pos: ast.Pos, here: Optional[ast.Pos] = None) -> str:
        if here is not None and here.source == pos.source:
            return f"line {pos.line}:{pos.column}"
        return f"{pos.source}:{pos.line}:{pos.column}"

    # ---------------------------------------------------------- declarations
    def _declare(self, kind: str, decls: Sequence) -> Dict[str, object]:
        table: Dict[str, object] = {}
        for d in decls:
            if d.name in table:
                first = table[d.name]
                raise self.error(
                    f"duplicate {kind} '{d.name}' (first declared at {self.at(first.pos, d.pos)})",
                    d.pos, hint=f"remove one declaration or rename this {kind}",
                )
            table[d.name] = d
        return table

    def _known_sort(self, sort: str, pos: ast.Pos, what: str) -> None:
        if sort not in self.sorts:
            raise self.error(
                f"unknown sort '{sort}' ({what})", pos,
                hint=_did_you_mean(sort, self.sorts) or f"declare it: sort {sort}",
            )

    def _not_reserved(self, kind: str, decl) -> None:
        if decl.name in RESERVED_NAMES:
            raise self.error(
                f"'{decl.name}' is a reserved name and cannot name a {kind}: predicates and "
                f"constants are passed to Theory.truth()/loss() as keyword arguments, and "
                f"'{decl.name}' is already one of their parameters",
                decl.pos, hint=f"rename it, e.g. '{decl.name}_'",
            )

    def declarations(self) -> None:
        p = self.program
        self.sorts = self._declare("sort", p.sorts)
        for s in p.sorts:
            if not isinstance(s.axes, int) or s.axes < 1:
                raise self.error(f"sort '{s.name}' must span at least 1 tensor axis, got {s.axes}",
                                 s.pos, hint=f"write 'sort {s.name}' or 'sort {s.name}[2]'")
            if s.axes > MAX_AXES:
                # (a size mistaken for an axis count: `pixel[512]` for a 512-pixel image)
                raise self.error(f"sort '{s.name}' spans {s.axes} tensor axes; at most {MAX_AXES}",
                                 s.pos, hint=f"[k] counts the axes of one element, not its size: "
                                             f"'sort {s.name}[2]' for an image's pixels")

        self.preds = self._declare("predicate", p.predicates)
        for d in p.predicates:
            self._not_reserved("predicate", d)
            for i, sort in enumerate(d.args):
                pos = d.arg_pos[i] if i < len(d.arg_pos) else d.pos
                self._known_sort(sort, pos, f"argument {i + 1} of predicate '{d.name}'")
            if d.input not in INPUT_KINDS:
                raise self.error(f"predicate '{d.name}' has input kind '{d.input}'; expected one "
                                 f"of {', '.join(INPUT_KINDS)}", d.pos)
            if d.input == "softmax":
                if d.softmax_arg is None or not 0 <= d.softmax_arg < len(d.args):
                    raise self.error(
                        f"predicate '{d.name}' takes softmax over argument {d.softmax_arg}, but it "
                        f"has {_plural(len(d.args), 'argument')}", d.pos)
            elif d.softmax_arg is not None:
                raise self.error(f"predicate '{d.name}' names a softmax argument but its input "
                                 f"is '{d.input}'", d.pos)

        self.consts = self._declare("constant", p.constants)
        for c in p.constants:
            self._not_reserved("constant", c)
            if c.name in self.preds:
                first = self.preds[c.name].pos
                raise self.error(
                    f"constant '{c.name}' has the same name as predicate '{c.name}' (declared at "
                    f"{self.at(first, c.pos)}); facts and constants are both passed to "
                    f"Theory.truth() by name", c.pos, hint="rename one of them")
            sort_pos = c.sort_pos if c.sort_pos.line else c.pos
            self._known_sort(c.sort, sort_pos, f"of constant '{c.name}'")
            axes = self.sorts[c.sort].axes
            if c.index is not None and axes != 1:
                raise self.error(
                    f"constant '{c.name}' has the fixed index {c.index}, but sort '{c.sort}' spans "
                    f"{axes} axes; a fixed index names an element of a one-axis sort", c.pos,
                    hint=f"constants of a sort of several axes are not supported; for one element "
                         f"of '{c.sort}', feed a predicate that holds there and quantify over it")
            if c.index is not None and c.index < 0:
                raise self.error(f"constant '{c.name}' has a negative index {c.index}", c.pos)

        self.vars = self._declare("variable", p.variables)
        for v in p.variables:
            if v.name in self.consts:
                first = self.consts[v.name].pos
                raise self.error(
                    f"variable '{v.name}' has the same name as constant '{v.name}' (declared at "
                    f"{self.at(first, v.pos)})", v.pos, hint="rename one of them")
            sort_pos = v.sort_pos if v.sort_pos.line else v.pos
            self._known_sort(v.sort, sort_pos, f"of variable '{v.name}'")

    # ------------------------------------------------------------------ rules
    def run(self) -> ast.Program:
        self.declarations()
        seen: Dict[str, ast.Rule] = {}
        rules: List[ast.Rule] = []
        for rule in self.program.rules:
            if rule.name in seen:
                first = seen[rule.name].pos
                hint = "rename one of them"
                if re.fullmatch(r"rule_[0-9]+", rule.name):
                    hint = ("a rule without a name is called rule_<line>; give one of them a "
                            "name: rule my_name: ...")
                raise self.error(f"duplicate rule name '{rule.name}' (first rule with this name "
                                 f"at {self.at(first, rule.pos)})", rule.pos, hint=hint)
            seen[rule.name] = rule
            try:
                formula = self.formula(rule.formula, {})
            except RecursionError:
                raise self.error("formula nested too deeply to check", rule.pos) from None
            rules.append(replace(rule, formula=formula))
        return replace(self.program, rules=tuple(rules))

    def formula(self, f, scope: Dict[str, _Binding]):
        if isinstance(f, ast.Atom):
            return self.atom(f, scope)
        if isinstance(f, ast.Truth):
            return f
        if isinstance(f, ast.Not):
            return replace(f, operand=self.formula(f.operand, scope))
        if isinstance(f, (ast.And, ast.Or)):
            # a long chain `a or b or ...`: its left spine in a loop, operands left to right
            links = ast.chain(f)
            out = self.formula(links[0].left, scope)
            for n in links:
                out = replace(n, left=out, right=self.formula(n.right, scope))
            return out
        if isinstance(f, (ast.Implies, ast.Iff)):
            return replace(f, left=self.formula(f.left, scope), right=self.formula(f.right, scope))
        if isinstance(f, ast.Quantified):
            return self.quantified(f, scope)
        raise self.error(f"not a formula: {type(f).__name__}", getattr(f, "pos", ast.NOPOS))

    def quantified(self, q: ast.Quantified, scope: Dict[str, _Binding]) -> ast.Quantified:
        if q.kind not in ("forall", "exists"):
            raise self.error(f"unknown quantifier '{q.kind}'; expected forall or exists", q.pos)
        if not q.variables:
            raise self.error(f"{q.kind} binds no variable", q.pos)
        var_pos = q.var_pos if len(q.var_pos) == len(q.variables) else (q.pos,) * len(q.variables)
        given = q.sorts if len(q.sorts) == len(q.variables) else (None,) * len(q.variables)
        inner = dict(scope)
        bound: List[_Binding] = []
        for name, pos, sort in zip(q.variables, var_pos, given):
            if name in inner:
                prev = inner[name]
                if any(b is prev for b in bound):
                    raise self.error(f"variable '{name}' is bound twice by the same {q.kind}", pos)
                raise self.error(
                    f"variable '{name}' shadows the variable '{name}' bound at "
                    f"{self.at(prev.pos, pos)}", pos, hint="rename the inner variable")
            if name in self.consts:
                raise self.error(
                    f"variable '{name}' has the same name as constant '{name}' (declared at "
                    f"{self.at(self.consts[name].pos, pos)})", pos, hint="rename the variable")
            b = _Binding(name, pos)
            if sort is not None:
                self._known_sort(sort, pos, f"of variable '{name}'")
                b.sort, b.origin = sort, "the quantifier gives it sort " + sort
            elif name in self.vars:
                decl = self.vars[name]
                b.sort, b.origin_pos = decl.sort, decl.pos
                b.origin = f"it is declared as {decl.sort} ('variable {name}: {decl.sort}' at {{at}})"
            inner[name] = b
            bound.append(b)

        guard = q.guard
        if guard is not None:
            guard = self.shorthand(guard, bound)
            if isinstance(guard, ast.Atom):
                self._guards[id(guard)] = [b.name for b in bound]
            guard = self.formula(guard, inner)
        body = self.formula(q.body, inner)
        for b in bound:
            if not b.used:
                raise self.error(
                    f"quantified variable '{b.name}' is never used", b.pos,
                    hint=f"remove it from the {q.kind}, or use it in the body")
        operator = q.operator
        if operator is not None:
            from .semantics import _norm_ref

            try:  # the name known, the parameters complete and valid
                operator = _norm_ref(q.kind, operator)
            except SemanticsError as e:
                raise self.error(str(e), q.operator_pos if q.operator_pos.line else q.pos) from None
        return replace(q, guard=guard, body=body, sorts=tuple(b.sort for b in bound),
                       operator=operator)

    def shorthand(self, guard, bound: List[_Binding]):
        """`forall p in inside(box)`: insert the single bound variable as the first argument."""
        if not isinstance(guard, ast.Atom) or len(bound) != 1:
            return guard
        decl = self.preds.get(guard.predicate)
        v = bound[0]
        if (decl is None or len(guard.args) != len(decl.args) - 1
                or any(t.name == v.name for t in guard.args)):
            return guard
        term = ast.Term(v.name, pos=v.pos)
        self._inserted.add(id(term))
        return replace(guard, args=(term,) + tuple(guard.args))

    def atom(self, a: ast.Atom, scope: Dict[str, _Binding]) -> ast.Atom:
        decl = self.preds.get(a.predicate)
        if decl is None:
            raise self.error(
                f"unknown predicate '{a.predicate}'", a.pos,
                hint=_did_you_mean(a.predicate, self.preds)
                or f"declare it: predicate {a.predicate}(...)")
        if len(a.args) != len(decl.args):
            hint = (f"'{decl.name}' is declared at {self.at(decl.pos, a.pos)} as 'predicate "
                    f"{decl.name}({', '.join(decl.args)})'")
            bound = self._guards.get(id(a))
            if bound is not None and len(a.args) == len(decl.args) - 1:
                # a guard one argument short: the shorthand did not apply; say why
                if len(bound) > 1:
                    why = f"this one binds {', '.join(bound)}"
                else:
                    why = f"'{bound[0]}' is already an argument here"
                hint += ("; in a guard, the shorthand that inserts the bound variable works "
                         f"when the quantifier binds a single variable not already given ({why})")
            raise self.error(
                f"predicate '{a.predicate}' takes {_plural(len(decl.args), 'argument')} "
                f"({', '.join(decl.args)}), got {len(a.args)}", a.pos, hint=hint)
        for i, (t, sort) in enumerate(zip(a.args, decl.args)):
            self.term(t, sort, f"argument {i + 1} of {a.predicate}", scope)
        return a

    def term(self, t: ast.Term, sort: str, where: str, scope: Dict[str, _Binding]) -> None:
        if t.offset:
            shown = str(t)  # `c + 1`
            if t.name not in scope:
                raise self.error(
                    f"'{shown}': an offset applies to a variable bound here ({where}), and "
                    f"'{t.name}' is not one", t.pos,
                    hint=_did_you_mean(t.name, list(scope))
                    or "offsets name neighbours of a quantified variable's element, "
                       "e.g. forall c: mask(c) <-> mask(c + 1)")
            decl = self.sorts.get(sort)
            if decl is not None and decl.axes != 1:
                raise self.error(
                    f"'{shown}' ({where}): offsets apply to one-axis sorts, and '{sort}' spans "
                    f"{decl.axes} axes", t.pos,
                    hint="declare the axes as separate sorts (sort row / sort col) to step "
                         "along one of them")
        if t.name in scope:
            b = scope[t.name]
            b.used = True
            note = ", inserted by the guard shorthand" if id(t) in self._inserted else ""
            if b.sort is None:
                b.sort, b.origin_pos = sort, t.pos
                b.origin = f"it is used as {sort} at {{at}} ({where}{note})"
            elif b.sort != sort:
                origin = b.origin.replace("{at}", self.at(b.origin_pos, t.pos))
                raise self.error(
                    f"sort mismatch: variable '{t.name}' is used here as {sort} ({where}{note}), "
                    f"but {origin}", t.pos, hint="a variable has one sort; use a separate variable")
            return
        if t.name in self.consts:
            c = self.consts[t.name]
            if c.sort != sort:
                raise self.error(
                    f"sort mismatch: {where} expects a {sort}, but constant '{c.name}' has sort "
                    f"{c.sort} (declared at {self.at(c.pos, t.pos)})", t.pos)
            axes = self.sorts[c.sort].axes
            if axes != 1:  # (found here, so that `check` and `show` refuse it as compile does)
                raise self.error(
                    f"constant '{c.name}' ({where}): constants of the {axes}-axis sort "
                    f"'{c.sort}' are not supported", t.pos,
                    hint=f"a constant names one element of a one-axis sort; for one element of "
                         f"'{c.sort}', feed a predicate that holds there and quantify over it")
            return
        if t.name in self.vars:
            raise self.error(
                f"unbound variable '{t.name}': it is declared with 'variable' but no quantifier "
                f"binds it here, and rules must be closed", t.pos,
                hint=f"bind it: forall {t.name}: ...")
        raise self.error(
            f"unknown name '{t.name}' ({where}): neither a variable bound here nor a constant",
            t.pos,
            hint=_did_you_mean(t.name, list(scope) + list(self.consts))
            or f"bind it with 'forall {t.name}: ...' or declare 'constant {t.name}: {sort}'")
