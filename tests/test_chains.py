"""Long chains `a or b or ...` are folded without deep recursion (fuzzylogic.chains),
with the values and gradients of plain recursion, bit for bit."""
import pytest
import torch

import fuzzylogic as fl
from fuzzylogic import chains

torch.set_num_threads(1)


@fl.register_operator("conjunction", "chains_test_hamacher")
def _hamacher(a, b):  # no disjunction of this name: `or` is its De Morgan dual
    return a * b / (a + b - a * b).clamp_min(1e-12)


N = 60  # past chains.DIRECT: folded through links unless DIRECT is raised
PREDS = "".join(f"predicate a{i}(s) logits\n" for i in range(N)) + "predicate g(s)\n"


def text(word: str) -> str:
    terms = f" {word} ".join(f"a{i % 45}(x)" for i in range(N))  # repeats share atoms
    inner = " and ".join(f"a{i}(x)" for i in range(20))
    return (f"sort s\n{PREDS}"
            f"rule r: forall x in g(x): {terms} or not a1(x) and a2(x)\n"
            f"rule q [loss = log]: exists x: ({terms}) and a3(x)\n"
            # long chains as the first and as a later operand of a long chain
            f"rule n: forall x: ({inner}) or " + " or ".join([f"({inner})"] * 20) + "\n")


def run(sem, word, direct, monkeypatch):
    monkeypatch.setattr(chains, "DIRECT", 10 ** 9 if direct else 1)
    g = torch.Generator().manual_seed(0)
    facts = {f"a{i}": (3 * torch.randn(2, 5, generator=g, dtype=torch.float64)).requires_grad_()
             for i in range(N)}
    facts["g"] = (torch.rand(2, 5, generator=g) > 0.5).double()
    ev = fl.compile(text(word), sem).evaluate(**facts)
    grads = torch.autograd.grad(ev.loss, [facts[f"a{i}"] for i in range(45)])
    return [ev.truth[k] for k in sorted(ev.truth)] + [ev.loss] + list(grads)


@pytest.mark.parametrize("word", ["and", "or"])
@pytest.mark.parametrize("sem", ["product", "ltn", "log_product", "godel", "lukasiewicz",
                                 fl.Semantics(conjunction="chains_test_hamacher")],
                         ids=lambda s: s if isinstance(s, str) else "dual")
def test_links_give_the_values_and_gradients_of_plain_recursion(sem, word, monkeypatch):
    plain = run(sem, word, True, monkeypatch)
    linked = run(sem, word, False, monkeypatch)
    for a, b in zip(plain, linked):
        assert torch.equal(a, b)


def test_every_component_of_a_long_chain_reads_without_recursion():
    # 3000 levels: plain recursion would take several times the recursion limit
    from fuzzylogic.theory import _Context

    n = 3000
    th = fl.compile("sort s\n" + "".join(f"predicate a{i}(s) logits\n" for i in range(n))
                    + "rule r: forall x: " + " or ".join(f"a{i}(x)" for i in range(n)))
    g = torch.Generator().manual_seed(1)
    facts = {f"a{i}": torch.randn(1, 2, generator=g, dtype=torch.float64) - 9 for i in range(n)}
    want = 1 - torch.sigmoid(-torch.stack(list(facts.values()))).prod(0)
    for i in range(4):  # p, 1 - p, log p, log(1 - p), each read first
        value = th._plans[0].root.body(_Context(th, facts, None, True))
        got = value.negate().map(lambda t: t)._get(i ^ 1)  # (negate swaps p and q, the logs)
        expect = [want, 1 - want, want.log(), (1 - want).log()][i]
        torch.testing.assert_close(got, expect, rtol=1e-9, atol=0)


def test_a_long_chain_compiles_whole_under_torch_compile():
    n = 24  # past chains.DIRECT; plain recursion fails torch.compile's tracer from ~30
    text = ("semantics log_product\nsort r\nsort c\n"
            + "".join(f"constant c{i}: c = {i}\n" for i in range(n))
            + "predicate m(r, c) logits\nrule t: forall x: "
            + " or ".join(f"m(x, c{i})" for i in range(n)))
    th = fl.compile(text)
    z = torch.randn(2, 3, n)
    compiled = torch.compile(lambda t: th.loss(m=t, validate=False), backend="aot_eager",
                             fullgraph=True)(z)
    torch.testing.assert_close(compiled, th.loss(m=z))
