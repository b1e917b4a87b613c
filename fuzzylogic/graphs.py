"""A loss replayed as CUDA graphs: its eager kernels, captured once per input signature.

On a GPU a rule loss is launch-bound: hundreds of small kernels, each with
less work than its launch. :func:`torch.cuda.make_graphed_callables` records
the forward and the backward pass as two CUDA graphs and replays them: the
same kernels in the same order (the same values as eager, bit for bit),
without the launches and without torch.compile's compile time.

A graph holds for one *signature*: the structure of the arguments, the
shape, dtype, device and ``requires_grad`` of every tensor in them, and the
values of everything else. The first call of a signature runs eagerly (its
result is returned) and then captures the graphs (a few more eager runs to
warm up); later calls copy their tensors into the graph's inputs and replay.
The function must not read tensors on the host or branch on their values
(the compiled theories' CUDA paths do neither); a capture that fails falls
back to eager for that signature, with a warning.

The outputs of a replay live in the graph's memory until the next replay of
the same signature: use them (or clone them) before the next call, as a
training step does. A replay runs no Python: what the function does besides
computing its outputs (setting an attribute, counting calls) happens in the
eager calls only.
"""
from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from typing import Callable, Optional

import torch
from torch.utils import _pytree as pytree

from .errors import FuzzyLogicError

__all__ = ["GraphedFunction"]


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _on(device: torch.device):
    """The CUDA device of a graph made current (captures and replays use the
    current device's streams), nothing elsewhere."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class GraphedFunction:
    """``fn`` (tensors and plain values in, a pytree of tensors out) replayed as
    CUDA graphs per signature; at most ``max_graphs`` signatures are kept (the
    least recently used is dropped with its memory).

    Calls run eagerly where a graph cannot serve: outside a CUDA device, with
    gradients disabled, or with an argument that is neither a tensor nor
    hashable. ``grapher`` replaces ``torch.cuda.make_graphed_callables``
    (tests; with it, tensors on any device are graphed)."""

    def __init__(self, fn: Callable, *, max_graphs: int = 16, warmup: int = 3,
                 grapher: Optional[Callable] = None):
        if max_graphs < 1:
            raise FuzzyLogicError(f"max_graphs must be >= 1, got {max_graphs}")
        self.fn, self.max_graphs, self.warmup = fn, max_graphs, warmup
        self.grapher = grapher
        self._graphs: "OrderedDict[tuple, Optional[tuple]]" = OrderedDict()
        self.captures = 0  # signatures captured (a failed capture counts too)
        self.failures = 0  # captures that failed (those signatures run eagerly)

    def _signature(self, leaves):
        sig, devices = [], set()
        for x in leaves:
            if isinstance(x, torch.Tensor):
                if self.grapher is None and not x.is_cuda:
                    return None
                devices.add(x.device)
                sig.append((tuple(x.shape), x.dtype, x.device, x.requires_grad))
            elif _hashable(x):
                sig.append(("value", type(x), x))
            else:
                return None
        if len(devices) != 1:  # a graph runs on one device
            return None
        return tuple(sig)

    def __call__(self, *args, **kwargs):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        sig = self._signature(leaves) if torch.is_grad_enabled() else None
        if sig is None:
            return self.fn(*args, **kwargs)
        key = (spec, sig)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            entry = self._graphs[key]
            if entry is None:  # its capture failed: eager
                return self.fn(*args, **kwargs)
            graphed, keep = entry
            tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
            with _on(tensors[0].device):
                out = graphed(*tensors)
            # (outputs that need no gradient leave the graph's autograd node)
            return pytree.tree_unflatten([o if k else o.detach() for o, k in zip(pytree.tree_leaves(out), keep)],
                                         pytree.tree_structure(out))
        out = self.fn(*args, **kwargs)  # the first call of a signature: eager
        self._capture(key, leaves, spec, out)
        return out

    def _capture(self, key, leaves, spec, out) -> None:
        slots = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        # the plain values (the graph must not keep this call's tensors alive)
        template = [None if isinstance(x, torch.Tensor) else x for x in leaves]

        def flat(*tensors):
            full = list(template)
            for i, t in zip(slots, tensors):
                full[i] = t
            a, kw = pytree.tree_unflatten(full, spec)
            return self.fn(*a, **kw)

        # Fresh tensors as the graph's static inputs (the caller's stay its own).
        samples = tuple(leaves[i].detach().clone().requires_grad_(leaves[i].requires_grad) for i in slots)
        keep = tuple(isinstance(o, torch.Tensor) and o.requires_grad for o in pytree.tree_leaves(out))
        grapher = self.grapher or torch.cuda.make_graphed_callables
        self.captures += 1
        try:
            with _on(samples[0].device):
                entry = (grapher(flat, samples, num_warmup_iters=self.warmup), keep)
        except Exception as e:  # noqa: BLE001 - any capture failure: stay eager, say why
            self.failures += 1
            warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); this input "
                          "signature runs eagerly", RuntimeWarning, stacklevel=3)
            entry = None
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
