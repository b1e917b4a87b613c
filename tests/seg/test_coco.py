"""COCO instances -> VOC layout (fuzzylogic_seg/data/coco.py), read back by the VOC loader."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.coco import _rle_string_counts, convert_coco, rle_decode
from fuzzylogic_seg.errors import DatasetError


def rle_encode(mask: np.ndarray) -> dict:
    """Column-major run lengths, starting with a run of zeros (COCO's RLE)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, value, n = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(n)
            value, n = v, 0
        n += 1
    counts.append(n)
    return {"size": list(mask.shape), "counts": counts}


def rle_to_string(counts) -> str:
    """pycocotools' rleToString (maskApi.c), written from its C source: each count
    (from the fourth on, as a difference to the count two back) in 5-bit groups,
    0x20 marking more to come, offset by 48."""
    out = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # (arithmetic, as C's on a long)
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_decodes_lists_and_compressed_strings(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((23, 31), bool)
    for _ in range(4):
        y, x = rng.integers(0, 20), rng.integers(0, 28)
        mask[y:y + rng.integers(1, 9), x:x + rng.integers(1, 12)] = True
    rle = rle_encode(mask)
    assert np.array_equal(rle_decode(rle, 23, 31), mask)
    s = rle_to_string(rle["counts"])
    assert _rle_string_counts(s) == rle["counts"]
    assert np.array_equal(rle_decode({"size": [23, 31], "counts": s}, 23, 31), mask)


@pytest.fixture()
def coco(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    h, w = 40, 60
    Image.new("RGB", (w, h), (120, 120, 120)).save(images / "000000000001.jpg")
    Image.new("RGB", (w, h), (100, 130, 90)).save(images / "000000000002.jpg")
    crowd = np.zeros((h, w), bool)
    crowd[30:38, 2:10] = True
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": h, "width": w},
                   {"id": 2, "file_name": "000000000002.jpg", "height": h, "width": w}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            # a large car box and polygon, a small dog in front of it (painted last)
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 4, 40, 20], "area": 800,
             "iscrowd": 0, "segmentation": [[5, 4, 44, 4, 44, 23, 5, 23]]},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [20, 10, 8, 6], "area": 48,
             "iscrowd": 0, "segmentation": rle_encode(_rect(h, w, 10, 20, 6, 8))},
            {"id": 12, "image_id": 1, "category_id": 18, "bbox": [2, 30, 8, 8], "area": 64,
             "iscrowd": 1, "segmentation": {"size": [h, w], "counts": rle_to_string(rle_encode(crowd)["counts"])}},
        ],
    }
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(data))
    return path, images, data


def _rect(h, w, y, x, rh, rw):
    m = np.zeros((h, w), bool)
    m[y:y + rh, x:x + rw] = True
    return m


def test_a_converted_split_is_read_by_the_voc_loader(coco, tmp_path):
    path, images, _ = coco
    summary = convert_coco(path, images, tmp_path / "out", "train")
    assert summary["classes"] == ["background", "car", "dog"]  # categories in id order
    assert summary["images"] == 2 and summary["objects"] == 2 and summary["crowd"] == 1
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes", "tags"), with_gt=True)
    assert ds.classes == ("background", "car", "dog")
    s = ds[0]
    # the COCO boxes, exactly (x, y, x + w, y + h)
    assert s["weak"].boxes.tolist() == [[5, 4, 45, 24], [20, 10, 28, 16]]
    assert s["weak"].box_labels.tolist() == [1, 2] and s["weak"].tags.tolist() == [False, True, True]
    gt = s["gt"]
    assert int(gt[12, 22]) == 2 and int(gt[6, 8]) == 1 and int(gt[0, 0]) == 0  # dog over car
    assert int(gt[33, 5]) == 255  # crowd: void
    assert ds[1]["weak"].boxes.shape == (0, 4)  # an image without objects stays, with none
    assert (tmp_path / "out" / "VOC2012" / "JPEGImages" / "000000000001.jpg").is_symlink()


