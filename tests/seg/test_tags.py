"""Tags: proposals, their classes, and a class head trained under the tag rules."""
import pytest
import torch

from fuzzylogic_seg import rule_facts as rf
from fuzzylogic_seg.finetune import load_rules
from fuzzylogic_seg.tags import (APPEARANCE_DIM, ImageProposals, appearance_features, features,
                                 mask_nms, proposal_classes, stability, tag_label_map,
                                 texture_maps, train_head)


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


def test_texture_maps_see_the_orientation_of_stripes():
    img = torch.zeros(3, 16, 16, dtype=torch.uint8)
    img[:, :, ::2] = 255                      # vertical stripes: grey changes along x only
    t = texture_maps(img, scales=(1,))
    assert t.shape == (4, 16, 16)
    assert float(t[0].mean()) == pytest.approx(1.0)       # |d/dx| = 1 everywhere
    assert float(t[1].abs().max()) == 0.0                 # |d/dy| = 0
    assert float(t[2].mean()) == pytest.approx(2 ** -0.5)  # diagonals: 1 / sqrt(2)
    flat = texture_maps(torch.full((3, 16, 16), 90, dtype=torch.uint8))
    assert flat.shape == (12, 16, 16) and float(flat.abs().max()) == 0.0


def test_appearance_features_colour_texture_and_shape():
    img = torch.zeros(3, 20, 40, dtype=torch.uint8)
    img[0] = 255                                # red everywhere ...
    img[:, 10:, 20:] = 0
    img[1, 10:, 20:] = torch.tensor([0, 255] * 10, dtype=torch.uint8)  # ... a striped patch
    masks = torch.zeros(2, 20, 40, dtype=torch.bool)
    masks[0, :10, :20] = True                   # flat red 10 x 20 box
    masks[1, 12:, 24:36] = True                 # inside the stripes, 8 x 12
    masks[1, 12:16, 24:30] = False              # not filling its box: 72 of 96
    f = appearance_features(img, masks, torch.tensor([0.25, 0.0]))
    assert f.shape == (2, APPEARANCE_DIM)
    assert torch.allclose(f[0, :3], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(f[0, 3:6], torch.zeros(3), atol=1e-3)
    assert torch.allclose(f[1, 3:6], torch.tensor([0.0, 0.5, 0.0]), atol=1e-3)  # green on/off
    flat = torch.log(torch.tensor(1e-3))
    assert f[0, 6].item() == pytest.approx(flat.item(), abs=0.05)     # |d/dx| of a flat region
    assert f[1, 6] > f[1, 7] + 3                 # stripes vary along x, not along y
    assert f[0, 18].item() == pytest.approx((200 / 800) ** 0.5)     # sqrt of the area share
    assert f[0, 19].item() == pytest.approx(torch.log(torch.tensor(11 / 21)).item())
    assert f[0, 20].item() == pytest.approx(1.0)
    assert f[1, 20].item() == pytest.approx(72 / 96)
    assert f[:, 21].tolist() == [0.25, 0.0]


class _FakePSAM:
    """Upsampling only: grid logits -> view size (what tag_label_map needs)."""

    def input_size(self, size):
        return size

    def postprocess(self, lg, input_size, size):
        return torch.nn.functional.interpolate(lg, size=tuple(size), mode="nearest")


class _FakeTuner:
    psam = _FakePSAM()
    device = torch.device("cpu")


def test_label_map_class_confidence_decides_overlaps_not_extent():
    from types import SimpleNamespace

    view = SimpleNamespace(size=(4, 4))
    item = SimpleNamespace(size=(4, 4), view=view)
    lg = torch.full((2, 4, 4), -5.0)
    lg[0, :, :2] = 5.0                   # proposal 0: left half
    lg[1, :, 1:3] = 5.0                  # proposal 1: middle columns, overlapping column 1
    p = ImageProposals(item, lg.half(), torch.tensor([0.9, 0.8]), torch.zeros(2, 1),
                       torch.zeros(2), torch.zeros(2), torch.tensor([True, True, True]))
    # Equal IoU-scale, but proposal 1 is the more confident of its class: it wins the overlap.
    out = tag_label_map(p, torch.tensor([1, 2]), torch.tensor([0.5, 0.9]), _FakeTuner(), 0.5)
    assert out[:, 0].tolist() == [1] * 4 and out[:, 1].tolist() == [2] * 4
    assert out[:, 2].tolist() == [2] * 4 and out[:, 3].tolist() == [0] * 4
    # A low class confidence does not shrink the proposal's extent.
    out = tag_label_map(p, torch.tensor([1, 2]), torch.tensor([0.3, 0.3]), _FakeTuner(), 0.5)
    assert out[:, 0].tolist() == [1] * 4 and out[:, 2].tolist() == [2] * 4


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


def test_a_tag_rule_file_that_cannot_bind_stops_before_the_proposals(tmp_path, monkeypatch):
    from fuzzylogic_seg import tags as T
    from fuzzylogic_seg.errors import ConfigError

    bad = tmp_path / "t.rules"  # a box fact in a tags file
    bad.write_text("sort proposal\nsort class\npredicate cls(proposal, class) softmax(class)\n"
                   "predicate inbox(proposal, class)\nrule r: forall p, c in inbox(p, c): cls(p, c)\n")
    monkeypatch.setattr(T, "make_proposals", lambda *a, **k: pytest.fail("proposals computed"))
    with pytest.raises(ConfigError, match=r"t.rules:4:11: predicate 'inbox' is not a fact"):
        T.tag_pseudo_labels("logic", dataset=None, sam=object(), threshold=0.5, dataset_kind="voc",
                            rules=[bad], epochs=1, seed=0, device="cpu", progress=False,
                            write=lambda *a: None)


def test_a_diverged_head_stops_with_an_error_that_says_what_to_change(monkeypatch):
    import fuzzylogic_seg.tags as T
    from fuzzylogic_seg.errors import DivergenceError

    (rules,) = load_rules(["examples/rules/tags.rules"], vocabulary=rf.TAG_VOCABULARY)
    real = T._evaluate

    def nan_loss(*a, **k):
        loss, sats = real(*a, **k)
        return loss * float("nan"), sats

    monkeypatch.setattr(T, "_evaluate", nan_loss)
    with pytest.raises(DivergenceError, match=r"epoch 1; lower finetune\.head_lr \(now 0\.01\)"):
        train_head(_props(6), [rules], 6, epochs=2, seed=0, device="cpu", progress=False)
