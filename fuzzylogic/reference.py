"""A brute-force reference evaluator: plain Python loops over domain elements.

It reads the same checked AST and the same :class:`Semantics` as the
compiler but shares none of its code paths: facts become nested lists of
floats, every quantifier loops over the elements of its sorts, and the
built-in operators are written again below with :mod:`math` (the formulas
of ``docs/SEMANTICS.md``). It is slow by design (the test oracle; also
handy to check a small case by hand):

    truth = fuzzylogic.reference.evaluate(text, {"cup": cup, "disc": disc})
    # {"rule name": [truth of batch item 0, item 1, ...]}

Operators registered by users have no independent formula here; the
evaluator calls their tensor function on one float64 element at a time.
"""
from __future__ import annotations

import itertools
import math
import sys
from typing import Dict, List, Mapping, Optional

from . import ast
from .errors import FactError, SemanticsError
from .semantics import Semantics, _norm_ref, resolve

__all__ = ["evaluate", "loss", "OPERATORS"]


# ---------------------------------------------------------------- operators
# The documented floor of the log-space reductions: product ∀ is Π max(a, TINY)^w
# and probsum ∃ is 1 - Π max(1 - a, TINY)^w (TINY = the smallest normal float64),
# which keeps them continuous in soft guard weights w at exact 0 / 1 truths.
TINY = sys.float_info.min
# A total guard/domain weight below machine epsilon counts as an empty domain
# (mean, pmean, log_sum_exp), as in the compiled operators.
EPS = sys.float_info.epsilon


def _pi0(x, eps):
    return (1 - eps) * x + eps


def _pi1(x, eps):
    return (1 - eps) * x


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _and(name, a, b, eps):
    if name == "godel":
        return min(a, b)
    if name == "product":
        if eps:
            a, b = _pi0(a, eps), _pi0(b, eps)
        return a * b
    if name == "lukasiewicz":
        return max(0.0, a + b - 1.0)
    return None


def _or(name, a, b, eps):
    if name == "godel":
        return max(a, b)
    if name == "product":
        if eps:
            a, b = _pi1(a, eps), _pi1(b, eps)
        return a + b - a * b
    if name == "lukasiewicz":
        return min(1.0, a + b)
    return None


def _implies(name, a, b, eps):
    if name == "kleene_dienes":
        return max(1.0 - a, b)
    if name == "reichenbach":
        if eps:
            a, b = _pi0(a, eps), _pi1(b, eps)
        return 1.0 - a + a * b
    if name == "lukasiewicz":
        return min(1.0, 1.0 - a + b)
    if name == "godel":
        return 1.0 if a <= b else b
    if name == "goguen":
        if eps:
            a = _pi0(a, eps)
        return 1.0 if a <= b else b / a
    return None


def _forall(name, params, pairs, eps):
    """pairs: (value, weight) over every element of the domain."""
    if name == "pmean_error" and eps:
        pairs = [(_pi1(a, eps), w) for a, w in pairs]
    sw = sum(w for _, w in pairs)
    if name == "min":
        return min([max(a, 1.0 - w) for a, w in pairs], default=1.0)
    if name == "mean":
        return sum(w * a for a, w in pairs) / sw if sw > EPS else 1.0
    if name == "pmean_error":
        p = params[0]
        return 1.0 - (sum(w * (1.0 - a) ** p for a, w in pairs) / sw) ** (1.0 / p) if sw > EPS else 1.0
    if name == "product":
        return math.prod(max(a, TINY) ** w for a, w in pairs)
    if name == "log_sum_exp":
        return 1.0 - _lse([(1.0 - a, w) for a, w in pairs], params[0])
    if name == "at_least":
        return min(1.0, sum(w * a for a, w in pairs) / sw / params[0]) if sw > EPS else 1.0
    if name == "at_most":
        return min(1.0, (1.0 - sum(w * a for a, w in pairs) / sw) / (1.0 - params[0])) if sw > EPS else 1.0
    return None


