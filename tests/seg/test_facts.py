"""Fact tensors against brute force, and bound to a rule file of examples/rules/."""
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzylogic_seg.data.collate import collate
from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.facts import (box_masks, build_facts, class_box_masks, col_masks, ellipse_masks,
                                  outside_all, point_masks, row_masks, scribble_onehot, tag_vector)
from fuzzylogic_seg.weak.types import WeakLabels

torch.set_num_threads(1)
RULES = Path(__file__).resolve().parents[2] / "examples" / "rules"


def bf_box(box, H, W, soft):
    """Per-pixel membership by 200x200 numeric integration (soft) or the centre rule (hard)."""
    x0, y0, x1, y1 = box
    out = torch.zeros(H, W)
    for y in range(H):
        for x in range(W):
            if soft:
                ox = max(0.0, min(x1, x + 1) - max(x0, x))
                oy = max(0.0, min(y1, y + 1) - max(y0, y))
                out[y, x] = ox * oy
            else:
                out[y, x] = float(x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1)
    return out


coords = st.floats(0, 12, allow_nan=False).map(lambda v: round(v * 4) / 4)


@settings(max_examples=40, deadline=None)
@given(a=coords, b=coords, c=coords, d=coords)
def test_box_masks_match_brute_force(a, b, c, d):
    box = (min(a, b), min(c, d), max(a, b) + 0.25, max(c, d) + 0.25)
    H, W = 14, 13
    t = torch.tensor([box])
    hard = box_masks(t, H, W)[0]
    ref = bf_box(box, H, W, soft=False)
    # Hard: the centre rule, plus the middle pixel for boxes thinner than a pixel.
    assert (hard >= ref).all()
    extra = hard - ref
    assert extra.sum() <= H + W
    assert hard.sum() >= 1 or box[0] >= W or box[1] >= H
    soft = box_masks(t, H, W, soft=True)[0]
    assert torch.allclose(soft, bf_box(box, H, W, soft=True), atol=1e-6)
    assert torch.equal(hard, row_masks(t, H)[0][:, None] * col_masks(t, W)[0][None, :])


def test_integer_boxes_hard_equals_soft_and_slices():
    boxes = torch.tensor([[2.0, 1, 5, 4], [0, 0, 7, 6], [6, 5, 7, 6]])
    hard = box_masks(boxes, 6, 7)
    assert torch.equal(hard, box_masks(boxes, 6, 7, soft=True))
    for m, (x0, y0, x1, y1) in zip(hard, boxes.long().tolist()):
        ref = torch.zeros(6, 7)
        ref[y0:y1, x0:x1] = 1
        assert torch.equal(m, ref)
    assert row_masks(boxes, 6)[0].tolist() == [0, 1, 1, 1, 0, 0]
    assert col_masks(boxes, 7)[0].tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_class_union_and_outside():
    boxes = torch.tensor([[0.0, 0, 3, 3], [2, 2, 5, 5], [4, 0, 6, 2]])
    labels = torch.tensor([1, 1, 2])
    cb = class_box_masks(boxes, labels, 3, 6, 6)
    ref = torch.zeros(3, 6, 6)
    ref[1, 0:3, 0:3] = 1
    ref[1, 2:5, 2:5] = 1
    ref[2, 0:2, 4:6] = 1
    assert torch.equal(cb, ref)
    assert torch.equal(outside_all(boxes, 6, 6), 1 - ref.amax(0))
    assert torch.equal(outside_all(torch.zeros(0, 4), 2, 2), torch.ones(2, 2))


def test_ellipse_points_scribbles_tags():
    e = ellipse_masks(torch.tensor([[0.0, 0, 10, 6]]), 6, 10)[0]
    for y in range(6):
        for x in range(10):
            inside = ((x + 0.5 - 5) / 5) ** 2 + ((y + 0.5 - 3) / 3) ** 2 <= 1
            assert bool(e[y, x]) == inside
    pm = point_masks(torch.tensor([[2.5, 1.5], [0.5, 0.5]]), 3, 4)
    assert pm[0].nonzero().tolist() == [[1, 2]] and pm[1].nonzero().tolist() == [[0, 0]]
    scr = torch.tensor([[255, 0], [2, 255]])
    oh, lab = scribble_onehot(scr, 3)
    assert lab.tolist() == [[0, 1], [1, 0]]
    assert oh[0].tolist() == [[0, 1], [0, 0]] and oh[2].tolist() == [[0, 0], [1, 0]]
    assert oh[1].sum() == 0
    assert tag_vector(torch.tensor([3, 1]), 5).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError):
        scribble_onehot(torch.tensor([[7]]), 3)


def sample(weak, h=12, w=16, gt=None):
    s = {"id": "s", "image": torch.zeros(3, h, w, dtype=torch.uint8), "weak": weak,
         "meta": {"orig_size": (h, w), "scale": 1.0, "size": (h, w)}}
    if gt is not None:
        s["gt"] = gt
    return s


