"""Real point clicks for data in Pascal VOC layout (docs/DATA.md "The layouts read").

One JSON file maps each image id to its clicks, in the format of "What's the
Point" (Bearman et al., ECCV 2016), whose VOC 2012 trainval clicks are
``pascal2012_trainval_main.json``::

    {"2008_000008": [{"x": 213, "y": 157, "cls": 13, "rank": 1}, ...], ...}

``x``, ``y``: the clicked pixel's column and row, zero-indexed; ``cls``: the
class index in the data set's class list (for VOC 1-20 in alphabetical order,
which is this package's order; 0 a background click); ``rank``: the
annotator's n-th click (optional). For one's own data a click may name its
class instead: ``"class": "mug"``. A click becomes a point at its pixel's
centre, ``(x + 0.5, y + 0.5)``, as the simulated points are.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..errors import DatasetError
from .base import read_json

Clicks = Tuple[torch.Tensor, torch.Tensor]  # (points [K, 2] float (x, y), labels [K] long)


def read_points(path: Union[str, Path], class_names, max_rank: Optional[int] = None) -> Dict[str, Clicks]:
    """The clicks of every image in `path`; errors name the file, the image and the click.

    `max_rank`: keep only each annotator's first `max_rank` clicks (clicks without a
    rank are kept)."""
    path = Path(path)
    data = read_json(path, "point clicks")
    if not isinstance(data, dict):
        raise DatasetError("point clicks must be a JSON object: image id -> list of clicks "
                           '({"x": ..., "y": ..., "cls": ...})', path)
    names = list(class_names)
    index = {n: i for i, n in enumerate(names)}
    out: Dict[str, Clicks] = {}
    for image_id, clicks in data.items():
        if not isinstance(clicks, list):
            raise DatasetError(f"image {image_id}: clicks must be a list, got {type(clicks).__name__}", path)
        pts, labels = [], []
        for k, click in enumerate(clicks):
            def fail(msg: str, k=k):
                raise DatasetError(f"image {image_id}, click {k}: {msg}", path)

            if not isinstance(click, dict):
                fail(f"a click is an object with x, y and cls (or class), got {click!r}")
            x, y = click.get("x"), click.get("y")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       and v >= 0 for v in (x, y)):
                fail(f"x and y must be pixel coordinates >= 0, got x={x!r}, y={y!r}")
            label = _label(click, names, index, fail)
            rank = click.get("rank")
            if max_rank is not None and isinstance(rank, int) and rank > max_rank:
                continue
            pts.append((math.floor(x) + 0.5, math.floor(y) + 0.5))
            labels.append(label)
        out[str(image_id)] = (torch.tensor(pts, dtype=torch.float32).reshape(-1, 2),
                              torch.tensor(labels, dtype=torch.long))
    return out


def _label(click: dict, names, index, fail) -> int:
    if "class" in click:
        name = click["class"]
        if not isinstance(name, str) or name not in index:
            fail(f"unknown class {name!r}; the classes are {', '.join(names)}")
        return index[name]
    cls = click.get("cls")
    if not isinstance(cls, int) or isinstance(cls, bool) or not 0 <= cls < len(names):
        fail(f"cls must be a class index 0..{len(names) - 1} (0: background), got {cls!r}")
    return cls


def check_clicks(clicks: Clicks, size: Tuple[int, int], image_id: str, path) -> None:
    """Every click inside the (H, W) image, else a DatasetError naming the file and image."""
    pts = clicks[0]
    if pts.numel():
        h, w = size
        bad = (pts[:, 0] >= w) | (pts[:, 1] >= h)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            x, y = (int(v) for v in pts[k].floor().tolist())
            raise DatasetError(f"image {image_id}, a click at x={x}, y={y} lies outside the image "
                               f"({w}x{h})", path)