def _exists(name, params, pairs, eps):
    if name == "pmean" and eps:
        pairs = [(_pi0(a, eps), w) for a, w in pairs]
    sw = sum(w for _, w in pairs)
    if name == "max":
        return max([min(a, w) for a, w in pairs], default=0.0)
    if name == "mean":
        return sum(w * a for a, w in pairs) / sw if sw > EPS else 0.0
    if name == "pmean":
        p = params[0]
        return (sum(w * a ** p for a, w in pairs) / sw) ** (1.0 / p) if sw > EPS else 0.0
    if name == "probsum":
        return 1.0 - math.prod(max(1.0 - a, TINY) ** w for a, w in pairs)
    if name == "log_sum_exp":
        return _lse(pairs, params[0])
    if name == "at_least":
        return min(1.0, sum(w * a for a, w in pairs) / sw / params[0]) if sw > EPS else 0.0
    return None


def _lse(pairs, tau):
    sw = sum(w for _, w in pairs)
    if sw <= EPS:
        return 0.0
    m = max(tau * a for a, w in pairs if w > 0)
    s = sum(w * math.exp(tau * a - m) for a, w in pairs) / sw
    return min(1.0, max(0.0, (m + math.log(s)) / tau))


OPERATORS = {
    "conjunction": ("godel", "product", "lukasiewicz"),
    "disjunction": ("godel", "product", "lukasiewicz"),
    "implication": ("kleene_dienes", "reichenbach", "lukasiewicz", "godel", "goguen"),
    "equivalence": ("biimplication", "lukasiewicz", "agreement"),
    "forall": ("min", "mean", "pmean_error", "product", "log_sum_exp", "at_least", "at_most"),
    "exists": ("max", "mean", "pmean", "probsum", "log_sum_exp", "at_least"),
}


def _registered_binary(kind, ref, a, b):
    import torch
    from .operators import get_operator
    spec = get_operator(kind, ref[0])
    t = spec.fn(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), *ref[1:])
    return float(t)


def _registered_quant(kind, ref, pairs):
    import torch
    from .operators import get_operator
    spec = get_operator(kind, ref[0])
    a = torch.tensor([x for x, _ in pairs], dtype=torch.float64)
    w = torch.tensor([x for _, x in pairs], dtype=torch.float64)
    if not pairs or float(w.sum()) <= 0:
        return 1.0 if kind == "forall" else 0.0
    return float(spec.fn(a, (0,), w, *ref[1:]))