def test_build_facts_layout_padding_and_heterogeneous_kinds():
    a = WeakLabels(boxes=[[1, 1, 6, 6], [4, 4, 10, 9]], box_labels=[1, 2], size=(12, 16))
    scr = torch.full((12, 16), 255)
    scr[2, 2:5] = 2
    scr[10, :] = 0
    b = WeakLabels(scribble=scr, tags=torch.tensor([0, 0, 1], dtype=torch.bool), size=(12, 16))
    f = build_facts(collate([sample(a), sample(b)], 3), 3)
    assert f["inbox"].shape == (2, 2, 12, 16) and f["rowin"].shape == (2, 2, 12)
    assert torch.equal(f["inbox"][0], box_masks(a.boxes, 12, 16))
    assert (f["inbox"][1] == 0).all()                     # image b has no boxes: padding
    assert f["domains"]["region"].tolist() == [[True, True], [False, False]]
    assert torch.equal(f["outside"][0], outside_all(a.boxes, 12, 16))
    assert (f["outside"][1] == 0).all()                   # no box labels: no claim
    assert torch.equal(f["classbox"][0], class_box_masks(a.boxes, a.box_labels, 3, 12, 16))
    assert f["overlap"][0].tolist() == [[0, 1], [1, 0]]
    assert f["labelled"][1].sum() == 3 + 16 and f["scribbled"][1, 2].sum() == 3
    assert f["tagged"].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert f["untagged"].tolist() == [[0, 0, 0], [1, 1, 0]]
    assert f["disc"].tolist() == [0, 0] and f["cup"].tolist() == [1, 0]


def test_facts_bind_to_the_voc_box_rules():
    """A rule file of examples/rules/ evaluates on these facts: the true object
    masks satisfy the box rules, a mask filling the image violates them."""
    fl = pytest.importorskip("fuzzylogic")
    from fuzzylogic_seg.rule_facts import model_facts

    path = RULES / "voc_boxes.rules"
    if not path.is_file():
        pytest.skip("examples/rules/voc_boxes.rules not present")
    theory = fl.load(str(path))
    gt = torch.zeros(12, 16, dtype=torch.long)
    gt[2:6, 2:7] = 5
    gt[7:11, 9:15] = 9
    weak = WeakLabels(boxes=[[2, 2, 7, 6], [9, 7, 15, 11]], box_labels=[5, 9], size=(12, 16))
    f = build_facts(collate([sample(weak, gt=gt)], 21), 21)
    names = set(theory.required_facts) if hasattr(theory, "required_facts") else set()
    zeros = torch.zeros_like(f["inbox"])
    good = torch.where(gt.unsqueeze(0) == torch.tensor([5, 9]).view(2, 1, 1), 30.0, -30.0)[None]
    bad = torch.full_like(good, 30.0)

    def truth(mask):
        facts = {k: f[k] for k in ("inbox", "rowin", "colin", "outside", "overlap")}
        facts.update(mask=mask, zs_fg=zeros, zs_bg=zeros)
        # The file's appearance rules need model and image facts too; a flat
        # image gives no colour evidence (zero affinity, nothing background-like).
        facts.update(model_facts(mask, ("mask_right", "mask_down")))
        flat = torch.zeros(1, *f["inbox"].shape[-2:])
        facts.update(similar_right=flat, similar_down=flat, bglike=zeros)
        facts = {k: v for k, v in facts.items() if not names or k in names}
        doms = {k: f["domains"][k] for k in ("region", "row", "col")}
        return {k: float(v[0]) for k, v in theory.truth(domains=doms, **facts).items()}

    t_good, t_bad = truth(good), truth(bad)
    for rule in ("outside_is_background", "inside_box", "box_rows", "box_cols"):
        assert t_good[rule] > 0.99, (rule, t_good)
    assert t_bad["inside_box"] < 0.01 and t_bad["outside_is_background"] < 0.01


def test_build_facts_subset_matches_full():
    a = WeakLabels(boxes=[[1, 1, 6, 6], [4, 4, 10, 9]], box_labels=[1, 2],
                   scribble=torch.full((12, 16), 255).index_fill_(0, torch.tensor([3]), 2),
                   points=[[2.5, 2.5]], point_labels=[1], size=(12, 16))
    batch = collate([sample(a)], 3)
    full = build_facts(batch, 3)
    part = build_facts(batch, 3, names=["scrib", "outside"])
    assert set(part) == {"scrib", "outside", "domains", "box_labels", "disc", "cup"}
    assert torch.equal(part["scrib"], full["scrib"]) and torch.equal(part["outside"], full["outside"])
    assert full["scrib"][0, 1, 3].sum() == 16 and full["scrib"][0, 0].sum() == 0  # class 2 = box 2
    assert full["scrib_other"][0, 0, 3].sum() == 16                                # class 2 != box 1
    with pytest.raises(ConfigError, match="unknown fact"):
        build_facts(batch, 3, names=["mask"])
