"""`fuzzyseg data synth|check|weak` and `fuzzyseg evaluate`, end to end."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import REFUGE, VOCSegmentation
from fuzzylogic_seg.io import save_index_png
from fuzzylogic_seg.weak.store import WeakStore

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["data", "synth", "voc", str(root / "voc"), "--n-train", "4", "--n-val", "2",
                 "--size", "64-90", "--seed", "1"]) == 0
    assert main(["data", "synth", "refuge", str(root / "ref"), "--n-train", "3", "--n-val", "2",
                 "--n-test", "1", "--size", "80"]) == 0
    return root


@pytest.fixture
def copy(sets, tmp_path):
    def make(name):
        shutil.copytree(sets / name, tmp_path / name)
        return tmp_path / name
    return make


def test_synth_then_check_is_clean(sets, capsys):
    assert main(["data", "check", "voc", str(sets / "voc")]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "train 4" in out and "val 2" in out
    assert main(["data", "check", "refuge", str(sets / "ref")]) == 0
    out = capsys.readouterr().out
    assert "train 3" in out and "test 1" in out and "0 errors" in out


def test_check_lists_every_problem_by_file(copy, capsys, tmp_path):
    voc = copy("voc")
    d = voc / "VOCdevkit" / "VOC2012"
    ids = (d / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (d / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    m = d / "SegmentationClass" / f"{ids[1]}.png"
    save_index_png(np.array(Image.open(m))[:-2], m)
    x = d / "Annotations" / f"{ids[2]}.xml"
    x.write_text(x.read_text().replace("<name>", "<name>x", 1))
    (d / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    report = tmp_path / "report.json"
    assert main(["data", "check", "voc", str(voc), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert f"{ids[0]}.jpg" in out and "missing image" in out
    assert str(m) in out and "but its image" in out
    assert str(x) in out and "unknown class name" in out
    assert "val.txt" in out and "empty split list" in out
    data = json.loads(report.read_text())
    assert data["errors"] == 4 and not data["ok"]


def test_a_test_split_without_masks_is_checked_without_failing(copy, capsys):
    """VOC2012 trainval + test installed together: test.txt lists images whose masks
    are not published. `data check` checks their images and notes the split, but a
    mask missing in a split that has masks is still an error."""
    voc = copy("voc")
    d = voc / "VOCdevkit" / "VOC2012"
    ids = (d / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for i in ids:
        (d / "SegmentationClass" / f"{i}.png").unlink()
    (d / "ImageSets" / "Segmentation" / "val.txt").rename(d / "ImageSets" / "Segmentation" / "test.txt")
    assert main(["data", "check", "voc", str(voc)]) == 0
    out = capsys.readouterr().out
    assert "split 'test' has no masks: its images and annotations are checked" in out
    assert "a validation split does" in out and "0 errors" in out
    train = (d / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (d / "SegmentationClass" / f"{train[0]}.png").unlink()
    assert main(["data", "check", "voc", str(voc)]) == 1
    assert "missing" in capsys.readouterr().out


def test_check_refuge_problem(copy, capsys):
    ref = copy("ref")
    m = sorted((ref / "val" / "mask").iterdir())[0]
    m.write_bytes(b"nope")
    assert main(["data", "check", "refuge", str(ref)]) == 1
    out = capsys.readouterr().out
    assert str(m) in out and "cannot read mask" in out


def test_weak_folder_and_mix(sets, tmp_path, capsys):
    out = tmp_path / "weak"
    assert main(["data", "weak", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "train",
                 "--kinds", "boxes,scribbles,points", "--out", str(out), "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["images_with_kind"]["scribbles"] == 4
    store = WeakStore(out)
    assert store.manifest["seed"] == 3 and len(store.ids) == 4
    ds = VOCSegmentation(sets / "voc", "train", weak_dir=out)
    assert ds[0]["weak"].kinds() == ("boxes", "scribbles", "points")
    # Boxes in the folder are the XML boxes, in original pixels.
    xml = VOCSegmentation(sets / "voc", "train", kinds=("boxes",))
    assert torch.equal(ds[0]["weak"].boxes, xml[0]["weak"].boxes)

    mixed = tmp_path / "mixed"
    assert main(["data", "weak", "--dataset", "refuge", "--root", str(sets / "ref"),
                 "--mix", "boxes:0.5,scribbles+tags:0.5", "--out", str(mixed)]) == 0
    ds = REFUGE(sets / "ref", "train", weak_dir=mixed)
    kinds = {ds[i]["weak"].kinds() for i in range(len(ds))}
    assert kinds <= {("boxes",), ("scribbles", "tags")}


def test_weak_bad_kind(sets, tmp_path, capsys):
    assert main(["data", "weak", "--dataset", "voc", "--root", str(sets / "voc"),
                 "--kinds", "boxes,polygons", "--out", str(tmp_path / "w")]) == 1
    assert "polygons" in capsys.readouterr().err


def test_evaluate_voc(sets, tmp_path, capsys):
    d = sets / "voc" / "VOCdevkit" / "VOC2012"
    pred = tmp_path / "pred"
    pred.mkdir()
    for p in (d / "SegmentationClass").iterdir():
        shutil.copy(p, pred / p.name)
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "val",
                 "--pred", str(pred)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["miou"] == 1.0 and res["images"] == 2
    # Predict background everywhere on one image: mIoU drops, computed over the split.
    ids = (d / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    gt = np.array(Image.open(d / "SegmentationClass" / f"{ids[0]}.png"))
    save_index_png(np.zeros_like(gt), pred / f"{ids[0]}.png")
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "val",
                 "--pred", str(pred), "--out", str(tmp_path / "m.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["miou"] < 1.0
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == res["miou"]
    # Wrong size and missing predictions fail, naming the file.
    save_index_png(np.zeros((5, 5), np.uint8), pred / f"{ids[1]}.png")
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "val",
                 "--pred", str(pred)]) == 1
    err = capsys.readouterr().err
    assert f"{ids[1]}.png" in err and "5x5" in err
    (pred / f"{ids[1]}.png").unlink()
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "val",
                 "--pred", str(pred)]) == 1
    err = capsys.readouterr().err
    assert f"{ids[1]}.png" in err and "missing prediction" in err


def test_evaluate_refuge(sets, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for p in (sets / "ref" / "val" / "mask").iterdir():
        Image.open(p).save(pred / f"{p.stem}.png")
    assert main(["evaluate", "--dataset", "refuge", "--root", str(sets / "ref"), "--split", "val",
                 "--pred", str(pred), "--per-image"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dice_disc"] == 1.0 and res["dice_cup"] == 1.0 and res["vcdr_mae"] == 0.0
    assert len(res["per_image"]) == 2 and res["coverage"] == 1.0


def test_evaluate_points_at_the_split_when_no_image_has_a_prediction(sets, tmp_path, capsys):
    # pseudo-labels are of the training split; evaluate defaults to val
    d = sets / "voc" / "VOCdevkit" / "VOC2012"
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in (d / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
        shutil.copy(d / "SegmentationClass" / f"{i}.png", pred / f"{i}.png")
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"),
                 "--pred", str(pred)]) == 1
    err = capsys.readouterr().err
    assert "of split 'val' have none" in err and "predictions of another split (--split)?" in err
    assert main(["evaluate", "--dataset", "voc", "--root", str(sets / "voc"), "--split", "train",
                 "--pred", str(pred)]) == 0


def test_check_counts_read_as_words(copy, capsys):
    voc = copy("voc")
    d = voc / "VOCdevkit" / "VOC2012"
    ids = (d / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (d / "SegmentationClass" / f"{ids[0]}.png").unlink()
    assert main(["data", "check", "voc", str(voc)]) == 1
    out = capsys.readouterr().out
    assert "(1 error, " in out and "1 errors" not in out


def test_a_refuge_test_split_without_masks_is_checked_without_failing(copy, capsys):
    # REFUGE2's test/images without test/mask (the GT of the test images is not
    # always installed): a warning, as for VOC's test split; a split that has masks
    # still fails for a missing one
    ref = copy("ref")
    assert (ref / "test" / "images").is_dir()
    shutil.rmtree(ref / "test" / "mask", ignore_errors=True)
    assert main(["data", "check", "refuge", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "split 'test' has no masks (a test split)" in out and "0 errors" in out
    sorted((ref / "val" / "mask").iterdir())[0].unlink()
    assert main(["data", "check", "refuge", str(ref)]) == 1
    assert "missing" in capsys.readouterr().out


def test_synth_takes_its_folder_as_out_or_with_the_other_commands_flag(tmp_path, capsys):
    assert main(["data", "synth", "refuge", "--out", str(tmp_path / "r"), "--n-train", "1",
                 "--n-val", "1"]) == 0
    assert (tmp_path / "r" / "train" / "images").is_dir()
    assert main(["data", "synth", "refuge"]) == 1
    assert "give the folder to write" in capsys.readouterr().err
    assert main(["data", "synth", "refuge", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 1
    assert "two folders to write" in capsys.readouterr().err
