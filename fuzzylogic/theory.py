"""A compiled theory: bind facts, get per-rule truth, a loss, or a report.

    theory = fuzzylogic.compile(text)
    t = theory.truth(cup=cup_logits, disc=disc_logits, inside=boxes, disc_box=idx)
    loss = theory.loss(cup=..., disc=..., domains={"box": valid}, mode="log")

Facts are bound by predicate name: a tensor ``[B, *axes of each argument's
sort]`` (``B`` may be 1 and broadcast). Call-time constants are bound by
name: an ``int`` or a ``LongTensor [B]`` (one index per batch item).
``domains={sort: mask [B, *sort axes]}`` restricts quantifiers over that sort
to the valid elements (bool, or soft in [0, 1]).

Validation (``validate=True``): names, shapes and dtypes are checked on the
host for free; value checks (probabilities in [0, 1], no NaN/inf, constant
indices in range) are folded into one host sync per call. Under
``torch.compile`` the value checks are skipped (validate in eager first).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from . import ast
from .errors import FactError, FuzzyLogicError
from .operators import TruthValue, safe_log, safe_log1m

__all__ = ["Theory", "Evaluation", "Report", "RuleReport"]

_MODES = (None, "linear", "log")
_REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Evaluation:
    """``truth``: rule -> Tensor[B]; ``loss``: the total; ``per_rule_loss``:
    rule -> its weighted share of the loss (they sum to ``loss``)."""

    truth: Dict[str, torch.Tensor]
    loss: torch.Tensor
    per_rule_loss: Dict[str, torch.Tensor]


@dataclass
class RuleReport:
    name: str
    weight: float
    truth: float  # mean over the batch
    loss: float  # weighted contribution to the total loss
    premise: Optional[float] = None  # share of domain elements whose premise holds (> 0.5)
    violated: Optional[float] = None  # share where the premise holds and the conclusion fails (< 0.5)

    @property
    def violated_given_premise(self) -> Optional[float]:
        if self.premise is None or self.violated is None or self.premise == 0:
            return None
        return self.violated / self.premise


@dataclass
class Report:
    rules: List[RuleReport] = field(default_factory=list)
    loss: float = 0.0
    batch: int = 0

    def as_dict(self) -> dict:
        return {"loss": self.loss, "batch": self.batch,
                "rules": {r.name: {"weight": r.weight, "truth": r.truth, "loss": r.loss,
                                   "premise": r.premise, "violated": r.violated,
                                   "violated_given_premise": r.violated_given_premise}
                          for r in self.rules}}

    def __getitem__(self, name: str) -> RuleReport:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self) -> str:
        def f(x):
            return "-" if x is None else f"{x:.4f}"
        head = ("rule", "weight", "truth", "loss", "premise", "violated")
        rows = [(r.name, f"{r.weight:g}", f(r.truth), f(r.loss), f(r.premise), f(r.violated))
                for r in self.rules]
        rows.append(("total", "", "", f(self.loss), "", ""))
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
        out = [line, "-" * len(line)]
        for row in rows:
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))))
        return "\n".join(out)


def _is_compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - old torch
        return False


def _did_you_mean(word: str, names) -> str:
    m = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


class Theory:
    """A compiled rule file. Immutable and shareable (the compile cache returns it)."""

    def __init__(self, program: ast.Program, plans, semantics=None):
        self.program = program
        self._plans = tuple(plans)
        self._consts: Dict[Tuple, torch.Tensor] = {}
        # binding signature -> what _Context._check_shapes found for it (eager calls)
        self._shapes: Dict[Tuple, "_Shapes"] = {}
        self.semantics = semantics
        self.sorts = {s.name: s.axes for s in program.sorts}
        self.predicates = {p.name: p for p in program.predicates}
        self.constants = {c.name: c for c in program.constants}
        self.rules = tuple(p.name for p in self._plans)
        self.weights = {p.name: p.weight for p in self._plans}
        self.rule_semantics = {p.name: p.semantics for p in self._plans}
        used = []
        for p in self._plans:
            used += [n for n in p.predicates if n not in used]
        self.required_facts = tuple(n for n in self.predicates if n in used)
        rc = []
        for p in self._plans:
            rc += [n for n in p.constants if n not in rc]
        self.runtime_constants = tuple(rc)
        qs = []
        for p in self._plans:
            qs += [n for n in p.sorts if n not in qs]
        self.quantified_sorts = tuple(qs)
        self._labels = _axis_labels(program)
        self._fixed_constants = tuple(c for c in program.constants if c.index is not None)

    def __reduce__(self):
        # Pickled as its program and semantics, compiled again when loaded: the
        # compiled plan holds operator functions (lambdas among them) that pickle
        # cannot store. A model holding a LogicLoss can then be torch.save'd whole;
        # operators a user registered must be registered again before loading.
        return (_compiled, (self.program, self.semantics))

    def __repr__(self):
        return (f"Theory({self.program.source!r}, rules={list(self.rules)}, "
                f"facts={list(self.required_facts)}, constants={list(self.runtime_constants)})")

    # ----------------------------------------------------------- signature
    def expected_shape(self, predicate: str) -> str:
        """The shape a fact must have, e.g. ``[B, H, W, BOX]``."""
        decl = self.predicates[predicate]
        return "[" + ", ".join(["B"] + [lab for s in decl.args for lab in self._labels[s]]) + "]"

    def signature(self) -> Dict[str, str]:
        """Each required fact's expected shape and input kind."""
        out = {}
        for n in self.required_facts:
            d = self.predicates[n]
            kind = d.input
            if d.input == "softmax":  # as the rule file writes it: the sort, or the argument's
                sort = d.args[d.softmax_arg]  # number where two arguments share that sort
                kind = f"softmax({sort if d.args.count(sort) == 1 else d.softmax_arg + 1})"
            out[n] = f"{self.expected_shape(n)} {kind}"
        for c in self.runtime_constants:
            out[c] = f"int or LongTensor [B] (index into sort {self.constants[c].sort})"
        return out

    # ----------------------------------------------------------- public API
    def truth(self, *, domains: Optional[Mapping[str, torch.Tensor]] = None, validate: bool = True,
              **bindings) -> Dict[str, torch.Tensor]:
        """Rule name -> truth ``Tensor[B]`` in [0, 1]."""
        ctx = _Context(self, bindings, domains, validate)
        return {p.name: ctx.batch(p.root(ctx).p) for p in self._plans}

    def loss(self, *, domains=None, validate: bool = True, mode: Optional[str] = None,
             reduction: str = "mean", **bindings) -> torch.Tensor:
        """``Σ_r w_r · reduce_b(1 - t)`` (linear) or ``-log t`` in log space (log).

        ``mode`` None uses each rule's semantics; "linear"/"log" force one form.
        ``reduction``: "mean" or "sum" over the batch, or "none" (Tensor[B]).
        """
        return self._evaluate(bindings, domains, validate, mode, reduction, want_truth=False).loss

    def evaluate(self, *, domains=None, validate: bool = True, mode: Optional[str] = None,
                 reduction: str = "mean", **bindings) -> Evaluation:
        """Truth and loss in one pass."""
        return self._evaluate(bindings, domains, validate, mode, reduction, want_truth=True)

    def report(self, *, domains=None, validate: bool = True, mode: Optional[str] = None,
               **bindings) -> Report:
        """Per rule: satisfaction, loss and, for `Q...: A -> C` rules, the share of
        domain elements where A holds (> 0.5) and where A holds but C fails (< 0.5)."""
        with torch.no_grad():
            ctx = _Context(self, bindings, domains, validate)
            ev = self._run(ctx, mode, "mean", want_truth=True)
            shares = {p.name: _implication_shares(p.report, ctx) for p in self._plans
                      if p.report is not None}
            flat = [ev.loss.reshape(1).double()]
            for p in self._plans:
                flat += [ev.truth[p.name].double().mean().reshape(1),
                         ev.per_rule_loss[p.name].double().reshape(1)]
                if p.name in shares:
                    flat += [s.double().reshape(1) for s in shares[p.name]]
            vals = torch.cat(flat).tolist() if flat else []  # one host sync
        it = iter(vals)
        rep = Report(loss=next(it), batch=ctx.B)
        for p in self._plans:
            t, lv = next(it), next(it)
            pr = vi = None
            if p.name in shares:
                pr, vi = next(it), next(it)
            rep.rules.append(RuleReport(p.name, p.weight, t, lv, pr, vi))
        return rep

    # ----------------------------------------------------------- internals
    def _evaluate(self, bindings, domains, validate, mode, reduction, want_truth) -> Evaluation:
        if mode not in _MODES:
            raise FuzzyLogicError(f"mode must be None, 'linear' or 'log', got {mode!r}")
        if reduction not in _REDUCTIONS:
            raise FuzzyLogicError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        ctx = _Context(self, bindings, domains, validate)
        return self._run(ctx, mode, reduction, want_truth)

    def _const(self, values: Tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A small constant vector (rule weights...), made once per (values, dtype,
        device): made from Python data at every call, it would be a blocking copy to
        the GPU, a host sync in every loss. (Compiled, it is a graph constant.)"""
        if _is_compiling():
            return torch.tensor(values, dtype=dtype, device=device)
        key = (values, dtype, device)
        t = self._consts.get(key)
        if t is None:
            t = self._consts[key] = torch.tensor(values, dtype=dtype, device=device)
        return t

    def _run(self, ctx, mode, reduction, want_truth) -> Evaluation:
        if not self._plans:
            shape = (ctx.B,) if reduction == "none" else ()
            return Evaluation({}, torch.zeros(shape, dtype=ctx.dtype, device=ctx.device), {})
        # One row per rule: log truth (log loss) or truth (linear loss), [R, B].
        # Negated, reduced over the batch, weighted and summed in a few batched
        # ops for all rules together (not a handful of tiny ops per rule).
        rows, logs = [], []
        for p in self._plans:
            v = p.root(ctx)
            is_log = (mode or p.loss) == "log"
            r = ctx.batch(v.lp if is_log else v.p)
            rows.append(r if r.dtype == ctx.dtype else r.to(ctx.dtype))
            logs.append(is_log)
        x = torch.stack(rows)
        if all(logs):
            per_b = -x
        elif not any(logs):
            per_b = 1.0 - x
        else:  # -log t for log rules, 1 - t for linear ones
            per_b = self._const(tuple(0.0 if lg else 1.0 for lg in logs), ctx.dtype,
                                ctx.device)[:, None] - x
        red = per_b.mean(1) if reduction == "mean" else per_b.sum(1) if reduction == "sum" else per_b
        w = self._const(tuple(p.weight for p in self._plans), ctx.dtype, ctx.device)
        contrib = red * (w if reduction != "none" else w[:, None])
        total = contrib.sum(0)
        # (unbind: one op for all the rules' views, not one indexing op each)
        per_rule = dict(zip(self.rules, contrib.unbind(0)))
        truth = {}
        if want_truth:
            if any(logs):
                t = torch.exp(x)  # = p, without a second graph
                if not all(logs):
                    t = torch.where(self._const(tuple(logs), torch.bool, ctx.device)[:, None], t, x)
            else:
                t = x
            truth = dict(zip(self.rules, t.unbind(0)))
        return Evaluation(truth, total, per_rule)


def _compiled(program: ast.Program, semantics) -> "Theory":
    from .compiler import compile as compile_theory

    return compile_theory(program, semantics)


def _implication_shares(plan, ctx):
    """(premise share, violated share) over the domain elements of the prefix."""
    rank = plan.rank
    mask = None
    sizes: Tuple[int, ...] = ()
    for q in plan.quants:
        sizes += q.sizes(ctx)
        w = q.weight(ctx)
        if w is not None:
            w = w.reshape(w.shape + (1,) * (rank - w.dim())) > 0.5
            mask = w if mask is None else mask & w
    holds = None
    for prem in plan.premises:
        h = prem(ctx).p > 0.5
        holds = h if holds is None else holds & h
    fails = plan.conclusion(ctx).p < 0.5
    full = (ctx.B,) + sizes
    holds = holds.expand(full)
    viol = (holds & fails).expand(full)
    dims = tuple(range(rank))
    if mask is None:
        n = float(math.prod(full))
        return holds.sum(dims).double() / max(n, 1.0), viol.sum(dims).double() / max(n, 1.0)
    mask = mask.expand(full)
    n = mask.sum(dims).double().clamp_min(1.0)
    return (holds & mask).sum(dims).double() / n, (viol & mask).sum(dims).double() / n


def _axis_labels(program: ast.Program) -> Dict[str, List[str]]:
    """Readable axis names for error messages: BOX, CLASS, and H, W for a 2-axis sort."""
    by_k: Dict[int, int] = {}
    for s in program.sorts:
        by_k[s.axes] = by_k.get(s.axes, 0) + 1
    named = {2: ["H", "W"], 3: ["D", "H", "W"]}
    out = {}
    for s in program.sorts:
        if s.axes == 1:
            out[s.name] = [s.name.upper()]
        elif s.axes in named and by_k[s.axes] == 1:
            out[s.name] = list(named[s.axes])
        else:
            out[s.name] = [f"{s.name.upper()}{i}" for i in range(s.axes)]
    return out


# ---------------------------------------------------------------- per call
_MAX_SIGNATURES = 64  # binding signatures remembered per theory (then forgotten, all)


class _Shapes:
    """What the shape checks found for one binding signature: sort sizes, device,
    dtype, batch size, whether any fact or domain is a tensor; and ``memo``, for
    the plan's own shape-only decisions (shared by the calls of that signature)."""

    __slots__ = ("sizes", "device", "on_cpu", "dtype", "B", "has_tensors", "memo")

    def __init__(self, sizes, device, dtype, B, has_tensors):
        self.sizes, self.device, self.dtype, self.B = sizes, device, dtype, B
        self.on_cpu = device.type == "cpu"
        self.has_tensors = has_tensors
        self.memo: Dict[object, object] = {}


def _merge_order(shapes: List[Tuple[int, ...]]) -> List[Tuple[int, int]]:
    """The order in which domain_mask multiplies masks of these shapes (all of one
    rank: sizes broadcast axis by axis): the pair with the smallest product
    first, the product then last in the list."""
    order = []
    while len(shapes) > 1:
        # (a plain loop: torch.compile traces it without a graph break)
        best = None
        for a in range(len(shapes)):
            for b in range(a + 1, len(shapes)):
                n = 1
                for x, y in zip(shapes[a], shapes[b]):
                    n *= max(x, y)
                if best is None or n < best[0]:
                    best = (n, a, b)
        _, i, j = best
        prod = tuple(max(x, y) for x, y in zip(shapes[i], shapes[j]))
        shapes = [t for k, t in enumerate(shapes) if k not in (i, j)] + [prod]
        order.append((i, j))
    return order


def _signature(bindings: Mapping[str, object], domains) -> Optional[Tuple]:
    """Everything the shape checks read of the bindings: names, and shape, dtype and
    device of each tensor (the type of anything else). None: do not cache (under
    torch.compile, whose traced checks must stay as they are; domains not a dict)."""
    if _is_compiling() or not isinstance(domains, Mapping):
        return None
    key = []
    for items in (bindings.items(), domains.items()):
        for name, t in items:
            if isinstance(t, torch.Tensor):
                key.append((name, t.shape, t.dtype, t.device))
            else:
                key.append((name, type(t)))
        key.append(None)  # (facts | domains)
    return tuple(key)


class _Context:
    """Everything one call needs: converted facts, sizes, domains, caches."""

    compacted = False  # (sparse.Compacted: a body evaluated on selected rows)
    relevance = None  # the scope cells that matter: where all these are nonzero (QuantNode.keep)

    def __init__(self, theory: Theory, bindings, domains, validate: bool):
        self.theory = theory
        self.atoms: Dict[object, TruthValue] = {}
        self._softmax: Dict[str, TruthValue] = {}
        self._domviews: Dict[tuple, torch.Tensor] = {}
        self._dommasks: Dict[tuple, Optional[torch.Tensor]] = {}
        self._values: Dict[str, TruthValue] = {}
        self._constvals: Dict[tuple, TruthValue] = {}
        self._full_domains: Dict[str, bool] = {}  # sparse.domains_full
        self.facts: Dict[str, torch.Tensor] = {}
        self.consts: Dict[str, object] = {}
        self.domains: Dict[str, torch.Tensor] = {}
        self.sizes: Dict[str, Tuple[int, ...]] = {}
        self._prepare(bindings, domains or {}, validate)

    # ---------------------------------------------- used by the plan nodes
    def fact(self, name: str) -> torch.Tensor:
        return self.facts[name]

    def constant(self, name: str):
        return self.consts[name]

    def softmax_value(self, name: str, dims: Tuple[int, ...]) -> TruthValue:
        v = self._softmax.get(name)
        if v is None:
            z = self.facts[name]
            fn = torch.nn.functional
            if len(dims) == 1:
                v = TruthValue(p=lambda: fn.softmax(z, dims[0]), lp=lambda: fn.log_softmax(z, dims[0]))
            else:
                v = TruthValue(lp=lambda: z - torch.logsumexp(z, dims, keepdim=True))
            self._softmax[name] = v
        return v

    def fact_value(self, name: str, kind: str) -> TruthValue:
        """The truth value of a whole fact (``kind``: "logits" or "prob"), shared
        by every atom that views it, so its sigmoid and logs are computed once."""
        v = self._values.get(name)
        if v is None:
            t = self.facts[name]
            v = TruthValue.from_logits(t) if kind == "logits" else TruthValue.from_p(t)
            self._values[name] = v
        return v

    def domain_mask(self, sorts: Tuple[Tuple[str, int], ...], rank: int) -> Optional[torch.Tensor]:
        """The product of the domain masks of ``sorts`` ((sort, first axis) pairs) in a
        scope of ``rank`` axes (None: no masks); cached, as quantifiers over the
        same variables share it. Smallest broadcast products first: the masks
        are one sort each, so most products stay far below the scope's size."""
        key = (sorts, rank)
        if key in self._dommasks:
            return self._dommasks[key]
        ms = []
        for s, start in sorts:
            m = self.domain_view(s, start, rank)
            if m is not None:
                ms.append(m)
        if len(ms) > 1:
            # (the order depends on the masks' shapes only: found once per signature)
            mkey = ("domain_mask", key)
            order = self.memo.get(mkey)
            if order is None:
                order = self.memo[mkey] = _merge_order([tuple(m.shape) for m in ms])
            for i, j in order:
                prod = ms[i] * ms[j]
                ms = [m for k, m in enumerate(ms) if k not in (i, j)] + [prod]
        out = ms[0] if ms else None
        self._dommasks[key] = out
        return out

    def constant_value(self, value: float, rank: int) -> TruthValue:
        key = (value, rank)
        v = self._constvals.get(key)
        if v is None:
            t = torch.full((1,) * rank, value, dtype=self.dtype, device=self.device)
            v = TruthValue(p=t, lp=safe_log(t), l1p=safe_log1m(t))
            self._constvals[key] = v
        return v

    def domain_view(self, sort: str, start: int, rank: int) -> Optional[torch.Tensor]:
        m = self.domains.get(sort)
        if m is None:
            return None
        key = (sort, start, rank)
        v = self._domviews.get(key)
        if v is None:
            k = m.dim() - 1
            v = m.reshape((m.shape[0],) + (1,) * (start - 1) + tuple(m.shape[1:])
                          + (1,) * (rank - start - k))
            self._domviews[key] = v
        return v

    def batch(self, t: torch.Tensor) -> torch.Tensor:
        """A rule's rank-1 result as Tensor[B]."""
        if t.dim() == 1 and t.shape[0] == self.B:
            return t  # (usually: no reshape op)
        t = t.reshape(-1)
        return t if t.shape[0] == self.B else t.expand(self.B)

    # ---------------------------------------------- validation
    def _prepare(self, bindings: Mapping[str, object], domains, validate: bool):
        th = self.theory
        # The host checks of names, shapes, dtypes and devices depend on the
        # bindings' signature only: done once per signature (they cost more
        # than the rest of a small loss), again for any new shape or dtype.
        sig = _signature(bindings, domains)
        shapes = th._shapes.get(sig) if sig is not None else None
        if shapes is None:
            shapes = self._check_shapes(bindings, domains)
            if sig is not None:
                if len(th._shapes) >= _MAX_SIGNATURES:
                    th._shapes.clear()
                th._shapes[sig] = shapes
        self.sizes, self.device, self.dtype, self.B = shapes.sizes, shapes.device, shapes.dtype, shapes.B
        self.on_cpu = shapes.on_cpu
        self.memo = shapes.memo
        self._convert(bindings, domains, validate, shapes.has_tensors)

    def _check_shapes(self, bindings: Mapping[str, object], domains) -> "_Shapes":
        """Names, shapes, dtypes and devices of the bindings, checked (FactError)."""
        th = self.theory
        preds, consts = th.predicates, th.constants
        for name in bindings:
            if name not in preds and name not in consts:
                known = list(preds) + list(consts)
                raise FactError(f"unknown fact or constant '{name}'{_did_you_mean(name, known)}; "
                                f"the theory has predicates {list(preds)} and constants {list(consts)}")
        missing = [n for n in th.required_facts if n not in bindings]
        missing += [c for c in th.runtime_constants if c not in bindings]
        if missing:
            sig = th.signature()
            raise FactError("missing " + ", ".join(f"'{m}' ({sig[m]})" for m in missing))
        for name in bindings:
            if name in consts and consts[name].index is not None:
                raise FactError(f"constant '{name}' has the fixed index {consts[name].index} in the "
                                f"rules; it cannot be bound at call time")
        if not isinstance(domains, Mapping):
            raise FactError(f"domains must be a dict sort -> mask, got {type(domains).__name__}")
        for s in domains:
            if s not in th.sorts:
                raise FactError(f"domains: unknown sort '{s}'{_did_you_mean(s, th.sorts)}; "
                                f"sorts are {list(th.sorts)}")

        origin: Dict[str, str] = {}  # sort -> the fact its size came from
        batch_from: Optional[Tuple[int, str]] = None
        tensors = []  # (what, name, tensor) for dtype / device
        labels = th._labels

        def axes_desc(sort_list):
            return ", ".join(["B"] + [lab for s in sort_list for lab in labels[s]])

        def odd_one_out(sort: str) -> FactError:
            """The error for facts (and domains) disagreeing on a sort's size: the size
            most of them have is expected (ties: the first bound), and the first one
            that differs is named, whatever the binding order. Only on that error
            path, so that a correct call pays nothing for it."""
            votes: Dict[Tuple[int, ...], List[str]] = {}
            seen = []  # (what, name, shape, sort_list, size of `sort`)
            sources = [("fact", n, t, preds[n].args) for n, t in bindings.items() if n in preds]
            sources += [("domain", x, m, [x]) for x, m in domains.items()]
            for what, name, t, sort_list in sources:
                if not isinstance(t, torch.Tensor) or t.dim() != 1 + sum(th.sorts[x] for x in sort_list):
                    continue  # (check_shape names those problems)
                d = 1
                for x in sort_list:  # (every argument of the sort: p(pixel, pixel) has two)
                    if x == sort:
                        size = tuple(int(v) for v in t.shape[d:d + th.sorts[x]])
                        votes.setdefault(size, []).append(f"{what} '{name}'")
                        seen.append((what, name, t.shape, sort_list, size))
                    d += th.sorts[x]
            size, names = max(votes.items(), key=lambda kv: len(kv[1]))  # first of the most
            what, name, shape, sort_list, _ = next(x for x in seen if x[4] != size)
            where = names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")
            return FactError(
                f"{what} '{name}': expected shape [{axes_desc(sort_list)}] with "
                f"{', '.join(labels[sort])} = {', '.join(map(str, size))} (sort {sort}, from "
                f"{where}), got {[int(v) for v in shape]}")

        def known_sizes(skip: Tuple[str, str]):
            """The sort sizes and the batch size the other facts and domains of the
            call give (those with the right number of axes), for a hint."""
            sizes = {s: tuple(int(v) for v in size) for s, size in self.sizes.items()}
            batch = batch_from[0] if batch_from is not None and batch_from[0] != 1 else None
            sources = [("fact", n, t, preds[n].args) for n, t in bindings.items() if n in preds]
            sources += [("domain", x, m, [x]) for x, m in domains.items()]
            for what, name, t, sort_list in sources:
                if ((what, name) == skip or not isinstance(t, torch.Tensor)
                        or t.dim() != 1 + sum(th.sorts[x] for x in sort_list)):
                    continue
                if batch is None and t.shape[0] != 1:
                    batch = int(t.shape[0])
                d = 1
                for x in sort_list:
                    sizes.setdefault(x, tuple(int(v) for v in t.shape[d:d + th.sorts[x]]))
                    d += th.sorts[x]
            return sizes, batch

        def missing_axis_hint(what: str, name: str, shape, sort_list) -> str:
            """For a tensor one axis short: which axis seems missing. Each expected
            axis is tried as the missing one; the given axes must then fit the sizes
            known from the other facts (and the batch size), and the candidates that
            agree with the most known sizes win. The batch axis is named when it is
            among them (also when nothing is known: the usual slip), another axis
            when it alone is (or one sort's axes are); else no hint. Only on that
            error path."""
            if _is_compiling():
                return ""  # (symbolic sizes: no guessing)
            sizes, batch = known_sizes((what, name))
            axes = [("B", None, batch)]  # (label, sort, known size or None)
            for s in sort_list:
                known = sizes.get(s)
                axes += [(lab, s, None if known is None else known[j]) for j, lab in enumerate(labels[s])]
            scored = []  # (axes confirmed by a known size, missing axis)
            for i, missing in enumerate(axes):
                score = 0
                for (lab, s, size), got in zip(axes[:i] + axes[i + 1:], shape):
                    if size is None or (s is None and got == 1):
                        continue  # (a batch of 1 broadcasts)
                    if got != size:
                        break
                    score += 1
                else:
                    scored.append((score, missing))
            if not scored:
                return ""
            top = max(score for score, _ in scored)
            best = list(dict.fromkeys((lab, s) for score, (lab, s, _) in scored if score == top))
            if best[0][1] is None:
                return " (missing the batch axis? add it with .unsqueeze(0))"
            sorts = {s for _, s in best}
            if len(best) == 1:
                return f" (missing the {best[0][0]} axis (sort {best[0][1]})?)"
            if len(sorts) == 1:
                return f" (missing one of the {', '.join(lab for lab, _ in best)} axes (sort {best[0][1]})?)"
            return ""

        def check_shape(what: str, name: str, t, sort_list):
            nonlocal batch_from
            if not isinstance(t, torch.Tensor):
                raise FactError(f"{what} '{name}': expected a tensor [{axes_desc(sort_list)}], "
                                f"got {type(t).__name__}")
            want = 1 + sum(th.sorts[s] for s in sort_list)
            shape = list(t.shape)
            if t.dim() != want:
                hint = missing_axis_hint(what, name, shape, sort_list) if t.dim() == want - 1 else ""
                raise FactError(f"{what} '{name}': expected {want} axes [{axes_desc(sort_list)}], "
                                f"got {t.dim()} axes {shape}{hint}")
            b = shape[0]
            if batch_from is None or (batch_from[0] == 1 and b != 1):
                batch_from = (b, f"{what} '{name}'")
            elif b not in (1, batch_from[0]):
                raise FactError(f"{what} '{name}': batch size {b} does not match "
                                f"{batch_from[0]} (from {batch_from[1]}); the first axis "
                                f"must be {batch_from[0]} or 1")
            d = 1
            for s in sort_list:
                k = th.sorts[s]
                got = tuple(shape[d:d + k])
                if s in self.sizes and self.sizes[s] != got:
                    lab = ", ".join(labels[s])
                    if _is_compiling():
                        # (dynamo cannot format symbolic sizes: a message without them)
                        raise FactError(f"{what} '{name}': its {lab} (sort {s}) differ from "
                                        f"those of {origin[s]}; run the loss eagerly to see "
                                        "the sizes")
                    raise odd_one_out(s)
                if s not in self.sizes:
                    self.sizes[s] = got
                    origin[s] = f"fact '{name}'" if what == "fact" else f"{what} '{name}'"
                d += k
            tensors.append((what, name, t))

        for name, t in bindings.items():
            if name in preds:
                decl = preds[name]
                check_shape("fact", name, t, decl.args)
                if decl.input != "prob" and not t.is_floating_point():
                    raise FactError(f"fact '{name}' is fed {decl.input}: expected a floating tensor, "
                                    f"got {t.dtype}")
                if t.is_complex():
                    raise FactError(f"fact '{name}': complex tensors are not truth values")
        for s, m in domains.items():
            check_shape("domain", s, m, [s])
        for s in th.quantified_sorts:
            if s not in self.sizes:
                raise FactError(f"the size of sort '{s}' is unknown: no fact given has an argument "
                                f"of that sort; bind one or give domains={{'{s}': mask}}")
        # device and dtype
        devices = {t.device for _, _, t in tensors}
        if len(devices) > 1:
            where = ", ".join(f"{w} '{n}' on {t.device}" for w, n, t in tensors)
            raise FactError(f"facts are on different devices: {where}")
        self.device = devices.pop() if devices else torch.device("cpu")
        dtype = None
        for _, _, t in tensors:
            if t.is_floating_point():
                dtype = t.dtype if dtype is None or dtype == t.dtype else torch.promote_types(dtype, t.dtype)
        if dtype is None or dtype in (torch.float16, torch.bfloat16):
            dtype = torch.promote_types(dtype or torch.float32, torch.float32)
        self.dtype = dtype
        self.B = batch_from[0] if batch_from else 1
        # A bound constant's indices fix the batch size even when no rule uses it,
        # as in the reference evaluator: the result always has one value per item.
        for name, v in bindings.items():
            if (name in consts and name not in th.runtime_constants and isinstance(v, torch.Tensor)
                    and v.dim() == 1 and v.shape[0] > 1 and self.B == 1):
                self.B = v.shape[0]

        # constants with an index fixed in the rule text, against the sort's size
        for c in th._fixed_constants:
            n = self.sizes.get(c.sort, (None,))[0]
            if n is not None and not 0 <= c.index < n:
                raise FactError(f"constant '{c.name}' has the index {c.index} in the rules, "
                                f"but sort {c.sort} has {n} elements here (from {origin[c.sort]})")
        return _Shapes(self.sizes, self.device, self.dtype, self.B, len(tensors) > 0)

    def _convert(self, bindings: Mapping[str, object], domains, validate: bool, has_tensors: bool):
        """Call-time constants checked, facts and domains converted to the call's
        dtype, and (``validate``) their values checked in one host sync."""
        th = self.theory
        preds, consts = th.predicates, th.constants
        # call-time constants
        checks = []  # (message builder, tensor of [min, max])
        for name in th.runtime_constants:
            v = bindings[name]
            sort = consts[name].sort
            n = self.sizes.get(sort, (None,))[0]
            if isinstance(v, bool) or not isinstance(v, (int, torch.Tensor)):
                raise FactError(f"constant '{name}': expected an int or a LongTensor [B] of indices "
                                f"into sort {sort}, got {type(v).__name__}")
            if isinstance(v, int):
                if n is None or not 0 <= v < n:
                    raise FactError(f"constant '{name}': index {v} is out of range for sort {sort} "
                                    f"of size {n}")
                self.consts[name] = v
                continue
            if v.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise FactError(f"constant '{name}': expected integer indices, got {v.dtype}")
            if v.dim() == 0:
                v = v.reshape(1)
            if v.dim() == 1 and v.shape[0] > 1 and self.B == 1:
                self.B = v.shape[0]  # every fact broadcasts over the batch
            if v.dim() != 1 or v.shape[0] not in (1, self.B):
                raise FactError(f"constant '{name}': expected shape [B] with B = {self.B} (or [1]), "
                                f"got {list(v.shape)}")
            if v.device != self.device and has_tensors:
                raise FactError(f"constant '{name}' is on {v.device}, the facts on {self.device}")
            v = v.long()
            self.consts[name] = v
            if v.numel():
                checks.append((("index", name, sort, n), v))

        dtype = self.dtype
        for name in th.required_facts:
            t = bindings[name]
            conv = t.to(dtype) if t.dtype != dtype else t
            self.facts[name] = conv
            if validate:
                kind = preds[name].input
                if (t.is_floating_point() or kind == "prob") and t.dtype != torch.bool and t.numel():
                    checks.append(((kind, name), conv))
        for s, m in domains.items():
            conv = m.to(dtype) if m.dtype != dtype else m
            self.domains[s] = conv
            if validate and m.dtype != torch.bool and m.numel():
                checks.append((("domain", s), conv))

        if validate and checks and not _is_compiling():
            stats = torch.stack([torch.stack(torch.aminmax(t.detach().reshape(-1))).to(torch.float64)
                                 for _, t in checks])
            values = stats.tolist()  # the one host sync of validation
            for (what, *rest), (lo, hi) in zip([c for c, _ in checks], values):
                self._raise_bad(what, rest, lo, hi)

    @staticmethod
    def _raise_bad(what, rest, lo, hi):
        finite = math.isfinite(lo) and math.isfinite(hi)
        if what == "index":
            name, sort, n = rest
            if lo < 0 or hi >= n:
                raise FactError(f"constant '{name}': indices must lie in [0, {n - 1}] (sort {sort}), "
                                f"got min {int(lo)}, max {int(hi)}")
            return
        name = rest[0]
        label = f"domain '{name}'" if what == "domain" else f"fact '{name}' ({what})"
        if not finite:
            raise FactError(f"{label} contains NaN or inf (min {lo}, max {hi})")
        if what in ("prob", "domain") and (lo < 0 or hi > 1):
            raise FactError(f"{label}: values must lie in [0, 1], got min {lo:.6g}, max {hi:.6g}"
                            + (" (logits? declare the predicate with `logits`)" if what == "prob" else ""))
