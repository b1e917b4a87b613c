"""ScribbleSup scribbles (Lin et al., CVPR 2016) -> the scribble PNGs VOC reads.

The published annotations (``scribble_annotation/pascal_2012/ID.xml``) hold
one ``<polygon>`` per stroke: a ``<tag>`` (a class name, often short:
``plane``, ``bike``, ``table``, ``plant``, ``monitor``; ``background``) and
the stroke's pixels as ``<point><X>x</X><Y>y</Y></point>``, in drawing
order, with the image's ``<size>``. The PNG this writes holds the class
index on stroke pixels (0 for background strokes) and 255 elsewhere, the
format ``VOCSegmentation(scribble_dir=...)`` and ``fuzzyseg data weak
--scribbles`` read.

Conversion choices (all counted in the summary):
- consecutive points are joined by a digital straight line: the tracked
  mouse positions leave gaps where the hand moved fast;
- coordinates are read as 0-based pixel indices; points outside the image
  (the files hold a few, one past the right or bottom edge) are clipped to it;
- a pixel that strokes of two different classes cross is left unlabelled
  (255): conflicting supervision is dropped, not decided by drawing order;
- ``width`` > 1 widens each stroke to a square brush of that side.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DatasetError
from ..io import VOC_CLASSES

PathLike = Union[str, Path]

# The names ScribbleSup's pascal_2012 files use beside VOC's own.
ALIASES = {
    "plane": "aeroplane", "airplane": "aeroplane", "bike": "bicycle", "table": "diningtable",
    "dining table": "diningtable", "plant": "pottedplant", "potted plant": "pottedplant",
    "monitor": "tvmonitor", "tv": "tvmonitor", "tv monitor": "tvmonitor", "motor bike": "motorbike",
}
UNKNOWN_POLICIES = ("error", "background", "skip")


def class_index(tag: str) -> Optional[int]:
    """VOC class index of a ScribbleSup tag (case and spaces ignored), None if unknown."""
    t = " ".join(tag.strip().lower().split())
    t = ALIASES.get(t, t)
    return VOC_CLASSES.index(t) if t in VOC_CLASSES else None


@dataclass
class Stroke:
    tag: str
    points: np.ndarray  # int64 [N, 2] of (x, y)


@dataclass
class Scribbles:
    size: Tuple[int, int]  # (H, W)
    strokes: List[Stroke] = field(default_factory=list)


def read_xml(path: PathLike) -> Scribbles:
    """Parse one ScribbleSup XML file; a malformed file raises DatasetError naming it."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"cannot read scribble annotation ({exc})", path) from None
    s = root.find("size")
    try:
        h, w = int(float(s.findtext("height"))), int(float(s.findtext("width")))
    except (AttributeError, TypeError, ValueError):
        raise DatasetError("bad <size> (need numeric <width> and <height>)", path) from None
    if h <= 0 or w <= 0:
        raise DatasetError(f"bad <size> {w}x{h}", path)
    strokes = []
    for k, poly in enumerate(root.findall("polygon")):
        tag = (poly.findtext("tag") or "").strip()
        pts = []
        for j, pt in enumerate(poly.findall("point")):
            try:
                pts.append((int(round(float(pt.findtext("X")))), int(round(float(pt.findtext("Y"))))))
            except (TypeError, ValueError):
                raise DatasetError(f"polygon {k} ({tag or 'no tag'}), point {j}: needs numeric "
                                   f"<X> and <Y>", path) from None
        strokes.append(Stroke(tag, np.asarray(pts, dtype=np.int64).reshape(-1, 2)))
    return Scribbles((h, w), strokes)


def line_pixels(p0: Sequence[int], p1: Sequence[int]) -> np.ndarray:
    """The pixels (x, y) of the digital straight line from p0 to p1, ends included:
    one pixel per step along the major axis, the other coordinate rounded."""
    (x0, y0), (x1, y1) = p0, p1
    n = max(abs(x1 - x0), abs(y1 - y0))
    if n == 0:
        return np.array([[x0, y0]], dtype=np.int64)
    t = np.arange(n + 1)
    # Round half away from the start: symmetric in p0 / p1 up to ties.
    xs = x0 + np.floor((x1 - x0) * t / n + 0.5).astype(np.int64)
    ys = y0 + np.floor((y1 - y0) * t / n + 0.5).astype(np.int64)
    return np.stack([xs, ys], 1)


@dataclass
class ConversionStats:
    strokes: int = 0
    points: int = 0
    clipped_points: int = 0
    conflict_pixels: int = 0
    unknown_tags: Counter = field(default_factory=Counter)
    pixels_per_class: Counter = field(default_factory=Counter)

    def add(self, other: "ConversionStats") -> None:
        self.strokes += other.strokes
        self.points += other.points
        self.clipped_points += other.clipped_points
        self.conflict_pixels += other.conflict_pixels
        self.unknown_tags.update(other.unknown_tags)
        self.pixels_per_class.update(other.pixels_per_class)


