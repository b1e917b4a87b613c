"""LogicLoss: the module form of a theory; torch.compile; a toy training step."""
import pytest
import torch

import fuzzylogic as fl
from fuzzylogic.errors import FuzzyLogicError
from fuzzylogic.nn import LogicLoss

torch.set_num_threads(1)

TEXT = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
constant disc_box: box
rule cup_in_disc: forall p: cup(p) -> disc(p)
rule outside [weight = 0.5, forall = pmean_error(2)]: forall p where not inside(p, disc_box): not disc(p)
"""


def facts(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(cup=torch.randn(2, 8, 8, generator=g, requires_grad=True),
                disc=torch.randn(2, 8, 8, generator=g, requires_grad=True),
                inside=torch.rand(2, 8, 8, 2, generator=g), disc_box=torch.tensor([0, 1]))


def test_forward_equals_theory_loss_and_keeps_detached_truth():
    crit = LogicLoss(TEXT, semantics="log_product")
    f = facts()
    loss = crit(**f)
    th = fl.compile(TEXT, "log_product")
    assert loss.item() == pytest.approx(th.loss(**f).item())
    truth = th.truth(**f)
    assert set(crit.last_truth) == {"cup_in_disc", "outside"}
    for k, v in crit.last_truth.items():
        assert not v.requires_grad and torch.allclose(v, truth[k])
    assert sum(v for v in crit.last_rule_loss.values()).item() == pytest.approx(loss.item())
    loss.backward()
    assert f["cup"].grad is not None


def test_accepts_a_theory_and_modes():
    th = fl.compile(TEXT, "product")
    f = facts()
    assert LogicLoss(th)(**f).item() == pytest.approx(th.loss(**f).item())
    assert LogicLoss(th, mode="log")(**f).item() == pytest.approx(th.loss(mode="log", **f).item())
    assert LogicLoss(th, reduction="none")(**f).shape == (2,)
    with pytest.raises(FuzzyLogicError):
        LogicLoss(th, semantics="godel")
    with pytest.raises(FuzzyLogicError, match="mode"):
        LogicLoss(th, mode="l2")
    assert "cup_in_disc" in repr(LogicLoss(th))


def test_domains_pass_through():
    crit = LogicLoss("sort b\npredicate a(b)\nrule r [exists = max]: exists x: a(x)")
    a = torch.tensor([[0.9, 0.2, 0.1]])
    assert crit(a=a, domains={"b": torch.tensor([[0, 1, 1]])}).item() == pytest.approx(0.8)


def test_torch_compile_matches_eager():
    # aot_eager traces exactly what inductor would (dynamo + AOT autograd, one
    # graph: fullgraph=True fails on any graph break) without its C++ build time.
    crit = LogicLoss(TEXT, semantics="log_product")
    compiled = torch.compile(crit, backend="aot_eager", fullgraph=True)
    f1, f2 = facts(1), facts(1)
    l1 = compiled(**f1)
    l1.backward()
    l2 = crit(**f2)
    l2.backward()
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    assert torch.allclose(f1["cup"].grad, f2["cup"].grad, atol=1e-6)
    assert torch.allclose(f1["disc"].grad, f2["disc"].grad, atol=1e-6)
    assert torch.allclose(crit.last_truth["outside"], compiled.last_truth["outside"])


def test_a_few_steps_of_training_reduce_the_loss():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    crit = LogicLoss(TEXT, semantics="log_product", validate=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(2, 1, 8, 8)
    inside = torch.zeros(2, 8, 8, 2)
    inside[:, 2:6, 2:6, 0] = 1
    losses = []
    for _ in range(15):
        out = net(x)
        loss = crit(cup=out[:, 0], disc=out[:, 1], inside=inside, disc_box=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_a_model_holding_a_logic_loss_saves_and_loads_whole():
    """torch.save(model) pickles a Theory as its program and semantics (the compiled
    plan holds operator lambdas that pickle cannot store); loading compiles it again."""
    import io

    text = ("sort pixel[2]\npredicate cup(pixel) logits\npredicate disc(pixel) logits\n"
            "rule r [forall = pmean_error(2)]: forall p: cup(p) -> disc(p)\n"
            "rule n: forall p: not cup(p)\n")
    model = torch.nn.ModuleDict({"crit": LogicLoss(text, semantics="log_product", mode="log")})
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    x, y = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    assert again["crit"].mode == "log"
    assert torch.equal(again["crit"](cup=x, disc=y), model["crit"](cup=x, disc=y))
