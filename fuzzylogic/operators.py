"""Fuzzy-logic operators (docs/SEMANTICS.md) and the operator registry.

Every operator is a plain tensor function. Many also have an exact *log form*
working on :class:`TruthValue` objects, which lazily carry ``p``, ``log p``
and ``log(1 - p)``; the compiler uses a log form when one is registered, so a
rule whose loss is ``-log truth`` never leaves log space where the maths
allows (product ∧ = sum of logs, probsum/Reichenbach via ``log1mexp``, product
∀ = Σ log, logits via ``logsigmoid``).

Signatures (``*params`` are the operator's parameters, e.g. ``p`` of pmean):

* ``negation``: ``fn(a)``
* ``conjunction``, ``disjunction``, ``implication``, ``equivalence``:
  ``fn(a, b, *params)``
* ``forall``, ``exists``: ``fn(a, dims, weight, *params)`` reduces the
  (trailing) axes ``dims`` of ``a``; ``weight`` is ``None`` or a tensor of
  ``a``'s shape with values in [0, 1] (guards and domain masks; 0 = not in
  the domain). Weighted forms follow SEMANTICS.md.

A user adds an operator with one decorated function::

    @fuzzylogic.register_operator("conjunction", "hamacher")
    def hamacher(a, b):
        return a * b / (a + b - a * b).clamp_min(1e-12)

Numerical contract: values 0 and 1 exactly give finite values and finite
gradients everywhere (no NaN/inf), logs are floored at ``log(tiny)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .errors import SemanticsError

__all__ = [
    "KINDS",
    "OperatorSpec",
    "TruthValue",
    "register_operator",
    "get_operator",
    "available_operators",
    "operator_aliases",
    "registry_version",
    "log1mexp",
    "safe_log",
    "safe_log1m",
    "pmean",
    "FORALL_IDENTITY",
    "EXISTS_IDENTITY",
]

KINDS = ("negation", "conjunction", "disjunction", "implication", "equivalence", "forall", "exists")
FORALL_IDENTITY = 1.0  # value of ∀ over an empty domain
EXISTS_IDENTITY = 0.0  # value of ∃ over an empty domain
_LN2 = math.log(2.0)


# ---------------------------------------------------------------- numerics
# dtype -> (tiny, log tiny): torch.finfo costs about as much as a small op's
# Python side, and these are read several times in every loss
_FLOORS: Dict[torch.dtype, Tuple[float, float]] = {}


def _floors(dtype: torch.dtype) -> Tuple[float, float]:
    v = _FLOORS.get(dtype)
    if v is None:
        tiny = torch.finfo(dtype).tiny
        v = _FLOORS[dtype] = (tiny, math.log(tiny))
    return v


def _tiny(dtype: torch.dtype) -> float:
    return _floors(dtype)[0]


def _log_tiny(dtype: torch.dtype) -> float:
    return _floors(dtype)[1]


def safe_log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` floored at ``log(tiny)``: finite value and gradient at p = 0."""
    return torch.log(p.clamp_min(_tiny(p.dtype)))


def safe_log1m(p: torch.Tensor) -> torch.Tensor:
    """``log(1 - p)``: accurate near 0 (log1p), floored at ``log(tiny)`` at p = 1,
    with or without autograd (the floor must not depend on whether a value
    needs a gradient: the same rule would otherwise read another loss where a
    term happens to be constant, e.g. an empty domain), and a zero gradient
    there: the log is taken of a safe 0 where p >= 1 (its gradient would
    otherwise be ``0 * inf``)."""
    if p.requires_grad:
        below = p < 1.0
        safe = torch.where(below, p, torch.zeros_like(p))
        return torch.where(below, torch.log1p(-safe), torch.full_like(p, _log_tiny(p.dtype)))
    return torch.log1p(-p).clamp_min(_log_tiny(p.dtype))


def _is_compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - old torch
        return False


def _cpu_eager(t: torch.Tensor) -> bool:
    """Whether the CPU-only paths may run for ``t``: on the CPU (where reading a size
    or a value from a tensor is free) and outside torch.compile (which cannot trace
    data-dependent sizes). GPU and compiled code take the dense, sync-free paths.
    (``is_cpu``: ``device.type`` costs several times more.)"""
    return t.is_cpu and not _is_compiling()


