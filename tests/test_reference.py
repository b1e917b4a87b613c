"""The brute-force reference evaluator against numbers worked out by hand."""
import math

import pytest
import torch

import fuzzylogic as fl
from fuzzylogic import reference

T = torch.tensor


PRESETS = ("product", "log_product", "godel", "lukasiewicz", "ltn")


def compiled_equals_reference(text, f, grads=False):
    """In every preset the compiled truths equal the reference's (1e-9) and, with
    ``grads``, every gradient of the compiled loss is finite; {preset: the reference's truths}."""
    out = {}
    for sem in PRESETS:
        th = fl.compile(text, sem)
        got = th.truth(**f)
        out[sem] = want = reference.evaluate(text, f, semantics=sem)
        for k in want:
            assert got[k].tolist() == pytest.approx(want[k], abs=1e-9), (sem, k)
        if grads:
            z = {k: v.clone().requires_grad_() for k, v in f.items() if torch.is_tensor(v)}
            th.loss(**{**f, **z}).backward()
            assert all(torch.isfinite(v.grad).all() for v in z.values()), sem
    return out


def test_hand_worked_product_semantics():
    text = """
    sort s
    predicate a(s)
    predicate b(s)
    rule r: forall x: a(x) -> b(x)
    rule e: exists x: a(x) and b(x)
    """
    a, b = T([[0.5, 1.0]]), T([[0.25, 0.5]])
    out = reference.evaluate(text, {"a": a, "b": b}, semantics="log_product")
    # Reichenbach: 1 - a + ab = 0.625, 0.5; product ∀ = 0.3125
    assert out["r"] == [pytest.approx(0.3125)]
    # probsum over a·b = 0.125, 0.5: 1 - 0.875 * 0.5
    assert out["e"] == [pytest.approx(0.5625)]
    out = reference.evaluate(text, {"a": a, "b": b}, semantics="product")
    assert out["r"] == [pytest.approx(1 - math.sqrt((0.375 ** 2 + 0.5 ** 2) / 2))]
    assert out["e"] == [pytest.approx(math.sqrt((0.125 ** 2 + 0.5 ** 2) / 2))]


def test_logits_softmax_constants_and_domains():
    text = """
    sort c
    sort s
    predicate seg(c, s) softmax(c)
    predicate z(s) logits
    constant bg: c = 0
    constant k: s
    rule r [semantics = godel]: forall x: seg(bg, x) or z(k)
    """
    seg = T([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # softmax over c: [0.5, 0.75] for class 0
    zz = T([[0.0, math.log(1 / 9)]])  # σ = 0.5, 0.1
    out = reference.evaluate(text, {"seg": seg, "z": zz, "k": 1})
    assert out["r"] == [pytest.approx(0.5)]  # min over x of max(seg0(x), 0.1)
    out = reference.evaluate(text, {"seg": seg, "z": zz, "k": 1}, domains={"s": T([[0.0, 1.0]])})
    assert out["r"] == [pytest.approx(0.75)]
    out = reference.evaluate(text, {"seg": seg, "z": zz, "k": 1}, domains={"s": T([[0.0, 0.0]])})
    assert out["r"] == [1.0]


def test_batch_items_and_per_batch_constants():
    text = "sort s\npredicate a(s)\nconstant k: s\nrule r: a(k)"
    out = reference.evaluate(text, {"a": T([[0.1, 0.2], [0.3, 0.4]]), "k": T([1, 0])})
    assert out["r"] == [pytest.approx(0.2), pytest.approx(0.3)]


def test_reference_loss():
    text = "predicate a()\nrule r [weight = 2]: a()"
    a = T([0.5, 0.25])
    assert reference.loss(text, {"a": a}) == pytest.approx(2 * (0.5 + 0.75) / 2)
    assert reference.loss(text, {"a": a}, mode="log") == pytest.approx(2 * (math.log(2) + math.log(4)) / 2)


def test_reference_matches_compiled_on_the_design_example():
    text = """
    sort pixel[2]
    sort box
    predicate cup(pixel) logits
    predicate disc(pixel) logits
    predicate inside(pixel, box)
    constant disc_box: box
    rule cup_in_disc: forall p: inside(p, disc_box) -> cup(p) -> disc(p)
    rule outside_bg [weight = 0.5, forall = pmean_error(2)]: forall p where not (exists b: inside(p, b)): not disc(p)
    rule rows [exists = log_sum_exp(8)]: forall b: exists p in inside(p, b): cup(p)
    """
    g = torch.Generator().manual_seed(3)
    f = dict(cup=torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
             disc=torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
             inside=torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64),
             disc_box=T([1, 0]))
    compiled_equals_reference(text, f)


def test_registered_operators_fall_back_to_their_tensor_function():
    @fl.register_operator("implication", "reference_test_dienes")
    def kd(a, b):
        return torch.maximum(1 - a, b)

    text = "predicate a()\npredicate b()\nrule r [implication = reference_test_dienes]: a() -> b()"
    out = reference.evaluate(text, {"a": T([0.8]), "b": T([0.3])})
    assert out["r"] == [pytest.approx(0.3)]


@pytest.mark.parametrize("word", ["or", "and"])
def test_a_chain_of_300_terms_matches_the_compiled_theory(word):
    n = 300
    preds = "".join(f"predicate a{i}(s) logits\n" for i in range(n))
    text = f"sort s\n{preds}rule r: exists x: " + f" {word} ".join(f"a{i}(x)" for i in range(n))
    g = torch.Generator().manual_seed(5)
    # logits around +-7: chains of 300 stay away from 0 and 1
    shift = 7.0 if word == "and" else -7.0
    f = {f"a{i}": torch.randn(2, 3, generator=g, dtype=torch.float64) + shift for i in range(n)}
    for sem in ("product", "log_product", "godel", "lukasiewicz"):
        got = fl.compile(text, sem).truth(**f)["r"]
        want = reference.evaluate(text, f, semantics=sem)["r"]
        assert got.tolist() == pytest.approx(want, abs=1e-9), sem


def test_a_chain_is_folded_pairwise_left_to_right():
    # a registered operator need not be associative (nor commutative): a chain is
    # ((a0 op a1) op a2) ..., in the reference and in the compiled theory alike
    @fl.register_operator("conjunction", "reference_test_lopsided")
    def lopsided(a, b):
        return (a + b * b) / 2

    n = 300
    preds = "".join(f"predicate a{i}()\n" for i in range(n))
    text = (f"{preds}rule r [conjunction = reference_test_lopsided]: "
            + " and ".join(f"a{i}()" for i in range(n)))
    g = torch.Generator().manual_seed(6)
    f = {f"a{i}": torch.rand(2, generator=g, dtype=torch.float64) for i in range(n)}
    want = []
    for b in range(2):
        v = float(f["a0"][b])
        for i in range(1, n):
            v = (v + float(f[f"a{i}"][b]) ** 2) / 2
        want.append(v)
    assert reference.evaluate(text, f)["r"] == pytest.approx(want, abs=1e-12)
    assert fl.compile(text).truth(**f)["r"].tolist() == pytest.approx(want, abs=1e-12)


def test_a_quantifiers_own_operator_overrides_the_rules_in_both_evaluators():
    """`forall[at_least(0.5)]` inside a rule whose forall is min: each box holds at
    least half object pixels; `exists[log_sum_exp(4)]` under a godel rule."""
    text = """
    sort region
    sort row
    sort col
    predicate mask(region, row, col) logits
    predicate inbox(region, row, col)
    rule fill [forall = min]: forall a: forall[at_least(0.5)] r, c in inbox(a, r, c): mask(a, r, c)
    rule smooth [semantics = godel]: forall[mean] a: exists[log_sum_exp(4)] r, c: mask(a, r, c)
    """
    g = torch.Generator().manual_seed(0)
    f = dict(mask=torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 3 - 1,
             inbox=(torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) > 0.5).double())
    # by hand: the min over regions of min(1, (share of the box's cells' truths) / 0.5)
    p, box = torch.sigmoid(f["mask"]), f["inbox"]
    share = (p * box).sum((2, 3)) / box.sum((2, 3))
    want_fill = (share / 0.5).clamp(max=1).amin(1)
    for want in compiled_equals_reference(text, f, grads=True).values():
        assert want["fill"] == pytest.approx(want_fill.tolist(), abs=1e-9)
    # the printed rule reads back the same
    from fuzzylogic.printer import format_rule
    assert "forall[at_least(0.5)] r, c in inbox(a, r, c)" in format_rule(fl.parse(text).rules[0])


