"""YOLO labels -> the Pascal VOC layout this package reads (`fuzzyseg data yolo`).

The YOLO format of Ultralytics (YOLOv5/v8/11) and of the YOLO exports of
Roboflow, CVAT, Label Studio and LabelImg: one text file per image, a line per
object, the class index and then numbers relative to the image's (displayed)
width and height, in [0, 1]:

- ``CLASS CX CY W H``: a box, centre and size;
- ``CLASS X1 Y1 X2 Y2 ... XN YN``: a polygon (Ultralytics' segmentation
  labels), whose bounding box is the object's box and whose area its mask;
- with ``kpt_shape`` in the data set's YAML (pose labels), the box and then
  the keypoints, which are dropped.

Where things are (as Ultralytics finds them): a data set YAML names the
class list (``names``: a list, or a mapping from index to name) and the
splits (``train``, ``val``, ``test``: a folder of images, a text file listing
images, or a list of those), relative to its ``path``, else to the YAML's
own folder (a leading ``../``, as Roboflow writes, is also tried without).
A split's label files are found by replacing the last ``images`` folder of
each image's path with ``labels`` (``images/train/a.jpg`` ->
``labels/train/a.txt``), else beside the image (darknet, LabelImg). Without a
YAML, SOURCE is darknet's ``obj.data`` (CVAT's "YOLO 1.1" export), or a
folder of images whose classes come from ``--names``
(one name a line: ``classes.txt``, ``obj.names``), else from such a file in
the folder or in its labels folder. An image without a label file, or with an
empty one, has no object.

Masks (SegmentationClass) are written where every object of an image is a
polygon: the polygons are painted largest first, a pixel inside when its
centre is. A data set of boxes gets none (weak labels only), and an image
whose objects are partly boxes none either (its mask would be incomplete).
A split whose polygons all have four corners is taken for Ultralytics'
oriented boxes (OBB): their bounding boxes are the objects, and no mask is
painted (a rotated box is not the object's outline); ``obb="yes"`` / ``"no"``
says so instead of this guess.
An image whose EXIF orientation turns it is written upright (a PNG), as YOLO's
numbers are relative to the displayed image.
"""
from __future__ import annotations

import math
import re
from pathlib import Path, PureWindowsPath
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, DatasetError
from .base import IMAGE_SUFFIXES, PathLike
from .coco import polygons_mask
from .vocwrite import (Entry, check_class_names, check_entries, displayed_size, match_labelmap,
                       unique_ids, voc_box, write_split)

NAME_FILES = ("classes.txt", "obj.names", "classes.names", "names.txt")
_SLACK = 1e-3  # exporters round: 1.0004 is 1


def read_yaml(path: Path) -> Dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("no such data set YAML", path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"not a readable YAML file: {e}", path) from None
    if not isinstance(data, dict):
        raise DatasetError("a YOLO data set YAML is a mapping (names:, train:, val:, ...)", path)
    return data


def yaml_names(data: Dict, path: Path) -> List[str]:
    """``names`` as a list (index order), checked against ``nc`` where given."""
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: int(k) if str(k).isdigit() else -1)
        if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
            raise DatasetError(f"names: the class indices must be 0 to {len(keys) - 1}, got "
                               f"{', '.join(str(k) for k in names)}", path)
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError("no class list: the YAML needs names: (a list, or index: name lines)", path)
    names = [str(n) for n in names]
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(f"nc: {nc}, but names: holds {len(names)} classes", path)
    return names


def read_names_file(path: Path) -> List[str]:
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the class names: {e}", path) from None
    names = [n for n in names if n]
    if not names:
        raise DatasetError("no class names (one a line)", path)
    return names


def split_sources(data: Dict, path: Path, split: str, root: Optional[Path]) -> Tuple[List[Path], Path]:
    """The folders / image lists of ``split`` in a data set YAML, resolved; and the
    folder they are relative to."""
    if split not in data or data[split] in (None, "", []):
        have = [k for k in ("train", "val", "test") if data.get(k)]
        raise DatasetError(f"no split {split!r} in the YAML (it has {', '.join(have) or 'none'})", path)
    note = ""
    if root is None:
        # `path:` relative to the YAML's folder, else (as Ultralytics) to the working
        # folder; else the YAML's folder (Ultralytics' own YAMLs name a folder under
        # its datasets dir, which --root names here)
        base = str(data.get("path") or "")
        tries = ([Path(base)] if Path(base).is_absolute() else [path.parent / base, Path(base)]) \
            if base else []
        root = next((t for t in tries if t.is_dir()), path.parent)
        if base and root == path.parent and path.parent not in tries:
            note = f"; path: {base} is not a folder here, so the YAML's folder was used"
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    out = []
    for e in entries:
        e = str(e)
        tries = [Path(e)] if Path(e).is_absolute() else [root / e]
        if e.startswith("../"):
            tries.append(root / e[3:])  # Roboflow's data.yaml: ../train/images
        found = next((t for t in tries if t.exists()), None)
        if found is None:
            raise DatasetError(f"{split}: {e} not found (looked for {', '.join(str(t) for t in tries)}"
                               f"{note}); --root sets the folder the YAML's paths are relative to", path)
        out.append(found)
    return out, root


