"""Operators: formulas of SEMANTICS.md, agreement with LTNtorch, numerics, registry."""
import math

import pytest
import torch

import fuzzylogic as fl
from fuzzylogic import operators as O
from fuzzylogic.errors import SemanticsError
from fuzzylogic.operators import TruthValue, get_operator

torch.set_num_threads(1)
G = torch.Generator().manual_seed(0)


def rand(*shape, dtype=torch.float64):
    x = torch.rand(*shape, generator=G, dtype=dtype)
    x.view(-1)[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype)[: x.numel()]  # exact 0 and 1
    return x


def binop(kind, name, a, b, stable=None):
    """The compiler's path: log form if any, LTN projections if stable."""
    from fuzzylogic.compiler import apply_binary
    return apply_binary(get_operator(kind, name), (), stable, TruthValue(p=a), TruthValue(p=b)).p


def quant(kind, name, a, dims, w=None, params=(), stable=None):
    spec = get_operator(kind, name)
    x = TruthValue(p=a)
    if stable and spec.stable:
        x = x.stabilised(spec.stable[0], stable)
    if spec.log_form is not None:
        return spec.log_form(x, dims, w, *params).p
    return spec.fn(x.p, dims, w, *params)


# ------------------------------------------------------------------ formulas
FORMULAS = {
    ("conjunction", "godel"): lambda a, b: min(a, b),
    ("conjunction", "product"): lambda a, b: a * b,
    ("conjunction", "lukasiewicz"): lambda a, b: max(0.0, a + b - 1),
    ("disjunction", "godel"): lambda a, b: max(a, b),
    ("disjunction", "product"): lambda a, b: a + b - a * b,
    ("disjunction", "lukasiewicz"): lambda a, b: min(1.0, a + b),
    ("implication", "kleene_dienes"): lambda a, b: max(1 - a, b),
    ("implication", "reichenbach"): lambda a, b: 1 - a + a * b,
    ("implication", "lukasiewicz"): lambda a, b: min(1.0, 1 - a + b),
    ("implication", "godel"): lambda a, b: 1.0 if a <= b else b,
    ("implication", "goguen"): lambda a, b: 1.0 if a <= b else b / a,
    ("equivalence", "lukasiewicz"): lambda a, b: 1 - abs(a - b),
    ("equivalence", "agreement"): lambda a, b: a * b + (1 - a) * (1 - b),
}


@pytest.mark.parametrize("kind,name", sorted(FORMULAS))
def test_binary_formulas(kind, name):
    a, b = rand(50), rand(50).flip(0)
    got = binop(kind, name, a, b)
    want = torch.tensor([FORMULAS[kind, name](x, y) for x, y in zip(a.tolist(), b.tolist())],
                        dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)


def test_quantifier_formulas():
    a = rand(3, 7)
    rows = a.tolist()
    cases = {
        ("forall", "min", ()): lambda r: min(r),
        ("exists", "max", ()): lambda r: max(r),
        ("forall", "mean", ()): lambda r: sum(r) / len(r),
        ("exists", "pmean", (3.0,)): lambda r: (sum(x ** 3 for x in r) / len(r)) ** (1 / 3),
        ("forall", "pmean_error", (2.0,)): lambda r: 1 - (sum((1 - x) ** 2 for x in r) / len(r)) ** 0.5,
        ("forall", "product", ()): lambda r: math.prod(r),
        ("exists", "probsum", ()): lambda r: 1 - math.prod(1 - x for x in r),
        ("exists", "log_sum_exp", (5.0,)): lambda r: math.log(sum(math.exp(5 * x) for x in r) / len(r)) / 5,
        ("forall", "at_least", (0.7,)): lambda r: min(1.0, sum(r) / len(r) / 0.7),
        ("exists", "at_least", (0.3,)): lambda r: min(1.0, sum(r) / len(r) / 0.3),
        ("forall", "at_most", (0.2,)): lambda r: min(1.0, (1 - sum(r) / len(r)) / 0.8),
    }
    for (kind, name, params), f in cases.items():
        got = quant(kind, name, a, (1,), None, params)
        want = torch.tensor([f(r) for r in rows], dtype=torch.float64)
        assert torch.allclose(got, want, atol=1e-12), (kind, name)


# ------------------------------------------------------------------ LTNtorch
@pytest.fixture(scope="module")
def fo():
    return pytest.importorskip("ltn.fuzzy_ops")


LTN_BINARY = [
    ("conjunction", "godel", "AndMin", False),
    ("conjunction", "product", "AndProd", True),
    ("conjunction", "lukasiewicz", "AndLuk", False),
    ("disjunction", "godel", "OrMax", False),
    ("disjunction", "product", "OrProbSum", True),
    ("disjunction", "lukasiewicz", "OrLuk", False),
    ("implication", "kleene_dienes", "ImpliesKleeneDienes", False),
    ("implication", "reichenbach", "ImpliesReichenbach", True),
    ("implication", "lukasiewicz", "ImpliesLuk", False),
    ("implication", "godel", "ImpliesGodel", False),
    ("implication", "goguen", "ImpliesGoguen", True),
]


