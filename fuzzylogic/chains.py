"""Truth values of long chains ``a or b or c ...`` without deep recursion.

The compiler folds a chain of one connective pairwise, left to right:
``((a op b) op c) ...``. Truth values are lazy: reading a component of the
last level reads the level below, which reads the one below it... A chain of
thousands of terms would recurse that deep, past Python's recursion limit.

:func:`fold` hands each level, instead of the level below, a :class:`_Link`
to it that never recurses: reading a component that the level below has not
computed yet stops the reading level with :class:`_Pending`; a loop
(:func:`_drive`) computes that component first and reads the level again.
Each attempt stops at its first read of the level below, before the rest of
its work (for the built-in operators), so the same components are computed
by the same operations in the same order as with recursion: the same values
and gradients, bit for bit. Short chains (most) skip all this.
"""
from __future__ import annotations

from typing import Callable, Iterable

from .operators import TruthValue

__all__ = ["fold", "DIRECT"]

# Chains of at most this many operators are folded plainly: reading them recurses a
# few frames a level (torch.compile's tracer, a few dozen: it fails from ~30 levels).
DIRECT = 16


class _Pending(BaseException):
    """``args``: (value, index): a level needs that component of ``value`` first.
    (A BaseException: an ``except Exception`` in a user's operator must not
    swallow it; no ``__init__`` of its own: torch.compile traces it then.)"""


class _View(TruthValue):
    """A level of the chain as another reads it: its computed components, and
    :meth:`_missing` for the others."""

    __slots__ = ("_target",)

    def __init__(self, target: TruthValue):  # (shares the target's state)
        self._target, self._s, self._given = target, target._s, target._given

    def _get(self, i: int):
        v = self._s[i]
        if v is None or callable(v):
            return self._missing(i)
        return v


class _Link(_View):
    """The level below, as the level above sees it: a missing component stops
    the reading level with :class:`_Pending`."""

    __slots__ = ()

    def _missing(self, i: int):
        raise _Pending(self._target, i)


class _Top(_View):
    """The last level, as the consumer sees it: a missing component is computed by
    :func:`_drive`."""

    __slots__ = ()

    def _missing(self, i: int):
        return _drive(self._target, i)


def _drive(value: TruthValue, index: int):
    todo = [(value, index)]
    while todo:
        v, i = todo[-1]
        try:
            v._get(i)
        except _Pending as need:  # (always a level below v: the loop ends)
            todo.append(need.args)
        else:
            todo.pop()
    return value._get(index)


def fold(first: TruthValue, rest: Iterable[TruthValue],
         combine: Callable[[TruthValue, TruthValue], TruthValue], n: int) -> TruthValue:
    """``combine(... combine(combine(first, r1), r2) ..., rn)``, the ``rest`` taken in
    order; ``n``: how many there are."""
    if n <= DIRECT:
        acc = first
        for y in rest:
            acc = combine(acc, y)
        return acc
    acc = first
    for y in rest:
        acc = combine(_Link(acc), y)
    return _Top(acc)
