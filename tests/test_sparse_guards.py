"""Sparse guards (CPU): a quantifier evaluates its body only on the rows where its
weight (guard x domain masks x the enclosing quantifiers' weights) is nonzero.

Values (truth, losses) must be those of the dense evaluation bit for bit.
Gradients too where no atom is broadcast over the compacted axes (the VOC
rules); otherwise the gradient of such an atom sums the same terms in another
order (index_add over the kept rows instead of a reduction over the broadcast
axes, and autograd may add the paths in another order): equal to rounding."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fuzzylogic as fl
from fuzzylogic import reference, sparse
from fuzzylogic.compiler import compile_program, sparse_guards
from fuzzylogic.operators import FORALL_IDENTITY, register_operator
from fuzzylogic.testing import CONTINUOUS_IMPLICATIONS, problems, semantics_strategy

torch.set_num_threads(1)


@pytest.fixture
def compactions(monkeypatch):
    """Counts the compacted evaluations (rows kept, per call of the body)."""
    seen = []
    orig = sparse.Compacted.__init__

    def spy(self, parent, idx, k):
        seen.append((k, idx.shape[0]))
        orig(self, parent, idx, k)
    monkeypatch.setattr(sparse.Compacted, "__init__", spy)
    return seen


@pytest.fixture(params=["elements", "batch rows"])
def always_compact(request, monkeypatch):
    """Compact whenever anything may be skipped: rows of one cell (the finest
    split) or of whole batch items (the coarsest), whatever the share kept."""
    monkeypatch.setattr(sparse, "_ROW_CELLS", 1 if request.param == "elements" else 10 ** 9)
    monkeypatch.setattr(sparse, "_MAX_SHARE", 2.0)


def run(th, facts, domains, grad_keys, dense, mode=None):
    """(truth, loss, per-rule loss, gradients) with the dense or the sparse path."""
    leaves = {k: facts[k].detach().clone().requires_grad_() for k in grad_keys}
    f = {**facts, **leaves}
    with sparse_guards(not dense):
        ev = th.evaluate(domains=domains, mode=mode, **f)
        grads = torch.autograd.grad(ev.loss, [leaves[k] for k in grad_keys], allow_unused=True) \
            if grad_keys and ev.loss.requires_grad else [None] * len(grad_keys)
    return ev, dict(zip(grad_keys, grads))


def assert_identical(th, facts, domains, grad_keys, mode=None, exact_grads=False):
    ev0, g0 = run(th, facts, domains, grad_keys, dense=True, mode=mode)
    ev1, g1 = run(th, facts, domains, grad_keys, dense=False, mode=mode)
    assert torch.equal(ev0.loss, ev1.loss), (ev0.loss, ev1.loss)
    for r in ev0.truth:
        assert torch.equal(ev0.truth[r], ev1.truth[r]), r
        assert torch.equal(ev0.per_rule_loss[r], ev1.per_rule_loss[r]), r
    for k in grad_keys:
        # (None: no path to the loss, e.g. every guard empty on the sparse path)
        a, b = (torch.zeros_like(facts[k]) if g is None else g for g in (g0[k], g1[k]))
        assert torch.isfinite(b).all(), k
        if exact_grads:
            assert torch.equal(a, b), (k, (a - b).abs().max())
        else:  # a few ulp of the largest gradient (float64)
            scale = float(a.abs().max()) or 1.0
            torch.testing.assert_close(b, a, rtol=0.0, atol=1e-14 * scale, msg=k)
    return ev1


# ------------------------------------------------------------------ a fixed program
RULES = """
sort region
sort row
sort label
predicate mask(region, row) logits
predicate other(region, row) logits
predicate g(region, row)              # a fuzzy guard (exact 0s and 1s too)
predicate crisp(region, row)          # a 0/1 guard
predicate ov(region, region)          # pairs
predicate rel(region, region) logits
predicate cls(region, label) softmax(label)
predicate lab(region, label)
predicate sel(region, label)
constant first: region = 0
constant pick: region

