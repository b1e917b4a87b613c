"""Pascal VOC 2012 segmentation in its published layout (docs/DATA.md).

ROOT may be the folder holding `VOCdevkit`, `VOCdevkit` itself, or `VOC2012`.
Split lists are read from `ImageSets/Segmentation/SPLIT.txt` (also
`ImageSets/SegmentationAug/` and VOC2012/SPLIT.txt for SBD's `train_aug`, then
`ImageSets/Main/SPLIT.txt`, where boxes-only exports put them);
a list line may be an ID or the SBD form `/JPEGImages/ID.jpg /Seg.../ID.png`.
Masks come from `SegmentationClass/ID.png` (for a split whose name contains
"aug": `SegmentationClassAug/` first). Real weak labels: XML boxes and tags
from `Annotations/ID.xml`; scribbles from `scribble_dir/ID.png` when given.

The classes are the 21 Pascal VOC ones unless `classes=` or a `labelmap.txt`
in the VOC2012 folder names others (a practitioner's own data exported by
CVAT, datumaro, LabelImg, ...; :mod:`fuzzylogic_seg.data.classes`).
"""
from __future__ import annotations

import math

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DatasetError
from ..io import VOC_CLASSES
from .base import IMAGE_SUFFIXES, Item, PathLike, SegDataset, _open, find_file, read_index_png
from .classes import VOC, ClassList, resolve_classes

CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
NUM_CLASSES = len(VOC_CLASSES)


def resolve_root(root: PathLike) -> Path:
    """The VOC2012 folder under ROOT (ROOT, ROOT/VOC2012 or ROOT/VOCdevkit/VOC2012)."""
    root = Path(root)
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    hint = ""
    if root.is_dir():
        files = [p for p in root.iterdir() if p.is_file()]
        n_xml = sum(p.suffix.lower() == ".xml" for p in files)
        n_img = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in files)
        n_json = sum(p.suffix.lower() == ".json" for p in files)
        yaml = next((p for p in sorted(files) if p.suffix.lower() in (".yaml", ".yml")), None)
        # other tools' exports: name the converter that reads them
        if yaml is not None or (root / "obj.data").is_file():
            src = yaml or root / "obj.data"
            hint = (f" (it holds {src.name}, as a YOLO data set does: `fuzzyseg data yolo {src} "
                    "--split train --out NEW_ROOT` writes the VOC layout from it)")
        elif (root / "annotations.xml").is_file():
            hint = (" (it holds annotations.xml, as CVAT's own export does: `fuzzyseg data cvat "
                    f"{root / 'annotations.xml'} --images {root / 'images'} --split train --out "
                    "NEW_ROOT` writes the VOC layout from it)")
        elif n_json and n_img:
            hint = (f" (it holds {n_img} images and {n_json} JSON files, as LabelMe saves them: "
                    f"`fuzzyseg data labelme {root} --split train --out NEW_ROOT` writes the VOC "
                    "layout from them; COCO's one JSON file converts with `fuzzyseg data coco`)")
        elif n_xml and n_img:  # LabelImg's layout: photos and their XML files side by side
            hint = (f" (it holds {n_img} images and {n_xml} XML files side by side, as LabelImg "
                    f"and Roboflow save them: `fuzzyseg data voc-xml {root} --split train --out "
                    "NEW_ROOT` writes the VOC layout from them)")
        elif (root / "SegmentationClass").is_dir():
            hint = (" (it holds SegmentationClass/ but no images, as a masks-only export does: "
                    "copy SegmentationClass/ and ImageSets/Segmentation/ into the folder that "
                    "has JPEGImages/)")
    raise DatasetError("not a Pascal VOC folder: expected VOCdevkit/VOC2012/JPEGImages, "
                       "VOC2012/JPEGImages or JPEGImages under it" + hint, root)