def read_darknet(path: Path, split: str) -> Tuple[Path, List[Path]]:
    """Darknet's ``obj.data`` (CVAT's "YOLO 1.1" export): its names file and the
    images of ``split`` (keys matched without regard to case; ``val`` also reads
    ``valid`` / ``validation``). A path that does not exist here (another
    machine's, ``C:/...``) is looked for by its file name beside the file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the darknet data file: {e}", path) from None
    keys = {}
    for ln in lines:
        ln = ln.split("#", 1)[0]
        if "=" in ln:
            k, v = ln.split("=", 1)
            keys[k.strip().lower()] = v.strip()
    wanted = (split.lower(),) + (("valid", "validation") if split.lower() == "val" else ())
    key = next((k for k in wanted if k in keys), None)
    if key is None or "names" not in keys:
        raise DatasetError(f"a darknet data file needs names = and {split} = lines (it has "
                           f"{', '.join(keys) or 'none'})", path)

    def find(value: str) -> Path:
        p = _resolve(value, [path.parent])
        if not p.exists():  # another machine's path: its file name here
            p = path.parent / PureWindowsPath(value).name
        if not p.exists():
            raise DatasetError(f"{value} not found (looked for {_resolve(value, [path.parent])} "
                               f"and {p})", path)
        return p

    return find(keys["names"]), list_images([find(keys[key])], [path.parent])


SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")


def _refuse_export_root(folder: Path, split: str) -> None:
    """A folder that is a whole export (its YAML or darknet file beside, or one
    subfolder a split) is not one split's images: say what to pass instead."""
    for pattern in ("*.yaml", "*.yml", "*.data"):
        found = sorted(folder.glob(pattern))
        if found:
            raise DatasetError(f"the folder holds {found[0].name}: pass it to convert one split "
                               f"(fuzzyseg data yolo {found[0]} --split {split} ...)", folder)
    splits = sorted(d.name for d in folder.iterdir() if d.is_dir() and (
        d.name.lower() in SPLIT_FOLDERS or re.fullmatch(r"obj_\w+_data", d.name)))
    if len(splits) > 1:
        raise DatasetError(f"the folder holds the splits {', '.join(splits)}: pass one of them "
                           "a call (or the data set's YAML), or they become one split", folder)


def list_images(sources: Sequence[Path], bases: Sequence[Path] = ()) -> List[Path]:
    """Images in folders (recursively) and in image lists (a line each, relative to
    the list's folder, else to one of ``bases``; darknet's leading ``data/`` is
    the export folder)."""
    images: List[Path] = []
    for src in sources:
        if src.is_dir():
            images += sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            continue
        try:
            lines = src.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read the image list: {e}", src) from None
        listed = [_resolve(ln, [src.parent, *bases]) for ln in (ln.strip() for ln in lines) if ln]
        missing = [p for p in listed if not p.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of the {len(listed)} images of the list are not "
                               f"found (first: {missing[0]}; a line is relative to the list's "
                               "folder or the data set's)", src)
        images += listed
    return images


def _resolve(name: str, bases: Sequence[Path]) -> Path:
    """``name`` if absolute, else the first of base / name (and, for darknet's
    ``data/...``, base / ...) that exists, else base[0] / name."""
    p = Path(name)
    if p.is_absolute():
        return p
    rel = [p] + ([Path(*p.parts[1:])] if len(p.parts) > 1 and p.parts[0] == "data" else [])
    tries = [b / r for r in rel for b in bases]
    return next((t for t in tries if t.exists()), tries[0])


def _labels_folder(folder: Path) -> Path:
    """Where Ultralytics looks for the labels of the images in ``folder``."""
    parts = folder.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:])
    return folder