@pytest.mark.parametrize("kind,name,cls,has_stable", LTN_BINARY)
@pytest.mark.parametrize("stable", [False, True])
def test_binary_agrees_with_ltntorch(fo, kind, name, cls, has_stable, stable):
    a, b = rand(64, dtype=torch.float32), rand(64, dtype=torch.float32).flip(0)
    op = getattr(fo, cls)(stable=stable) if has_stable else getattr(fo, cls)()
    want = op(a, b)
    got = binop(kind, name, a, b, stable=1e-4 if stable else None)
    assert torch.allclose(got, want, atol=1e-6), (name, (got - want).abs().max())


def test_negations_agree_with_ltntorch(fo):
    a = rand(64)
    assert torch.equal(O.not_standard(a), fo.NotStandard()(a))
    assert torch.equal(O.not_godel(a), fo.NotGodel()(a).to(a.dtype))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 6.0])
@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_aggregators_agree_with_ltntorch(fo, p, stable, masked):
    a = rand(4, 6, 5, dtype=torch.float32)
    mask = torch.rand(4, 6, 5, generator=G) > 0.4 if masked else None
    mask_arg = {} if mask is None else {"mask": mask}
    w = None if mask is None else mask.float()
    eps = 1e-4 if stable else None
    got = quant("exists", "pmean", a, (1, 2), w, (p,), eps)
    want = fo.AggregPMean(p=p, stable=stable)(a, dim=(1, 2), **mask_arg)
    assert torch.allclose(got, want, atol=1e-6)
    got = quant("forall", "pmean_error", a, (1, 2), w, (p,), eps)
    want = fo.AggregPMeanError(p=p, stable=stable)(a, dim=(1, 2), **mask_arg)
    assert torch.allclose(got, want, atol=1e-6)
    got = quant("forall", "mean", a, (1, 2), w)
    assert torch.allclose(got, fo.AggregMean()(a, dim=(1, 2), **mask_arg).float(), atol=1e-6)
    got = quant("forall", "min", a, (1, 2), w)
    assert torch.allclose(got, fo.AggregMin()(a, dim=(1, 2), **mask_arg).float(), atol=1e-6)


def test_equivalence_agrees_with_ltntorch(fo):
    text = """
    predicate a()
    predicate b()
    rule r: a() <-> b()
    """
    x, y = rand(32), rand(32).flip(0)
    for conj, impl, lconj, limpl in [("product", "reichenbach", "AndProd", "ImpliesReichenbach"),
                                     ("godel", "kleene_dienes", "AndMin", "ImpliesKleeneDienes"),
                                     ("lukasiewicz", "goguen", "AndLuk", "ImpliesGoguen")]:
        sem = fl.Semantics(conjunction=conj, implication=impl)
        got = fl.compile(text, sem).truth(a=x, b=y)["r"]
        def kw(c):
            return {"stable": False} if c in ("AndProd", "ImpliesReichenbach", "ImpliesGoguen") else {}

        want = fo.Equiv(getattr(fo, lconj)(**kw(lconj)), getattr(fo, limpl)(**kw(limpl)))(x, y)
        assert torch.allclose(got, want, atol=1e-6), conj


# ------------------------------------------------------------------ numerics
def test_log1mexp_is_accurate_over_its_range():
    xs = [-1e-30, -1e-12, -1e-6, -0.1, -math.log(2), -0.7, -1.0, -5.0, -20.0, -50.0, -700.0]
    got = O.log1mexp(torch.tensor(xs, dtype=torch.float64))
    for g, x in zip(got.tolist(), xs):
        want = math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))
        assert abs(g - want) <= 1e-12 * max(1.0, abs(want))


def test_log1mexp_finite_at_zero_and_minus_infinity():
    x = torch.tensor([0.0, -0.0, -1e-45, -float("inf"), -1e4], requires_grad=True)
    y = O.log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert y[0] == math.log(torch.finfo(torch.float32).tiny)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["mixed", "none_near", "all_near", "permuted", "expanded"])
