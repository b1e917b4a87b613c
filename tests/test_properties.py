"""Property tests (Hypothesis): compiled == brute-force reference, and the
algebraic properties listed at the end of SEMANTICS.md."""
import math

import pytest
import torch
from hypothesis import assume, given, strategies as st

from fuzzylogic import reference
from fuzzylogic.compiler import apply_binary, compile_program
from fuzzylogic.operators import TruthValue, get_operator
from fuzzylogic.testing import (CONTINUOUS_IMPLICATIONS, problems, semantics_strategy,
                                truth_tensors, truth_values)

torch.set_num_threads(1)

CONJ = ("godel", "product", "lukasiewicz")
IMPL = ("kleene_dienes", "reichenbach", "lukasiewicz", "godel", "goguen")
S_IMPL = ("kleene_dienes", "reichenbach", "lukasiewicz")
DUAL_QUANTS = [(("min",), ("max",)), (("mean",), ("mean",)), (("pmean_error", 1.0), ("pmean", 1.0)),
               (("pmean_error", 2.0), ("pmean", 2.0)), (("pmean_error", 3.5), ("pmean", 3.5)),
               (("product",), ("probsum",)), (("log_sum_exp", 6.0), ("log_sum_exp", 6.0))]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def op(kind, name, a, b, stable=None):
    return apply_binary(get_operator(kind, name), (), stable, TruthValue(p=t(a)), TruthValue(p=t(b))).p.item()


def quant(kind, ref, a, w=None):
    spec = get_operator(kind, ref[0])
    x = TruthValue(p=a)
    dims = tuple(range(1, a.dim()))
    if spec.log_form is not None:
        return spec.log_form(x, dims, w, *ref[1:]).p
    return spec.fn(x.p, dims, w, *ref[1:])


# ------------------------------------------------------------------ compiled == reference
@given(st.data())
def test_compiled_equals_reference(data):
    sem = data.draw(semantics_strategy(), label="semantics")
    atomic = sem.implication[0] not in CONTINUOUS_IMPLICATIONS
    # |logits| <= 12: the reference works on p alone, and 1 - (1 - σ(-z)) cancels
    # in float64 for larger z where the compiled log forms stay exact
    pr = data.draw(problems(atomic_implications=atomic, logit_bound=12.0), label="problem")
    th = compile_program(pr.program, sem)
    got = th.truth(domains=pr.domains, **pr.facts)
    want = reference.evaluate(pr.program, pr.facts, semantics=sem, domains=pr.domains)
    for name, values in want.items():
        g = got[name].tolist()
        assert all(0.0 <= v <= 1.0 for v in g)
        assert g == pytest.approx(values, abs=1e-7), name
    loss = th.loss(domains=pr.domains, **pr.facts)
    assert math.isfinite(loss.item())


@given(st.data())
def test_gradients_are_finite_on_random_theories(data):
    sem = data.draw(semantics_strategy(), label="semantics")
    atomic = sem.implication[0] not in CONTINUOUS_IMPLICATIONS
    pr = data.draw(problems(atomic_implications=atomic), label="problem")
    th = compile_program(pr.program, sem)
    leaves = {k: v.clone().float().requires_grad_() for k, v in pr.facts.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()}
    facts = {**pr.facts, **leaves}
    loss = th.loss(domains=pr.domains, **facts)
    assert math.isfinite(loss.item())
    if loss.requires_grad:
        loss.backward()
    for k, v in leaves.items():
        if v.grad is not None:
            assert torch.isfinite(v.grad).all(), k


# ------------------------------------------------------------------ connectives
@given(truth_values(), truth_values())
def test_outputs_in_unit_interval(a, b):
    for kind, names in (("conjunction", CONJ), ("disjunction", CONJ), ("implication", IMPL),
                        ("equivalence", ("lukasiewicz", "agreement"))):
        for n in names:
            for stable in (None, 1e-4):
                v = op(kind, n, a, b, stable)
                assert 0.0 <= v <= 1.0, (kind, n, a, b)