def test_an_operator_in_an_ast_built_by_hand_is_completed_and_checked():
    """Programs built through the API skip the checker when their sorts are filled:
    the compiler and the reference complete and check the operator themselves."""
    from dataclasses import replace

    from fuzzylogic.errors import SemanticsError

    prog = fl.check(fl.parse("sort s\npredicate a(s)\nrule r: forall x: a(x)"))
    q = prog.rules[0].formula
    a = T([[0.2, 0.6]], dtype=torch.float64)

    def with_op(op):
        return replace(prog, rules=(replace(prog.rules[0], formula=replace(q, operator=op)),))

    assert fl.compile(with_op(("mean",))).truth(a=a)["r"].tolist() == pytest.approx([0.4])
    assert reference.evaluate(with_op(("mean",)), {"a": a})["r"] == [pytest.approx(0.4)]
    for bad, msg in ((("at_least", 5.0), "share 0 < q <= 1"), (("at_least",), "needs parameter")):
        with pytest.raises(SemanticsError, match=msg):
            fl.compile(with_op(bad))


def test_a_share_prior_matches_the_reference_in_every_semantics():
    """A ratio prior: at least 60% of the (soft) disc is not cup, i.e. the cup covers
    at most 40% of the disc's area; and some row holds at least 80% cup."""
    text = """
    sort row
    sort col
    predicate disc(row, col) logits
    predicate cup(row, col) logits
    rule rim [forall = at_least(0.6)]: forall r, c where disc(r, c): not cup(r, c)
    rule full_row [exists = at_least(0.8)]: exists r: forall c: cup(r, c)
    rule rows [exists = at_least(0.9)]: forall r: exists c: cup(r, c)
    """
    g = torch.Generator().manual_seed(11)
    f = dict(disc=torch.randn(3, 5, 6, generator=g, dtype=torch.float64) * 3,
             cup=torch.randn(3, 5, 6, generator=g, dtype=torch.float64) * 3 + 1.0)
    f["disc"][0] = 30.0  # saturated
    f["cup"][0, 0] = -30.0
    seen = {round(v, 6) for want in compiled_equals_reference(text, f, grads=True).values()
            for vals in want.values() for v in vals}
    assert len(seen - {1.0}) >= 3  # the cases are not all trivially satisfied
