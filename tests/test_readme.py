"""The README's Python examples run as printed and compute what its text says.

The blocks are read from README.md itself (so an edit there is tested), run with
their free names bound to tensors of the shapes the comments give, and their
loss is checked against the same rules written by hand in torch
(log_product: -log of the product over cells, Reichenbach implication,
standard negation; a soft guard g weights a cell's log as in SEMANTICS.md)."""
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
B, H, W, N = 2, 6, 7, 3


def python_blocks():
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def block_with(marker):
    found = [b for b in python_blocks() if marker in b]
    assert len(found) == 1, f"expected one README python block with {marker!r}, found {len(found)}"
    return found[0]


def bindings(seed):
    g = torch.Generator().manual_seed(seed)
    # logits of any size, saturated ones included, and crisp box masks
    cup = (torch.randn(B, H, W, generator=g, dtype=torch.float64) * 6).requires_grad_()
    disc = (torch.randn(B, H, W, generator=g, dtype=torch.float64) * 6).requires_grad_()
    inside = (torch.rand(B, H, W, N, generator=g, dtype=torch.float64) > 0.4).double()
    return {"cup_logits": cup, "disc_logits": disc, "box_masks": inside}


def run(block, seed):
    ns = bindings(seed)
    exec(compile(block, str(README), "exec"), ns)  # the README's own code, not user data
    return ns


@pytest.mark.parametrize("seed", [0, 1])
def test_first_taste_block_computes_cup_inside_disc(seed):
    ns = run(block_with('rule cup_in_disc: forall p: inside(p, box) -> cup(p) -> disc(p)'), seed)
    cup, disc, inside = ns["cup_logits"], ns["disc_logits"], ns["box_masks"]
    assert cup.grad is not None and disc.grad is not None  # loss.backward() ran
    c, d = cup.detach().clone().requires_grad_(), disc.detach().clone().requires_grad_()
    a = inside[..., 0]  # constant box = 0
    truth = 1 - a * torch.sigmoid(c) * torch.sigmoid(-d)  # (a and cup) -> disc, Reichenbach
    ref = -torch.log(truth).sum((1, 2)).mean()
    ref.backward()
    torch.testing.assert_close(ns["loss"].detach(), ref.detach())
    torch.testing.assert_close(cup.grad, c.grad)
    torch.testing.assert_close(disc.grad, d.grad)


@pytest.mark.parametrize("seed", [0, 1])
def test_python_api_block_computes_both_rules(seed):
    ns = run(block_with("constant disc_box: box"), seed)
    cup, disc, inside = ns["cup_logits"], ns["disc_logits"], ns["box_masks"]
    c, d = cup.detach().clone().requires_grad_(), disc.detach().clone().requires_grad_()
    box = torch.tensor([0, 2])  # the block's disc_box: one box index per batch item
    in_box = inside[torch.arange(B), :, :, box]
    cup_in_disc = -torch.log(1 - torch.sigmoid(c) * torch.sigmoid(-d)).sum((1, 2))
    outside = -((1 - in_box) * torch.nn.functional.logsigmoid(-d)).sum((1, 2))
    ref = cup_in_disc.mean() + 0.5 * outside.mean()
    ref.backward()
    torch.testing.assert_close(ns["loss"].detach(), ref.detach())
    torch.testing.assert_close(cup.grad, c.grad)
    torch.testing.assert_close(disc.grad, d.grad)


def test_every_fuzzylogic_block_that_compiles_a_theory_is_tested():
    # A new self-contained example in the README gets a test here, or this fails.
    runnable = [b for b in python_blocks() if "fl.compile(\"\"\"" in b and "loss" in b]
    assert len(runnable) == 2
