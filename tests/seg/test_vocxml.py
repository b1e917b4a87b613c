"""A folder of images and VOC XML files -> VOC layout (fuzzylogic_seg/data/vocxml.py),
read back by the VOC loader. The XML files are written here as LabelImg writes them."""
from __future__ import annotations

import json

import pytest

from custom_voc import photo

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.vocxml import convert_voc_xml
from fuzzylogic_seg.errors import DatasetError

H, W = 40, 60


def labelimg_xml(name, w, h, objects):
    """LabelImg's pascal_voc_io output (1-based integer boxes)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><folder>photos</folder><filename>{name}</filename><path>/home/u/photos/{name}"
            f"</path><source><database>Unknown</database></source><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def _image(path, exif_orientation=None):
    photo(path, (W, H), exif_orientation=exif_orientation)


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    _image(d / "a.jpg")
    (d / "a.xml").write_text(labelimg_xml("a.jpg", W, H, [("mug", (16, 11, 45, 30)), ("spoon", (0, 1, 61, 5))]))
    _image(d / "b.png")  # no XML: LabelImg saved nothing (no boxes)
    return d


def test_labelimg_folder_is_read_back_by_the_voc_loader(photos, tmp_path):
    s = convert_voc_xml(photos, tmp_path / "out", "train")
    assert s["classes"] == ["background", "mug", "spoon"]  # the names found, sorted
    assert (s["images"], s["objects"], s["without_xml"]) == (2, 2, 1)
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)
    a = ds[0]
    # VOC's 1-based inclusive (16, 11, 45, 30) is the half-open (15, 10, 45, 30); the
    # 0-based / one-past-the-border box is clamped to the image
    assert a["weak"].boxes.tolist() == [[15, 10, 45, 30], [0, 0, 60, 5]]
    assert a["weak"].box_labels.tolist() == [1, 2]
    assert ds[1]["weak"].boxes.shape == (0, 4)


def test_class_order_from_labelimg_predefined_classes_and_cli_check(photos, tmp_path, capsys):
    (photos / "predefined_classes.txt").write_text("spoon\nmug\nfork\n")
    out = tmp_path / "out"
    assert main(["data", "voc-xml", str(photos), "--split", "train", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["background", "spoon", "mug", "fork"]
    assert main(["data", "check", "voc", str(out), "--split", "train"]) == 0
    assert "0 errors" in capsys.readouterr().out


def test_xml_in_a_folder_of_their_own_and_explicit_classes(tmp_path):
    imgs, xmls = tmp_path / "JPEG", tmp_path / "xml"
    imgs.mkdir()
    xmls.mkdir()
    _image(imgs / "x.jpg")
    (xmls / "x.xml").write_text(labelimg_xml("x.jpg", W, H, [("mug", (1, 1, 10, 10))]))
    s = convert_voc_xml(imgs, tmp_path / "out", "val", annotations=xmls, classes="cup,mug")
    assert s["classes"] == ["background", "cup", "mug"] and s["objects"] == 1


def test_a_photo_annotated_as_displayed_is_written_upright(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    _image(d / "r.jpg", exif_orientation=6)  # stored 60 x 40, displayed 40 x 60
    (d / "r.xml").write_text(labelimg_xml("r.jpg", 40, 60, [("mug", (11, 1, 30, 30))]))
    s = convert_voc_xml(d, tmp_path / "out", "train")
    assert s["upright"] == 1
    r = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)[0]
    assert tuple(r["image"].shape) == (3, 60, 40) and r["weak"].boxes.tolist() == [[10, 0, 30, 30]]


@pytest.mark.parametrize("change, msg", [
    (lambda d: (d / "c.xml").write_text(labelimg_xml("c.jpg", W, H, [])), "1 XML files have no image .*c.xml"),
    (lambda d: (d / "a.xml").write_text("<annotation><object>"), "a.xml.*cannot read the XML"),
    (lambda d: (d / "a.xml").write_text(labelimg_xml("a.jpg", W, H, [("mug", (30, 1, 20, 5))])),
     "object 0 \\(mug\\): empty box"),
    (lambda d: (d / "a.xml").write_text(labelimg_xml("a.jpg", 100, 80, [("mug", (1, 1, 5, 5))])),
     "<size> says 100x80 but the image a.jpg is 60x40"),
    (lambda d: (d / "classes.txt").write_text("cup\n"), "unknown class name 'mug' \\(all unknown: mug, spoon\\)"),
    (lambda d: (d / "a.xml").write_text(labelimg_xml("a.jpg", W, H, [("background", (1, 1, 5, 5))])),
     "named 'background'"),
])
def test_broken_folders_are_named_before_anything_is_written(photos, tmp_path, change, msg):
    change(photos)
    with pytest.raises(DatasetError, match=msg):
        convert_voc_xml(photos, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


def test_subfolders_and_difficult_objects(tmp_path):
    d = tmp_path / "rf"
    (d / "sub").mkdir(parents=True)
    _image(d / "sub" / "n.jpg")
    (d / "sub" / "n.xml").write_text(labelimg_xml("n.jpg", W, H, [("mug", (1, 1, 10, 10))]).replace(
        "<difficult>0</difficult>", "<difficult>1</difficult>"))
    convert_voc_xml(d, tmp_path / "out", "train")
    xml = (tmp_path / "out" / "VOC2012" / "Annotations" / "n.xml").read_text()
    assert "<difficult>1</difficult>" in xml


def test_xml_files_elsewhere_are_pointed_to(tmp_path):
    d = tmp_path / "JPEGImages"
    d.mkdir()
    _image(d / "a.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(labelimg_xml("a.jpg", W, H, [("mug", (1, 1, 5, 5))]))
    with pytest.raises(DatasetError, match="no XML file for any of the 1 images .*--annotations DIR"):
        convert_voc_xml(d, tmp_path / "out", "train")
    s = convert_voc_xml(d, tmp_path / "out", "train", annotations=tmp_path / "Annotations")
    assert s["objects"] == 1


def test_rolabelimg_rotated_boxes_give_the_box_of_their_corners(tmp_path):
    """roLabelImg writes <robndbox> (cx, cy, w, h, angle in radians) instead of <bndbox>."""
    d = tmp_path / "ro"
    d.mkdir()
    _image(d / "s.jpg")
    (d / "s.xml").write_text(
        '<annotation verified="yes"><folder>ro</folder><filename>s.jpg</filename><size><width>60'
        '</width><height>40</height><depth>3</depth></size><object><type>robndbox</type>'
        '<name>ship</name><difficult>0</difficult><robndbox><cx>30</cx><cy>20</cy><w>20</w>'
        '<h>10</h><angle>1.5707963267948966</angle></robndbox></object></annotation>')
    convert_voc_xml(d, tmp_path / "out", "train")
    # turned by 90 degrees: 10 wide, 20 tall around (30, 20)
    boxes = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)[0]["weak"].boxes
    assert boxes.tolist() == [[25, 10, 35, 30]]


@pytest.mark.parametrize("box, msg", [
    ((500, 300, 640, 480), "object 0 \\(mug\\): box \\(500, 300, 640, 480\\) lies outside the 60x40 image"),
    (("nan", 1, 5, 5), "a box coordinate is not finite"),
])
def test_boxes_of_another_image_or_not_finite_are_refused(photos, tmp_path, box, msg):
    (photos / "a.xml").write_text(labelimg_xml("a.jpg", W, H, [("mug", box)]))
    with pytest.raises(DatasetError, match=msg):
        convert_voc_xml(photos, tmp_path / "out", "train")
