"""Checked AST -> a shape-independent evaluation plan -> :class:`Theory`.

Each rule becomes a small tree of node objects; calling a node with a
per-call context returns a :class:`~fuzzylogic.operators.TruthValue` whose
tensors have the canonical layout ``[B, *axes of the variables in scope]``
(outermost quantifier first; a variable of a sort with k axes owns k
consecutive axes). Atoms select their constants, take diagonals for repeated
variables, then permute and unsqueeze their fact into that layout (views, no
copies); connectives broadcast; a quantifier reduces the trailing axes of its
own variables. Nothing in a plan depends on tensor sizes, so one plan serves
every batch and image size.

``compile`` is cached on (text, source, semantics, the folder includes resolve
in): compiling the same rule text again returns the same :class:`Theory`
object, unless a file it includes has changed since (then it is compiled
again).

Sparse guards (CPU, eager): see :mod:`fuzzylogic.sparse`.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import ast, chains
from . import operators as ops
from . import sparse as _sparse
from .errors import (CheckError, FuzzyLogicError, IncludeError, RuleSemanticsError,
                     SemanticsError, SourceError)
from .operators import TruthValue, get_operator
from .semantics import Semantics, resolve
from .sparse import sparse_guards

__all__ = ["compile", "load", "compile_program", "cache_info", "cache_clear", "sparse_guards"]


# ------------------------------------------------------------------ scope
class ScopeVar:
    """A bound variable: its sort, number of axes and first tensor axis."""

    __slots__ = ("name", "sort", "axes", "start")

    def __init__(self, name: str, sort: str, axes: int, start: int):
        self.name, self.sort, self.axes, self.start = name, sort, axes, start

    def __repr__(self):
        return f"{self.name}:{self.sort}@{self.start}+{self.axes}"


def _rank(scope: Sequence[ScopeVar]) -> int:
    return 1 + sum(v.axes for v in scope)


def _error(msg: str, node, program: ast.Program) -> CheckError:
    pos = getattr(node, "pos", ast.NOPOS)
    return CheckError(msg, source=pos.source if pos.line else program.source,
                      line=pos.line, column=pos.column)


# ------------------------------------------------------------------ nodes
class Node:
    __slots__ = ()

    def __call__(self, ctx) -> TruthValue:  # pragma: no cover - abstract
        raise NotImplementedError


class AtomNode(Node):
    """A predicate applied to variables and constants, in the scope's layout.

    ``steps`` run on the fact tensor in order: ("const", dim, name, index)
    selects a constant (``index`` None = bound at call time: int, or
    LongTensor [B] gathered per batch item); ("shift", dim, k) moves axis
    ``dim`` by k elements for an offset ``v + k`` (clamped at the ends);
    ("diag", d1, d2) takes the diagonal for a repeated variable. Then ``perm``
    and ``expand`` (a tuple of slice/None) put the remaining axes in place.
    """

    __slots__ = ("pred", "input", "softmax_dims", "steps", "perm", "index", "key", "permutes",
                 "unsqueezes", "shares", "untransformed")

    def __init__(self, pred, input, softmax_dims, steps, perm, index):
        self.pred, self.input, self.softmax_dims = pred, input, softmax_dims
        self.steps, self.perm, self.index = tuple(steps), tuple(perm), tuple(index)
        self.key = (pred, self.steps, self.perm, tuple(i is None for i in self.index))
        # decided once here, not at every call
        self.permutes = self.perm != tuple(range(len(self.perm)))
        self.unsqueezes = any(i is None for i in self.index)
        self.shares = all(step[0] == "shift" for step in self.steps)  # see __call__
        self.untransformed = self.shares and not (self.steps or self.permutes or self.unsqueezes)

    def transform(self, t: torch.Tensor, ctx) -> torch.Tensor:
        for step in self.steps:
            if step[0] == "const":
                _, dim, name, fixed = step
                idx = fixed if fixed is not None else ctx.constant(name)
                t = _select(t, dim, idx)
            elif step[0] == "shift":
                t = shift(t, step[1], step[2])
            else:
                t = torch.diagonal(t, 0, step[1], step[2])
        if self.permutes:
            t = t.permute(self.perm)
        if self.unsqueezes:
            t = t[self.index]
        return t

    def __call__(self, ctx) -> TruthValue:
        if ctx.compacted:
            return ctx.gather_atom(self)
        cached = ctx.atoms.get(self.key)
        if cached is not None:
            return cached
        if self.input == "softmax":
            base = ctx.softmax_value(self.pred, self.softmax_dims)
            val = base.map(lambda t: self.transform(t, ctx))
        elif self.shares:
            # The whole fact, permuted, unsqueezed or shifted (an offset): every atom of
            # the predicate shares one truth value, its sigmoid and logs computed once
            # (a shift moves elements, so it commutes with them).
            val = ctx.fact_value(self.pred, self.input)
            if not self.untransformed:
                val = val.view(lambda t: self.transform(t, ctx))
        else:
            t = self.transform(ctx.fact(self.pred), ctx)
            val = TruthValue.from_logits(t) if self.input == "logits" else TruthValue.from_p(t)
        ctx.atoms[self.key] = val
        return val


def shift(t: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """``out[..., i, ...] = t[..., clamp(i + k, 0, n - 1), ...]`` along ``dim``: the
    neighbour k steps on, the edge element past either end. Slices and a
    broadcast edge, concatenated: the backward pass is slicing and a sum
    (deterministic on CUDA, where index_select's would scatter with atomics)."""
    n = t.shape[dim]
    if k == 0 or n == 0:
        return t
    edge = t.narrow(dim, n - 1 if k > 0 else 0, 1)
    m = min(abs(k), n)
    pad = edge.expand(*[m if d == dim else s for d, s in enumerate(t.shape)])
    if m == n:
        return pad.contiguous()
    return torch.cat([t.narrow(dim, k, n - k), pad] if k > 0 else [pad, t.narrow(dim, 0, n + k)], dim)


def _select(t: torch.Tensor, dim: int, idx) -> torch.Tensor:
    if isinstance(idx, int):
        return t.select(dim, idx)
    # LongTensor [B] (or [1]): gather along `dim`, batch item b takes idx[b].
    b = max(t.shape[0], idx.shape[0])
    if t.shape[0] != b:
        t = t.expand(b, *t.shape[1:])
    if idx.shape[0] != b:
        idx = idx.expand(b)
    sizes = list(t.shape)
    sizes[dim] = 1
    view = [b] + [1] * (t.dim() - 1)
    return t.gather(dim, idx.reshape(view).expand(sizes)).squeeze(dim)


class ConstNode(Node):
    """The literals true/false (or a number in [0, 1])."""

    __slots__ = ("value", "rank")

    def __init__(self, value: float, rank: int):
        self.value, self.rank = float(value), rank

    def __call__(self, ctx) -> TruthValue:
        return ctx.constant_value(self.value, self.rank)


class NotNode(Node):
    __slots__ = ("child", "spec")

    def __init__(self, child: Node, spec):
        self.child, self.spec = child, spec

    def __call__(self, ctx) -> TruthValue:
        return apply_unary(self.spec, self.child(ctx))


class BinaryNode(Node):
    __slots__ = ("left", "right", "spec", "params", "stable")

    def __init__(self, left, right, spec, params, stable):
        self.left, self.right, self.spec, self.params, self.stable = left, right, spec, params, stable

    def __call__(self, ctx) -> TruthValue:
        return apply_binary(self.spec, self.params, self.stable, self.left(ctx), self.right(ctx))


class ChainNode(Node):
    """``a op b op c ...``, a conjunction or disjunction of any length, folded pairwise
    left to right: ``((a op b) op c) ...`` (a registered operator need not be
    associative). A flat node: a chain of thousands of terms costs no recursion to
    build, inspect or evaluate (:mod:`fuzzylogic.chains`). ``dual``: a disjunction
    as the De Morgan dual of a conjunction, 1 - T(1 - x, 1 - y)."""

    __slots__ = ("operands", "spec", "params", "stable", "dual")

    def __init__(self, operands, spec, params, stable, dual=False):
        self.operands, self.spec, self.params = tuple(operands), spec, params
        self.stable, self.dual = stable, dual

    def _combine(self, x: TruthValue, y: TruthValue) -> TruthValue:
        if self.dual:
            x, y = x.negate(), y.negate()
            return apply_binary(self.spec, self.params, self.stable, x, y).negate()
        return apply_binary(self.spec, self.params, self.stable, x, y)

    def __call__(self, ctx) -> TruthValue:
        # operands called in order, each combined as soon as it is there (as the
        # binary tree would: calls may fill caches, quantifiers may compact)
        first, rest = self.operands[0], self.operands[1:]
        return chains.fold(first(ctx), (node(ctx) for node in rest), self._combine, len(rest))


class IffNode(Node):
    """Equivalence: a registered operator, or T(I(a, b), I(b, a)) (biimplication)."""

    __slots__ = ("left", "right", "spec", "params", "conj", "impl", "stable")

    def __init__(self, left, right, spec, params, conj, impl, stable):
        self.left, self.right, self.spec, self.params = left, right, spec, params
        self.conj, self.impl, self.stable = conj, impl, stable

    def __call__(self, ctx) -> TruthValue:
        x, y = self.left(ctx), self.right(ctx)
        if self.spec is None:
            (ispec, iparams), (cspec, cparams) = self.impl, self.conj
            i1 = apply_binary(ispec, iparams, self.stable, x, y)
            i2 = apply_binary(ispec, iparams, self.stable, y, x)
            return apply_binary(cspec, cparams, self.stable, i1, i2)
        return apply_binary(self.spec, self.params, self.stable, x, y)


class QuantNode(Node):
    """∀/∃ over ``variables``: reduces the trailing axes [outer_rank, inner_rank)."""

    __slots__ = ("kind", "spec", "params", "stable", "body", "guard", "vars", "outer_rank",
                 "inner_rank", "elementwise", "heavy", "sparse", "scope", "var_sorts", "identity",
                 "covers")

    def __init__(self, kind, spec, params, stable, body, guard, vars, outer_rank, inner_rank,
                 scope=()):
        self.kind, self.spec, self.params, self.stable = kind, spec, params, stable
        self.body, self.guard, self.vars = body, guard, tuple(vars)
        self.outer_rank, self.inner_rank = outer_rank, inner_rank
        self.scope = tuple(scope)  # the sorts of every variable in scope, outermost first
        self.var_sorts = tuple((v.sort, v.start) for v in self.vars)  # (domain_mask's key)
        self.identity = ops.FORALL_IDENTITY if kind == "forall" else ops.EXISTS_IDENTITY
        # elementwise: no quantifier inside (can be compacted); heavy: computes
        # something beyond (negated) atoms, so compacting it saves work.
        self.elementwise, self.heavy, nested = (_body_info(body) if body is not None
                                                else (False, False, False))
        # whether this quantifier or one nested in it may evaluate a body sparsely
        # (measured: gathering and scattering cost more than a light body, even
        # with its reduction)
        self.sparse = (spec is not None and spec.ignores_zero_weight
                       and (self.heavy if self.elementwise else nested))
        # whether the body surely has its full size on the reduced axes (reduce
        # then need not expand it: decided here, not at every call)
        self.covers = (body is not None
                       and set(range(outer_rank, inner_rank)) <= _full_axes(body))

    def sizes(self, ctx) -> Tuple[int, ...]:
        out = ctx.memo.get(self)  # (the same for every call of a binding signature)
        if out is None:
            out = ()
            for v in self.vars:
                out += ctx.sizes[v.sort]
            ctx.memo[self] = out
        return out

    def weight(self, ctx) -> Optional[torch.Tensor]:
        """Guard truth times the domain masks of the bound sorts (None: no mask)."""
        m = ctx.domain_mask(self.var_sorts, self.inner_rank)
        if self.guard is None:
            return m
        w = self.guard(ctx).p
        return w if m is None else w * m

    def keep(self, ctx, w) -> Optional[Tuple[torch.Tensor, ...]]:
        """The cells whose body values matter: those where every tensor of the
        returned tuple is nonzero (all >= 0; None: every cell).

        A cell of weight 0 does not matter to an operator that ignores zero
        weights, unless the weight needs a gradient (d/dw there depends on the
        body); cells that the enclosing quantifiers ignore do not matter either.
        (Factors, not their product: a product of tiny weights may underflow.)"""
        keep = ctx.relevance or ()
        if w is not None and not w.requires_grad:
            if self.guard is not None or not _sparse.domains_full(ctx, self.vars):
                keep = keep + (w,)
        return keep or None

    def __call__(self, ctx) -> TruthValue:
        identity = self.identity
        sizes = self.sizes(ctx)
        if 0 in sizes:
            return ctx.constant_value(identity, self.outer_rank)
        if not (self.sparse and _sparse.enabled(ctx)):  # the dense path (GPU, torch.compile)
            body = self._body(ctx, None)
            return self.reduce(body, self.weight(ctx), self.outer_rank, sizes, identity)
        w = self.weight(ctx)  # first: it decides which cells the body needs
        keep = self.keep(ctx, w)
        if keep is not None and self.elementwise:
            out = _sparse.compacted(self, ctx, keep, w, sizes, identity)
            if out is not None:
                return out
        return self.reduce(self._body(ctx, keep), w, self.outer_rank, sizes, identity)

    def _body(self, ctx, keep) -> TruthValue:
        """The dense body; ``keep``: what of it matters to the nested quantifiers."""
        if self.elementwise or (keep is None and ctx.relevance is None):
            return self.body(ctx)
        prev, ctx.relevance = ctx.relevance, keep
        try:
            return self.body(ctx)
        finally:
            ctx.relevance = prev

    def reduce(self, body: TruthValue, w, lead: int, sizes, identity) -> TruthValue:
        """Reduce the trailing axes (``sizes``, after ``lead`` others) of the body."""
        full = (-1,) * lead + sizes
        n = lead + len(sizes)

        def expand(t):
            return t if tuple(t.shape[lead:]) == sizes else t.expand(full)

        if not self.covers:
            body = body.map(expand)
        if w is not None:
            w = expand(w)
        if self.stable is not None and self.spec.stable:
            body = body.stabilised(self.spec.stable[0], self.stable)
        dims = tuple(range(lead, n))
        spec, params = self.spec, self.params
        if spec.log_form is not None and (w is None or spec.handles_empty):
            return spec.log_form(body, dims, w, *params)
        if w is None or spec.handles_empty:
            return TruthValue(p=lambda: spec.fn(body.p, dims, w, *params))

        def guarded():
            # A user operator need not know about empty domains: reduce over a
            # safe all-ones weight there and return the identity instead.
            nonempty = w.sum(dims) > 0
            keep = nonempty.reshape(nonempty.shape + (1,) * len(dims))
            out = spec.fn(body.p, dims, torch.where(keep, w, torch.ones_like(w)), *params)
            return torch.where(nonempty, out, torch.full_like(out, identity))

        return TruthValue(p=guarded)


def _body_info(node) -> Tuple[bool, bool, bool]:
    """(elementwise, heavy, nested sparse) of a quantifier body: no quantifier
    inside; computes something beyond (negated) atoms; a quantifier inside may
    evaluate its own body sparsely."""
    if isinstance(node, (AtomNode, ConstNode)):
        return True, False, False
    if isinstance(node, NotNode):
        return _body_info(node.child)
    if isinstance(node, (BinaryNode, IffNode)):
        left, right = _body_info(node.left), _body_info(node.right)
        return left[0] and right[0], True, left[2] or right[2]
    if isinstance(node, ChainNode):
        infos = [_body_info(n) for n in node.operands]
        return all(i[0] for i in infos), True, any(i[2] for i in infos)
    if isinstance(node, QuantNode):
        return False, False, node.sparse
    return False, False, False  # an unknown node: keep it dense


def _full_axes(node) -> frozenset:
    """The scope axes on which ``node``'s value surely has its full size (on the
    others it may be broadcast, size 1): an atom's variables' axes (validated
    sizes), the union for a connective; none for a quantifier, a constant or an
    unknown node."""
    if isinstance(node, AtomNode):
        return frozenset(d for d, i in enumerate(node.index) if d and i is not None)
    if isinstance(node, NotNode):
        return _full_axes(node.child)
    if isinstance(node, (BinaryNode, IffNode)):
        return _full_axes(node.left) | _full_axes(node.right)
    if isinstance(node, ChainNode):
        return frozenset().union(*(_full_axes(n) for n in node.operands))
    # (a quantifier over an empty domain, or under a guard that is zero everywhere
    # on the sparse path, returns its identity as a broadcast constant)
    return frozenset()


def apply_unary(spec, x: TruthValue) -> TruthValue:
    if spec.log_form is not None:
        return spec.log_form(x)
    return TruthValue(p=lambda: spec.fn(x.p))


def apply_binary(spec, params, stable, x: TruthValue, y: TruthValue) -> TruthValue:
    if stable is not None and spec.stable:
        x = x.stabilised(spec.stable[0], stable)
        y = y.stabilised(spec.stable[1] if len(spec.stable) > 1 else None, stable)
    if spec.log_form is not None:
        return spec.log_form(x, y, *params)
    return TruthValue(p=lambda: spec.fn(x.p, y.p, *params))


# ------------------------------------------------------------------ rules
class ReportPlan:
    """What `Theory.report` needs of a rule `Q1 ... Qn: A1 -> ... -> Ak -> C`."""

    __slots__ = ("quants", "premises", "conclusion", "rank")

    def __init__(self, quants, premises, conclusion, rank):
        self.quants, self.premises, self.conclusion, self.rank = quants, premises, conclusion, rank


class RulePlan:
    __slots__ = ("name", "weight", "loss", "semantics", "root", "report", "pos", "predicates",
                 "constants", "sorts")

    def __init__(self, name, weight, loss, semantics, root, report, pos, predicates, constants,
                 sorts=()):
        self.name, self.weight, self.loss, self.semantics = name, weight, loss, semantics
        self.root, self.report, self.pos = root, report, pos
        self.predicates, self.constants, self.sorts = predicates, constants, sorts


class _Builder:
    def __init__(self, program: ast.Program, sem: Semantics):
        self.program = program
        self.sem = sem
        self.stable = sem.eps if sem.stable else None
        self.sort_axes = {s.name: s.axes for s in program.sorts}
        self.preds = {p.name: p for p in program.predicates}
        self.consts = {c.name: c for c in program.constants}
        self.used_preds: List[str] = []
        self.used_consts: List[str] = []
        self.used_sorts: List[str] = []

    def spec(self, kind: str):
        ref = getattr(self.sem, kind)
        return get_operator(kind, ref[0]), tuple(ref[1:])

    def build(self, f, scope: Tuple[ScopeVar, ...]) -> Node:
        if isinstance(f, ast.Atom):
            return self.atom(f, scope)
        if isinstance(f, ast.Truth):
            if not 0.0 <= float(f.value) <= 1.0:
                raise _error(f"truth literal {f.value} is outside [0, 1]", f, self.program)
            return ConstNode(f.value, _rank(scope))
        if isinstance(f, ast.Not):
            spec, _ = self.spec("negation")
            return NotNode(self.build(f.operand, scope), spec)
        if isinstance(f, (ast.And, ast.Or)):
            # a long chain `a or b or ...`: its operands found in a loop, built left to right
            return self.chain(f, [self.build(g, scope) for g in ast.chain_operands(f)])
        if isinstance(f, ast.Implies):
            left, right = self.build(f.left, scope), self.build(f.right, scope)
            spec, params = self.spec("implication")
            return BinaryNode(left, right, spec, params, self.stable)
        if isinstance(f, ast.Iff):
            left, right = self.build(f.left, scope), self.build(f.right, scope)
            spec, params = self.spec("equivalence")
            if spec.name == "biimplication":
                return IffNode(left, right, None, (), self.spec("conjunction"),
                               self.spec("implication"), self.stable)
            return IffNode(left, right, spec, params, None, None, self.stable)
        if isinstance(f, ast.Quantified):
            return self.quantified(f, scope)
        raise _error(f"cannot compile {type(f).__name__}", f, self.program)

    def chain(self, f, operands) -> ChainNode:
        if isinstance(f, ast.Or):
            ref = self.sem.disjunction
            if ref is None:  # the dual of the conjunction
                cname = self.sem.conjunction[0]
                try:
                    spec = get_operator("disjunction", cname)
                    return ChainNode(operands, spec, tuple(self.sem.conjunction[1:]), self.stable)
                except SemanticsError:
                    spec, params = self.spec("conjunction")
                    return ChainNode(operands, spec, params, self.stable, dual=True)
            spec, params = self.spec("disjunction")
        else:
            spec, params = self.spec("conjunction")
        return ChainNode(operands, spec, params, self.stable)

    def inner_scope(self, f: ast.Quantified, scope):
        if len(f.sorts) != len(f.variables):
            raise _error(f"quantifier over {', '.join(f.variables)} has no sorts: the program was "
                         "not checked (run fuzzylogic.check first)", f, self.program)
        inner = list(scope)
        start = _rank(scope)
        for v, s in zip(f.variables, f.sorts):
            if s not in self.sort_axes:
                raise _error(f"unknown sort '{s}' for variable '{v}'", f, self.program)
            if any(u.name == v for u in inner):
                raise _error(f"variable '{v}' is already bound in this scope", f, self.program)
            inner.append(ScopeVar(v, s, self.sort_axes[s], start))
            if s not in self.used_sorts:
                self.used_sorts.append(s)
            start += self.sort_axes[s]
        return tuple(inner)

    def quantified(self, f: ast.Quantified, scope) -> QuantNode:
        if f.kind not in ("forall", "exists"):
            raise _error(f"unknown quantifier '{f.kind}'", f, self.program)
        inner = self.inner_scope(f, scope)
        body = self.build(f.body, inner)
        guard = self.build(f.guard, inner) if f.guard is not None else None
        if f.operator is None:
            spec, params = self.spec(f.kind)
        else:  # its own (checked and completed here too: an AST may skip the checker)
            from .semantics import _norm_ref
            ref = _norm_ref(f.kind, f.operator)
            spec, params = get_operator(f.kind, ref[0]), tuple(ref[1:])
        return QuantNode(f.kind, spec, params, self.stable, body, guard, inner[len(scope):],
                         _rank(scope), _rank(inner), [v.sort for v in inner])

    def atom(self, f: ast.Atom, scope) -> AtomNode:
        decl = self.preds.get(f.predicate)
        if decl is None:
            raise _error(f"unknown predicate '{f.predicate}'", f, self.program)
        if len(decl.args) != len(f.args):
            raise _error(f"predicate '{decl.name}' takes {len(decl.args)} argument(s), "
                         f"got {len(f.args)}", f, self.program)
        if decl.name not in self.used_preds:
            self.used_preds.append(decl.name)
        by_name = {v.name: v for v in scope}
        labels: List[object] = ["B"]
        for i, s in enumerate(decl.args):
            labels += [(i, k) for k in range(self.sort_axes[s])]
        softmax_dims = ()
        if decl.input == "softmax":
            softmax_dims = tuple(labels.index((decl.softmax_arg, k))
                                 for k in range(self.sort_axes[decl.args[decl.softmax_arg]]))
        steps = []
        owner: Dict[int, str] = {}  # arg index -> variable name
        seen: Dict[str, int] = {}
        # constants, last argument first so that earlier dims keep their index
        for i in reversed(range(len(f.args))):
            name, sort = f.args[i].name, decl.args[i]
            if name in by_name:
                if by_name[name].sort != sort:
                    raise _error(f"variable '{name}' has sort '{by_name[name].sort}' but "
                                 f"'{decl.name}' expects '{sort}' here", f.args[i], self.program)
                continue
            c = self.consts.get(name)
            if c is None:
                raise _error(f"'{name}' is neither a bound variable nor a constant",
                             f.args[i], self.program)
            if f.args[i].offset:
                raise _error(f"'{f.args[i]}': an offset applies to a bound variable, not to "
                             f"the constant '{name}'", f.args[i], self.program)
            if c.sort != sort:
                raise _error(f"constant '{name}' has sort '{c.sort}' but '{decl.name}' expects "
                             f"'{sort}' here", f.args[i], self.program)
            if self.sort_axes[sort] != 1:
                raise _error(f"constant '{name}': constants of the {self.sort_axes[sort]}-axis "
                             f"sort '{sort}' are not supported", f.args[i], self.program)
            if c.index is None and name not in self.used_consts:
                self.used_consts.append(name)
            d = labels.index((i, 0))
            steps.append(("const", d, name, c.index))
            labels.pop(d)
        for i, term in enumerate(f.args):  # offsets, before any diagonal merges axes
            if term.offset and term.name in by_name:
                if self.sort_axes[decl.args[i]] != 1:
                    raise _error(f"'{term}': offsets apply to one-axis sorts", term, self.program)
                steps.append(("shift", labels.index((i, 0)), term.offset))
        for i, term in enumerate(f.args):
            if term.name not in by_name:
                continue
            if term.name in seen:  # repeated variable: the diagonal
                j = seen[term.name]
                for k in range(self.sort_axes[decl.args[i]]):
                    d1, d2 = labels.index((j, k)), labels.index((i, k))
                    steps.append(("diag", d1, d2))
                    labels = [x for x in labels if x not in ((j, k), (i, k))] + [(j, k)]
            else:
                seen[term.name] = i
                owner[i] = term.name
        # permute the remaining axes into scope order, then insert size-1 axes
        target = {}
        for lab in labels[1:]:
            i, k = lab
            target[lab] = by_name[owner[i]].start + k
        present = sorted(labels[1:], key=lambda lab: target[lab])
        perm = [0] + [labels.index(lab) for lab in present]
        rank = _rank(scope)
        have = {target[lab] for lab in present}
        index = [slice(None)] + [slice(None) if d in have else None for d in range(1, rank)]
        return AtomNode(decl.name, decl.input, softmax_dims, steps, perm, index)

    def report_plan(self, f, scope) -> Optional[ReportPlan]:
        quants = []
        while isinstance(f, ast.Quantified):
            inner = self.inner_scope(f, scope)
            guard = self.build(f.guard, inner) if f.guard is not None else None
            quants.append(QuantNode(f.kind, None, (), None, None, guard, inner[len(scope):],
                                    _rank(scope), _rank(inner)))
            scope, f = inner, f.body
        if not quants or not isinstance(f, ast.Implies):
            return None
        premises = []
        while isinstance(f, ast.Implies):  # a -> b -> c reads (a and b) -> c
            premises.append(self.build(f.left, scope))
            f = f.right
        return ReportPlan(quants, premises, self.build(f, scope), _rank(scope))


def compile_program(program: ast.Program, semantics=None):
    """Plan every rule of a checked program; returns a :class:`Theory`."""
    from .theory import Theory  # theory imports this module's nodes

    if not isinstance(program, ast.Program):
        raise FuzzyLogicError(f"compile needs rule text or an ast.Program, got {type(program).__name__}")
    if any(_unchecked(r.formula) for r in program.rules):
        try:
            from .checker import check
        except ImportError as e:  # pragma: no cover - the checker ships with the package
            raise CheckError("the program is not checked and fuzzylogic.checker is missing",
                             source=program.source) from e
        program = check(program)
    plans = []
    for rule in program.rules:
        try:
            sem = resolve(semantics, program.semantics, rule.options)
            b = _Builder(program, sem)
            root = b.build(rule.formula, ())
            report = b.report_plan(rule.formula, ())
        except SemanticsError as exc:
            if isinstance(exc, SourceError):
                raise
            raise _placed(exc, rule, program, semantics) from None
        weight = float(dict(rule.options).get("weight", rule.weight))
        plans.append(RulePlan(rule.name, weight, sem.loss, sem, root, report, rule.pos,
                              tuple(b.used_preds), tuple(b.used_consts), tuple(b.used_sorts)))
    return Theory(program, plans, semantics)


def _placed(exc: SemanticsError, rule, program: ast.Program, call_semantics) -> SemanticsError:
    """``exc`` at the place in the rule file that caused it: the value of the rule
    option that names the unknown operator or preset (or gives a bad parameter),
    else the file's ``semantics`` line when that names the unknown preset (and no
    call-time semantics overrides it), else the rule. A misspelt name gets a
    "did you mean" hint."""
    import re

    msg = str(exc)
    at_fault = _option_at_fault(msg, rule)
    if at_fault is not None:
        (key, value), vpos = at_fault
        source = vpos.source or rule.pos.source or program.source
        return RuleSemanticsError(f"rule '{rule.name}': {msg}", source=source, line=vpos.line,
                                  column=vpos.column, text=program.text_of(source),
                                  hint=_suggestion(msg, with_param=isinstance(value, tuple)))
    pos = rule.pos
    source, line, column = (pos.source or program.source), pos.line, pos.column
    if program.semantics and call_semantics is None and repr(program.semantics) in msg:
        pat = re.compile(r"^([ \t]*)semantics[ \t]+" + re.escape(program.semantics) + r"\b", re.M)
        for name, text in program.texts:
            m = pat.search(text)
            if m:
                source, line = name, text.count("\n", 0, m.start()) + 1
                column = len(m.group(1)) + 1
                break
    in_rule = source == (pos.source or program.source) and line == pos.line
    text = program.text_of(source)
    if in_rule and text:
        # the caret under the misspelt operator's name where the rule's line shows it
        named = re.search(r"operator '([^']+)'", msg)
        lines = text.split("\n")
        if named and 0 < line <= len(lines):
            at = lines[line - 1].find(named.group(1), max(column - 1, 0))
            if at >= 0:
                column = at + 1
    return RuleSemanticsError(f"rule '{rule.name}': {msg}" if in_rule else msg, source=source,
                              line=line, column=column, text=text, hint=_suggestion(msg))


def _option_at_fault(msg: str, rule):
    """The ``((key, value), value position)`` of the rule option that raises ``msg``
    on its own (None if none does, or the positions are unknown)."""
    from .semantics import CONNECTIVES, LOSSES, _norm_ref, get_preset

    for (key, value), vpos in zip(rule.options, rule.option_pos):
        if not vpos.line:
            continue
        try:
            if key == "semantics":
                get_preset(str(value))
            elif key in CONNECTIVES:
                _norm_ref(key, value)
            elif key == "loss" and value not in LOSSES:
                return (key, value), vpos
        except SemanticsError as exc:
            if str(exc) == msg:
                return (key, value), vpos
    return None


def _suggestion(msg: str, with_param: bool = False) -> Optional[str]:
    """"did you mean ...?" for the unknown operator or preset that ``msg`` names."""
    import difflib
    import re

    from .parser import _did_you_mean
    from .semantics import available_presets

    m = re.match(r"unknown semantics '(\w+)'", msg)
    if m:
        return _did_you_mean(m.group(1), available_presets())
    m = re.match(r"unknown (\w+) operator '(\w+)'", msg)
    if not m or m.group(1) not in ops.KINDS:
        return None
    kind, word = m.groups()
    names = ops.available_operators(kind) + list(ops.operator_aliases(kind))

    def score(name):  # `pmeen` is closer to `pmean_error` (stem `pmean`) than to `mean`
        full = difflib.SequenceMatcher(None, word, name).ratio()
        stem = difflib.SequenceMatcher(None, word, name.split("_")[0]).ratio()
        return max(full, stem), full

    def takes_param(name):
        return bool(get_operator(kind, name).params)

    parts = []
    # `[forall = pmeen(2)]`: an operator that takes a parameter first
    pools = ([n for n in names if takes_param(n)], names) if with_param else (names,)
    for pool in pools:
        best = max(pool, key=score, default=None)
        if best is not None and score(best)[0] >= 0.6:
            parts.append(f"did you mean '{best}'?")
            break
    # `[forall = pmean]`: a name of another connective's operator
    other = [k for k in ops.KINDS if k != kind
             and (word in ops.available_operators(k) or word in ops.operator_aliases(k))]
    if other:
        parts.append(f"'{word}' is {'an' if other[0][0] in 'aeiou' else 'a'} {other[0]} operator")
    if len(parts) == 2:
        return f"{parts[0]} ({parts[1]})"
    return parts[0] if parts else None


def _unchecked(f) -> bool:
    if isinstance(f, ast.Quantified):
        return (len(f.sorts) != len(f.variables) or _unchecked(f.body)
                or (f.guard is not None and _unchecked(f.guard)))
    if isinstance(f, ast.Not):
        return _unchecked(f.operand)
    if isinstance(f, (ast.And, ast.Or)):  # (a chain's operands found in a loop)
        return any(_unchecked(g) for g in ast.chain_operands(f))
    if isinstance(f, (ast.Implies, ast.Iff)):
        return _unchecked(f.left) or _unchecked(f.right)
    return False


# ------------------------------------------------------------------ the cache
def _semantics_key(semantics):
    if semantics is None or isinstance(semantics, (str, Semantics)):
        return semantics
    raise SemanticsError(f"semantics must be a Semantics, a preset name or None, got {semantics!r}")


@lru_cache(maxsize=128)
def _compile_text(text: str, source: str, semantics, base_dir: Optional[str], version,
                  where: str, generation: int):
    from .checker import check
    from .parser import parse

    program = check(parse(text, source, base_dir=base_dir))
    theory = compile_program(program, semantics)
    # The included files as read (absolute path, text): the cache key holds the main
    # text only, so a hit is checked against them (an edited include recompiles).
    theory._includes = tuple((os.path.abspath(name), t) for name, t in program.texts[1:])
    return theory


_GENERATIONS: Dict[tuple, int] = {}  # key -> how often its includes changed under it


def _includes_current(theory) -> bool:
    for path, text in getattr(theory, "_includes", ()):
        try:
            if Path(path).read_text(encoding="utf-8") != text:
                return False
        except (OSError, UnicodeDecodeError):
            return False  # (recompiling reports the problem with its place)
    return True


@lru_cache(maxsize=128)
def _compile_ast(program: ast.Program, semantics, version):
    return compile_program(program, semantics)


def _registry_version():
    from . import semantics as sem_mod
    return (ops.registry_version(), sem_mod.registry_version())


def compile(text_or_program: Union[str, ast.Program], semantics=None, source: str = "<string>",
            base_dir: Union[str, os.PathLike, None] = None):
    """Compile rule text (or a checked ``ast.Program``) into a :class:`Theory`.

    ``semantics``: a :class:`Semantics`, a preset name, or None (the file's
    ``semantics`` line, else ``product``). ``source`` names the text in
    errors; includes resolve relative to ``base_dir`` (default: the
    directory of ``source`` when it is a path). Cached: the same (text,
    source, semantics) returns the same Theory while the files it includes
    are unchanged.
    """
    key = _semantics_key(semantics)
    if isinstance(text_or_program, ast.Program):
        return _compile_ast(text_or_program, key, _registry_version())
    if not isinstance(text_or_program, str):
        raise FuzzyLogicError(f"compile needs rule text or an ast.Program, "
                              f"got {type(text_or_program).__name__}")
    bd = None if base_dir is None else str(base_dir)
    # where includes resolve, absolute: the same text compiled from another folder
    # may include other files
    from .parser import include_dir, include_path

    where = os.path.abspath(include_dir(str(source), bd))
    # (the include search path too: another registered folder may hold another file)
    args = (text_or_program, str(source), key, bd, _registry_version(), (where, include_path()))
    theory = _compile_text(*args, _GENERATIONS.get(args, 0))
    if not _includes_current(theory):
        _GENERATIONS[args] = _GENERATIONS.get(args, 0) + 1
        theory = _compile_text(*args, _GENERATIONS[args])
    return theory


def load(path: Union[str, os.PathLike], semantics=None):
    """Read and compile a rule file (includes relative to it)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IncludeError(f"cannot read rule file: {e}", source=str(p)) from e
    return compile(text, semantics, source=str(p), base_dir=p.parent)


def cache_info():
    """Hits and misses of the text compile cache (``functools`` CacheInfo)."""
    return _compile_text.cache_info()


def cache_clear():
    _compile_text.cache_clear()
    _compile_ast.cache_clear()
    _GENERATIONS.clear()
