"""Theory API: truth / loss / evaluate / report, domains, fact validation."""
import math

import pytest
import torch

import fuzzylogic as fl
from fuzzylogic.errors import FactError, FuzzyLogicError

torch.set_num_threads(1)
G = torch.Generator().manual_seed(2)

REFUGE = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
constant disc_box: box
rule cup_in_disc: forall p: cup(p) -> disc(p)
rule outside [weight = 0.5]: forall p where not inside(p, disc_box): not disc(p)
"""


def facts(B=2, H=6, W=5, N=3, dtype=torch.float64):
    return dict(cup=torch.randn(B, H, W, generator=G, dtype=dtype),
                disc=torch.randn(B, H, W, generator=G, dtype=dtype),
                inside=(torch.rand(B, H, W, N, generator=G) > 0.5).to(dtype),
                disc_box=torch.tensor([0, 2]))


def hand_truth_log_product(f):
    a, b = torch.sigmoid(f["cup"]), torch.sigmoid(f["disc"])
    t1 = (1 - a + a * b).flatten(1).prod(1)
    ins = torch.stack([f["inside"][i, ..., f["disc_box"][i]] for i in range(len(a))])
    t2 = ((1 - b) ** (1 - ins)).flatten(1).prod(1)
    return t1, t2


def test_truth_loss_evaluate_agree_with_hand_computation():
    th = fl.compile(REFUGE, "log_product")
    f = facts()
    t1, t2 = hand_truth_log_product(f)
    t = th.truth(**f)
    assert torch.allclose(t["cup_in_disc"], t1) and torch.allclose(t["outside"], t2)
    # log loss: Σ_r w_r mean_b(-log t)
    want = (-torch.log(t1)).mean() + 0.5 * (-torch.log(t2)).mean()
    assert th.loss(**f).item() == pytest.approx(want.item(), rel=1e-9)
    # linear loss on request
    lin = (1 - t1).mean() + 0.5 * (1 - t2).mean()
    assert th.loss(mode="linear", **f).item() == pytest.approx(lin.item(), rel=1e-9)
    ev = th.evaluate(**f)
    assert torch.allclose(ev.truth["cup_in_disc"], t1)
    assert ev.loss.item() == pytest.approx(sum(v.item() for v in ev.per_rule_loss.values()))
    assert ev.per_rule_loss["outside"].item() == pytest.approx(0.5 * (-torch.log(t2)).mean().item())


def test_reductions():
    th = fl.compile(REFUGE, "product")
    f = facts()
    t = th.truth(**f)
    per_b = (1 - t["cup_in_disc"]) + 0.5 * (1 - t["outside"])
    assert torch.allclose(th.loss(reduction="none", **f), per_b)
    assert th.loss(reduction="sum", **f).item() == pytest.approx(per_b.sum().item())
    assert th.loss(**f).item() == pytest.approx(per_b.mean().item())
    with pytest.raises(FuzzyLogicError, match="reduction"):
        th.loss(reduction="max", **f)
    with pytest.raises(FuzzyLogicError, match="mode"):
        th.loss(mode="squared", **f)


def test_gradients_flow_and_are_finite_at_saturation():
    th = fl.compile(REFUGE, "log_product")
    f = facts()
    f["cup"] = torch.tensor([100.0, -100.0, 0.0]).repeat(2, 10)[:, :30].reshape(2, 6, 5).requires_grad_()
    f["disc"] = f["disc"].requires_grad_()
    th.loss(**f).backward()
    assert torch.isfinite(f["cup"].grad).all() and torch.isfinite(f["disc"].grad).all()
    assert f["disc"].grad.abs().sum() > 0


# ------------------------------------------------------------------ domains
BOXES = """
sort box
sort pixel[2]
predicate inbox(pixel, box)
predicate obj(pixel) logits
rule each_box_has_object [exists = max]: forall b: exists p in inbox(p, b): obj(p)
rule some_box [exists = max, forall = min]: exists b: forall p in inbox(p, b): obj(p)
"""


def test_domains_mask_padded_boxes():
    th = fl.compile(BOXES, "product")
    inbox = (torch.rand(2, 4, 4, 5, generator=G) > 0.5).double()
    obj = torch.randn(2, 4, 4, generator=G, dtype=torch.float64)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    got = th.truth(inbox=inbox, obj=obj, domains={"box": valid})
    for b, n in ((0, 3), (1, 2)):  # the same as evaluating on the valid boxes only
        ref = th.truth(inbox=inbox[b:b + 1, ..., :n], obj=obj[b:b + 1])
        for k in ref:
            assert got[k][b].item() == pytest.approx(ref[k].item(), abs=1e-12)


def test_empty_domain_forall_one_exists_zero_zero_gradient():
    th = fl.compile(BOXES, "product")
    inbox = torch.ones(2, 3, 3, 2, dtype=torch.float64)
    obj = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[0, 0], [1, 1]], dtype=torch.bool)
    t = th.truth(inbox=inbox, obj=obj, domains={"box": valid})
    assert t["each_box_has_object"][0].item() == 1.0
    assert t["some_box"][0].item() == 0.0
    (t["each_box_has_object"][0] + t["some_box"][0]).backward()
    assert torch.all(obj.grad == 0)
    # zero boxes at all (N = 0): same identities, no NaN
    t0 = th.truth(inbox=torch.zeros(2, 3, 3, 0), obj=obj.detach())
    assert t0["each_box_has_object"].tolist() == [1.0, 1.0] and t0["some_box"].tolist() == [0.0, 0.0]


def test_guarded_forall_over_an_empty_guard_is_one():
    th = fl.compile("sort s\npredicate g(s)\npredicate a(s) logits\nrule r: forall x in g(x): a(x)",
                    "product")
    a = torch.randn(1, 4, requires_grad=True)
    t = th.truth(g=torch.zeros(1, 4), a=a)["r"]
    t.sum().backward()
    assert t.item() == 1.0 and torch.all(a.grad == 0)


# ------------------------------------------------------------------ validation
def test_fact_error_names_predicate_expected_and_actual_shape():
    text = """
    sort pixel[2]
    predicate disc(pixel) logits
    predicate cup(pixel) logits
    rule r: forall p: cup(p) -> disc(p)
    """
    th = fl.compile(text)
    with pytest.raises(FactError) as e:
        th.truth(disc=torch.zeros(2, 64, 64), cup=torch.zeros(2, 64, 63))
    assert str(e.value) == ("fact 'cup': expected shape [B, H, W] with H, W = 64, 64 "
                            "(sort pixel, from fact 'disc'), got [2, 64, 63]")


@pytest.mark.parametrize("change,match", [
    (dict(cup=None), r"missing 'cup' \(\[B, H, W\] logits\)"),
    (dict(cupp=torch.zeros(2, 6, 5)), "unknown fact or constant 'cupp' \\(did you mean 'cup'\\?\\)"),
    (dict(cup=torch.zeros(6, 5)),
     r"fact 'cup': expected 3 axes \[B, H, W\], got 2 axes \[6, 5\] \(missing the batch axis"),
    (dict(disc=torch.zeros(3, 6, 5)), "fact 'disc': batch size 3 does not match 2 .from fact 'cup'"),
    (dict(inside=torch.full((2, 6, 5, 3), 1.5)), r"fact 'inside' \(prob\): values must lie in \[0, 1\], got min 1.5"),
    (dict(disc=torch.full((2, 6, 5), float("nan"))), "fact 'disc' \\(logits\\) contains NaN or inf"),
    (dict(disc_box=5), "index 5 is out of range for sort box of size 3"),
    (dict(disc_box=torch.tensor([0, 3])), r"constant 'disc_box': indices must lie in \[0, 2\]"),
    (dict(disc_box=torch.tensor([0.0, 1.0])), "expected integer indices"),
    (dict(disc_box=None), "missing 'disc_box'"),
    (dict(cup=torch.zeros(2, 6, 5, dtype=torch.long)), "expected a floating tensor"),
])
def test_fact_errors(change, match):
    th = fl.compile(REFUGE)
    f = facts()
    for k, v in change.items():
        if v is None:
            f.pop(k)
        else:
            f[k] = v
    with pytest.raises(FactError, match=match):
        th.truth(**f)


MISSING_AXIS = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate inside(pixel, box)
rule r: forall p, b: inside(p, b) -> cup(p)
"""


