"""YOLO labels -> VOC layout (fuzzylogic_seg/data/yolo.py), read back by the VOC loader.

The expected boxes and masks are worked out by hand from YOLO's definition
(numbers relative to the displayed image: centre and size, or polygon corners),
independently of the converter."""
from __future__ import annotations

import json

import numpy as np
import pytest

from custom_voc import photo

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.yolo import convert_yolo
from fuzzylogic_seg.errors import DatasetError

H, W = 40, 60


def _image(path, colour=(120, 120, 120), exif_orientation=None):
    photo(path, (W, H), colour, exif_orientation)


def _labels(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{ln}\n" for ln in lines))


@pytest.fixture()
def ultralytics(tmp_path):
    """Ultralytics' layout: images/SPLIT and labels/SPLIT under the YAML's path."""
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "a.jpg")
    _image(root / "images" / "train" / "b.png", (90, 140, 90))
    _image(root / "images" / "train" / "c.jpg", (10, 10, 10))  # no label file: background only
    _labels(root / "labels" / "train" / "a.txt", [
        "1 0.5 0.5 0.5 0.5",     # dog: x 15..45, y 10..30
        "0 0.25 0.25 0.1 0.2",   # car: x 12..18, y 6..14
        "0 0.25 0.25 0.1 0.2",   # (a repeated line is one object, as Ultralytics reads it)
    ])
    _labels(root / "labels" / "train" / "b.txt", [])
    _image(root / "images" / "val" / "d.jpg")
    _labels(root / "labels" / "val" / "d.txt", ["0 0.5 0.5 1 1"])
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: car\n  1: dog\n")
    return yaml


def test_boxes_are_read_back_by_the_voc_loader(ultralytics, tmp_path):
    out = tmp_path / "out"
    s = convert_yolo(ultralytics, out, "train")
    assert s["classes"] == ["background", "car", "dog"]
    assert (s["images"], s["objects"], s["boxes"], s["masks"]) == (3, 2, 2, 0)
    assert s["without_labels"] == 1
    ds = VOCSegmentation(out, "train", kinds=("boxes", "tags"), with_gt=False)
    assert ds.classes == ("background", "car", "dog")
    a = ds[0]
    assert a["id"] == "a"
    assert a["weak"].boxes.tolist() == [[15, 10, 45, 30], [12, 6, 18, 14]]
    assert a["weak"].box_labels.tolist() == [2, 1]
    assert a["weak"].tags.tolist() == [False, True, True]
    assert ds[1]["weak"].boxes.shape == (0, 4) and ds[2]["weak"].boxes.shape == (0, 4)
    assert not (out / "VOC2012" / "SegmentationClass").exists()  # boxes: no masks
    # a second split into the same folder; then `data check` finds nothing wrong
    assert convert_yolo(ultralytics, out, "val")["images"] == 1
    assert VOCSegmentation(out, "val", kinds=("boxes",), with_gt=False)[0]["weak"].boxes.tolist() == \
        [[0, 0, 60, 40]]


def test_polygons_give_boxes_and_masks(tmp_path):
    root = tmp_path / "seg"
    _image(root / "images" / "train" / "p.jpg")
    _image(root / "images" / "train" / "q.jpg")
    _labels(root / "labels" / "train" / "p.txt", [
        # a small square (class 1) listed before the large rectangle (class 0) it lies on:
        # painted last all the same (largest first)
        # (a point mid-edge: a polygon of four corners alone would read as an oriented box)
        "1 0.5 0.5 0.55 0.5 0.6 0.5 0.6 0.75 0.5 0.75",     # x 30..36, y 20..30
        "0 0.25 0.25 0.5 0.25 0.75 0.25 0.75 0.75 0.25 0.75",  # x 15..45, y 10..30
    ])
    _labels(root / "labels" / "train" / "q.txt", ["0 0.5 0.5 0.2 0.2"])  # a box: no mask here
    yaml = root / "data.yaml"
    yaml.write_text("train: images/train\nnames: [car, dog]\nnc: 2\n")  # paths relative to the YAML
    s = convert_yolo(yaml, tmp_path / "out", "train")
    assert (s["polygons"], s["boxes"], s["masks"], s["masks_left_out"]) == (2, 1, 1, 1)
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=True)
    assert not (tmp_path / "out" / "VOC2012" / "SegmentationClass" / "q.png").exists()
    p = ds[0]
    assert p["weak"].boxes.tolist() == [[30, 20, 36, 30], [15, 10, 45, 30]]
    expected = np.zeros((H, W), np.int64)
    expected[10:30, 15:45] = 1
    expected[20:30, 30:36] = 2
    assert np.array_equal(p["gt"].numpy(), expected)
    # --no-masks: boxes only
    s = convert_yolo(yaml, tmp_path / "boxes", "train", masks=False)
    assert s["masks"] == 0 and not (tmp_path / "boxes" / "VOC2012" / "SegmentationClass").exists()