@given(truth_values(), truth_values())
def test_de_morgan(a, b):
    for n in CONJ:
        assert op("disjunction", n, a, b) == pytest.approx(1 - op("conjunction", n, 1 - a, 1 - b), abs=1e-12)


@given(truth_values(), truth_values(), truth_values())
def test_conjunction_commutative_associative_identity(a, b, c):
    for n in CONJ:
        assert op("conjunction", n, a, b) == pytest.approx(op("conjunction", n, b, a), abs=1e-12)
        left = op("conjunction", n, op("conjunction", n, a, b), c)
        right = op("conjunction", n, a, op("conjunction", n, b, c))
        assert left == pytest.approx(right, abs=1e-12)
        assert op("conjunction", n, a, 1.0) == pytest.approx(a, abs=1e-15)
        assert op("disjunction", n, a, 0.0) == pytest.approx(a, abs=1e-15)


@given(truth_values(), truth_values(), truth_values())
def test_monotonicity(a, a2, b):
    lo, hi = min(a, a2), max(a, a2)
    for n in CONJ:
        assert op("conjunction", n, lo, b) <= op("conjunction", n, hi, b) + 1e-15
        assert op("disjunction", n, lo, b) <= op("disjunction", n, hi, b) + 1e-15
    for n in IMPL:  # falling in the premise, rising in the conclusion
        assert op("implication", n, lo, b) >= op("implication", n, hi, b) - 1e-15
        assert op("implication", n, b, lo) <= op("implication", n, b, hi) + 1e-15


@given(truth_values())
def test_implication_boundary_values(b):
    for n in IMPL:
        assert op("implication", n, 0.0, b) == 1.0
        assert op("implication", n, 1.0, b) == pytest.approx(b, abs=1e-15)


@given(truth_values(), truth_values())
def test_contraposition_holds_for_s_implications(a, b):
    for n in S_IMPL:
        assert op("implication", n, a, b) == pytest.approx(op("implication", n, 1 - b, 1 - a), abs=1e-12)


def test_contraposition_fails_for_goguen_and_godel():
    # a = 0.5, b = 0.25: Goguen I(a, b) = 0.5, I(1 - b, 1 - a) = 0.5 / 0.75
    assert op("implication", "goguen", 0.5, 0.25) != pytest.approx(op("implication", "goguen", 0.75, 0.5))
    assert op("implication", "godel", 0.5, 0.25) != pytest.approx(op("implication", "godel", 0.75, 0.5))

    @given(truth_values(), truth_values())
    def holds(a, b):
        assert op("implication", "goguen", a, b) == pytest.approx(
            op("implication", "goguen", 1 - b, 1 - a), abs=1e-9)

    with pytest.raises(AssertionError):
        holds()


@given(truth_values())
def test_idempotence_only_for_godel(a):
    assert op("conjunction", "godel", a, a) == a
    assert op("disjunction", "godel", a, a) == a


def test_product_and_lukasiewicz_are_not_idempotent():
    assert op("conjunction", "product", 0.5, 0.5) != 0.5
    assert op("conjunction", "lukasiewicz", 0.5, 0.5) != 0.5


# ------------------------------------------------------------------ quantifiers
@given(st.data())
def test_exists_is_not_forall_not(data):
    a = data.draw(truth_tensors((2, 5)))
    w = data.draw(st.one_of(st.none(), truth_tensors((2, 5))))
    for fa, ex in DUAL_QUANTS:
        lhs = quant("exists", ex, a, w)
        rhs = 1 - quant("forall", fa, 1 - a, w)
        assert torch.allclose(lhs, rhs, atol=1e-9), (fa, ex)


@given(st.data())
def test_quantifiers_in_unit_interval_and_guarded_empty_forall_is_one(data):
    a = data.draw(truth_tensors((2, 4)))
    for fa, ex in DUAL_QUANTS:
        for kind, ref in (("forall", fa), ("exists", ex)):
            v = quant(kind, ref, a)
            assert torch.all((v >= 0) & (v <= 1))
        assert torch.all(quant("forall", fa, a, torch.zeros_like(a)) == 1)
        assert torch.all(quant("exists", ex, a, torch.zeros_like(a)) == 0)