@pytest.mark.parametrize("bindings,message", [
    # the batch axis missing: the hint says so, whichever fact is bound first
    (dict(cup=torch.randn(64, 64), inside=torch.rand(2, 64, 64, 3)),
     "fact 'cup': expected 3 axes [B, H, W], got 2 axes [64, 64] "
     "(missing the batch axis? add it with .unsqueeze(0))"),
    (dict(inside=torch.rand(64, 64, 3), cup=torch.randn(2, 64, 64)),
     "fact 'inside': expected 4 axes [B, H, W, BOX], got 3 axes [64, 64, 3] "
     "(missing the batch axis? add it with .unsqueeze(0))"),
    # nothing else known to tell: the batch axis, the usual slip
    (dict(cup=torch.randn(64, 64), inside=torch.rand(2, 64, 64)),
     "fact 'cup': expected 3 axes [B, H, W], got 2 axes [64, 64] "
     "(missing the batch axis? add it with .unsqueeze(0))"),
    # the batch axis is there, the trailing BOX axis is not
    (dict(cup=torch.randn(2, 64, 64), inside=torch.rand(2, 64, 64)),
     "fact 'inside': expected 4 axes [B, H, W, BOX], got 3 axes [2, 64, 64] "
     "(missing the BOX axis (sort box)?)"),
    (dict(inside=torch.rand(2, 64, 64), cup=torch.randn(2, 64, 64)),
     "fact 'inside': expected 4 axes [B, H, W, BOX], got 3 axes [2, 64, 64] "
     "(missing the BOX axis (sort box)?)"),
    # one of a sort's axes, which one cannot be told (H = W)
    (dict(inside=torch.rand(2, 64, 64, 3), cup=torch.randn(2, 64)),
     "fact 'cup': expected 3 axes [B, H, W], got 2 axes [2, 64] "
     "(missing one of the H, W axes (sort pixel)?)"),
    # nothing fits the known sizes with any one axis added: no hint
    (dict(inside=torch.rand(2, 64, 64, 3), cup=torch.randn(2, 7)),
     "fact 'cup': expected 3 axes [B, H, W], got 2 axes [2, 7]"),
])
def test_missing_axis_hint_names_the_axis_that_seems_missing(bindings, message):
    th = fl.compile(MISSING_AXIS, semantics="log_product")
    with pytest.raises(FactError) as e:
        th.loss(**bindings)
    assert str(e.value) == message


