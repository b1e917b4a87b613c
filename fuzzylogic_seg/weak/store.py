"""A split's weak labels in a folder: what training reads instead of masks.

Layout (docs/DATA.md; coordinates in ORIGINAL image pixels):

    DIR/weak.json          manifest: format, dataset, split, seed, kinds or mix,
                           simulation config, class names, ids (written last)
    DIR/labels/ID.json     size, kinds, boxes (x0, y0, x1, y1 half-open),
                           box_labels, points (x, y), point_labels, tags,
                           scribble (file name or null)
    DIR/scribbles/ID.png   palette PNG: class index on strokes, 255 elsewhere

A folder can be written by hand from real weak labels (e.g. ScribbleSup) as
long as it follows this layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DatasetError
from ..io import load_json, save_index_png, save_json
from .types import IGNORE, WeakLabels

FORMAT = "fuzzyseg-weak/1"
MANIFEST = "weak.json"


def label_path(root: Union[str, Path], image_id: str) -> Path:
    return Path(root) / "labels" / f"{image_id}.json"


def scribble_path(root: Union[str, Path], image_id: str) -> Path:
    return Path(root) / "scribbles" / f"{image_id}.png"


def write_weak(root: Union[str, Path], image_id: str, weak: WeakLabels,
               class_names: Optional[Sequence[str]] = None) -> Path:
    """Write one image's weak labels (atomically)."""
    d = weak.to_json(class_names)
    d["id"] = image_id
    d["scribble"] = None
    if weak.scribble is not None:
        save_index_png(weak.scribble, scribble_path(root, image_id))
        d["scribble"] = f"{image_id}.png"
    return save_json(d, label_path(root, image_id))


def read_weak(root: Union[str, Path], image_id: str) -> WeakLabels:
    """Read one image's weak labels; every problem names the file."""
    path = label_path(root, image_id)
    if not path.is_file():
        raise DatasetError(f"no weak labels for image {image_id!r}", path)
    try:
        d = load_json(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read weak labels ({exc})", path) from exc
    scribble = None
    if d.get("scribble"):
        spath = path.parent.parent / "scribbles" / d["scribble"]
        scribble = read_scribble_png(spath)
        if d.get("size") is not None and tuple(scribble.shape) != tuple(d["size"]):
            raise DatasetError(f"scribble is {tuple(scribble.shape)} (H, W) but the labels say "
                               f"{tuple(d['size'])}", spath)
    try:
        weak = WeakLabels.from_json(d, scribble=scribble)
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"malformed weak labels ({exc})", path) from exc
    _check_geometry(weak, path)
    return weak


def read_scribble_png(path: Union[str, Path]) -> torch.Tensor:
    """A scribble PNG (palette or grey, class index, 255 = unlabelled) -> LongTensor [H, W]."""
    from ..data.base import read_index_png  # late: data imports weak

    return torch.from_numpy(read_index_png(path).astype(np.int64))


def _check_geometry(weak: WeakLabels, path: Path) -> None:
    if weak.size is None:
        return
    h, w = weak.size
    b = weak.boxes
    if b.shape[0]:
        bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h) | \
              (b[:, 0] >= b[:, 2]) | (b[:, 1] >= b[:, 3])
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise DatasetError(f"box {i} {b[i].tolist()} is empty or outside the "
                               f"{w}x{h} image", path)
    if weak.points is not None and weak.points.shape[0]:
        p = weak.points
        bad = (p[:, 0] < 0) | (p[:, 1] < 0) | (p[:, 0] >= w) | (p[:, 1] >= h)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise DatasetError(f"point {i} {p[i].tolist()} lies outside the {w}x{h} image", path)


class WeakStore:
    """Read access to a weak-label folder written by :func:`save_split`."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DatasetError("not a weak-label folder (no weak.json manifest; write one with "
                               "`fuzzyseg data weak`)", path)
        try:
            self.manifest: Dict = load_json(path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read manifest ({exc})", path) from exc
        if self.manifest.get("format") != FORMAT:
            raise DatasetError(f"unknown format {self.manifest.get('format')!r}; "
                               f"expected {FORMAT!r}", path)
        self.ids: List[str] = list(self.manifest.get("ids", []))
        self._idset = set(self.ids)

    @property
    def dataset(self) -> Optional[str]:
        return self.manifest.get("dataset")

    @property
    def split(self) -> Optional[str]:
        return self.manifest.get("split")

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._idset

    def __len__(self) -> int:
        return len(self.ids)

    def require_kind(self, kind: str) -> None:
        """ConfigError unless some image of the folder has weak labels of ``kind``
        (a scribble folder trained as boxes would train on nothing, silently)."""
        counts = self.manifest.get("images_with_kind") or {}
        if counts.get(kind, 0) > 0:
            return
        held = [k for k, n in counts.items() if n]
        from ..errors import ConfigError

        raise ConfigError(
            f"{self.root}: this weak-label folder holds no {kind} (images with each kind: "
            f"{ {k: n for k, n in counts.items() if n} or 'none'}); "
            + (f"pass --weak {held[0]}" if held else "write it with `fuzzyseg data weak`"))

    def load(self, image_id: str) -> WeakLabels:
        if image_id not in self._idset:
            raise DatasetError(f"image {image_id!r} is not in this weak-label folder "
                               f"(split {self.split!r}, {len(self.ids)} images)",
                               self.root / MANIFEST)
        return read_weak(self.root, image_id)


def save_split(root: Union[str, Path], items: Iterable[Tuple[str, WeakLabels]], *,
               dataset: str, split: str, class_names: Sequence[str],
               info: Optional[Dict] = None) -> Path:
    """Write every (id, weak) of a split, then the manifest (last: marks completion)."""
    root = Path(root)
    ids: List[str] = []
    counts: Dict[str, int] = {"boxes": 0, "scribbles": 0, "points": 0, "tags": 0}
    n_boxes = n_points = n_scribbled = 0
    for image_id, weak in items:
        write_weak(root, image_id, weak, class_names)
        ids.append(image_id)
        for k in weak.kinds():
            counts[k] += 1
        n_boxes += int(weak.boxes.shape[0])
        n_points += 0 if weak.points is None else int(weak.points.shape[0])
        if weak.scribble is not None:
            n_scribbled += int((weak.scribble != IGNORE).sum())
    manifest = {
        "format": FORMAT,
        "dataset": dataset,
        "split": split,
        "class_names": list(class_names),
        "ids": ids,
        "images_with_kind": counts,
        "totals": {"boxes": n_boxes, "points": n_points, "scribbled_pixels": n_scribbled},
        **(info or {}),
    }
    return save_json(manifest, root / MANIFEST)
