"""Compiler: canonical layout, constants, softmax, guards, log space, cache, no host syncs."""
import math

import pytest
import torch
import torch.nn.functional as F

import fuzzylogic as fl
from fuzzylogic import ast, compiler
from fuzzylogic.errors import CheckError

torch.set_num_threads(1)
G = torch.Generator().manual_seed(1)
GODEL = "godel"


def r64(*shape):
    return torch.rand(*shape, generator=G, dtype=torch.float64)


def test_atoms_are_permuted_into_scope_order():
    # r(b, a) is stored [B, Nb, Na]; the scope is x:a (outer), y:b (inner)
    text = "sort a\nsort b\npredicate r(b, a)\nrule t: forall x: exists y: r(y, x)"
    r = r64(2, 3, 4)
    got = fl.compile(text, GODEL).truth(r=r)["t"]
    assert torch.allclose(got, r.amax(1).amin(1))


def test_multi_axis_sorts_reduce_all_their_axes():
    text = "sort pixel[2]\nsort box\npredicate inside(pixel, box)\nrule t: forall b: exists p: inside(p, b)"
    x = r64(2, 5, 6, 3)
    got = fl.compile(text, GODEL).truth(inside=x)["t"]
    assert torch.allclose(got, x.amax((1, 2)).amin(1))
    # the same plan serves another image size
    y = r64(1, 7, 2, 4)
    assert torch.allclose(fl.compile(text, GODEL).truth(inside=y)["t"], y.amax((1, 2)).amin(1))


def test_constants_fixed_int_and_per_batch_gather():
    text = """
    sort class
    sort pixel[2]
    predicate seg(class, pixel) softmax(class)
    constant bg: class = 0
    constant k: class
    rule t: forall p: seg(bg, p) or seg(k, p)
    """
    th = fl.compile(text, "lukasiewicz")
    z = torch.randn(3, 4, 5, 6, generator=G, dtype=torch.float64)
    sm = z.softmax(1)
    idx = torch.tensor([1, 3, 0])
    want = torch.stack([(sm[b, 0] + sm[b, idx[b]]).clamp_max(1).mean() for b in range(3)])
    assert torch.allclose(th.truth(seg=z, k=idx)["t"], want)
    want2 = (sm[:, 0] + sm[:, 2]).clamp_max(1).mean((1, 2))
    assert torch.allclose(th.truth(seg=z, k=2)["t"], want2)


def test_per_batch_constant_broadcasts_a_batch_one_fact():
    text = "sort s\npredicate a(s)\nconstant c: s\nrule t: a(c)"
    a = r64(1, 4)
    got = fl.compile(text).truth(a=a, c=torch.tensor([3, 0, 2]))["t"]
    assert torch.allclose(got, a[0, [3, 0, 2]])


def test_repeated_variable_takes_the_diagonal():
    text = "sort s\nsort t\npredicate rel(s, t, s)\nrule d: forall x: forall y: rel(x, y, x)"
    r = r64(2, 3, 4, 3)
    got = fl.compile(text, GODEL).truth(rel=r)["d"]
    want = torch.stack([torch.stack([r[:, i, :, i] for i in range(3)], 1)], 0)[0].amin((1, 2))
    assert torch.allclose(got, want)


def test_spatial_softmax_over_a_two_axis_sort():
    text = "sort pixel[2]\npredicate loc(pixel) softmax(pixel)\nrule t [exists = max]: exists p: loc(p)"
    z = torch.randn(2, 4, 5, generator=G, dtype=torch.float64)
    got = fl.compile(text).truth(loc=z)["t"]
    assert torch.allclose(got, z.flatten(1).softmax(1).amax(1))


def test_batch_of_one_broadcasts():
    text = "sort s\npredicate a(s)\npredicate b(s)\nrule t: forall x: a(x) and b(x)"
    a, b = r64(1, 4), r64(3, 4)
    got = fl.compile(text, "lukasiewicz").truth(a=a, b=b)["t"]
    assert got.shape == (3,)
    assert torch.allclose(got, (a + b - 1).clamp_min(0).mean(1))


def test_guard_is_a_masked_reduction_not_an_implication():
    # SEMANTICS.md: with mean, `forall x: g(x) -> a(x)` dilutes by the elements
    # outside g; `forall x in g(x): a(x)` does not.
    text = """
    sort s
    predicate g(s)
    predicate a(s)
    rule guarded: forall x in g(x): a(x)
    rule implied: forall x: g(x) -> a(x)
    """
    th = fl.compile(text, fl.Semantics(forall="mean", implication="kleene_dienes"))
    g = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[0.2, 0.4, 0.0, 0.0]], dtype=torch.float64)
    t = th.truth(g=g, a=a)
    assert t["guarded"].item() == pytest.approx(0.3)
    assert t["implied"].item() == pytest.approx((0.2 + 0.4 + 1 + 1) / 4)
    # soft guards weight the mean
    g2 = torch.tensor([[1.0, 0.5, 0.0, 0.0]], dtype=torch.float64)
    assert th.truth(g=g2, a=a)["guarded"].item() == pytest.approx((0.2 + 0.2) / 1.5)


