"""LabelMe JSON -> VOC layout and weak labels (fuzzylogic_seg/data/labelme.py), read back by
the VOC loader and `fuzzyseg data weak`. The files are written as LabelMe 5 saves them;
the expected boxes and masks are worked out by hand."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from custom_voc import photo

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.labelme import convert_labelme
from fuzzylogic_seg.errors import DatasetError

H, W = 40, 60


def shape(label, points, kind="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": kind, "flags": {}, "mask": None}


def save(folder, name, shapes, image=True, size=(W, H), embed=False, exif_orientation=None, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    data = None
    if image:
        photo(folder / f"{name}.jpg", size, exif_orientation=exif_orientation)
    if embed:
        buf = io.BytesIO()
        Image.new("RGB", size, (120, 120, 120)).save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
    w, h = size if exif_orientation not in (5, 6, 7, 8) else size[::-1]
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg",
           "imageData": data, "imageHeight": h, "imageWidth": w, **extra}
    (folder / f"{name}.json").write_text(json.dumps(doc))


def test_outlines_give_boxes_and_masks_parts_of_a_group_one_object(tmp_path):
    d = tmp_path / "lm"
    save(d, "a", [
        shape("dog", [[15, 10], [45, 10], [45, 30], [15, 30]]),
        # a cat drawn in two parts (occluded): one object, the box of both
        shape("cat", [[2, 2], [8, 2], [8, 8], [2, 8]], group_id=1),
        shape("cat", [[50, 32], [58, 32], [58, 38], [50, 38]], group_id=1),
        shape("ball", [[30, 20], [33, 20]], "circle"),  # radius 3 around (30, 20)
    ])
    s = convert_labelme(d, tmp_path / "out", "train")
    assert s["classes"] == ["background", "ball", "cat", "dog"] and s["objects"] == 3 and s["masks"] == 1
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=True)
    a = ds[0]
    assert a["weak"].boxes.tolist() == [[15, 10, 45, 30], [2, 2, 58, 38], [27, 17, 33, 23]]
    assert a["weak"].box_labels.tolist() == [3, 2, 1]
    gt = a["gt"].numpy()
    # LabelMe's own labelme2voc: shapes in the file's order, each drawn by
    # labelme.utils.shape_to_mask, i.e. PIL's polygon / ellipse with outline=1, fill=1
    # (written again here from its source): the outline pixels are inside
    expected = np.zeros((H, W), np.int64)
    expected[10:31, 15:46] = 3
    expected[2:9, 2:9] = 2
    expected[32:39, 50:59] = 2
    disk = Image.new("1", (W, H), 0)
    ImageDraw.Draw(disk).ellipse([27, 17, 33, 23], outline=1, fill=1)
    expected[np.asarray(disk, dtype=bool)] = 1  # the last shape, over the dog
    assert np.array_equal(gt, expected)
    assert (gt[20, 27], gt[20, 33], gt[17, 30]) == (1, 1, 1)


def test_rectangles_are_boxes_and_leave_the_mask_out(tmp_path):
    d = tmp_path / "lm"
    save(d, "r", [shape("dog", [[45, 30], [15, 10]], "rectangle")])  # corners in any order
    save(d, "p", [shape("dog", [[15, 10], [45, 10], [45, 30], [15, 30]])])
    s = convert_labelme(d, tmp_path / "out", "train")
    assert (s["masks"], s["masks_left_out"]) == (1, 1)
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)
    assert [ds[i]["id"] for i in range(2)] == ["p", "r"]
    assert ds[1]["weak"].boxes.tolist() == [[15, 10, 45, 30]]
    assert not (tmp_path / "out" / "VOC2012" / "SegmentationClass" / "r.png").exists()


def test_lines_and_points_become_scribbles_and_clicks_that_data_weak_reads(tmp_path, capsys):
    d = tmp_path / "lm"
    save(d, "s", [
        shape("dog", [[10, 5], [20, 5]], "line"),
        shape("background", [[0, 35], [30, 35], [30, 39]], "linestrip"),
        shape("dog", [[12.7, 20.2]], "point"),
        shape("_background_", [[55, 2]], "point"),
    ])
    save(d, "t", [shape("dog", [[15, 10], [45, 10], [45, 30], [15, 30]])])  # no strokes here
    (d / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\n")  # LabelMe's own list
    out = tmp_path / "out"
    s = convert_labelme(d, out, "train", scribble_width=1)
    assert s["classes"] == ["background", "dog", "cat"]
    assert (s["strokes"], s["points"]) == (2, 2)
    scr = np.asarray(Image.open(out / "scribbles" / "s.png"))
    assert (scr[5, 10:21] == 1).all() and scr[4, 10] == 255 and scr[6, 10] == 255
    assert (scr[35, 0:31] == 0).all() and (scr[35:40, 30] == 0).all()
    assert (np.asarray(Image.open(out / "scribbles" / "t.png")) == 255).all()  # no strokes: none
    clicks = json.loads((out / "points_train.json").read_text())
    assert clicks == {"s": [{"x": 12, "y": 20, "class": "dog"}, {"x": 55, "y": 2, "class": "background"}],
                      "t": []}
    # an image of strokes and clicks only is not outlined: no mask for it
    assert s["masks"] == 1 and s["masks_left_out"] == 1
    for kind, extra in (("scribbles", ["--scribbles", out / "scribbles"]),
                        ("points", ["--points", out / "points_train.json"])):
        assert main(["data", "weak", "--dataset", "voc", "--root", str(out), "--split", "train",
                     "--kinds", kind, "--out", str(tmp_path / f"weak_{kind}"),
                     *map(str, extra)]) == 0
    capsys.readouterr()


def test_an_embedded_image_and_windows_paths(tmp_path):
    d = tmp_path / "lm"
    save(d, "e", [shape("dog", [[15, 10], [45, 10], [45, 30], [15, 30]])], image=False, embed=True)
    doc = json.loads((d / "e.json").read_text())
    doc["imagePath"] = "..\\\\photos\\\\e.jpg"  # saved on Windows, the photo not copied along
    (d / "e.json").write_text(json.dumps(doc))
    s = convert_labelme(d, tmp_path / "out", "train")
    assert s["from_image_data"] == 1
    assert (tmp_path / "out" / "VOC2012" / "JPEGImages" / "e.png").is_file()
    assert VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)[0]["weak"].boxes.tolist() \
        == [[15, 10, 45, 30]]


def test_a_photo_turned_by_exif_is_written_upright(tmp_path):
    d = tmp_path / "lm"
    save(d, "u", [shape("dog", [[10, 0], [30, 0], [30, 30], [10, 30]])], exif_orientation=6)
    s = convert_labelme(d, tmp_path / "out", "train")
    assert s["upright"] == 1
    u = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=True)[0]
    assert tuple(u["image"].shape) == (3, 60, 40) and u["weak"].boxes.tolist() == [[10, 0, 30, 30]]
    assert tuple(u["gt"].shape) == (60, 40)


@pytest.mark.parametrize("shapes, extra, msg", [
    ([shape("dog", [[1, 1], [5, 5]], "cuboid")], {}, "shape 0: shape_type 'cuboid' is not one"),
    ([shape("dog", [[1, 1], [5, 5]])], {}, "shape 0: a polygon needs at least 3 points"),
    ([shape("background", [[1, 1], [5, 1], [5, 5]])], {}, "shape 0: an object \\(polygon\\) labelled 'background'"),
    ([shape("dog", [[1, 1], [5, 1], [5, 5]])], {"imageHeight": 99}, "image size \\(height x width\\) 99x60 is not"),
    ([shape("", [[1, 1], [5, 1], [5, 5]])], {}, "shape 0: a shape is an object with a label"),
])
def test_broken_files_are_named_before_anything_is_written(tmp_path, shapes, extra, msg):
    d = tmp_path / "lm"
    save(d, "a", shapes, **extra)
    with pytest.raises(DatasetError, match=msg):
        convert_labelme(d, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


def test_an_image_nowhere_is_an_error(tmp_path):
    d = tmp_path / "lm"
    save(d, "a", [shape("dog", [[1, 1], [5, 1], [5, 5]])], image=False)
    with pytest.raises(DatasetError, match="its image is not found .*no imageData"):
        convert_labelme(d, tmp_path / "out", "train")


def test_cli_then_data_check_is_clean(tmp_path, capsys):
    d = tmp_path / "lm"
    save(d, "a", [shape("dog", [[15, 10], [45, 10], [45, 30], [15, 30]])])
    out = tmp_path / "out"
    assert main(["data", "labelme", str(d), "--split", "val", "--out", str(out), "--copy"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert main(["data", "check", "voc", str(out), "--split", "val"]) == 0
    assert "0 errors" in capsys.readouterr().out


def test_skip_empty_keeps_an_image_of_strokes_and_clicks(tmp_path):
    d = tmp_path / "lm"
    save(d, "s", [shape("dog", [[10, 5], [20, 5]], "line"), shape("dog", [[3, 3]], "point")])
    save(d, "n", [])
    s = convert_labelme(d, tmp_path / "out", "train", skip_empty=True)
    assert (s["images"], s["skipped_empty"], s["strokes"], s["points"]) == (1, 1, 1, 1)


def test_a_mask_shape_is_placed_as_labelme_places_it(tmp_path):
    """LabelMe 5's mask shape: a PNG of the box from points[0] (truncated) on,
    clipped to the image (labelme.utils.shapes_to_label)."""
    d = tmp_path / "lm"
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 255
    buf = io.BytesIO()
    Image.fromarray(m).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    s = shape("dog", [[10.7, 5.2], [15.7, 8.2]], "mask")
    s["mask"] = b64
    save(d, "m", [s])
    convert_labelme(d, tmp_path / "out", "train")
    gt = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=True)[0]["gt"].numpy()
    expected = np.zeros((H, W), np.int64)
    expected[6:8, 12:15] = 1
    assert np.array_equal(gt, expected)
