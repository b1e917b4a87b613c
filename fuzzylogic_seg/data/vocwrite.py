"""Writing the Pascal VOC layout that ``--dataset voc`` reads: the back end of the
converters (`fuzzyseg data coco`, `yolo`, `voc-xml`, `labelme`, `cvat`).

A converter reads and checks its own format, then describes each image as an
:class:`Entry` (its file, size, objects as VOC boxes, and how to paint its
mask, if it has one). :func:`check_entries` refuses what would clash in the
output folder before anything is written; :func:`write_split` writes
``OUT/VOC2012``:

- ``JPEGImages/``: the images, linked (or copied), named by file stem; an
  image with an ``upright`` flag is written turned as displayed (a PNG);
- ``Annotations/ID.xml``: the objects' boxes (1-based, inclusive) and class names;
- ``labelmap.txt``: background, then the classes, with VOC's colours (every
  split converted into one folder must use its classes: :func:`match_labelmap`);
- ``ImageSets/Segmentation/SPLIT.txt``;
- ``SegmentationClass/ID.png`` for the entries that paint a mask.
"""
from __future__ import annotations

import filecmp
import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from ..io import atomic_path, save_index_png, voc_palette

Box = Tuple[float, float, float, float]


@dataclass
class Entry:
    """One image to write: ``objects`` are (class name, VOC box[, difficult]); ``mask`` returns
    its uint8 label image [H, W] (class indices, 255 void), or is None: no mask."""
    image_id: str
    src: Path
    height: int
    width: int
    objects: List[Tuple] = field(default_factory=list)  # (name, box[, difficult])
    mask: Optional[Callable[[], np.ndarray]] = None
    upright: bool = False  # write the image turned by its EXIF orientation
    data: Optional[bytes] = None  # the image's file bytes (embedded in an annotation), not src

    @property
    def target_name(self) -> str:
        return self.image_id + (".png" if self.upright else self.src.suffix.lower())


def voc_box(x: float, y: float, bw: float, bh: float, h: int, w: int) -> Box:
    """A box in pixels from the top-left corner (x, y, width, height), clamped to
    the image and at least one pixel wide, as VOC's 1-based inclusive
    (xmin, ymin, xmax, ymax): xmin = x + 1, xmax = x + width."""
    x0, y0 = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    x1, y1 = min(max(x + bw, x0 + 1.0), float(w)), min(max(y + bh, y0 + 1.0), float(h))
    return (x0 + 1, y0 + 1, x1, y1)


def rotated_bounds(cx: float, cy: float, w: float, h: float, angle: float) -> Box:
    """(x0, y0, x1, y1): the axis-aligned bounds of a w x h box centred at (cx, cy)
    and turned by ``angle`` radians (the rotated boxes of roLabelImg and CVAT)."""
    c, s = math.cos(angle), math.sin(angle)
    xs = [cx + dx * c - dy * s for dx in (-w / 2, w / 2) for dy in (-h / 2, h / 2)]
    ys = [cy + dx * s + dy * c for dx in (-w / 2, w / 2) for dy in (-h / 2, h / 2)]
    return (min(xs), min(ys), max(xs), max(ys))


def annotation_xml(file_name: str, h: int, w: int, objects: Sequence[Tuple]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for name, box, *rest in objects:  # (name, box) or (name, box, difficult)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if rest and rest[0] else "0"
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bnd, tag).text = f"{v:g}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def labelmap_text(names: Sequence[str]) -> str:
    pal = voc_palette()
    lines = ["# label:color_rgb:parts:actions"]
    for i, n in enumerate(names):
        lines.append(f"{n}:{pal[3 * i]},{pal[3 * i + 1]},{pal[3 * i + 2]}::")
    return "\n".join(lines) + "\n"


def check_class_names(names: Sequence[str], where: Sequence[str], source: Path) -> None:
    """``names`` (without background) can be a labelmap's classes: a DatasetError
    naming the offending class (``where[i]`` says where class i comes from)."""
    from .classes import build_class_list

    if "background" in names:
        raise DatasetError("a class is named 'background' (class 0 here): rename it", source)
    build_class_list([("background", None, "class 0")] +
                     [(n, None, w) for n, w in zip(names, where)], str(source), DatasetError)


def match_labelmap(voc: Path, names: Sequence[str], what: str = "categories") -> List[str]:
    """The class list to write with: ``["background", *names]``, or, in a folder
    converted before, its labelmap's classes, which must hold every one of ``names``."""
    from .classes import read_class_file

    labelmap = voc / "labelmap.txt"
    if not labelmap.is_file():
        return ["background", *names]
    before = list(read_class_file(labelmap, DatasetError).names)
    new = [n for n in names if n not in before]
    if new:
        raise DatasetError(f"{voc} holds the classes {', '.join(before[1:])} (an earlier split's); "
                           f"these {what} add {', '.join(new)}: convert the split with all "
                           "the classes first, or into another --out", labelmap)
    return before


def unique_ids(pairs: Sequence[Tuple[str, str]], source: Path) -> None:
    """(image id, file name) pairs: two images of one id are refused (VOC names an
    image by its file stem)."""
    seen: Dict[str, str] = {}
    for image_id, name in pairs:
        if image_id in seen:
            raise DatasetError(f"images {seen[image_id]} and {name} have one name {image_id!r} "
                               "(VOC names an image by its file stem)", source)
        seen[image_id] = name