def rasterize(scr: Scribbles, width: int = 1, unknown: str = "error",
              path: Optional[PathLike] = None) -> Tuple[np.ndarray, ConversionStats]:
    """uint8 [H, W]: class index on stroke pixels, 255 elsewhere and where strokes of
    two classes meet. ``unknown``: what a tag that names no VOC class does ("error":
    DatasetError naming ``path`` and the tag; "background": label 0; "skip")."""
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"unknown={unknown!r}: choose one of {UNKNOWN_POLICIES}")
    if width < 1:
        raise ConfigError(f"width must be >= 1, got {width}")
    h, w = scr.size
    st = ConversionStats()
    hit = np.zeros((len(VOC_CLASSES), h, w), dtype=bool)
    lo, hi = -((width - 1) // 2), width // 2  # the square brush's offsets
    for k, s in enumerate(scr.strokes):
        c = class_index(s.tag)
        if c is None:
            st.unknown_tags[s.tag] += 1
            if unknown == "error":
                raise DatasetError(
                    f"polygon {k}: tag {s.tag!r} names no VOC class (known: "
                    f"{', '.join(VOC_CLASSES)}, and {', '.join(sorted(ALIASES))}); "
                    f"--unknown background or skip decides what such strokes mean", path)
            if unknown == "skip":
                continue
            c = 0
        if not len(s.points):
            continue
        st.strokes += 1
        st.points += len(s.points)
        pts = s.points
        outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        st.clipped_points += int(outside.sum())
        pts = np.stack([pts[:, 0].clip(0, w - 1), pts[:, 1].clip(0, h - 1)], 1)
        px = np.concatenate([line_pixels(pts[i], pts[i + 1]) for i in range(len(pts) - 1)]) \
            if len(pts) > 1 else pts
        for dy in range(lo, hi + 1):
            for dx in range(lo, hi + 1):
                x = (px[:, 0] + dx).clip(0, w - 1)
                y = (px[:, 1] + dy).clip(0, h - 1)
                hit[c, y, x] = True
    n_hit = hit.sum(0)
    out = np.full((h, w), 255, dtype=np.uint8)
    single = n_hit == 1
    out[single] = hit.argmax(0)[single]
    st.conflict_pixels = int((n_hit > 1).sum())
    counts = np.bincount(out[single], minlength=len(VOC_CLASSES))
    st.pixels_per_class.update({VOC_CLASSES[c]: int(n) for c, n in enumerate(counts) if n})
    return out, st


def convert_folder(xml_dir: PathLike, out_dir: PathLike, *, width: int = 1, unknown: str = "error",
                   ids: Optional[Sequence[str]] = None, image_sizes: Optional[Dict[str, Tuple]] = None,
                   progress: bool = False) -> Dict:
    """Convert every ``ID.xml`` of ``xml_dir`` (or only ``ids``) to ``out_dir/ID.png``.

    ``image_sizes`` (id -> (H, W), the real images' sizes) checks each file's
    ``<size>``: a mismatch raises DatasetError naming the file. Returns the
    summary (counts, missing ids) that the command prints and writes."""
    from tqdm import tqdm

    from ..io import save_index_png

    xml_dir, out_dir = Path(xml_dir), Path(out_dir)
    if not xml_dir.is_dir():
        raise DatasetError("no such folder of ScribbleSup XML files", xml_dir)
    found = {p.stem: p for p in sorted(xml_dir.glob("*.xml"))}
    if not found:
        raise DatasetError("no .xml files here (expected ScribbleSup's pascal_2012/ID.xml)",
                           xml_dir)
    wanted = list(found) if ids is None else list(ids)
    missing = [i for i in wanted if i not in found]
    todo = [i for i in wanted if i in found]
    if wanted and not todo:
        raise DatasetError(f"none of the {len(wanted)} images asked for has a file here (first: "
                           f"{wanted[0]}.xml); is it the folder of another split or data set?",
                           xml_dir)
    total = ConversionStats()
    for image_id in tqdm(todo, desc="scribbles", unit="img", disable=not progress):
        path = found[image_id]
        scr = read_xml(path)
        if image_sizes is not None and image_id in image_sizes and \
                tuple(image_sizes[image_id]) != tuple(scr.size):
            h, w = image_sizes[image_id]
            raise DatasetError(f"<size> says {scr.size[1]}x{scr.size[0]} but the image is {w}x{h}",
                               path)
        arr, st = rasterize(scr, width=width, unknown=unknown, path=path)
        save_index_png(arr, out_dir / f"{image_id}.png")
        total.add(st)
    return {"xml_dir": str(xml_dir), "out": str(out_dir), "converted": len(todo),
            "missing": missing, "width": width, "unknown": unknown,
            "strokes": total.strokes, "points": total.points,
            "clipped_points": total.clipped_points, "conflict_pixels": total.conflict_pixels,
            "unknown_tags": total.unknown_tags, "pixels_per_class": total.pixels_per_class}