def test_cli_conversion_then_data_check_is_clean(coco, tmp_path, capsys):
    path, images, data = coco
    out = tmp_path / "out"
    assert main(["data", "coco", str(path), "--images", str(images), "--out", str(out), "--split", "val",
                 "--copy", "--skip-empty"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_empty"] == 1
    assert main(["data", "check", "voc", str(out)]) == 0
    assert "0 errors" in capsys.readouterr().out
    # another split with other categories is refused: one class list per folder
    data["categories"].append({"id": 40, "name": "cat"})
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="holds the classes car, dog .*these categories add cat"):
        convert_coco(path, images, out, "train")


@pytest.mark.parametrize("change, msg", [
    (lambda d: d["categories"].append({"id": 9, "name": "a,b"}), "category 9: class name 'a,b' contains a comma"),
    (lambda d: d["categories"].append({"id": 9, "name": "background"}), "named 'background'"),
    (lambda d: d["annotations"][0].update(category_id=77), "unknown category_id 77"),
    (lambda d: d["images"][1].update(file_name="missing.jpg"),
     "1 of 2 images of instances_train.json are not in .*image missing.jpg"),
    (lambda d: d.pop("annotations"), "not COCO instances: no list annotations"),
])
def test_broken_coco_files_are_named(coco, tmp_path, change, msg):
    path, images, data = coco
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=msg):
        convert_coco(path, images, tmp_path / "out", "train")