def check_entries(voc: Path, entries: Sequence[Entry]) -> None:
    """Nothing written over: an image already in JPEGImages under an entry's name
    must be that entry's image. No entry at all (every image skipped) is an error."""
    if not entries:
        raise DatasetError("no image left to write (every image was skipped as empty?)", voc.parent)
    folder = voc / "JPEGImages"
    present: Dict[str, List[Path]] = {}  # (listed once: a glob an entry reads the folder n times)
    for p in (folder.iterdir() if folder.is_dir() else ()):
        present.setdefault(p.stem, []).append(p)
    for e in entries:
        dst = folder / e.target_name
        other = next((p for p in present.get(e.image_id, ()) if p.name != dst.name), None)
        if other is not None:
            raise DatasetError(f"{other.name} in {voc / 'JPEGImages'} has the id {e.image_id!r} of {e.src} "
                               "(two images of one name, e.g. in two splits): convert into another "
                               "--out, or rename one", other)
        if e.data is not None:
            same = not dst.exists() or dst.read_bytes() == e.data
        else:
            same = not dst.exists() or (_same_upright(dst, e.src) if e.upright else _same_file(dst, e.src))
        if not same:
            raise DatasetError(f"{dst.name} in {voc / 'JPEGImages'} is another image than {e.src} "
                               "(two images of one name, e.g. in two splits): convert into another "
                               "--out, or rename one", dst)


def write_split(voc: Path, split: str, entries: Sequence[Entry], names: Sequence[str], *,
                copy: bool = False, masks: bool = False) -> Dict[str, int]:
    """Write ``entries`` as split ``split`` of ``voc`` (module doc); ``masks``:
    create SegmentationClass even if no entry paints one. Returns counts."""
    labelmap = voc / "labelmap.txt"
    if not labelmap.is_file():
        voc.mkdir(parents=True, exist_ok=True)
        with atomic_path(labelmap) as tmp:
            tmp.write_text(labelmap_text(names), encoding="utf-8")
    dirs = ["JPEGImages", "Annotations", "ImageSets/Segmentation"]
    if masks or any(e.mask is not None for e in entries):
        dirs.append("SegmentationClass")
    for d in dirs:
        (voc / d).mkdir(parents=True, exist_ok=True)
    counts = {"images": 0, "objects": 0, "masks": 0}
    for e in entries:
        dst = voc / "JPEGImages" / e.target_name
        if dst.is_symlink() and not dst.exists():
            dst.unlink()  # (a link to an image moved since)
        if e.data is not None:
            with atomic_path(dst) as tmp:
                tmp.write_bytes(e.data)
        elif e.upright:
            _write_upright(e.src, dst)
        elif not dst.exists():
            if copy:
                shutil.copyfile(e.src, dst)
            else:
                os.symlink(e.src.resolve(), dst)
        with atomic_path(voc / "Annotations" / f"{e.image_id}.xml") as tmp:
            tmp.write_bytes(annotation_xml(dst.name, e.height, e.width, e.objects))
        mask_png = voc / "SegmentationClass" / f"{e.image_id}.png"
        if e.mask is not None:
            save_index_png(e.mask(), mask_png, palette=voc_palette())
            counts["masks"] += 1
        elif mask_png.is_file():  # (an earlier conversion's mask: this one has none)
            mask_png.unlink()
        counts["images"] += 1
        counts["objects"] += len(e.objects)
    with atomic_path(voc / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
        tmp.write_text("".join(f"{e.image_id}\n" for e in entries), encoding="utf-8")
    return counts


def find_image(folder: Path, name: str, subfolders: Sequence[str] = ()) -> Optional[Path]:
    """An annotation's image ``name``: under ``folder``, else under one of its
    ``subfolders``, else by its base name there (exports that write an absolute or
    upload path, e.g. Label Studio's); None where none is a file."""
    tries = [folder / name] + [folder / s / name for s in subfolders if s] + [folder / Path(name).name]
    return next((p for p in tries if p.is_file()), None)


def displayed_size(path: Path) -> Tuple[int, int, bool]:
    """(H, W) of an image as displayed, and whether its EXIF orientation turns the
    stored pixels (annotation tools draw on the displayed image)."""
    from .base import image_size

    h, w = image_size(path)
    o = exif_orientation(path)
    return (w, h, True) if o in (5, 6, 7, 8) else (h, w, o not in (0, 1))


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of an image file (1: stored as displayed)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # (no EXIF to read)
        return 1


def _write_upright(src: Path, dst: Path) -> None:
    from PIL import Image, ImageOps

    with Image.open(src) as img:
        up = ImageOps.exif_transpose(img)
        if up.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            up = up.convert("RGB")  # (CMYK, YCbCr: PNG cannot hold them)
        with atomic_path(dst) as tmp:
            up.save(tmp, format="PNG")


def _same_upright(dst: Path, src: Path) -> bool:
    """`dst` holds the pixels of `src` turned upright (as :func:`_write_upright` writes)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as a, Image.open(dst) as b:
            return np.array_equal(np.asarray(ImageOps.exif_transpose(a)), np.asarray(b))
    except OSError:
        return False


def _same_file(dst: Path, src: Path) -> bool:
    """`dst` (in JPEGImages) is `src`: a link to it, or a copy of it."""
    try:
        return os.path.samefile(dst, src) or filecmp.cmp(dst, src, shallow=False)
    except OSError:
        return False