class _Log1mExp(torch.autograd.Function):
    """``log(1 - exp(x))`` for x <= 0 (Mächler 2012).

    Two branches: ``log(-expm1(x))`` for x > -ln 2, ``log1p(-exp(x))`` below.
    On a GPU (and under torch.compile) both are computed everywhere and
    selected. On the CPU the second is computed everywhere and the first
    (two slow transcendental passes, and the floor) only where it applies,
    usually a minority (a truth below 1/2): the same values in about half the
    passes. The gradient ``-e^x / (1 - e^x)`` reuses ``-e^x`` from the forward
    pass below -ln 2 (where ``1 - e^x >= 1/2`` is exact) and is
    ``-exp(x - out)`` above."""

    @staticmethod
    def forward(ctx, x):
        tiny, floor = _floors(x.dtype)
        # (data-dependent sizes: a host sync on a GPU, and not traceable by torch.compile)
        ctx.subset = _cpu_eager(x)
        if not ctx.subset:
            # x at 0 means p = 1: log(1 - p) is floored like safe_log1m.
            # Out of place on purpose: under torch.compile, torch 2.11 (seen on CPU
            # and on an H200) returns zero gradients for an autograd.Function whose
            # forward mutates intermediates in place (tests/test_operators.py checks).
            xc = x.clamp_max(-tiny)
            near = torch.log(-torch.expm1(xc))  # accurate for x > -ln 2
            far = torch.log1p(-torch.exp(xc))  # accurate below
            out = torch.where(xc > -_LN2, near, far).clamp_min(floor)
            ctx.compiling = _is_compiling()
            # (compiled: the backward needs x alone, so that the compiler neither
            # keeps nor recomputes the two branches for it)
            ctx.save_for_backward(xc, None if ctx.compiling else out)
            return out
        x = x.contiguous()  # (row indices below address x, en and out alike)
        en = torch.exp(x).neg_()  # -e^x
        out = torch.log1p(en)  # accurate below -ln 2 (the rest is replaced)
        # The first branch on the few rows that hold cells above -ln 2, found by a
        # max per row, merged into them. (On the CPU, masked_select / nonzero over
        # the whole tensor cost more than the rest of log1mexp.)
        n = x.shape[-1] if x.dim() and x.numel() else 1
        hot = _hot_rows(x.view(-1, n))
        near = xs = vs = None
        if hot is not None:
            xr = x.view(-1, n).index_select(0, hot)
            near = xr > -_LN2
            xs = xr.clamp_max(-tiny)
            vs = torch.expm1(xs).neg_().log_().clamp_min_(floor)
            rows = out.view(-1, n)
            rows.index_copy_(0, hot, torch.where(near, vs, rows.index_select(0, hot)))
        ctx.save_for_backward(en, hot, near, xs, vs)
        return out

    @staticmethod
    def backward(ctx, grad):
        # d/dx log(1 - e^x) = -e^x / (1 - e^x): exact, also near x = 0 where it is
        # large (a confident violation keeps its gradient); 0 where the value sits
        # on the floor, as for a clamp.
        if not ctx.subset:
            xc, out = ctx.saved_tensors
            if ctx.compiling:
                # -1 / expm1(-x), from x alone: the compiled backward kernel then
                # does not recompute the forward's two branches (4 transcendental
                # functions a cell); the value is floored only at x = -tiny.
                tiny = torch.finfo(xc.dtype).tiny
                d = torch.where(xc >= -tiny, torch.zeros_like(xc), torch.expm1(-xc).reciprocal())
                return -(d * grad)
            e = torch.exp(xc - out).masked_fill_(out <= _log_tiny(xc.dtype), 0.0)
            return e.mul_(grad).neg_()
        en, hot, near, xs, vs = ctx.saved_tensors
        d = en / (en + 1.0)
        if hot is not None:
            ds = torch.exp(xs - vs).neg_().masked_fill_(vs <= _log_tiny(vs.dtype), 0.0)
            rows = d.view(-1, near.shape[1])
            rows.index_copy_(0, hot, torch.where(near, ds, rows.index_select(0, hot)))
        return d.mul_(grad)