def test_guard_shorthand_inserts_the_bound_variable():
    text = """
    sort pixel[2]
    sort box
    predicate inside(pixel, box)
    predicate cup(pixel)
    constant disc_box: box
    rule short [forall = mean]: forall p in inside(disc_box): cup(p)
    rule long [forall = mean]: forall p in inside(p, disc_box): cup(p)
    """
    th = fl.compile(text)
    ins, cup = (r64(2, 3, 3, 2) > 0.5).double(), r64(2, 3, 3)
    t = th.truth(inside=ins, cup=cup, disc_box=1)
    assert torch.allclose(t["short"], t["long"])


def test_unused_variable_counts_the_domain_size():
    # built by hand: the checker rejects unused variables, the compiler must still count n
    prog = ast.Program(
        sorts=(ast.SortDecl("s"),),
        predicates=(ast.PredicateDecl("a", ()), ast.PredicateDecl("u", ("s",))),
        rules=(ast.Rule("t", ast.Quantified("forall", ("x",), ast.Atom("a", ()), sorts=("s",))),))
    th = fl.compile(prog, "log_product")
    a = torch.tensor([0.5, 0.9], dtype=torch.float64)
    t = th.truth(a=a, u=r64(2, 3))["t"]
    assert torch.allclose(t, a ** 3)


def test_hand_built_program_matches_the_parsed_text():
    text = "sort s\npredicate a(s) logits\npredicate b(s)\nrule r: forall x: a(x) -> b(x)"
    prog = ast.Program(
        sorts=(ast.SortDecl("s"),),
        predicates=(ast.PredicateDecl("a", ("s",), "logits"), ast.PredicateDecl("b", ("s",))),
        rules=(ast.Rule("r", ast.Quantified(
            "forall", ("x",), ast.Implies(ast.Atom("a", (ast.Term("x"),)), ast.Atom("b", (ast.Term("x"),))),
            sorts=("s",))),))
    a, b = torch.randn(2, 5, generator=G), torch.rand(2, 5, generator=G)
    assert torch.allclose(fl.compile(prog).truth(a=a, b=b)["r"], fl.compile(text).truth(a=a, b=b)["r"])


def test_unchecked_program_is_checked_first():
    prog = ast.Program(sorts=(ast.SortDecl("s"),), predicates=(ast.PredicateDecl("a", ("s",)),),
                       rules=(ast.Rule("r", ast.Quantified("forall", ("x",), ast.Atom("a", (ast.Term("x"),)))),))
    th = fl.compile(prog)  # sorts inferred by the checker
    assert th.truth(a=torch.ones(1, 3))["r"].item() == pytest.approx(1.0)


def test_compiler_reports_positions_for_bad_programs():
    prog = ast.Program(sorts=(ast.SortDecl("s"),), predicates=(ast.PredicateDecl("a", ("s",)),),
                       rules=(ast.Rule("r", ast.Quantified("forall", ("x",), ast.Truth(1.5), sorts=("s",))),))
    with pytest.raises(CheckError, match="outside"):
        compiler.compile_program(prog)


# ------------------------------------------------------------------ log space
def test_product_forall_over_512x512_is_accurate_in_log_space():
    text = "sort pixel[2]\npredicate m(pixel) logits\npredicate q(pixel)\n" \
           "rule a: forall p: m(p)\nrule b: forall p: q(p)"
    th = fl.compile(text, "log_product")
    z = 6.0 + torch.randn(1, 512, 512, generator=G)
    prob = torch.rand(1, 512, 512, generator=G) * 0.1 + 0.9
    want_a = F.softplus(-z.double()).sum()  # -log Π σ(z), float64
    want_b = -torch.log(prob.double()).sum()
    # the direct float32 product underflows: its -log is inf
    assert torch.prod(torch.sigmoid(z)).item() == 0.0 and torch.prod(prob).item() == 0.0
    ev = th.evaluate(m=z, q=prob)
    assert ev.per_rule_loss["a"].item() == pytest.approx(want_a.item(), rel=1e-5)
    assert ev.per_rule_loss["b"].item() == pytest.approx(want_b.item(), rel=1e-5)
    assert math.isfinite(ev.loss.item())