@given(st.data())
def test_quantifiers_are_monotone(data):
    a = data.draw(truth_tensors((1, 4)))
    bump = data.draw(truth_tensors((1, 4)))
    b = torch.maximum(a, bump)
    for fa, ex in DUAL_QUANTS:
        assert torch.all(quant("forall", fa, a) <= quant("forall", fa, b) + 1e-12)
        assert torch.all(quant("exists", ex, a) <= quant("exists", ex, b) + 1e-12)


# ------------------------------------------------------------------ gradients
def test_finite_gradients_at_exactly_zero_and_one_for_every_operator():
    grid = [0.0, 1.0, 0.5]
    for kind, names in (("conjunction", CONJ), ("disjunction", CONJ), ("implication", IMPL),
                        ("equivalence", ("lukasiewicz", "agreement"))):
        for n in names:
            for a in grid:
                for b in grid:
                    for stable in (None, 1e-4):
                        x, y = t([a]).requires_grad_(), t([b]).requires_grad_()
                        v = apply_binary(get_operator(kind, n), (), stable, TruthValue(p=x), TruthValue(p=y))
                        (v.p + v.lp + v.l1p).sum().backward()  # the log forms too
                        for g in (x.grad, y.grad):  # None: no dependence (Gödel's I on a)
                            assert g is None or torch.isfinite(g).all(), (kind, n, a, b)
    for fa, ex in DUAL_QUANTS:
        for fill in (0.0, 1.0):
            for kind, ref in (("forall", fa), ("exists", ex)):
                x = torch.full((2, 3), fill, dtype=torch.float64, requires_grad=True)
                spec = get_operator(kind, ref[0])
                v = (spec.log_form(TruthValue(p=x), (1,), None, *ref[1:]) if spec.log_form
                     else TruthValue(p=spec.fn(x, (1,), None, *ref[1:])))
                (v.p + v.lp + v.l1p).sum().backward()
                assert torch.isfinite(x.grad).all(), (kind, ref, fill)


def test_gradcheck_of_smooth_operators():
    g = torch.Generator().manual_seed(5)
    a = (torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    b = (torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    w = torch.rand(3, 4, generator=g, dtype=torch.float64)
    for kind, n in (("conjunction", "product"), ("disjunction", "product"),
                    ("implication", "reichenbach")):
        spec = get_operator(kind, n)
        for comp in ("p", "lp", "l1p"):
            assert torch.autograd.gradcheck(
                lambda x, y: getattr(spec.log_form(TruthValue(p=x), TruthValue(p=y)), comp), (a, b))
    for fa, ex in DUAL_QUANTS:
        if fa[0] == "min":
            continue  # not smooth
        for kind, ref in (("forall", fa), ("exists", ex)):
            assert torch.autograd.gradcheck(lambda x: quant(kind, ref, x, w), (a,)), (kind, ref)
            assert torch.autograd.gradcheck(lambda x: quant(kind, ref, x), (a,)), (kind, ref)


@given(st.data())
def test_log_forms_agree_with_the_plain_operators(data):
    a = data.draw(truth_tensors((6,)))
    b = data.draw(truth_tensors((6,)))
    for kind, names in (("conjunction", CONJ), ("disjunction", CONJ), ("implication", S_IMPL)):
        for n in names:
            spec = get_operator(kind, n)
            if spec.log_form is None:
                continue
            v = spec.log_form(TruthValue(p=a), TruthValue(p=b))
            p = spec.fn(a, b)
            assert torch.allclose(v.p, p, atol=1e-12)
            keep = (p > 1e-6) & (p < 1 - 1e-6)
            assume(keep.any())
            assert torch.allclose(v.lp[keep], torch.log(p[keep]), atol=1e-9)
            assert torch.allclose(v.l1p[keep], torch.log1p(-p[keep]), atol=1e-9)