def _hot_rows(rows: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of the rows holding a cell above -ln 2 (None: there are none)."""
    if rows.numel() == 0:
        return None
    hot = (rows.amax(1) > -_LN2).nonzero().squeeze(1)
    return hot if hot.numel() else None  # (CPU only: the size is a free host read)


class _LogSigmoidFromBuffer(torch.autograd.Function):
    """``log σ(y)`` given ``exp(-|y|)`` (ATen's ``log_sigmoid_forward`` buffer, which
    is the same for y and -y): ATen's CPU formula ``min(y, 0) - log1p(buffer)``
    and its backward, so the bits equal ``logsigmoid(y)``'s (tests check)."""

    @staticmethod
    def forward(ctx, y, buffer):
        ctx.save_for_backward(y, buffer)
        return torch.clamp_max(y, 0.0) - torch.log1p(buffer)

    @staticmethod
    def backward(ctx, grad):
        y, buffer = ctx.saved_tensors
        return torch.ops.aten.log_sigmoid_backward(grad, y, buffer), None


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, exact over the whole range."""
    return _Log1mExp.apply(x)


# ---------------------------------------------------------------- truth values
_P, _Q, _LP, _L1P = 0, 1, 2, 3


def _one_minus(t):
    return 1.0 - t


def _neg_expm1(t):
    return -torch.expm1(t)


# How to get a missing component from a given one, in order of preference
# (exact forms first: log1mexp of a log beats the log of a rounded 1 - p).
_DERIVE = {
    _P: ((_Q, _one_minus), (_LP, torch.exp), (_L1P, _neg_expm1)),
    _Q: ((_P, _one_minus), (_L1P, torch.exp), (_LP, _neg_expm1)),
    _LP: ((_L1P, lambda t: log1mexp(t)), (_P, lambda t: safe_log(t)), (_Q, lambda t: safe_log1m(t))),
    _L1P: ((_LP, lambda t: log1mexp(t)), (_Q, lambda t: safe_log(t)), (_P, lambda t: safe_log1m(t))),
}


class TruthValue:
    """A truth tensor with lazy ``p``, ``q = 1 - p``, ``lp = log p``, ``l1p = log(1 - p)``.

    Give any of the four (tensors or zero-argument callables); the others are
    derived on first use from the given ones (``1 - x``, ``exp``, ``-expm1``,
    ``log1mexp`` or a floored log) and each is computed at most once. ``q``
    makes negation free and keeps ``1 - σ(z) = σ(-z)`` exact; the logs keep
    products of many truths from underflowing.
    """

    __slots__ = ("_s", "_given")

    def __init__(self, p=None, q=None, lp=None, l1p=None):
        self._s = [p, q, lp, l1p]
        self._given = given = (p is not None, q is not None, lp is not None, l1p is not None)
        if given == (False, False, False, False):
            raise SemanticsError("a TruthValue needs p, q, lp or l1p")

    def _wants_log1mexp(self) -> bool:
        """Whether ``lp`` is yet to be derived from ``l1p`` by log1mexp."""
        return self._s[_LP] is None and self._given[_L1P]  # (_DERIVE's first choice)

    def _get(self, i: int) -> torch.Tensor:
        v = self._s[i]
        if v is None:
            for j, fn in _DERIVE[i]:
                if self._given[j]:
                    v = fn(self._get(j))
                    break
        elif callable(v):
            v = v()
        self._s[i] = v
        return v

    @property
    def p(self) -> torch.Tensor:
        return self._get(_P)

    @property
    def q(self) -> torch.Tensor:
        """1 - p."""
        return self._get(_Q)

    @property
    def lp(self) -> torch.Tensor:
        """log p (floored at log(tiny))."""
        return self._get(_LP)

    @property
    def l1p(self) -> torch.Tensor:
        """log(1 - p) (floored at log(tiny))."""
        return self._get(_L1P)

    # constructors
    @staticmethod
    def from_p(p) -> "TruthValue":
        return TruthValue(p=p)

    @staticmethod
    def from_logits(z: torch.Tensor) -> "TruthValue":
        """Sigmoid fused with its logs: ``log σ(z) = -softplus(-z)``."""
        nn_f = torch.nn.functional
        # q = 1 - σ(z) (derived, shares σ(z)); the logs are exact.
        if _is_compiling():
            # log σ(±z) = min(±z, 0) - log1p(exp(-|z|)), written out so that the
            # compiler computes exp and log1p once for both (it does not match
            # |-z| with |z| in two logsigmoids); minimum splits the gradient at 0
            # (clamp would not): d/dz log σ(z) = 1/2 there, as it should.
            zero = z.new_zeros(())
            shared: List[torch.Tensor] = []

            def log_sigmoid_shared(y):
                if not shared:
                    shared.append(torch.log1p(torch.exp(-torch.abs(z))))
                return torch.minimum(y, zero) - shared[0]

            return TruthValue(p=lambda: torch.sigmoid(z), lp=lambda: log_sigmoid_shared(z),
                              l1p=lambda: log_sigmoid_shared(-z))
        if not _cpu_eager(z):
            return TruthValue(p=lambda: torch.sigmoid(z), lp=lambda: nn_f.logsigmoid(z),
                              l1p=lambda: nn_f.logsigmoid(-z))
        # CPU: log σ(z) and log σ(-z) share exp(-|z|), which ATen's kernel keeps
        # for the backward pass; the second log takes it from the first (the
        # same values and gradients as a second logsigmoid, one pass fewer).
        kept: List[torch.Tensor] = []

        def log_sigmoid(y):
            if kept:
                return _LogSigmoidFromBuffer.apply(y, kept[0])
            out, buffer = torch.ops.aten.log_sigmoid_forward(y)
            kept.append(buffer)
            return out

        return TruthValue(p=lambda: torch.sigmoid(z), lp=lambda: log_sigmoid(z),
                          l1p=lambda: log_sigmoid(-z))

    @staticmethod
    def from_log(lp) -> "TruthValue":
        return TruthValue(lp=lp)

    # transformations
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TruthValue":
        """Apply a shape operation (select, permute, expand...) to every component.

        Components given to ``self`` are mapped; the others are derived after
        the map (cheaper after a select)."""
        # (written out: this runs for every atom and quantifier of every call)
        g, get = self._given, self._get
        return TruthValue((lambda: fn(get(0))) if g[0] else None, (lambda: fn(get(1))) if g[1] else None,
                          (lambda: fn(get(2))) if g[2] else None, (lambda: fn(get(3))) if g[3] else None)

    def view(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TruthValue":
        """Like :meth:`map` for a view that keeps every element (permute,
        unsqueeze): all four components are taken from ``self``, where each is
        computed at most once, so several views of one value share that work."""
        get = self._get
        return TruthValue(lambda: fn(get(0)), lambda: fn(get(1)), lambda: fn(get(2)), lambda: fn(get(3)))

    def negate(self) -> "TruthValue":
        """Standard negation: exact and free (swaps p with q and the two logs)."""
        get = self._get
        return TruthValue(lambda: get(_Q), lambda: get(_P), lambda: get(_L1P), lambda: get(_LP))

    def stabilised(self, which: Optional[str], eps: float) -> "TruthValue":
        """LTN's projections: pi0 maps [0,1] onto [eps, 1], pi1 onto [0, 1-eps]."""
        if which is None:
            return self
        if which == "pi0":
            return TruthValue(p=lambda: (1.0 - eps) * self.p + eps)
        if which == "pi1":
            return TruthValue(p=lambda: (1.0 - eps) * self.p)
        raise SemanticsError(f"unknown stabiliser {which!r} (pi0 or pi1)")


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class OperatorSpec:
    """A registered operator.

    ``params``: ((name, default), ...) for the operator's parameters.
    ``stable``: per input, "pi0", "pi1" or None: LTN's projection applied when
    a semantics has ``stable=True``. ``handles_empty``: a quantifier that
    itself returns its identity on an all-zero weight (otherwise the compiler
    wraps it). ``ignores_zero_weight``: a quantifier whose value and gradient
    do not depend on the body where the weight is 0 (every built-in one): on the
    CPU the compiler then evaluates the body only where the weight is nonzero
    and fills the rest with the identity. ``check``: validates parameters,
    raises SemanticsError.
    """

    kind: str
    name: str
    fn: Callable
    log_form: Optional[Callable] = None
    params: Tuple[Tuple[str, object], ...] = ()
    stable: Tuple[Optional[str], ...] = ()
    handles_empty: bool = False
    check: Optional[Callable] = field(default=None, compare=False)
    doc: str = ""
    ignores_zero_weight: bool = False

    def defaults(self) -> tuple:
        return tuple(d for _, d in self.params)


_REGISTRY: Dict[str, Dict[str, OperatorSpec]] = {k: {} for k in KINDS}
_ALIASES: Dict[str, Dict[str, str]] = {k: {} for k in KINDS}
_VERSION = [0]  # bumped on every registration: part of the compile cache key


def registry_version() -> int:
    return _VERSION[0]


def register_operator(kind: str, name: str, *, log_form: Optional[Callable] = None,
                      params: Sequence = (), stable: Sequence[Optional[str]] = (),
                      handles_empty: bool = False, check: Optional[Callable] = None,
                      aliases: Sequence[str] = (), overwrite: bool = False,
                      ignores_zero_weight: bool = False):
    """Decorator: register ``fn`` as operator ``name`` of ``kind`` (see module doc).

    ``params`` lists the parameter names, or (name, default) pairs, that
    follow the tensors in ``fn``'s signature; ``log_form`` (optional) takes
    and returns :class:`TruthValue` objects. Registering an existing name is a
    :class:`SemanticsError` unless ``overwrite=True``.
    """
    if kind not in KINDS:
        raise SemanticsError(f"unknown operator kind {kind!r}; kinds are: {', '.join(KINDS)}")
    if not name.isidentifier():
        raise SemanticsError(f"operator name {name!r} is not an identifier")
    norm = tuple((p, None) if isinstance(p, str) else (str(p[0]), p[1]) for p in params)

    def deco(fn):
        taken = name in _REGISTRY[kind] or name in _ALIASES[kind]
        if taken and not overwrite:
            raise SemanticsError(f"{kind} operator {name!r} is already registered "
                                 f"(pass overwrite=True to replace it)")
        _ALIASES[kind].pop(name, None)
        _REGISTRY[kind][name] = OperatorSpec(kind, name, fn, log_form, norm, tuple(stable),
                                             handles_empty, check, (fn.__doc__ or "").strip(),
                                             bool(ignores_zero_weight))
        for a in aliases:
            _ALIASES[kind][a] = name
        _VERSION[0] += 1
        return fn

    return deco


def get_operator(kind: str, name: str) -> OperatorSpec:
    """The spec of operator ``name`` of ``kind``; a SemanticsError lists the known ones."""
    if kind not in KINDS:
        raise SemanticsError(f"unknown operator kind {kind!r}; kinds are: {', '.join(KINDS)}")
    reg = _REGISTRY[kind]
    name = _ALIASES[kind].get(name, name)
    if name not in reg:
        known = ", ".join(sorted(reg) + sorted(_ALIASES[kind]))
        raise SemanticsError(f"unknown {kind} operator {name!r}; known: {known}")
    return reg[name]


def available_operators(kind: Optional[str] = None):
    """Names of registered operators: a list for ``kind``, else a dict kind -> list."""
    if kind is not None:
        if kind not in KINDS:
            raise SemanticsError(f"unknown operator kind {kind!r}; kinds are: {', '.join(KINDS)}")
        return sorted(_REGISTRY[kind])
    return {k: sorted(v) for k, v in _REGISTRY.items()}


def operator_aliases(kind: str) -> Dict[str, str]:
    """The other names of ``kind``'s operators: alias -> registered name."""
    if kind not in KINDS:
        raise SemanticsError(f"unknown operator kind {kind!r}; kinds are: {', '.join(KINDS)}")
    return dict(sorted(_ALIASES[kind].items()))


# ---------------------------------------------------------------- negation
@register_operator("negation", "standard", log_form=lambda x: x.negate())
def not_standard(a):
    """1 - a."""
    return 1.0 - a


@register_operator("negation", "godel")
def not_godel(a):
    """Strict (Gödel) negation: 1 if a == 0 else 0 (zero gradient; for evaluation)."""
    return (a == 0).to(a.dtype)


# ---------------------------------------------------------------- conjunctions
def _and_min_log(x, y):
    return TruthValue(p=lambda: torch.minimum(x.p, y.p), q=lambda: torch.maximum(x.q, y.q),
                      lp=lambda: torch.minimum(x.lp, y.lp), l1p=lambda: torch.maximum(x.l1p, y.l1p))


@register_operator("conjunction", "godel", log_form=_and_min_log, aliases=("min",))
def and_godel(a, b):
    """min(a, b)."""
    return torch.minimum(a, b)


def _and_prod_log(x, y):
    return TruthValue(p=lambda: x.p * y.p, lp=lambda: _sum_of_logs(x, y))


def _sum_of_logs(x: "TruthValue", y: "TruthValue") -> torch.Tensor:
    """``x.lp + y.lp``. Where both are still to be derived from their ``l1p`` by
    log1mexp (a product of two Reichenbach implications: a biimplication),
    eagerly, one log1mexp of the two stacked: the same values and gradients,
    with half of its fixed cost (its small ops and autograd node dominate
    on the CPU)."""
    if x._wants_log1mexp() and y._wants_log1mexp() and not _is_compiling():
        a, b = x.l1p, y.l1p
        if a.shape == b.shape and a.dtype == b.dtype and a.device == b.device:
            la, lb = log1mexp(torch.stack((a, b))).unbind(0)
            return la + lb
    return x.lp + y.lp


@register_operator("conjunction", "product", log_form=_and_prod_log, stable=("pi0", "pi0"))
def and_product(a, b):
    """a * b."""
    return a * b


@register_operator("conjunction", "lukasiewicz", aliases=("luk",))
def and_lukasiewicz(a, b):
    """max(0, a + b - 1)."""
    return torch.clamp_min(a + b - 1.0, 0.0)


# ---------------------------------------------------------------- disjunctions
def _or_max_log(x, y):
    return TruthValue(p=lambda: torch.maximum(x.p, y.p), q=lambda: torch.minimum(x.q, y.q),
                      lp=lambda: torch.maximum(x.lp, y.lp), l1p=lambda: torch.minimum(x.l1p, y.l1p))


@register_operator("disjunction", "godel", log_form=_or_max_log, aliases=("max",))
def or_godel(a, b):
    """max(a, b)."""
    return torch.maximum(a, b)


def _or_probsum_log(x, y):
    # 1 - (1 - a)(1 - b) = a + b - ab: q is a product, its log a sum.
    return TruthValue(q=lambda: x.q * y.q, l1p=lambda: x.l1p + y.l1p)


@register_operator("disjunction", "product", log_form=_or_probsum_log, stable=("pi1", "pi1"),
                   aliases=("probsum",))
def or_probsum(a, b):
    """a + b - a * b (probabilistic sum)."""
    return a + b - a * b


@register_operator("disjunction", "lukasiewicz", aliases=("luk",))
def or_lukasiewicz(a, b):
    """min(1, a + b)."""
    return torch.clamp_max(a + b, 1.0)


# ---------------------------------------------------------------- implications
def _kd_log(x, y):
    return TruthValue(p=lambda: torch.maximum(x.q, y.p), q=lambda: torch.minimum(x.p, y.q),
                      lp=lambda: torch.maximum(x.l1p, y.lp), l1p=lambda: torch.minimum(x.lp, y.l1p))


@register_operator("implication", "kleene_dienes", log_form=_kd_log)
def implies_kleene_dienes(a, b):
    """max(1 - a, b)."""
    return torch.maximum(1.0 - a, b)


def _reichenbach_log(x, y):
    # 1 - a + ab = not(a and not b): 1 - I = a (1 - b), log(1 - I) = log a + log(1 - b).
    return TruthValue(q=lambda: x.p * y.q, l1p=lambda: x.lp + y.l1p)


@register_operator("implication", "reichenbach", log_form=_reichenbach_log, stable=("pi0", "pi1"))
def implies_reichenbach(a, b):
    """1 - a + a * b."""
    return 1.0 - a + a * b


@register_operator("implication", "lukasiewicz", aliases=("luk",))
def implies_lukasiewicz(a, b):
    """min(1, 1 - a + b)."""
    return torch.clamp_max(1.0 - a + b, 1.0)


@register_operator("implication", "godel")
def implies_godel(a, b):
    """1 if a <= b else b."""
    return torch.where(a <= b, torch.ones_like(b), b)


@register_operator("implication", "goguen", stable=("pi0", None))
def implies_goguen(a, b):
    """1 if a <= b else b / a."""
    le = a <= b
    # The unselected branch must not divide by zero: its 0 * inf gradient is NaN.
    safe_a = torch.where(le, torch.ones_like(a), a)
    return torch.where(le, torch.ones_like(b), b / safe_a)


# ---------------------------------------------------------------- equivalence
# "biimplication" (the default) is built by the compiler from the rule's own
# operators: T(I(a, b), I(b, a)), as LTNtorch's Equiv(and_op, implies_op).
@register_operator("equivalence", "biimplication")
def iff_biimplication(a, b):  # pragma: no cover - the compiler composes T and I instead
    """T(I(a, b), I(b, a)) with the rule's conjunction T and implication I."""
    raise SemanticsError("biimplication is composed by the compiler")


@register_operator("equivalence", "lukasiewicz", aliases=("biresiduum",))
def iff_lukasiewicz(a, b):
    """1 - |a - b| (Łukasiewicz biresiduum)."""
    return 1.0 - torch.abs(a - b)


def _agreement_log(x, y):
    # Each of the two terms is a product: a sum of logs; their sum is a logaddexp,
    # exact where a truth is 0 or 1 (its log is floored) and one fused kernel.
    return TruthValue(p=lambda: x.p * y.p + x.q * y.q, q=lambda: x.p * y.q + x.q * y.p,
                      lp=lambda: torch.logaddexp(x.lp + y.lp, x.l1p + y.l1p),
                      l1p=lambda: torch.logaddexp(x.lp + y.l1p, x.l1p + y.lp))


@register_operator("equivalence", "agreement", log_form=_agreement_log,
                   aliases=("probabilistic",))
def iff_agreement(a, b):
    """a·b + (1 − a)(1 − b): the probability that a and b agree, read as independent
    events (BoxInst's pairwise term P(y_i = y_j), Tian et al. 2021). Unlike the
    product biimplication it is 1/2, not 9/16, at a = b = 1/2, and its log form
    costs one logaddexp instead of two log(1 − e^x)."""
    return a * b + (1.0 - a) * (1.0 - b)


# ---------------------------------------------------------------- quantifiers
def _safe_den(den: torch.Tensor):
    """(denominator safe to divide by, mask of non-empty domains).

    A total weight below machine epsilon counts as an empty domain: dividing by
    it would make the weight gradients of a weighted mean explode."""
    ok = den > torch.finfo(den.dtype).eps
    return torch.where(ok, den, torch.ones_like(den)), ok


def _reduced_count(a: torch.Tensor, dims) -> int:
    n = 1
    for d in dims:
        n *= a.shape[d]
    return n


def _keep(t: torch.Tensor, dims, ndim: int) -> torch.Tensor:
    """Re-insert the reduced (trailing) dims of ``t`` as size 1."""
    return t.reshape(t.shape + (1,) * (ndim - t.dim()))


def _check_p(p):
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1):
        raise SemanticsError(f"pmean needs a finite p >= 1, got {p!r}")