def test_confident_violation_keeps_its_gradient_in_log_space():
    # -log(1 - σ(c)(1 - σ(d))) with c = 30, d = -30: the direct form is log(0)
    text = "predicate c() logits\npredicate d() logits\nrule r: c() -> d()"
    th = fl.compile(text, "log_product")
    c = torch.tensor([30.0], requires_grad=True)
    d = torch.tensor([-30.0], requires_grad=True)
    loss = th.loss(c=c, d=d)
    loss.backward()
    cd, dd = c.detach().double(), d.detach().double()
    exact = -(torch.log(torch.exp(-F.softplus(cd)) + torch.exp(-F.softplus(-dd))
                        - torch.exp(-F.softplus(cd) - F.softplus(-dd))))
    assert loss.item() == pytest.approx(exact.item(), rel=1e-5)
    assert torch.isfinite(c.grad).all() and torch.isfinite(d.grad).all()
    assert d.grad.item() < -0.4  # raising d fixes the violation: a real gradient


# ------------------------------------------------------------------ cache
def test_compile_is_cached_on_text_source_and_semantics():
    text = "sort s\npredicate a(s)\nrule cache_probe: forall x: a(x)"
    before = compiler.cache_info()
    t1 = fl.compile(text, "godel")
    t2 = fl.compile(text, "godel")
    after = compiler.cache_info()
    assert t1 is t2
    assert after.hits >= before.hits + 1
    assert fl.compile(text, "product") is not t1
    assert fl.compile(text, fl.Semantics.preset("godel")) is not t1  # another key, same meaning
    assert fl.compile(text, "godel", source="other.rules") is not t1


def test_an_edited_include_is_compiled_again_not_served_from_the_cache(tmp_path, monkeypatch):
    (tmp_path / "common.rules").write_text("sort s\npredicate a(s)\nrule inc: forall x: a(x)\n")
    (tmp_path / "main.rules").write_text('include "common.rules"\nrule main: exists x: a(x)\n')
    a = torch.tensor([[1.0, 1.0]])
    th = fl.load(tmp_path / "main.rules")
    assert fl.load(tmp_path / "main.rules") is th  # unchanged: the cached theory
    (tmp_path / "common.rules").write_text(
        "sort s\npredicate a(s)\nrule inc [weight = 5]: exists x: not a(x)\n")
    th2 = fl.load(tmp_path / "main.rules")
    assert th2 is not th and th2.weights["inc"] == 5.0
    assert th2.truth(a=a)["inc"].item() == 0.0
    # the same text compiled from another folder includes that folder's file
    other = tmp_path / "other"
    other.mkdir()
    (other / "common.rules").write_text("sort s\npredicate a(s)\nrule inc: forall x: not a(x)\n")
    text = 'include "common.rules"\nrule main: exists x: a(x)\n'
    monkeypatch.chdir(tmp_path)
    here = fl.compile(text)
    monkeypatch.chdir(other)
    there = fl.compile(text)
    assert here.weights["inc"] == 5.0 and there.weights["inc"] == 1.0


def test_load_reads_a_file_with_includes(tmp_path):
    (tmp_path / "common.rules").write_text("sort s\npredicate a(s)\n")
    (tmp_path / "main.rules").write_text('include "common.rules"\nrule r: forall x: a(x)\n')
    th = fl.load(tmp_path / "main.rules", "godel")
    assert th.truth(a=torch.tensor([[0.3, 0.6]]))["r"].item() == pytest.approx(0.3)
    with pytest.raises(fl.IncludeError, match="cannot read"):
        fl.load(tmp_path / "missing.rules")


