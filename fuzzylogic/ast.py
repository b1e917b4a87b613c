"""The abstract syntax of rule files.

Nodes are frozen dataclasses so that a parsed theory is hashable and can key
the compile cache. Every node keeps the position it was parsed from, so the
checker and the compiler can point at the source with a caret.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple, Union


@dataclass(frozen=True)
class Pos:
    """A place in a source text: 1-based line and column."""

    source: str = "<string>"
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0


NOPOS = Pos()


# ---------------------------------------------------------------- declarations
@dataclass(frozen=True)
class SortDecl:
    """`sort pixel[2]`: a sort spanning `axes` tensor axes (default 1)."""

    name: str
    axes: int = 1
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class PredicateDecl:
    """`predicate cup(pixel) logits`.

    `input` says how the bound tensor is read: "prob" (values in [0, 1]),
    "logits" (sigmoid applied), or "softmax" (softmax over the axis of argument
    `softmax_arg`, an index into `args`).
    """

    name: str
    args: Tuple[str, ...]  # sort names
    input: str = "prob"
    softmax_arg: Optional[int] = None
    pos: Pos = field(default=NOPOS, compare=False)
    arg_pos: Tuple[Pos, ...] = field(default=(), compare=False)  # where each sort name is written


@dataclass(frozen=True)
class ConstantDecl:
    """`constant bg: class = 0` (fixed index) or `constant box: region` (index bound at call time)."""

    name: str
    sort: str
    index: Optional[int] = None
    pos: Pos = field(default=NOPOS, compare=False)
    sort_pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class VariableDecl:
    """`variable p, q: pixel` (optional: sorts are otherwise inferred from use)."""

    name: str
    sort: str
    pos: Pos = field(default=NOPOS, compare=False)
    sort_pos: Pos = field(default=NOPOS, compare=False)


# -------------------------------------------------------------------- formulas
@dataclass(frozen=True)
class Term:
    """A variable or constant name used as a predicate argument; ``offset`` k != 0
    (``c + k``) names the element k steps along a bound variable's one-axis sort."""

    name: str
    pos: Pos = field(default=NOPOS, compare=False)
    offset: int = 0

    def __str__(self) -> str:
        if not self.offset:
            return self.name
        return f"{self.name} {'+' if self.offset > 0 else '-'} {abs(self.offset)}"


@dataclass(frozen=True)
class Atom:
    predicate: str
    args: Tuple[Term, ...]
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Truth:
    """The literals `true` and `false` (or a number in [0, 1])."""

    value: float
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Not:
    operand: "Formula"
    pos: Pos = field(default=NOPOS, compare=False)


class _Chain:
    """And and Or. A flat chain ``a or b or c ...`` (one disjunct per class, say)
    is a left spine as deep as it is long: equality, hashing, repr and pickling
    walk it in a loop, where the generated methods would recurse once per term."""

    __slots__ = ()

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        a, b = self, other
        while isinstance(a, _Chain) and a.__class__ is b.__class__:
            if a is b:
                return True
            if a.right is not b.right and not a.right == b.right:
                return False
            a, b = a.left, b.left
        return a is b or a == b

    def __hash__(self):
        links = chain(self, _Chain)
        h = hash(links[0].left)
        for n in links:
            h = hash((n.__class__.__name__, h, n.right))
        return h

    def __repr__(self):
        links = chain(self, _Chain)
        parts = [f"{n.__class__.__qualname__}(left=" for n in reversed(links)]
        parts.append(repr(links[0].left))
        parts += [f", right={n.right!r}, pos={n.pos!r})" for n in links]
        return "".join(parts)

    def __reduce__(self):
        links = chain(self, _Chain)
        return _unchain, (links[0].left, tuple((n.__class__, n.right, n.pos) for n in links))


def _unchain(first, links):
    f = first
    for cls, right, pos in links:
        f = cls(f, right, pos)
    return f


def chain(f, kind=None) -> list:
    """The nodes of the left spine ``((a op b) op c) ...`` rooted at ``f``, innermost
    first: ``chain(f)[0].left`` is ``a``, then each node's ``right`` is the next
    operand. Follows nodes of ``f``'s own class (one connective), or of any
    subclass of ``kind``."""
    kind = kind or f.__class__
    links = []
    while isinstance(f, kind):
        links.append(f)
        f = f.left
    links.reverse()
    return links


def chain_operands(f) -> list:
    """The operands of the chain ``a op b op c ...`` rooted at ``f``, left to right
    (``[a, b, c, ...]``; found in a loop, however long the chain)."""
    links = chain(f)
    return [links[0].left] + [n.right for n in links]


# (eq, hash and repr: _Chain's loops, not the generated recursive ones)
@dataclass(frozen=True, eq=False, repr=False)
class And(_Chain):
    left: "Formula"
    right: "Formula"
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True, eq=False, repr=False)
class Or(_Chain):
    left: "Formula"
    right: "Formula"
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Implies:
    left: "Formula"
    right: "Formula"
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Iff:
    left: "Formula"
    right: "Formula"
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Quantified:
    """`forall[op] p, q [in guard | where guard]: body` (``[op]`` optional).

    `kind` is "forall" or "exists". `variables` lists the bound names in order;
    `guard` (optional) restricts the domain: a masked, or for soft guards
    weighted, reduction (SEMANTICS.md), not an implication.
    """

    kind: str
    variables: Tuple[str, ...]
    body: "Formula"
    guard: Optional["Formula"] = None
    sorts: Tuple[str, ...] = ()  # one per variable; filled in by the checker
    pos: Pos = field(default=NOPOS, compare=False)
    var_pos: Tuple[Pos, ...] = field(default=(), compare=False)  # where each variable is bound
    # `forall[name(p, ...)]`: this quantifier's operator, (name, *params), else the
    # rule's; the checker completes the parameters with their defaults
    operator: Optional[Tuple] = None
    operator_pos: Pos = field(default=NOPOS, compare=False)


Formula = Union[Atom, Truth, Not, And, Or, Implies, Iff, Quantified]


# ----------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """`rule name [weight = 2, semantics = godel, forall = pmean_error(4)]: formula`.

    `options` holds per-rule overrides as (key, value) pairs; values are
    strings, numbers, or (operator name, parameter) tuples. `option_pos`, when
    known, holds the position of each option's value, in the same order (where
    an unknown operator or preset name is shown with a caret).
    """

    name: str
    formula: Formula
    weight: float = 1.0
    options: Tuple[Tuple[str, object], ...] = ()
    pos: Pos = field(default=NOPOS, compare=False)
    option_pos: Tuple[Pos, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Include:
    path: str
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Program:
    """A whole rule file after includes are resolved."""

    sorts: Tuple[SortDecl, ...] = ()
    predicates: Tuple[PredicateDecl, ...] = ()
    constants: Tuple[ConstantDecl, ...] = ()
    variables: Tuple[VariableDecl, ...] = ()
    rules: Tuple[Rule, ...] = ()
    semantics: Optional[str] = None  # the file's `semantics NAME` default
    source: str = "<string>"
    # (source name, text) of every file read, so that later errors can show a caret.
    texts: Tuple[Tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def text_of(self, source: str) -> Optional[str]:
        """The text parsed under `source` (None if unknown)."""
        for name, text in self.texts:
            if name == source:
                return text
        return None
