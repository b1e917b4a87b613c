"""COCO instances -> the Pascal VOC layout this package reads (`fuzzyseg data coco`).

MS COCO's `instances_*.json` (and the COCO exports of CVAT, Label Studio,
Roboflow...) hold `images` (id, file_name, width, height), `categories` (id,
name) and `annotations` (image_id, category_id, bbox [x, y, w, h] in pixels
from the top-left corner, segmentation as polygons or RLE, iscrowd). One call
converts one split into ``OUT/VOC2012``:

- ``JPEGImages/``: the images, linked (or copied), named by file stem;
- ``Annotations/ID.xml``: one object per non-crowd annotation, its COCO box as
  a VOC box (1-based, inclusive: xmin = x + 1, xmax = x + w), class = category name;
- ``labelmap.txt``: background, then the categories in id order, with VOC's
  colours (the classes of every split converted into OUT must agree);
- ``ImageSets/Segmentation/SPLIT.txt``;
- with masks: ``SegmentationClass/ID.png``, the annotations' segmentations
  painted largest first (a smaller object in front of a larger one), crowd
  regions void (255).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import DatasetError
from .base import PathLike, read_json
from .vocwrite import (Entry, check_class_names, check_entries, find_image, match_labelmap, unique_ids,
                       voc_box, write_split)


def load_coco(path: PathLike) -> Dict:
    path = Path(path)
    data = read_json(path, "COCO annotations")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)] \
        if isinstance(data, dict) else ["images", "annotations", "categories"]
    if missing:
        raise DatasetError(f"not COCO instances: no list {', '.join(missing)}", path)
    return data


# --------------------------------------------------------------------- masks
def rle_decode(rle: Dict, h: int, w: int) -> np.ndarray:
    """A COCO RLE (counts as a list, or as COCO's compressed string) -> bool [H, W]."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _rle_string_counts(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for n in counts:
        if value:
            flat[pos:pos + n] = True
        pos += n
        value = not value
    return flat.reshape(w, h).T  # (COCO runs go down the columns)


def _rle_string_counts(s: str) -> List[int]:
    """COCO's compressed counts (pycocotools' rleFrString): 5 bits a character, a
    continuation bit, differences to the count two back from the third on."""
    counts: List[int] = []
    i = 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def polygons_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """The union of COCO polygons ([x1, y1, x2, y2, ...] in pixels) as bool [H, W]: a
    pixel is inside when its centre is (even-odd rule), which is pycocotools'
    rasterisation up to a pixel or two along the border."""
    out = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64)[: len(poly) // 2 * 2].reshape(-1, 2)
        if len(pts) < 3:
            continue
        # only the polygon's bounding box is tested
        x0, y0 = (max(int(np.floor(v)), 0) for v in pts.min(0))
        x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 1, w), min(int(np.ceil(pts[:, 1].max())) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        inside = np.zeros(py.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
            if ay == by:
                continue  # (a horizontal edge crosses no scan line)
            crosses = (ay > py) != (by > py)
            inside ^= crosses & (px < (bx - ax) * (py - ay) / (by - ay) + ax)
        out[y0:y1, x0:x1] |= inside
    return out


def annotation_mask(ann: Dict, h: int, w: int) -> Optional[np.ndarray]:
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        return polygons_mask(seg, h, w) if seg else None
    if isinstance(seg, dict) and "counts" in seg:
        return rle_decode(seg, h, w)
    return None


# ----------------------------------------------------------------- checking
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _check_structure(data: Dict, path: Path) -> None:
    """Every image, category and annotation a record with the keys the conversion reads
    (image: id, file_name, width, height; category: id, name; annotation: image_id,
    category_id), image and category ids unique: a DatasetError naming the record."""
    ids = set()
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not (_is_int(c.get("id")) or isinstance(c.get("id"), str)) \
                or "name" not in c:
            raise DatasetError(f"categories[{k}]: a category is an object with an id (a number) and "
                               f"a name, got {c!r}", path)
        if c["id"] in ids:
            raise DatasetError(f"categories[{k}]: category id {c['id']} twice", path)
        ids.add(c["id"])
    ids = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DatasetError(f"images[{k}]: an image is an object with an id and a file_name, "
                               f"got {img!r}", path)
        for key in ("width", "height"):
            v = img.get(key)
            if not _is_number(v) or v != int(v) or v < 1:
                raise DatasetError(f"image {img['file_name']} (id {img['id']}): {key} must be a whole "
                                   f"number of pixels >= 1, got {v!r}", path)
        try:
            hash(img["id"])
        except TypeError:
            raise DatasetError(f"images[{k}]: id {img['id']!r} is not a number or string", path) from None
        if img["id"] in ids:
            raise DatasetError(f"image id {img['id']!r} twice (images[{k}], {img['file_name']}): "
                               "its annotations would go to both images", path)
        ids.add(img["id"])
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise DatasetError(f"annotations[{k}]: an annotation is an object, got {a!r}", path)
        for key in ("image_id", "category_id"):
            try:
                hash(a.get(key))
            except TypeError:
                raise DatasetError(f"annotation {a.get('id', k)}: {key} {a.get(key)!r} is not a number "
                                   "or string", path) from None


def _check_annotation(a: Dict, h: int, w: int, file_name: str, path: Path) -> None:
    """A non-crowd annotation's bbox, and any annotation's segmentation, readable for an
    (h, w) image: a DatasetError naming the annotation and image."""
    def fail(msg):
        raise DatasetError(f"annotation {a.get('id')} of image {file_name}: {msg}", path)

    if not a.get("iscrowd"):
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            fail(f"bbox must be [x, y, width, height] in pixels, got {box!r}")
        x, y, bw, bh = box
        if x + bw <= 0 or y + bh <= 0 or x >= w or y >= h:
            fail(f"bbox {box} lies outside the {w}x{h} image")
    seg = a.get("segmentation")
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                fail("a polygon must be a list of finite x, y numbers, got "
                     f"{str(poly)[:60]}")
    elif isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size")
        if size is not None and (not isinstance(size, list) or size != [h, w]):
            fail(f"RLE size {size} is not the image's [height, width] [{h}, {w}]")
        counts = seg["counts"]
        try:
            counts = _rle_string_counts(counts) if isinstance(counts, str) else counts
        except IndexError:  # (the string ends inside a count)
            fail("RLE counts are not COCO's compressed string (it ends inside a count)")
        if not isinstance(counts, list) or not all(_is_int(n) and n >= 0 for n in counts):
            fail("RLE counts must be run lengths >= 0 (a list of integers, or COCO's string)")
        if sum(counts) != h * w:
            fail(f"RLE runs cover {sum(counts)} pixels, but the image has {h}x{w} = {h * w}")


# ----------------------------------------------------------------- converting
def convert_coco(instances: PathLike, images: PathLike, out: PathLike, split: str, *,
                 masks: bool = True, copy: bool = False, skip_empty: bool = False) -> Dict:
    """Convert one COCO split into OUT/VOC2012 (module doc); returns a summary.

    Everything is checked before anything is written (the images all found, every
    category known). Into a folder converted before, the categories are matched by
    name to its labelmap.txt: a split may hold fewer categories, or number them
    otherwise, than the first; a category the folder has not is an error."""
    instances, images = Path(instances), Path(images)
    data = load_coco(instances)
    if not images.is_dir():
        raise DatasetError(f"--images: no such folder (the images of {instances.name})", images)
    _check_structure(data, instances)
    cats = sorted(data["categories"], key=lambda c: (isinstance(c["id"], str), c["id"]))
    # A category that only groups others (Roboflow's id-0 "dataset name" category,
    # the supercategory of all the rest) and holds no annotation is not a class.
    used = {a.get("category_id") for a in data["annotations"]}
    parents = {str(c.get("supercategory")) for c in cats}
    dropped = [c for c in cats if c["id"] not in used and str(c["name"]) in parents
               and any(str(o.get("supercategory")) == str(c["name"]) and o is not c for o in cats)]
    cats = [c for c in cats if c not in dropped]
    names = [str(c["name"]) for c in cats]
    # (names a labelmap cannot hold: an error naming the category, before anything is written)
    check_class_names(names, [f"category {c['id']}" for c in cats], instances)
    voc = Path(out) / "VOC2012"
    names = match_labelmap(voc, names)  # into an earlier split's folder: its classes, by name
    index = {n: i for i, n in enumerate(names)}
    cat_index = {c["id"]: index[str(c["name"])] for c in cats}
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann.get("image_id")].append(ann)
    # ---- check: names, images, categories (nothing written yet)
    images_sorted = sorted(data["images"], key=lambda im: im["id"])
    unique_ids([(Path(str(im["file_name"])).stem, str(im["file_name"])) for im in images_sorted],
               instances)
    entries, missing = [], []
    skipped = crowd = 0
    for img in images_sorted:
        file_name = str(img["file_name"])
        anns = by_image.get(img["id"], [])
        objs = [a for a in anns if not a.get("iscrowd")]
        if skip_empty and not objs:
            skipped += 1
            continue
        for a in objs:
            if a.get("category_id") not in cat_index:
                raise DatasetError(f"annotation {a.get('id')} of image {file_name}: unknown "
                                   f"category_id {a.get('category_id')}", instances)
        h, w = int(img["height"]), int(img["width"])
        for a in anns:
            _check_annotation(a, h, w, file_name, instances)
        src = find_image(images, file_name)
        if src is None:
            missing.append(file_name)
            src = images / file_name
        objects = [(names[cat_index[a["category_id"]]], voc_box(*(float(v) for v in a["bbox"]), h, w))
                   for a in objs]
        entries.append(Entry(Path(file_name).stem, src, h, w, objects,
                             _painter(anns, objs, cat_index, h, w) if masks else None))
        crowd += len(anns) - len(objs)
    if missing:
        raise DatasetError(f"{len(missing)} of {len(entries)} images of {instances.name} are not in "
                           f"{images} (first: image {', '.join(missing[:3])}); --images is the folder "
                           "that the images' file_name are relative to", images / missing[0])
    check_entries(voc, entries)
    # ---- write
    counts = write_split(voc, split, entries, names, copy=copy, masks=masks)
    # (point clicks, `cls`, and label PNGs use the class index, not COCO's category id)
    class_index = {str(c["id"]): cat_index[c["id"]] for c in cats}
    return {"out": str(voc), "split": split, "classes": names,
            "category_id_to_class_index": class_index, "images": counts["images"],
            "objects": counts["objects"], "crowd": crowd, "skipped_empty": skipped,
            "masks": counts["masks"],
            **({"dropped_categories": [str(c["name"]) for c in dropped]} if dropped else {})}


def _area(a: Dict) -> float:
    """An annotation's area, for the painting order: its own where it is a number,
    else its box's (exports write "area": null or a string now and then)."""
    v = a.get("area")
    if _is_number(v):
        return float(v)
    box = a.get("bbox")
    return float(box[2]) * float(box[3]) if isinstance(box, list) and len(box) == 4 else 0.0


def _painter(anns: List[Dict], objs: List[Dict], cat_index: Dict, h: int, w: int):
    """The label image of one COCO image, painted when written."""
    def paint() -> np.ndarray:
        label = np.zeros((h, w), np.uint8)
        # largest first: a smaller object painted over a larger one stays visible
        for a in sorted(objs, key=lambda a: -_area(a)):
            m = annotation_mask(a, h, w)
            if m is not None:
                label[m] = cat_index[a["category_id"]]
        for a in anns:
            if a.get("iscrowd"):
                m = annotation_mask(a, h, w)
                if m is not None:
                    label[m] = 255
        return label
    return paint