def test_log1mexp_cpu_subset_path_equals_the_branch_select_path(monkeypatch, dtype, case):
    # The CPU path computes the branch above -ln 2 on its cells only (flat
    # indices); the GPU/compile path computes both branches everywhere and
    # selects. Same values, whatever the layout of x; gradients up to rounding
    # (the CPU's exp(x - log(1 - e^x)) carries the log's rounding into the
    # exponent, ~10 ulp near x = 0; compiled, -1 / expm1(-x) is within 1 ulp):
    # both against a 50-digit reference.
    mpmath = pytest.importorskip("mpmath")  # (a torch dependency)
    mpmath.mp.dps = 50
    g = torch.Generator().manual_seed(1)
    x = -torch.rand(6, 5, 7, generator=g, dtype=dtype) * 3
    x.view(-1)[:3] = torch.tensor([0.0, -1e-30, -math.log(2)], dtype=dtype)
    if case == "none_near":
        x = x - 1.0
    elif case == "all_near":
        x = x * 0.2
    elif case == "permuted":
        x = x.permute(2, 0, 1)
    elif case == "expanded":
        x = x[:, :1].expand(6, 4, 7)
    gy = torch.rand(x.shape, generator=g, dtype=dtype)
    results = []
    for dense in (False, True):
        monkeypatch.setattr(O, "_is_compiling", lambda: dense)
        xi = x.detach().clone() if case != "expanded" else x.detach()
        xi = xi.requires_grad_()
        y = O.log1mexp(xi)
        (gx,) = torch.autograd.grad(y, xi, gy)
        results.append((y, gx))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y0, y1)
    tiny = torch.finfo(dtype).tiny
    d = [0.0 if v >= -tiny else float(-1 / mpmath.expm1(-mpmath.mpf(v)))
         for v in x.detach().reshape(-1).tolist()]
    want = torch.tensor(d, dtype=torch.float64).reshape(x.shape) * gy.double()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(g0.double(), want, rtol=16 * eps, atol=0.0)
    torch.testing.assert_close(g1.double(), want, rtol=4 * eps, atol=0.0)


def _guarded_by_where(a, w, dims, is_max):
    # the plain formulation (two selections, then amax/amin): the reference
    if is_max:
        m = torch.where(a <= w, a, w)
        return torch.amax(torch.where(w > 0, m, torch.zeros_like(m)), dim=dims)
    m = torch.where(a >= 1.0 - w, a, 1.0 - w)
    return torch.amin(torch.where(w > 0, m, torch.ones_like(m)), dim=dims)


