"""Rule text -> :class:`fuzzylogic.ast.Program`.

One LALR parser is built from ``grammars/fuzzylogic.lark`` on first use and
cached. Lark's tree is turned into frozen AST nodes, every node with its
position (source, line, column, end). Includes are resolved relative to the
including file; each file is read once (a diamond of includes is fine, a
cycle is an :class:`IncludeError`).

Only :mod:`fuzzylogic.errors` exceptions leave this module: lark's errors
become :class:`ParseError` with a readable "expected ..., got ..." message and
a caret, and formulas nested deeper than :data:`MAX_NESTING` are refused so
that nothing downstream (checker, compiler, hashing) can hit Python's
recursion limit.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from lark import Lark, Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from . import ast
from .errors import CheckError, IncludeError, ParseError
from .grammar import grammar_text

__all__ = ["parse", "parse_file", "KEYWORDS", "RULE_OPTIONS", "MAX_NESTING"]

# Words that can never be names. `prob`, `logits` and `softmax` are keywords
# only after a predicate's argument list, so they stay usable as names.
KEYWORDS = frozenset(
    "include semantics sort predicate constant variable rule "
    "forall exists not and or in where true false".split()
)

# Rule options: `weight` is a number (Rule.weight); `semantics` names a preset;
# the connective keys take an operator `name` or `name(parameter)`; `loss` is
# linear or log. Operator and preset names are checked by the compiler (they
# can be registered at run time).
CONNECTIVE_OPTIONS = (
    "conjunction", "disjunction", "negation", "implication", "equivalence", "forall", "exists",
)
RULE_OPTIONS = ("weight", "semantics") + CONNECTIVE_OPTIONS + ("loss",)
LOSS_KINDS = ("linear", "log")

# Deepest formula nesting accepted: an atom is 1 deep, `not a` 2, `a and (b or c)` 3; a
# flat chain of one connective is one level: `a and b and c` is 2 deep, however long.
MAX_NESTING = 100


# ------------------------------------------------------------------ the parser
@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# --------------------------------------------------------------- lark -> AST
@dataclass(frozen=True)
class _SemanticsLine:
    name: str
    pos: ast.Pos


@dataclass(frozen=True)
class _Guard:
    formula: ast.Formula


@dataclass(frozen=True)
class _QuantOp:
    ref: tuple  # (operator name, *parameters)
    pos: ast.Pos


def _is_tok(x, *types) -> bool:
    return isinstance(x, Token) and x.type in types


def _names(children) -> List[Token]:
    return [c for c in children if _is_tok(c, "NAME")]


class _Builder:
    """Builds AST nodes from lark's tree bottom-up, one method per grammar rule
    (or alias), called as ``method(meta, children)``. The walk is a loop, not
    a recursion, so deep input costs no Python stack."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.text = text
        self._depth: Dict[int, int] = {}

    def build(self, tree: Tree):
        preorder, todo = [], [tree]
        while todo:
            t = todo.pop()
            preorder.append(t)
            todo.extend(c for c in t.children if isinstance(c, Tree))
        done: Dict[int, object] = {}
        for t in reversed(preorder):  # every subtree comes after its own subtrees
            children = [done.pop(id(c)) if isinstance(c, Tree) else c for c in t.children]
            done[id(t)] = getattr(self, t.data)(t.meta, children)
        return done[id(tree)]

    # -- helpers
    def _tpos(self, tok: Token) -> ast.Pos:
        return ast.Pos(self.source, tok.line, tok.column, tok.end_line, tok.end_column)

    def _mpos(self, meta) -> ast.Pos:
        return ast.Pos(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _error(self, cls, message: str, tok_or_pos, hint: Optional[str] = None):
        pos = tok_or_pos if isinstance(tok_or_pos, ast.Pos) else self._tpos(tok_or_pos)
        return cls(message, self.source, pos.line, pos.column, self.text, hint)

    def _name(self, tok: Token, what: str) -> str:
        if tok.value in KEYWORDS:
            raise self._error(
                ParseError, f"'{tok.value}' is a keyword and cannot be used as {what}", tok,
                hint=f"rename it, e.g. '{tok.value}_'",
            )
        return str(tok.value)

    def _integer(self, tok: Token) -> int:
        try:
            return int(tok.value)
        except ValueError:  # more digits than int() accepts
            raise self._error(ParseError, f"number too long: {tok.value[:20]}...", tok) from None

    def _number(self, tok: Token) -> Union[int, float]:
        if re.fullmatch(r"[+-]?[0-9]+", tok.value):
            return self._integer(tok)
        return float(tok.value)

    def _nest(self, node, *children, floor: int = 0):
        depth = 1 + max((self._depth.get(id(c), 1) for c in children if c is not None), default=0)
        depth = max(depth, floor)
        if depth > MAX_NESTING:
            raise self._error(
                ParseError, f"formula nested more than {MAX_NESTING} levels deep", node.pos,
                hint="split it into several rules",
            )
        self._depth[id(node)] = depth
        return node

    # -- statements
    def start(self, meta, children):
        return children

    def include(self, meta, children):
        tok = children[1]
        return ast.Include(path=tok.value[1:-1], pos=self._tpos(tok))

    def semantics_decl(self, meta, children):
        tok = children[1]
        return _SemanticsLine(self._name(tok, "a semantics name"), self._tpos(tok))

    def sort_decl(self, meta, children):
        name = children[1]
        axes = [c for c in children if _is_tok(c, "INT")]
        return ast.SortDecl(
            name=self._name(name, "a sort name"),
            axes=self._integer(axes[0]) if axes else 1,
            pos=self._tpos(name),
        )

    def predicate_decl(self, meta, children):
        name, *args = _names(children)
        kind = children[-1] if isinstance(children[-1], tuple) else ("prob", None)
        arg_names = tuple(self._name(a, "a sort name") for a in args)
        pred = self._name(name, "a predicate name")
        softmax_arg = None
        if kind[0] == "softmax" and _is_tok(kind[1], "INT"):
            # softmax(k): the k-th argument (1-based), for a sort that two arguments share
            tok = kind[1]
            k = self._integer(tok)
            if not 1 <= k <= len(arg_names):
                raise self._error(
                    CheckError,
                    f"softmax({tok.value}) of predicate '{pred}': it has "
                    f"{len(arg_names)} argument{'s' if len(arg_names) != 1 else ''}",
                    tok, hint="softmax(N) names the N-th argument, counting from 1",
                )
            softmax_arg = k - 1
        elif kind[0] == "softmax":
            tok = kind[1]
            where = [i for i, a in enumerate(arg_names) if a == tok.value]
            if not where:
                raise self._error(
                    CheckError,
                    f"softmax({tok.value}) of predicate '{pred}' names a sort that is not one of "
                    f"its arguments ({', '.join(arg_names) or 'none'})",
                    tok, hint=_did_you_mean(tok.value, arg_names),
                )
            if len(where) > 1:
                raise self._error(
                    CheckError,
                    f"softmax({tok.value}) of predicate '{pred}' is ambiguous: sort '{tok.value}' "
                    f"is argument {where[0] + 1} and argument {where[1] + 1}",
                    tok, hint=f"name the argument by its position: softmax({where[0] + 1}) or "
                    f"softmax({where[1] + 1})",
                )
            softmax_arg = where[0]
        return ast.PredicateDecl(
            name=pred, args=arg_names, input=kind[0], softmax_arg=softmax_arg,
            pos=self._tpos(name), arg_pos=tuple(self._tpos(a) for a in args),
        )

    def input_prob(self, meta, children):
        return ("prob", None)

    def input_logits(self, meta, children):
        return ("logits", None)

    def input_softmax(self, meta, children):
        return ("softmax", children[2])  # a sort name, or an argument position

    def constant_decl(self, meta, children):
        name, sort = _names(children)
        index = [c for c in children if _is_tok(c, "INT")]
        return ast.ConstantDecl(
            name=self._name(name, "a constant name"), sort=self._name(sort, "a sort name"),
            index=self._integer(index[0]) if index else None,
            pos=self._tpos(name), sort_pos=self._tpos(sort),
        )

    def variable_decl(self, meta, children):
        *names, sort = _names(children)
        sort_name = self._name(sort, "a sort name")
        return [
            ast.VariableDecl(self._name(n, "a variable name"), sort_name, pos=self._tpos(n),
                             sort_pos=self._tpos(sort))
            for n in names
        ]

    def rule(self, meta, children):
        pos = self._mpos(meta)
        name_tok = children[1]
        options = children[2] or []
        formula = children[-1]
        name = self._name(name_tok, "a rule name") if name_tok is not None else f"rule_{pos.line}"
        weight, opts, opt_pos = self._options(options)
        return ast.Rule(name=name, formula=formula, weight=weight, options=opts, pos=pos,
                        option_pos=opt_pos)

    def _options(self, options) -> Tuple[float, Tuple[Tuple[str, object], ...], Tuple[ast.Pos, ...]]:
        """The weight, the other options as (key, value) pairs, and their values' positions."""
        weight = 1.0
        seen: Dict[str, Token] = {}
        out = []
        where: List[ast.Pos] = []
        for key, value in options:
            k = key.value
            if k not in RULE_OPTIONS:
                raise self._error(CheckError, f"unknown rule option '{k}'", key,
                                 hint=_did_you_mean(k, RULE_OPTIONS)
                                 or f"options are: {', '.join(RULE_OPTIONS)}")
            if k in seen:
                first = seen[k]
                raise self._error(CheckError, f"rule option '{k}' given twice "
                                 f"(first at {first.line}:{first.column})", key)
            seen[k] = key
            form, vtok = value[0], value[1]
            if k == "weight":
                if form != "number":
                    raise self._error(CheckError, f"weight must be a number, got '{vtok.value}'", vtok)
                weight = float(self._number(vtok))
                if not (math.isfinite(weight) and weight >= 0):
                    raise self._error(CheckError, f"weight must be a finite number >= 0, "
                                     f"got {vtok.value}", vtok)
                continue
            if k in ("semantics", "loss"):
                if form != "name":
                    raise self._error(CheckError, f"option '{k}' takes a name, "
                                     f"got {_describe_value(value)}", vtok)
                if k == "loss" and vtok.value not in LOSS_KINDS:
                    raise self._error(CheckError, f"loss must be 'linear' or 'log', got '{vtok.value}'",
                                     vtok, hint=_did_you_mean(vtok.value, LOSS_KINDS))
                out.append((k, str(vtok.value)))
                where.append(self._tpos(vtok))
                continue
            # a connective: operator name, or name(parameter)
            if form == "name":
                out.append((k, str(vtok.value)))
            elif form == "call":  # name(p) or name(p1, p2, ...): the operator's parameters
                params = []
                for ptok in value[2]:
                    param = self._number(ptok)
                    if not math.isfinite(param):
                        raise self._error(CheckError, f"the parameters of '{vtok.value}' must be "
                                         f"finite numbers, got {ptok.value}", ptok)
                    params.append(param)
                out.append((k, (str(vtok.value), *params)))
            else:
                raise self._error(CheckError, f"option '{k}' takes an operator name such as "
                                 f"'product' or 'pmean_error(2)', got {vtok.value}", vtok)
            where.append(self._tpos(vtok))
        return weight, tuple(out), tuple(where)

    def options(self, meta, children):
        return [c for c in children if isinstance(c, tuple)]

    def option(self, meta, children):
        return (children[0], children[2])

    def option_key(self, meta, children):
        return children[0]

    def value_number(self, meta, children):
        return ("number", children[0])

    def value_name(self, meta, children):
        return ("name", children[0])

    def value_call(self, meta, children):
        return ("call", children[0], [c for c in children[2:] if c.type == "NUMBER"])

    # -- formulas
    def _binary(self, cls, meta, children):
        left, _, right = children
        node = cls(left, right, pos=self._mpos(meta))
        if cls in (ast.And, ast.Or) and type(left) is cls:
            # `a or b or c`: a flat chain is one level deep however long (every pass
            # walks its left spine in a loop: ast.chain)
            return self._nest(node, right, floor=self._depth[id(left)])
        return self._nest(node, left, right)

    def iff(self, meta, children):
        return self._binary(ast.Iff, meta, children)

    def implies(self, meta, children):
        return self._binary(ast.Implies, meta, children)

    def or_(self, meta, children):
        return self._binary(ast.Or, meta, children)

    def and_(self, meta, children):
        return self._binary(ast.And, meta, children)

    def not_(self, meta, children):
        operand = children[1]
        return self._nest(ast.Not(operand, pos=self._mpos(meta)), operand)

    def quantified(self, meta, children):
        kind = children[0].value
        names = _names(children)
        guard = next((c for c in children if isinstance(c, _Guard)), None)
        op = next((c for c in children if isinstance(c, _QuantOp)), None)
        body = children[-1]
        node = ast.Quantified(
            kind=kind,
            variables=tuple(self._name(n, "a variable name") for n in names),
            body=body,
            guard=guard.formula if guard else None,
            pos=self._mpos(meta),
            var_pos=tuple(self._tpos(n) for n in names),
            operator=op.ref if op else None,
            operator_pos=op.pos if op else ast.NOPOS,
        )
        return self._nest(node, body, guard.formula if guard else None)

    def guard(self, meta, children):
        return _Guard(children[1])

    def quant_op(self, meta, children):
        name = children[1]
        params = []
        for ptok in (c for c in children[2:] if _is_tok(c, "NUMBER")):
            param = self._number(ptok)
            if not math.isfinite(param):
                raise self._error(CheckError, f"the parameters of '{name.value}' must be finite "
                                 f"numbers, got {ptok.value}", ptok)
            params.append(param)
        return _QuantOp((str(name.value), *params), self._tpos(name))

    def true(self, meta, children):
        return ast.Truth(1.0, pos=self._tpos(children[0]))

    def false(self, meta, children):
        return ast.Truth(0.0, pos=self._tpos(children[0]))

    def paren(self, meta, children):
        return children[1]

    def atom(self, meta, children):
        name = children[0]
        args = tuple(c for c in children if isinstance(c, ast.Term))
        return ast.Atom(self._name(name, "a predicate name"), args, pos=self._mpos(meta))

    def term(self, meta, children):
        tok = children[0]
        name = self._name(tok, "a variable or constant name")
        offset = 0
        if len(children) > 1 and children[1] is not None:
            offset = self._integer(children[2]) * (-1 if children[1].type == "MINUS" else 1)
        pos = self._mpos(meta) if offset else self._tpos(tok)
        return ast.Term(name, pos=pos, offset=offset)


def _describe_value(value) -> str:
    if value[0] == "call":
        return f"'{value[1].value}({', '.join(t.value for t in value[2])})'"
    return f"'{value[1].value}'"


def _did_you_mean(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> Optional[str]:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else None


# --------------------------------------------------------- readable lark errors
_TERMINAL_TEXT = {
    "NAME": "a name",
    "INT": "an integer",
    "NUMBER": "a number",
    "STRING": 'a quoted path ("file.rules")',
    "$END": "end of input",
}
_STATEMENT_TERMINALS = frozenset(
    "INCLUDE SEMANTICS SORT PREDICATE CONSTANT VARIABLE RULE".split()
)
# Spellings from other logics and languages, and what to write instead.
_SPELLING_HINTS = {
    "&": "'and'", "&&": "'and'", "∧": "'and'",
    "|": "'or'", "||": "'or'", "∨": "'or'",
    "!": "'not'", "~": "'not'", "¬": "'not'",
    "=>": "'->'", "→": "'->'", "⇒": "'->'", "⊃": "'->'",
    "<=>": "'<->'", "↔": "'<->'", "⇔": "'<->'", "==": "'<->'",
    "∀": "'forall'", "∃": "'exists'", "∈": "'in'",
    "'": 'double quotes: include "file.rules"',
}


@lru_cache(maxsize=1)
def _terminal_texts() -> Dict[str, str]:
    texts = dict(_TERMINAL_TEXT)
    for term in _lark().terminals:
        pat = term.pattern
        if pat.type == "str":
            texts.setdefault(term.name, f"'{pat.value}'")
        else:
            m = re.fullmatch(r"([a-z]+)\\b", pat.value)
            if m:
                texts.setdefault(term.name, f"'{m.group(1)}'")
    return texts


def _expected_text(expected) -> str:
    names = set(expected)
    texts = _terminal_texts()
    parts = []
    if _STATEMENT_TERMINALS <= names:
        names -= _STATEMENT_TERMINALS
        statement = "a new statement (rule, sort, predicate, ...)"
    else:
        statement = None
    # Punctuation and keywords first, then descriptions ("a name"), a statement, the end.
    end = "$END" in names
    names.discard("$END")
    words = sorted({texts.get(n, n) for n in names}, key=lambda s: (not s.startswith("'"), s))
    parts.extend(words)
    if statement:
        parts.append(statement)
    if end:
        parts.append(texts["$END"])
    if not parts:
        return "nothing more"
    if len(parts) == 1:
        return parts[0]
    return "one of " + ", ".join(parts[:-1]) + " or " + parts[-1]


def _show(text: str) -> str:
    text = text if len(text) <= 30 else text[:27] + "..."
    if not text.isprintable():
        return repr(text)
    return f'"{text}"' if "'" in text else f"'{text}'"


def _got_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "NAME":
        return f"name {_show(tok.value)}"
    if tok.type in ("INT", "NUMBER"):
        return f"number {_show(tok.value)}"
    return _show(tok.value)


def _spelling_hint(text: str, offset: int, expected) -> Optional[str]:
    for length in (3, 2, 1):
        piece = text[offset:offset + length]
        if piece == "'" and "STRING" not in expected:
            continue  # the quote hint is about include paths only
        if piece in _SPELLING_HINTS:
            return f"write {_SPELLING_HINTS[piece]}"
    return None


def _number_hint(text: str, tok: Token) -> Optional[str]:
    """A number split where it should not be: `0,5` (a decimal comma) or `r + 2.5` (an
    offset is a whole number of cells; the lexer reads `2` then `.5`)."""
    start = tok.start_pos
    value = str(tok.value)
    if not value[:1].isdigit() and not value.startswith("."):
        return None
    before = text[:start]
    if before.endswith(",") and before[:-1][-1:].isdigit():
        whole = re.search(r"(\d+),$", before).group(1)
        return f"a decimal is written with a point: {whole}.{value}"
    if value.startswith(".") and before[-1:].isdigit():
        whole = re.search(r"(\d+)$", before).group(1)
        return (f"a whole number is needed here ({whole}, not {whole}{value}): an offset counts "
                "cells, a constant names an index")
    return None


def _acceptable(exc: UnexpectedInput, fallback) -> set:
    """The tokens that really fit here: LALR's table merges lookaheads of similar
    states (it would list ')' at the top level), so ask the parser itself."""
    ip = getattr(exc, "interactive_parser", None)
    if ip is not None:
        try:
            accepts = ip.accepts()
        except LarkError:
            accepts = None
        if accepts:
            return set(accepts)
    return set(fallback or ())


# What each statement keyword starts, for "... (the next rule starts here)".
_STATEMENT_STARTS = {
    "rule": "the next rule", "sort": "a sort declaration", "predicate": "a predicate declaration",
    "constant": "a constant declaration", "variable": "a variable declaration",
    "include": "an include", "semantics": "a semantics line",
}
_FORMULA_STARTS = frozenset({"FORALL", "EXISTS", "NOT"})


def _first_on_line(text: str, tok: Token) -> bool:
    start = tok.start_pos or 0
    return not text[text.rfind("\n", 0, start) + 1:start].strip()


def _incomplete_statement(text: str, source: str, err_tok: Token) -> Optional[ParseError]:
    """A statement cut short by the next one: `... ->` or `... and not` at a line's end,
    then `rule next: ...`. Where only a formula or a name fits, the contextual lexer
    reads the next statement's keyword as a name, and lark then stumbles over the
    token after it; say instead that the statement before is incomplete, at the
    keyword. None where the error is something else."""
    ip = _lark().parse_interactive(text)
    last: List[tuple] = []  # the last tokens read: (token, accepts before it, statement)
    statement: Optional[Tuple[Token, Optional[Token]]] = None  # (keyword, rule name) being read
    try:
        for tok in ip.iter_parse():
            accepts = None
            if tok.type == "NAME" and tok.value in _STATEMENT_STARTS:
                accepts = set(ip.accepts())
            option_key = tok.type == "SEMANTICS" and last and last[-1][0].type in ("LSQB", "COMMA")
            last = (last + [(tok, accepts, statement)])[-3:]
            if tok.type in _STATEMENT_TERMINALS and not option_key:  # (not `[semantics = ...]`)
                statement = (tok, None)
            elif (statement is not None and statement[0].type == "RULE" and statement[1] is None
                  and len(last) > 1 and last[-2][0] is statement[0] and tok.type == "NAME"):
                statement = (statement[0], tok)
    except LarkError:
        pass
    if err_tok.type != "$END" and last and last[-1][0].start_pos == err_tok.start_pos:
        last.pop()  # the parser read the offending token before refusing it
    if len(last) < 2:
        return None
    (prev, _, _), (kw, accepts, statement) = last[-2], last[-1]
    if accepts is None or statement is None or kw.start_pos is None:
        return None
    formula = bool(_FORMULA_STARTS & accepts)
    if not (formula or _first_on_line(text, kw)):
        return None  # `p(rule q)`: a keyword used as a name, not a new statement
    what = "a formula" if formula else _expected_text(accepts)
    keyword, name = statement
    if keyword.type == "RULE":
        whose = f"rule '{name.value}'" if name is not None else f"the rule at line {keyword.line}"
        part = f"the formula of {whose}" if formula else whose
    else:
        whose = f"the '{keyword.value}' statement at line {keyword.line}"
        part = whose
    message = (f"{whose} is incomplete: expected {what} after {_show(prev.value)}, got the "
               f"keyword '{kw.value}' ({_STATEMENT_STARTS[kw.value]} starts here)")
    hint = (f"complete {part}, which ends with {_show(prev.value)} at "
            f"{prev.line}:{prev.column}")
    return ParseError(message, source, kw.line, kw.column, text, hint)


def _from_lark(exc: UnexpectedInput, source: str, text: str) -> ParseError:
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        incomplete = _incomplete_statement(text, source, tok)
        if incomplete is not None:
            return incomplete
        line, column = exc.line, exc.column
        if tok.type == "$END":
            # lark borrows the last token's position: point just after it instead.
            line = getattr(tok, "end_line", None) or max(line, 1)
            column = getattr(tok, "end_column", None) or max(column, 1)
            if not text.strip():
                line, column = 1, 1
        expected = _acceptable(exc, exc.expected)
        hint = None
        if tok.type != "$END" and tok.start_pos is not None:
            hint = _spelling_hint(text, tok.start_pos, expected)
        history = getattr(exc, "token_history", None) or [None]
        last = history[-1]
        if hint is None and _is_tok(last, "NAME") and last.value in KEYWORDS:
            hint = f"'{last.value}' is a keyword and cannot be used as a name"
        if hint is None and tok.type != "$END" and tok.start_pos:
            hint = _number_hint(text, tok)
        if hint is None and tok.type == "NAME" and {"COLON", "IN"} <= expected:
            hint = ("a quantifier is written 'forall p: body' or 'forall p in guard: body'; "
                    "sorts are inferred (or declared with 'variable p: sort')")
        message = f"expected {_expected_text(expected)}, got {_got_token(tok)}"
        return ParseError(message, source, line, column, text, hint)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else exc.char
        allowed = _acceptable(exc, exc.allowed)
        hint = _spelling_hint(text, exc.pos_in_stream, allowed)
        if ch == '"':
            hint = "a quoted path must end on the same line"
        message = f"unexpected character {_show(ch)}"
        if allowed:
            message += f"; expected {_expected_text(allowed)}"
        return ParseError(message, source, exc.line, exc.column, text, hint)
    if isinstance(exc, UnexpectedEOF):
        lines = text.split("\n")
        message = f"unexpected end of input; expected {_expected_text(exc.expected)}"
        return ParseError(message, source, len(lines), len(lines[-1]) + 1, text)
    line = getattr(exc, "line", 0) or 0
    column = getattr(exc, "column", 0) or 0
    return ParseError(f"syntax error: {exc}", source, max(line, 0), max(column, 0), text)


# ------------------------------------------------------------- one file's text
def _statements(text: str, source: str) -> list:
    try:
        tree = _lark().parse(text)
        return _Builder(source, text).build(tree)
    except UnexpectedInput as exc:
        try:
            error = _from_lark(exc, source, text)
        except Exception as bug:  # never let a bug in the message hide the syntax error
            error = ParseError(f"syntax error (internal error while describing it: {bug!r}): "
                               f"{exc}", source, max(getattr(exc, "line", 0) or 0, 0),
                               max(getattr(exc, "column", 0) or 0, 0), text)
        raise error from None
    except LarkError as exc:
        raise ParseError(f"syntax error: {exc}", source, 0, 0, text) from None


# --------------------------------------------------------- includes, assembly
_INCLUDE_DIRS: List[str] = []
INCLUDE_ENV = "FUZZYLOGIC_INCLUDE"


def add_include_dir(path: Union[str, os.PathLike]) -> None:
    """Also look for included files in ``path``, after the including file's own
    folder: how a package offers its rule files to ``include "name.rules"``
    from anywhere (fuzzylogic_seg registers its shipped examples). The folders
    of the environment variable ``FUZZYLOGIC_INCLUDE`` (``os.pathsep``-separated)
    come before the registered ones."""
    p = os.path.abspath(os.fspath(path))
    if p not in _INCLUDE_DIRS:
        _INCLUDE_DIRS.append(p)


def include_path() -> Tuple[str, ...]:
    """The folders searched for an include not found beside its including file."""
    env = [os.path.abspath(d) for d in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if d]
    return tuple(dict.fromkeys(env + _INCLUDE_DIRS))


class _Loader:
    """Reads a file and its includes, depth first, each file once."""

    def __init__(self):
        self.stack: List[Tuple[str, str]] = []  # (real path, display name) being read
        self.done: set = set()
        self.texts: List[Tuple[str, str]] = []
        self.items: list = []

    def load(self, text: str, source: str, base_dir: Path, real: Optional[str]):
        if text.startswith("\ufeff"):  # a byte-order mark (some Windows editors write one)
            text = text[1:]
        self.texts.append((source, text))
        if real is not None:
            self.stack.append((real, source))
        for item in _statements(text, source):
            if isinstance(item, ast.Include):
                self._include(item, text, source, base_dir)
            elif isinstance(item, list):  # a `variable p, q: s` line
                self.items.extend(item)
            else:
                self.items.append(item)
        if real is not None:
            self.stack.pop()
            self.done.add(real)

    def _include(self, inc: ast.Include, text: str, source: str, base_dir: Path):
        def fail(message, hint=None):
            return IncludeError(message, source, inc.pos.line, inc.pos.column, text, hint)

        if not inc.path.strip():
            raise fail("include path is empty")
        if "\x00" in inc.path:  # (no file system takes it; os calls would raise ValueError)
            raise fail("include path holds a NUL character")
        target = base_dir / inc.path
        searched = ()
        if not _is_file(target) and not Path(inc.path).is_absolute():
            searched = include_path()
            for d in searched:
                if _is_file(Path(d) / inc.path):
                    target = Path(d) / inc.path
                    break
        display = os.path.normpath(str(target))
        real = os.path.realpath(target)
        chain = [name for r, name in self.stack]
        if any(r == real for r, _ in self.stack):
            start = next(i for i, (r, _) in enumerate(self.stack) if r == real)
            cycle = " -> ".join(chain[start:] + [display])
            raise fail(f"include cycle: {cycle}", hint="remove one of these includes")
        if real in self.done:
            return  # already included elsewhere: declarations must not repeat
        child_text = _read(target, display, fail, searched=searched)
        self.load(child_text, display, Path(display).parent, real)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a path the OS refuses (too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _read(path: Path, display: str, fail, what: str = "included file", searched=()) -> str:
    try:
        if not path.exists():
            hint = _similar_file(path)
            if searched:
                also = f"searched: {', '.join(searched)}"
                hint = f"{hint} Also {also}" if hint else f"also {also}"  # two sentences
            raise fail(f"{what} not found: '{display}'", hint=hint)
        if not path.is_file():  # a directory, a FIFO, /dev/zero: never read those
            raise fail(f"not a regular file: '{display}'")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"{what} is not UTF-8 text: '{display}' ({exc.reason} at byte "
                   f"{exc.start})") from None
    except OSError as exc:
        raise fail(f"cannot read {what} '{display}': {exc.strerror or exc}") from None
    except ValueError as exc:  # (a NUL byte: no file can have that name)
        raise fail(f"cannot read {what} {display!r}: {exc}") from None


def _similar_file(path: Path) -> Optional[str]:
    try:
        names = [p.name for p in path.parent.iterdir() if p.is_file()]
    except OSError:
        return None
    return _did_you_mean(path.name, names, cutoff=0.8)


def _assemble(items: list, source: str, texts) -> ast.Program:
    sorts, preds, consts, variables, rules = [], [], [], [], []
    semantics: Optional[_SemanticsLine] = None
    buckets = {
        ast.SortDecl: sorts, ast.PredicateDecl: preds, ast.ConstantDecl: consts,
        ast.VariableDecl: variables, ast.Rule: rules,
    }
    text_of = dict(texts)
    for item in items:
        if isinstance(item, _SemanticsLine):
            if semantics is not None and semantics.name != item.name:
                first = semantics.pos
                raise CheckError(
                    f"conflicting default semantics: '{item.name}' here, but '{semantics.name}' "
                    f"at {first.source}:{first.line}:{first.column}",
                    item.pos.source, item.pos.line, item.pos.column, text_of.get(item.pos.source),
                    hint=f"keep one 'semantics' line; set others per rule: rule r [semantics = "
                    f"{item.name}]: ...",
                )
            semantics = semantics or item
            continue
        buckets[type(item)].append(item)
    return ast.Program(
        sorts=tuple(sorts), predicates=tuple(preds), constants=tuple(consts),
        variables=tuple(variables), rules=tuple(rules),
        semantics=semantics.name if semantics else None, source=source, texts=tuple(texts),
    )


# ------------------------------------------------------------------ public API
def include_dir(source: str, base_dir: Union[str, os.PathLike, None] = None) -> Path:
    """Where the includes of a text named ``source`` resolve: ``base_dir`` if
    given, else the directory of ``source`` when it is a file path (not a
    ``<name>``), else the current directory."""
    if base_dir is not None:
        return Path(base_dir)
    source = str(source)
    is_path = not (source.startswith("<") and source.endswith(">"))
    return Path(source).parent if is_path else Path(".")


def parse(text: Union[str, bytes], source: str = "<string>",
          base_dir: Union[str, os.PathLike, None] = None) -> ast.Program:
    """Parse a rule text (and the files it includes) into an :class:`ast.Program`.

    `source` names the text in error messages and positions. Includes are
    resolved against `base_dir`, by default the directory of `source` when it
    is a file path, else the current directory. Raises :class:`ParseError`,
    :class:`IncludeError`, or :class:`CheckError` for the few mistakes that
    are local to one statement (rule options, a softmax argument, two
    different `semantics` lines); :func:`fuzzylogic.checker.check` does the rest.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"rule text is not UTF-8 ({exc.reason} at byte {exc.start})",
                             source) from None
    if not isinstance(text, str):
        raise TypeError(f"parse() takes the rule text as str, got {type(text).__name__}")
    source = str(source)
    base = include_dir(source, base_dir)
    real = os.path.realpath(source) if os.path.isfile(source) else None
    loader = _Loader()
    try:
        loader.load(text, source, base, real)
        return _assemble(loader.items, source, loader.texts)
    except RecursionError:
        raise ParseError("rule text nested too deeply (includes or formulas)", source) from None


def parse_file(path: Union[str, os.PathLike]) -> ast.Program:
    """Read and parse a rule file; includes are relative to its directory."""
    display = os.fspath(path)

    def fail(message, hint=None):
        return IncludeError(message, display, hint=hint)

    p = Path(display)
    text = _read(p, display, fail, what="rule file")
    return parse(text, source=display, base_dir=p.parent)
