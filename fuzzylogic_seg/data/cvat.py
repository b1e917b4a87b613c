"""CVAT's own XML ("CVAT for images 1.1") -> the VOC layout and weak labels
(`fuzzyseg data cvat`).

CVAT's native export keeps what its Pascal VOC export drops: polylines and
points, the weak labels drawn in CVAT. ``annotations.xml`` lists the task's
labels (``<meta>``, in the project's order) and, per ``<image name width
height>``, its shapes in pixels; each is turned into LabelMe's form and
converted as :mod:`.labelme` converts (:func:`.labelme.convert_shapes`):

- ``<polygon points="x,y;x,y;...">``, ``<ellipse cx cy rx ry rotation>`` (as a
  64-gon) and ``<mask rle left top width height>`` (CVAT's runs, row-major over
  the mask's box, zeros first) are objects with an outline: boxes and masks;
- ``<box xtl ytl xbr ybr rotation>`` is a box (a rotated one, the box of its
  corners);
- ``<polyline>`` is a scribble, ``<points>`` clicks (label ``background`` for
  background);
- ``group_id`` joins shapes into one object; shapes are painted in ``z_order``,
  then in the file's order; ``<tag>``, ``<cuboid>``, ``<skeleton>`` and any
  other element, and masks of no pixel, are not read (counted in the summary).

The images are ``--images DIR`` / ``name`` (else their base name there); the
classes are ``--classes``, else the labels of ``<meta>``, else those found. A
project export's ``subset`` attribute (``Train``, ``Validation``) picks images
with ``--subset``.
"""
from __future__ import annotations

import base64
import io
import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DatasetError
from .base import PathLike
from .labelme import BACKGROUND, Record, convert_shapes
from .vocwrite import find_image, rotated_bounds, unique_ids



def _floats(el: ET.Element, keys: Sequence[str], fail) -> List[float]:
    try:
        vals = [float(el.get(k)) for k in keys]
    except (TypeError, ValueError):
        fail(f"needs numeric {', '.join(keys)}")
    if not all(math.isfinite(v) for v in vals):
        fail(f"a coordinate is not a finite number ({', '.join(keys)})")
    return vals


def _points(el: ET.Element, fail, need: int = 1) -> List[List[float]]:
    try:
        pts = [[float(v) for v in p.split(",")] for p in (el.get("points") or "").split(";") if p.strip()]
    except ValueError:
        fail("points must be 'x,y;x,y;...'")
    if not pts or any(len(p) != 2 or not all(math.isfinite(v) for v in p) for p in pts):
        fail("points must be 'x,y;x,y;...' of finite numbers")
    if len(pts) < need:
        fail(f"a {el.tag} needs at least {need} points")
    return pts