rule guarded_heavy: forall a, r in g(a, r): mask(a, r) -> other(a, r)
rule crisp_iff: forall a, r in crisp(a, r): mask(a, r) <-> other(a, r)
rule nested: forall a, b in ov(a, b): forall r: not (mask(a, r) and mask(b, r))
rule nested_exists: forall a in ov(a, first): exists r in g(a, r): mask(a, r) and other(a, r)
rule diagonal: forall a, b in ov(a, b): rel(a, a) -> (rel(a, b) or true)
rule constants: forall a, r in g(a, r): (mask(first, r) and mask(pick, r)) -> other(a, r)
rule softmax: forall a, l in sel(a, l): cls(a, l) -> lab(a, l)
rule literal: forall a, r where crisp(a, r): (mask(a, r) and false) or other(a, r)
"""


def fixed_facts(seed=0, B=3, R=4, N=6, L=5, empty=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.rand(*s, generator=gen, dtype=torch.float64)

    def crisp(*s, p=0.3):
        return (rand(*s) < p).double()

    g = rand(B, R, N) * crisp(B, R, N, p=0.4)
    g[0, 0, :2] = 1.0  # exact 1s in a guard
    mask = torch.randn(B, R, N, generator=gen, dtype=torch.float64) * 8
    mask[0, 0, 0], mask[0, 0, 1] = 1e4, -1e4  # truths that round to exactly 1 and 0
    facts = dict(mask=mask, other=torch.randn(B, R, N, generator=gen, dtype=torch.float64) * 8,
                 g=g, crisp=crisp(B, R, N), ov=crisp(B, R, R, p=0.25),
                 rel=torch.randn(B, R, R, generator=gen, dtype=torch.float64),
                 cls=torch.randn(B, R, L, generator=gen, dtype=torch.float64),
                 lab=rand(B, R, L), sel=crisp(B, R, L), pick=torch.tensor([1, 3, 2][:B]))
    if empty:
        for k in ("g", "crisp", "ov", "sel"):
            facts[k] = torch.zeros_like(facts[k])
    domains = {"region": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]][:B],
                                      dtype=torch.bool),
               "row": torch.tensor([[1.0] * N, [1.0] * (N - 1) + [0.0], [0.5] * N][:B])}
    return facts, domains


GRAD_KEYS = ("mask", "other", "rel", "cls")


@pytest.mark.parametrize("sem", fl.available_presets())
@pytest.mark.parametrize("mode", [None, "linear", "log"])
def test_every_preset_sparse_equals_dense(sem, mode, always_compact, compactions):
    th = fl.compile(RULES, sem)
    facts, domains = fixed_facts()
    assert_identical(th, facts, domains, GRAD_KEYS, mode=mode)
    assert compactions, "no body was evaluated sparsely"


@pytest.mark.parametrize("sem", fl.available_presets())
def test_sparse_matches_the_reference(sem, always_compact):
    th = fl.compile(RULES, sem)
    facts, domains = fixed_facts(seed=1)
    facts["mask"] = facts["mask"].clamp(-12, 12)  # the reference works on p alone
    with sparse_guards(True):
        got = th.truth(domains=domains, **facts)
    want = reference.evaluate(RULES, facts, semantics=sem, domains=domains)
    for name, values in want.items():
        assert got[name].tolist() == pytest.approx(values, abs=1e-9), name


@pytest.mark.parametrize("sem", fl.available_presets())
def test_empty_guards_give_the_identity_and_zero_gradients(sem, always_compact):
    th = fl.compile(RULES, sem)
    facts, domains = fixed_facts(empty=True)
    ev = assert_identical(th, facts, domains, GRAD_KEYS)
    for name in ("guarded_heavy", "crisp_iff", "nested", "softmax", "literal"):
        assert torch.equal(ev.truth[name], torch.full_like(ev.truth[name], FORALL_IDENTITY)), name
    _, g = run(th, facts, domains, GRAD_KEYS, dense=False)
    for k in ("other", "cls"):  # (rel: in the rule `diagonal` only; mask: in `constants` too)
        assert g[k] is None or not g[k].any(), k


def test_default_thresholds_compact_only_sparse_heavy_bodies(compactions):
    # A VOC-like scope: rows of 64 x 64 cells, a pair guard kept on 2 of 18 pairs.
    text = """
    sort region
    sort row
    sort col
    predicate mask(region, row, col) logits
    predicate ov(region, region)
    predicate near(row, col)
    rule exclusive: forall a, b in ov(a, b): forall r, c: not (mask(a, r, c) and mask(b, r, c))
    rule smooth: forall a, r, c in near(r, c): mask(a, r, c) -> mask(a, r, c)
    rule light: forall a, b in ov(a, b): forall r, c: mask(a, r, c)
    """
    th = fl.compile(text, "log_product")
    ov = torch.zeros(2, 3, 3)
    ov[0, 0, 1] = ov[1, 2, 0] = 1.0
    facts = dict(mask=torch.randn(2, 3, 64, 64) * 4, ov=ov, near=torch.rand(2, 64, 64))
    assert_identical(th, facts, {}, ("mask",), exact_grads=True)
    # only the heavy body under the sparse pair guard: rows = the 2 kept pairs
    assert compactions == [(3, 2)]


@pytest.mark.parametrize("word", ["or", "and"])
def test_a_chain_of_2000_terms_is_compacted_like_any_body(word, compactions):
    # one disjunct per class under a sparse guard: the compiler's look at the body
    # (elementwise, heavy, full axes) and the compacted evaluation, in loops
    n = 2000
    text = ("sort region\nsort row\npredicate ov(region, region)\n"
            + "".join(f"predicate m{i}(region, row) logits\n" for i in range(n))
            + "rule r: forall a, b in ov(a, b): forall r: "
            + f" {word} ".join(f"m{i}(a, r)" if i % 2 else f"m{i}(b, r)" for i in range(n)))
    th = fl.compile(text, "log_product")
    gen = torch.Generator().manual_seed(2)
    ov = torch.zeros(2, 3, 3)
    ov[0, 0, 1] = ov[1, 2, 0] = 1.0
    shift = -9.0 if word == "or" else 9.0  # chains far from 0 and 1
    facts = {f"m{i}": torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) + shift
             for i in range(n)}
    ev = assert_identical(th, dict(facts, ov=ov), {}, ("m0", f"m{n - 1}"))
    assert compactions == [(3, 2)]
    t = ev.truth["r"].detach()
    assert 0.01 < float(t.min()) and float(t.max()) < 0.99


def test_dense_switch_and_weights_that_need_gradients(compactions, always_compact):
    th = fl.compile(RULES, "log_product")
    facts, domains = fixed_facts()
    with sparse_guards(False):
        th.loss(domains=domains, **facts)
    assert compactions == []
    # A guard that needs a gradient: d/dw where w = 0 depends on the body, so the
    # body is kept everywhere for it (and the gradient of the guard is exact).
    assert_identical(th, facts, domains, GRAD_KEYS + ("g", "crisp", "ov", "lab", "sel"))


def test_user_quantifiers_are_dense_unless_they_declare_it(compactions, always_compact):
    @register_operator("forall", "sparse_test_softmin", handles_empty=True, overwrite=True)
    def softmin(a, dims, weight):
        """A user ∀ that reads every cell (filler values would change it)."""
        w = torch.ones_like(a) if weight is None else weight
        return (w * a + (1 - w) * a.detach() * 0.5).mean(dims)

    text = "sort s\npredicate p(s) logits\npredicate g(s)\nrule r: forall x in g(x): p(x) -> p(x)"
    sem = fl.Semantics(forall="sparse_test_softmin")
    th = fl.compile(text, sem)
    facts = dict(p=torch.randn(2, 5), g=(torch.rand(2, 5) < 0.3).float())
    assert_identical(th, facts, {}, ("p",))
    assert compactions == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_theories_sparse_equals_dense(monkeypatch_module, data):
    sem = data.draw(semantics_strategy(), label="semantics")
    atomic = sem.implication[0] not in CONTINUOUS_IMPLICATIONS
    pr = data.draw(problems(atomic_implications=atomic), label="problem")
    monkeypatch_module.setattr(sparse, "_ROW_CELLS", data.draw(st.sampled_from([1, 4, 10 ** 9])))
    th = compile_program(pr.program, sem)
    # logits facts need gradients, prob facts (the usual guards) do not
    keys = tuple(k for k, v in pr.facts.items() if isinstance(v, torch.Tensor)
                 and v.is_floating_point() and th.predicates[k].input != "prob")
    facts = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
             for k, v in pr.facts.items()}
    ev = assert_identical(th, facts, pr.domains, keys)
    assert math.isfinite(ev.loss.item())


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setattr(sparse, "_MAX_SHARE", 2.0)
    yield mp
    mp.undo()