def test_missing_axis_hint_of_a_domain():
    th = fl.compile(MISSING_AXIS)
    f = dict(cup=torch.randn(2, 4, 4), inside=torch.rand(2, 4, 4, 3))
    with pytest.raises(FactError, match=r"domain 'box': expected 2 axes \[B, BOX\], got 1 axes \[3\] "
                                        r"\(missing the batch axis\?"):
        th.truth(domains={"box": torch.ones(3)}, **f)


def test_domain_errors():
    th = fl.compile(REFUGE)
    with pytest.raises(FactError, match="unknown sort 'boxes'"):
        th.truth(domains={"boxes": torch.ones(2, 3)}, **facts())
    with pytest.raises(FactError, match=r"domain 'box': expected shape \[B, BOX\] with BOX = 3"):
        th.truth(domains={"box": torch.ones(2, 4)}, **facts())
    with pytest.raises(FactError, match=r"domain 'box': values must lie in \[0, 1\]"):
        th.truth(domains={"box": torch.full((2, 3), 2.0)}, **facts())


def test_fixed_constant_cannot_be_bound():
    th = fl.compile("sort c\npredicate a(c)\nconstant bg: c = 0\nrule r: a(bg)")
    with pytest.raises(FactError, match="fixed index 0"):
        th.truth(a=torch.rand(1, 3), bg=1)


def test_validate_false_skips_value_checks():
    th = fl.compile(REFUGE)
    f = facts()
    f["inside"] = torch.full((2, 6, 5, 3), 0.5)
    f["inside"][0, 0, 0, 0] = 7.0
    th.truth(validate=False, **f)  # no error: the caller opted out


def test_dtypes_half_computes_in_float32_and_float64_stays():
    th = fl.compile(REFUGE, "log_product")
    f = facts(dtype=torch.float16)
    assert th.truth(**f)["cup_in_disc"].dtype == torch.float32
    assert th.truth(**facts())["cup_in_disc"].dtype == torch.float64
    f = facts()
    f["inside"] = f["inside"] > 0.5  # bool masks are fine
    assert th.truth(**f)["outside"].dtype == torch.float64


