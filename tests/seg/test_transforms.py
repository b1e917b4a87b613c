"""ResizePad keeps image, mask and weak labels aligned; collate pads varying labels."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzylogic_seg.data.collate import collate
from fuzzylogic_seg.data.transforms import ResizePad, unpad_resize
from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.facts import box_masks
from fuzzylogic_seg.weak.simulate import tight_boxes
from fuzzylogic_seg.weak.types import WeakLabels

torch.set_num_threads(1)


def sample_with_rect(h, w, box, cls=3):
    """An image whose object is exactly the box (x0, y0, x1, y1 half-open)."""
    x0, y0, x1, y1 = box
    gt = torch.zeros(h, w, dtype=torch.long)
    gt[y0:y1, x0:x1] = cls
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[:, y0:y1, x0:x1] = 200
    scribble = torch.full((h, w), 255, dtype=torch.long)
    cy = (y0 + y1) // 2
    scribble[cy, x0:x1] = cls
    pts = torch.tensor([[(x0 + x1) / 2, (y0 + y1) / 2]])
    weak = WeakLabels(boxes=torch.tensor([box], dtype=torch.float32), box_labels=[cls],
                      scribble=scribble, points=pts, point_labels=[cls], size=(h, w))
    return {"id": "x", "image": image, "gt": gt, "weak": weak,
            "meta": {"orig_size": (h, w), "scale": 1.0, "size": (h, w)}}


def test_shapes_padding_and_meta():
    s = sample_with_rect(30, 60, (10, 5, 40, 20))
    out = ResizePad(120)(s)
    assert out["image"].shape == (3, 120, 120) and out["gt"].shape == (120, 120)
    assert out["meta"] == {"orig_size": (30, 60), "scale": 2.0, "size": (60, 120)}
    assert (out["image"][:, 60:] == 0).all()            # padding: image 0 ...
    assert (out["gt"][60:] == 255).all()                  # ... labels ignored
    assert (out["weak"].scribble[60:] == 255).all()
    assert out["weak"].size == (120, 120)
    # An exact factor of 2: nearest-exact upsampling replicates every pixel.
    assert torch.equal(out["gt"][:60], s["gt"].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert out["weak"].boxes.tolist() == [[20, 10, 80, 40]]
    assert out["weak"].points.tolist() == [[50, 25]]
    # The input sample is left as it was.
    assert s["image"].shape == (3, 30, 60) and s["weak"].boxes.tolist() == [[10, 5, 40, 20]]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 80), w=st.integers(8, 80), size=st.integers(16, 128), data=st.data())
def test_box_stays_on_its_object(h, w, size, data):
    x0 = data.draw(st.integers(0, w - 4))
    x1 = data.draw(st.integers(x0 + 4, w))
    y0 = data.draw(st.integers(0, h - 4))
    y1 = data.draw(st.integers(y0 + 4, h))
    out = ResizePad(size)(sample_with_rect(h, w, (x0, y0, x1, y1)))
    obj = out["gt"] == 3
    if not obj.any():
        return  # shrunk below one pixel
    # The resized box and the resized object agree to within one pixel per side.
    tight = tight_boxes(obj.unsqueeze(0))[0]
    assert (out["weak"].boxes[0] - tight).abs().max() <= 1.0
    inside = box_masks(out["weak"].boxes, size, size)[0] > 0
    assert (inside & obj).sum() >= 0.8 * obj.sum()
    # Scribble pixels keep their class in the resized mask; points stay on the object.
    scr = out["weak"].scribble
    assert (out["gt"][scr != 255] == scr[scr != 255]).all()
    px, py = out["weak"].points[0].floor().long().tolist()
    assert out["gt"][min(py, size - 1), min(px, size - 1)] == 3


def test_image_resize_is_deterministic_and_smooth():
    img = (torch.arange(64 * 48).reshape(1, 48, 64) % 251).to(torch.uint8).repeat(3, 1, 1)
    s = {"id": "a", "image": img, "weak": WeakLabels(size=(48, 64)), "meta": {}}
    a, b = ResizePad(32)(s), ResizePad(32)(s)
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (3, 32, 32)


def test_unpad_resize_inverts_an_integer_upscale():
    gt = torch.randint(0, 5, (20, 30))
    s = {"id": "a", "image": torch.zeros(3, 20, 30, dtype=torch.uint8), "gt": gt,
         "weak": WeakLabels(size=(20, 30)), "meta": {}}
    out = ResizePad(90)(s)
    assert torch.equal(unpad_resize(out["gt"], out["meta"]), gt)


def test_collate_pads_boxes_points_and_kinds():
    a = sample_with_rect(16, 16, (1, 1, 8, 8))
    a["weak"] = WeakLabels(boxes=[[1, 1, 8, 8], [2, 2, 5, 5], [0, 0, 3, 3]], box_labels=[1, 2, 3],
                           tags=torch.tensor([0, 1, 1, 1], dtype=torch.bool), size=(16, 16))
    b = sample_with_rect(16, 16, (4, 4, 12, 12))
    batch = collate([a, b], num_classes=4)
    assert batch["boxes"].shape == (2, 3, 4)
    assert batch["box_valid"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["box_labels"].tolist() == [[1, 2, 3], [3, -1, -1]]
    assert batch["boxes"][1, 0].tolist() == [4, 4, 12, 12] and (batch["boxes"][1, 1:] == 0).all()
    assert batch["has_scribble"].tolist() == [False, True]
    assert (batch["scribble"][0] == 255).all() and torch.equal(batch["scribble"][1], b["weak"].scribble)
    assert batch["has_tags"].tolist() == [True, False]
    assert batch["tags"].tolist() == [[False, True, True, True], [False] * 4]
    assert batch["point_valid"].tolist() == [[False], [True]]
    assert batch["gt"].shape == (2, 16, 16) and batch["image"].dtype == torch.uint8


def test_collate_refuses_mixed_sizes():
    with pytest.raises(ConfigError, match="ResizePad"):
        collate([sample_with_rect(16, 16, (1, 1, 8, 8)), sample_with_rect(16, 20, (1, 1, 8, 8))])