def test_roboflow_layout_and_cli_then_data_check(tmp_path, capsys):
    """Roboflow's YOLO export: data.yaml beside train/ valid/, paths written as ../x/images."""
    root = tmp_path / "rf"
    for split in ("train", "valid"):
        _image(root / split / "images" / f"{split}_1.jpg")
        _labels(root / split / "labels" / f"{split}_1.txt", ["0 0.5 0.5 0.5 0.5"])
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n"
                                    "nc: 1\nnames: ['cat']\n")
    out = tmp_path / "out"
    assert main(["data", "yolo", str(root / "data.yaml"), "--split", "val", "--out", str(out),
                 "--copy"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 1 and summary["classes"] == ["background", "cat"]
    assert not (out / "VOC2012" / "JPEGImages" / "valid_1.jpg").is_symlink()
    assert main(["data", "check", "voc", str(out), "--split", "val"]) == 0
    assert "0 errors" in capsys.readouterr().out


def test_darknet_folder_with_classes_txt_and_an_image_list(tmp_path):
    """Labels beside the images, names in classes.txt (LabelImg's YOLO mode, darknet)."""
    folder = tmp_path / "imgs"
    _image(folder / "x.jpg")
    _labels(folder / "x.txt", ["1 0.5 0.5 0.5 0.5"])
    (folder / "classes.txt").write_text("person\nbicycle\n")
    s = convert_yolo(folder, tmp_path / "out", "train")
    assert s["classes"] == ["background", "person", "bicycle"] and s["objects"] == 1
    # a YAML whose split is an image list (a line each, relative to the list)
    (tmp_path / "train.txt").write_text("./imgs/x.jpg\n")
    (tmp_path / "d.yaml").write_text("train: train.txt\nnames: [person, bicycle]\n")
    assert convert_yolo(tmp_path / "d.yaml", tmp_path / "out2", "train")["objects"] == 1


def test_pose_labels_give_their_boxes(tmp_path):
    root = tmp_path / "pose"
    _image(root / "images" / "train" / "k.jpg")
    _labels(root / "labels" / "train" / "k.txt", ["0 0.5 0.5 0.5 0.5 0.4 0.4 2 0.6 0.6 1"])
    (root / "data.yaml").write_text("train: images/train\nkpt_shape: [2, 3]\nnames: [person]\n")
    s = convert_yolo(root / "data.yaml", tmp_path / "out", "train")
    assert s["boxes"] == 1 and s["polygons"] == 0


def test_an_image_turned_by_exif_is_written_upright(tmp_path):
    """YOLO's numbers are relative to the displayed image: stored 60 x 40 with EXIF
    orientation 6 (turned 90 degrees), it is shown 40 wide and 60 tall."""
    root = tmp_path / "ex"
    _image(root / "images" / "train" / "r.jpg", exif_orientation=6)
    _labels(root / "labels" / "train" / "r.txt", ["0 0.5 0.25 0.5 0.5"])  # x 10..30, y 0..30
    (root / "data.yaml").write_text("train: images/train\nnames: [car]\n")
    s = convert_yolo(root / "data.yaml", tmp_path / "out", "train")
    assert s["upright"] == 1
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)
    r = ds[0]
    assert tuple(r["image"].shape) == (3, 60, 40)
    assert r["weak"].boxes.tolist() == [[10, 0, 30, 30]]


@pytest.mark.parametrize("lines, msg", [
    (["2 0.5 0.5 0.1 0.1"], "a.txt.*line 1: class 2 is not one of the 2 classes"),
    (["1 0.5 0.5 0.1 0.1", "1 0.5 x 0.1 0.1"], "line 2: not numbers"),
    (["1 0.5 0.5 0.1 0.1 0.9"], "6 values: a box and a confidence"),
    (["1 0.5 0.5 0.1 1.5"], "outside \\[0, 1\\]"),
    (["1 0.1 0.1 0.5 0.1 0.5 0.5 0.1"], "8 values: a box has 5"),
    (["0.5 0.5 0.5 0.1 0.1"], "class 0.5 is not one of"),
])
def test_broken_label_files_name_file_and_line_before_anything_is_written(ultralytics, tmp_path, lines, msg):
    _labels(ultralytics.parent / "labels" / "train" / "a.txt", lines)
    with pytest.raises(DatasetError, match=msg):
        convert_yolo(ultralytics, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("yaml, msg", [
    ("train: images/train\n", "no class list"),
    ("train: images/train\nnames: [a, b]\nnc: 3\n", "nc: 3, but names: holds 2"),
    ("train: images/train\nnames: {0: a, 2: b}\n", "class indices must be 0 to 1"),
    ("val: images/val\nnames: [a]\n", "no split 'train' in the YAML \\(it has val\\)"),
    ("train: nowhere\nnames: [a]\n", "train: nowhere not found"),
    ("train: images/train\nnames: [background, a]\n", "named 'background'"),
    ("- a\n- b\n", "is a mapping"),
])
def test_broken_yaml_files_are_named(tmp_path, yaml, msg):
    _image(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "d.yaml").write_text(yaml)
    with pytest.raises(DatasetError, match=msg):
        convert_yolo(tmp_path / "d.yaml", tmp_path / "out", "train")


def test_a_folder_without_class_names_is_refused(tmp_path):
    _image(tmp_path / "imgs" / "x.jpg")
    with pytest.raises(DatasetError, match="no class names: pass --names"):
        convert_yolo(tmp_path / "imgs", tmp_path / "out", "train")


def test_a_split_with_new_classes_is_refused_in_a_converted_folder(ultralytics, tmp_path):
    out = tmp_path / "out"
    convert_yolo(ultralytics, out, "train")
    ultralytics.write_text(ultralytics.read_text().replace("  1: dog\n", "  1: dog\n  2: cat\n"))
    with pytest.raises(DatasetError, match="these classes add cat"):
        convert_yolo(ultralytics, out, "val")


def test_cvat_yolo_export_through_its_darknet_data_file(tmp_path):
    """CVAT's "YOLO 1.1": obj.data, obj.names, train.txt of data/obj_train_data/..."""
    root = tmp_path / "cvat"
    _image(root / "obj_train_data" / "f1.jpg")
    _labels(root / "obj_train_data" / "f1.txt", ["1 0.5 0.5 0.5 0.5"])
    (root / "obj.names").write_bytes("\ufeffcar\r\ndog\r\n".encode())  # (a BOM and CRLF: as saved on Windows)
    (root / "train.txt").write_text("data/obj_train_data/f1.jpg\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n"
                                   "backup = backup/\n")
    s = convert_yolo(root / "obj.data", tmp_path / "out", "train")
    assert s["classes"] == ["background", "car", "dog"] and s["objects"] == 1
    # the export folder itself is not one split's images
    with pytest.raises(DatasetError, match="holds obj.data: pass it"):
        convert_yolo(root, tmp_path / "out2", "train")


def test_a_whole_export_passed_as_a_folder_is_refused(tmp_path):
    root = tmp_path / "export"
    for split in ("train", "valid"):
        _image(root / split / f"{split}.jpg")
        _labels(root / split / f"{split}.txt", ["0 0.5 0.5 0.5 0.5"])
    (root / "classes.txt").write_text("cat\n")
    with pytest.raises(DatasetError, match="holds the splits train, valid: pass one of them"):
        convert_yolo(root, tmp_path / "out", "train")
    (root / "data.yaml").write_text("train: train\nval: valid\nnames: [cat]\n")
    with pytest.raises(DatasetError, match="holds data.yaml: pass it"):
        convert_yolo(root, tmp_path / "out", "train")
    assert convert_yolo(root / "data.yaml", tmp_path / "out", "val")["objects"] == 1


def test_no_label_file_anywhere_is_an_error_saying_where_it_looked(tmp_path):
    _image(tmp_path / "photos" / "a.jpg")
    (tmp_path / "photos" / "classes.txt").write_text("cat\n")
    with pytest.raises(DatasetError, match="none of the 1 images has a label file"):
        convert_yolo(tmp_path / "photos", tmp_path / "out", "train")


def test_image_lists_relative_to_the_data_set_and_a_missing_path_said(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "a.jpg")
    _labels(root / "labels" / "train" / "a.txt", ["0 0.5 0.5 0.5 0.5"])
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("images/train/a.jpg\n")  # relative to path:, not the list
    (tmp_path / "d.yaml").write_text(f"path: {root}\ntrain: lists/train.txt\nnames: [cat]\n")
    assert convert_yolo(tmp_path / "d.yaml", tmp_path / "out", "train")["objects"] == 1
    (tmp_path / "e.yaml").write_text("path: coco8\ntrain: images/train\nnames: [cat]\n")
    with pytest.raises(DatasetError, match="path: coco8 is not a folder here.*--root"):
        convert_yolo(tmp_path / "e.yaml", tmp_path / "out2", "train")


def test_one_name_in_two_splits_is_refused_whatever_its_extension(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "x.jpg")
    _image(root / "images" / "val" / "x.png", (10, 200, 10))
    for split in ("train", "val"):
        _labels(root / "labels" / split / "x.txt", ["0 0.5 0.5 0.5 0.5"])
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat]\n")
    out = tmp_path / "out"
    convert_yolo(root / "data.yaml", out, "train")
    with pytest.raises(DatasetError, match="x.jpg in .*JPEGImages has the id 'x'"):
        convert_yolo(root / "data.yaml", out, "val")
    assert convert_yolo(root / "data.yaml", out, "train")["images"] == 1  # a rerun is no clash


def test_oriented_boxes_give_bounding_boxes_and_no_masks(tmp_path):
    """Ultralytics OBB labels: four corners a line, a rotated box, not an outline."""
    root = tmp_path / "obb"
    _image(root / "images" / "train" / "o.jpg")
    _labels(root / "labels" / "train" / "o.txt", ["0 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5"])  # a diamond
    (root / "data.yaml").write_text("train: images/train\nnames: [plane]\n")
    s = convert_yolo(root / "data.yaml", tmp_path / "out", "train")
    assert s["oriented_boxes"] and s["masks"] == 0 and s["objects"] == 1
    box = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=False)[0]["weak"].boxes
    assert box.tolist() == [[15, 10, 45, 30]]


