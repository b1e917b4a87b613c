"""Every rule file in examples/rules parses, checks, binds to the facts the plugin
makes, and gives a finite loss with finite gradients on them."""
from pathlib import Path

import pytest
import torch

from fuzzylogic.checker import check
from fuzzylogic.parser import parse

RULES = Path(__file__).resolve().parent.parent / "examples" / "rules"
# file -> (data set kind, weak-label kind) it is written for
USES = {
    "refuge.rules": ("refuge", "boxes"),
    "voc_boxes.rules": ("voc", "boxes"),
    "scribbles.rules": ("voc", "scribbles"),
    "points.rules": ("voc", "points"),
    "tags.rules": ("voc", "tags"),
}
# Rule files of other parts of the project (the student's rules) bind elsewhere.
OTHERS = {p.name for p in RULES.glob("student_*.rules")}


def rule_files():
    return sorted(p for p in RULES.glob("*.rules") if p.name not in OTHERS)


def test_every_rule_file_is_known_here():
    assert {p.name for p in rule_files()} == set(USES)


@pytest.mark.parametrize("path", sorted(RULES.glob("*.rules")), ids=lambda p: p.name)
def test_rule_file_parses_and_checks(path):
    program = check(parse(path.read_text(), source=str(path), base_dir=path.parent))
    assert program.rules
    assert all(r.weight > 0 for r in program.rules)


def _sample(kind, weak_kind, i):
    from fuzzylogic_seg.weak.types import WeakLabels

    g = torch.Generator().manual_seed(i)
    img = torch.randint(0, 255, (3, 40, 52), generator=g, dtype=torch.uint8)
    scr = torch.full((40, 52), 255)
    scr[5, 4:12] = 3
    scr[30, 20:40] = 0
    scr[12:20, 40] = 5
    labels = [1, 2] if kind == "refuge" else [3, 5]
    w = WeakLabels(boxes=[[4, 3, 30, 28], [10, 8, 44, 36]], box_labels=labels,
                   scribble=scr, points=[[6.5, 5.5], [30.5, 30.5], [40.5, 15.5]],
                   point_labels=[3, 0, 5], tags=torch.tensor([False] * 3 + [True, False, True]),
                   size=(40, 52))
    return {"id": f"s{i}", "image": img, "weak": w.only([weak_kind])}


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_rule_file_binds_to_the_plugin_facts(path):
    from fuzzylogic_seg.finetune import LogicFineTuner
    from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded

    kind, weak = USES[path.name]
    torch.manual_seed(0)
    sam = build_embedded(TINY_CONFIG)
    data = [_sample(kind, weak, i) for i in range(2)]
    if weak == "tags":
        _check_tags(path, sam, data)
        return
    t = LogicFineTuner(sam, rules=[path], dataset_kind=kind, weak=weak, progress=False)
    items = t.prepare(data)
    assert len(items) == 2
    logits, _ = t.decode(items)
    leaf = logits.detach().requires_grad_(True)
    facts, doms = t.facts(items, leaf)
    loss, per_rule = t.evaluate_rules(facts, doms)
    assert torch.isfinite(loss)
    assert set(per_rule) == set(t.rules[0].rule_names)
    (grad,) = torch.autograd.grad(loss, leaf)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    sats = t.satisfaction(items)
    assert all(0.0 <= v <= 1.0 for v in sats.values())


def _check_tags(path, sam, data):
    from fuzzylogic_seg import rule_facts as rf
    from fuzzylogic_seg.finetune import load_rules
    from fuzzylogic_seg.tags import ImageProposals, _tag_facts, ClassHead

    (rules,) = load_rules([path], vocabulary=rf.TAG_VOCABULARY)
    props = []
    for i, s in enumerate(data):
        m = 3 + i
        props.append(ImageProposals(None, torch.zeros(m, 4, 4), torch.rand(m), torch.randn(m, 5),
                                    torch.rand(m), torch.rand(m), s["weak"].tags))
    head = ClassHead(5, 6, torch.zeros(5), torch.ones(5))
    facts, valid = _tag_facts(props, head, 6, "cpu")
    ev = rules.theory.evaluate(domains={rules.binding.sorts["proposal"]: valid},
                               **{k: facts[k] for k in rules.binding.predicates})
    assert torch.isfinite(ev.loss)
    ev.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