def split_file(voc: Path, split: str) -> Path:
    """The list of `split`: ImageSets/Segmentation/ first, then SBD's places, then
    ImageSets/Main/ (where a boxes-only export, e.g. CVAT's "PASCAL VOC 1.1", puts it)."""
    cands = [voc / "ImageSets" / "Segmentation" / f"{split}.txt",
             voc / "ImageSets" / "SegmentationAug" / f"{split}.txt",
             voc / f"{split}.txt",
             voc / "ImageSets" / "Main" / f"{split}.txt"]
    for c in cands:
        if c.is_file():
            return c
    raise DatasetError(f"no list for split {split!r} (looked for "
                       f"{', '.join(str(c.relative_to(voc)) for c in cands)}); a split list is one "
                       f"image id (file name without extension) a line (`fuzzyseg data split ROOT` "
                       f"writes train and val)", cands[0])


def main_splits(voc: Path, class_names: Sequence[str] = ()) -> List[str]:
    """The split lists of ImageSets/Main/ (train, val, default, ...), without VOC's and
    datumaro's per-class lists (CLASS_SPLIT.txt)."""
    d = voc / "ImageSets" / "Main"
    stems = {p.stem for p in d.glob("*.txt")} if d.is_dir() else set()
    names = set(class_names) | set(VOC_CLASSES)
    return sorted(s for s in stems if not (
        "_" in s and (s.rsplit("_", 1)[1] in stems or s.rsplit("_", 1)[0] in names)))


def image_path(voc: Path, image_id: str) -> Path:
    """JPEGImages/ID.jpg, or the image of that id with another extension (.JPG, .jpeg,
    .png: annotation tools keep the photos' own file names)."""
    path = voc / "JPEGImages" / f"{image_id}.jpg"
    if path.is_file():
        return path
    return find_file(voc / "JPEGImages", image_id, IMAGE_SUFFIXES) or path


def read_split_list(path: PathLike) -> List[str]:
    """IDs of a split list; empty lists and duplicates are errors naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split list ({exc})", path) from exc
    ids, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()[0]
        # SBD lists name files ("/JPEGImages/ID.jpg ..."); plain lists name IDs
        is_file = "/" in tok or Path(tok).suffix.lower() in IMAGE_SUFFIXES
        image_id = Path(tok).stem if is_file else tok
        if image_id in seen:
            raise DatasetError(f"line {lineno}: duplicate image id {image_id!r}", path)
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        raise DatasetError("empty split list", path)
    return ids


def mask_dirs(voc: Path, split: str) -> List[Path]:
    plain, aug = voc / "SegmentationClass", voc / "SegmentationClassAug"
    return [aug, plain] if "aug" in split.lower() else [plain, aug]


# --------------------------------------------------------------------- XML
@dataclass
class VOCObject:
    name: str
    label: int
    box: Tuple[float, float, float, float]   # half-open x0, y0, x1, y1
    difficult: bool = False
    truncated: bool = False


def parse_annotation(path: PathLike, size: Optional[Tuple[int, int]] = None,
                     problems: Optional[List[str]] = None, classes: ClassList = VOC,
                     unknown: Optional[List[str]] = None
                     ) -> Tuple[Optional[Tuple[int, int]], List[VOCObject]]:
    """(size (H, W) from <size> or None, objects) of a VOC XML file.

    Boxes are checked against `size` (the image's real size) or else the
    XML's own <size>: 1 <= xmin <= xmax <= W, likewise for y (1-based,
    inclusive), and converted to half-open 0-based coordinates. The first
    problem raises a DatasetError naming the file, unless a `problems` list is
    given: then every problem is appended to it and bad objects are skipped.
    Object names must be among `classes` (background excluded); the unknown ones are
    also appended to `unknown` when given (`data check` sums them up).
    """
    path = Path(path)
    index = CLASS_INDEX if classes.is_voc else classes.index

    def fail(msg):
        if problems is None:
            raise DatasetError(msg, path)
        problems.append(msg)

    if not path.is_file():
        fail("missing annotation")
        return None, []
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        fail(f"cannot read annotation ({exc})")
        return None, []
    root = tree.getroot()
    xml_size = None
    s = root.find("size")
    if s is not None:
        try:
            xml_size = (int(float(s.findtext("height"))), int(float(s.findtext("width"))))
        except (TypeError, ValueError):
            fail("bad <size> (need numeric <width> and <height>)")
    if size is not None and xml_size is not None and problems is not None and \
            tuple(xml_size) != tuple(size):
        problems.append(f"<size> says {xml_size[1]}x{xml_size[0]} but the image is "
                        f"{size[1]}x{size[0]}")
    h, w = size if size is not None else (xml_size if xml_size is not None else (None, None))
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {k} ({name or 'no name'})"
        if name not in index or name == "background":
            if unknown is not None:
                unknown.append(name)
            fail(f"{where}: unknown class name {name!r}; " + (
                f"VOC names are {', '.join(VOC_CLASSES[1:])} (for classes of your own: "
                f"--classes NAME,NAME,... or a labelmap.txt)" if classes.is_voc else
                f"the classes ({classes.source}) are {', '.join(classes.names[1:])}"))
            continue
        bb = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            fail(f"{where}: <bndbox> needs numeric xmin ymin xmax ymax")
            continue
        if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
            fail(f"{where}: a <bndbox> coordinate is not a finite number")
            continue
        if xmin > xmax or ymin > ymax:
            fail(f"{where}: empty box (xmin {xmin:g} > xmax {xmax:g} or ymin {ymin:g} > "
                 f"ymax {ymax:g})")
            continue
        if w is not None and (xmin < 1 or ymin < 1 or xmax > w or ymax > h):
            fail(f"{where}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the {w}x{h} "
                 f"image (VOC boxes are 1-based, inclusive)")
            continue
        objects.append(VOCObject(
            name=name, label=index[name], box=(xmin - 1, ymin - 1, xmax, ymax),
            difficult=(obj.findtext("difficult") or "0").strip() == "1",
            truncated=(obj.findtext("truncated") or "0").strip() == "1"))
    return xml_size, objects


def read_class_png(path: PathLike, classes: ClassList = VOC, what: str = "mask") -> np.ndarray:
    """A label PNG -> uint8 [H, W] of class indices, unchecked: a palette or grey PNG
    of indices, or, when `classes` has labelmap colours, an RGB(A) PNG whose
    colours are mapped to their classes (VOC's void colour 224,224,192 -> 255);
    a colour that is no class's is an error naming it."""
    if not classes.has_colors:
        return read_index_png(path, what)
    img = _open(path, what)
    if img.mode not in ("RGB", "RGBA"):
        return read_index_png(path, what)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: i for (r, g, b), i in classes.color_index().items()}
    uniq, inv = np.unique(code, return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in table]
    if unknown:
        cols = ", ".join(f"({u >> 16},{(u >> 8) & 255},{u & 255})" for u in unknown[:5])
        raise DatasetError(f"{what} has colour(s) {cols} that no class of {classes.source} has "
                           f"({len(unknown)} unknown colour(s) in all)", path)
    lut = np.array([table[int(u)] for u in uniq], dtype=np.uint8)
    return lut[inv.reshape(code.shape)]


