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

import os
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import DatasetError
from ..io import atomic_path, save_index_png, voc_palette
from .base import PathLike, read_json


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
    seg = a.get("segmentation")
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                fail("a polygon must be a list of finite x, y numbers, got "
                     f"{str(poly)[:60]}")
    elif isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size")
        if size is not None and list(size) != [h, w]:
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
def _xml(image_id: str, file_name: str, h: int, w: int, objects: List[Dict]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for o in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = o["name"]
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"]):
            ET.SubElement(box, tag).text = f"{v:g}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _labelmap(names: Sequence[str]) -> str:
    pal = voc_palette()
    lines = ["# label:color_rgb:parts:actions"]
    for i, n in enumerate(names):
        lines.append(f"{n}:{pal[3 * i]},{pal[3 * i + 1]},{pal[3 * i + 2]}::")
    return "\n".join(lines) + "\n"


def _find_image(images: Path, file_name: str) -> Optional[Path]:
    """`file_name` under `images`, else its base name there (exports that write an
    absolute or upload path, e.g. Label Studio's), else None."""
    for p in (images / file_name, images / Path(file_name).name):
        if p.is_file():
            return p
    return None


def convert_coco(instances: PathLike, images: PathLike, out: PathLike, split: str, *,
                 masks: bool = True, copy: bool = False, skip_empty: bool = False) -> Dict:
    """Convert one COCO split into OUT/VOC2012 (module doc); returns a summary.

    Everything is checked before anything is written (the images all found, every
    category known). Into a folder converted before, the categories are matched by
    name to its labelmap.txt: a split may hold fewer categories, or number them
    otherwise, than the first; a category the folder has not is an error."""
    from .classes import build_class_list, read_class_file

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
    names = ["background"] + [str(c["name"]) for c in cats]
    if "background" in names[1:]:
        raise DatasetError("a category is named 'background' (class 0 here): rename it", instances)
    # (names a labelmap cannot hold: an error naming the category, before anything is written)
    build_class_list([(n, None, f"category {c['id']}") for n, c in zip(names[1:], cats)],
                     str(instances), DatasetError)
    voc = Path(out) / "VOC2012"
    labelmap = voc / "labelmap.txt"
    if labelmap.is_file():  # an earlier split's classes: match these categories by name
        before = list(read_class_file(labelmap, DatasetError).names)
        new = [n for n in names[1:] if n not in before]
        if new:
            raise DatasetError(f"{voc} holds the classes {', '.join(before[1:])} (an earlier split's); "
                               f"these categories add {', '.join(new)}: convert the split with all "
                               "the categories first, or into another --out", labelmap)
        names = before
    index = {n: i for i, n in enumerate(names)}
    cat_index = {c["id"]: index[str(c["name"])] for c in cats}
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann.get("image_id")].append(ann)
    # ---- check: names, images, categories (nothing written yet)
    todo, seen, missing = [], {}, []
    skipped = 0
    for img in sorted(data["images"], key=lambda im: im["id"]):
        file_name = str(img["file_name"])
        image_id = Path(file_name).stem
        if image_id in seen:
            raise DatasetError(f"images {seen[image_id]} and {file_name} have one name {image_id!r} "
                               "(VOC names an image by its file stem)", instances)
        seen[image_id] = file_name
        anns = by_image.get(img["id"], [])
        objs = [a for a in anns if not a.get("iscrowd")]
        if skip_empty and not objs:
            skipped += 1
            continue
        for a in objs:
            if a.get("category_id") not in cat_index:
                raise DatasetError(f"annotation {a.get('id')} of image {file_name}: unknown "
                                   f"category_id {a.get('category_id')}", instances)
        for a in anns:
            _check_annotation(a, int(img["height"]), int(img["width"]), file_name, instances)
        src = _find_image(images, file_name)
        if src is None:
            missing.append(file_name)
            src = images / file_name
        todo.append((img, image_id, src, anns, objs))
    if missing:
        raise DatasetError(f"{len(missing)} of {len(todo)} images of {instances.name} are not in "
                           f"{images} (first: image {', '.join(missing[:3])}); --images is the folder "
                           "that the images' file_name are relative to", images / missing[0])
    for image_id, src in ((t[1], t[2]) for t in todo):
        dst = voc / "JPEGImages" / (image_id + src.suffix.lower())
        if dst.exists() and not _same_file(dst, src):
            raise DatasetError(f"{dst.name} in {voc / 'JPEGImages'} is another image than {src} "
                               "(two images of one name, e.g. in two splits): convert into another "
                               "--out, or rename one", dst)
    # ---- write
    if not labelmap.is_file():
        voc.mkdir(parents=True, exist_ok=True)
        with atomic_path(labelmap) as tmp:
            tmp.write_text(_labelmap(names), encoding="utf-8")
    counts = {"images": 0, "objects": 0, "crowd": 0, "skipped_empty": skipped, "masks": 0}
    for d in ("JPEGImages", "Annotations", "ImageSets/Segmentation") + (("SegmentationClass",) if masks else ()):
        (voc / d).mkdir(parents=True, exist_ok=True)
    ids = []
    for img, image_id, src, anns, objs in todo:
        file_name = str(img["file_name"])
        h, w = int(img["height"]), int(img["width"])
        objects = []
        for a in objs:
            x, y, bw, bh = (float(v) for v in a["bbox"])
            x0, y0 = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
            x1, y1 = min(max(x + bw, x0 + 1.0), float(w)), min(max(y + bh, y0 + 1.0), float(h))
            objects.append({"name": names[cat_index[a["category_id"]]], "box": (x0 + 1, y0 + 1, x1, y1)})
        dst = voc / "JPEGImages" / (image_id + src.suffix.lower())
        if dst.is_symlink() and not dst.exists():
            dst.unlink()  # (a link to an image moved since)
        if not dst.exists():
            if copy:
                shutil.copyfile(src, dst)
            else:
                os.symlink(src.resolve(), dst)
        with atomic_path(voc / "Annotations" / f"{image_id}.xml") as tmp:
            tmp.write_bytes(_xml(image_id, dst.name, h, w, objects))
        if masks:
            label = np.zeros((h, w), np.uint8)
            # largest first: a smaller object painted over a larger one stays visible
            for a in sorted(objs, key=lambda a: -float(a.get("area") or 0.0)):
                m = annotation_mask(a, h, w)
                if m is not None:
                    label[m] = cat_index[a["category_id"]]
            for a in anns:
                if a.get("iscrowd"):
                    m = annotation_mask(a, h, w)
                    if m is not None:
                        label[m] = 255
            save_index_png(label, voc / "SegmentationClass" / f"{image_id}.png",
                           palette=voc_palette())
            counts["masks"] += 1
        ids.append(image_id)
        counts["images"] += 1
        counts["objects"] += len(objects)
        counts["crowd"] += len(anns) - len(objs)
    with atomic_path(voc / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    # (point clicks, `cls`, and label PNGs use the class index, not COCO's category id)
    class_index = {str(c["id"]): cat_index[c["id"]] for c in cats}
    return {"out": str(voc), "split": split, "classes": names,
            "category_id_to_class_index": class_index, **counts,
            **({"dropped_categories": [str(c["name"]) for c in dropped]} if dropped else {})}


def _same_file(dst: Path, src: Path) -> bool:
    """`dst` (in JPEGImages) is `src`: a link to it, or a copy of it."""
    import filecmp

    try:
        return os.path.samefile(dst, src) or filecmp.cmp(dst, src, shallow=False)
    except OSError:
        return False