def test_signature_and_repr():
    th = fl.compile(REFUGE)
    sig = th.signature()
    assert sig["inside"] == "[B, H, W, BOX] prob" and sig["cup"] == "[B, H, W] logits"
    assert "disc_box" in sig and "cup_in_disc" in repr(th)
    # softmax over which axis: the sort, or the argument's number where two share it
    th = fl.compile("sort class\nsort pixel[2]\npredicate seg(class, pixel) softmax(class)\n"
                    "predicate rel(class, class) softmax(2)\n"
                    "rule r: forall k, p: seg(k, p)\nrule q: forall a, b: rel(a, b)")
    assert th.signature()["seg"].endswith(" softmax(class)")
    assert th.signature()["rel"] == "[B, CLASS, CLASS] softmax(2)"


# ------------------------------------------------------------------ report
def test_report_shares_for_implications():
    th = fl.compile("sort s\npredicate a(s)\npredicate b(s)\nrule r: forall x: a(x) -> b(x)\n"
                    "rule plain: forall x: a(x)", "product")
    a = torch.tensor([[0.9, 0.9, 0.1, 0.8], [0.2, 0.2, 0.2, 0.2]], dtype=torch.float64)
    b = torch.tensor([[0.9, 0.1, 0.1, 0.3], [0.9, 0.9, 0.9, 0.9]], dtype=torch.float64)
    rep = th.report(a=a, b=b)
    r = rep["r"]
    assert r.premise == pytest.approx(3 / 8)  # a > 0.5 at 3 of 8 elements
    assert r.violated == pytest.approx(2 / 8)  # of which b < 0.5 at 2
    assert r.violated_given_premise == pytest.approx(2 / 3)
    t = th.truth(a=a, b=b)
    assert r.truth == pytest.approx(t["r"].mean().item())
    assert rep["plain"].premise is None
    d = rep.as_dict()
    assert d["rules"]["r"]["violated"] == pytest.approx(0.25) and "loss" in d
    s = str(rep)
    assert "premise" in s and "plain" in s and "total" in s


def test_report_counts_only_guarded_domain_elements():
    th = fl.compile("sort s\npredicate g(s)\npredicate a(s)\npredicate b(s)\n"
                    "rule r: forall x in g(x): a(x) -> b(x)", "product")
    g = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    a = torch.tensor([[0.9, 0.9, 0.9, 0.9]])
    b = torch.tensor([[0.1, 0.9, 0.1, 0.1]])
    r = th.report(g=g, a=a, b=b, domains={})["r"]
    assert r.premise == pytest.approx(1.0) and r.violated == pytest.approx(0.5)


def test_report_of_curried_implication_uses_all_premises():
    text = REFUGE.replace("rule cup_in_disc: forall p: cup(p) -> disc(p)",
                          "rule cup_in_disc: forall p: inside(p, disc_box) -> cup(p) -> disc(p)")
    th = fl.compile(text)
    f = facts()
    r = th.report(**f)["cup_in_disc"]
    ins = torch.stack([f["inside"][i, ..., f["disc_box"][i]] for i in range(2)])
    prem = (ins > 0.5) & (torch.sigmoid(f["cup"]) > 0.5)
    assert r.premise == pytest.approx(prem.double().mean().item())
    viol = prem & (torch.sigmoid(f["disc"]) < 0.5)
    assert r.violated == pytest.approx(viol.double().mean().item())
    assert not math.isnan(r.loss)


def test_unused_bound_constant_still_sets_the_batch_size():
    # Found by the compiled-vs-reference property test: a constant bound per item
    # but used by no rule must still give one truth value per batch item.
    import fuzzylogic as fl

    th = fl.compile("sort s\npredicate p(s, s)\nconstant c: s\nrule r: forall v: not p(v, v)\n",
                    semantics="godel")
    out = th.truth(c=torch.tensor([0, 1]), p=torch.zeros(1, 3, 3))
    assert out["r"].tolist() == [1.0, 1.0]