def _check_share(q):
    if not (isinstance(q, (int, float)) and math.isfinite(q) and 0 < q <= 1):
        raise SemanticsError(f"at_least needs a share 0 < q <= 1, got {q!r}")


def _check_share_below_1(q):
    if not (isinstance(q, (int, float)) and math.isfinite(q) and 0 <= q < 1):
        raise SemanticsError(f"at_most needs a share 0 <= q < 1, got {q!r}")


def _check_tau(tau):
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise SemanticsError(f"log_sum_exp needs a finite tau > 0, got {tau!r}")


class _PMean(torch.autograd.Function):
    """((Σ w a^p) / Σ w)^(1/p) with a stable gradient.

    The root has an infinite derivative at 0; chained with the inner a^p the
    gradient is ``(w / Σw) (a / y)^(p-1)``, which is bounded because
    ``y >= (w_i / Σw)^(1/p) a_i``. Computing it in that form avoids the
    ``0 * inf`` of autograd. At y = 0 (all weighted a = 0) the gradient is 0.
    """

    @staticmethod
    def forward(ctx, a, w, p, dims):
        # (One could rescale by max a against underflow of a^p, which only bites
        # for p >= 4 and every a < 1e-7 in float32; it costs two more passes.)
        ap = a.pow(p)
        if w is None:
            den = torch.full((), float(_reduced_count(a, dims)), dtype=a.dtype, device=a.device)
            ok = None
            s = ap.sum(dims) / den
        else:
            den, ok = _safe_den(w.sum(dims))
            s = torch.where(ok, (w * ap).sum(dims) / den, torch.zeros_like(den))
        y = s.pow(1.0 / p)
        ctx.save_for_backward(a, w, y, den, ok)
        ctx.p, ctx.dims = p, dims
        return y

    @staticmethod
    def backward(ctx, gy):
        a, w, y, den, ok = ctx.saved_tensors
        p, nd, dims = ctx.p, a.dim(), ctx.dims
        dt = a.dtype
        yk, gk = _keep(y, dims, nd), _keep(gy, dims, nd)
        dk = _keep(den, dims, nd) if den.dim() else den  # >= eps, or 1 where empty (y = 0)
        # y below ~tiny * 2^20 is an underflow: the gradient is taken as 0 there,
        # which keeps every factor below finite (no inf, no 0 * inf).
        pos = yk > _tiny(dt) * 1048576.0
        ysafe = torch.where(pos, yk, torch.ones_like(yk))
        zero = torch.zeros_like(yk)
        ga = gw = None
        if ctx.needs_input_grad[0]:
            if p == 1.0:  # the (weighted) mean
                c = gk / dk if ok is None else torch.where(_keep(ok, dims, nd), gk / dk, zero)
                ga = c.expand_as(a) if w is None else w * c
            elif p == 2.0:  # the default: one or two passes
                c = torch.where(pos, gk / (ysafe * dk), zero)
                ga = a * c if w is None else (w * a) * c
            else:
                # ((a / y)^(p-1) w) gk / Σw: bounded for w > 0; clamped so that
                # w = 0 elements give 0 rather than inf * 0.
                r = (a * (1.0 / ysafe)).clamp_max(torch.finfo(dt).max ** (1.0 / (p - 1.0)) / 2.0)
                rp = r.pow(p - 1.0)
                c = torch.where(pos, gk / dk, zero)
                ga = rp * c if w is None else (rp * w) * c
        if w is not None and ctx.needs_input_grad[1]:
            # dy/dw = y (r^p - 1) / (p Σw): a root singularity where y -> 0; kept finite.
            r = a / ysafe
            gw = gk * ysafe * (r.pow(p) - 1.0) / (p * dk)
            gw = torch.where(pos, torch.nan_to_num(gw, nan=0.0, posinf=0.0, neginf=0.0),
                             torch.zeros_like(gw))
        return _fit(ga, a), _fit(gw, w), None, None


