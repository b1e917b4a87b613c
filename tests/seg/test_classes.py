"""A practitioner's own data in Pascal VOC layout with their own classes
(fuzzylogic_seg/data/classes.py): where the class list comes from, the loader, RGB
masks with labelmap colours, `fuzzyseg data check/weak/evaluate --classes`, and the
default (no labelmap, no --classes) left as it was."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from custom_voc import CLASSES, COLOURS, LABELMAP, as_boxes_export, write_custom_voc, write_xml
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data.classes import VOC, parse_classes, read_class_file, resolve_classes
from fuzzylogic_seg.data.voc import VOCSegmentation, parse_annotation
from fuzzylogic_seg.errors import ConfigError, DatasetError
from fuzzylogic_seg.io import VOC_CLASSES, save_index_png

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    write_custom_voc(root / "labelmap", labelmap=True)
    write_custom_voc(root / "plain", labelmap=False)
    write_custom_voc(root / "rgb", labelmap=True, rgb_masks=True)
    return root


@pytest.fixture
def data(src, tmp_path):
    """Factory: a private copy of one of the sets (a test may break it)."""
    def make(name):
        dst = tmp_path / name
        shutil.copytree(src / name, dst)
        return dst
    return make


def vocdir(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


# ------------------------------------------------------------ class files
def test_labelmap_and_plain_files_and_comma_lists(tmp_path):
    lm = tmp_path / "labelmap.txt"
    lm.write_text(LABELMAP)
    cl = read_class_file(lm)
    assert cl.names == CLASSES and not cl.prepended
    assert cl.colors == tuple(COLOURS[n] for n in CLASSES)
    assert cl.color_index()[(250, 50, 83)] == 1
    plain = tmp_path / "classes.txt"
    plain.write_text("# my classes\n\nmug\n  spoon  \n")
    cl = parse_classes(str(plain))
    assert cl.names == CLASSES and cl.prepended and cl.colors == ()
    assert parse_classes("mug,spoon").names == CLASSES
    assert parse_classes(["background", "mug", "spoon"]).names == CLASSES
    assert parse_classes("traffic light,mug").names == ("background", "traffic light", "mug")
    assert parse_classes(None) is None


@pytest.mark.parametrize("text, line, what", [
    ("background\nmug\nmug\n", 3, "duplicate class name 'mug' (also line 2)"),
    ("mug\nbackground\n", 2, "'background' must be the first class"),
    ("mug\n:1,2,3::\n", 2, "empty class name"),
    ("mug\nspoon\tx\n", 2, "contains a tab"),
    ("mug:1,2::\n", 1, "colour '1,2' is not r,g,b"),
])
def test_a_bad_class_file_names_its_line(tmp_path, text, line, what):
    p = tmp_path / "classes.txt"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        parse_classes(str(p))
    assert f"{p}:{line}: " in str(e.value) and what in str(e.value)


def test_bad_comma_lists_and_shared_colours_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--classes, name 2: empty class name"):
        parse_classes("mug,,spoon")
    with pytest.raises(ConfigError, match=r"name 2: duplicate class name 'mug'"):
        parse_classes("mug,mug")
    with pytest.raises(ConfigError, match="no such class file"):
        parse_classes("nowhere/classes.txt")
    p = tmp_path / "labelmap.txt"
    p.write_text("background:0,0,0::\nmug:1,2,3::\nspoon:1,2,3::\n")
    with pytest.raises(ConfigError, match="'mug' and 'spoon' have the same colour 1,2,3"):
        parse_classes(str(p))


def test_where_the_class_list_comes_from(src, tmp_path):
    # explicit > labelmap.txt > VOC
    assert resolve_classes(vocdir(src / "labelmap")).source.endswith("labelmap.txt")
    with pytest.warns(UserWarning, match="labelmap.txt lists background, mug, spoon"):
        assert resolve_classes(vocdir(src / "labelmap"), "spoon,mug").names == ("background", "spoon", "mug")
    assert resolve_classes(vocdir(src / "plain")) is VOC
    # a broken labelmap.txt in a data set is a DatasetError naming it and the line
    bad = tmp_path / "VOC2012"
    bad.mkdir()
    (bad / "labelmap.txt").write_text("background:0,0,0::\nmug:1,1,1::\nmug:2,2,2::\n")
    with pytest.raises(DatasetError, match=r"labelmap.txt: line 3: duplicate class name 'mug'") as e:
        resolve_classes(bad)
    assert e.value.path == bad / "labelmap.txt"


# ------------------------------------------------------------------ loader
def _check_samples(ds, names):
    assert ds.classes == names and ds.num_classes == len(names)
    for i in range(len(ds)):
        s = ds[i]
        weak = s["weak"]
        assert weak.tags.shape == (len(names),)
        got = {names[int(c)] for c in weak.box_labels}
        assert got == {"mug", "spoon"}
        mask = s["gt"]
        for (x0, y0, x1, y1), lab in zip(weak.boxes.int().tolist(), weak.box_labels.tolist()):
            inside = mask[y0:y1, x0:x1]
            assert (inside == lab).any()  # the box's class is the mask's inside its box
        assert set(mask.unique().tolist()) <= set(range(len(names)))


def test_a_labelmap_gives_the_classes(src):
    ds = VOCSegmentation(src / "labelmap", "train", with_gt=True, kinds=("boxes", "tags"))
    _check_samples(ds, CLASSES)
    s = ds[0]
    mug = [b for b, c in zip(s["weak"].boxes, s["weak"].box_labels) if int(c) == 1]
    assert mug and (s["gt"] == 1).any()


def test_classes_option_without_labelmap_and_over_one(src):
    ds = VOCSegmentation(src / "plain", "train", with_gt=True, kinds=("boxes", "tags"), classes="mug,spoon")
    _check_samples(ds, CLASSES)
    # --classes wins over labelmap.txt (here a file in plain format)
    f = src / "my_classes.txt"
    f.write_text("background\nmug\nspoon\n")
    ds = VOCSegmentation(src / "labelmap", "train", with_gt=True, kinds=("boxes",), classes=str(f))
    assert ds.class_list.source == str(f)


def test_an_unknown_name_in_an_xml_names_the_file_and_the_classes(data):
    root = data("labelmap")
    xml = vocdir(root) / "Annotations" / "2024_000000.xml"
    write_xml(xml, 80, 64, [("mug", (2, 2, 20, 20)), ("fork", (30, 2, 50, 20))])
    ds = VOCSegmentation(root, "train", kinds=("boxes",))
    with pytest.raises(DatasetError) as e:
        ds[0]
    msg = str(e.value)
    assert str(xml) in msg and "unknown class name 'fork'" in msg
    assert "mug, spoon" in msg and "labelmap.txt" in msg
    # VOC's names are not these classes either
    write_xml(xml, 80, 64, [("cat", (2, 2, 20, 20))])
    with pytest.raises(DatasetError, match="unknown class name 'cat'"):
        parse_annotation(xml, classes=ds.class_list)


def test_mask_values_beyond_the_classes_are_errors(data):
    root = data("labelmap")
    mask = vocdir(root) / "SegmentationClass" / "2024_000001.png"
    arr = np.array(Image.open(mask))
    arr[0, 0] = 3          # a fourth class
    arr[0, 1] = 255        # void is fine
    save_index_png(arr, mask)
    ds = VOCSegmentation(root, "train", with_gt=True, kinds=("boxes",))
    with pytest.raises(DatasetError, match=r"2024_000001.png: mask has values \[3\] outside 0..2 and 255"):
        ds[ds.index("2024_000001")]


def test_rgb_masks_map_through_the_labelmap_colours(src, data):
    pal = VOCSegmentation(src / "labelmap", "train", with_gt=True, kinds=())
    rgb = VOCSegmentation(src / "rgb", "train", with_gt=True, kinds=())
    assert Image.open(rgb.items[0].mask).mode == "RGB"
    for i in range(len(pal)):
        assert torch.equal(pal.read_gt(i), rgb.read_gt(i))
    # VOC's void colour reads as 255; a colour of no class is an error naming it and the file
    root = data("rgb")
    path = vocdir(root) / "SegmentationClass" / "2024_000002.png"
    arr = np.array(Image.open(path))
    arr[0, 0] = (224, 224, 192)
    Image.fromarray(arr).save(path)
    ds = VOCSegmentation(root, "train", with_gt=True, kinds=())
    assert int(ds.read_gt(2)[0, 0]) == 255
    arr[0, 1] = (1, 2, 3)
    Image.fromarray(arr).save(path)
    with pytest.raises(DatasetError, match=r"2024_000002.png: mask has colour\(s\) \(1,2,3\) that no class"):
        ds.read_gt(2)
    # without labelmap colours an RGB mask is still refused as before
    plain = VOCSegmentation(root, "train", with_gt=True, kinds=(), classes="mug,spoon")
    with pytest.raises(DatasetError, match="is a RGB image"):
        plain.read_gt(0)


def test_the_default_is_the_voc_classes_unchanged(tmp_path):
    from fuzzylogic_seg.data.synth_voc import generate_voc

    generate_voc(tmp_path, seed=3, n_train=2, n_val=1, size=(48, 64), progress=False)
    ds = VOCSegmentation(tmp_path, "train", with_gt=True, kinds=("boxes", "tags"))
    assert ds.class_list is VOC and ds.classes is VOCSegmentation.classes == VOC_CLASSES
    assert ds.num_classes == 21 and ds[0]["weak"].tags.shape == (21,)


def test_a_weak_folder_of_another_class_list_is_refused(src, tmp_path):
    assert main(["data", "weak", "--dataset", "voc", "--root", str(src / "plain"), "--kinds", "boxes",
                 "--out", str(tmp_path / "weak"), "--classes", "mug,spoon"]) == 0
    manifest = json.loads((tmp_path / "weak" / "weak.json").read_text())
    assert manifest["class_names"] == list(CLASSES)
    VOCSegmentation(src / "plain", "train", weak_dir=tmp_path / "weak", classes="mug,spoon")
    with pytest.raises(DatasetError, match="weak labels were written for the classes background, mug, spoon"):
        VOCSegmentation(src / "plain", "train", weak_dir=tmp_path / "weak", classes="spoon,mug")


# --------------------------------------------------------------------- CLI
def test_data_check_reads_the_labelmap_and_takes_classes(src, data, capsys):
    assert main(["data", "check", "voc", str(src / "labelmap")]) == 0
    out = capsys.readouterr().out
    assert "classes: 3 from" in out and "labelmap.txt: background, mug, spoon" in out
    assert "objects: mug 6, spoon 6" in out and "no problems found" in out
    # no labelmap: the VOC names are unknown ...
    assert main(["data", "check", "voc", str(src / "plain")]) == 1
    assert "unknown class name 'mug'" in capsys.readouterr().out
    # ... unless --classes names them
    assert main(["data", "check", "voc", str(src / "plain"), "--classes", "mug,spoon"]) == 0
    assert "classes: 3 from --classes" in capsys.readouterr().out
    # a wrong name and an out-of-range mask, reported by file
    root = data("labelmap")
    write_xml(vocdir(root) / "Annotations" / "2024_000000.xml", 80, 64, [("fork", (2, 2, 20, 20))])
    mask = vocdir(root) / "SegmentationClass" / "2024_000003.png"
    arr = np.array(Image.open(mask))
    arr[5, 5] = 7
    save_index_png(arr, mask)
    assert main(["data", "check", "voc", str(root), "--json", str(root / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "unknown class name 'fork'" in out and "outside 0..2 and 255" in out
    report = json.loads((root / "r.json").read_text())
    assert report["counts"]["classes"].startswith("3 from")
    # --classes for REFUGE is refused; a bad list is one error line
    assert main(["data", "check", "refuge", str(root), "--classes", "a"]) == 1
    assert main(["data", "check", "voc", str(root), "--classes", "mug,mug"]) == 1
    assert "duplicate class name 'mug'" in capsys.readouterr().err


def test_data_check_of_the_default_set_is_as_before(tmp_path, capsys):
    from fuzzylogic_seg.data.synth_voc import generate_voc

    generate_voc(tmp_path, seed=3, n_train=2, n_val=1, size=(48, 64), progress=False)
    assert main(["data", "check", "voc", str(tmp_path)]) == 0
    assert "classes:" not in capsys.readouterr().out


def test_evaluate_takes_classes_and_names_them(src, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(vocdir(src / "plain") / "SegmentationClass", pred)
    assert main(["evaluate", "--dataset", "voc", "--root", str(src / "plain"), "--split", "train",
                 "--pred", str(pred), "--classes", "mug,spoon"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["miou"] == 1.0 and set(result["per_class_iou"]) == set(CLASSES)


def test_pseudo_label_takes_classes(src, tmp_path, capsys):
    out = tmp_path / "pl"
    assert main(["pseudo-label", "--dataset", "voc", "--root", str(src / "plain"), "--weak", "boxes",
                 "--method", "weak-mask", "--out", str(out), "--classes", "mug,spoon",
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["miou"] > 0.6
    assert set(summary["per_class_iou"]) == set(CLASSES)
    assert json.loads((out / "weak" / "weak.json").read_text())["class_names"] == list(CLASSES)


# ------------------------------------------------ annotation tools' export layouts
def test_a_boxes_only_export_reads_its_split_lists_from_imagesets_main(data, capsys):
    """CVAT's "PASCAL VOC 1.1" export lists its subsets in ImageSets/Main/ (with
    per-class lists beside them) and keeps the photos' own file names (.JPG)."""
    root = data("labelmap")
    as_boxes_export(vocdir(root), image_suffix=".JPG")
    train = VOCSegmentation(root, "train", kinds=("boxes",))
    assert len(train) == 4 and train.items[0].image.suffix == ".JPG"
    assert train[0]["weak"].boxes.shape == (2, 4)  # from the XML, no mask opened
    val = VOCSegmentation(root, "val", kinds=(), with_gt=True)
    assert set(val[0]["gt"].unique().tolist()) == {0, 1, 2}
    assert main(["data", "check", "voc", str(root)]) == 0
    out = capsys.readouterr().out
    assert "splits: train 4, val 2" in out  # not mug_train, spoon_val, ...
    assert "images: 6" in out and "masks: 2" in out
    assert "split 'train' has no masks" in out and "needs none" in out


