"""`WeakLabels`: the weak supervision of one image (DESIGN.md).

Coordinates are pixels of the image the labels belong to. Boxes are
half-open (`x0 <= x < x1`), so a VOC XML box (1-based, inclusive) becomes
`x0 = xmin - 1, x1 = xmax`. `size` is that image's (H, W); it travels with the
labels so that a stored label can be checked against its image and a
scribble can be resized exactly as the image was.

Absent kinds are `None` (scribble, points, tags) or an empty box tensor
(boxes: `[0, 4]`), so `weak.boxes` can always be indexed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import ConfigError

KINDS = ("boxes", "scribbles", "points", "tags")
IGNORE = 255


def _empty_boxes() -> torch.Tensor:
    return torch.zeros(0, 4, dtype=torch.float32)


def _empty_labels() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long)


@dataclass
class WeakLabels:
    boxes: torch.Tensor = field(default_factory=_empty_boxes)          # [N, 4] float
    box_labels: torch.Tensor = field(default_factory=_empty_labels)    # [N] long
    scribble: Optional[torch.Tensor] = None                            # [H, W] long, 255 = none
    points: Optional[torch.Tensor] = None                              # [K, 2] float (x, y)
    point_labels: Optional[torch.Tensor] = None                        # [K] long
    tags: Optional[torch.Tensor] = None                                # [C] bool
    size: Optional[Tuple[int, int]] = None                             # (H, W) of the image

    def __post_init__(self):
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.box_labels = torch.as_tensor(self.box_labels, dtype=torch.long).reshape(-1)
        if self.boxes.shape[0] != self.box_labels.shape[0]:
            raise ConfigError(
                f"WeakLabels: {self.boxes.shape[0]} boxes but {self.box_labels.shape[0]} box labels"
            )
        if self.points is not None:
            self.points = torch.as_tensor(self.points, dtype=torch.float32).reshape(-1, 2)
            if self.point_labels is None:
                raise ConfigError("WeakLabels: points given without point_labels")
            self.point_labels = torch.as_tensor(self.point_labels, dtype=torch.long).reshape(-1)
            if self.point_labels.shape[0] != self.points.shape[0]:
                raise ConfigError(
                    f"WeakLabels: {self.points.shape[0]} points but "
                    f"{self.point_labels.shape[0]} point labels"
                )
        if self.tags is not None:
            self.tags = torch.as_tensor(self.tags).to(torch.bool).reshape(-1)
        if self.scribble is not None:
            self.scribble = torch.as_tensor(self.scribble).to(torch.long)
            if self.scribble.dim() != 2:
                raise ConfigError(f"WeakLabels: scribble must be [H, W], got {tuple(self.scribble.shape)}")
            if self.size is None:
                self.size = tuple(self.scribble.shape)
            elif tuple(self.scribble.shape) != tuple(self.size):
                raise ConfigError(
                    f"WeakLabels: scribble is {tuple(self.scribble.shape)} but size is {tuple(self.size)}"
                )
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))

    # ------------------------------------------------------------- queries
    def kinds(self) -> Tuple[str, ...]:
        """The kinds present, in the order of `KINDS`."""
        out = []
        if self.boxes.shape[0] > 0:
            out.append("boxes")
        if self.scribble is not None:
            out.append("scribbles")
        if self.points is not None:
            out.append("points")
        if self.tags is not None:
            out.append("tags")
        return tuple(out)

    def only(self, kinds: Sequence[str]) -> "WeakLabels":
        """A copy keeping only the given kinds (heterogeneous supervision per image)."""
        kinds = set(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown weak-label kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        return WeakLabels(
            boxes=self.boxes if "boxes" in kinds else _empty_boxes(),
            box_labels=self.box_labels if "boxes" in kinds else _empty_labels(),
            scribble=self.scribble if "scribbles" in kinds else None,
            points=self.points if "points" in kinds else None,
            point_labels=self.point_labels if "points" in kinds else None,
            tags=self.tags if "tags" in kinds else None,
            size=self.size,
        )

    # ---------------------------------------------------------- geometry
    def resized(self, scale: Union[float, Tuple[float, float]],
                size: Optional[Tuple[int, int]] = None) -> "WeakLabels":
        """Labels of the image resized by `scale` (a float, or (sy, sx)).

        `size` is the new (H, W) (default: the rounded scaled size); the
        scribble is resampled by nearest pixel centre, like the mask.
        """
        sy, sx = (scale, scale) if isinstance(scale, (int, float)) else scale
        if size is None:
            if self.size is None:
                raise ConfigError("WeakLabels.resized: size unknown; pass size=(H, W)")
            size = (max(1, round(self.size[0] * sy)), max(1, round(self.size[1] * sx)))
        if self.size is not None:
            # The exact factors of the resized grid keep boxes on the same pixels as the image.
            sy, sx = size[0] / self.size[0], size[1] / self.size[1]
        factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        scribble = None
        if self.scribble is not None:
            scribble = resize_labels(self.scribble, size)
        return WeakLabels(
            boxes=self.boxes * factor,
            box_labels=self.box_labels.clone(),
            scribble=scribble,
            points=None if self.points is None else self.points * factor[:2],
            point_labels=None if self.point_labels is None else self.point_labels.clone(),
            tags=None if self.tags is None else self.tags.clone(),
            size=tuple(size),
        )

    def padded(self, size: Tuple[int, int]) -> "WeakLabels":
        """Labels of the image padded at the bottom/right to `size` (coordinates unchanged)."""
        scribble = self.scribble
        if scribble is not None:
            h, w = scribble.shape
            if (h, w) != tuple(size):
                scribble = F.pad(scribble, (0, size[1] - w, 0, size[0] - h), value=IGNORE)
        return replace(self, scribble=scribble, size=tuple(size))

    # -------------------------------------------------------------- JSON
    def to_json(self, class_names: Optional[Sequence[str]] = None) -> Dict:
        """Everything but the scribble pixels (stored as a PNG beside the JSON)."""
        d: Dict = {
            "size": None if self.size is None else list(self.size),
            "kinds": list(self.kinds()),
            "boxes": [[float(v) for v in b] for b in self.boxes.tolist()],
            "box_labels": [int(v) for v in self.box_labels.tolist()],
        }
        if self.points is not None:
            d["points"] = [[float(v) for v in p] for p in self.points.tolist()]
            d["point_labels"] = [int(v) for v in self.point_labels.tolist()]
        if self.tags is not None:
            d["num_classes"] = int(self.tags.numel())
            d["tags"] = [int(i) for i in torch.nonzero(self.tags).flatten().tolist()]
            if class_names is not None:
                d["tag_names"] = [class_names[i] for i in d["tags"]]
        return d

    @classmethod
    def from_json(cls, d: Dict, scribble: Optional[torch.Tensor] = None) -> "WeakLabels":
        tags = None
        if d.get("tags") is not None:
            n = int(d["num_classes"])
            tags = torch.zeros(n, dtype=torch.bool)
            idx = torch.as_tensor(d["tags"], dtype=torch.long)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ConfigError(f"tag index out of range 0..{n - 1}: {d['tags']}")
            tags[idx] = True
        points = d.get("points")
        return cls(
            boxes=torch.tensor(d.get("boxes") or [], dtype=torch.float32).reshape(-1, 4),
            box_labels=torch.tensor(d.get("box_labels") or [], dtype=torch.long),
            scribble=scribble,
            points=None if points is None else torch.tensor(points, dtype=torch.float32).reshape(-1, 2),
            point_labels=None if points is None else torch.tensor(d.get("point_labels") or [],
                                                                   dtype=torch.long),
            tags=tags,
            size=None if d.get("size") is None else tuple(d["size"]),
        )

    def equal(self, other: "WeakLabels") -> bool:
        """Exact (bit-level) equality of every field."""
        def same(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)

        return (self.size == other.size and same(self.boxes, other.boxes)
                and same(self.box_labels, other.box_labels) and same(self.scribble, other.scribble)
                and same(self.points, other.points) and same(self.point_labels, other.point_labels)
                and same(self.tags, other.tags))


def resize_labels(labels: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize an integer label map [H, W] by nearest pixel centre ("nearest-exact")."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.clone()
    x = labels[None, None].to(torch.float32)
    return F.interpolate(x, size=tuple(size), mode="nearest-exact")[0, 0].to(labels.dtype)