def _label_candidates(image: Path) -> Tuple[Path, ...]:
    """Ultralytics' rule (the last ``images`` folder of the path -> ``labels``), then
    the text file beside the image (the same file where no ``images`` folder is)."""
    return tuple(dict.fromkeys((_labels_folder(image.parent) / (image.stem + ".txt"),
                                image.with_suffix(".txt"))))


def label_file_places(image: Path) -> str:
    return " and ".join(str(p) for p in _label_candidates(image))


def label_file(image: Path) -> Optional[Path]:
    """The label file of ``image`` (:func:`_label_candidates`), or None."""
    return next((p for p in _label_candidates(image) if p.is_file()), None)


def parse_labels(path: Path, n_classes: int, keypoints: int = 0) -> List[Tuple[int, str, np.ndarray]]:
    """A label file -> [(class, "box" | "polygon", numbers)], boxes as (cx, cy, w, h),
    polygons as [N, 2]; every number checked, an error naming file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the label file: {e}", path) from None
    out, seen = [], set()
    for no, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue

        def fail(msg):
            raise DatasetError(f"line {no}: {msg} (YOLO: CLASS CX CY W H, or CLASS X1 Y1 ... XN YN, "
                               f"numbers relative to the image): {line.strip()[:60]!r}", path)

        try:
            values = [float(v) for v in fields]
        except ValueError:
            fail("not numbers")
        cls = values[0]
        if not math.isfinite(cls) or cls != int(cls) or not 0 <= cls < n_classes:
            fail(f"class {fields[0]} is not one of the {n_classes} classes (0 to {n_classes - 1})")
        nums = np.asarray(values[1:], dtype=np.float64)
        if not np.isfinite(nums).all():
            fail("a number is not finite")
        if keypoints:
            if len(nums) != 4 + keypoints:
                fail(f"{len(fields)} values, but the YAML's kpt_shape gives 5 + {keypoints} a line")
            nums = nums[:4]
        if len(nums) == 5:
            fail("6 values: a box and a confidence? (a prediction file, not labels)")
        if len(nums) != 4 and (len(nums) < 6 or len(nums) % 2):
            fail(f"{len(fields)} values: a box has 5, a polygon 1 + an even number from 7")
        if (nums < -_SLACK).any() or (nums > 1 + _SLACK).any():
            fail("a number outside [0, 1]: YOLO's coordinates are relative to the image size")
        nums = nums.clip(0.0, 1.0)
        key = (int(cls), nums.tobytes())
        if key in seen:  # (as Ultralytics: a repeated line is one object)
            continue
        seen.add(key)
        if len(nums) == 4:
            out.append((int(cls), "box", nums))
        else:
            out.append((int(cls), "polygon", nums.reshape(-1, 2)))
    return out


def convert_yolo(source: PathLike, out: PathLike, split: str, *, names: Optional[PathLike] = None,
                 root: Optional[PathLike] = None, masks: bool = True, copy: bool = False,
                 skip_empty: bool = False, obb: str = "auto") -> Dict:
    """Convert one split of a YOLO data set into OUT/VOC2012 (module doc); returns a
    summary. ``source``: a data set YAML (``split`` names its entry and the split
    written) or a folder of images (written as ``split``). Every label file is
    read and checked before anything is written."""
    if obb not in ("auto", "yes", "no"):
        raise ConfigError(f"obb must be auto, yes or no, got {obb!r}")
    source = Path(source)
    keypoints = 0
    if source.is_dir():
        _refuse_export_root(source, split)
        where = [source, _labels_folder(source), source.parent]
        name_file = Path(names) if names else next(
            (d / n for d in where for n in NAME_FILES if (d / n).is_file()), None)
        if name_file is None:
            raise DatasetError(f"no class names: pass --names FILE (one name a line), or put "
                               f"{' / '.join(NAME_FILES[:2])} in the folder", source)
        class_names, names_source = read_names_file(name_file), name_file
        images = list_images([source])
        folders = [source]
    elif source.suffix.lower() == ".data":
        name_file, images = read_darknet(source, split)
        folders = []
        name_file = Path(names) if names else name_file
        class_names, names_source = read_names_file(name_file), name_file
    else:
        data = read_yaml(source)
        class_names = read_names_file(Path(names)) if names else yaml_names(data, source)
        names_source = Path(names) if names else source
        kpt = data.get("kpt_shape")
        if kpt is not None:
            if not (isinstance(kpt, list) and len(kpt) == 2 and all(isinstance(k, int) for k in kpt)):
                raise DatasetError(f"kpt_shape must be [keypoints, 2 or 3], got {kpt!r}", source)
            keypoints = kpt[0] * kpt[1]
        sources, base = split_sources(data, source, split, Path(root) if root else None)
        images = list_images(sources, [base])
        folders = [p for p in sources if p.is_dir()]
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in split {split!r}", source)
    check_class_names(class_names, [f"class {i}" for i in range(len(class_names))], names_source)
    voc = Path(out) / "VOC2012"
    all_names = match_labelmap(voc, class_names, "classes")
    index = [all_names.index(n) for n in class_names]  # YOLO class -> class index here
    unique_ids([(p.stem, str(p)) for p in images], source)
    # ---- read and check every label (nothing written yet)
    read = []
    for img in images:
        lf = label_file(img)
        labels = parse_labels(lf, len(class_names), keypoints) if lf else []
        read.append((img, lf, labels))
    if all(lf is None for _, lf, _ in read):
        raise DatasetError(f"none of the {len(read)} images has a label file (looked for "
                           f"{label_file_places(read[0][0])}): the labels are elsewhere?", source)
    polygons = [v for _, _, labels in read for _, k, v in labels if k == "polygon"]
    # Ultralytics' oriented boxes (OBB: four corners a line) look like quadrilateral
    # polygons: a split of nothing else is read as boxes, its masks not painted
    oriented = obb == "yes" or (obb == "auto" and bool(polygons) and all(len(v) == 4 for v in polygons))
    if obb == "yes" and any(len(v) != 4 for v in polygons):
        bad = next(lf for _, lf, labels in read for _, k, v in labels if k == "polygon" and len(v) != 4)
        raise DatasetError("--obb yes: a label has a polygon of other than four corners", bad)
    segmentation = masks and bool(polygons) and not oriented
    entries: List[Entry] = []
    counts = {"without_labels": 0, "skipped_empty": 0, "boxes": 0, "polygons": 0,
              "masks_left_out": 0, "upright": 0}
    for img, lf, labels in read:
        if not labels:
            if skip_empty:
                counts["skipped_empty"] += 1
                continue
            counts["without_labels"] += lf is None
        h, w, turned = displayed_size(img)
        objects, polys = [], []
        for cls, kind, v in labels:
            if kind == "box":
                cx, cy, bw, bh = v
                box = voc_box((cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h, h, w)
            else:
                pts = v * (w, h)
                lo, hi = pts.min(0), pts.max(0)
                box = voc_box(lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1], h, w)
                polys.append((index[cls], pts))
            counts["boxes" if kind == "box" else "polygons"] += 1
            objects.append((all_names[index[cls]], box))
        paint = None
        if segmentation:
            if len(polys) == len(labels):
                paint = _painter(polys, h, w)
            else:
                counts["masks_left_out"] += 1
        counts["upright"] += turned
        entries.append(Entry(img.stem, img, h, w, objects, paint, upright=turned))
    check_entries(voc, entries)
    # ---- write
    written = write_split(voc, split, entries, all_names, copy=copy)
    orphans = _orphan_labels(folders, images)
    return {"out": str(voc), "split": split, "classes": all_names,
            "yolo_class_to_class_index": {str(i): k for i, k in enumerate(index)},
            **written, **counts, **({"oriented_boxes": True} if oriented else {}),
            **({"labels_without_image": len(orphans), "first_labels_without_image": orphans[:3]}
               if orphans else {})}


def _orphan_labels(folders: Sequence[Path], images: Sequence[Path]) -> List[str]:
    """Label files in the split's label folders with no image of a suffix read here
    (a .heic photo, an image deleted since): reported, not converted."""
    stems = {p.stem for p in images}
    found = set()
    for f in folders:
        for d in {f, _labels_folder(f)}:
            if d.is_dir():
                found |= {str(t) for t in d.rglob("*.txt")
                          if t.stem not in stems and t.name not in NAME_FILES}
    return sorted(found)


def _painter(polys: List[Tuple[int, np.ndarray]], h: int, w: int):
    def paint() -> np.ndarray:
        label = np.zeros((h, w), np.uint8)
        # largest first (shoelace area): a smaller object over a larger one stays visible
        def area(p):
            x, y = p[:, 0], p[:, 1]
            return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2

        for cls, pts in sorted(polys, key=lambda cp: -area(cp[1])):
            label[polygons_mask([pts.reshape(-1).tolist()], h, w)] = cls
        return label
    return paint
