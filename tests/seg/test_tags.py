"""Tags: proposals, their classes, and a class head trained under the tag rules."""
import pytest
import torch

from fuzzylogic_seg import rule_facts as rf
from fuzzylogic_seg.finetune import load_rules
from fuzzylogic_seg.tags import (ImageProposals, features, mask_nms, proposal_classes, stability,
                                 train_head)


def test_stability_is_the_iou_of_two_thresholds():
    z = torch.tensor([[[3.0, 0.5, -0.5, -3.0]]])
    assert float(stability(z)) == pytest.approx(1 / 3)  # > +1: one pixel; > -1: three


def test_mask_nms_keeps_the_best_of_near_duplicates():
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :2] = True
    m[1, :2] = True
    m[1, 2, 0] = True   # IoU with 0: 8/9
    m[2, 3] = True
    keep = mask_nms(m, torch.tensor([0.5, 0.9, 0.1]), 0.7)
    assert keep.tolist() == [1, 2]


def test_features_average_the_embedding_under_the_mask():
    emb = torch.zeros(2, 2, 2)
    emb[0, 0, 0] = 4.0
    probs = torch.zeros(1, 8, 8)
    probs[0, :4, :4] = 1.0  # the top-left embedding cell
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    img[0, :4, :4] = 255
    f = features(emb, probs, img)
    assert f.shape == (1, 2 + 6)
    assert f[0, :2].tolist() == [4.0, 0.0]
    assert torch.allclose(f[0, 2:5], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(f[0, 5:], torch.zeros(3), atol=1e-3)


def _props(n=24, seed=0):
    """Two kinds of proposals: class-3 objects (feature +1) and background (-1)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        tags = torch.zeros(6, dtype=torch.bool)
        has = i % 3 != 0
        tags[3] = has
        feats = [torch.randn(4, generator=g) * 0.1 - 1]  # background proposal
        border = [0.6]
        if has:
            feats.append(torch.randn(4, generator=g) * 0.1 + 1)
            border.append(0.0)
        f = torch.stack(feats)
        out.append(ImageProposals(None, torch.zeros(len(f), 2, 2), torch.ones(len(f)), f,
                                  torch.tensor(border), torch.full((len(f),), 0.3), tags))
    return out


def test_head_trained_under_tag_rules_finds_the_tagged_class():
    (rules,) = load_rules(["examples/rules/tags.rules"], vocabulary=rf.TAG_VOCABULARY)
    props = _props()
    head, hist = train_head(props, [rules], 6, epochs=40, seed=0, device="cpu", progress=False)
    before, after = hist["initial"]["rules"], hist["epochs"][-1]["rules"]
    assert after["tagged_occurs"] > before["tagged_occurs"] + 0.3
    cls, conf = proposal_classes(props[1], head, "cpu")
    assert cls.tolist() == [0, 3]            # background, then the tagged object
    cls, _ = proposal_classes(props[0], head, "cpu")
    assert cls.tolist() == [0]               # no tag: only background is allowed


def test_zero_shot_tags_frame_is_background_single_tag_otherwise():
    p = _props()[1]
    cls, conf = proposal_classes(p, None, "cpu")
    assert cls.tolist() == [0, 3] and conf.tolist() == [1.0, 1.0]
    two = ImageProposals(None, p.logits, p.iou, p.feats, p.border, p.large,
                         torch.tensor([False, True, False, True, False, False]))
    cls, _ = proposal_classes(two, None, "cpu")
    assert cls.tolist() == [0, -1]            # several tags: class unknown
