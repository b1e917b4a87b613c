"""Weak labels -> SAM prompts, with no hand-tuned prompt heuristics.

The paper's point is to get rid of prompt engineering: every prompt here is
read off the weak label as it is, and what fine-tuning changes is the model,
not the prompt. What is used (also in docs/FINETUNE.md):

* boxes      -> one box prompt per box, in the box's class (VOC: per instance;
               REFUGE: one disc box and one cup box). Nothing is jittered,
               grown or shrunk.
* scribbles  -> one point prompt per foreground class that has scribbled
               pixels: ``n_pos`` positive points spread over that class's
               scribble (farthest-point sampling, deterministic) and ``n_neg``
               negative points spread over every other scribbled pixel
               (background strokes and other classes).
* points     -> one prompt per class with points: its points positive, the
               points of every other class (background points included)
               negative.
* tags       -> no location at all, so the prompts are SAM's "segment
               everything" proposals: a regular ``n_per_side`` x
               ``n_per_side`` grid of single positive points (as
               ``SamAutomaticMaskGenerator``); a class head decides what
               each proposal is (see ``finetune.py``).

A :class:`Prompts` holds the prompts of one image in that image's pixel
coordinates (x, y; boxes x0, y0, x1, y1 half-open as ``WeakLabels``).
Point prompts are padded to a common count with label -1, which SAM's prompt
encoder reads as "no point".
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .errors import ConfigError

PROMPT_KINDS = ("boxes", "scribbles", "points", "tags")


@dataclass
class Prompts:
    """The SAM prompts of one image.

    ``labels[p]`` is the class prompt ``p`` stands for (-1: unknown, tags).
    Exactly one of ``boxes`` / ``points`` is set (``kind`` says which).
    """

    kind: str                                   # "box" or "point"
    labels: torch.Tensor                        # LongTensor [P]
    boxes: Optional[torch.Tensor] = None        # FloatTensor [P, 4] x0 y0 x1 y1
    points: Optional[torch.Tensor] = None       # FloatTensor [P, K, 2] x y
    point_labels: Optional[torch.Tensor] = None  # LongTensor [P, K]: 1 pos, 0 neg, -1 pad

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to(self, device) -> "Prompts":
        def mv(t):
            return None if t is None else t.to(device)

        return replace(self, labels=mv(self.labels), boxes=mv(self.boxes),
                       points=mv(self.points), point_labels=mv(self.point_labels))

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> "Prompts":
        """Prompts in a crop's frame: ``(x - dx) * scale``, ``(y - dy) * scale``."""
        boxes = points = None
        if self.boxes is not None:
            off = torch.tensor([dx, dy, dx, dy], dtype=self.boxes.dtype, device=self.boxes.device)
            boxes = (self.boxes - off) * scale
        if self.points is not None:
            off = torch.tensor([dx, dy], dtype=self.points.dtype, device=self.points.device)
            points = (self.points - off) * scale
        return replace(self, boxes=boxes, points=points)

    def select(self, index) -> "Prompts":
        """A subset of the prompts (index: LongTensor or bool mask over P)."""
        def pick(t):
            return None if t is None else t[index]

        return replace(self, labels=pick(self.labels), boxes=pick(self.boxes),
                       points=pick(self.points), point_labels=pick(self.point_labels))

    def decode_kwargs(self) -> dict:
        """Keyword arguments for ``PromptableSAM.decode``."""
        if self.kind == "box":
            return {"boxes": self.boxes}
        return {"points": self.points, "point_labels": self.point_labels}