def test_a_missing_split_list_says_where_it_looked(data):
    root = data("labelmap")
    with pytest.raises(DatasetError, match=r"ImageSets/Main/test\.txt\); a split list is one image id"):
        VOCSegmentation(root, "test")


def test_tool_exports_are_refused_naming_their_converter(tmp_path, capsys):
    """LabelImg saves photos and their XML files side by side, with no split list; YOLO,
    CVAT and LabelMe exports have their own files: each is named with its converter."""
    (tmp_path / "IMG_1.jpg").write_bytes(b"")
    write_xml(tmp_path / "IMG_1.xml", 80, 64, [("mug", (2, 2, 20, 20))])
    with pytest.raises(DatasetError, match="side by side, as LabelImg and Roboflow save them: "
                                           "`fuzzyseg data voc-xml .* --split train --out NEW_ROOT`"):
        VOCSegmentation(tmp_path, "train")
    # other tools' exports: the converter that reads them is named
    for files, words in (({"data.yaml": "names: [a]\n"}, "`fuzzyseg data yolo "),
                         ({"annotations.xml": "<annotations/>"}, "`fuzzyseg data cvat "),
                         ({"a.json": "{}", "a.png": ""}, "`fuzzyseg data labelme ")):
        d = tmp_path / f"export_{len(words)}_{sorted(files)[0]}"
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        with pytest.raises(DatasetError, match=words):
            VOCSegmentation(d, "train")
    masks_only = tmp_path / "masks"
    (masks_only / "SegmentationClass").mkdir(parents=True)
    assert main(["data", "check", "voc", str(masks_only)]) == 1
    assert "copy SegmentationClass/ and ImageSets/Segmentation/ into the folder that has " \
           "JPEGImages/" in capsys.readouterr().out