# ---------------------------------------------------------------- evaluator
class _Eval:
    def __init__(self, program: ast.Program, facts: Mapping, domains: Mapping):
        self.program = program
        self.axes = {s.name: s.axes for s in program.sorts}
        self.preds = {p.name: p for p in program.predicates}
        self.consts = {c.name: c for c in program.constants}
        self.sizes: Dict[str, tuple] = {}
        self.data: Dict[str, list] = {}
        self.batch: Dict[str, int] = {}
        self.domains: Dict[str, list] = {}
        self.runtime: Dict[str, object] = {}
        self._softmax_cache: Dict[tuple, float] = {}
        B = 1
        for name, t in facts.items():
            if name in self.preds:
                shape = tuple(t.shape)
                d = 1
                for s in self.preds[name].args:
                    k = self.axes[s]
                    self.sizes.setdefault(s, shape[d:d + k])
                    if self.sizes[s] != shape[d:d + k]:
                        raise FactError(f"reference: fact '{name}' disagrees on sort {s}")
                    d += k
                self.data[name] = t.double().tolist() if hasattr(t, "double") else t
                self.batch[name] = shape[0]
                B = max(B, shape[0])
            elif name in self.consts:
                if isinstance(t, int):
                    self.runtime[name] = t
                else:
                    v = [int(x) for x in t.reshape(-1).tolist()]
                    self.runtime[name] = v
                    B = max(B, len(v))
            else:
                raise FactError(f"reference: unknown fact '{name}'")
        for s, m in (domains or {}).items():
            self.domains[s] = m.double().tolist()
            self.sizes.setdefault(s, tuple(m.shape[1:]))
            B = max(B, m.shape[0])
        self.B = B

    # elements of a sort: every index tuple
    def elements(self, sort):
        return itertools.product(*[range(n) for n in self.sizes[sort]])

    def fact_value(self, name, b, idx):
        row = self.data[name][b if self.batch[name] > 1 else 0]
        for i in idx:
            row = row[i]
        return float(row)

    def atom(self, f: ast.Atom, env, b):
        decl = self.preds[f.predicate]
        per_arg = []
        for term, sort in zip(f.args, decl.args):
            if term.name in env:
                idx = env[term.name]
                if term.offset:  # the neighbour, clamped to the axis (one-axis sorts)
                    idx = (min(max(idx[0] + term.offset, 0), self.sizes[sort][0] - 1),)
                per_arg.append(idx)
            else:
                c = self.consts[term.name]
                if c.index is not None:
                    per_arg.append((c.index,))
                else:
                    v = self.runtime[term.name]
                    per_arg.append((v if isinstance(v, int) else v[b if len(v) > 1 else 0],))
        idx = tuple(i for t in per_arg for i in t)
        x = self.fact_value(decl.name, b, idx)
        if decl.input == "prob":
            return x
        if decl.input == "logits":
            return _sigmoid(x)
        # softmax over the axes of argument `softmax_arg`, the others fixed
        a = decl.softmax_arg
        key = (decl.name, b, tuple(t for i, t in enumerate(per_arg) if i != a))
        lse = self._softmax_cache.get(key)
        if lse is None:
            vals = []
            for e in self.elements(decl.args[a]):
                args = list(per_arg)
                args[a] = e
                vals.append(self.fact_value(decl.name, b, tuple(i for t in args for i in t)))
            m = max(vals)
            lse = m + math.log(sum(math.exp(v - m) for v in vals))
            self._softmax_cache[key] = lse
        return math.exp(x - lse)

    def domain_weight(self, sort, b, e):
        m = self.domains.get(sort)
        if m is None:
            return 1.0
        row = m[b if len(m) > 1 else 0]
        for i in e:
            row = row[i]
        return float(row)

    def ev(self, f, env, b, sem: Semantics) -> float:
        eps = sem.eps if sem.stable else 0.0
        if isinstance(f, ast.Atom):
            return self.atom(f, env, b)
        if isinstance(f, ast.Truth):
            return float(f.value)
        if isinstance(f, ast.Not):
            a = self.ev(f.operand, env, b, sem)
            if sem.negation[0] == "standard":
                return 1.0 - a
            if sem.negation[0] == "godel":
                return 1.0 if a == 0 else 0.0
            import torch
            from .operators import get_operator
            return float(get_operator("negation", sem.negation[0]).fn(torch.tensor(a, dtype=torch.float64)))
        if isinstance(f, (ast.And, ast.Or)):
            # a long chain `a or b or ...`: pairwise, left to right, in a loop
            first, *rest = ast.chain_operands(f)
            a = self.ev(first, env, b, sem)
            for g in rest:  # (every link is of f's connective)
                a = self.binary(f, a, self.ev(g, env, b, sem), sem, eps)
            return a
        if isinstance(f, (ast.Implies, ast.Iff)):
            a = self.ev(f.left, env, b, sem)
            c = self.ev(f.right, env, b, sem)
            return self.binary(f, a, c, sem, eps)
        if isinstance(f, ast.Quantified):
            pairs = []
            for combo in itertools.product(*[list(self.elements(s)) for s in f.sorts]):
                env2 = dict(env)
                w = 1.0
                for v, s, e in zip(f.variables, f.sorts, combo):
                    env2[v] = e
                    w *= self.domain_weight(s, b, e)
                if f.guard is not None:
                    w *= self.ev(f.guard, env2, b, sem)
                pairs.append((self.ev(f.body, env2, b, sem), w))
            # the quantifier's own (completed: an AST may skip the checker), else the rule's
            ref = _norm_ref(f.kind, f.operator) if f.operator is not None else getattr(sem, f.kind)
            fn = _forall if f.kind == "forall" else _exists
            out = fn(ref[0], ref[1:], pairs, eps)
            return out if out is not None else _registered_quant(f.kind, ref, pairs)
        raise SemanticsError(f"reference: cannot evaluate {type(f).__name__}")

    def binary(self, f, a, c, sem, eps):
        if isinstance(f, ast.And):
            return self.conj(sem, a, c, eps)
        if isinstance(f, ast.Or):
            ref = sem.disjunction
            if ref is None:
                out = _or(sem.conjunction[0], a, c, eps)
                if out is None:
                    from .operators import get_operator
                    try:  # a registered disjunction of the same name, else the De Morgan dual
                        get_operator("disjunction", sem.conjunction[0])
                        return _registered_binary("disjunction", sem.conjunction, a, c)
                    except SemanticsError:
                        return 1.0 - self.conj(sem, 1.0 - a, 1.0 - c, eps)
                return out
            out = _or(ref[0], a, c, eps)
            return out if out is not None else _registered_binary("disjunction", ref, a, c)
        if isinstance(f, ast.Implies):
            return self.impl(sem, a, c, eps)
        # equivalence
        ref = sem.equivalence
        if ref[0] == "biimplication":
            return self.conj(sem, self.impl(sem, a, c, eps), self.impl(sem, c, a, eps), eps)
        if ref[0] == "lukasiewicz":
            return 1.0 - abs(a - c)
        if ref[0] == "agreement":
            return a * c + (1.0 - a) * (1.0 - c)
        return _registered_binary("equivalence", ref, a, c)

    def conj(self, sem, a, c, eps):
        out = _and(sem.conjunction[0], a, c, eps)
        return out if out is not None else _registered_binary("conjunction", sem.conjunction, a, c)

    def impl(self, sem, a, c, eps):
        out = _implies(sem.implication[0], a, c, eps)
        return out if out is not None else _registered_binary("implication", sem.implication, a, c)


