"""Semantics: normalisation, presets, overrides, per-rule resolution."""
import pytest
import torch

import fuzzylogic as fl
from fuzzylogic.errors import SemanticsError
from fuzzylogic.semantics import Semantics, get_preset, resolve


def test_operator_references_are_normalised_and_hash_alike():
    a = Semantics(forall=("pmean_error", 2), exists="pmean")
    b = Semantics(forall=("pmean_error", 2.0), exists=("pmean", 2))
    assert a == b and hash(a) == hash(b)
    assert a.forall == ("pmean_error", 2.0) and a.exists == ("pmean", 2.0)
    assert Semantics(conjunction="min").conjunction == ("godel",)  # alias
    assert Semantics(disjunction="probsum").disjunction == ("product",)


def test_presets_match_semantics_md():
    p = get_preset("product")
    assert (p.conjunction, p.implication, p.forall, p.exists, p.loss) == (
        ("product",), ("reichenbach",), ("pmean_error", 2.0), ("pmean", 2.0), "linear")
    lp = get_preset("log_product")
    assert (lp.conjunction, lp.implication, lp.forall, lp.exists, lp.loss) == (
        ("product",), ("reichenbach",), ("product",), ("probsum",), "log")
    g = get_preset("godel")
    assert (g.conjunction, g.implication, g.forall, g.exists) == (
        ("godel",), ("kleene_dienes",), ("min",), ("max",))
    lu = get_preset("lukasiewicz")
    assert (lu.conjunction, lu.implication, lu.forall, lu.exists) == (
        ("lukasiewicz",), ("lukasiewicz",), ("mean",), ("max",))
    assert get_preset("ltn").stable and get_preset("ltn").eps == 1e-4
    assert set(fl.available_presets()) >= {"product", "log_product", "godel", "lukasiewicz", "ltn"}


def test_preset_overrides():
    s = Semantics.preset("log_product", exists=("log_sum_exp", 8))
    assert s.exists == ("log_sum_exp", 8.0) and s.forall == ("product",) and s.loss == "log"
    with pytest.raises(SemanticsError, match="unknown semantics field"):
        Semantics.preset("product", conjuction="godel")


@pytest.mark.parametrize("kwargs,match", [
    (dict(conjunction="nope"), "unknown conjunction operator 'nope'"),
    (dict(forall=("pmean_error", 0.5)), "p >= 1"),
    (dict(exists=("log_sum_exp", -1)), "tau > 0"),
    (dict(forall=("min", 3)), "takes 0 parameter"),
    (dict(loss="squared"), "loss must be"),
    (dict(eps=0.7), "eps"),
    (dict(forall=3), "operator name"),
])
def test_bad_semantics_raise_semantics_error(kwargs, match):
    with pytest.raises(SemanticsError, match=match):
        Semantics(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SemanticsError, match="presets: .*log_product"):
        Semantics.preset("log_prodcut")


def test_register_preset():
    s = fl.register_preset("test_preset_a", Semantics(conjunction="godel"))
    assert get_preset("test_preset_a") is s
    with pytest.raises(SemanticsError, match="exists"):
        fl.register_preset("test_preset_a", Semantics())
    fl.register_preset("test_preset_a", Semantics(), overwrite=True)
    assert get_preset("test_preset_a") == Semantics()


def test_resolution_precedence():
    # default: product; the file's line; the call; the rule's preset; the rule's own operators
    assert resolve() == get_preset("product")
    assert resolve(None, "godel") == get_preset("godel")
    assert resolve("lukasiewicz", "godel") == get_preset("lukasiewicz")
    assert resolve("lukasiewicz", "godel", (("semantics", "log_product"),)) == get_preset("log_product")
    r = resolve("godel", None, (("semantics", "log_product"), ("exists", ("log_sum_exp", 8.0)),
                                ("loss", "linear")))
    assert r.exists == ("log_sum_exp", 8.0) and r.forall == ("product",) and r.loss == "linear"


def test_overriding_the_conjunction_keeps_the_disjunction_dual():
    base = Semantics(conjunction="product", disjunction="godel")
    r = resolve(base, None, (("conjunction", "lukasiewicz"),))
    assert r.disjunction is None  # the dual of Łukasiewicz, not the call's max


def test_rule_options_select_operators_end_to_end():
    text = """
    sort s
    predicate a(s)
    rule m [forall = min]: forall x: a(x)
    rule e [semantics = godel, exists = mean]: exists x: a(x)
    rule d: forall x: a(x)
    """
    th = fl.compile(text, "product")
    a = torch.tensor([[0.2, 0.8, 0.5]], dtype=torch.float64)
    t = th.truth(a=a)
    assert t["m"].item() == pytest.approx(0.2)
    assert t["e"].item() == pytest.approx(0.5)
    assert t["d"].item() == pytest.approx(1 - ((0.64 + 0.04 + 0.25) / 3) ** 0.5)
    assert th.rule_semantics["e"].conjunction == ("godel",)


def test_file_semantics_line_and_call_override():
    text = "semantics godel\nsort s\npredicate a(s)\nrule r: forall x: a(x)"
    a = torch.tensor([[0.2, 0.8]])
    assert fl.compile(text).truth(a=a)["r"].item() == pytest.approx(0.2)
    assert fl.compile(text, "lukasiewicz").truth(a=a)["r"].item() == pytest.approx(0.5)


def test_describe_is_readable():
    d = Semantics.preset("ltn").describe()
    assert "forall=pmean_error(2)" in d and "stable(eps=0.0001)" in d
