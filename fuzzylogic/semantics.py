"""Semantics: which operator interprets each connective, and the loss.

    sem = Semantics(conjunction="product", implication="reichenbach",
                    forall=("pmean_error", 2), exists=("pmean", 2), loss="linear")
    sem = Semantics.preset("log_product", exists=("log_sum_exp", 8))

Operator references are a name (``"product"``) or a tuple ``(name, param)``;
they are normalised to ``(name, *params)`` with the registered defaults
filled in, so equal semantics compare (and hash, for the compile cache)
equal. ``disjunction=None`` means the dual of the conjunction (the
disjunction registered under the same name, else the De Morgan dual).

Precedence when compiling (most specific wins): a rule's per-connective
options > the rule's ``semantics = NAME`` > ``compile(..., semantics=)`` >
the file's ``semantics NAME`` line > the ``product`` preset.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Dict, Mapping, Optional, Tuple, Union

from .errors import SemanticsError
from .operators import get_operator

__all__ = ["Semantics", "register_preset", "get_preset", "available_presets", "resolve",
           "CONNECTIVES", "LOSSES"]

OpRef = Union[str, Tuple]
CONNECTIVES = ("conjunction", "disjunction", "negation", "implication", "equivalence",
               "forall", "exists")
LOSSES = ("linear", "log")


def _norm_ref(kind: str, ref) -> Optional[tuple]:
    if ref is None:
        return None
    if isinstance(ref, str):
        name, params = ref, ()
    elif isinstance(ref, (tuple, list)) and ref and isinstance(ref[0], str):
        name, params = ref[0], tuple(ref[1:])
    else:
        raise SemanticsError(f"{kind}: expected an operator name or (name, parameter), got {ref!r}")
    spec = get_operator(kind, name)
    if len(params) > len(spec.params):
        raise SemanticsError(f"{kind} operator {spec.name!r} takes {len(spec.params)} parameter(s), "
                             f"got {len(params)}: {params!r}")
    full = list(params) + [d for _, d in spec.params[len(params):]]
    if any(v is None for v in full):
        missing = [n for (n, _), v in zip(spec.params, full) if v is None]
        raise SemanticsError(f"{kind} operator {spec.name!r} needs parameter(s) {missing}")
    # ints and floats compare equal; store floats so pmean(2) == pmean(2.0) hash alike
    full = tuple(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                 for v in full)
    if spec.check is not None:
        spec.check(*full)
    return (spec.name,) + full


@dataclass(frozen=True)
class Semantics:
    """One operator per connective, plus the loss form.

    ``stable=True`` applies LTNtorch's projections (inputs mapped into
    [eps, 1] or [0, 1 - eps], eps = ``eps``) before the operators that LTN
    stabilises (product ∧, probsum ∨, Reichenbach, Goguen, pmean,
    pmean_error); the default computes the exact operator in a stable form.
    """

    conjunction: OpRef = "product"
    disjunction: Optional[OpRef] = None
    negation: OpRef = "standard"
    implication: OpRef = "reichenbach"
    equivalence: OpRef = "biimplication"
    forall: OpRef = ("pmean_error", 2)
    exists: OpRef = ("pmean", 2)
    loss: str = "linear"
    stable: bool = False
    eps: float = 1e-4

    def __post_init__(self):
        for kind in CONNECTIVES:
            object.__setattr__(self, kind, _norm_ref(kind, getattr(self, kind)))
        if self.loss not in LOSSES:
            raise SemanticsError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (0.0 < float(self.eps) < 0.5):
            raise SemanticsError(f"eps must lie in (0, 0.5), got {self.eps!r}")
        object.__setattr__(self, "stable", bool(self.stable))
        object.__setattr__(self, "eps", float(self.eps))

    @staticmethod
    def preset(name: str, **overrides) -> "Semantics":
        """A registered preset, with some fields replaced."""
        base = get_preset(name)
        return base.replace(**overrides) if overrides else base

    def replace(self, **overrides) -> "Semantics":
        names = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise SemanticsError(f"unknown semantics field(s) {bad}; fields are: {sorted(names)}")
        return replace(self, **overrides)

    def describe(self) -> str:
        def show(ref):
            if ref is None:
                return "dual"
            return ref[0] + (f"({', '.join(f'{v:g}' for v in ref[1:])})" if len(ref) > 1 else "")
        parts = [f"{k}={show(getattr(self, k))}" for k in CONNECTIVES]
        parts.append(f"loss={self.loss}")
        if self.stable:
            parts.append(f"stable(eps={self.eps:g})")
        return ", ".join(parts)


_PRESETS: Dict[str, Semantics] = {}
_VERSION = [0]


def registry_version() -> int:
    return _VERSION[0]


def register_preset(name: str, semantics: Semantics, *, overwrite: bool = False) -> Semantics:
    """Make ``semantics`` available by ``name`` (rule files: ``semantics NAME``)."""
    if not isinstance(semantics, Semantics):
        raise SemanticsError(f"register_preset({name!r}, ...) needs a Semantics, got {semantics!r}")
    if not name.isidentifier():
        raise SemanticsError(f"preset name {name!r} is not an identifier")
    if name in _PRESETS and not overwrite:
        raise SemanticsError(f"preset {name!r} exists (pass overwrite=True to replace it)")
    _PRESETS[name] = semantics
    _VERSION[0] += 1
    return semantics


def get_preset(name: str) -> Semantics:
    if name not in _PRESETS:
        raise SemanticsError(f"unknown semantics {name!r}; presets: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def available_presets():
    return sorted(_PRESETS)


register_preset("product", Semantics())  # LTN (exact operators)
register_preset("ltn", Semantics(stable=True))  # LTNtorch's defaults, eps projections on
register_preset("log_product", Semantics(forall="product", exists="probsum", loss="log"))  # SBR
register_preset("godel", Semantics(conjunction="godel", implication="kleene_dienes",
                                   forall="min", exists="max"))
register_preset("lukasiewicz", Semantics(conjunction="lukasiewicz", implication="lukasiewicz",
                                         forall="mean", exists="max"))

DEFAULT_PRESET = "product"


def _as_semantics(s) -> Optional[Semantics]:
    if s is None or isinstance(s, Semantics):
        return s
    if isinstance(s, str):
        return get_preset(s)
    raise SemanticsError(f"semantics must be a Semantics or a preset name, got {s!r}")


def resolve(call=None, file_default: Optional[str] = None,
            options: Union[Mapping[str, object], Tuple[Tuple[str, object], ...]] = ()) -> Semantics:
    """The semantics of one rule (see the module doc for the precedence).

    ``call``: a Semantics, a preset name or None; ``file_default``: the
    file's ``semantics NAME``; ``options``: the rule's options.
    """
    sem = _as_semantics(call)
    if sem is None:
        sem = get_preset(file_default) if file_default else get_preset(DEFAULT_PRESET)
    opts = dict(options)
    if "semantics" in opts:
        sem = get_preset(str(opts["semantics"]))
    over = {k: v for k, v in opts.items() if k in CONNECTIVES or k == "loss"}
    if "conjunction" in over and "disjunction" not in over:
        over["disjunction"] = None  # keep ∨ the dual of an overridden ∧
    return sem.replace(**over) if over else sem