@pytest.mark.parametrize("is_max", [True, False])
@pytest.mark.parametrize("dims", [(2,), (1, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
@pytest.mark.parametrize("dense", [False, True])  # the GPU/compile backward, or the CPU one
def test_guarded_max_and_min_equal_the_plain_formulation_bit_for_bit(monkeypatch, is_max, dims,
                                                                      layout, dense):
    monkeypatch.setattr(O, "_is_compiling", lambda: dense)
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 4, 6, generator=g)
    a[0, 0, :3] = 0.75  # ties
    a[1, 1] = 1.0
    a[2, 2] = 0.0
    w = (torch.rand(3, 1, 6, generator=g) > 0.4).float()  # crisp, broadcast over axis 1
    w[0, 0, 4] = 0.5  # fuzzy
    w[1] = 0.0  # an empty domain
    if layout == "permuted":
        a = a.transpose(0, 1).contiguous().transpose(0, 1)
    gy = torch.rand(_guarded_by_where(a, w, dims, is_max).shape, generator=g)
    spec = get_operator("exists" if is_max else "forall", "max" if is_max else "min")
    out = []
    for fn in (lambda x: spec.fn(x, dims, w), lambda x: _guarded_by_where(x, w, dims, is_max)):
        x = a.detach().requires_grad_()
        y = fn(x)
        out.append((y, torch.autograd.grad(y, x, gy)[0]))
    (y0, g0), (y1, g1) = out
    assert torch.equal(y0, y1) and torch.equal(g0, g1)


def test_guarded_max_gradient_keeps_a_permuted_inputs_layout():
    # (CPU: the masks are laid out as the input, so that the gradient of a permuted
    # view reaches its base contiguous, not strided)
    g = torch.Generator().manual_seed(5)
    base = torch.rand(2, 3, 5, 4, generator=g, requires_grad=True)
    w = (torch.rand(2, 3, 1, 5, generator=g) > 0.3).float()
    y = O.exists_max(base.transpose(2, 3), (3,), w)
    (gb,) = torch.autograd.grad(y.sum(), base)
    assert gb.is_contiguous()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("perm,dims", [((0, 2, 3, 1), (3,)), ((0, 3, 1, 2), (2, 3)),
                                       ((0, 2, 1, 3), (1, 2, 3)), ((0, 3, 2, 1), (1,))])
def test_weighted_sum_of_a_permuted_view_equals_the_plain_sum(weighted, perm, dims):
    # _weighted_sum reduces a permuted view in its memory order: the same values
    # and gradients as the plain formula.
    g = torch.Generator().manual_seed(7)
    base = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    shape = base.permute(perm).shape
    w = torch.rand(shape[0], 1, *shape[2:], generator=g, dtype=torch.float64) if weighted else None
    out = []
    for fn in (O._weighted_sum, lambda t, w, d: (t if w is None else w * t).sum(d)):
        x = base.clone().requires_grad_()
        y = fn(x.permute(perm), w, dims)
        gy = torch.rand(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        out.append((y, torch.autograd.grad(y, x, gy)[0]))
    (y0, g0), (y1, g1) = out
    torch.testing.assert_close(y0, y1, rtol=1e-12, atol=0)
    torch.testing.assert_close(g0, g1, rtol=0, atol=0)


@pytest.mark.parametrize("shape_b", [(3, 2, 5), (3, 1, 5)])
def test_product_of_two_reichenbach_implications_equals_two_log1mexps(shape_b):
    # a <-> b as (a -> b) and (b -> a): eagerly one log1mexp of the two stacked
    # (or two, where the shapes differ); values and gradients as two separate calls.
    g = torch.Generator().manual_seed(3)
    za = (torch.randn(3, 2, 5, generator=g) * 6).requires_grad_()
    zb = (torch.randn(*shape_b, generator=g) * 6).requires_grad_()
    za.data[0, 0, :2] = torch.tensor([40.0, 0.0])  # a violation at the log floor; a tie
    zb.data[0, 0, :2] = torch.tensor([-40.0, 0.0])
    gy = torch.rand(3, 2, 5, generator=g)
    impl = get_operator("implication", "reichenbach").log_form
    conj = get_operator("conjunction", "product").log_form
    x, y = TruthValue.from_logits(za), TruthValue.from_logits(zb)
    lp = conj(impl(x, y), impl(y, x)).lp
    ga, gb = torch.autograd.grad(lp, (za, zb), gy)
    x, y = TruthValue.from_logits(za), TruthValue.from_logits(zb)
    want = impl(x, y).lp + impl(y, x).lp
    wa, wb = torch.autograd.grad(want, (za, zb), gy)
    assert torch.equal(lp, want) and torch.equal(ga, wa) and torch.equal(gb, wb)
    assert torch.isfinite(lp).all() and torch.isfinite(ga).all() and torch.isfinite(gb).all()


def test_guarded_max_with_a_weight_that_needs_a_gradient_gives_it_one():
    a = torch.tensor([[0.2, 0.9, 0.4]], requires_grad=True)
    w = torch.tensor([[1.0, 0.5, 0.0]], requires_grad=True)
    y = O.exists_max(a, (1,), w)  # max(min(.2, 1), min(.9, .5), 0) = .5 from the weight
    y.sum().backward()
    assert float(y.detach()) == 0.5 and w.grad.tolist() == [[0.0, 1.0, 0.0]] and a.grad.abs().sum() == 0


def _logit_logs(seed, shape, dtype, first="lp"):
    """(z, g1, g2, log σ(z), log σ(-z), the gradient of Σ g1 lp + g2 l1p) from
    TruthValue.from_logits on random logits with 0, -0 and saturated ones."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(*shape, generator=g, dtype=dtype) * 8
    z0.view(-1)[:7] = torch.tensor([0.0, -0.0, 17.0, -17.0, 100.0, -100.0, 1e-8], dtype=dtype)
    g1, g2 = torch.rand(2, *z0.shape, generator=g, dtype=dtype)
    z = z0.clone().requires_grad_()
    v = TruthValue.from_logits(z)
    lp, l1p = (v.lp, v.l1p) if first == "lp" else (v.l1p, v.lp)[::-1]
    (gz,) = torch.autograd.grad((lp * g1).sum() + (l1p * g2).sum(), z)
    return z0, g1, g2, lp, l1p, gz


@pytest.mark.parametrize("first", ["lp", "l1p"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_logs_share_their_exp_and_equal_logsigmoid_bit_for_bit(first, dtype):
    # On the CPU the second of log σ(z), log σ(-z) reuses the first's exp(-|z|):
    # values and gradients must be logsigmoid's, whichever is asked for first.
    z0, g1, g2, lp, l1p, gz = _logit_logs(3, (5, 300), dtype, first)
    y = z0.clone().requires_grad_()
    ref_lp, ref_l1p = torch.nn.functional.logsigmoid(y), torch.nn.functional.logsigmoid(-y)
    (gy,) = torch.autograd.grad((ref_lp * g1).sum() + (ref_l1p * g2).sum(), y)
    assert torch.equal(lp, ref_lp) and torch.equal(l1p, ref_l1p) and torch.equal(gz, gy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_logs_under_compile_share_their_exp_and_equal_logsigmoid(monkeypatch, dtype):
    # What torch.compile traces: log σ(±z) = min(±z, 0) - log1p(exp(-|z|)) with the
    # log1p shared. Values as logsigmoid's (the same formula) and gradients σ(∓z),
    # 1/2 at z = 0 exactly, finite at saturated logits.
    monkeypatch.setattr(O, "_is_compiling", lambda: True)
    z0, g1, g2, lp, l1p, gz = _logit_logs(4, (4, 200), dtype)
    zd = z0.double()
    F = torch.nn.functional
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny  # (below it, subnormals: log σ(100) in float32)
    torch.testing.assert_close(lp.double(), F.logsigmoid(zd), rtol=2 * eps, atol=tiny)
    torch.testing.assert_close(l1p.double(), F.logsigmoid(-zd), rtol=2 * eps, atol=tiny)
    want = g1.double() * torch.sigmoid(-zd) - g2.double() * torch.sigmoid(zd)
    torch.testing.assert_close(gz.double(), want, rtol=8 * eps, atol=8 * eps)
    zero = torch.zeros(1, dtype=dtype, requires_grad=True)
    (d0,) = torch.autograd.grad(TruthValue.from_logits(zero).lp.sum(), zero)
    assert d0.item() == 0.5


def test_truth_value_components_are_consistent():
    z = torch.linspace(-40, 40, 81, dtype=torch.float64)
    v = TruthValue.from_logits(z)
    p = torch.sigmoid(z)
    assert torch.allclose(v.p, p)
    assert torch.allclose(v.q, 1 - p)
    assert torch.allclose(v.lp, torch.log(p))
    # log(1 - σ(z)) = -softplus(z) exactly, also where 1 - p rounds to 0
    assert torch.allclose(v.l1p, -torch.nn.functional.softplus(z))
    n = v.negate()
    assert torch.equal(n.p, v.q) and torch.equal(n.lp, v.l1p)
    # deriving: from lp only
    w = TruthValue(lp=torch.nn.functional.logsigmoid(z))
    assert torch.allclose(w.p, p) and torch.allclose(w.l1p, -torch.nn.functional.softplus(z))


def test_safe_logs_floor_exact_zero_and_one():
    t = torch.tensor([0.0, 1.0, 0.5])
    assert torch.isfinite(O.safe_log(t)).all() and torch.isfinite(O.safe_log1m(t)).all()
    tg = t.clone().requires_grad_()
    (O.safe_log(tg).sum() + O.safe_log1m(tg).sum()).backward()
    assert torch.isfinite(tg.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_floors_do_not_depend_on_autograd(dtype):
    # The same truths give the same loss whether they need a gradient or not (a
    # sparse guard's constant over an empty domain against the dense path's
    # computed value found the difference: log(1 - 1) read log(eps/2) with
    # autograd, log(tiny) without).
    t = torch.tensor([0.0, 1.0, 0.5, 1e-30, 1.0 - 1e-7], dtype=dtype)
    tg = t.clone().requires_grad_()
    for f in (O.safe_log, O.safe_log1m):
        assert torch.equal(f(t), f(tg).detach())
    assert O.safe_log1m(t)[1] == math.log(torch.finfo(dtype).tiny)
    (g,) = torch.autograd.grad(O.safe_log1m(tg).sum(), tg)
    assert g[1] == 0 and g[0] == -1 and g[2] == -2
    th = fl.compile("sort s\npredicate a(s)\nrule r: forall x: not a(x)", "log_product")
    a = torch.tensor([[1.0, 0.5]], dtype=dtype)
    assert torch.equal(th.loss(a=a), th.loss(a=a.clone().requires_grad_()).detach())


QUANTS = [("forall", n) for n in ("min", "mean", "pmean_error", "product", "log_sum_exp")] + \
         [("exists", n) for n in ("max", "mean", "pmean", "probsum", "log_sum_exp")]


@pytest.mark.parametrize("kind,name", QUANTS)
@pytest.mark.parametrize("soft", [False, True])
def test_empty_domain_is_identity_with_zero_gradient(kind, name, soft):
    a = rand(2, 5).requires_grad_()
    w = torch.zeros(2, 5)
    if soft:  # one batch item empty, the other with soft weights
        w[1] = torch.tensor([0.2, 0.0, 0.9, 0.5, 1.0])
    out = quant(kind, name, a, (1,), w)
    out.sum().backward()
    ident = 1.0 if kind == "forall" else 0.0
    assert out[0].item() == ident
    assert torch.isfinite(out).all() and torch.isfinite(a.grad).all()
    assert torch.all(a.grad[0] == 0)


@pytest.mark.parametrize("kind,name", QUANTS)
def test_quantifier_gradients_finite_at_zero_and_one(kind, name):
    for fill in (0.0, 1.0):
        a = torch.full((3, 4), fill, requires_grad=True)
        for w in (None, torch.tensor([[1.0, 1.0, 0.0, 0.5]] * 3)):
            a.grad = None
            quant(kind, name, a, (1,), w, ()).sum().backward()
            assert torch.isfinite(a.grad).all(), (kind, name, fill, w)


def test_pmean_gradient_is_stable_where_the_root_is_at_zero():
    # LTN without stabilisation returns NaN gradients here; ours are finite and,
    # away from 0, exact (gradcheck in float64).
    a = torch.zeros(2, 4, requires_grad=True)
    O.pmean(a, (1,), None, 2.0).sum().backward()
    assert torch.isfinite(a.grad).all()
    b = (torch.rand(2, 4, dtype=torch.float64, generator=G) * 0.9 + 0.05).requires_grad_()
    w = torch.rand(2, 4, dtype=torch.float64, generator=G).requires_grad_()
    for p in (1.0, 2.0, 3.0, 6.0):
        assert torch.autograd.gradcheck(lambda x, y: O.pmean(x, (1,), y, p), (b, w))
        assert torch.autograd.gradcheck(lambda x: O.pmean(x, (1,), None, p), (b,))
    # tiny inputs: gradient still O(1), not 0 * inf
    t = torch.full((1, 4), 1e-20, requires_grad=True)
    O.pmean(t, (1,), None, 2.0).sum().backward()
    assert torch.allclose(t.grad, torch.full((1, 4), 0.25))  # d mean-norm / d a_i = 1/n here


def test_log_sum_exp_lies_between_mean_and_max():
    a = rand(5, 9)
    mean, mx = a.mean(1), a.amax(1)
    prev = None
    for tau in (0.1, 1.0, 10.0, 100.0):
        v = quant("exists", "log_sum_exp", a, (1,), None, (tau,))
        assert torch.all(v >= mean - 1e-9) and torch.all(v <= mx + 1e-9)
        if prev is not None:
            assert torch.all(v >= prev - 1e-12)  # increasing in tau
        prev = v
    assert torch.allclose(prev, mx, atol=0.05)
    # a large tau does not overflow, masked elements do not leak in
    w = torch.zeros(5, 9, dtype=torch.float64)
    w[:, 0] = 1
    v = quant("exists", "log_sum_exp", a, (1,), w, (500.0,))
    assert torch.allclose(v, a[:, 0])


def test_weighted_quantifiers_follow_semantics_md():
    a = torch.tensor([[0.2, 0.9, 0.5]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    assert quant("forall", "mean", a, (1,), g).item() == pytest.approx((0.2 + 0.45) / 1.5)
    assert quant("exists", "pmean", a, (1,), g, (2.0,)).item() == pytest.approx(
        ((0.04 + 0.5 * 0.81) / 1.5) ** 0.5)
    assert quant("forall", "product", a, (1,), g).item() == pytest.approx(0.2 * 0.9 ** 0.5)
    assert quant("exists", "probsum", a, (1,), g).item() == pytest.approx(1 - 0.8 * 0.1 ** 0.5)
    assert quant("forall", "min", a, (1,), g).item() == pytest.approx(0.2)
    assert quant("exists", "max", a, (1,), g).item() == pytest.approx(0.5)


# ------------------------------------------------------------------ registry
def test_register_operator_with_one_function():
    @fl.register_operator("conjunction", "hamacher_test")
    def hamacher(a, b):
        return a * b / (a + b - a * b).clamp_min(1e-12)

    assert "hamacher_test" in fl.available_operators("conjunction")
    th = fl.compile("predicate a()\npredicate b()\nrule r: a() and b()",
                    fl.Semantics(conjunction="hamacher_test"))
    x, y = torch.tensor([0.5, 1.0]), torch.tensor([0.5, 0.3])
    assert torch.allclose(th.truth(a=x, b=y)["r"], hamacher(x, y))
    # its dual disjunction is derived by De Morgan
    th = fl.compile("predicate a()\npredicate b()\nrule r: a() or b()",
                    fl.Semantics(conjunction="hamacher_test"))
    assert torch.allclose(th.truth(a=x, b=y)["r"], 1 - hamacher(1 - x, 1 - y))
    with pytest.raises(SemanticsError, match="already registered"):
        fl.register_operator("conjunction", "hamacher_test")(hamacher)


def test_registered_quantifier_gets_empty_domains_handled():
    @fl.register_operator("forall", "median_test", params=(("unused", 0.0),))
    def median(a, dims, weight, unused=0.0):
        x = a if weight is None else torch.where(weight > 0, a, torch.ones_like(a))
        return x.flatten(-len(dims)).median(-1).values

    th = fl.compile("sort s\npredicate a(s)\nrule r [forall = median_test]: forall x: a(x)")
    a = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.3, 0.3]], requires_grad=True)
    t = th.truth(a=a, domains={"s": torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool)})["r"]
    assert t.tolist() == pytest.approx([0.5, 1.0])


def test_get_operator_errors_list_known_names():
    with pytest.raises(SemanticsError, match="known: .*reichenbach"):
        get_operator("implication", "reichenbach_typo")
    with pytest.raises(SemanticsError, match="kinds are"):
        get_operator("quantifier", "min")
    with pytest.raises(SemanticsError):
        fl.register_operator("conjunction", "not an identifier")


@pytest.mark.parametrize("kind,name", [("conjunction", "product"), ("disjunction", "product"),
                                       ("implication", "reichenbach"), ("equivalence", "agreement")])
def test_complement_logs_of_product_forms_are_exact_for_saturated_logits(kind, name):
    # log(1 - ab), log(a + b - ab), log(1 - a + ab) from float32 logits up to |z| = 40,
    # against float64 references where 1 - p underflows or rounds to 1 in float32
    z = torch.tensor([-40.0, -17.0, -3.0, 0.0, 3.0, 17.0, 40.0])
    x, y = torch.meshgrid(z, z, indexing="ij")
    spec = get_operator(kind, name)
    v = spec.log_form(TruthValue.from_logits(x), TruthValue.from_logits(y))
    mpmath = pytest.importorskip("mpmath")  # (a torch dependency)
    mpmath.mp.dps = 50

    def s(t):
        return 1 / (1 + mpmath.exp(-mpmath.mpf(float(t))))

    def ref(xi, yi):
        a, b = s(xi), s(yi)
        t = {"conjunction": a * b, "disjunction": a + b - a * b, "implication": 1 - a + a * b,
             "equivalence": a * b + (1 - a) * (1 - b)}[kind]
        return float(mpmath.log(t)), float(mpmath.log(1 - t))

    want = torch.tensor([[ref(xi, yi) for xi, yi in zip(xr, yr)] for xr, yr in zip(x, y)],
                        dtype=torch.float64)
    assert torch.allclose(v.lp.double(), want[..., 0], rtol=1e-5, atol=1e-30), (kind, v.lp)
    assert torch.allclose(v.l1p.double(), want[..., 1], rtol=1e-5, atol=1e-30), (kind, v.l1p)


@pytest.mark.parametrize("name", ["log1mexp", "pmean", "guarded_max"])
def test_custom_autograd_functions_under_torch_compile_keep_their_gradients(name):
    # torch 2.11's compile returned zero gradients for an autograd.Function whose
    # forward mutated intermediates in place (found on an H200); aot_eager traces
    # what inductor would, without its C++ build time.
    import fuzzylogic.operators as ops

    g = torch.Generator().manual_seed(0)
    x0, y0 = -torch.rand(64, generator=g) * 5, torch.randn(64, generator=g)
    fns = {"log1mexp": lambda x, y: ops.log1mexp(x).sum(),
           "pmean": lambda x, y: ops.pmean(torch.sigmoid(y) + 0 * x, (0,), None, 2.0),
           "guarded_max": lambda x, y: ops.exists_max(torch.sigmoid(y) + 0 * x, (0,),
                                                      (y > 0).float())}
    grads = []
    for fn in (fns[name], torch.compile(fns[name], backend="aot_eager", fullgraph=True)):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        fn(x, y).backward()
        grads.append((x.grad, y.grad))
    for a, b in zip(*grads):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b)
    assert any(t is not None and t.abs().sum() > 0 for t in grads[1])


def test_agreement_is_boxinst_pairwise_probability_and_its_log_form_is_one_logaddexp():
    # P(y_i = y_j) = a b + (1 - a)(1 - b) for independent a, b (Tian et al. 2021, BoxInst):
    # the log form's values and gradients equal the p form's where the latter is exact
    g = torch.Generator().manual_seed(5)
    za = (torch.randn(200, generator=g, dtype=torch.float64) * 4).requires_grad_()
    zb = (torch.randn(200, generator=g, dtype=torch.float64) * 4).requires_grad_()
    spec = get_operator("equivalence", "agreement")
    assert get_operator("equivalence", "probabilistic") is spec
    v = spec.log_form(TruthValue.from_logits(za), TruthValue.from_logits(zb))
    a, b = torch.sigmoid(za), torch.sigmoid(zb)
    want = torch.log(a * b + (1 - a) * (1 - b))
    torch.testing.assert_close(v.lp, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v.l1p, torch.log(a * (1 - b) + (1 - a) * b), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v.p + v.q, torch.ones_like(v.p), rtol=0, atol=1e-12)
    got = torch.autograd.grad(v.lp.sum(), (za, zb))
    ref = torch.autograd.grad(want.sum(), (za, zb))
    for x, y in zip(got, ref):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-12)
    # symmetric, 1/2 at a = b = 1/2 (the product biimplication gives 9/16 there)
    assert torch.equal(spec.fn(a, b), spec.fn(b, a))
    assert float(spec.fn(torch.tensor(0.5), torch.tensor(0.5))) == 0.5


def test_agreement_rule_matches_the_reference_evaluator():
    from fuzzylogic import reference

    text = ("sort s\npredicate a(s)\npredicate b(s)\n"
            "rule r [equivalence = agreement]: forall x: a(x) <-> b(x)\n"
            "rule q [equivalence = probabilistic]: exists x: not (a(x) <-> b(x))")
    g = torch.Generator().manual_seed(1)
    a, b = (torch.rand(2, 6, generator=g, dtype=torch.float64) for _ in range(2))
    a[0, 0], b[0, 0], a[1, 1], b[1, 1] = 0.0, 1.0, 1.0, 1.0  # exact truths
    got = fl.compile(text, semantics="log_product").truth(a=a, b=b)
    want = reference.evaluate(text, {"a": a, "b": b}, semantics="log_product")
    for name in ("r", "q"):
        torch.testing.assert_close(got[name], torch.tensor(want[name], dtype=torch.float64),
                                   rtol=1e-9, atol=1e-12)
    # and by hand: the product over x of a b + (1 - a)(1 - b)
    # (item 0 holds a truth of exactly 0: the log-space product floors it at the tiniest
    # normal float, as documented)
    torch.testing.assert_close(got["r"], (a * b + (1 - a) * (1 - b)).prod(1), rtol=1e-10, atol=1e-300)


# ------------------------------------------------------------ at_least(q)
@pytest.mark.parametrize("kind", ["forall", "exists"])
def test_at_least_by_hand(kind):
    """min(1, m / q), m the guard-weighted mean: a share q or more is fully true."""
    a = torch.tensor([[0.2, 0.6, 1.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)  # m = 0.4
    assert quant(kind, "at_least", a, (1,), w, (0.5,)).item() == pytest.approx(0.8)
    assert quant(kind, "at_least", a, (1,), w, (0.4,)).item() == pytest.approx(1.0)
    assert quant(kind, "at_least", a, (1,), w, (0.25,)).item() == 1.0
    # at_least(1) is the mean
    mean = get_operator(kind, "mean").fn(a, (1,), w)
    assert torch.equal(quant(kind, "at_least", a, (1,), w, (1.0,)), mean)
    # empty domain: the quantifier's identity, with zero gradient
    a.requires_grad_()
    out = quant(kind, "at_least", a, (1,), torch.zeros_like(w), (0.5,))
    out.sum().backward()
    assert out.item() == (1.0 if kind == "forall" else 0.0) and torch.all(a.grad == 0)


@pytest.mark.parametrize("kind", ["forall", "exists"])
def test_at_least_gradients_finite_at_zero_and_one_and_gradcheck(kind):
    for fill in (0.0, 1.0):
        a = torch.full((3, 4), fill, dtype=torch.float64, requires_grad=True)
        for w in (None, torch.tensor([[1.0, 1.0, 0.0, 0.5]] * 3, dtype=torch.float64)):
            a.grad = None
            quant(kind, "at_least", a, (1,), w, (0.6,)).sum().backward()
            assert torch.isfinite(a.grad).all()
    # below the share (where the value is not clamped): smooth in the values and the weights
    a = (torch.rand(2, 6, generator=G, dtype=torch.float64) * 0.4).requires_grad_()
    w = torch.rand(2, 6, generator=G, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: quant(kind, "at_least", a, (1,), w, (0.9,)), (a, w))


@pytest.mark.parametrize("q", [0, -0.5, 1.5])
def test_at_least_needs_a_share_in_0_1(q):
    with pytest.raises(SemanticsError, match="at_least needs a share 0 < q <= 1"):
        fl.compile(f"sort s\npredicate a(s)\nrule r [forall = at_least({q})]: forall x: a(x)")



def test_at_most_is_at_least_of_the_negation():
    """forall[at_most(q)] x: a(x) == forall[at_least(1 - q)] x: not a(x), weighted,
    with its gradient; 1 on an empty domain."""
    a = torch.rand(3, 7, generator=G, dtype=torch.float64).requires_grad_()
    w = torch.rand(3, 7, generator=G, dtype=torch.float64)
    w[2] = 0
    most = quant("forall", "at_most", a, (1,), w, (0.3,))
    least = quant("forall", "at_least", 1 - a, (1,), w, (0.7,))
    assert torch.allclose(most, least, atol=1e-15) and most[2].item() == 1.0
    (g1,) = torch.autograd.grad(most.sum(), a)
    (g2,) = torch.autograd.grad(least.sum(), a)
    assert torch.allclose(g1, g2, atol=1e-15)
    with pytest.raises(SemanticsError, match="at_most needs a share 0 <= q < 1"):
        fl.compile("sort s\npredicate a(s)\nrule r [forall = at_most(1)]: forall x: a(x)")
