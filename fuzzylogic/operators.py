"""Fuzzy-logic operators (../shared/SEMANTICS.md) and the operator registry.

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
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .errors import SemanticsError

__all__ = [
    "KINDS",
    "OperatorSpec",
    "TruthValue",
    "register_operator",
    "get_operator",
    "available_operators",
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
def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def _epsneg(dtype: torch.dtype) -> float:
    """The gap between 1 and the largest float below it."""
    return torch.finfo(dtype).eps / 2


def _log_tiny(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).tiny)


def safe_log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` floored at ``log(tiny)``: finite value and gradient at p = 0."""
    return torch.log(p.clamp_min(_tiny(p.dtype)))


def safe_log1m(p: torch.Tensor) -> torch.Tensor:
    """``log(1 - p)``: accurate near 0 (log1p), finite at p = 1.

    Without autograd the exact value is floored at ``log(tiny)``. With
    autograd, p is clamped to the largest float below 1 first (the log's
    gradient would otherwise be ``0 * inf``): ``log(1 - 1)`` then reads
    ``log(eps/2)`` (-16.6 in float32).
    """
    if p.requires_grad:
        return torch.log1p(-p.clamp_max(1.0 - _epsneg(p.dtype)))
    return torch.log1p(-p).clamp_min(_log_tiny(p.dtype))


