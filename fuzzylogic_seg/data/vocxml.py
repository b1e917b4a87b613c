"""A folder of images and Pascal VOC XML files -> the VOC layout
(`fuzzyseg data voc-xml`).

What box annotators save when they save "Pascal VOC" without the VOCdevkit
folders: LabelImg writes each image's ``NAME.xml`` beside the image (or into a
folder of its own, ``--annotations``), Roboflow's and makesense.ai's Pascal VOC
exports put a split's images and XML files in one folder. One call converts
one folder into split ``--split`` of ``OUT/VOC2012`` (through the writer shared
with the other converters, :mod:`.vocwrite`):

- an image's XML file is the one of its file stem; an image without one has
  no object (LabelImg saves nothing for an image left without boxes); an XML
  file without its image is an error;
- the classes are ``--classes`` (a comma list or a file), else
  ``predefined_classes.txt`` / ``classes.txt`` in the folder (LabelImg's class
  list), else the object names found, sorted; a folder converted before keeps
  its labelmap's classes;
- boxes are read as VOC's (1-based, inclusive) and clamped to the image (a
  tool that writes 0-based or one pixel past the border is not an error);
  roLabelImg's rotated boxes (``<robndbox>``) give the box of their corners;
- an XML ``<size>`` that is the image's displayed size but not its stored one
  (a photo turned by its EXIF orientation, annotated as displayed) writes the
  image upright; any other disagreement is an error naming the file.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DatasetError
from .base import IMAGE_SUFFIXES, PathLike, image_size
from .vocwrite import (Entry, check_class_names, check_entries, exif_orientation, match_labelmap,
                       rotated_bounds, unique_ids, voc_box, write_split)

CLASS_FILES = ("predefined_classes.txt", "classes.txt")


def read_xml(path: Path) -> Tuple[Optional[Tuple[int, int]], List[Tuple[str, Tuple[float, ...], bool]]]:
    """(<size> as (H, W), or None where missing or 0; [(name, (xmin, ymin, xmax, ymax),
    difficult)])."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"cannot read the XML file ({e})", path) from None
    if root.tag != "annotation":
        raise DatasetError(f"not a Pascal VOC annotation (its root is <{root.tag}>)", path)
    size = None
    s = root.find("size")
    if s is not None:
        try:
            h, w = int(float(s.findtext("height"))), int(float(s.findtext("width")))
        except (TypeError, ValueError):
            raise DatasetError("bad <size> (need numeric <width> and <height>)", path) from None
        size = (h, w) if h > 0 and w > 0 else None
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {k} ({name or 'no name'})"
        if not name:
            raise DatasetError(f"{where}: no <name>", path)
        try:
            if obj.find("bndbox") is None and obj.find("robndbox") is not None:
                box = _rotated_box(obj.find("robndbox"))
            else:
                box = tuple(float(obj.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{where}: <bndbox> needs numeric xmin ymin xmax ymax (or "
                               "roLabelImg's <robndbox> cx cy w h angle)", path) from None
        if not all(math.isfinite(v) for v in box):
            raise DatasetError(f"{where}: a box coordinate is not finite: {box}", path)
        if box[0] > box[2] or box[1] > box[3]:
            raise DatasetError(f"{where}: empty box (xmin {box[0]:g} > xmax {box[2]:g} or ymin "
                               f"{box[1]:g} > ymax {box[3]:g})", path)
        objects.append((name, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return size, objects


def _rotated_box(rb) -> Tuple[float, ...]:
    """roLabelImg's rotated box (centre, size, angle in radians, pixel coordinates)
    -> the VOC box (1-based, inclusive) of its four corners."""
    x0, y0, x1, y1 = rotated_bounds(*(float(rb.findtext(t)) for t in ("cx", "cy", "w", "h", "angle")))
    return (x0 + 1, y0 + 1, x1, y1)


def convert_voc_xml(folder: PathLike, out: PathLike, split: str, *,
                    annotations: Optional[PathLike] = None,
                    classes: Union[None, str, Path, Sequence[str]] = None,
                    copy: bool = False, skip_empty: bool = False) -> Dict:
    """Convert a folder of images (and their XML files) into OUT/VOC2012 (module
    doc); everything is read and checked before anything is written."""
    from .classes import parse_classes, read_class_file

    folder = Path(folder)
    xml_dir = Path(annotations) if annotations else folder
    for d, what in ((folder, "images"), (xml_dir, "--annotations")):
        if not d.is_dir():
            raise DatasetError(f"no such folder ({what})", d)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", folder)
    unique_ids([(p.stem, str(p.relative_to(folder))) for p in images], folder)

    def xml_of(img: Path) -> Optional[Path]:
        # beside the image, else in --annotations (LabelImg's save folder is flat), or
        # there under the image's own subfolder
        rel = img.relative_to(folder).with_suffix(".xml")
        return next((x for x in (img.with_suffix(".xml"), xml_dir / f"{img.stem}.xml", xml_dir / rel)
                     if x.is_file()), None)

    stems = {p.stem for p in images}
    orphans = sorted({str(p.relative_to(d)) for d in {folder, xml_dir} for p in d.rglob("*.xml")
                      if p.stem not in stems})
    if orphans:
        raise DatasetError(f"{len(orphans)} XML files have no image of their name in {folder} "
                           f"(first: {', '.join(orphans[:3])})", xml_dir / orphans[0])
    xmls = [xml_of(img) for img in images]
    if not any(xmls):
        raise DatasetError(f"no XML file for any of the {len(images)} images (looked beside them"
                           + (f" and in {xml_dir})" if annotations else "): --annotations DIR names "
                              "the folder of the XML files"), folder)
    read = [(img, x, *(read_xml(x) if x else (None, []))) for img, x in zip(images, xmls)]
    found = sorted({o[0] for *_, objs in read for o in objs})
    explicit = parse_classes(classes, DatasetError) if classes is not None else None
    if explicit is None:
        class_file = next((d / n for d in (folder, xml_dir) for n in CLASS_FILES if (d / n).is_file()), None)
        if class_file is not None:
            explicit = read_class_file(class_file, DatasetError)
    names = list(explicit.names[1:]) if explicit is not None else found
    if explicit is None:
        check_class_names(names, [f"object name {n!r}" for n in names], folder)
    unknown = [n for n in found if n not in names]
    if unknown:
        first = next(x for img, x, _, objs in read if any(o[0] == unknown[0] for o in objs))
        raise DatasetError(f"unknown class name {unknown[0]!r} (all unknown: {', '.join(unknown)}); "
                           f"the classes ({explicit.source}) are {', '.join(names)}", first)
    voc = Path(out) / "VOC2012"
    all_names = match_labelmap(voc, names, "classes")
    entries: List[Entry] = []
    counts = {"without_xml": 0, "skipped_empty": 0, "upright": 0}
    for img, xml, size, objs in read:
        if not objs and skip_empty:
            counts["skipped_empty"] += 1
            continue
        counts["without_xml"] += xml is None
        h, w = image_size(img)
        upright = False
        if size is not None and size != (h, w):
            if size == (w, h) and exif_orientation(img) in (5, 6, 7, 8):
                h, w, upright = w, h, True  # annotated as displayed: written as displayed
            else:
                raise DatasetError(f"<size> says {size[1]}x{size[0]} but the image {img.name} is "
                                   f"{w}x{h} (WxH): not this image's annotation?", xml)
        for k, (n, (x0, y0, x1, y1), _) in enumerate(objs):
            # a pixel past the border is a tool's rounding; more is another image's box
            if x0 < 0 or y0 < 0 or x1 > w + 1 or y1 > h + 1:
                raise DatasetError(f"object {k} ({n}): box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies "
                                   f"outside the {w}x{h} image (VOC boxes are 1-based, inclusive)", xml)
        objects = [(n, voc_box(x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1, h, w), hard)
                   for n, (x0, y0, x1, y1), hard in objs]
        counts["upright"] += upright
        entries.append(Entry(img.stem, img, h, w, objects, None, upright=upright))
    check_entries(voc, entries)
    written = write_split(voc, split, entries, all_names, copy=copy)
    return {"out": str(voc), "split": split, "classes": all_names, **written, **counts}
