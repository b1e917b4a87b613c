"""Real point clicks (fuzzylogic_seg/data/points.py): the "What's the Point" JSON,
read as the weak labels of kind points instead of simulated ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from custom_voc import write_custom_voc
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.points import read_points
from fuzzylogic_seg.errors import DatasetError
from fuzzylogic_seg.weak.store import WeakStore

NAMES = ("background", "mug", "spoon")


def clicks_from_masks(voc, ids):
    """One click per class present, at its first pixel in reading order, as an annotator's
    clicks in the format of What's the Point (cls: index, x/y zero-indexed)."""
    out = {}
    for i in ids:
        mask = np.array(Image.open(voc / "SegmentationClass" / f"{i}.png"))
        clicks = []
        for rank, c in enumerate(sorted(set(np.unique(mask).tolist()) - {0, 255}), 1):
            ys, xs = np.nonzero(mask == c)
            clicks.append({"x": int(xs[0]), "y": int(ys[0]), "cls": c, "rank": rank})
        out[i] = clicks
    return out


@pytest.fixture()
def data(tmp_path):
    voc = write_custom_voc(tmp_path / "data", labelmap=True)
    ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    clicks = clicks_from_masks(voc, ids)
    path = tmp_path / "clicks.json"
    path.write_text(json.dumps(clicks))
    return tmp_path / "data", voc, ids, clicks, path


def test_clicks_are_points_at_pixel_centres_with_their_classes(data):
    root, voc, ids, clicks, path = data
    pts = read_points(path, NAMES)
    first = clicks[ids[0]]
    assert torch.equal(pts[ids[0]][0], torch.tensor([[c["x"] + 0.5, c["y"] + 0.5] for c in first]))
    assert pts[ids[0]][1].tolist() == [c["cls"] for c in first]
    # a click may name its class; rank beyond --point-max-rank is dropped
    named = tmp_path_json(path, {"a": [{"x": 3, "y": 4, "class": "spoon", "rank": 1},
                                       {"x": 5.7, "y": 1, "cls": 0, "rank": 2}]})
    pts = read_points(named, NAMES)["a"]
    assert pts[0].tolist() == [[3.5, 4.5], [5.5, 1.5]] and pts[1].tolist() == [2, 0]
    assert read_points(named, NAMES, max_rank=1)["a"][1].tolist() == [2]


def tmp_path_json(near, obj):
    p = near.parent / "more.json"
    p.write_text(json.dumps(obj))
    return p


@pytest.mark.parametrize("obj, msg", [
    ([1, 2], "must be a JSON object"),
    ({"a": {"x": 1}}, "image a: clicks must be a list"),
    ({"a": [{"x": -1, "y": 2, "cls": 1}]}, r"image a, click 0: x and y must be pixel coordinates"),
    ({"a": [{"x": 1, "y": 2, "cls": 3}]}, r"image a, click 0: cls must be a class index 0..2"),
    ({"a": [{"x": 1, "y": 2, "cls": 1}, {"x": 1, "y": 2, "class": "fork"}]},
     r"image a, click 1: unknown class 'fork'; the classes are background, mug, spoon"),
    # (a class that is no name: a list or an object is unhashable, a DatasetError all the same)
    ({"a": [{"x": 1, "y": 2, "class": ["mug"]}]}, r"image a, click 0: unknown class \['mug'\]"),
    ({"a": [{"x": 1, "y": 2, "class": {"name": "mug"}}]}, r"image a, click 0: unknown class"),
])
def test_bad_click_files_name_the_file_image_and_click(tmp_path, obj, msg):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match=msg) as err:
        read_points(path, NAMES)
    assert str(path) in str(err.value)
    path.write_text("{oops")
    with pytest.raises(DatasetError, match="not JSON"):
        read_points(path, NAMES)


def test_the_dataset_reads_real_points_without_its_masks(data):
    root, voc, ids, clicks, path = data
    for i in ids:  # training reads the clicks only: no mask needed
        (voc / "SegmentationClass" / f"{i}.png").unlink()
    ds = VOCSegmentation(root, "train", points_file=path, kinds=("points",))
    weak = ds[0]["weak"]
    assert weak.kinds() == ("points",)
    assert torch.equal(weak.point_labels, torch.tensor([c["cls"] for c in clicks[ids[0]]]))
    assert "points" in VOCSegmentation(root, "train", points_file=path).default_kinds()