# ------------------------------------------------------------------ host syncs
REFUGE = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
constant disc_box: box
rule cup_in_disc: forall p: cup(p) -> disc(p)
rule outside: forall p where not inside(p, disc_box): not disc(p)
"""

SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "nonzero")


@pytest.fixture
def sync_counter(monkeypatch):
    calls = []
    for name in SYNCS:
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("sem", ["product", "log_product", "godel", "lukasiewicz", "ltn"])
def test_loss_has_no_host_syncs_and_validation_exactly_one(sem, sync_counter, monkeypatch):
    # The path a GPU (or torch.compile) takes: on the CPU, log1mexp and sparse
    # guards size some tensors by their data on purpose (a host read is free there).
    import fuzzylogic.operators as ops
    monkeypatch.setattr(ops, "_is_compiling", lambda: True)
    th = fl.compile(REFUGE, sem)
    cup = torch.randn(2, 8, 8, requires_grad=True)
    kw = dict(cup=cup, disc=torch.randn(2, 8, 8), inside=torch.rand(2, 8, 8, 3),
              disc_box=torch.tensor([0, 2]))
    sync_counter.clear()
    th.loss(validate=False, **kw).backward()
    assert sync_counter == []
    th.loss(domains={"box": torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)}, **kw)
    assert sync_counter == ["tolist"]


# ------------------------------------------------------------------ neighbour offsets
def _clamped(t, dim, k):
    """Hand-written reference of an offset: index i reads clamp(i + k, 0, n - 1)."""
    n = t.shape[dim]
    idx = torch.tensor([min(max(i + k, 0), n - 1) for i in range(n)])
    return t.index_select(dim, idx)


@pytest.mark.parametrize("k", [1, -1, 2, -3, 7, -9])
def test_offsets_read_the_clamped_neighbour(k):
    step = f"{'+' if k > 0 else '-'} {abs(k)}"
    text = ("sort row\nsort col\npredicate m(row, col) logits\npredicate g(row, col)\n"
            f"rule s [semantics = log_product]: forall r, c in g(r, c): m(r, c) <-> m(r, c {step})\n")
    z = torch.randn(2, 4, 5, generator=G, dtype=torch.float64) * 3
    g = r64(2, 4, 5)
    zl = z.clone().requires_grad_()
    got = fl.compile(text).loss(m=zl, g=g)
    zr = z.clone().requires_grad_()
    a, b = torch.sigmoid(zr), torch.sigmoid(_clamped(zr, 2, k))
    iff = (1 - a * (1 - b)) * (1 - b * (1 - a))
    want = -(g * torch.log(iff)).sum((1, 2)).mean()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, zl)[0], torch.autograd.grad(want, zr)[0])


def test_offsets_with_a_diagonal_a_softmax_and_a_sparse_guard_match_hand_written_torch():
    text = """sort s
