"""Train/val lists for a VOC-layout folder without them (fuzzyseg/data/split.py)."""
from __future__ import annotations

import json

import pytest
from custom_voc import write_custom_voc

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data import VOCSegmentation
from fuzzylogic_seg.data.split import split_voc
from fuzzylogic_seg.errors import ConfigError, DatasetError


def unlisted(tmp_path, keep_masks=None):
    """An export with one image list or none: the lists removed, masks kept only for
    the ids in keep_masks (all when None)."""
    voc = write_custom_voc(tmp_path / "data", n_train=6, n_val=4)
    lists = voc / "ImageSets" / "Segmentation"
    ids = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    for p in lists.glob("*.txt"):
        p.unlink()
    if keep_masks is not None:
        for i in ids:
            if i not in keep_masks:
                (voc / "SegmentationClass" / f"{i}.png").unlink()
    return voc, ids


def test_the_images_with_masks_are_the_validation_split(tmp_path, capsys):
    voc, ids = unlisted(tmp_path, keep_masks=None)
    for i in ids[:7]:
        (voc / "SegmentationClass" / f"{i}.png").unlink()
    assert main(["data", "split", str(tmp_path / "data")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == 7 and summary["val"] == 3 and summary["with_masks"] == 3
    lists = voc / "ImageSets" / "Segmentation"
    assert lists.joinpath("val.txt").read_text().split() == ids[7:]
    assert lists.joinpath("train.txt").read_text().split() == ids[:7]
    # the lists are what the loader and data check read
    assert len(VOCSegmentation(tmp_path / "data", "val")) == 3
    assert main(["data", "check", "voc", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    # lists are not written over without --force
    assert main(["data", "split", str(tmp_path / "data")]) != 0
    assert "--force" in capsys.readouterr().err


def test_all_masked_draws_a_seeded_share(tmp_path):
    voc, ids = unlisted(tmp_path)
    a = split_voc(tmp_path / "data", seed=3)
    first = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text()
    assert a["val"] == 2 and a["train"] == 8  # 0.2 of 10
    split_voc(tmp_path / "data", seed=3, force=True)
    assert (voc / "ImageSets" / "Segmentation" / "val.txt").read_text() == first  # deterministic
    assert split_voc(tmp_path / "data", val=4, force=True)["val"] == 4
    with pytest.raises(ConfigError, match="training needs at least one image"):
        split_voc(tmp_path / "data", val=10, force=True)


def test_no_masks_at_all_is_an_error_saying_why(tmp_path):
    unlisted(tmp_path, keep_masks=[])
    with pytest.raises(DatasetError, match="the validation split needs masks"):
        split_voc(tmp_path / "data")


def test_the_default_share_of_a_few_masked_images_is_one_image(tmp_path):
    """Two images, both with a mask, no --val: 0.2 of 2 rounds to none, but the default
    gives one validation image (not an error about a --val that was not given)."""
    voc, ids = unlisted(tmp_path)
    for i in ids[2:]:
        for d, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml"), ("SegmentationClass", ".png")):
            (voc / d / f"{i}{suffix}").unlink()
    summary = split_voc(tmp_path / "data")
    assert summary["val"] == 1 and summary["train"] == 1
    for i in ids[1:2]:
        for d, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml"), ("SegmentationClass", ".png")):
            (voc / d / f"{i}{suffix}").unlink()
    with pytest.raises(ConfigError, match="training needs at least one image") as err:
        split_voc(tmp_path / "data", force=True)  # (one image: it cannot be both)
    assert "--val" not in str(err.value).split(":")[0]
