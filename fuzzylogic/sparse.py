"""Sparse guards: a guarded quantifier's body evaluated only where it matters.

On the CPU, outside torch.compile, a quantifier whose operator ignores
zero-weight cells (``OperatorSpec.ignores_zero_weight``: every built-in one)
evaluates an elementwise body only on the rows of its scope where its weight
(guard x domain masks, x the weight of enclosing quantifiers) is nonzero, and
fills the rest with its identity. Values are those of the dense evaluation bit
for bit; gradients too, up to the order in which the gradient of an atom
broadcast over the compacted axes is summed. Row counts are data-dependent
(a host sync on a GPU, a graph break under torch.compile): there the compiler
stays dense. :func:`sparse_guards` turns it off (tests, timing).

The compiler (``compiler.QuantNode``) decides when; this module does the
compaction: find the rows, evaluate the body in a :class:`Compacted` context
whose atoms gather their dense values, scatter the result back.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Optional, Tuple

import torch

from . import operators as ops
from .operators import TruthValue

__all__ = ["sparse_guards", "enabled", "domains_full", "compacted", "Compacted"]

SPARSE_GUARDS = True  # module switch; see sparse_guards()
# A body is compacted on rows of at most _ROW_CELLS cells (the trailing scope
# axes): index_select moves whole rows, so finding and moving them is cheap;
# finer rows would cost more than they save. It is compacted when the kept
# share of the scope is below _MAX_SHARE (gathering and scattering cost the rest).
_ROW_CELLS = 4096
_MAX_SHARE = 0.5


@contextlib.contextmanager
def sparse_guards(enabled: bool = True):
    """Turn the sparse evaluation of guarded quantifier bodies on or off within a block
    (``with fuzzylogic.sparse.sparse_guards(False): ...`` forces the dense path;
    also importable from ``fuzzylogic.compiler``)."""
    global SPARSE_GUARDS
    old = SPARSE_GUARDS
    SPARSE_GUARDS = bool(enabled)
    try:
        yield
    finally:
        SPARSE_GUARDS = old


def enabled(ctx) -> bool:
    # Data-dependent row counts: a host sync on a GPU, a graph break under torch.compile.
    return SPARSE_GUARDS and ctx.on_cpu and not ops._is_compiling()


def domains_full(ctx, vars) -> bool:
    """Whether the domain masks of these variables' sorts are nonzero everywhere
    (cached per call: one count per sort, not one per quantifier)."""
    cache = ctx._full_domains
    for v in vars:
        full = cache.get(v.sort)
        if full is None:
            m = ctx.domains.get(v.sort)
            full = m is None or int(torch.count_nonzero(m)) == m.numel()
            cache[v.sort] = full
        if not full:
            return False
    return True


def _rows(keep, k: int, n: int, full) -> Tuple[torch.Tensor, int]:
    """(mask over the first k scope axes, nonzero on the rows kept; number of rows
    kept): a row is kept where every factor of ``keep`` has a nonzero cell in
    it. (A superset of the cells that matter: the extra cells are evaluated as
    in the dense path.) The mask is the factors' smallest row maximum, a float:
    the factors are >= 0, so it is nonzero exactly where all of them are, without
    a comparison and an ``&`` per factor (small ops dominate here)."""
    rowmask = None
    for f in keep:
        f = f.reshape(f.shape + (1,) * (n - f.dim()))
        dims = tuple(d for d in range(k, n) if f.shape[d] > 1)
        m = f.amax(dims) if dims else f  # amax: f >= 0, fast
        m = m.reshape(f.shape[:k])
        rowmask = m if rowmask is None else torch.minimum(rowmask, m)
    rows = math.prod(full[:k])
    return rowmask, int(torch.count_nonzero(rowmask)) * (rows // math.prod(rowmask.shape))


def compacted(q, ctx, keep, w, sizes, identity) -> Optional[TruthValue]:
    """q evaluated on the rows of its scope where ``keep`` holds (None where the
    dense evaluation is cheaper). Two ways:

    * rows = cells of the enclosing scope (k = outer_rank): the body and the
      reduction run on the kept cells only; the result is scattered into the
      enclosing scope with q's identity elsewhere (cells that do not matter,
      or where q's domain is empty: the identity is then q's exact value);
    * rows of at most _ROW_CELLS cells of q's own scope: the body runs on the
      kept rows and is scattered into the full scope with the identity, then
      reduced as in the dense path.
    """
    n = q.inner_rank
    full: Tuple[int, ...] = (ctx.B,)
    for sort in q.scope:
        full += ctx.sizes[sort]
    if len(full) != n or math.prod(full) == 0:
        return None
    k_out = q.outer_rank
    if k_out > 1:
        rowmask, cnt = _rows(keep, k_out, n, full)
        if cnt < _MAX_SHARE * math.prod(full[:k_out]):
            return _reduce_rows(q, ctx, rowmask, cnt, w, full, identity)
    k = next(k for k in range(1, n + 1) if math.prod(full[k:]) <= _ROW_CELLS)
    if k <= k_out:
        return None
    rowmask, cnt = _rows(keep, k, n, full)
    if cnt >= _MAX_SHARE * math.prod(full[:k]):
        return None
    body = _body_rows(q, ctx, rowmask, cnt, full, identity)
    return q.reduce(body, w, q.outer_rank, tuple(sizes), identity)


def _fills(identity, dtype):
    """Components (p, q, log p, log 1-p) of the identity: forall 1, exists 0."""
    tiny = ops._log_tiny(dtype)
    return (1.0, 0.0, 0.0, tiny) if identity == ops.FORALL_IDENTITY else (0.0, 1.0, tiny, 0.0)


def _scatter(val: TruthValue, sub, rowmask_shape, cnt, rest, fill, full_shape) -> TruthValue:
    """The components of ``val`` ([rows kept, *rest]) given to it, lazily scattered
    into [*rowmask_shape, *rest] filled with ``fill``; the others are derived
    after the scatter, as in the dense path."""
    rows = math.prod(rowmask_shape)
    lin = sub.rows(rowmask_shape)

    def lift(i):
        def get():
            t = val._get(i).expand((cnt,) + rest)
            out = torch.full((rows,) + rest, fill[i], dtype=t.dtype, device=t.device)
            return out.index_copy_(0, lin, t).view(full_shape)
        return get

    return TruthValue(*[lift(i) if g else None for i, g in enumerate(val._given)])


def _compact_body(q, ctx, rowmask, full) -> Tuple["Compacted", TruthValue]:
    """q's body evaluated on the kept rows (the first rowmask.dim() scope axes)."""
    k = rowmask.dim()
    sub = Compacted(ctx, torch.nonzero(rowmask.expand(full[:k])), k)
    return sub, q.body(sub)