def test_darknet_data_files_as_people_write_them(tmp_path):
    """Keys in any case, comments, a names path from another machine."""
    root = tmp_path / "dk"
    _image(root / "obj_Validation_data" / "v.jpg")
    _labels(root / "obj_Validation_data" / "v.txt", ["0 0.5 0.5 0.5 0.5"])
    (root / "obj.names").write_text("ant\n")
    (root / "Validation.txt").write_text("data/obj_Validation_data/v.jpg\n")
    (root / "obj.data").write_text("classes = 1 # one class\nValidation = data/Validation.txt\n"
                                   "names = C:/Users/someone/Downloads/ants/obj.names\n")
    assert convert_yolo(root / "obj.data", tmp_path / "out", "val")["objects"] == 1
    with pytest.raises(DatasetError, match="needs names = and train = lines"):
        convert_yolo(root / "obj.data", tmp_path / "out2", "train")


def test_label_files_without_their_image_are_reported(ultralytics, tmp_path):
    _labels(ultralytics.parent / "labels" / "train" / "gone.txt", ["0 0.5 0.5 0.5 0.5"])
    (ultralytics.parent / "images" / "train" / "gone.heic").write_bytes(b"")  # a suffix not read
    s = convert_yolo(ultralytics, tmp_path / "out", "train")
    assert s["labels_without_image"] == 1 and s["first_labels_without_image"][0].endswith("gone.txt")


