"""Seeded simulation of weak labels from masks (the protocol of docs/DATA.md).

Used where a data set has only masks (REFUGE; VOC points and scribbles).
Every kind of one image draws from its own generator seeded by
(seed, image id, kind), so an image's weak labels depend neither on the order
of the split, nor on the other images, nor on which other kinds are drawn.

Protocol (all in pixels of the original image):

- boxes: the tight half-open box of each region: VOC, each 8-connected
  component of each object class (used only when no XML box is given; VOC's
  XML instances are real and preferred); REFUGE, one disc box (label 1: the
  disc = rim + cup) and one cup box (label 2). Optional jitter moves each side
  by U(-j, j) times the box's extent, clipped to the image.
- scribbles: for each class present (background included), the morphological
  (Lantuejoul) skeleton of the class region eroded by m = max(min_margin,
  floor(margin * R)) pixels (R = the region's inscribed chessboard radius;
  m capped at R - 1 so thin regions keep a stroke), widened to `width`
  pixels and clipped to the region. `keep` < 1 keeps the part of each stroke
  under a smooth random field (at least one stroke piece per region stays).
- points: `per_region` points drawn uniformly from the interior
  (depth >= margin as above) of each foreground component with at least
  `min_area` pixels, plus `background` points from the background interior.
  A point is stored at its pixel's centre (x + 0.5, y + 0.5).
- tags: the classes present (background excluded); VOC's XML names are used
  when given.

Scribbles and points are drawn on the label map resized (nearest) so that its
longest side is at most `work_size` (512): a 2124-pixel REFUGE image costs
what a 512-pixel one does, and strokes widen with the image as an annotator's
would. Back at full size a stroke pixel is kept only where the mask has the
stroke's class, and a point that lands on another class is redrawn from its
class's pixels at full size.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .morph import connected_components, depth_and_skeleton, dilate
from .types import IGNORE, KINDS, WeakLabels, resize_labels


@dataclass(frozen=True)
class SimConfig:
    box_jitter: float = 0.0
    scribble_width: int = 3
    scribble_margin: float = 0.3
    scribble_min_margin: int = 2
    scribble_keep: float = 1.0
    scribble_background: bool = True
    points_per_region: int = 1
    point_background: int = 1
    min_area: int = 16
    work_size: int = 512   # scribbles/points are drawn with the longest side at most this

    def __post_init__(self):
        from ..errors import ConfigError

        checks = [
            (self.box_jitter >= 0, "box_jitter must be >= 0"),
            (self.scribble_width >= 1, "scribble_width must be >= 1"),
            (0 <= self.scribble_margin < 1, "scribble_margin is a fraction in [0, 1)"),
            (self.scribble_min_margin >= 0, "scribble_min_margin must be >= 0"),
            (0 < self.scribble_keep <= 1, "scribble_keep is a fraction in (0, 1]"),
            (self.points_per_region >= 0 and self.point_background >= 0,
             "point counts must be >= 0"),
            (self.min_area >= 1, "min_area must be >= 1"),
            (self.work_size >= 32, "work_size must be >= 32"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"weak-label simulation: {msg}")

    def to_json(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Optional[Dict]) -> "SimConfig":
        return cls(**(d or {}))


def image_seed(seed: int, image_id: str, kind: str = "") -> int:
    """A stable 63-bit seed from (seed, image id, kind); not Python's salted hash."""
    h = hashlib.sha256(f"{int(seed)}/{image_id}/{kind}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2 ** 63 - 1)


def generator(seed: int, image_id: str, kind: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(image_seed(seed, image_id, kind))
    return g


# ------------------------------------------------------------------ regions
def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Half-open tight boxes [R, 4] (x0, y0, x1, y1) of masks [R, H, W] (non-empty)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows = masks.any(2)  # [R, H]
    cols = masks.any(1)  # [R, W]
    h, w = masks.shape[1:]
    ar_h = torch.arange(h)
    ar_w = torch.arange(w)
    big = h + w + 1
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    return torch.stack([x0, y0, x1, y1], 1).float()


def class_masks(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """[R, H, W] bool, one mask per class in `classes`."""
    if len(classes) == 0:
        return torch.zeros(0, *labels.shape, dtype=torch.bool)
    c = torch.as_tensor(list(classes), dtype=labels.dtype)
    return labels.unsqueeze(0) == c.view(-1, 1, 1)


def present_classes(labels: torch.Tensor, num_classes: int) -> List[int]:
    valid = labels[labels != IGNORE]
    if valid.numel() and int(valid.max()) >= num_classes:
        raise ConfigError(f"label {int(valid.max())} out of range 0..{num_classes - 1}")
    counts = torch.bincount(valid.flatten(), minlength=num_classes)
    return [int(c) for c in torch.nonzero(counts).flatten()]


def box_regions(labels: torch.Tensor, dataset: str, num_classes: int,
                min_area: int = 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """(masks [R, H, W], labels [R]) of the regions that get a box."""
    if dataset == "refuge":
        disc = (labels == 1) | (labels == 2)
        cup = labels == 2
        masks, labs = [], []
        for m, lab in ((disc, 1), (cup, 2)):
            if bool(m.any()):
                masks.append(m)
                labs.append(lab)
        if not masks:
            return torch.zeros(0, *labels.shape, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
        return torch.stack(masks), torch.tensor(labs)
    return components(labels, [c for c in present_classes(labels, num_classes) if c != 0], min_area)


def components(labels: torch.Tensor, classes: Sequence[int], min_area: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every 8-connected component (>= min_area pixels, or the class's largest) of each class."""
    h, w = labels.shape
    masks, labs = [], []
    for c in classes:
        cm = labels == c
        if not bool(cm.any()):
            continue
        (x0, y0, x1, y1), = tight_boxes(cm.unsqueeze(0)).long().tolist()
        cc = connected_components(cm[y0:y1, x0:x1].unsqueeze(0))[0]   # on the crop: fewer steps
        n = int(cc.max())
        comp_crop = cc.unsqueeze(0) == torch.arange(1, n + 1).view(-1, 1, 1)
        areas = comp_crop.flatten(1).sum(1)
        keep = areas >= min_area
        if not bool(keep.any()):
            keep = areas == areas.max()
        comp = torch.zeros(int(keep.sum()), h, w, dtype=torch.bool)
        comp[:, y0:y1, x0:x1] = comp_crop[keep]
        masks.append(comp)
        labs.append(torch.full((comp.shape[0],), c, dtype=torch.long))
    if not masks:
        return torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
    return torch.cat(masks), torch.cat(labs)


def to_work_size(labels: torch.Tensor, work_size: int) -> torch.Tensor:
    """The label map resized (nearest) so that its longest side is at most `work_size`."""
    h, w = labels.shape
    if max(h, w) <= work_size:
        return labels
    s = work_size / max(h, w)
    return resize_labels(labels, (max(1, round(h * s)), max(1, round(w * s))))


# -------------------------------------------------------------------- kinds
def jitter_boxes(boxes: torch.Tensor, amount: float, size: Tuple[int, int],
                 g: torch.Generator) -> torch.Tensor:
    """Move each side by U(-amount, amount) times the box extent; clip; keep >= 1 px."""
    if amount <= 0 or boxes.shape[0] == 0:
        return boxes.clone()
    h, w = size
    ext = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    noise = (torch.rand(boxes.shape, generator=g) * 2 - 1) * amount * ext
    out = (boxes + noise).round()
    lim = torch.tensor([w, h, w, h], dtype=out.dtype)
    out = torch.minimum(out.clamp(min=0), lim)
    x0 = torch.minimum(out[:, 0], out[:, 2] - 1).clamp(min=0)
    y0 = torch.minimum(out[:, 1], out[:, 3] - 1).clamp(min=0)
    x1 = torch.maximum(out[:, 2], x0 + 1)
    y1 = torch.maximum(out[:, 3], y0 + 1)
    return torch.stack([x0, y0, x1, y1], 1)


def _margins(max_depth: torch.Tensor, cfg: SimConfig) -> torch.Tensor:
    """Per-region erosion margin: max(min_margin, floor(frac * R)), capped at R - 1."""
    m = torch.maximum(torch.full_like(max_depth, cfg.scribble_min_margin),
                      (max_depth.float() * cfg.scribble_margin).floor().long())
    return torch.minimum(m, (max_depth - 1).clamp(min=0))


def _smooth_field(size: Tuple[int, int], g: torch.Generator) -> torch.Tensor:
    h, w = size
    cell = max(8, min(h, w) // 6)
    coarse = torch.rand(1, 1, h // cell + 2, w // cell + 2, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def simulate_scribble(labels: torch.Tensor, num_classes: int, cfg: SimConfig,
                      g: torch.Generator) -> torch.Tensor:
    """Scribble map [H, W]: class index on stroke pixels, 255 elsewhere."""
    work = to_work_size(labels, cfg.work_size)
    strokes = _scribble_at(work, num_classes, cfg, g)
    if work is labels:
        return strokes
    up = resize_labels(strokes, tuple(labels.shape))
    up = torch.where(up == labels, up, torch.full_like(up, IGNORE))
    # A class too thin to survive the working size (or whose stroke fell off it at
    # full size) is scribbled at full size, on the crop of its own pixels.
    wanted = [c for c in present_classes(labels, num_classes)
              if cfg.scribble_background or c != 0]
    for c in wanted:
        if bool((up == c).any()):
            continue
        cm = labels == c
        (x0, y0, x1, y1), = tight_boxes(cm.unsqueeze(0)).long().tolist()
        crop = torch.where(cm[y0:y1, x0:x1], c, IGNORE)
        stroke = _scribble_at(crop, num_classes, cfg, g)
        up[y0:y1, x0:x1] = torch.where(stroke == c, stroke, up[y0:y1, x0:x1])
    return up


def _scribble_at(labels: torch.Tensor, num_classes: int, cfg: SimConfig,
                 g: torch.Generator) -> torch.Tensor:
    classes = present_classes(labels, num_classes)
    if not cfg.scribble_background:
        classes = [c for c in classes if c != 0]
    out = torch.full(labels.shape, IGNORE, dtype=torch.long)
    if not classes:
        return out
    regions = class_masks(labels, classes)
    _, level, max_depth = depth_and_skeleton(regions)
    m = _margins(max_depth, cfg)
    skel = level >= m.view(-1, 1, 1)
    skel &= level >= 0
    if cfg.scribble_keep < 1.0:
        field = _smooth_field(tuple(labels.shape), g)
        kept = skel & (field < cfg.scribble_keep).unsqueeze(0)
        empty = ~kept.flatten(1).any(1)
        skel = torch.where(empty.view(-1, 1, 1), skel, kept)
    strokes = dilate(skel, (cfg.scribble_width - 1) // 2) & regions
    cls = torch.as_tensor(classes, dtype=torch.long).view(-1, 1, 1)
    # Regions are disjoint, so at most one stroke covers a pixel.
    any_stroke = strokes.any(0)
    which = (strokes.long() * cls).sum(0)
    return torch.where(any_stroke, which, out)


def simulate_points(labels: torch.Tensor, num_classes: int, cfg: SimConfig,
                    g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """(points [K, 2] (x, y) at pixel centres, labels [K])."""
    work = to_work_size(labels, cfg.work_size)
    pts, labs = _points_at(work, num_classes, cfg, g)
    if work is labels:
        return pts, labs
    h, w = labels.shape
    sx, sy = w / work.shape[1], h / work.shape[0]
    px = (pts[:, 0] * sx).floor().long().clamp(0, w - 1)
    py = (pts[:, 1] * sy).floor().long().clamp(0, h - 1)
    for k in torch.nonzero(labels[py, px] != labs).flatten().tolist():
        # Landed on another class at full size (a thin region): redraw from the class's pixels.
        px[k], py[k] = _pixel_of(labels, int(labs[k]), g)
    pts = torch.stack([px.float() + 0.5, py.float() + 0.5], 1)
    # A class too thin to survive the working size gets its point from its full-size pixels.
    have = set(labs.tolist())
    extra = [c for c in present_classes(labels, num_classes) if c != 0 and c not in have]
    for c in extra:
        x, y = _pixel_of(labels, c, g)
        pts = torch.cat([pts, torch.tensor([[x + 0.5, y + 0.5]])])
        labs = torch.cat([labs, torch.tensor([c])])
    return pts, labs


def _pixel_of(labels: torch.Tensor, c: int, g: torch.Generator) -> Tuple[int, int]:
    """(x, y) of a pixel of class ``c``, uniform over its pixels at full size."""
    idx = int(torch.multinomial((labels == c).flatten().float(), 1, generator=g))
    return idx % labels.shape[1], idx // labels.shape[1]


def _points_at(labels: torch.Tensor, num_classes: int, cfg: SimConfig,
               g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    fg = [c for c in present_classes(labels, num_classes) if c != 0]
    masks, labs = components(labels, fg, cfg.min_area)
    counts = [cfg.points_per_region] * len(labs)
    background = labels == 0
    if cfg.point_background > 0 and bool(background.any()):
        masks = torch.cat([masks, background.unsqueeze(0)])
        labs = torch.cat([labs, torch.zeros(1, dtype=torch.long)])
        counts.append(cfg.point_background)
    if len(labs) == 0 or sum(counts) == 0:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    depth, _, max_depth = depth_and_skeleton(masks)
    m = _margins(max_depth, cfg)
    interior = depth > m.view(-1, 1, 1)  # depth counts from 1 on the boundary
    w = labels.shape[1]
    pts, plabs = [], []
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        weights = interior[i].flatten().float()
        idx = torch.multinomial(weights, n, replacement=bool(weights.sum() < n), generator=g)
        pts.append(torch.stack([(idx % w).float() + 0.5, (idx // w).float() + 0.5], 1))
        plabs.append(torch.full((n,), int(labs[i]), dtype=torch.long))
    return torch.cat(pts), torch.cat(plabs)


def tags_from_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    tags = torch.zeros(num_classes, dtype=torch.bool)
    for c in present_classes(labels, num_classes):
        if c != 0:
            tags[c] = True
    return tags


def simulate_weak(labels: Optional[torch.Tensor], kinds: Iterable[str], *, dataset: str,
                  num_classes: int, image_id: str, seed: int = 0,
                  config: SimConfig = SimConfig(), size: Optional[Tuple[int, int]] = None,
                  boxes: Optional[torch.Tensor] = None, box_labels: Optional[torch.Tensor] = None,
                  tags: Optional[torch.Tensor] = None, scribble: Optional[torch.Tensor] = None,
                  points: Optional[torch.Tensor] = None, point_labels: Optional[torch.Tensor] = None
                  ) -> WeakLabels:
    """Weak labels of one image from its label map [H, W] (internal classes, 255 void).

    Real weak labels given (VOC XML `boxes`/`box_labels`/`tags`, a real
    `scribble`, real `points`/`point_labels`) are used instead of being derived
    from the mask; box jitter
    applies to real boxes too. `labels` may be None when every requested kind
    is given (then `size` is required).
    """
    kinds = tuple(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown weak-label kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    if dataset not in ("voc", "refuge"):
        raise ConfigError(f"unknown dataset {dataset!r}")
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if size is not None and tuple(size) != tuple(labels.shape):
            raise ConfigError(f"labels are {tuple(labels.shape)} but size is {tuple(size)}")
        size = tuple(labels.shape)
    if size is None:
        raise ConfigError("simulate_weak: give labels or size")
    size = (int(size[0]), int(size[1]))

    def need_labels(kind):
        if labels is None:
            raise ConfigError(f"simulating {kind} of image {image_id!r} needs its mask")
        return labels

    out_boxes = out_box_labels = out_scribble = out_points = out_point_labels = out_tags = None
    if "boxes" in kinds:
        if boxes is None:
            masks, box_labels = box_regions(need_labels("boxes"), dataset, num_classes,
                                            config.min_area)
            boxes = tight_boxes(masks)
        out_boxes = jitter_boxes(torch.as_tensor(boxes).float().reshape(-1, 4), config.box_jitter,
                                 size, generator(seed, image_id, "boxes"))
        out_box_labels = torch.as_tensor(box_labels).long().reshape(-1)
    if "scribbles" in kinds:
        if scribble is not None:
            out_scribble = torch.as_tensor(scribble).long()
        else:
            out_scribble = simulate_scribble(need_labels("scribbles"), num_classes, config,
                                             generator(seed, image_id, "scribbles"))
    if "points" in kinds and points is not None:
        out_points = torch.as_tensor(points).float().reshape(-1, 2)
        out_point_labels = torch.as_tensor(point_labels).long().reshape(-1)
    elif "points" in kinds:
        out_points, out_point_labels = simulate_points(need_labels("points"), num_classes, config,
                                                       generator(seed, image_id, "points"))
    if "tags" in kinds:
        out_tags = (torch.as_tensor(tags).bool().clone() if tags is not None
                    else tags_from_labels(need_labels("tags"), num_classes))
    kw = {} if out_boxes is None else {"boxes": out_boxes, "box_labels": out_box_labels}
    return WeakLabels(scribble=out_scribble, points=out_points, point_labels=out_point_labels,
                      tags=out_tags, size=size, **kw)


def parse_kinds(spec: str) -> Tuple[str, ...]:
    """'boxes,scribbles' -> ('boxes', 'scribbles'), validated."""
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"bad weak-label kinds {spec!r}; use a comma list of {', '.join(KINDS)}")
    return kinds


def parse_mix(spec: str) -> List[Tuple[Tuple[str, ...], float]]:
    """'boxes:0.5,scribbles+tags:0.5' -> [(('boxes',), .5), (('scribbles', 'tags'), .5)]."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        combo, _, p = part.partition(":")
        try:
            prob = float(p) if p else 1.0
        except ValueError:
            raise ConfigError(f"bad probability in mix entry {part!r}") from None
        kinds = parse_kinds(combo.replace("+", ","))
        if prob < 0:
            raise ConfigError(f"negative probability in mix entry {part!r}")
        out.append((kinds, prob))
    total = sum(p for _, p in out)
    if not out or total <= 0:
        raise ConfigError(f"bad weak-label mix {spec!r}; e.g. 'boxes:0.5,scribbles+tags:0.5'")
    return [(k, p / total) for k, p in out]


def choose_kinds(mix: List[Tuple[Tuple[str, ...], float]], seed: int, image_id: str
                 ) -> Tuple[str, ...]:
    """The kinds one image gets under a mix (seeded by the image id only)."""
    if len(mix) == 1:
        return mix[0][0]
    g = generator(seed, image_id, "mix")
    u = float(torch.rand(1, generator=g))
    acc = 0.0
    for kinds, p in mix:
        acc += p
        if u < acc:
            return kinds
    return mix[-1][0]