def _reduce_rows(q, ctx, rowmask, cnt, w, full, identity) -> TruthValue:
    k = q.outer_rank
    if cnt == 0:  # nothing matters, or every domain is empty: the identity
        return ctx.constant_value(identity, k)
    sub, body = _compact_body(q, ctx, rowmask, full)
    wc = None if w is None else sub.gather(w.reshape(w.shape + (1,) * (q.inner_rank - w.dim())))
    out = q.reduce(body, wc, 1, full[k:], identity)  # [rows kept]
    return _scatter(out, sub, full[:k], cnt, (), _fills(identity, ctx.dtype), full[:k])


def _body_rows(q, ctx, rowmask, cnt, full, identity) -> TruthValue:
    k = rowmask.dim()
    n = q.inner_rank
    if cnt == 0:  # nothing matters: the identity everywhere
        return ctx.constant_value(identity, n)
    sub, body = _compact_body(q, ctx, rowmask, full)
    # every component: the reduction asks for any of them
    val = TruthValue(*[(lambda i=i: body._get(i)) for i in range(4)])
    return _scatter(val, sub, full[:k], cnt, full[k:], _fills(identity, ctx.dtype), full)


class Compacted:
    """A context for an elementwise body evaluated on selected rows: tensors
    have the layout [rows, *scope axes k...] instead of [*scope axes]."""

    compacted = True

    def __init__(self, parent, idx: torch.Tensor, k: int):
        self.parent, self.idx, self.k = parent, idx, k
        self.atoms: Dict[object, TruthValue] = {}
        self._lin: Dict[tuple, torch.Tensor] = {}
        self._terms: Dict[tuple, torch.Tensor] = {}
        self._cols: Optional[Tuple[torch.Tensor, ...]] = None

    def rows(self, lead) -> torch.Tensor:
        """Row indices into a tensor whose first k axes have sizes ``lead``
        (size 1 = broadcast: index 0)."""
        lead = tuple(lead)
        lin = self._lin.get(lead)
        if lin is None:
            m = 1
            for d in reversed(range(self.k)):
                if lead[d] > 1:
                    term = self._term(d, m)
                    lin = term if lin is None else lin + term
                m *= lead[d]
            self._lin[lead] = lin
        return lin

    def _term(self, d: int, m: int) -> torch.Tensor:
        """idx[:, d] * m, shared by the leads that have it (the few small ops of
        building row indices cost more than moving the rows)."""
        t = self._terms.get((d, m))
        if t is None:
            if self._cols is None:
                self._cols = self.idx.unbind(1)  # one op for every column
            t = self._cols[d] if m == 1 else self._cols[d] * m
            self._terms[(d, m)] = t
        return t

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        k = self.k
        lead, rest = t.shape[:k], t.shape[k:]
        if all(s == 1 for s in lead):
            return t.reshape((1,) + tuple(rest))
        return t.reshape((-1,) + tuple(rest)).index_select(0, self.rows(lead))

    def gather_atom(self, node) -> TruthValue:
        v = self.atoms.get(node.key)
        if v is None:
            # The dense atom's given components, gathered lazily (a fact's sigmoid
            # and logs are computed once per call, for every rule). (Computing
            # them from the gathered fact instead is cheaper where no other rule
            # needs them, but changes the order in which autograd sums the
            # fact's gradients: not bit-identical to the dense path.)
            v = node(self.parent).map(self.gather)
            self.atoms[node.key] = v
        return v

    def constant_value(self, value: float, rank: int) -> TruthValue:
        return self.parent.constant_value(value, rank - self.k + 1)
