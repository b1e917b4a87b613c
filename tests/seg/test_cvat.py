"""CVAT for images 1.1 XML -> VOC layout and weak labels (fuzzylogic_seg/data/cvat.py),
read back by the VOC loader. The file is written as CVAT's documentation describes it
(`<meta>` labels, `<image>` elements with box, polygon, ellipse, mask, polyline,
points and tag children); expected boxes and masks worked out by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.cvat import convert_cvat
from fuzzylogic_seg.errors import DatasetError

H, W = 40, 60
META = ("<meta><task><labels><label><name>car</name></label><label><name>dog</name></label>"
        "<label><name>background</name></label></labels></task></meta>")


def rle(mask: np.ndarray) -> str:
    """CVAT's runs: row-major over the mask's box, zeros first."""
    flat, runs, value, n = mask.reshape(-1).astype(bool), [], False, 0
    for v in flat:
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    runs.append(n)
    return ", ".join(map(str, runs))


def write(tmp_path, body, images=("a.jpg",), subset=None):
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    for n in images:
        Image.new("RGB", (W, H), (120, 120, 120)).save(d / n)
    xml = tmp_path / "annotations.xml"
    xml.write_text(f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>{META}'
                   f"{body}</annotations>")
    return xml, d


def test_shapes_become_boxes_masks_scribbles_and_clicks(tmp_path):
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True  # at left 40, top 30: x 41..43, y 31..32
    body = (
        '<image id="0" name="a.jpg" width="60" height="40">'
        '<polygon label="car" occluded="0" points="15,10;45,10;45,30;15,30" z_order="0"/>'
        # drawn first in the file but with the higher z: painted over the car
        f'<mask label="dog" rle="{rle(m)}" left="40" top="30" width="5" height="4" z_order="1"/>'
        '<polyline label="dog" points="2,2;10,2" z_order="0"/>'
        '<polyline label="background" points="0,38;20,38" z_order="0"/>'
        '<points label="car" points="20.6,15.2;30,20" z_order="0"/>'
        '<tag label="car"/>'
        "</image>")
    xml, images = write(tmp_path, body)
    out = tmp_path / "out"
    s = convert_cvat(xml, images, out, "train", scribble_width=1)
    assert s["classes"] == ["background", "car", "dog"]  # <meta>'s order, background first
    assert (s["objects"], s["masks"], s["strokes"], s["points"]) == (2, 1, 2, 2)
    assert s["not_read"] == {"tag": 1}
    a = VOCSegmentation(out, "train", kinds=("boxes",), with_gt=True)[0]
    assert a["weak"].boxes.tolist() == [[15, 10, 45, 30], [40, 30, 45, 34]]
    gt = a["gt"].numpy()
    assert gt[20, 30] == 1 and gt[31, 41] == 2 and gt[32, 43] == 2 and gt[33, 44] == 0
    assert gt[30, 40] == 1  # (the car's outline: the mask is 0 there)
    scr = np.asarray(Image.open(out / "scribbles" / "a.png"))
    assert (scr[2, 2:11] == 2).all() and (scr[38, 0:21] == 0).all() and scr[10, 10] == 255
    clicks = json.loads((out / "points_train.json").read_text())
    assert clicks == {"a": [{"x": 20, "y": 15, "class": "car"}, {"x": 30, "y": 20, "class": "car"}]}


def test_rotated_boxes_ellipses_groups_and_subsets(tmp_path):
    body = (
        '<image id="0" name="a.jpg" subset="Train" width="60" height="40">'
        # 20 x 10 about (30, 20), turned 90 degrees: 10 wide, 20 tall
        '<box label="car" xtl="20" ytl="15" xbr="40" ybr="25" rotation="90" z_order="0"/>'
        "</image>"
        '<image id="1" name="b.jpg" subset="Validation" width="60" height="40">'
        '<ellipse label="dog" cx="30" cy="20" rx="10" ry="5" z_order="0"/>'
        '<polygon label="car" group_id="3" points="2,2;8,2;8,8" z_order="0"/>'
        '<polygon label="car" group_id="3" points="50,30;58,30;58,38" z_order="0"/>'
        "</image>")
    xml, images = write(tmp_path, body, images=("a.jpg", "b.jpg"))
    s = convert_cvat(xml, images, tmp_path / "out", "train", subset="Train")
    assert s["images"] == 1
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)
    assert ds[0]["weak"].boxes.tolist() == [[25, 10, 35, 30]]
    s = convert_cvat(xml, images, tmp_path / "out", "val", subset="Validation")
    b = VOCSegmentation(tmp_path / "out", "val", kinds=("boxes",), with_gt=True)[0]
    assert b["weak"].boxes.tolist() == [[20, 15, 40, 25], [2, 2, 58, 38]]  # the group: one car
    gt = b["gt"].numpy()
    assert gt[20, 30] == 2 and gt[20, 21] == 2 and gt[16, 21] == 0  # an ellipse, not its box
    with pytest.raises(DatasetError, match="no image of subset 'Test' \\(the file has 'Train', 'Validation'\\)"):
        convert_cvat(xml, images, tmp_path / "out2", "test", subset="Test")


@pytest.mark.parametrize("body, msg", [
    ('<image id="0" name="a.jpg" width="60" height="40"><mask label="dog" rle="1, 2" left="0" '
     'top="0" width="2" height="2"/></image>', "image a.jpg, mask 0: rle runs cover 3 pixels, but the mask is 2x2"),
    ('<image id="0" name="a.jpg" width="60" height="40"><polygon label="dog" points="1,1;x,2;3,3"/></image>',
     "image a.jpg, polygon 0: points must be"),
    ('<image id="0" name="a.jpg" width="60" height="40"><box label="cow" xtl="1" ytl="1" xbr="5" ybr="5"/></image>',
     "unknown label 'cow'"),
    ('<image id="0" name="gone.jpg" width="60" height="40"></image>', "1 images are not in"),
    ('<image id="0" name="a.jpg" width="99" height="40"></image>', "image a.jpg, the annotation's image size"),
    ('<image id="0" name="a.jpg" width="60" height="40"><polygon label="background" points="1,1;5,1;5,5"/>'
     "</image>", "image a.jpg, polygon 0: an object labelled 'background'"),
    ('<image id="0" name="a.jpg" width="60" height="40"><box label="car" xtl="1" ytl="1" xbr="5" ybr="5" '
     'rotation="abc"/></image>', "image a.jpg, box 0: z_order '0' / rotation 'abc' must be finite"),
    ('<image id="0" name="a.jpg" width="60" height="40"><mask label="car" rle="" left="0" top="0" '
     'width="0" height="0"/></image>', "image a.jpg, mask 0: a mask of 0x0 pixels"),
    ('<image id="0" name="a.jpg" width="60" height="40"><tag label="car"/><polygon label="car" '
     'points="100,100;110,100;110,110"/></image>', "image a.jpg, shape 1 \\(car\\) lies outside"),
])
def test_broken_files_are_named_before_anything_is_written(tmp_path, body, msg):
    xml, images = write(tmp_path, body)
    with pytest.raises(DatasetError, match=msg):
        convert_cvat(xml, images, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


def test_cli_then_data_check_is_clean(tmp_path, capsys):
    xml, images = write(tmp_path, '<image id="0" name="a.jpg" width="60" height="40">'
                                  '<polygon label="car" points="15,10;45,10;45,30;15,30"/></image>')
    out = tmp_path / "out"
    assert main(["data", "cvat", str(xml), "--images", str(images), "--split", "val", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["masks"] == 1
    assert main(["data", "check", "voc", str(out), "--split", "val"]) == 0
    assert "0 errors" in capsys.readouterr().out


def test_z_order_across_group_parts_strokes_leaving_the_image_and_subset_folders(tmp_path):
    body = (
        '<image id="0" name="a.jpg" subset="Train" width="60" height="40">'
        '<polygon label="car" group_id="1" points="10,10;30,10;30,30;10,30" z_order="0"/>'
        '<polygon label="dog" points="15,15;35,15;35,35;15,35" z_order="2"/>'
        '<polygon label="car" group_id="1" points="18,18;24,18;24,24;18,24" z_order="5"/>'
        '<polyline label="dog" points="10,5;110,15" z_order="0"/>'
        '<points label="dog" points="5,5;70,5" z_order="0"/>'
        "</image>")
    xml, images = write(tmp_path, body, images=())
    (images / "Train").mkdir()
    Image.new("RGB", (W, H), (120, 120, 120)).save(images / "Train" / "a.jpg")  # a project export's layout
    out = tmp_path / "out"
    s = convert_cvat(xml, images, out, "train", scribble_width=1)
    assert s["points"] == 1 and s["points_outside"] == 1
    gt = VOCSegmentation(out, "train", kinds=("boxes",), with_gt=True)[0]["gt"].numpy()
    assert gt[20, 20] == 1 and gt[16, 16] == 2 and gt[12, 12] == 1  # the z=5 car part over the dog
    scr = np.asarray(Image.open(out / "scribbles" / "a.png"))
    # the stroke keeps its slope up to the border: at x = 59 it is at y = 5 + 49/10, not at 15
    assert scr[10, 59] == 2 and scr[15, 59] == 255
