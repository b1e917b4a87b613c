"""fuzzylogic.graphs: which calls replay a captured graph and which run eagerly.

The bookkeeping is checked here on the CPU with a stand-in for
torch.cuda.make_graphed_callables that records each capture; the real capture
and replay (same values as eager, no relaunch of the function) are checked in
tests/test_cuda.py on a GPU."""
import warnings

import pytest
import torch

import fuzzylogic as fl
from fuzzylogic.errors import FuzzyLogicError
from fuzzylogic.graphs import GraphedFunction
from fuzzylogic.nn import LogicLoss


class Recorder:
    """A grapher that 'captures' by keeping the function: a replay calls it."""

    def __init__(self, fail=False):
        self.captures, self.fail = [], fail

    def __call__(self, fn, samples, num_warmup_iters):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures.append(tuple(s.shape for s in samples))
        self.samples = samples
        # the static inputs are fresh tensors, not the caller's
        return lambda *ts: fn(*ts)


def _loss(x, w, scale=1.0):
    y = (x.sigmoid() * w).sum() * scale
    return y, {"mean": x.detach().mean()}


def test_first_call_of_a_signature_is_eager_then_replayed():
    rec = Recorder()
    f = GraphedFunction(_loss, grapher=rec)
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.rand(3, 4)
    y1, d1 = f(x, w)
    assert f.captures == 1 and f.failures == 0 and rec.captures == [((3, 4), (3, 4))]
    # the graph's static inputs are copies, with the caller's requires_grad
    assert rec.samples[0] is not x and rec.samples[0].requires_grad and not rec.samples[1].requires_grad
    y2, d2 = f(x, w)  # the same signature: replayed, no new capture
    assert f.captures == 1 and len(rec.captures) == 1
    assert torch.equal(y1, y2) and torch.equal(d1["mean"], d2["mean"])
    g1, = torch.autograd.grad(y1, x)
    g2, = torch.autograd.grad(y2, x)
    torch.testing.assert_close(g1, g2)
    # outputs that needed no gradient in the eager call leave the replay's node
    assert not d2["mean"].requires_grad


def test_a_new_shape_dtype_flag_or_value_is_a_new_signature():
    rec = Recorder()
    f = GraphedFunction(_loss, grapher=rec)
    x, w = torch.randn(3, 4, requires_grad=True), torch.rand(3, 4)
    f(x, w)
    f(torch.randn(5, 4, requires_grad=True), torch.rand(5, 4))  # shape
    f(x.detach().double().requires_grad_(), w.double())  # dtype
    f(x, w, scale=2.0)  # a plain value
    f(x, w, scale=2.0)
    f(x.detach(), w)  # requires_grad
    assert f.captures == 5


def test_calls_without_gradients_or_with_unhashable_values_run_eagerly():
    rec = Recorder()
    calls = []

    def fn(x, opts):
        calls.append(1)
        return (x * 2).sum()

    f = GraphedFunction(fn, grapher=rec)
    x = torch.randn(4, requires_grad=True)
    f(x, [1, 2])  # a list is flattened: its items are values (captured)
    f(x, bytearray(b"ab"))  # an unhashable value: eager
    with torch.no_grad():
        f(x, 3)
        f(x, 3)
    assert len(calls) == 4 and f.captures == 1


def test_a_failed_capture_warns_once_and_stays_eager():
    f = GraphedFunction(_loss, grapher=Recorder(fail=True))
    x, w = torch.randn(2, 2, requires_grad=True), torch.rand(2, 2)
    with pytest.warns(RuntimeWarning, match="runs eagerly"):
        y1, _ = f(x, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2, _ = f(x, w)  # no second attempt, no second warning
    assert f.captures == 1 and f.failures == 1 and torch.equal(y1, y2)


def test_least_recently_used_signatures_are_dropped():
    rec = Recorder()
    f = GraphedFunction(_loss, grapher=rec, max_graphs=2)
    xs = [torch.randn(n, requires_grad=True) for n in (2, 3, 4)]
    for x in xs:
        f(x, torch.ones_like(x))
    f(xs[0], torch.ones_like(xs[0]))  # dropped: captured again
    assert f.captures == 4
    with pytest.raises(FuzzyLogicError, match="max_graphs"):
        GraphedFunction(_loss, max_graphs=0)


def test_without_a_grapher_cpu_tensors_run_eagerly():
    # the default grapher is CUDA's: a CPU call never tries to capture
    crit = LogicLoss(fl.compile("sort p[2]\npredicate a(p) logits\nrule r: forall x: a(x)"))
    f = GraphedFunction(crit)
    a = torch.randn(2, 3, 3, requires_grad=True)
    assert torch.equal(f(a=a), crit(a=a)) and f.captures == 0