def test_data_check_sums_up_unknown_class_names_with_what_to_do(src, data, capsys):
    # no labelmap, no --classes: the VOC classes; the summary gives the --classes to use
    assert main(["data", "check", "voc", str(src / "plain")]) == 1
    out = capsys.readouterr().out
    assert "12 objects of classes not among the 21 classes of VOC ('mug' 6, 'spoon' 6): if they " \
           "are yours, name every class with --classes mug,spoon" in out
    assert out.count("--classes mug,spoon") == 1
    assert "hint: 12 objects" in out and "(12 errors, 0 warnings)" in out  # (one per object)
    # a labelmap's classes: a name in another case is pointed out
    root = data("labelmap")
    write_xml(vocdir(root) / "Annotations" / "2024_000000.xml", 80, 64, [("Mug", (2, 2, 20, 20))])
    assert main(["data", "check", "voc", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1 object of classes not among the 3 classes of" in out
    assert "'Mug' is 'mug' in another case; correct the XML <name>s, or add the classes to" in out


def test_classes_other_than_the_labelmap_are_taken_with_a_warning(src, capsys):
    """--classes in another order than the folder's labelmap.txt reads the masks' values
    as other classes: taken (as documented, it wins), but said, in data check too."""
    voc = vocdir(src / "labelmap")
    with pytest.warns(UserWarning, match=r"--classes gives the classes background, spoon, mug, but "
                                         r".*labelmap.txt lists background, mug, spoon: mask values"):
        assert resolve_classes(voc, "spoon,mug").names == ("background", "spoon", "mug")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_classes(voc, "mug,spoon").names == CLASSES  # the same list: no warning
        assert resolve_classes(vocdir(src / "plain"), "spoon,mug").names[1] == "spoon"  # no labelmap
    assert main(["data", "check", "voc", str(src / "labelmap"), "--classes", "spoon,mug"]) == 0
    out = capsys.readouterr().out
    assert "warning: --classes gives the classes background, spoon, mug" in out
    assert main(["data", "check", "voc", str(src / "labelmap"), "--classes", "mug,spoon"]) == 0
    assert "0 warnings" in capsys.readouterr().out


def test_a_list_of_background_alone_is_refused():
    from fuzzylogic_seg.data.classes import parse_classes

    with pytest.raises(ConfigError, match="only 'background': name the object classes too"):
        parse_classes("background")
