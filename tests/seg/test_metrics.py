"""Metrics against brute force and hand-made cases with known answers."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzylogic_seg.errors import PredictionError
from fuzzylogic_seg.metrics import (ConfusionMatrix, RefugeMetrics, SegMetrics, coverage, dice, vcdr,
                                    vertical_diameter)

torch.set_num_threads(1)


def test_hand_made_miou():
    # gt:   0 0 1 1      pred: 0 1 1 1     ignore the last pixel of row 2
    #       2 2 2 255          2 2 0 0
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm = ConfusionMatrix(3).update(pred, gt)
    # class 0: tp 1, fp 1 (gt 2 -> 0), fn 1 (gt 0 -> 1): 1/3
    # class 1: tp 2, fp 1, fn 0: 2/3;  class 2: tp 2, fp 0, fn 1: 2/3
    assert cm.iou().tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert cm.miou() == pytest.approx(5 / 9)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)


def test_absent_classes_are_left_out_and_uncertain_counts_as_miss():
    gt = torch.tensor([[0, 0, 1, 1]])
    cm = ConfusionMatrix(4).update(torch.tensor([[0, 255, 1, 1]]), gt)
    iou = cm.iou()
    assert math.isnan(iou[2]) and math.isnan(iou[3])       # neither in gt nor in pred
    assert iou[0] == pytest.approx(0.5) and iou[1] == 1    # the 255 is a miss of class 0
    assert cm.miou() == pytest.approx(0.75)
    d = cm.as_dict(["bg", "a", "b", "c"])
    assert d["per_class_iou"]["b"] is None and d["unassigned_pixels"] == 1


def test_bad_inputs():
    with pytest.raises(PredictionError, match="shape"):
        ConfusionMatrix(3).update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(PredictionError, match="prediction holds labels"):
        ConfusionMatrix(3).update(torch.full((2, 2), 7), torch.zeros(2, 2))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_img=st.integers(1, 3), C=st.integers(2, 5))
def test_split_confusion_matches_brute_force(data, n_img, C):
    cm = ConfusionMatrix(C)
    counts = {}
    for _ in range(n_img):
        h = data.draw(st.integers(1, 6))
        w = data.draw(st.integers(1, 6))
        vals = st.one_of(st.integers(0, C - 1), st.just(255))
        gt = torch.tensor(data.draw(st.lists(vals, min_size=h * w, max_size=h * w))).reshape(h, w)
        pred = torch.tensor(data.draw(st.lists(vals, min_size=h * w, max_size=h * w))).reshape(h, w)
        cm.update(pred, gt)
        for g, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
            if g != 255:
                counts[(g, p)] = counts.get((g, p), 0) + 1
    ious = []
    for c in range(C):
        tp = counts.get((c, c), 0)
        fp = sum(v for (g, p), v in counts.items() if p == c and g != c)
        fn = sum(v for (g, p), v in counts.items() if g == c and p != c)
        if tp + fp + fn:
            assert cm.iou()[c].item() == pytest.approx(tp / (tp + fp + fn))
            ious.append(tp / (tp + fp + fn))
        else:
            assert math.isnan(cm.iou()[c].item())
    if ious:
        assert cm.miou() == pytest.approx(sum(ious) / len(ious))


def test_dice_conventions():
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    empty = torch.zeros(1, 4, dtype=torch.bool)
    assert dice(empty, empty) == 1.0            # nothing to find, nothing found
    assert dice(a, empty) == 0.0 and dice(empty, a) == 0.0


def test_vertical_cdr_rows_spanned():
    lab = torch.zeros(20, 20, dtype=torch.long)
    lab[4:16, 5:15] = 1          # disc rows 4..15: 12 rows
    lab[7:10, 8:12] = 2          # cup rows 7..9 ...
    lab[12, 9] = 2               # ... and a stray row 12: spans 7..12 = 6 rows
    assert vertical_diameter(lab == 2) == 6
    assert vcdr(lab) == pytest.approx(6 / 12)
    assert vcdr(torch.zeros(5, 5, dtype=torch.long)) == 0.0
    assert vertical_diameter(torch.zeros(3, 3)) == 0


def test_refuge_metrics_per_image_and_mae():
    gt = torch.zeros(20, 20, dtype=torch.long)
    gt[4:16, 4:16] = 1
    gt[8:12, 8:12] = 2
    pred = gt.clone()
    pred[6:14, 6:14] = 2         # cup too large: rows 6..13 = 8 of 12
    m = RefugeMetrics()
    r = m.update(pred, gt, "a")
    assert r["dice_disc"] == 1.0
    assert r["dice_cup"] == pytest.approx(2 * 16 / (64 + 16))
    assert r["vcdr_gt"] == pytest.approx(4 / 12) and r["vcdr_pred"] == pytest.approx(8 / 12)
    m.update(gt, gt, "b")
    s = m.as_dict()
    assert s["images"] == 2 and s["vcdr_mae"] == pytest.approx((4 / 12) / 2)
    assert s["dice_cup"] == pytest.approx((0.4 + 1) / 2)


def test_coverage_and_seg_metrics():
    lab = torch.tensor([[0, 255], [1, 255]])
    assert coverage(lab) == 0.5
    m = SegMetrics("refuge", ("background", "disc", "cup"))
    gt = torch.tensor([[0, 1], [2, 2]])
    m.update(torch.tensor([[0, 1], [2, 255]]), gt, "x")
    d = m.as_dict()
    assert d["coverage"] == 0.75 and d["images"] == 1
    assert d["per_class_iou"]["cup"] == pytest.approx(0.5)


def test_refuge_label_one_is_reported_as_the_rim_not_the_disc():
    """Label 1 holds the rim (grey 128); a prediction with the right disc and no cup
    has disc Dice 1 while label 1's IoU is that of the rim alone."""
    gt = torch.zeros(10, 10, dtype=torch.long)
    gt[2:8, 2:8] = 1
    gt[4:6, 4:6] = 2
    pred = gt.clone()
    pred[pred == 2] = 1  # the disc right, the cup missed
    m = SegMetrics("refuge", ("background", "disc", "cup"))
    m.update(pred, gt, "x")
    d = m.as_dict()
    assert d["dice_disc"] == 1.0 and d["dice_cup"] == 0.0
    assert set(d["per_class_iou"]) == {"background", "rim", "cup"}
    assert d["per_class_iou"]["rim"] == pytest.approx(32 / 36)
