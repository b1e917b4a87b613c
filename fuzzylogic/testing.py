"""Hypothesis strategies for property tests of theories and operators.

    from fuzzylogic.testing import problems, semantics_strategy
    @given(problems(), semantics_strategy())
    def test_compiled_matches_reference(problem, sem): ...

* :func:`signatures`: small random signatures (sorts with 1-2 axes and tiny
  sizes, predicates fed prob / logits / softmax, fixed and call-time constants);
* :func:`formulas`: random closed formulas over a signature (quantifiers with
  and without guards, every connective, neighbour offsets ``v + k``), with
  ``Quantified.sorts`` filled in as the checker would;
* :func:`programs`, :func:`facts`, :func:`problems`: a program plus facts,
  call-time constants and domain masks that fit it;
* :func:`truth_tensors`: float64 truth tensors mixing exact 0 and 1 with
  values inside (0, 1);
* :func:`semantics_strategy`: random :class:`~fuzzylogic.Semantics`.

Needs ``hypothesis`` (a test dependency); importing :mod:`fuzzylogic` does not
import this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from hypothesis import strategies as st

from . import ast
from .semantics import Semantics

__all__ = ["Signature", "Problem", "signatures", "formulas", "programs", "facts", "problems",
           "truth_tensors", "truth_values", "semantics_strategy", "CONTINUOUS_IMPLICATIONS"]

# Gödel and Goguen implications jump at a = b: two evaluators that round
# differently can land on either side of a tie, so formulas drawn for them keep
# implication operands atomic (ties then compare identical numbers).
CONTINUOUS_IMPLICATIONS = ("kleene_dienes", "reichenbach", "lukasiewicz")


@dataclass(frozen=True)
class Signature:
    sorts: Tuple[ast.SortDecl, ...]
    predicates: Tuple[ast.PredicateDecl, ...]
    constants: Tuple[ast.ConstantDecl, ...]
    sizes: Tuple[Tuple[str, Tuple[int, ...]], ...]  # sort -> axis sizes

    def size(self, sort: str) -> Tuple[int, ...]:
        return dict(self.sizes)[sort]


@dataclass
class Problem:
    program: ast.Program
    facts: Dict[str, object]  # predicate tensors and call-time constants
    domains: Dict[str, torch.Tensor]


def truth_values():
    """Floats in [0, 1], often exactly 0, 1 or 0.5."""
    return st.one_of(st.sampled_from([0.0, 1.0, 0.5]),
                     st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False))


@st.composite
def truth_tensors(draw, shape, dtype=torch.float64):
    """A tensor of ``shape`` with values from :func:`truth_values`."""
    n = 1
    for s in shape:
        n *= s
    vals = draw(st.lists(truth_values(), min_size=n, max_size=n))
    return torch.tensor(vals, dtype=dtype).reshape(shape)


@st.composite
def _logit_tensors(draw, shape, bound=30.0):
    n = 1
    for s in shape:
        n *= s
    el = st.one_of(st.sampled_from([0.0, bound, -bound]),
                   st.floats(-bound, bound, allow_nan=False, allow_subnormal=False))
    return torch.tensor(draw(st.lists(el, min_size=n, max_size=n)), dtype=torch.float64).reshape(shape)


@st.composite
def signatures(draw, max_sorts: int = 3, max_predicates: int = 4, max_size: int = 3,
               softmax: bool = True):
    nsorts = draw(st.integers(1, max_sorts))
    sorts, sizes = [], []
    for i in range(nsorts):
        axes = draw(st.sampled_from([1, 1, 1, 2]))
        sz = tuple(draw(st.integers(1, max_size if axes == 1 else 2)) for _ in range(axes))
        sorts.append(ast.SortDecl(f"s{i}", axes))
        sizes.append((f"s{i}", sz))
    names = [s.name for s in sorts]
    preds = []
    for j in range(draw(st.integers(1, max_predicates))):
        arity = draw(st.integers(0, 2))
        args = tuple(draw(st.sampled_from(names)) for _ in range(arity))
        kinds = ["prob", "logits"] + (["softmax"] if arity and softmax else [])
        kind = draw(st.sampled_from(kinds))
        smax = draw(st.integers(0, arity - 1)) if kind == "softmax" else None
        preds.append(ast.PredicateDecl(f"p{j}", args, kind, smax))
    for s in names:  # every sort gets its size from some fact
        if not any(s in p.args for p in preds):
            preds.append(ast.PredicateDecl(f"u_{s}", (s,), "prob"))
    consts = []
    for s, (name, sz) in zip(sorts, sizes):
        if s.axes == 1 and draw(st.booleans()):
            fixed = draw(st.booleans())
            idx = draw(st.integers(0, sz[0] - 1)) if fixed else None
            consts.append(ast.ConstantDecl(f"c_{name}", name, idx))
    return Signature(tuple(sorts), tuple(preds), tuple(consts), tuple(sizes))


def _terms_for(sig: Signature, scope, sort):
    out = [v for v, s in scope if s == sort]
    out += [c.name for c in sig.constants if c.sort == sort]
    return out


@st.composite
def _atom(draw, sig: Signature, scope, must_use=()):
    """An atom whose arguments are terms in scope (None when no predicate fits)."""
    cands = [p for p in sig.predicates if all(_terms_for(sig, scope, s) for s in p.args)]
    if must_use:
        cands = [p for p in cands if any(s in [ms for _, ms in must_use] for s in p.args)] or cands
    if not cands:
        return None
    p = draw(st.sampled_from(cands))
    axes = {d.name: d.axes for d in sig.sorts}
    bound = {v for v, _ in scope}
    args = []
    for s in p.args:
        name = draw(st.sampled_from(_terms_for(sig, scope, s)))
        # offsets (`v + k`, clamped at the ends) on bound one-axis variables, now and then
        k = draw(st.sampled_from((0, 0, 0, 1, -1, 2, -2))) if name in bound and axes[s] == 1 else 0
        args.append(ast.Term(name, offset=k))
    return ast.Atom(p.name, tuple(args))


@st.composite
def _leaf(draw, sig, scope):
    a = draw(_atom(sig, scope))
    if a is None:
        return ast.Truth(draw(st.sampled_from([0.0, 1.0])))
    return ast.Not(a) if draw(st.integers(0, 3)) == 0 else a


@st.composite
def formulas(draw, sig: Signature, scope=(), depth: int = 3, atomic_implications: bool = False,
             _names: Optional[List[int]] = None):
    """A formula over ``sig`` whose free variables are those of ``scope``."""
    names = _names if _names is not None else [0]
    if depth <= 0:
        return draw(_leaf(sig, scope))
    choice = draw(st.sampled_from(
        ["quant", "quant", "atom", "atom", "not", "and", "or", "implies", "iff"]
        if scope else ["quant", "quant", "quant", "and", "implies", "atom"]))
    sub = dict(sig=sig, scope=scope, depth=depth - 1, atomic_implications=atomic_implications,
               _names=names)
    if choice == "atom":
        return draw(_leaf(sig, scope))
    if choice == "not":
        return ast.Not(draw(formulas(**sub)))
    if choice in ("and", "or"):
        cls = ast.And if choice == "and" else ast.Or
        return cls(draw(formulas(**sub)), draw(formulas(**sub)))
    if choice in ("implies", "iff"):
        cls = ast.Implies if choice == "implies" else ast.Iff
        if atomic_implications:
            return cls(draw(_leaf(sig, scope)), draw(_leaf(sig, scope)))
        return cls(draw(formulas(**sub)), draw(formulas(**sub)))
    # a quantifier over 1-2 fresh variables
    nv = draw(st.integers(1, 2))
    new = []
    for _ in range(nv):
        names[0] += 1
        new.append((f"v{names[0]}", draw(st.sampled_from([s.name for s in sig.sorts]))))
    inner = tuple(scope) + tuple(new)
    guard = None
    if draw(st.integers(0, 2)) == 0:
        guard = draw(_atom(sig, inner, must_use=new))
    body = draw(formulas(sig, inner, depth - 1, atomic_implications, names))
    kind = draw(st.sampled_from(["forall", "exists"]))
    # now and then an operator of its own (`forall[mean] ...`), else the rule's
    operator = draw(st.sampled_from(_FORALL if kind == "forall" else _EXISTS)) \
        if draw(st.integers(0, 3)) == 0 else None
    return ast.Quantified(kind, tuple(v for v, _ in new), body, guard, tuple(s for _, s in new),
                          operator=operator)


@st.composite
def programs(draw, sig: Optional[Signature] = None, max_rules: int = 2, depth: int = 3,
             atomic_implications: bool = False):
    """A checked-looking :class:`ast.Program` (sorts filled) over ``sig``."""
    if sig is None:
        sig = draw(signatures())
    rules = []
    for i in range(draw(st.integers(1, max_rules))):
        f = draw(formulas(sig, (), depth, atomic_implications))
        w = draw(st.sampled_from([1.0, 0.5, 2.0]))
        rules.append(ast.Rule(f"r{i}", f, w))
    return ast.Program(sig.sorts, sig.predicates, sig.constants, (), tuple(rules))


@st.composite
def facts(draw, sig: Signature, batch: int = 2, with_domains: bool = True,
          logit_bound: float = 30.0):
    """(facts, domains) fitting ``sig``: tensors [B or 1, *sizes], constants, masks.

    Logits lie in [-logit_bound, logit_bound] (often exactly at the bounds)."""
    out: Dict[str, object] = {}
    for p in sig.predicates:
        b = draw(st.sampled_from([batch, 1]))
        shape = (b,) + tuple(n for s in p.args for n in sig.size(s))
        if p.input == "prob":
            out[p.name] = draw(truth_tensors(shape))
        else:
            out[p.name] = draw(_logit_tensors(shape, logit_bound if p.input == "logits" else 10.0))
    for c in sig.constants:
        if c.index is None:
            n = sig.size(c.sort)[0]
            if draw(st.booleans()):
                out[c.name] = draw(st.integers(0, n - 1))
            else:
                out[c.name] = torch.tensor(draw(st.lists(st.integers(0, n - 1), min_size=batch,
                                                         max_size=batch)), dtype=torch.long)
    domains: Dict[str, torch.Tensor] = {}
    if with_domains:
        for s in sig.sorts:
            if draw(st.integers(0, 2)) == 0:
                shape = (draw(st.sampled_from([batch, 1])),) + sig.size(s.name)
                if draw(st.booleans()):
                    n = 1
                    for x in shape:
                        n *= x
                    bits = draw(st.lists(st.booleans(), min_size=n, max_size=n))
                    domains[s.name] = torch.tensor(bits).reshape(shape)
                else:
                    domains[s.name] = draw(truth_tensors(shape))
    return out, domains


@st.composite
def problems(draw, atomic_implications: bool = False, depth: int = 3, batch: int = 2,
             logit_bound: float = 30.0):
    """A :class:`Problem`: program, facts and domains that fit together.

    ``atomic_implications`` (for the discontinuous Gödel / Goguen
    implications) also leaves softmax inputs out, whose rounding differs
    between evaluators and could break a tie a <= b differently. Comparisons
    with a p-only evaluator want a ``logit_bound`` near 12: beyond it
    ``1 - (1 - σ(-z))`` cancels in float64 where the compiled log form does not.
    """
    sig = draw(signatures(softmax=not atomic_implications))
    prog = draw(programs(sig, depth=depth, atomic_implications=atomic_implications))
    f, d = draw(facts(sig, batch, logit_bound=logit_bound))
    return Problem(prog, f, d)


_FORALL = [("min",), ("mean",), ("pmean_error", 1.0), ("pmean_error", 2.0), ("pmean_error", 3.0),
           ("product",), ("log_sum_exp", 4.0), ("at_least", 0.7), ("at_most", 0.4)]
_EXISTS = [("max",), ("mean",), ("pmean", 1.0), ("pmean", 2.0), ("pmean", 3.0), ("probsum",),
           ("log_sum_exp", 4.0), ("at_least", 0.3)]


@st.composite
def semantics_strategy(draw, implications=None, loss=None):
    """A random :class:`Semantics` over the built-in operators."""
    conj = draw(st.sampled_from(["godel", "product", "lukasiewicz"]))
    disj = draw(st.sampled_from([None, "godel", "product", "lukasiewicz"]))
    impl = draw(st.sampled_from(list(implications or ["kleene_dienes", "reichenbach", "lukasiewicz",
                                                       "godel", "goguen"])))
    return Semantics(conjunction=conj, disjunction=disj, implication=impl,
                     equivalence=draw(st.sampled_from(["biimplication", "lukasiewicz"])),
                     forall=draw(st.sampled_from(_FORALL)), exists=draw(st.sampled_from(_EXISTS)),
                     loss=loss or draw(st.sampled_from(["linear", "log"])),
                     stable=draw(st.booleans()))