# ------------------------------------------------------------------ sampling
def farthest_points(coords: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` of ``coords`` [M, 2] spread out by farthest-point sampling.

    Deterministic: starts from the point nearest the centroid (so a single
    point lands in the middle of a stroke, not at an end).
    """
    m = coords.shape[0]
    if m == 0 or k <= 0:
        return coords[:0]
    if m <= k:
        return coords.clone()
    c = coords.float()
    first = int(((c - c.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    dist = ((c - c[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((c - c[nxt]) ** 2).sum(1))
    return coords[torch.tensor(chosen, device=coords.device)]


def _pad_points(pos: list, neg: list) -> tuple:
    """Stack per-prompt positive/negative point lists into padded tensors."""
    k = max([len(p) + len(n) for p, n in zip(pos, neg)] + [1])
    pts = torch.zeros(len(pos), k, 2)
    lab = torch.full((len(pos), k), -1, dtype=torch.long)
    for i, (p, n) in enumerate(zip(pos, neg)):
        both = torch.cat([p.float().reshape(-1, 2), n.float().reshape(-1, 2)], 0)
        pts[i, :len(both)] = both
        lab[i, :len(p)] = 1
        lab[i, len(p):len(both)] = 0
    return pts, lab


# ------------------------------------------------------------------- prompts
def box_prompts(weak) -> Prompts:
    """One box prompt per box, labelled with the box's class."""
    boxes = weak.boxes
    if boxes is None or boxes.numel() == 0:
        return Prompts("box", torch.zeros(0, dtype=torch.long), boxes=torch.zeros(0, 4))
    return Prompts("box", weak.box_labels.long().clone(), boxes=boxes.float().clone())


def scribble_prompts(weak, n_pos: int = 5, n_neg: int = 5, ignore_index: int = 255) -> Prompts:
    """One point prompt per scribbled foreground class (see the module doc)."""
    scr = weak.scribble
    if scr is None:
        raise ConfigError("scribble prompts need weak labels with scribbles")
    ys, xs = torch.nonzero(scr != ignore_index, as_tuple=True)
    cls = scr[ys, xs]
    xy = torch.stack([xs, ys], 1).float() + 0.5  # pixel centres
    labels, pos, neg = [], [], []
    for c in torch.unique(cls).tolist():
        if c == 0:
            continue
        labels.append(c)
        pos.append(farthest_points(xy[cls == c], n_pos))
        neg.append(farthest_points(xy[cls != c], n_neg))
    if not labels:
        return Prompts("point", torch.zeros(0, dtype=torch.long),
                       points=torch.zeros(0, 1, 2), point_labels=torch.zeros(0, 1, dtype=torch.long))
    pts, lab = _pad_points(pos, neg)
    return Prompts("point", torch.tensor(labels, dtype=torch.long), points=pts, point_labels=lab)


def point_prompts(weak) -> Prompts:
    """One point prompt per foreground class with points (others' points negative)."""
    if weak.points is None or weak.point_labels is None:
        raise ConfigError("point prompts need weak labels with points")
    pts, plab = weak.points.float(), weak.point_labels.long()
    labels, pos, neg = [], [], []
    for c in torch.unique(plab).tolist():
        if c == 0:
            continue
        labels.append(c)
        pos.append(pts[plab == c])
        neg.append(pts[plab != c])
    if not labels:
        return Prompts("point", torch.zeros(0, dtype=torch.long),
                       points=torch.zeros(0, 1, 2), point_labels=torch.zeros(0, 1, dtype=torch.long))
    p, lab = _pad_points(pos, neg)
    return Prompts("point", torch.tensor(labels, dtype=torch.long), points=p, point_labels=lab)


def grid_prompts(height: int, width: int, n_per_side: int = 8) -> Prompts:
    """SAM's automatic-mask-generator grid: one positive point per cell centre."""
    if n_per_side < 1:
        raise ConfigError(f"n_per_side must be >= 1, got {n_per_side}")
    off = 0.5 / n_per_side
    g = torch.linspace(off, 1 - off, n_per_side)
    yy, xx = torch.meshgrid(g * height, g * width, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)[:, None, :]
    n = pts.shape[0]
    return Prompts("point", torch.full((n,), -1, dtype=torch.long), points=pts,
                   point_labels=torch.ones(n, 1, dtype=torch.long))


def prompts_from_weak(weak, kind: str, image_size=None, **options) -> Prompts:
    """Dispatch on the weak-label kind (one of :data:`PROMPT_KINDS`)."""
    if kind == "boxes":
        return box_prompts(weak)
    if kind == "scribbles":
        return scribble_prompts(weak, **options)
    if kind == "points":
        return point_prompts(weak)
    if kind == "tags":
        if image_size is None:
            raise ConfigError("tag prompts need the image size")
        return grid_prompts(int(image_size[0]), int(image_size[1]), **options)
    raise ConfigError(f"unknown weak-label kind {kind!r}; expected one of {', '.join(PROMPT_KINDS)}")


# ---------------------------------------------------------- region of interest
@dataclass(frozen=True)
class View:
    """The part of an image that SAM is shown: ``x0 <= x < x1``, ``y0 <= y < y1``.

    The whole image for VOC; for REFUGE a crop around the disc box (the cup
    spans a few pixels of SAM's low-resolution mask otherwise: cropping is
    what makes it learnable, as in REFUGE methods). The crop comes from the
    weak label only.
    """

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> tuple:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """``image[..., y0:y1, x0:x1]`` (contiguous)."""
        return image[..., self.y0:self.y1, self.x0:self.x1].contiguous()

    def key(self) -> str:
        return f"{self.x0}_{self.y0}_{self.x1}_{self.y1}"


def full_view(height: int, width: int) -> View:
    return View(0, 0, int(width), int(height))


def roi_view(box, height: int, width: int, margin: float = 0.3) -> View:
    """A square crop centred on ``box`` with ``margin`` times its longer side added
    on every side, moved inside the image where it fits and clipped where not."""
    x0, y0, x1, y1 = [float(v) for v in box]
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2.0 * margin)
    side = int(round(min(side, max(height, width))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def place(c: float, n: int) -> tuple:
        lo = int(round(c - side / 2.0))
        lo = max(0, min(lo, n - side))  # shift inside when the crop fits
        return lo, min(n, lo + side)

    vx0, vx1 = place(cx, int(width))
    vy0, vy1 = place(cy, int(height))
    return View(vx0, vy0, vx1, vy1)