def bad_values(arr: np.ndarray, num_classes: int) -> List[int]:
    """Label values that are neither a class index nor 255 (the first five)."""
    bad = (arr >= num_classes) & (arr != 255)
    return sorted(set(np.unique(arr[bad]).tolist()))[:5] if bad.any() else []


def labels_from_png(path: PathLike, classes: ClassList = VOC) -> torch.Tensor:
    """A VOC class PNG -> LongTensor [H, W] (0..C-1, 255 void); other values are errors."""
    arr = read_class_png(path, classes)
    vals = bad_values(arr, len(classes))
    if vals:
        raise DatasetError(f"mask has values {vals} outside 0..{len(classes) - 1} and 255"
                           + ("" if classes.is_voc else f" (the {len(classes)} classes of "
                              f"{classes.source})"), path)
    return torch.from_numpy(arr.astype(np.int64))


# ------------------------------------------------------------------ dataset
class VOCSegmentation(SegDataset):
    """Pascal VOC 2012 segmentation (see the module docstring).

    Parameters beyond `SegDataset`'s: `scribble_dir` (real scribble PNGs, e.g.
    ScribbleSup converted), `include_difficult` (keep XML objects marked
    difficult as boxes; default True: every instance is an object),
    `classes` (the class list: a list of names, a comma list or a class file;
    default: ``labelmap.txt`` in the VOC2012 folder if there is one, else the
    21 VOC classes; :mod:`fuzzylogic_seg.data.classes`), `points_file` (real
    point clicks, "What's the Point" JSON: :mod:`fuzzylogic_seg.data.points`)
    with `point_max_rank` (keep each annotator's first N clicks).
    """

    name = "voc"
    classes = VOC_CLASSES

    def __init__(self, root: PathLike, split: str = "train", *, scribble_dir: Optional[PathLike] = None,
                 include_difficult: bool = True, ids: Optional[Sequence[str]] = None,
                 classes=None, points_file: Optional[PathLike] = None,
                 point_max_rank: Optional[int] = None, **kw):
        voc = resolve_root(root)
        self.class_list = resolve_classes(voc, classes)
        if not self.class_list.is_voc:  # (else the class attribute, as before)
            self.classes = self.class_list.names
        self.points_file = None if points_file is None else Path(points_file)
        self.clicks = None
        if self.points_file is not None:
            from .points import read_points

            self.clicks = read_points(self.points_file, self.class_list.names, point_max_rank)
        if ids is None:
            ids = read_split_list(split_file(voc, split))
        self.voc_dir = voc
        self.scribble_dir = None if scribble_dir is None else Path(scribble_dir)
        self.include_difficult = include_difficult
        dirs = mask_dirs(voc, split)
        items = []
        for image_id in ids:
            mask = next((d / f"{image_id}.png" for d in dirs if (d / f"{image_id}.png").is_file()),
                        dirs[0] / f"{image_id}.png")
            items.append(Item(
                id=image_id, image=image_path(voc, image_id), mask=mask,
                annotation=voc / "Annotations" / f"{image_id}.xml",
                scribble=None if self.scribble_dir is None else self.scribble_dir / f"{image_id}.png"))
        missing = [it.image for it in items if not it.image.is_file()]
        if missing:
            raise DatasetError(f"missing image ({len(missing)} of split {split!r} missing)", missing[0])
        super().__init__(items, root=root, split=split, **kw)

    def default_kinds(self) -> Tuple[str, ...]:
        return ("boxes", "tags") + (("scribbles",) if self.scribble_dir is not None else ()) \
            + (("points",) if self.clicks is not None else ())

    def read_labels(self, item: Item) -> torch.Tensor:
        return labels_from_png(item.mask, self.class_list)

    def objects(self, i: int, size: Optional[Tuple[int, int]] = None) -> List[VOCObject]:
        item = self.items[i]
        _, objs = parse_annotation(item.annotation, size, classes=self.class_list)
        return [o for o in objs if self.include_difficult or not o.difficult]

    def real_weak(self, item: Item, size: Tuple[int, int], kinds: Sequence[str]) -> Dict:
        out: Dict = {}
        if "boxes" in kinds or "tags" in kinds:
            _, objs = parse_annotation(item.annotation, size, classes=self.class_list)
            objs = [o for o in objs if self.include_difficult or not o.difficult]
            if "boxes" in kinds:
                out["boxes"] = torch.tensor([o.box for o in objs], dtype=torch.float32).reshape(-1, 4)
                out["box_labels"] = torch.tensor([o.label for o in objs], dtype=torch.long)
            if "tags" in kinds:
                tags = torch.zeros(self.num_classes, dtype=torch.bool)
                tags[[o.label for o in objs]] = True
                out["tags"] = tags
        if "scribbles" in kinds and item.scribble is not None:
            arr = read_index_png(item.scribble, "scribble")
            if arr.shape != tuple(size):
                raise DatasetError(f"scribble is {arr.shape[1]}x{arr.shape[0]} but the image is "
                                   f"{size[1]}x{size[0]}", item.scribble)
            if bad_values(arr, self.num_classes):
                raise DatasetError(f"scribble has values outside 0..{self.num_classes - 1} and 255",
                                   item.scribble)
            out["scribble"] = torch.from_numpy(arr.astype(np.int64))
        if "points" in kinds and self.clicks is not None:
            from .points import check_clicks

            if item.id not in self.clicks:
                raise DatasetError(f"no clicks for image {item.id} (every image of the split needs "
                                   "an entry, [] for none)", self.points_file)
            check_clicks(self.clicks[item.id], size, item.id, self.points_file)
            out["points"], out["point_labels"] = (t.clone() for t in self.clicks[item.id])
        return out