@pytest.mark.parametrize("change, msg", [
    # one image id twice: its annotations went to both images
    (lambda d: d["images"][1].update(id=1), "image id 1 twice"),
    (lambda d: d["images"][0].pop("height"), "000000000001.jpg .*height must be"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\]: an image is an object"),
    (lambda d: d["categories"][0].pop("id"), r"categories\[0\]: a category"),
    (lambda d: d["categories"].append({"id": 3, "name": "cat"}), "category id 3 twice"),
    (lambda d: d["annotations"][0].pop("bbox"), "annotation 10 .*bbox must be"),
    (lambda d: d["annotations"][0].update(bbox=[5, 4, 40]), "annotation 10 .*bbox must be"),
    (lambda d: d["annotations"][0].update(segmentation=[[5, 4, "x", 4, 44, 23]]), "annotation 10 .*polygon"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=[60, 40]), "annotation 11 .*RLE size"),
    (lambda d: d["annotations"][1]["segmentation"]["counts"].append(5), "annotation 11 .*RLE runs cover"),
    (lambda d: d["annotations"][2]["segmentation"].update(counts="a"), "annotation 12 .*compressed"),
    (lambda d: d["images"].append("x.jpg"), r"images\[2\]"),
    (lambda d: d["annotations"][0].update(bbox=[500, 300, 10, 10]), "annotation 10 .*lies outside the 60x40"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=5), "annotation 11 .*RLE size 5"),
])
def test_malformed_records_are_dataset_errors_before_anything_is_written(coco, tmp_path, change, msg):
    """Missing keys, one image id twice, unreadable boxes or segmentations: a DatasetError
    naming the record (not a KeyError, TypeError... halfway through the writing)."""
    path, images, data = coco
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=msg):
        convert_coco(path, images, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


def test_a_non_ascii_category_is_written_as_utf8(coco, tmp_path):
    """labelmap.txt is read as UTF-8: it is written so whatever the locale's encoding
    (here an ASCII one: the C locale without Python's UTF-8 mode)."""
    import os
    import subprocess
    import sys

    path, images, data = coco
    data["categories"][0]["name"] = "chien à poil"
    path.write_text(json.dumps(data), encoding="utf-8")
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    code = ("import sys; from fuzzylogic_seg.data.coco import convert_coco; "
            "convert_coco(sys.argv[1], sys.argv[2], sys.argv[3], 'train')")
    r = subprocess.run([sys.executable, "-c", code, str(path), str(images), str(tmp_path / "out")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "out" / "VOC2012" / "labelmap.txt").read_text(encoding="utf-8")
    assert "chien à poil" in text


def test_a_second_split_matches_its_categories_by_name(coco, tmp_path):
    """A val file with fewer categories, numbered otherwise (a separate export), goes
    into the folder of the train split: the labelmap's indices, by name."""
    path, images, data = coco
    out = tmp_path / "out"
    summary = convert_coco(path, images, out, "train")
    assert summary["category_id_to_class_index"] == {"3": 1, "18": 2}
    val = tmp_path / "val"
    val.mkdir()
    Image.new("RGB", (60, 40), (90, 90, 90)).save(val / "v1.jpg")
    other = {"images": [{"id": 5, "file_name": "v1.jpg", "height": 40, "width": 60}],
             "categories": [{"id": 1, "name": "dog"}],
             "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [1, 1, 10, 10],
                              "area": 100, "iscrowd": 0, "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]}]}
    (val / "instances_val.json").write_text(json.dumps(other))
    summary = convert_coco(val / "instances_val.json", val, out, "val")
    assert summary["classes"] == ["background", "car", "dog"]
    assert summary["category_id_to_class_index"] == {"1": 2}
    ds = VOCSegmentation(out, "val", kinds=("boxes",), with_gt=True)
    s = ds[0]
    assert s["weak"].box_labels.tolist() == [2] and int(s["gt"][5, 5]) == 2


def test_nothing_is_written_when_images_are_missing(coco, tmp_path):
    path, images, data = coco
    with pytest.raises(DatasetError, match=r"nowhere: --images: no such folder"):
        convert_coco(path, tmp_path / "images" / "nowhere", tmp_path / "out", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"2 of 2 images .* are not in .*empty"):
        convert_coco(path, tmp_path / "empty", tmp_path / "out", "train")
    (tmp_path / "images" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 images .*first: image 000000000002.jpg"):
        convert_coco(path, images, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()  # (no labelmap.txt left to refuse a corrected file)


def test_an_image_of_the_same_name_in_another_split_is_refused(coco, tmp_path):
    """Two splits each with a 0001.jpg (CVAT tasks, separate exports) would share one
    JPEGImages/0001.jpg: the second split's masks over the first's image."""
    path, images, data = coco
    out = tmp_path / "out"
    convert_coco(path, images, out, "train")
    convert_coco(path, images, out, "train")  # (again: the same images, fine)
    val = tmp_path / "val"
    val.mkdir()
    Image.new("RGB", (60, 40), (10, 200, 10)).save(val / "000000000001.jpg")
    data["images"] = data["images"][:1]
    (val / "instances_val.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="000000000001.jpg in .* is another image than"):
        convert_coco(val / "instances_val.json", val, out, "val")


def test_masks_can_be_left_out(coco, tmp_path):
    path, images, _ = coco
    convert_coco(path, images, tmp_path / "out", "train", masks=False)
    voc = tmp_path / "out" / "VOC2012"
    assert not (voc / "SegmentationClass").exists()
    ds = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",))
    assert torch.equal(ds[0]["weak"].box_labels, torch.tensor([1, 2]))


def test_against_pycocotools_outputs():
    # strings made by pycocotools 2.x (mask.encode, mask.frPyObjects + merge), pasted here
    # so that the test needs no pycocotools: its compressed RLE, and its polygon rasterisation
    from fuzzylogic_seg.data.coco import polygons_mask

    rect = np.zeros((12, 9), bool)
    rect[2:7, 1:4] = True
    rect[5:11, 5:8] = True
    assert np.array_equal(rle_decode({"size": [12, 9], "counts": ">57000?1@0007"}, 12, 9), rect)
    poly = [[3.5, 2.0, 30.2, 5.0, 20.0, 25.7, 4.0, 20.0]]
    ref = rle_decode({"counts": "f4b0c01O00010O00001O00001O00010O001OO1N2N2N2N2M4M2N2N2N`j0"}, 37, 53)
    mine = polygons_mask(poly, 37, 53)
    assert ref.sum() == 430 and (mine != ref).sum() <= 2  # (pixel centres inside; theirs: 5x supersampled edges)


def test_roboflow_group_category_is_dropped_and_upload_paths_are_found(coco, tmp_path):
    # Roboflow: an id-0 category named after the data set, supercategory of the rest,
    # with no annotation; Label Studio: file_name an upload path, the image in --images
    path, images, data = coco
    data["categories"] = [{"id": 0, "name": "kitchen", "supercategory": "none"}] + [
        {**c, "supercategory": "kitchen"} for c in data["categories"]]
    data["images"][0]["file_name"] = "/data/upload/1/000000000001.jpg"
    path.write_text(json.dumps(data))
    summary = convert_coco(path, images, tmp_path / "out", "train")
    assert summary["classes"] == ["background", "car", "dog"]
    assert summary["dropped_categories"] == ["kitchen"] and summary["images"] == 2


def test_an_area_that_is_not_a_number_paints_by_the_box(coco, tmp_path):
    path, images, data = coco
    data["annotations"][0]["area"] = "n/a"
    path.write_text(json.dumps(data))
    convert_coco(path, images, tmp_path / "out", "train")
    gt = VOCSegmentation(tmp_path / "out", "train", kinds=("boxes",), with_gt=True)[0]["gt"]
    assert int(gt[12, 22]) == 2 and int(gt[6, 8]) == 1  # the dog still over the car