def test_mixed_log_and_linear_rules_reduce_per_rule_and_in_total():
    # the rules' losses are reduced together in batched ops: each must still be
    # its own weight * reduce_b(-log t) or weight * reduce_b(1 - t)
    text = """
    sort s
    predicate a(s) logits
    predicate b(s)
    rule r1 [weight = 2, loss = log]: forall x: a(x) -> b(x)
    rule r2 [weight = 0.5]: exists x: a(x) and not b(x)
    rule r3 [weight = 3, loss = log]: forall x, y: a(x) <-> a(y)
    """
    th = fl.compile(text, "product")
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(3, 5, generator=g, dtype=torch.float64)
    truth = th.truth(a=a, b=b)
    for reduction in ("mean", "sum", "none"):
        ev = th.evaluate(a=a, b=b, reduction=reduction)
        red = {"mean": lambda t: t.mean(), "sum": lambda t: t.sum(), "none": lambda t: t}[reduction]
        want = {"r1": 2 * red(-torch.log(truth["r1"])), "r2": 0.5 * red(1 - truth["r2"]),
                "r3": 3 * red(-torch.log(truth["r3"]))}
        for name, w in want.items():
            assert torch.allclose(ev.per_rule_loss[name], w), (reduction, name)
            assert torch.allclose(ev.truth[name], truth[name])
        assert torch.allclose(ev.loss, sum(want.values()))
    (g_a,) = torch.autograd.grad(th.loss(a=a, b=b), a)
    assert torch.isfinite(g_a).all() and g_a.abs().sum() > 0


def test_the_odd_fact_out_is_named_whatever_the_binding_order():
    th = fl.compile("sort pixel[2]\npredicate cup(pixel) logits\npredicate disc(pixel) logits\n"
                    "predicate rim(pixel) logits\nrule r: forall p: cup(p) -> disc(p)\n"
                    "rule q: forall p: rim(p) -> disc(p)\n")
    good, bad = torch.randn(2, 8, 8), torch.randn(2, 8, 7)
    for order in (("cup", "disc", "rim"), ("disc", "cup", "rim"), ("rim", "disc", "cup")):
        facts = {n: (bad if n == "cup" else good) for n in order}
        with pytest.raises(fl.FactError, match=r"fact 'cup': expected shape \[B, H, W\] with "
                                               r"H, W = 8, 8 .*got \[2, 8, 7\]"):
            th.loss(**facts)


def test_a_shape_error_under_torch_compile_with_dynamic_sizes_still_names_the_fact():
    from fuzzylogic.nn import LogicLoss

    crit = LogicLoss("sort pixel[2]\npredicate cup(pixel) logits\npredicate disc(pixel) logits\n"
                     "rule r: forall p: cup(p) -> disc(p)\n")
    f = torch.compile(lambda **kw: crit(**kw), backend="eager", fullgraph=True)
    f(cup=torch.randn(2, 8, 8), disc=torch.randn(2, 8, 8))
    f(cup=torch.randn(2, 10, 10), disc=torch.randn(2, 10, 10))  # sizes now dynamic
    with pytest.raises(Exception, match=r"fact 'disc': its H, W \(sort pixel\) differ"):
        f(cup=torch.randn(2, 8, 8), disc=torch.randn(2, 8, 7))


@pytest.mark.parametrize("index", [3, 99999999999999999999999])
def test_a_fixed_constant_index_past_its_sort_is_a_fact_error(index):
    th = fl.compile(f"sort a\npredicate p(a)\nconstant c: a = {index}\nrule r: p(c)\n")
    with pytest.raises(fl.FactError, match=rf"constant 'c' has the index {index} in the rules, "
                                           r"but sort a has 3 elements here \(from fact 'p'\)"):
        th.truth(p=torch.rand(2, 3))
    if index == 3:
        assert th.truth(p=torch.rand(2, 5))["r"].shape == (2,)


def test_shape_checks_run_once_per_signature_and_again_for_a_new_one():
    # The host checks of names, shapes, dtypes and devices are cached per binding
    # signature: a new shape or dtype is checked again, with the same messages.
    text = "sort s\nsort t\npredicate a(s) logits\npredicate b(s, t)\nrule r: forall x, y: a(x) -> b(x, y)\n"
    th = fl.compile(text, source="<signature cache>")
    good = dict(a=torch.randn(2, 3), b=torch.rand(2, 3, 4))
    first = th.truth(**good)["r"]
    assert torch.equal(th.truth(**good)["r"], first)
    assert len(th._shapes) == 1
    bad = dict(a=torch.randn(2, 3), b=torch.rand(2, 5, 4))
    fresh = fl.compile(text, source="<signature cache, fresh>")
    with pytest.raises(FactError) as e1:
        th.truth(**bad)
    with pytest.raises(FactError) as e2:
        fresh.truth(**bad)
    assert str(e1.value) == str(e2.value)
    assert "fact 'b'" in str(e1.value)
    # another dtype: the result follows it
    out = th.truth(a=good["a"].double(), b=good["b"].double())["r"]
    assert out.dtype == torch.float64 and torch.allclose(out.float(), first)
    with pytest.raises(FactError, match="expected a floating tensor"):
        th.truth(a=torch.zeros(2, 3, dtype=torch.long), b=good["b"])


