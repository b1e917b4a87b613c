"""The REFUGE loader: REFUGE2 and REFUGE-1 layouts, disk values, failure modes."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.data.refuge import REFUGE, refuge_from_disk, refuge_to_disk
from fuzzylogic_seg.data.synth_refuge import generate_refuge
from fuzzylogic_seg.errors import ConfigError, DatasetError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ref_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("refuge")
    generate_refuge(root, seed=1, n_train=3, n_val=2, n_test=1, size=96, progress=False)
    return root


@pytest.fixture
def ref(ref_src, tmp_path):
    dst = tmp_path / "refuge"
    shutil.copytree(ref_src, dst)
    return dst


def test_disk_values_round_trip():
    disk = np.array([[255, 128, 0], [0, 128, 255]], np.uint8)
    lab = refuge_from_disk(disk)
    assert lab.tolist() == [[0, 1, 2], [2, 1, 0]]
    assert refuge_to_disk(lab).tolist() == disk.tolist()
    # Resampled masks: the nearest of 0/128/255.
    assert refuge_from_disk(np.array([[10, 63, 64, 120, 191, 192, 250]], np.uint8)).tolist() == \
        [[2, 2, 1, 1, 1, 0, 0]]
    with pytest.raises(ConfigError, match="ignore"):
        refuge_to_disk(torch.tensor([[255]]))
    assert refuge_to_disk(torch.tensor([[255, 2]]), ignore_value=7).tolist() == [[7, 0]]


def tight_box(m: np.ndarray):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_refuge2_samples(ref):
    ds = REFUGE(ref, "train", with_gt=True)
    assert len(ds) == 3 and ds.classes == ("background", "disc", "cup")
    for i in range(len(ds)):
        s = ds[i]
        disk = np.array(Image.open(ref / "train" / "mask" / f"{s['id']}.bmp"))
        assert torch.equal(s["gt"], refuge_from_disk(disk))
        # boxes: one disc box (label 1) and one cup box (label 2), tight (brute force).
        w = s["weak"]
        assert w.box_labels.tolist() == [1, 2]
        assert w.boxes.int().tolist() == [tight_box(disk < 255), tight_box(disk == 0)]
    assert REFUGE(ref, "test").ids == ["T0001"]
    assert REFUGE(ref, "val").ids == ["V0001", "V0002"]


def test_refuge2_folder_names_any_case_and_png(ref):
    (ref / "val").rename(ref / "Validation")
    (ref / "Validation" / "images").rename(ref / "Validation" / "Images")
    (ref / "Validation" / "mask").rename(ref / "Validation" / "Masks")
    p = ref / "Validation" / "Masks" / "V0001.bmp"
    Image.open(p).save(p.with_suffix(".png"))
    p.unlink()
    ds = REFUGE(ref, "val", with_gt=True)
    assert ds.ids == ["V0001", "V0002"]
    assert ds[0]["gt"].shape == ds[0]["image"].shape[1:]


def test_refuge1_layout(ref, tmp_path):
    """Training400/{Glaucoma,Non-Glaucoma} + Annotation-Training400/.../Disc_Cup_Masks."""
    r1 = tmp_path / "r1"
    for src in sorted((ref / "train" / "images").iterdir()):
        sub = "Glaucoma" if src.name.startswith("g") else "Non-Glaucoma"
        (r1 / "Training400" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, r1 / "Training400" / sub / src.name)
        mdir = r1 / "Annotation-Training400" / "Annotation-Training400" / "Disc_Cup_Masks" / sub
        mdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ref / "train" / "mask" / f"{src.stem}.bmp", mdir / f"{src.stem}.bmp")
    (r1 / "REFUGE-Validation400").mkdir()
    (r1 / "REFUGE-Validation400-GT" / "Disc_Cup_Masks").mkdir(parents=True)
    for src in sorted((ref / "val" / "images").iterdir()):
        shutil.copy(src, r1 / "REFUGE-Validation400" / src.name)
        shutil.copy(ref / "val" / "mask" / f"{src.stem}.bmp",
                    r1 / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / f"{src.stem}.bmp")
    for split in ("train", "val"):
        a = REFUGE(ref, split, with_gt=True)
        b = REFUGE(r1, split, with_gt=True)
        assert sorted(a.ids) == sorted(b.ids)
        for i in b.ids:
            sa, sb = a[a.index(i)], b[b.index(i)]
            assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["gt"], sb["gt"])
            assert sa["weak"].equal(sb["weak"])


def test_any_image_size(ref):
    """Real REFUGE images are 2124x2056 or 1634x1634: nothing assumes a square."""
    p = ref / "train" / "images"
    name = sorted(p.iterdir())[0]
    Image.open(name).crop((0, 0, 96, 70)).save(name)
    m = ref / "train" / "mask" / f"{name.stem}.bmp"
    Image.open(m).crop((0, 0, 96, 70)).save(m)
    s = REFUGE(ref, "train", with_gt=True, kinds=("boxes", "scribbles", "points"))[0]
    assert s["image"].shape == (3, 70, 96) and s["gt"].shape == (70, 96)
    assert s["weak"].scribble.shape == (70, 96)


def names(excinfo, path: Path):
    assert excinfo.value.path == path and str(path) in str(excinfo.value)


def test_missing_mask_named(ref):
    first = sorted((ref / "train" / "mask").iterdir())[0]
    first.unlink()
    with pytest.raises(DatasetError, match="missing mask") as e:
        REFUGE(ref, "train", with_gt=True)[0]
    names(e, first)


def test_mask_size_differs(ref):
    m = sorted((ref / "val" / "mask").iterdir())[0]
    Image.open(m).resize((50, 50)).save(m)
    with pytest.raises(DatasetError, match="but its image") as e:
        REFUGE(ref, "val", with_gt=True)[0]
    names(e, m)


def test_a_mask_drawn_on_the_exif_rotated_image_gets_the_cause_named(ref):
    img_path = sorted((ref / "val" / "images").iterdir())[0]
    mask_path = sorted((ref / "val" / "mask").iterdir())[0]
    img = Image.open(img_path).convert("RGB")
    w, h = img.size
    box = (0, 0, w, h * 3 // 4)  # not square
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    img.crop(box).save(img_path, exif=exif.tobytes())
    Image.open(mask_path).crop(box).transpose(Image.Transpose.ROTATE_270).save(mask_path)
    with pytest.raises(DatasetError, match="EXIF orientation tag \\(6\\)") as e:
        REFUGE(ref, "val", with_gt=True)[0]
    names(e, mask_path)


def test_unreadable_mask(ref):
    m = sorted((ref / "val" / "mask").iterdir())[0]
    m.write_bytes(b"BM garbage")
    with pytest.raises(DatasetError, match="cannot read mask") as e:
        REFUGE(ref, "val", with_gt=True)[0]
    names(e, m)


def test_masks_stored_as_class_indices_are_refused_not_read_as_all_cup(ref):
    """0/1/2 index maps (some toolkits convert REFUGE masks so) would read as "every
    pixel is cup" under the grey coding: the loader and `data check` name the file."""
    from fuzzylogic_seg.data.check import check_refuge

    m = sorted((ref / "train" / "mask").iterdir())[0]
    grey = np.asarray(Image.open(m).convert("L"))
    idx = np.where(grey == 255, 0, np.where(grey == 128, 1, 2)).astype(np.uint8)
    Image.fromarray(idx).save(m)
    with pytest.raises(DatasetError, match="class indices") as e:
        REFUGE(ref, "train", with_gt=True)[0]
    names(e, m)
    report = check_refuge(ref, ["train"])
    assert [p.path for p in report.errors] == [str(m)]
    assert "class indices" in report.errors[0].message


def test_missing_or_empty_split(ref, tmp_path):
    with pytest.raises(DatasetError, match="no split 'nosuch'"):
        REFUGE(ref, "nosuch")
    for p in (ref / "test" / "images").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="has no images"):
        REFUGE(ref, "test")
    with pytest.raises(DatasetError, match="no such REFUGE folder"):
        REFUGE(tmp_path / "absent", "train")
