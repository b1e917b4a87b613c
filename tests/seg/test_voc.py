"""The Pascal VOC loader against the published layout and its failure modes."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.data.synth_voc import generate_voc
from fuzzylogic_seg.data.voc import VOCSegmentation, parse_annotation, read_split_list
from fuzzylogic_seg.errors import DatasetError
from fuzzylogic_seg.io import save_index_png

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def voc_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    generate_voc(root, seed=3, n_train=4, n_val=2, size=(64, 96), progress=False)
    return root


@pytest.fixture
def voc(voc_src, tmp_path):
    """A private copy that a test may break."""
    dst = tmp_path / "voc"
    shutil.copytree(voc_src, dst)
    return dst


def vocdir(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def write_xml(path: Path, w: int, h: int, objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, (a, b, c, e), d in objects)
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth>"
                    f"</size>{objs}</annotation>")


def test_xml_boxes_become_half_open_zero_based(tmp_path):
    p = tmp_path / "a.xml"
    write_xml(p, 20, 10, [("cat", (1, 1, 20, 10), 0), ("dog", (3.0, 4, 5, 6), 1)])
    size, objs = parse_annotation(p)
    assert size == (10, 20)
    assert [o.name for o in objs] == ["cat", "dog"]
    assert objs[0].box == (0, 0, 20, 10)           # the whole 20x10 image
    assert objs[1].box == (2, 3, 5, 6)             # pixels x 2..4, y 3..5 (1-based 3..5, 4..6)
    assert objs[1].difficult and not objs[0].difficult
    assert [o.label for o in objs] == [8, 12]


def test_samples_follow_the_layout(voc):
    ds = VOCSegmentation(voc, "train", with_gt=True, kinds=("boxes", "tags"))
    assert len(ds) == 4 and ds.num_classes == 21
    for i in range(len(ds)):
        s = ds[i]
        img = np.array(Image.open(vocdir(voc) / "JPEGImages" / f"{s['id']}.jpg").convert("RGB"))
        assert s["image"].dtype == torch.uint8
        assert torch.equal(s["image"], torch.from_numpy(img).permute(2, 0, 1))
        mask = np.array(Image.open(vocdir(voc) / "SegmentationClass" / f"{s['id']}.png"))
        assert torch.equal(s["gt"], torch.from_numpy(mask.astype(np.int64)))
        assert s["meta"]["orig_size"] == tuple(img.shape[:2])
        weak = s["weak"]
        assert weak.kinds() == ("boxes", "tags")
        # Independent check of the coordinate convention: every labelled pixel of a
        # class lies in the union of that class's boxes (the XML boxes are tight).
        h, w = mask.shape
        for c in set(np.unique(mask).tolist()) - {0, 255}:
            union = np.zeros((h, w), bool)
            for (x0, y0, x1, y1), lab in zip(weak.boxes.int().tolist(), weak.box_labels.tolist()):
                if lab == c:
                    union[y0:y1, x0:x1] = True
            assert union[mask == c].all()
            assert weak.tags[c]
        assert not weak.tags[0]
        assert set(torch.nonzero(weak.tags).flatten().tolist()) == set(weak.box_labels.tolist())


def test_root_may_be_any_level(voc):
    a = VOCSegmentation(voc, "val", kinds=())
    b = VOCSegmentation(voc / "VOCdevkit", "val", kinds=())
    c = VOCSegmentation(vocdir(voc), "val", kinds=())
    assert a.ids == b.ids == c.ids and len(a) == 2


def test_without_gt_no_mask_key(voc):
    s = VOCSegmentation(voc, "train")[0]
    assert "gt" not in s and s["weak"].kinds() == ("boxes", "tags")


def test_sbd_list_format_and_aug_masks(voc):
    d = vocdir(voc)
    ids = read_split_list(d / "ImageSets" / "Segmentation" / "train.txt")
    aug = d / "SegmentationClassAug"
    aug.mkdir()
    for i in ids:
        arr = np.asarray(Image.open(d / "SegmentationClass" / f"{i}.png")).copy()
        arr[arr == 255] = 0                                   # SBD masks carry no void band
        save_index_png(arr, aug / f"{i}.png", palette=False)
    (d / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids))
    ds = VOCSegmentation(voc, "train_aug", with_gt=True, kinds=())
    assert ds.ids == ids
    gt = ds[0]["gt"]
    assert not (gt == 255).any()                              # read from SegmentationClassAug


def test_real_scribbles_are_read(voc, tmp_path):
    ds = VOCSegmentation(voc, "train", kinds=())
    sdir = tmp_path / "scr"
    s0 = ds[0]
    h, w = s0["image"].shape[1:]
    scr = np.full((h, w), 255, np.uint8)
    scr[2:4, 3:9] = 0
    scr[h // 2, 5:10] = 7
    save_index_png(scr, sdir / f"{s0['id']}.png")
    ds = VOCSegmentation(voc, "train", scribble_dir=sdir, kinds=("scribbles",))
    assert torch.equal(ds[0]["weak"].scribble, torch.from_numpy(scr.astype(np.int64)))


def test_scribbles_with_values_outside_the_classes_fail_the_check_as_the_loader(voc, tmp_path):
    from fuzzylogic_seg.data.check import check_voc

    ds = VOCSegmentation(voc, "train", kinds=())
    s0 = ds[0]
    h, w = s0["image"].shape[1:]
    scr = np.full((h, w), 255, np.uint8)
    scr[2:4, 3:9] = 50
    path = tmp_path / "scr" / f"{s0['id']}.png"
    save_index_png(scr, path)
    report = check_voc(voc, ["train"], scribble_dir=tmp_path / "scr")
    mine = [p.message for p in report.errors if p.path == str(path)]  # (others: no scribble)
    assert len(mine) == 1 and "[50]" in mine[0]
    with pytest.raises(DatasetError, match="outside"):
        VOCSegmentation(voc, "train", scribble_dir=tmp_path / "scr", kinds=("scribbles",))[0]


# ------------------------------------------------------------- bad data
def first_id(voc):
    return read_split_list(vocdir(voc) / "ImageSets" / "Segmentation" / "train.txt")[0]


def assert_names(excinfo, path: Path):
    assert excinfo.value.path == path, (excinfo.value.path, path)
    assert str(path) in str(excinfo.value)


def test_missing_image(voc):
    p = vocdir(voc) / "JPEGImages" / f"{first_id(voc)}.jpg"
    p.unlink()
    with pytest.raises(DatasetError, match="missing image") as e:
        VOCSegmentation(voc, "train")
    assert_names(e, p)


def test_missing_mask(voc):
    p = vocdir(voc) / "SegmentationClass" / f"{first_id(voc)}.png"
    p.unlink()
    ds = VOCSegmentation(voc, "train", with_gt=True)
    with pytest.raises(DatasetError, match="missing mask") as e:
        ds[0]
    assert_names(e, p)


def test_unreadable_image(voc):
    p = vocdir(voc) / "JPEGImages" / f"{first_id(voc)}.jpg"
    p.write_bytes(b"this is not a jpeg")
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(DatasetError, match="cannot read image") as e:
        ds[0]
    assert_names(e, p)


def test_colour_mask_is_refused(voc):
    p = vocdir(voc) / "SegmentationClass" / f"{first_id(voc)}.png"
    Image.open(p).convert("RGB").save(p)
    with pytest.raises(DatasetError, match="RGB image") as e:
        VOCSegmentation(voc, "train", with_gt=True)[0]
    assert_names(e, p)


def test_mask_size_differs(voc):
    p = vocdir(voc) / "SegmentationClass" / f"{first_id(voc)}.png"
    arr = np.asarray(Image.open(p))
    save_index_png(arr[:-3], p)
    with pytest.raises(DatasetError, match="but its image") as e:
        VOCSegmentation(voc, "train", with_gt=True)[0]
    assert_names(e, p)


@pytest.mark.parametrize("box,message", [
    ((1, 1, 500, 5), "outside"),
    ((0, 1, 5, 5), "outside"),
    ((9, 1, 5, 5), "xmin 9 > xmax 5"),
])
def test_bad_boxes(voc, box, message):
    i = first_id(voc)
    p = vocdir(voc) / "Annotations" / f"{i}.xml"
    w, h = Image.open(vocdir(voc) / "JPEGImages" / f"{i}.jpg").size
    write_xml(p, w, h, [("cat", box, 0)])
    with pytest.raises(DatasetError, match=message) as e:
        VOCSegmentation(voc, "train")[0]
    assert_names(e, p)


def test_unknown_class_name(voc):
    i = first_id(voc)
    p = vocdir(voc) / "Annotations" / f"{i}.xml"
    write_xml(p, 50, 50, [("unicorn", (1, 1, 5, 5), 0)])
    with pytest.raises(DatasetError, match="unknown class name 'unicorn'") as e:
        VOCSegmentation(voc, "train")[0]
    assert_names(e, p)


def test_empty_split_list(voc):
    p = vocdir(voc) / "ImageSets" / "Segmentation" / "val.txt"
    p.write_text("\n\n")
    with pytest.raises(DatasetError, match="empty split list") as e:
        VOCSegmentation(voc, "val")
    assert_names(e, p)


def test_unknown_split_and_root(voc, tmp_path):
    with pytest.raises(DatasetError, match="no list for split 'nosuch'"):
        VOCSegmentation(voc, "nosuch")
    with pytest.raises(DatasetError, match="not a Pascal VOC folder"):
        VOCSegmentation(tmp_path, "train")


def test_high_bit_depth_and_rotated_images_read_as_they_look(tmp_path):
    from PIL import Image

    from fuzzylogic_seg.data.base import read_image

    ramp = (np.arange(64 * 32).reshape(32, 64) * 32).astype(np.uint16)  # 0 .. 65504
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    img = read_image(tmp_path / "deep.png")
    assert img.shape == (3, 32, 64) and torch.equal(img[0], img[2])
    want = torch.from_numpy(np.round(ramp / 257.0).astype(np.uint8))
    assert torch.equal(img[0], want)  # scaled, not clipped at 255
    Image.fromarray((ramp / 65535.0).astype(np.float32), "F").save(tmp_path / "f.tif")
    assert int(read_image(tmp_path / "f.tif")[0].max()) == 255
    rgb = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "phone.jpg").shape == (3, 20, 40)  # data sets: stored pixels
    assert read_image(tmp_path / "phone.jpg", exif_transpose=True).shape == (3, 40, 20)


def test_a_decompression_bomb_is_a_dataset_error_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image

    from fuzzylogic_seg.data.base import image_size, read_image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 is then over twice the limit
    for fn in (read_image, image_size):
        with pytest.raises(DatasetError, match="MAX_IMAGE_PIXELS|decompression bomb") as e:
            fn(tmp_path / "big.png")
        assert e.value.path == tmp_path / "big.png"