def _fit(g: Optional[torch.Tensor], like: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A gradient computed with broadcasting, brought to its input's shape."""
    if g is None or like is None or g.shape == like.shape:
        return g
    full = torch.broadcast_shapes(g.shape, like.shape)
    return g.expand(full).sum_to_size(like.shape)


def pmean(a: torch.Tensor, dims, weight: Optional[torch.Tensor], p: float) -> torch.Tensor:
    """Weighted power mean ((Σ w a^p) / Σ w)^(1/p), stable at 0; 0 for an empty domain."""
    return _PMean.apply(a, weight, float(p), tuple(dims))


class _GuardedExtreme(torch.autograd.Function):
    """The guarded max/min of a truth ``a`` in [0, 1] under a weight ``w`` in
    [0, 1] that needs no gradient: max_i min(a_i, w_i), or min_i max(a_i, 1 - w_i).

    Values and gradients are those of the two ``torch.where`` selections and
    ``amax``/``amin`` (the gradient of a cell: its share of the tied extremes
    where ``a`` passes the guard and ``w > 0``, else 0), in fewer passes: for
    a, w >= 0, min(a, w) is already 0 where w = 0 (max(a, 1 - w) is 1), and the
    tie count is a float sum (a boolean one costs several passes on the CPU).
    Out of place on purpose (torch.compile, see _Log1mExp)."""

    @staticmethod
    def forward(ctx, a, w, dims, is_max):
        if is_max:
            a2 = torch.minimum(a, w)
            out = torch.amax(a2, dim=dims, keepdim=True)
        else:
            a2 = torch.maximum(a, 1.0 - w)
            out = torch.amin(a2, dim=dims, keepdim=True)
        ctx.save_for_backward(a, w, a2, out)
        ctx.dims, ctx.is_max = dims, is_max
        return out.squeeze(dims) if dims else out

    @staticmethod
    def backward(ctx, grad):
        a, w, a2, out = ctx.saved_tensors
        dt = grad.dtype
        if _cpu_eager(a2):
            # Masks as 0./1. floats: on the CPU a comparison writing floats is
            # several times faster than one writing bools (and than & on bools).
            # Laid out as a2 (empty_like), so as ``a``: where ``a`` is a permuted
            # view, the gradient then comes out in its memory order, and the ops
            # before and after do not run strided (about 2x slower).
            hit = torch.eq(a2, out, out=torch.empty_like(a2, dtype=dt))
            if ctx.is_max:
                passes = torch.le(a, w, out=torch.empty_like(a2, dtype=dt))
            else:
                passes = torch.ge(a, 1.0 - w, out=torch.empty_like(a2, dtype=dt))
            sel = hit * passes * torch.gt(w, 0, out=torch.empty(w.shape, dtype=dt))
            cnt = hit.sum(ctx.dims, keepdim=True)
        else:
            hit = a2 == out  # the tied extremes: usually one cell per reduced row
            passes = (a <= w) if ctx.is_max else (a >= 1.0 - w)
            sel = (hit & passes & (w > 0)).to(dt)
            cnt = hit.sum(ctx.dims, keepdim=True, dtype=dt)
        return _fit(grad.reshape(out.shape) / cnt * sel, a), None, None, None


def _guarded_extreme(a, dims, weight, is_max):
    """max_i min(a_i, g_i) (``is_max``) or min_i max(a_i, 1 - g_i), with zero
    gradient where g = 0."""
    if dims and not weight.requires_grad and a.dtype == weight.dtype:
        return _GuardedExtreme.apply(a, weight, tuple(dims), is_max)
    if is_max:
        m = torch.where(a <= weight, a, weight)  # min(a, g), zero gradient where g = 0
        return torch.amax(torch.where(weight > 0, m, torch.zeros_like(m)), dim=dims)
    # max(a, 1 - g), but constant (zero gradient) outside the domain, g = 0
    m = torch.where(a >= 1.0 - weight, a, 1.0 - weight)
    return torch.amin(torch.where(weight > 0, m, torch.ones_like(m)), dim=dims)


@register_operator("forall", "min", handles_empty=True, ignores_zero_weight=True)
def forall_min(a, dims, weight):
    """min_i a_i; soft guard g: min_i max(a_i, 1 - g_i) (1 on an empty domain)."""
    if weight is not None:
        return _guarded_extreme(a, dims, weight, False)
    return torch.amin(a, dim=dims)


@register_operator("exists", "max", handles_empty=True, ignores_zero_weight=True)
def exists_max(a, dims, weight):
    """max_i a_i; soft guard g: max_i min(a_i, g_i) (0 on an empty domain)."""
    if weight is not None:
        return _guarded_extreme(a, dims, weight, True)
    return torch.amax(a, dim=dims)


def _weighted_mean(a, dims, weight, empty):
    if weight is None:
        return a.mean(dims)
    den, ok = _safe_den(weight.sum(dims))
    m = (weight * a).sum(dims) / den
    return torch.where(ok, m, torch.full_like(m, empty))


@register_operator("forall", "mean", handles_empty=True, ignores_zero_weight=True)
def forall_mean(a, dims, weight):
    """(1/n) Σ a_i; soft guard g: Σ g a / Σ g (1 on an empty domain)."""
    return _weighted_mean(a, dims, weight, FORALL_IDENTITY)


@register_operator("exists", "mean", handles_empty=True, ignores_zero_weight=True)
def exists_mean(a, dims, weight):
    """(1/n) Σ a_i; soft guard g: Σ g a / Σ g (0 on an empty domain)."""
    return _weighted_mean(a, dims, weight, EXISTS_IDENTITY)


@register_operator("exists", "pmean", params=(("p", 2.0),), stable=("pi0",), handles_empty=True,
                   check=_check_p, ignores_zero_weight=True)
def exists_pmean(a, dims, weight, p=2.0):
    """((1/n) Σ a_i^p)^(1/p) (LTN's ∃); weighted by the guard; 0 on an empty domain."""
    return pmean(a, dims, weight, p)


@register_operator("forall", "pmean_error", params=(("p", 2.0),), stable=("pi1",),
                   handles_empty=True, check=_check_p, ignores_zero_weight=True,
                   log_form=lambda x, dims, weight, p=2.0: _pmean_error_log(x, dims, weight, p))
def forall_pmean_error(a, dims, weight, p=2.0):
    """1 - ((1/n) Σ (1 - a_i)^p)^(1/p) (LTN's ∀); weighted; 1 on an empty domain."""
    return 1.0 - pmean(1.0 - a, dims, weight, p)


def _pmean_error_log(x, dims, weight, p=2.0):
    return TruthValue(q=lambda: pmean(x.q, dims, weight, p))  # works on 1 - a directly


def _weighted_sum(x: torch.Tensor, weight: Optional[torch.Tensor], dims) -> torch.Tensor:
    """Σ over ``dims`` of ``weight * x`` (weight None: 1).

    Where ``x`` is a permuted view (an atom in another variable order than its
    fact's), it is reduced in its memory order, and the result permuted back:
    the same sums, but the backward pass then hands ``x`` a gradient in its
    own layout, not a strided one that every elementwise op before it would
    traverse about twice as slowly (outside torch.compile, which picks its own
    layouts)."""
    n = x.dim()
    if x.is_contiguous() or n < 2 or _is_compiling():
        return (x if weight is None else weight * x).sum(dims)
    order = sorted(range(n), key=lambda d: -x.stride(d))  # memory order, outermost first
    lm = x.permute(order)
    if not lm.is_contiguous():  # (not a permutation of a dense tensor)
        return (x if weight is None else weight * x).sum(dims)
    if weight is not None:
        weight = weight.reshape((1,) * (n - weight.dim()) + tuple(weight.shape)).permute(order)
    red = set(d % n for d in dims)
    out = (lm if weight is None else weight * lm).sum(tuple(i for i, d in enumerate(order) if d in red))
    kept = [d for d in order if d not in red]  # the result's axes, in memory order
    if kept != sorted(kept):
        out = out.permute(sorted(range(len(kept)), key=lambda i: kept[i]))
    return out


def _at_least(a, dims, weight, q, empty):
    # min(1, m / q): exactly satisfied (no loss, no gradient) from the share q on,
    # and q = 1 is the mean itself
    return torch.clamp(_weighted_mean(a, dims, weight, empty) / q, max=1.0)


@register_operator("forall", "at_least", params=("q",), handles_empty=True, check=_check_share,
                   ignores_zero_weight=True)
def forall_at_least(a, dims, weight, q):
    """min(1, m / q), m the (guard-weighted) mean of a: "for at least a share q of
    the domain" (Zadeh's relative quantifier); at_least(1) is the mean; 1 if empty."""
    return _at_least(a, dims, weight, q, FORALL_IDENTITY)


@register_operator("exists", "at_least", params=("q",), handles_empty=True, check=_check_share,
                   ignores_zero_weight=True)
def exists_at_least(a, dims, weight, q):
    """min(1, m / q), m the (guard-weighted) mean of a: "there is at least a share q
    of the domain where it holds"; 0 if empty."""
    return _at_least(a, dims, weight, q, EXISTS_IDENTITY)


@register_operator("forall", "at_most", params=("q",), handles_empty=True,
                   check=_check_share_below_1, ignores_zero_weight=True)
def forall_at_most(a, dims, weight, q):
    """min(1, (1 - m) / (1 - q)), m the (guard-weighted) mean of a: "for at most a
    share q of the domain", at_least(1 - q) of the negation; 1 if empty."""
    m = _weighted_mean(a, dims, weight, 0.0)  # (an empty domain: m = 0, truth 1)
    return torch.clamp((1.0 - m) / (1.0 - q), max=1.0)


def _forall_product_log(x, dims, weight):
    def lp():
        return _weighted_sum(x.lp, weight, dims)
    return TruthValue(lp=lp)


@register_operator("forall", "product", log_form=_forall_product_log, handles_empty=True,
                   ignores_zero_weight=True)
def forall_product(a, dims, weight):
    """Π a_i = exp Σ log a_i; soft guard g: Π a_i^g_i (1 on an empty domain)."""
    return _forall_product_log(TruthValue(p=a), dims, weight).p


def _exists_probsum_log(x, dims, weight):
    def l1p():
        return _weighted_sum(x.l1p, weight, dims)
    return TruthValue(l1p=l1p)


@register_operator("exists", "probsum", log_form=_exists_probsum_log, handles_empty=True,
                   ignores_zero_weight=True)
def exists_probsum(a, dims, weight):
    """1 - Π (1 - a_i); soft guard g: 1 - Π (1 - a_i)^g_i (0 on an empty domain)."""
    return _exists_probsum_log(TruthValue(p=a), dims, weight).p


def _lse(a, dims, weight, tau):
    """(1/τ) log((Σ w e^{τ a}) / Σ w): a smooth max between the mean and the max."""
    ta = tau * a
    fill = torch.finfo(a.dtype).min
    masked = ta if weight is None else torch.where(weight > 0, ta, torch.full_like(ta, fill))
    # Shift by the (detached) max: the shift cancels in value and gradient.
    c = torch.amax(masked, dim=dims, keepdim=True).detach()
    c = torch.where(c > fill, c, torch.zeros_like(c))
    e = torch.exp(masked - c)  # masked-out elements give exactly 0
    if weight is None:
        s = e.mean(dims)
        ok = None
    else:
        den, ok = _safe_den(weight.sum(dims))
        s = (weight * e).sum(dims) / den
    c = c.reshape(s.shape)
    out = (c + torch.log(s.clamp_min(_tiny(a.dtype)))) / tau
    return out, ok


@register_operator("exists", "log_sum_exp", params=(("tau", 10.0),), handles_empty=True,
                   check=_check_tau, aliases=("lse",), ignores_zero_weight=True)
def exists_log_sum_exp(a, dims, weight, tau=10.0):
    """Smooth max (1/τ) log((1/n) Σ e^{τ a_i}): in [mean, max], -> max as τ grows; 0 if empty."""
    out, ok = _lse(a, dims, weight, tau)
    out = out.clamp(0.0, 1.0)  # rounding only: the value lies in [min a, max a]
    return out if ok is None else torch.where(ok, out, torch.zeros_like(out))


@register_operator("forall", "log_sum_exp", params=(("tau", 10.0),), handles_empty=True,
                   check=_check_tau, aliases=("lse",), ignores_zero_weight=True)
def forall_log_sum_exp(a, dims, weight, tau=10.0):
    """Smooth min, the dual 1 - LSE_τ(1 - a); 1 on an empty domain."""
    return 1.0 - exists_log_sum_exp(1.0 - a, dims, weight, tau)