class _Log1mExp(torch.autograd.Function):
    """``log(1 - exp(x))`` for x <= 0 (Mächler 2012), with a 3-kernel backward."""

    @staticmethod
    def forward(ctx, x):
        # x at 0 means p = 1: log(1 - p) floored like safe_log1m.
        xc = x.clamp_max(-torch.finfo(x.dtype).tiny)
        out = torch.where(xc > -_LN2, torch.log(-torch.expm1(xc)), torch.log1p(-torch.exp(xc)))
        out = out.clamp_min(_log_tiny(x.dtype))
        ctx.save_for_backward(xc)
        return out

    @staticmethod
    def backward(ctx, grad):
        (xc,) = ctx.saved_tensors
        # d/dx log(1 - e^x) = -1 / expm1(-x); bounded near x = 0 by the floor on -x.
        dx = -1.0 / torch.expm1(-xc.clamp_max(-_epsneg(xc.dtype)))
        return grad * dx


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, exact over the whole range."""
    return _Log1mExp.apply(x)


# ---------------------------------------------------------------- truth values
def _force(x):
    return x() if callable(x) else x


class TruthValue:
    """A truth tensor with lazily computed ``p``, ``lp = log p``, ``l1p = log(1 - p)``.

    Give any subset of the three (tensors or zero-argument callables); the
    others are derived on first use: ``p`` from ``lp`` (exp) or ``l1p``
    (``-expm1``), ``lp`` from ``l1p`` (log1mexp, exact) or ``p`` (floored
    log), ``l1p`` from ``lp`` or ``p``. Each is computed at most once.
    """

    __slots__ = ("_p", "_lp", "_l1p")

    def __init__(self, p=None, lp=None, l1p=None):
        if p is None and lp is None and l1p is None:
            raise ValueError("a TruthValue needs p, lp or l1p")
        self._p, self._lp, self._l1p = p, lp, l1p

    @property
    def p(self) -> torch.Tensor:
        v = self._p
        if v is None:
            v = torch.exp(self.lp) if self._lp is not None else -torch.expm1(self.l1p)
        elif callable(v):
            v = v()
        self._p = v
        return v

    @property
    def lp(self) -> torch.Tensor:
        v = self._lp
        if v is None:
            v = log1mexp(self.l1p) if self._l1p is not None else safe_log(self.p)
        elif callable(v):
            v = v()
        self._lp = v
        return v

    @property
    def l1p(self) -> torch.Tensor:
        v = self._l1p
        if v is None:
            v = log1mexp(self.lp) if self._lp is not None else safe_log1m(self.p)
        elif callable(v):
            v = v()
        self._l1p = v
        return v

    # constructors
    @staticmethod
    def from_p(p) -> "TruthValue":
        return TruthValue(p=p)

    @staticmethod
    def from_logits(z: torch.Tensor) -> "TruthValue":
        """Sigmoid fused with its logs: ``log σ(z) = -softplus(-z)``."""
        nn_f = torch.nn.functional
        return TruthValue(p=lambda: torch.sigmoid(z), lp=lambda: nn_f.logsigmoid(z),
                          l1p=lambda: nn_f.logsigmoid(-z))

    @staticmethod
    def from_log(lp) -> "TruthValue":
        return TruthValue(lp=lp)

    # transformations
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TruthValue":
        """Apply a shape operation (select, permute, expand...) to every component."""
        def lift(slot):
            def thunk():
                return fn(getattr(self, slot))
            return thunk
        out = TruthValue(p=lift("p"))
        out._lp, out._l1p = lift("lp"), lift("l1p")
        return out

    def negate(self) -> "TruthValue":
        """Standard negation: exact, swaps the two logs."""
        return TruthValue(p=lambda: 1.0 - self.p, lp=lambda: self.l1p, l1p=lambda: self.lp)

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
    wraps it). ``check``: validates parameters, raises SemanticsError.
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
                      aliases: Sequence[str] = (), overwrite: bool = False):
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
                                             handles_empty, check, (fn.__doc__ or "").strip())
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
    return TruthValue(p=lambda: torch.minimum(x.p, y.p), lp=lambda: torch.minimum(x.lp, y.lp),
                      l1p=lambda: torch.maximum(x.l1p, y.l1p))


@register_operator("conjunction", "godel", log_form=_and_min_log, aliases=("min",))
def and_godel(a, b):
    """min(a, b)."""
    return torch.minimum(a, b)


def _and_prod_log(x, y):
    return TruthValue(p=lambda: x.p * y.p, lp=lambda: x.lp + y.lp)


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
    return TruthValue(p=lambda: torch.maximum(x.p, y.p), lp=lambda: torch.maximum(x.lp, y.lp),
                      l1p=lambda: torch.minimum(x.l1p, y.l1p))


@register_operator("disjunction", "godel", log_form=_or_max_log, aliases=("max",))
def or_godel(a, b):
    """max(a, b)."""
    return torch.maximum(a, b)


def _or_probsum_log(x, y):
    return TruthValue(p=lambda: x.p + y.p - x.p * y.p, l1p=lambda: x.l1p + y.l1p)


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
    return TruthValue(p=lambda: torch.maximum(1.0 - x.p, y.p),
                      lp=lambda: torch.maximum(x.l1p, y.lp), l1p=lambda: torch.minimum(x.lp, y.l1p))


@register_operator("implication", "kleene_dienes", log_form=_kd_log)
def implies_kleene_dienes(a, b):
    """max(1 - a, b)."""
    return torch.maximum(1.0 - a, b)


def _reichenbach_log(x, y):
    # 1 - a(1 - b) = not(a and not b): log(1 - I) = log a + log(1 - b).
    return TruthValue(p=lambda: 1.0 - x.p + x.p * y.p, l1p=lambda: x.lp + y.l1p)


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


# ---------------------------------------------------------------- quantifiers
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
        # Homogeneity, pmean(a) = m pmean(a / m) with m = max a, keeps a^p from
        # underflowing when every a is small (p = 6, a = 1e-7 in float32).
        nd = a.dim()
        src = a if w is None else torch.where(w > 0, a, torch.zeros_like(a))
        m = torch.amax(src, dim=dims, keepdim=True)
        m = torch.where(m > 0, m, torch.ones_like(m))
        ap = (a / m).pow(p)
        if w is None:
            den = torch.full((), float(_reduced_count(a, dims)), dtype=a.dtype, device=a.device)
            s = ap.sum(dims) / den
        else:
            den = w.sum(dims)
            s = (w * ap).sum(dims) / den.clamp_min(_tiny(a.dtype))
        y = s.pow(1.0 / p) * m.reshape(s.shape)
        ctx.save_for_backward(a, w, y, den)
        ctx.p, ctx.dims = p, dims
        return y

    @staticmethod
    def backward(ctx, gy):
        a, w, y, den = ctx.saved_tensors
        p, nd = ctx.p, a.dim()
        tiny = _tiny(a.dtype)
        yk, gk = _keep(y, ctx.dims, nd), _keep(gy, ctx.dims, nd)
        # y <= tiny is an underflow: treat as 0 so that a / y stays finite.
        pos = yk > tiny
        ysafe = torch.where(pos, yk, torch.ones_like(yk))
        r = a / ysafe
        dk = (_keep(den, ctx.dims, nd) if den.dim() else den).clamp_min(tiny)
        ga = gw = None
        if ctx.needs_input_grad[0]:
            if p == 1.0:
                ga = (gk / dk).expand_as(a) if w is None else gk * w / dk
            elif w is None:
                ga = gk * r.pow(p - 1.0) / dk  # r <= n^(1/p): no overflow
            else:
                # (r (w/Σw)^(1/(p-1)))^(p-1) = r^(p-1) w/Σw <= 1: bounded base, no inf * 0.
                ga = gk * (r * (w / dk).pow(1.0 / (p - 1.0))).pow(p - 1.0)
        if w is not None and ctx.needs_input_grad[1]:
            # dy/dw = y (r^p - 1) / (p Σw): a root singularity where y -> 0; kept finite.
            gw = gk * ysafe * (r.pow(p) - 1.0) / (p * dk)
            gw = torch.where(pos, torch.nan_to_num(gw, nan=0.0, posinf=0.0, neginf=0.0),
                             torch.zeros_like(gw))
        if ga is not None and ga.shape != a.shape:
            ga = ga.expand_as(a) if ga.dim() == a.dim() else ga
        return ga, gw, None, None


def pmean(a: torch.Tensor, dims, weight: Optional[torch.Tensor], p: float) -> torch.Tensor:
    """Weighted power mean ((Σ w a^p) / Σ w)^(1/p), stable at 0; 0 for an empty domain."""
    return _PMean.apply(a, weight, float(p), tuple(dims))


@register_operator("forall", "min", handles_empty=True)
def forall_min(a, dims, weight):
    """min_i a_i; soft guard g: min_i max(a_i, 1 - g_i) (1 on an empty domain)."""
    if weight is not None:
        a = torch.maximum(a, 1.0 - weight)
    return torch.amin(a, dim=dims)


@register_operator("exists", "max", handles_empty=True)
def exists_max(a, dims, weight):
    """max_i a_i; soft guard g: max_i min(a_i, g_i) (0 on an empty domain)."""
    if weight is not None:
        a = torch.minimum(a, weight)
    return torch.amax(a, dim=dims)


def _weighted_mean(a, dims, weight, empty):
    if weight is None:
        return a.mean(dims)
    den = weight.sum(dims)
    m = (weight * a).sum(dims) / den.clamp_min(_tiny(a.dtype))
    return torch.where(den > 0, m, torch.full_like(m, empty))


@register_operator("forall", "mean", handles_empty=True)
def forall_mean(a, dims, weight):
    """(1/n) Σ a_i; soft guard g: Σ g a / Σ g (1 on an empty domain)."""
    return _weighted_mean(a, dims, weight, FORALL_IDENTITY)


@register_operator("exists", "mean", handles_empty=True)
def exists_mean(a, dims, weight):
    """(1/n) Σ a_i; soft guard g: Σ g a / Σ g (0 on an empty domain)."""
    return _weighted_mean(a, dims, weight, EXISTS_IDENTITY)


@register_operator("exists", "pmean", params=(("p", 2.0),), stable=("pi0",), handles_empty=True,
                   check=_check_p)
def exists_pmean(a, dims, weight, p=2.0):
    """((1/n) Σ a_i^p)^(1/p) (LTN's ∃); weighted by the guard; 0 on an empty domain."""
    return pmean(a, dims, weight, p)


@register_operator("forall", "pmean_error", params=(("p", 2.0),), stable=("pi1",),
                   handles_empty=True, check=_check_p)
def forall_pmean_error(a, dims, weight, p=2.0):
    """1 - ((1/n) Σ (1 - a_i)^p)^(1/p) (LTN's ∀); weighted; 1 on an empty domain."""
    return 1.0 - pmean(1.0 - a, dims, weight, p)


def _forall_product_log(x, dims, weight):
    def lp():
        l = x.lp
        return (l if weight is None else weight * l).sum(dims)
    return TruthValue(lp=lp)


@register_operator("forall", "product", log_form=_forall_product_log, handles_empty=True)
def forall_product(a, dims, weight):
    """Π a_i = exp Σ log a_i; soft guard g: Π a_i^g_i (1 on an empty domain)."""
    return _forall_product_log(TruthValue(p=a), dims, weight).p


def _exists_probsum_log(x, dims, weight):
    def l1p():
        l = x.l1p
        return (l if weight is None else weight * l).sum(dims)
    return TruthValue(l1p=l1p)


@register_operator("exists", "probsum", log_form=_exists_probsum_log, handles_empty=True)
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
        den = weight.sum(dims)
        s = (weight * e).sum(dims) / den.clamp_min(_tiny(a.dtype))
        ok = den > 0
    c = c.reshape(s.shape)
    out = (c + torch.log(s.clamp_min(_tiny(a.dtype)))) / tau
    return out, ok


@register_operator("exists", "log_sum_exp", params=(("tau", 10.0),), handles_empty=True,
                   check=_check_tau, aliases=("lse",))
def exists_log_sum_exp(a, dims, weight, tau=10.0):
    """Smooth max (1/τ) log((1/n) Σ e^{τ a_i}): in [mean, max], -> max as τ grows; 0 if empty."""
    out, ok = _lse(a, dims, weight, tau)
    out = out.clamp(0.0, 1.0)  # rounding only: the value lies in [min a, max a]
    return out if ok is None else torch.where(ok, out, torch.zeros_like(out))


@register_operator("forall", "log_sum_exp", params=(("tau", 10.0),), handles_empty=True,
                   check=_check_tau, aliases=("lse",))
def forall_log_sum_exp(a, dims, weight, tau=10.0):
    """Smooth min, the dual 1 - LSE_τ(1 - a); 1 on an empty domain."""
    return 1.0 - exists_log_sum_exp(1.0 - a, dims, weight, tau)
