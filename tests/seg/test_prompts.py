"""Weak labels -> SAM prompts, and the region of interest."""
import torch
import pytest

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.prompts import (View, box_prompts, farthest_points, grid_prompts,
                                    point_prompts, prompts_from_weak, roi_view, scribble_prompts)
from fuzzylogic_seg.weak.types import WeakLabels


def test_box_prompts_are_the_boxes_unchanged():
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0], [5.5, 0.0, 9.0, 4.0]])
    weak = WeakLabels(boxes=boxes, box_labels=[3, 7], size=(20, 20))
    p = box_prompts(weak)
    assert p.kind == "box" and len(p) == 2
    assert torch.equal(p.boxes, boxes) and p.labels.tolist() == [3, 7]
    assert p.decode_kwargs().keys() == {"boxes"}


def test_no_boxes_gives_no_prompts():
    p = box_prompts(WeakLabels(size=(5, 5)))
    assert len(p) == 0 and p.boxes.shape == (0, 4)


def test_farthest_points_spread_and_deterministic():
    # A straight stroke of 21 pixels: 3 points must be its middle and both ends.
    xy = torch.stack([torch.arange(21).float(), torch.zeros(21)], 1)
    pts = farthest_points(xy, 3)
    assert sorted(pts[:, 0].tolist()) == [0.0, 10.0, 20.0]
    assert pts[0, 0] == 10.0  # starts at the centre of the stroke
    assert torch.equal(pts, farthest_points(xy, 3))
    assert len(farthest_points(xy[:2], 5)) == 2


def test_scribble_prompts_positive_on_own_class_negative_elsewhere():
    scr = torch.full((12, 12), 255, dtype=torch.long)
    scr[2, 1:6] = 4          # class 4 stroke
    scr[9, 3:10] = 0         # background stroke
    scr[5:9, 10] = 7         # class 7 stroke
    weak = WeakLabels(scribble=scr)
    p = scribble_prompts(weak, n_pos=3, n_neg=2)
    assert p.kind == "point" and p.labels.tolist() == [4, 7]
    for k, c in enumerate(p.labels.tolist()):
        lab = p.point_labels[k]
        pts = p.points[k]
        for (x, y), label in zip(pts.tolist(), lab.tolist()):
            if label == -1:
                continue
            cls = int(scr[int(y), int(x)])  # points sit at pixel centres
            assert (cls == c) == (label == 1)
        assert int((lab == 1).sum()) == 3 and int((lab == 0).sum()) == 2


def test_point_prompts_use_other_points_as_negatives():
    weak = WeakLabels(points=[[1.5, 1.5], [4.5, 4.5], [8.5, 2.5]], point_labels=[2, 0, 5])
    p = point_prompts(weak)
    assert p.labels.tolist() == [2, 5]
    assert p.point_labels[0].tolist() == [1, 0, 0]
    assert p.points[0, 0].tolist() == [1.5, 1.5]


def test_grid_prompts_cover_the_image_evenly():
    p = grid_prompts(40, 80, n_per_side=4)
    assert len(p) == 16 and (p.labels == -1).all()
    xs = sorted(set(p.points[:, 0, 0].tolist()))
    assert xs == [10.0, 30.0, 50.0, 70.0]


def test_prompts_from_weak_rejects_unknown_kind():
    with pytest.raises(ConfigError):
        prompts_from_weak(WeakLabels(), "masks")


def test_shifted_moves_boxes_and_points_into_a_crop():
    weak = WeakLabels(boxes=[[10, 20, 30, 40]], box_labels=[1])
    p = box_prompts(weak).shifted(5, 10)
    assert p.boxes.tolist() == [[5, 10, 25, 30]]


def test_roi_view_is_a_square_around_the_box_inside_the_image():
    v = roi_view([40, 50, 60, 70], 200, 300, margin=0.5)
    assert v.size == (40, 40)
    assert (v.x0, v.y0) == (30, 40)
    # Near a border it moves inside rather than shrink.
    v = roi_view([0, 0, 20, 20], 200, 300, margin=0.5)
    assert (v.x0, v.y0, v.x1, v.y1) == (0, 0, 40, 40)
    # Larger than the image: clipped.
    v = roi_view([0, 0, 50, 30], 40, 60, margin=1.0)
    assert v.size == (40, 60) and v.x0 == 0


def test_view_crop():
    img = torch.arange(2 * 5 * 6).reshape(2, 5, 6)
    v = View(1, 2, 4, 5)
    assert torch.equal(v.crop(img), img[:, 2:5, 1:4])