def _program(program_or_text) -> ast.Program:
    if isinstance(program_or_text, ast.Program):
        return program_or_text
    from .checker import check
    from .parser import parse
    return check(parse(program_or_text))


def evaluate(program_or_text, facts: Mapping[str, object], *, semantics=None,
             domains: Optional[Mapping[str, object]] = None) -> Dict[str, List[float]]:
    """Rule name -> [truth for each batch item], by brute force."""
    program = _program(program_or_text)
    ev = _Eval(program, facts, domains or {})
    out = {}
    for rule in program.rules:
        sem = resolve(semantics, program.semantics, rule.options)
        out[rule.name] = [ev.ev(rule.formula, {}, b, sem) for b in range(ev.B)]
    return out


def loss(program_or_text, facts, *, semantics=None, domains=None, mode=None) -> float:
    """Σ_r w_r mean_b(1 - t) (linear) or mean_b(-log t) (log), from the reference truths."""
    program = _program(program_or_text)
    truth = evaluate(program, facts, semantics=semantics, domains=domains)
    total = 0.0
    for rule in program.rules:
        sem = resolve(semantics, program.semantics, rule.options)
        w = float(dict(rule.options).get("weight", rule.weight))
        ts = truth[rule.name]
        if (mode or sem.loss) == "log":
            total += w * sum(-math.log(max(t, 1e-300)) for t in ts) / len(ts)
        else:
            total += w * sum(1.0 - t for t in ts) / len(ts)
    return total
