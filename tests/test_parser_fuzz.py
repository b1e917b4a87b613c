"""Fuzzing the front end: whatever the text, parse + check finish and raise only
FuzzyLogicError subclasses (never a lark error, RecursionError, IndexError...)."""
from __future__ import annotations

import contextlib
import signal
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzylogic.checker import check
from fuzzylogic.errors import FuzzyLogicError, SourceError
from fuzzylogic.parser import parse

SMALL = """\
# cup inside disc
semantics product
sort pixel[2]
sort box
sort class
constant disc_box: box
constant bg: class = 0
variable p: pixel
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
predicate seg(class, pixel) softmax(class)
rule cup_in_disc: forall p: inside(p, disc_box) -> cup(p) -> disc(p)
rule bg [weight = 0.5, forall = pmean_error(2)]:
    forall p where not (exists b: inside(p, b)): seg(bg, p)
rule cup_small: forall p in inside(disc_box): cup(p) -> disc(p) <-> true
rule: exists c, q: seg(c, q) and not cup(q) or false
"""

CORPUS = [SMALL]

TOKENS = [
    "include", "semantics", "sort", "predicate", "constant", "variable", "rule", "forall",
    "exists", "not", "and", "or", "in", "where", "true", "false", "prob", "logits", "softmax",
    "(", ")", "[", "]", ",", ":", "=", "->", "<->", "-", "<", ">", "#", "\n", '"x.rules"', '"',
    "p", "q", "cup", "inside", "pixel", "box", "disc_box", "weight", "0", "2", "0.5", "-1",
    "1e999", "pmean_error", "[2]", "index", "_",
]
INSERTABLE = "()[],:=-<>#\"\n\t ab_0é∀&|!"


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"parse + check ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def front_end(text: str, base_dir) -> None:
    """parse + check; only FuzzyLogicError may escape, and errors must render."""
    with time_limit(10):
        try:
            check(parse(text, source="fuzz.rules", base_dir=base_dir))
        except FuzzyLogicError as exc:
            rendered = str(exc)
            assert "internal error" not in rendered, rendered
            if isinstance(exc, SourceError) and exc.source == "fuzz.rules" and exc.line:
                assert 1 <= exc.line <= text.count("\n") + 1, rendered
                assert rendered.startswith(f"fuzz.rules:{exc.line}:{exc.column}: ")


FUZZ = settings(max_examples=max(250, settings.default.max_examples), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_corpus_is_valid(tmp_path):
    for text in CORPUS:
        program = check(parse(text, base_dir=tmp_path))
        assert len(program.rules) == 4


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(text, tmp_path):
    front_end(text, tmp_path)


@FUZZ
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=60),
       seps=st.lists(st.sampled_from(["", " ", "\n"]), min_size=60, max_size=60))
def test_random_token_soup(parts, seps, tmp_path):
    front_end("".join(p + s for p, s in zip(parts, seps)), tmp_path)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 6))):
        n = len(text)
        i = draw(st.integers(0, max(n - 1, 0)))
        op = draw(st.sampled_from(["delete", "insert", "swap", "duplicate", "cut"]))
        if op == "delete":
            j = draw(st.integers(i, min(n, i + 8)))
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.text(alphabet=INSERTABLE, min_size=1, max_size=4)) + text[i:]
        elif op == "swap" and i + 1 < n:
            text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        elif op == "duplicate":
            j = draw(st.integers(i, min(n, i + 40)))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "cut":
            text = text[:i]
    return text


@FUZZ
@given(text=mutated())
def test_mutated_rule_files(text, tmp_path):
    front_end(text, tmp_path)


@FUZZ
@given(path=st.text(max_size=300).filter(lambda s: '"' not in s and "\n" not in s),
       searched=st.booleans())
def test_random_include_paths(path, searched, tmp_path):
    # whatever the path (NUL bytes, names too long, folders, /dev files...), and with the
    # include search path or without: an IncludeError at worst
    from fuzzylogic.parser import _INCLUDE_DIRS, add_include_dir

    _INCLUDE_DIRS.clear()
    if searched:
        add_include_dir(tmp_path)
    front_end(f'include "{path}"\nsort a', tmp_path)


# Deterministic sweeps: single-character deletions (even offsets), adjacent swaps (odd
# offsets) and prefixes of a valid file; together they touch every token.
@pytest.mark.parametrize("op", ["delete", "swap", "prefix"])
def test_every_small_edit_of_a_valid_file(op, tmp_path):
    text = SMALL
    if op == "delete":
        variants = [text[:i] + text[i + 1:] for i in range(0, len(text), 2)]
    elif op == "swap":
        variants = [text[:i] + text[i + 1] + text[i] + text[i + 2:]
                    for i in range(1, len(text) - 1, 2)]
    else:
        variants = [text[:i] for i in range(0, len(text), 5)]
    for variant in variants:
        front_end(variant, tmp_path)


def test_pathological_inputs_finish(tmp_path):
    for text in [
        "rule r: " + "(" * 10000,
        "rule r: " + "not " * 10000,
        "rule r: " + "a(x) -> " * 2000 + "a(x)",
        "rule r: forall " + ", ".join(f"v{i}" for i in range(2000)) + ": a(v0)",
        "sort s\n" * 2000,
        "rule r [" + "weight = 1, " * 1000 + "]: true",
        "#" * 100000,
        "\n" * 100000 + "rule",
        "rule r: a(" + "x, " * 10000 + "x)",
    ]:
        front_end(text, tmp_path)