@pytest.mark.parametrize("semantics", ["product", "log_product", "godel", "ltn"])
def test_a_variable_only_the_guard_uses_still_counts_in_the_body(semantics):
    # forall x, y in g(x, y): a(x): the body, broadcast over y, is expanded
    # before the reduction (QuantNode.covers is False) where a built-in needs it
    from fuzzylogic import reference

    text = ("sort s\nsort t\npredicate a(s)\npredicate g(s, t)\n"
            "rule r: forall x, y in g(x, y): a(x)\nrule q: exists x, y in g(x, y): a(x)\n"
            "rule both: forall x, y in g(x, y): a(x) and g(x, y)\n")
    th = fl.compile(text, semantics)
    a, g = torch.rand(2, 3), (torch.rand(2, 3, 4) > 0.3).double()
    a = a.double()
    out = th.truth(a=a, g=g)
    ref = reference.evaluate(text, {"a": a, "g": g}, semantics=semantics)
    for name in ("r", "q", "both"):
        assert torch.allclose(out[name], torch.tensor(ref[name], dtype=torch.float64)), name
    roots = {p.name: p.root for p in th._plans}
    assert not roots["r"].covers and roots["both"].covers


@pytest.mark.parametrize("semantics", ["log_product", "product", "godel"])
def test_a_nested_quantifier_over_nothing_still_counts_every_outer_element(semantics):
    # An inner quantifier over an empty sort, or under a guard that is zero everywhere
    # (the CPU's sparse path), returns its identity as a broadcast constant: the outer
    # reduction must still count all its elements (values, gradients, with or without
    # a domain mask, sparse or dense), as the brute-force reference does.
    from fuzzylogic import reference, sparse

    text = ("sort s\nsort t\nsort u\npredicate g(s)\npredicate p(s, t, u)\npredicate h(t, u)\n"
            "rule empty [loss = log]: forall a: forall x: (exists y: p(a, x, y)) and g(a)\n"
            "rule zero_guard [loss = log]: forall a in g(a): forall x: exists y in h(x, y): "
            "p(a, x, y) and g(a)\n")
    th = fl.compile(text, semantics)
    torch.manual_seed(0)
    for ny, h in ((0, torch.zeros(1, 5, 0)), (4, torch.zeros(1, 5, 4))):
        g = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
        facts = dict(g=g, p=torch.rand(2, 3, 5, ny, dtype=torch.float64), h=h.double())
        ref = reference.evaluate(text, {k: v.detach() for k, v in facts.items()},
                                 semantics=semantics)
        out = th.truth(**facts)
        for name in ("empty", "zero_guard"):
            assert torch.allclose(out[name], torch.tensor(ref[name], dtype=torch.float64)), (ny, name)
        grads = []
        for doms, on in (({}, True), ({"t": torch.ones(1, 5)}, True), ({}, False)):
            with sparse.sparse_guards(on):
                (grad,) = torch.autograd.grad(th.loss(domains=doms, **facts), g)
            grads.append(grad)
        assert all(torch.allclose(grads[0], x) for x in grads[1:]), ny


def test_a_theory_with_a_chain_of_2000_terms_pickles_and_compiles_again():
    # pickled as its program: the AST's pickling walks the chain in a loop
    import pickle

    n = 2000
    text = ("sort s\n" + "".join(f"predicate a{i}(s)\n" for i in range(n))
            + "rule r: forall x: " + " or ".join(f"a{i}(x)" for i in range(n)))
    th = fl.compile(text)
    again = pickle.loads(pickle.dumps(th))
    assert again.program == th.program and hash(again.program) == hash(th.program)
    facts = {f"a{i}": torch.full((1, 2), 1e-4, dtype=torch.float64) for i in range(n)}
    assert torch.equal(again.truth(**facts)["r"], th.truth(**facts)["r"])