sort cls
predicate rel(s, s)
predicate seg(cls, s) softmax(cls)
predicate guard(s)
rule diag: forall x: rel(x, x + 1)
rule soft: forall k, x: seg(k, x - 1)
rule sparse: forall x in guard(x): rel(x - 1, x)
"""
    rel, guard = r64(2, 5, 5), r64(2, 5)
    guard[:, 1:4] = 0  # mostly zero: the CPU evaluates the guarded body on the kept rows only
    seg = torch.randn(2, 3, 5, generator=G, dtype=torch.float64)
    got = fl.compile(text, "log_product").truth(rel=rel, seg=seg, guard=guard)  # forall: product
    i = torch.arange(5)
    nxt, prev = (i + 1).clamp(max=4), (i - 1).clamp(min=0)
    torch.testing.assert_close(got["diag"], rel[:, i, nxt].prod(1))
    sm = torch.softmax(seg, 1)[:, :, prev]
    torch.testing.assert_close(got["soft"], sm.flatten(1).prod(1))
    torch.testing.assert_close(got["sparse"], (rel[:, prev, i] ** guard).prod(1))


def test_an_offset_atom_shares_its_predicates_sigmoid_and_logs(monkeypatch):
    text = ("sort r\npredicate m(r) logits\n"
            "rule t: forall x: (m(x) <-> m(x + 1)) and (m(x) -> m(x - 1))")
    calls = []
    real = torch.sigmoid
    monkeypatch.setattr(torch, "sigmoid", lambda t: calls.append(t.shape) or real(t))
    fl.compile(text, "product").truth(m=torch.randn(2, 6, dtype=torch.float64))
    assert calls == [torch.Size([2, 6])]  # one sigmoid for m, m(x + 1) and m(x - 1)


def test_offsets_compile_under_torch_compile():
    text = ("semantics log_product\nsort r\nsort c\npredicate m(r, c) logits\n"
            "rule t: forall x, y: m(x, y) <-> m(x, y + 1)")
    th = fl.compile(text)
    z = torch.randn(2, 4, 6)
    eager = th.loss(m=z)
    compiled = torch.compile(lambda t: th.loss(m=t, validate=False), backend="aot_eager",
                             fullgraph=True)(z)
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("word", ["or", "and"])
@pytest.mark.parametrize("semantics", ["log_product", "godel"])
def test_a_chain_of_2000_terms_compiles_and_evaluates(word, semantics):
    # one disjunct per class: a flat chain is no deep nesting, and nothing recurses
    # once per term (the recursion limit stays 1000)
    n = 2000
    preds = "".join(f"predicate a{i}(s)\n" for i in range(n))
    terms = f" {word} ".join(f"a{i}(x)" for i in range(n))
    th = fl.compile(f"sort s\n{preds}rule r: forall x: {terms}\n", semantics)
    small = r64(n, 2, 3) * (1e-3 if word == "or" else 5e-4)  # products far from 0 and 1
    a = (small if word == "or" else 1.0 - small).requires_grad_()
    facts = {f"a{i}": a[i] for i in range(n)}
    ev = th.evaluate(**facts)
    got_grad, = torch.autograd.grad(ev.loss, a)
    # the same in plain torch: pairwise left to right is, for these, all at once
    b = a.detach().clone().requires_grad_()
    if semantics == "godel":  # max / min, forall min
        chain = b.max(0).values if word == "or" else b.min(0).values
        truth = chain.min(1).values
        loss = (1.0 - truth).mean()
    else:  # probsum / product, forall product, loss -log
        chain = 1.0 - (1.0 - b).prod(0) if word == "or" else b.prod(0)
        truth = chain.prod(1)
        loss = -truth.log().mean()
        assert 0.1 < float(truth.detach().min()) and float(truth.detach().max()) < 0.9
    want_grad, = torch.autograd.grad(loss, b)
    torch.testing.assert_close(ev.truth["r"], truth.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(ev.loss, loss.detach(), rtol=1e-10, atol=0)
    assert torch.isfinite(got_grad).all()
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-8, atol=1e-12)


def test_a_long_chain_plan_is_flat():
    # plan nodes (and what QuantNode reads of its body) are built in loops
    n = 2000
    text = ("sort s\npredicate a(s)\npredicate b(s)\nrule r: forall x: "
            + " or ".join(["a(x) and b(x)"] * n))
    root = fl.compile(text)._plans[0].root
    assert isinstance(root.body, compiler.ChainNode) and len(root.body.operands) == n
    assert all(isinstance(o, compiler.ChainNode) and len(o.operands) == 2
               for o in root.body.operands)
    assert root.elementwise and root.heavy and root.covers


SEG_RULES = "sort pixel[2]\nsort k\npredicate seg(k, pixel)\nconstant bg: k\n"


def compile_error(text):
    with pytest.raises(fl.RuleSemanticsError) as info:
        fl.compile(text, source="f.rules")
    err = info.value
    src, caret = err.context().split("\n")
    assert src[4:] == text.split("\n")[err.line - 1]  # the caret is on the reported line
    assert caret.index("^") - 4 + 1 == err.column
    return err


@pytest.mark.parametrize("option, col, message, hint", [
    ("semantics = prodcut", 22, "unknown semantics 'prodcut'", "did you mean 'product'?"),
    ("forall = pmeen(2)", 19, "unknown forall operator 'pmeen'", "did you mean 'pmean_error'?"),
    ("exists = pmeen(2)", 19, "unknown exists operator 'pmeen'", "did you mean 'pmean'?"),
    ("forall = pmean(2)", 19, "unknown forall operator 'pmean'",
     "did you mean 'pmean_error'? ('pmean' is an exists operator)"),
    ("conjunction = max", 24, "unknown conjunction operator 'max'", "'max' is a disjunction operator"),
    ("semantics = zzz", 22, "unknown semantics 'zzz'", None),
])
def test_a_bad_operator_or_preset_option_is_shown_at_its_value(option, col, message, hint):
    text = SEG_RULES + f"rule r2 [{option}]: forall p: seg(bg, p)\n"
    err = compile_error(text)
    assert (err.source, err.line, err.column) == ("f.rules", 5, col)
    assert err.message.startswith(f"rule 'r2': {message}")
    assert err.hint == hint


def test_the_caret_is_under_the_option_value_not_an_earlier_same_word():
    # (the rule's name holds the operator's name too)
    err = compile_error(SEG_RULES + "rule mean_rule [weight = 2, forall = mean(3)]: forall p: seg(bg, p)")
    assert (err.line, err.column) == (5, 38)
    assert err.message == "rule 'mean_rule': forall operator 'mean' takes 0 parameter(s), got 1: (3,)"


def test_an_option_on_a_later_line_is_shown_there():
    text = SEG_RULES + "rule r2 [weight = 2,\n         forall = pmean_error(0.5)]:\n  forall p: seg(bg, p)\n"
    err = compile_error(text)
    assert (err.line, err.column) == (6, 19)
    assert err.message == "rule 'r2': pmean needs a finite p >= 1, got 0.5"


def test_a_misspelt_file_semantics_line_gets_a_hint():
    err = compile_error(SEG_RULES + "semantics prodcut\nrule r2: forall p: seg(bg, p)\n")
    assert (err.line, err.column) == (5, 1)
    assert err.hint == "did you mean 'product'?"
