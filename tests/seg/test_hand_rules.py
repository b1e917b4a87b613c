"""The shipped fine-tuning rule files compute what their comments say: each rule's
loss and the gradient equal the same rules written by hand in plain torch
(benchmarks/hand_rules.py, also the speed reference of bench_finetune.py --hand),
on the facts of synthetic VOC / REFUGE batches, from soft to saturated logits."""
import sys
from pathlib import Path

import pytest
import torch

from fuzzylogic.parser import parse
from fuzzylogic_seg.finetune import LogicFineTuner, default_rules
from fuzzylogic_seg.sam.build import load_sam

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from hand_rules import HAND  # noqa: E402


def _dataset(kind, root):
    if kind == "voc":
        from fuzzylogic_seg.data.synth_voc import generate_voc
        from fuzzylogic_seg.data.voc import VOCSegmentation

        generate_voc(root, seed=5, n_train=6, n_val=0, progress=False)
        return VOCSegmentation(root, "train", with_gt=False, kinds=("boxes",))
    from fuzzylogic_seg.data.refuge import REFUGE
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    generate_refuge(root, seed=5, n_train=4, n_val=0, progress=False)
    return REFUGE(root, "train", with_gt=False, kinds=("boxes",))


@pytest.mark.parametrize("kind", ["voc", "refuge"])
def test_rule_file_equals_hand_written_torch(kind, tmp_path):
    path = default_rules(kind, "boxes")
    hand, weights = HAND[Path(path).name]
    program = parse(Path(path).read_text(), source=str(path))
    assert {r.name: r.weight for r in program.rules} == weights
    sam = load_sam("embedded")  # the shipped weights: zero-shot facts with sure cells
    # (keep_threshold 0.6: the small SAM is rarely 90% sure, and keep_fg needs sure cells)
    tuner = LogicFineTuner(sam, rules=[path], dataset_kind=kind, weak="boxes", progress=False,
                           keep_threshold=0.6, cache_dir=tmp_path / "cache")
    items = tuner.prepare(_dataset(kind, tmp_path / "data"))
    with torch.no_grad():
        base, _ = tuner.decode(items)
    for scale in (1.0, 0.2, 20.0):  # soft, confident, saturated truths (0 and 1 exactly)
        leaf = (base * scale).requires_grad_(True)
        facts, doms = tuner.facts(items, leaf)
        if kind == "voc":
            assert facts["overlap"].sum() > 0  # the pairwise rule has pairs to check
        loss, per_rule = tuner.evaluate_rules(facts, doms)
        (grad,) = torch.autograd.grad(loss, leaf, retain_graph=True)
        ref, ref_rule = hand(facts, doms[str(path)])
        (ref_grad,) = torch.autograd.grad(ref, leaf)
        assert set(per_rule) == set(ref_rule)
        for name, v in ref_rule.items():
            assert v.abs() > 0, name  # no rule is vacuous on this batch
            torch.testing.assert_close(per_rule[name], v, rtol=2e-6, atol=0, msg=name)
        torch.testing.assert_close(loss, ref, rtol=2e-6, atol=0)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