def test_missing_images_and_clicks_outside_the_image_are_errors(data):
    root, voc, ids, clicks, path = data
    path.write_text(json.dumps({k: v for k, v in clicks.items() if k != ids[1]}))
    ds = VOCSegmentation(root, "train", points_file=path, kinds=("points",))
    with pytest.raises(DatasetError, match=f"no clicks for image {ids[1]}"):
        ds[1]
    path.write_text(json.dumps({**clicks, ids[0]: [{"x": 80, "y": 3, "cls": 1}]}))
    ds = VOCSegmentation(root, "train", points_file=path, kinds=("points",))
    with pytest.raises(DatasetError, match=f"image {ids[0]}, a click at x=80, y=3 lies outside the image "
                                           r"\(80x64\)"):
        ds[0]


def test_data_weak_writes_the_real_points(data, capsys):
    root, voc, ids, clicks, path = data
    out = root.parent / "weak"
    assert main(["data", "weak", "--dataset", "voc", "--root", str(root), "--kinds", "points",
                 "--points", str(path), "--point-max-rank", "1", "--out", str(out)]) == 0
    store = WeakStore(out)
    assert store.manifest["real_points"] == str(path)
    for i in ids:
        weak = store.load(i)
        first = [c for c in clicks[i] if c["rank"] == 1]
        assert weak.points.tolist() == [[c["x"] + 0.5, c["y"] + 0.5] for c in first]
        assert weak.point_labels.tolist() == [c["cls"] for c in first]
    capsys.readouterr()
    assert main(["data", "weak", "--dataset", "refuge", "--root", str(root), "--kinds", "points",
                 "--points", str(path), "--out", str(out)]) != 0
    assert "--points is for data sets in Pascal VOC layout" in capsys.readouterr().err


def test_logic_pseudo_labels_from_real_clicks(data, capsys):
    # the whole path a user takes: clicks -> weak folder -> logic fine-tuning on the points
    root, voc, ids, clicks, path = data
    weak, out = root.parent / "weak", root.parent / "pseudo"
    assert main(["data", "weak", "--dataset", "voc", "--root", str(root), "--kinds", "points",
                 "--points", str(path), "--out", str(weak)]) == 0
    assert main(["pseudo-label", "--dataset", "voc", "--root", str(root), "--weak", "points",
                 "--weak-dir", str(weak), "--method", "logic", "--epochs", "1", "--out", str(out),
                 "--threads", "1", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == len(ids) and 0 <= summary["miou"] <= 1
    labels = np.array(Image.open(out / f"{ids[0]}.png"))
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 255}


def test_data_check_lists_every_click_problem(data, capsys):
    root, voc, ids, clicks, path = data
    bad = {**{k: v for k, v in clicks.items() if k != ids[1]},
           ids[0]: [{"x": 80, "y": 3, "cls": 1}], ids[2]: [{"x": 1, "y": 70, "cls": 2}]}
    path.write_text(json.dumps(bad))
    assert main(["data", "check", "voc", str(root), "--split", "train", "--points", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"image {ids[0]}, a click at x=80, y=3 lies outside" in out
    assert f"image {ids[2]}, a click at x=1, y=70 lies outside" in out
    assert f"1 of 4 images have no clicks here (first: {ids[1]})" in out
    # over every split found, images without clicks (the val split) are a warning
    path.write_text(json.dumps(clicks))
    assert main(["data", "check", "voc", str(root), "--points", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 of 6 images have no clicks here" in out and "clicks" in out


def test_data_check_warns_of_clicks_outside_their_class_boxes(data, capsys):
    """Class indices of another list (VOC's, COCO's category ids) read as this data set's
    classes give clicks that lie in boxes of other classes: a warning that says so."""
    root, voc, ids, clicks, path = data
    assert main(["data", "check", "voc", str(root), "--split", "train", "--points", str(path)]) == 0
    assert "0 warnings" in capsys.readouterr().out  # (right clicks: all in their boxes)
    swapped = {i: [{**c, "cls": 3 - c["cls"]} for c in v] for i, v in clicks.items()}
    path.write_text(json.dumps(swapped))
    n = sum(len(v) for v in clicks.values())
    assert main(["data", "check", "voc", str(root), "--split", "train", "--points", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {n} of {n} object clicks lie in no XML box of their class (first: image {ids[0]}, " \
           "click 0, cls 2 = 'spoon', in a box of mug)" in out
    assert "not another list's (VOC's, COCO's category ids)" in out
