"""The embedded synthetic sets: real layouts, determinism, the promised properties."""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.data.refuge import REFUGE, refuge_from_disk
from fuzzylogic_seg.data.synth_refuge import generate_refuge
from fuzzylogic_seg.data.synth_voc import generate_voc
from fuzzylogic_seg.data.voc import VOCSegmentation
from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.metrics import vcdr
from fuzzylogic_seg.weak.morph import dilate

torch.set_num_threads(1)


def files(root: Path):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("svoc")
    generate_voc(root, seed=0, n_train=6, n_val=3, size=(80, 120), progress=False)
    return root


@pytest.fixture(scope="module")
def refuge(tmp_path_factory):
    root = tmp_path_factory.mktemp("sref")
    generate_refuge(root, seed=0, n_train=8, n_val=2, n_test=2, size=96, progress=False)
    return root


def test_voc_is_deterministic_and_per_image(voc, tmp_path):
    again = tmp_path / "again"
    generate_voc(again, seed=0, n_train=6, n_val=3, size=(80, 120), progress=False)
    assert files(voc) == files(again)
    fewer = tmp_path / "fewer"
    generate_voc(fewer, seed=0, n_train=2, n_val=1, size=(80, 120), progress=False)
    a, b = files(voc), files(fewer)
    for k in b:   # an image does not depend on how many others were drawn
        if k.parent.name in ("JPEGImages", "SegmentationClass", "Annotations"):
            assert a[k] == b[k]
    other = tmp_path / "other"
    generate_voc(other, seed=1, n_train=2, n_val=1, size=(80, 120), progress=False)
    jp = [k for k in b if k.suffix == ".jpg"]
    assert all(files(other)[k] != b[k] for k in jp)


def test_voc_layout_and_annotations(voc):
    d = voc / "VOCdevkit" / "VOC2012"
    ids = (d / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(ids) == 6
    sizes, classes = set(), set()
    for i in ids:
        img = Image.open(d / "JPEGImages" / f"{i}.jpg")
        assert img.format == "JPEG"
        mask_img = Image.open(d / "SegmentationClass" / f"{i}.png")
        assert mask_img.mode == "P"
        mask = np.array(mask_img)
        inst = np.array(Image.open(d / "SegmentationObject" / f"{i}.png"))
        sizes.add(img.size)
        root = ET.parse(d / "Annotations" / f"{i}.xml").getroot()
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == img.size
        objs = root.findall("object")
        assert objs
        for k, o in enumerate(objs):
            classes.add(o.findtext("name"))
            for t in ("truncated", "difficult", "occluded"):
                assert o.findtext(t) in ("0", "1")
        # Every visible instance's 1-based inclusive box is the tight box of its pixels.
        boxes = sorted(tuple(int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
                       for o in objs)
        tight = []
        for k in sorted(set(np.unique(inst).tolist()) - {0}):
            ys, xs = np.nonzero(inst == k)
            tight.append((xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1))
        assert boxes == sorted(tight)
        # Void (255) only in a thin band along object outlines, never far from an object.
        void = torch.from_numpy(mask == 255)
        objects = torch.from_numpy(inst > 0)
        assert void.any()
        assert not (void & ~dilate(objects, 2)).any()
        assert set(np.unique(mask).tolist()) <= set(range(21)) | {255}
    assert len(sizes) > 1                         # varying sizes / aspect ratios
    assert len(classes) >= 3


def test_voc_colour_alone_is_not_the_class(voc):
    """Per-class mean colours learnt on train do not classify val pixels: the
    balanced recall of a nearest-mean colour classifier stays low."""
    def pixels(split):
        ds = VOCSegmentation(voc, split, with_gt=True, kinds=())
        feats, labs = [], []
        for i in range(len(ds)):
            s = ds[i]
            ok = s["gt"] != 255
            feats.append(s["image"].permute(1, 2, 0)[ok].float())
            labs.append(s["gt"][ok])
        return torch.cat(feats), torch.cat(labs)

    x, y = pixels("train")
    xv, yv = pixels("val")
    present = y.unique()
    means = torch.stack([x[y == c].mean(0) for c in present])
    pred = present[torch.cdist(xv, means).argmin(1)]
    recall = [(pred[yv == c] == c).float().mean().item() for c in yv.unique()]
    assert sum(recall) / len(recall) < 0.6


def test_voc_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="classes"):
        generate_voc(tmp_path, classes=("unicorn",), progress=False)
    with pytest.raises(ConfigError, match="size"):
        generate_voc(tmp_path, size=(200, 100), progress=False)


def test_refuge_layout_values_and_cdr(refuge):
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        imgs = sorted((refuge / split / "images").iterdir())
        assert len(imgs) == n and all(p.suffix == ".jpg" for p in imgs)
    cdrs = []
    ds = REFUGE(refuge, "train", with_gt=True, kinds=())
    for i in range(len(ds)):
        s = ds[i]
        disk = np.array(Image.open(ds.items[i].mask))
        assert Image.open(ds.items[i].mask).format == "BMP"
        assert set(np.unique(disk).tolist()) == {0, 128, 255}
        lab = refuge_from_disk(disk)
        # The cup lies inside the disc with a rim all round: no cup pixel touches background.
        assert not (dilate(lab == 2, 1) & (lab == 0)).any()
        cdrs.append(vcdr(lab))
        # The disc is brighter than the retina around it.
        img = s["image"].float().mean(0)
        disc = lab > 0
        ring = dilate(disc, 8) & ~dilate(disc, 3)
        assert img[disc].mean() > img[ring].mean() + 10
        name = ds.items[i].id
        assert name[0] in "gn" and len(name) == 5
    cdrs = torch.tensor(cdrs)
    assert (cdrs > 0.2).all() and (cdrs < 0.9).all() and cdrs.std() > 0.05


def test_refuge_deterministic(refuge, tmp_path):
    again = tmp_path / "again"
    generate_refuge(again, seed=0, n_train=8, n_val=2, n_test=2, size=96, progress=False)
    assert files(refuge) == files(again)