def _rle_mask(el: ET.Element, fail) -> Tuple[np.ndarray, int, int]:
    """(bool [height, width], left, top) of a ``<mask>``."""
    left, top, w, h = (int(v) for v in _floats(el, ("left", "top", "width", "height"), fail))
    if w < 1 or h < 1:
        fail(f"a mask of {w}x{h} pixels")
    try:
        runs = [int(v) for v in (el.get("rle") or "").replace(" ", "").split(",") if v]
    except ValueError:
        fail("rle must be run lengths 'n, n, ...'")
    if any(n < 0 for n in runs) or sum(runs) != w * h:
        fail(f"rle runs cover {sum(runs)} pixels, but the mask is {w}x{h} = {w * h}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # zeros first, then ones, ...
    return flat.reshape(h, w), left, top


def _png_b64(m: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(m.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _shape(el: ET.Element, k: int, path: Path, image: str) -> Optional[Dict]:
    """One CVAT shape in LabelMe's form (None: a kind not read)."""
    def fail(msg):
        raise DatasetError(f"image {image}, {el.tag} {k}: {msg}", path)

    label = (el.get("label") or "").strip()
    if not label:
        fail("no label")
    if el.tag in ("box", "polygon", "ellipse", "mask") and label in BACKGROUND:
        fail(f"an object labelled {label!r}; background is said with polylines and points")
    gid = el.get("group_id")
    el_z = el.get("z_order") or "0"
    el_r = el.get("rotation") or "0"
    try:
        z, rot = int(float(el_z)), math.radians(float(el_r))
    except (ValueError, OverflowError):
        fail(f"z_order {el_z!r} / rotation {el_r!r} must be finite numbers")
    if not math.isfinite(rot):
        fail(f"rotation {el_r!r} must be a finite number")
    out = {"label": label, "group_id": int(gid) if gid and gid.isdigit() and int(gid) > 0 else None,
           "z_order": z, "index": k}
    if el.tag == "box":
        x0, y0, x1, y1 = _floats(el, ("xtl", "ytl", "xbr", "ybr"), fail)
        if rot:  # the box of the rotated box's corners (about its centre)
            x0, y0, x1, y1 = rotated_bounds((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, rot)
        return {**out, "shape_type": "rectangle", "points": [[x0, y0], [x1, y1]]}
    if el.tag == "polygon":
        return {**out, "shape_type": "polygon", "points": _points(el, fail, 3)}
    if el.tag == "ellipse":
        cx, cy, rx, ry = _floats(el, ("cx", "cy", "rx", "ry"), fail)
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        xs, ys = rx * np.cos(t), ry * np.sin(t)
        pts = np.stack([cx + xs * math.cos(rot) - ys * math.sin(rot),
                        cy + xs * math.sin(rot) + ys * math.cos(rot)], 1)
        return {**out, "shape_type": "polygon", "points": pts.tolist()}
    if el.tag == "mask":
        m, left, top = _rle_mask(el, fail)
        if not m.any():
            return {"empty": True}
        return {**out, "shape_type": "mask", "mask": _png_b64(m),
                "points": [[left, top], [left + m.shape[1] - 1, top + m.shape[0] - 1]]}
    if el.tag == "polyline":
        return {**out, "shape_type": "linestrip", "points": _points(el, fail, 2)}
    if el.tag == "points":
        return {**out, "shape_type": "points", "points": _points(el, fail)}
    return None


def convert_cvat(annotations: PathLike, images: PathLike, out: PathLike, split: str, *,
                 classes: Union[None, str, Path, Sequence[str]] = None, masks: bool = True,
                 copy: bool = False, skip_empty: bool = False, scribble_width: int = 3,
                 subset: Optional[str] = None) -> Dict:
    """Convert a CVAT for images 1.1 ``annotations.xml`` into OUT/VOC2012 and its weak
    labels (module doc); ``subset``: only the images of that subset (a project
    export's ``subset="Train"``). Everything is read and checked before anything
    is written."""
    annotations, images = Path(annotations), Path(images)
    try:
        root = ET.parse(annotations).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"cannot read the XML file ({e})", annotations) from None
    if root.tag != "annotations" or root.find("image") is None and root.find("track") is not None:
        raise DatasetError("not CVAT for images 1.1 (its root is <annotations> with <image> "
                           "elements; a video task's <track> export is not read)", annotations)
    if not images.is_dir():
        raise DatasetError("--images: no such folder", images)
    meta = [(lb.findtext("name") or "").strip() for lb in root.iterfind("meta//labels/label")]
    meta = [n for n in meta if n and n not in BACKGROUND]
    records, missing, skipped = [], [], Counter()
    subsets = Counter(im.get("subset") or "" for im in root.iterfind("image"))
    if subset is not None and subset not in subsets:
        raise DatasetError(f"no image of subset {subset!r} (the file has "
                           f"{', '.join(repr(k) for k in subsets if k) or 'no subsets'})", annotations)
    for k, im in enumerate(root.iterfind("image")):
        if subset is not None and (im.get("subset") or "") != subset:
            continue
        name = im.get("name") or ""
        if not name:
            raise DatasetError(f"image {k}: no name", annotations)
        shapes = []
        for j, el in enumerate(im):
            sh = _shape(el, j, annotations, name)
            if sh is None or sh.get("empty"):  # (a kind not read, or a mask of no pixel)
                skipped["empty mask" if sh else el.tag] += 1
                continue
            shapes.append(sh)
        shapes.sort(key=lambda s: s.pop("z_order"))  # (stable: the file's order within a z)
        # (a project export keeps each subset's images in images/SUBSET/)
        src = find_image(images, name, [im.get("subset") or ""])
        if src is None:
            missing.append(name)
            continue
        try:
            size = (int(im.get("height")), int(im.get("width")))
        except (TypeError, ValueError):
            size = None
        records.append(Record(Path(name).stem, annotations, shapes, src, None, size, name=name))
    if missing:
        raise DatasetError(f"{len(missing)} images are not in {images} (first: {', '.join(missing[:3])}); "
                           "--images is the folder the images' names are relative to", annotations)
    if not records:
        raise DatasetError("no <image> in the file", annotations)
    unique_ids([(r.image_id, str(r.src)) for r in records], annotations)
    summary = convert_shapes(records, out, split, source=annotations, classes=classes,
                             default_classes=meta or None, masks=masks, copy=copy,
                             skip_empty=skip_empty, scribble_width=scribble_width)
    return {**summary, **({"not_read": dict(skipped)} if skipped else {})}
