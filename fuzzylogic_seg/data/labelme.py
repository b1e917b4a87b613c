"""LabelMe JSON -> the VOC layout, with LabelMe's lines and points as weak labels
(`fuzzyseg data labelme`).

LabelMe (wkentaro/labelme) saves one ``NAME.json`` per image: ``shapes`` (each
a ``label``, ``points`` [[x, y], ...] in the displayed image's pixels, a
``shape_type`` and an optional ``group_id``), ``imagePath`` (relative to the
JSON file), ``imageHeight`` / ``imageWidth`` and, optionally, the image itself
as base64 ``imageData``. One call converts a folder of them (subfolders
included) into split ``--split`` of ``OUT/VOC2012`` through the writer shared
with the other converters (:mod:`.vocwrite`), and the weak labels beside it:

- ``polygon``, ``circle`` and ``mask`` shapes are objects with an outline: a
  box (``Annotations/ID.xml``) and, where every object of an image has one, a
  mask (``SegmentationClass/ID.png``, drawn as LabelMe's own ``labelme2voc``
  draws it: PIL's polygon and ellipse with their outline, in the file's
  order, a later shape over an earlier);
  ``rectangle`` shapes are boxes only (an image holding one gets no mask);
  shapes of one ``label`` and ``group_id`` are one object (an occluded object
  drawn in parts);
- ``line`` and ``linestrip`` shapes are scribbles: ``OUT/scribbles/ID.png``
  (class index on the stroke, 0 for a background stroke, 255 elsewhere and
  where strokes of two classes cross; ``--scribble-width`` pixels wide), for
  ``fuzzyseg data weak --kinds scribbles --scribbles OUT/scribbles``;
- ``point`` shapes are clicks: ``OUT/points_SPLIT.json`` in the format of
  :mod:`.points` (``{"ID": [{"x", "y", "class"}]}``), for ``fuzzyseg data weak
  --kinds points --points OUT/points_SPLIT.json``.

The label ``background`` (also LabelMe's ``_background_``) names background
strokes and clicks; an object cannot be background. Classes: ``--classes``,
else LabelMe's ``labels.txt`` in the folder (its ``__ignore__`` and
``_background_`` lines dropped), else the object, stroke and click labels
found, sorted. An image is found by ``imagePath``, else by the JSON file's stem
beside it, else it is written from ``imageData``. LabelMe shows photos turned
by their EXIF orientation, so such a photo is written upright.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DatasetError
from ..io import atomic_path, save_index_png, voc_palette
from .base import IMAGE_SUFFIXES, PathLike, read_json
from .scribblesup import line_pixels
from .vocwrite import (Entry, check_class_names, check_entries, displayed_size, match_labelmap,
                       unique_ids, voc_box, write_split)

OUTLINED = ("polygon", "circle", "mask")
BOXES = ("rectangle",)
STROKES = ("line", "linestrip")
POINTS = ("point", "points")
BACKGROUND = ("background", "_background_")
_IGNORED_LABEL_LINES = ("__ignore__", "_background_", "background")


def read_labelme(path: Path) -> Dict:
    """A LabelMe JSON file, its shapes checked: a DatasetError names the file and shape."""
    data = read_json(path, "LabelMe annotation")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError("not a LabelMe file (no list 'shapes')", path)
    for k, s in enumerate(data["shapes"]):
        def fail(msg, k=k):
            raise DatasetError(f"shape {k}: {msg}", path)

        if not isinstance(s, dict) or not isinstance(s.get("label"), str) or not s["label"].strip():
            fail(f"a shape is an object with a label, got {str(s)[:60]!r}")
        kind = s.get("shape_type") or "polygon"  # (LabelMe before 3.x wrote no shape_type)
        if kind not in OUTLINED + BOXES + STROKES + POINTS:
            fail(f"shape_type {kind!r} is not one this reads ({', '.join(OUTLINED + BOXES + STROKES + POINTS)})")
        pts = s.get("points")
        ok = isinstance(pts, list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in pts)
        need = {"polygon": 3, "circle": 2, "mask": 2, "rectangle": 2, "line": 2, "linestrip": 2,
                "point": 1, "points": 1}[kind]
        if not ok or len(pts) < need:
            fail(f"a {kind} needs at least {need} points [x, y] of finite numbers, got {str(pts)[:60]}")
        if kind in OUTLINED + BOXES and s["label"].strip() in BACKGROUND:
            fail(f"an object ({kind}) labelled {s['label'].strip()!r}; background is said with "
                 "lines and points")
        if kind == "mask" and not isinstance(s.get("mask"), str):
            fail("a mask shape needs its base64 PNG in 'mask'")
        gid = s.get("group_id")
        if gid is not None and (not isinstance(gid, int) or isinstance(gid, bool)):
            fail(f"group_id must be an integer or null, got {gid!r}")
    return data


def _find_image(js: Path, data: Dict) -> Tuple[Optional[Path], Optional[bytes]]:
    """(the image file, or None) and (the embedded image's bytes, or None)."""
    ip = data.get("imagePath")
    tries = []
    if isinstance(ip, str) and ip:
        tries += [js.parent / Path(PureWindowsPath(ip).as_posix()), js.parent / PureWindowsPath(ip).name]
    tries += [js.with_suffix(s) for s in IMAGE_SUFFIXES] + [js.with_suffix(s.upper()) for s in IMAGE_SUFFIXES]
    found = next((t for t in tries if t.is_file()), None)
    if found is not None:
        return found, None
    if isinstance(data.get("imageData"), str):
        try:
            return None, base64.b64decode(data["imageData"], validate=True)
        except (binascii.Error, ValueError):
            raise DatasetError("imageData is not base64", js) from None
    return None, None


def _decode_png(b64: str, where: str, path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
            return np.asarray(img.convert("L")) > 0
    except Exception:  # (PIL raises several kinds for a broken PNG)
        raise DatasetError(f"{where}: its mask is not a base64 PNG", path) from None


def _box(shape: Dict, path: Path, k: int) -> Tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in pixels of an outlined or rectangle shape (a mask shape's
    PNG is decoded here, to check it, and again when painted)."""
    kind = shape.get("shape_type") or "polygon"
    pts = np.asarray(shape["points"], dtype=np.float64)
    if kind == "circle":
        (cx, cy), (px, py) = pts[0], pts[1]
        r = math.hypot(px - cx, py - cy)
        return (cx - r, cy - r, cx + r, cy + r)
    if kind == "mask":
        m = _decode_png(shape["mask"], f"shape {k}", path)
        x0, y0 = (int(v) for v in pts[0])  # (as LabelMe places it: truncated)
        return (x0, y0, x0 + m.shape[1], y0 + m.shape[0])
    lo, hi = pts[:2].min(0) if kind == "rectangle" else pts.min(0), \
        pts[:2].max(0) if kind == "rectangle" else pts.max(0)
    return (lo[0], lo[1], hi[0], hi[1])


def _draw(shape: Dict, h: int, w: int, path: Path) -> np.ndarray:
    """bool [H, W]: an outlined shape as LabelMe's own ``shape_to_mask`` draws it
    (PIL's polygon and ellipse, outline included; a mask shape's PNG placed at its
    truncated first point, clipped to the image)."""
    from PIL import Image, ImageDraw

    kind = shape.get("shape_type") or "polygon"
    pts = [tuple(p) for p in shape["points"]]
    if kind == "mask":
        m = _decode_png(shape["mask"], "a shape", path)
        x0, y0 = (int(v) for v in pts[0])
        out = np.zeros((h, w), dtype=bool)
        ys0, xs0 = max(y0, 0), max(x0, 0)
        ys1, xs1 = min(y0 + m.shape[0], h), min(x0 + m.shape[1], w)
        if ys0 < ys1 and xs0 < xs1:
            out[ys0:ys1, xs0:xs1] = m[ys0 - y0: ys1 - y0, xs0 - x0: xs1 - x0]
        return out
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        (cx, cy), (px, py) = pts[0], pts[1]
        r = math.hypot(px - cx, py - cy)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        draw.polygon(pts, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def _label_file_classes(folder: Path) -> Optional[List[str]]:
    f = folder / "labels.txt"
    if not f.is_file():
        return None
    try:
        names = [ln.strip() for ln in f.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the class list: {e}", f) from None
    return [n for n in names if n and n not in _IGNORED_LABEL_LINES]


@dataclass
class Record:
    """One image and its shapes in LabelMe's form (``label``, ``points``,
    ``shape_type``, ``group_id``; ``mask`` as a base64 PNG), from whichever tool:
    what :func:`convert_shapes` converts. ``where`` is named in errors."""
    image_id: str
    where: Path
    shapes: List[Dict]
    src: Optional[Path] = None
    blob: Optional[bytes] = None  # the image's bytes, where it is embedded instead
    size: Optional[Tuple[int, int]] = None  # (H, W) the annotation states, checked
    name: str = ""  # the image's name in errors, where ``where`` holds many images


def convert_labelme(folder: PathLike, out: PathLike, split: str, *,
                    classes: Union[None, str, Path, Sequence[str]] = None, masks: bool = True,
                    copy: bool = False, skip_empty: bool = False, scribble_width: int = 3) -> Dict:
    """Convert a folder of LabelMe files into OUT/VOC2012 and its weak labels (module
    doc); everything is read and checked before anything is written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError("no such folder", folder)
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise DatasetError("no LabelMe files (*.json) in the folder", folder)
    records = []
    for js in files:
        data = read_labelme(js)
        src, blob = _find_image(js, data)
        if src is None and blob is None:
            raise DatasetError(f"its image is not found (imagePath {data.get('imagePath')!r}, nor "
                               "an image of the file's name beside it) and it holds no imageData", js)
        given = (data.get("imageHeight"), data.get("imageWidth"))
        records.append(Record(js.stem, js, data["shapes"], src, blob,
                              given if all(isinstance(v, int) for v in given) else None))
    unique_ids([(r.image_id, str(r.where.relative_to(folder))) for r in records], folder)
    return convert_shapes(records, out, split, source=folder, classes=classes,
                          default_classes=_label_file_classes(folder), masks=masks, copy=copy,
                          skip_empty=skip_empty, scribble_width=scribble_width)


def convert_shapes(records: Sequence[Record], out: PathLike, split: str, *, source: Path,
                   classes: Union[None, str, Path, Sequence[str]] = None,
                   default_classes: Optional[List[str]] = None, masks: bool = True,
                   copy: bool = False, skip_empty: bool = False, scribble_width: int = 3) -> Dict:
    """Images with LabelMe-form shapes -> OUT/VOC2012, OUT/scribbles/ and
    OUT/points_SPLIT.json (module doc). Classes: ``classes``, else
    ``default_classes`` (the tool's own list), else the labels found, sorted."""
    from .classes import parse_classes

    if scribble_width < 1:
        raise ConfigError(f"--scribble-width must be at least 1, got {scribble_width}")
    found = sorted({s["label"].strip() for r in records for s in r.shapes} - set(BACKGROUND))
    if classes is not None:
        names = list(parse_classes(classes, DatasetError).names[1:])
    else:
        names = default_classes or found
        check_class_names(names, [f"label {n!r}" for n in names], source)
    unknown = [n for n in found if n not in names]
    if unknown:
        first = next(r.where for r in records if any(s["label"].strip() == unknown[0] for s in r.shapes))
        raise DatasetError(f"unknown label {unknown[0]!r} (all unknown: {', '.join(unknown)}); the "
                           f"classes are {', '.join(names)}", first)
    voc = Path(out) / "VOC2012"
    all_names = match_labelmap(voc, names, "labels")
    index = {n: i for i, n in enumerate(all_names)}
    index.update({b: 0 for b in BACKGROUND})
    segmentation = masks and any((s.get("shape_type") or "polygon") in OUTLINED
                                 for r in records for s in r.shapes)
    entries: List[Entry] = []
    strokes: Dict[str, List[Dict]] = {}
    clicks: Dict[str, List[Dict]] = {}
    counts = {"skipped_empty": 0, "masks_left_out": 0, "upright": 0, "strokes": 0, "points": 0,
              "points_outside": 0, "from_image_data": 0}
    for r in records:
        js, shapes, src, blob = r.where, r.shapes, r.src, r.blob
        image_id = r.image_id
        at = f"image {r.name}, " if r.name else ""
        if src is not None:
            h, w, turned = displayed_size(src)
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(io.BytesIO(blob)) as img:
                    (w, h), fmt = img.size, img.format
            except (UnidentifiedImageError, OSError):
                raise DatasetError(f"{at}imageData is not an image", js) from None
            src_name = js.with_suffix({"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp",
                                       "TIFF": ".tif", "WEBP": ".webp"}.get(fmt, ".png"))
            turned = False
        if r.size is not None and tuple(r.size) != (h, w):
            raise DatasetError(f"{at}the annotation's image size (height x width) {r.size[0]}x{r.size[1]} "
                               f"is not its image's {h}x{w}: not this image's annotation?", js)
        groups: Dict[Tuple, List[Tuple[int, Dict]]] = defaultdict(list)
        for k, s in enumerate(shapes):
            kind = s.get("shape_type") or "polygon"
            label = s["label"].strip()
            if kind in OUTLINED + BOXES:
                key = (label, s["group_id"]) if s.get("group_id") is not None else (label, "shape", k)
                groups[key].append((k, s))
        has_weak = any((s.get("shape_type") or "polygon") in STROKES + POINTS for s in shapes)
        if not groups and skip_empty and not has_weak:
            counts["skipped_empty"] += 1
            continue
        objects, painted, boxed_only = [], [], False
        for (label, *_), parts in groups.items():
            b = np.asarray([_box(sh, js, sh.get("index", k)) for k, sh in parts])
            x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                first = parts[0][1].get("index", parts[0][0])
                raise DatasetError(f"{at}shape {first} ({label}) lies outside the {w}x{h} image", js)
            objects.append((label, voc_box(x0, y0, x1 - x0, y1 - y0, h, w)))
            outlined = [sh for _, sh in parts if (sh.get("shape_type") or "polygon") in OUTLINED]
            boxed_only |= len(outlined) < len(parts)
            painted += [(k, index[label], sh) for k, sh in parts
                        if (sh.get("shape_type") or "polygon") in OUTLINED]
        paint = None
        if segmentation:
            if boxed_only or (not groups and has_weak):  # (objects not outlined: no mask to paint)
                counts["masks_left_out"] += 1
            else:
                paint = _painter(sorted(painted, key=lambda p: p[0]), h, w, js)
        n_strokes = sum((s.get("shape_type") or "polygon") in STROKES for s in shapes)
        if n_strokes:  # (drawn when written: one image's array at a time)
            strokes[image_id] = shapes
            counts["strokes"] += n_strokes
        pts = [(s["label"].strip(), p) for s in shapes if s.get("shape_type") in POINTS
               for p in s["points"]]
        inside = [(lb, p) for lb, p in pts if 0 <= p[0] < w and 0 <= p[1] < h]
        counts["points_outside"] += len(pts) - len(inside)
        pts = inside
        if pts:
            clicks[image_id] = [{"x": int(min(max(math.floor(x), 0), w - 1)),
                                 "y": int(min(max(math.floor(y), 0), h - 1)),
                                 "class": "background" if label in BACKGROUND else label}
                                for label, (x, y) in pts]
            counts["points"] += len(pts)
        counts["upright"] += turned
        counts["from_image_data"] += blob is not None
        entries.append(Entry(image_id, src if src is not None else src_name, h, w,
                             objects, paint, upright=turned, data=blob))
    check_entries(voc, entries)
    # ---- write
    written = write_split(voc, split, entries, all_names, copy=copy)
    summary = {"out": str(voc), "split": split, "classes": all_names, **written, **counts}
    if strokes:  # every image of the split gets a PNG (data weak --scribbles needs one each)
        sdir = Path(out) / "scribbles"
        for e in entries:
            arr = _strokes(strokes[e.image_id], index, e.height, e.width, scribble_width) \
                if e.image_id in strokes else None
            save_index_png(arr if arr is not None else np.full((e.height, e.width), 255, np.uint8),
                           sdir / f"{e.image_id}.png", palette=voc_palette())
        summary["scribbles"] = str(sdir)
    if clicks:  # every image of the split has an entry ([] for none), as data weak needs
        pfile = Path(out) / f"points_{split}.json"
        with atomic_path(pfile) as tmp:
            tmp.write_text(json.dumps({e.image_id: clicks.get(e.image_id, []) for e in entries},
                                      indent=1), encoding="utf-8")
        summary["points_file"] = str(pfile)
    return summary


def _strokes(shapes: Sequence[Dict], index: Dict[str, int], h: int, w: int,
             width: int) -> Optional[np.ndarray]:
    """uint8 [H, W]: the class index on the image's line / linestrip pixels (255 elsewhere
    and where two classes' strokes cross), or None without strokes."""
    hits: Dict[int, np.ndarray] = {}
    lo, hi = -((width - 1) // 2), width // 2  # the square brush's offsets
    for s in shapes:
        if (s.get("shape_type") or "polygon") not in STROKES:
            continue
        pts = np.floor(np.asarray(s["points"], dtype=np.float64)).astype(np.int64)
        # drawn as given, the pixels outside the image dropped (clipping the ends
        # first would bend a stroke that leaves the image)
        px = np.concatenate([line_pixels(pts[i], pts[i + 1]) for i in range(len(pts) - 1)])
        c = index[s["label"].strip()]
        hit = hits.setdefault(c, np.zeros((h, w), dtype=bool))
        for dy in range(lo, hi + 1):
            for dx in range(lo, hi + 1):
                x, y = px[:, 0] + dx, px[:, 1] + dy
                ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                hit[y[ok], x[ok]] = True
    if not hits:
        return None
    out = np.full((h, w), 255, dtype=np.uint8)
    n = np.zeros((h, w), dtype=np.uint8)
    for c, hit in hits.items():
        out[hit] = c
        n += hit
    out[n > 1] = 255  # conflicting supervision is dropped, not decided by drawing order
    return out


def _painter(painted: List[Tuple[int, int, Dict]], h: int, w: int, path: Path):
    def paint() -> np.ndarray:
        # drawn here, one image at a time; in the file's order, a later object over an
        # earlier one, as LabelMe's own labelme2voc paints them
        label = np.zeros((h, w), np.uint8)
        for _, cls, sh in painted:
            label[_draw(sh, h, w, path)] = cls
        return label
    return paint
