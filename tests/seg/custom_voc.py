"""A tiny data set in Pascal VOC layout with a practitioner's own classes, as an
annotation tool (CVAT, datumaro, LabelImg) exports it: JPEGImages/, Annotations/*.xml
with the user's class names, ImageSets/Segmentation/{train,val}.txt, palette
SegmentationClass/*.png, and optionally labelmap.txt."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

CLASSES = ("background", "mug", "spoon")
COLOURS = {"background": (0, 0, 0), "mug": (250, 50, 83), "spoon": (51, 221, 255)}
LABELMAP = "# label:color_rgb:parts:actions\n" + "".join(
    f"{n}:{','.join(map(str, COLOURS[n]))}::\n" for n in CLASSES)


def photo(path: Path, size=(60, 40), colour=(120, 120, 120), exif_orientation=None) -> None:
    """A plain RGB image as a camera or an export writes it, optionally with an EXIF
    orientation tag (6: shown turned by 90 degrees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if exif_orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif)


def write_xml(path: Path, w: int, h: int, objects: Sequence[Tuple[str, Tuple[int, int, int, int]]]):
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, (a, b, c, d) in objects)
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth>"
                    f"</size>{objs}</annotation>")


def write_custom_voc(root: Path, n_train: int = 4, n_val: int = 2, labelmap: bool = True,
                     rgb_masks: bool = False, seed: int = 0, size=(64, 80)) -> Path:
    """Write ROOT/VOCdevkit/VOC2012 with classes mug (a red box) and spoon (a blue
    ellipse) on grey noise; returns the VOC2012 folder."""
    from fuzzylogic_seg.io import save_index_png

    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    splits: Dict[str, list] = {"train": [], "val": []}
    yy, xx = np.mgrid[:h, :w]
    for k in range(n_train + n_val):
        image_id = f"2024_{k:06d}"
        splits["train" if k < n_train else "val"].append(image_id)
        img = rng.integers(90, 140, size=(h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        objects = []
        # mug: a rectangle in the left half
        x0, y0 = int(rng.integers(2, w // 2 - 22)), int(rng.integers(2, h - 26))
        x1, y1 = x0 + int(rng.integers(14, 20)), y0 + int(rng.integers(14, 22))
        mask[y0:y1, x0:x1] = 1
        img[y0:y1, x0:x1] = (220, 40, 60)
        objects.append(("mug", (x0 + 1, y0 + 1, x1, y1)))
        # spoon: an ellipse in the right half
        cx, cy = int(rng.integers(w // 2 + 10, w - 12)), int(rng.integers(12, h - 12))
        ry, rx = int(rng.integers(7, 10)), int(rng.integers(5, 9))
        ell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        mask[ell] = 2
        img[ell] = (40, 180, 230)
        ys, xs = np.nonzero(ell)
        objects.append(("spoon", (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)))
        Image.fromarray(img).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        if rgb_masks:
            pal = np.array([COLOURS[n] for n in CLASSES], np.uint8)
            Image.fromarray(pal[mask]).save(voc / "SegmentationClass" / f"{image_id}.png")
        else:
            save_index_png(mask, voc / "SegmentationClass" / f"{image_id}.png")
        write_xml(voc / "Annotations" / f"{image_id}.xml", w, h, objects)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if labelmap:
        (voc / "labelmap.txt").write_text(LABELMAP)
    return voc


def as_boxes_export(voc: Path, image_suffix: str = ".jpg") -> Path:
    """Rearrange a set written by write_custom_voc as a boxes-only export (CVAT's
    "PASCAL VOC 1.1", datumaro): split lists in ImageSets/Main/ with per-class lists
    (CLASS_SPLIT.txt, lines "ID 1/-1") beside them, no ImageSets/Segmentation/, no
    masks for the training images (the validation masks stay); images renamed to
    `image_suffix` (a phone's .JPG)."""
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    seg = voc / "ImageSets" / "Segmentation"
    for lst in sorted(seg.glob("*.txt")):
        ids = lst.read_text().split()
        (main / lst.name).write_text(lst.read_text())
        for name in CLASSES[1:]:
            (main / f"{name}_{lst.name}").write_text("".join(f"{i}  1\n" for i in ids))
        if lst.stem == "train":
            for i in ids:
                (voc / "SegmentationClass" / f"{i}.png").unlink()
        lst.unlink()
    seg.rmdir()
    if image_suffix != ".jpg":
        for p in sorted((voc / "JPEGImages").glob("*.jpg")):
            p.rename(p.with_suffix(image_suffix))
    return voc