def test_a_reconversion_without_a_mask_removes_the_old_one_and_webp_is_read(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "a.webp")
    lf = root / "labels" / "train" / "a.txt"
    _labels(lf, ["0 0.25 0.25 0.5 0.25 0.75 0.25 0.75 0.75 0.25 0.75"])
    (root / "data.yaml").write_text("train: images/train\nnames: [cat]\n")
    out = tmp_path / "out"
    assert convert_yolo(root / "data.yaml", out, "train")["masks"] == 1
    mask = out / "VOC2012" / "SegmentationClass" / "a.png"
    assert mask.is_file()
    _labels(lf, ["0 0.5 0.5 0.2 0.2"])  # now a box: no mask, and the old one must not stay
    assert convert_yolo(root / "data.yaml", out, "train")["masks"] == 0 and not mask.exists()
    assert VOCSegmentation(out, "train", kinds=("boxes",), with_gt=False)[0]["image"].shape[1:] == (H, W)


def test_non_finite_classes_and_an_empty_result_are_errors(ultralytics, tmp_path):
    _labels(ultralytics.parent / "labels" / "train" / "a.txt", ["nan 0.5 0.5 0.1 0.1"])
    with pytest.raises(DatasetError, match="class nan is not one of"):
        convert_yolo(ultralytics, tmp_path / "out", "train")
    _labels(ultralytics.parent / "labels" / "train" / "a.txt", [])
    with pytest.raises(DatasetError, match="no image left to write"):
        convert_yolo(ultralytics, tmp_path / "out", "train", skip_empty=True)


def test_the_oriented_box_guess_can_be_overruled(tmp_path):
    root = tmp_path / "q"
    _image(root / "images" / "train" / "o.jpg")
    _labels(root / "labels" / "train" / "o.txt", ["0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75"])
    (root / "data.yaml").write_text("train: images/train\nnames: [sign]\n")
    s = convert_yolo(root / "data.yaml", tmp_path / "out", "train", obb="no")  # quadrilateral outlines
    assert s["masks"] == 1 and "oriented_boxes" not in s
    _labels(root / "labels" / "train" / "o.txt", ["0 0.2 0.2 0.5 0.2 0.7 0.5 0.3 0.8 0.2 0.5"])
    with pytest.raises(DatasetError, match="--obb yes: a label has a polygon of other than four"):
        convert_yolo(root / "data.yaml", tmp_path / "out2", "train", obb="yes")
