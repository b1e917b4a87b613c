"""Weak labels -> the fact tensors that rules bind to.

Coordinates are continuous pixels (pixel i covers [i, i+1)); boxes are
half-open. Membership of pixel i in [lo, hi):
  hard (default): its centre i + 0.5 lies in [lo, hi), and the pixel holding
    the box's middle always counts, so a box shrunk below one pixel by
    resizing still has a pixel;
  soft: the covered fraction of the pixel, clamp(min(hi, i+1) - max(lo, i), 0, 1).
For integer boxes both agree. Everything is vectorised (outer products of
per-row and per-column membership); all tensors are float32 in [0, 1] unless
stated.

Per image (DESIGN.md): `box_masks [N,H,W]`, `row_masks [N,H]`, `col_masks [N,W]`,
`class_box_masks [C,H,W]`, `outside_all [H,W]`, `ellipse_masks [N,H,W]`,
`point_masks [K,H,W]`, `scribble_onehot -> ([C,H,W], labelled [H,W])`,
`tag_vector [C]`.

Batched, from a `collate` batch: `build_facts(batch, C)` returns tensors named
and laid out as the fact vocabulary of `rule_facts.py` (sorts region = one box,
row, col; batch axis first), here at image resolution, so the rule files of
examples/rules/ bind to them directly, plus class-level facts:

  inbox       [B, N, H, W]  pixel inside box n                (region, row, col)
  rowin       [B, N, H]     row crosses box n                  (region, row)
  colin       [B, N, W]     column crosses box n               (region, col)
  ellipse     [B, N, H, W]  pixel inside the ellipse inscribed in box n
  outside     [B, H, W]     pixel known to lie in no box: 0 for an image
                            without box labels (no claim is made)
  overlap     [B, N, N]     two different valid boxes that intersect
  scrib       [B, N, H, W]  a scribble of box n's class on the pixel
  scrib_other [B, N, H, W]  a scribble of another class (background too)
  boxclass    [B, N, C]     box n has class c (one-hot)         (region, class)
  classbox    [B, C, H, W]  pixel inside some box of class c    (class, row, col)
  scribbled   [B, C, H, W]  pixel scribbled with class c; labelled [B, H, W]
  pointed     [B, K, H, W]  pixel holds point k; pointclass [B, K, C]
  tagged      [B, C]        class known present; untagged [B, C] known absent
                            (both 0 for an image without tags)
  domains     {"region": box_valid [B, N], "row": [B, H], "col": [B, W],
               "point": point_valid [B, K]}  (rows/cols: the unpadded image)
  disc / cup  LongTensor [B]: index of the REFUGE disc / cup box
              (label 1 / 2; 0 where absent: check domains["region"])
`movedim` gives other argument orders.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F

from .errors import ConfigError

IGNORE = 255


# ------------------------------------------------------------- 1-d pieces
def _interval_membership(lo: torch.Tensor, hi: torch.Tensor, n: int, soft: bool) -> torch.Tensor:
    """[..., n] membership of pixels 0..n-1 in the half-open intervals [lo, hi)."""
    i = torch.arange(n, dtype=torch.float32, device=lo.device)
    lo = lo.to(torch.float32).unsqueeze(-1)
    hi = hi.to(torch.float32).unsqueeze(-1)
    if soft:
        return (torch.minimum(hi, i + 1) - torch.maximum(lo, i)).clamp(0, 1)
    c = i + 0.5
    inside = (c >= lo) & (c < hi)
    mid = ((lo + hi) * 0.5).floor().clamp(0, n - 1)
    nonempty = hi > lo
    inside |= (i == mid) & nonempty & (hi > 0) & (lo < n)
    return inside.to(torch.float32)


def row_masks(boxes: torch.Tensor, H: int, soft: bool = False) -> torch.Tensor:
    """[..., N, H]: the rows each box spans."""
    return _interval_membership(boxes[..., 1], boxes[..., 3], H, soft)


def col_masks(boxes: torch.Tensor, W: int, soft: bool = False) -> torch.Tensor:
    """[..., N, W]: the columns each box spans."""
    return _interval_membership(boxes[..., 0], boxes[..., 2], W, soft)


# ---------------------------------------------------------- per-image facts
def box_masks(boxes: torch.Tensor, H: int, W: int, soft: bool = False) -> torch.Tensor:
    """[..., N, H, W] inside-box membership (works batched: boxes [..., N, 4])."""
    return row_masks(boxes, H, soft).unsqueeze(-1) * col_masks(boxes, W, soft).unsqueeze(-2)


def class_box_masks(boxes: torch.Tensor, labels: torch.Tensor, C: int, H: int, W: int,
                    soft: bool = False) -> torch.Tensor:
    """[C, H, W]: union (max) of the boxes of each class."""
    out = torch.zeros(C, H, W, device=boxes.device)
    if boxes.shape[0] == 0:
        return out
    masks = box_masks(boxes, H, W, soft)
    for c in torch.unique(labels).tolist():
        out[c] = masks[labels == c].amax(0)
    return out


def outside_all(boxes: torch.Tensor, H: int, W: int, soft: bool = False) -> torch.Tensor:
    """[H, W]: 1 - (union of all boxes)."""
    if boxes.shape[0] == 0:
        return torch.ones(H, W, device=boxes.device)
    return 1.0 - box_masks(boxes, H, W, soft).amax(0)


def ellipse_masks(boxes: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[..., N, H, W]: pixel centres inside the ellipse inscribed in each box."""
    x = torch.arange(W, dtype=torch.float32, device=boxes.device) + 0.5
    y = torch.arange(H, dtype=torch.float32, device=boxes.device) + 0.5
    cx = ((boxes[..., 0] + boxes[..., 2]) / 2).unsqueeze(-1)
    cy = ((boxes[..., 1] + boxes[..., 3]) / 2).unsqueeze(-1)
    rx = ((boxes[..., 2] - boxes[..., 0]) / 2).clamp(min=0.5).unsqueeze(-1)
    ry = ((boxes[..., 3] - boxes[..., 1]) / 2).clamp(min=0.5).unsqueeze(-1)
    dx = ((x - cx) / rx) ** 2            # [..., N, W]
    dy = ((y - cy) / ry) ** 2            # [..., N, H]
    return ((dy.unsqueeze(-1) + dx.unsqueeze(-2)) <= 1.0).to(torch.float32)


def point_masks(points: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[..., K, H, W]: one-hot of the pixel holding each point (x, y)."""
    px = points[..., 0].floor().long().clamp(0, W - 1)
    py = points[..., 1].floor().long().clamp(0, H - 1)
    ys = torch.arange(H, device=points.device)
    xs = torch.arange(W, device=points.device)
    return ((ys == py.unsqueeze(-1)).unsqueeze(-1) & (xs == px.unsqueeze(-1)).unsqueeze(-2)).float()


def scribble_onehot(scribble: torch.Tensor, C: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """([..., C, H, W] one-hot of the scribbled class, labelled [..., H, W])."""
    labelled = scribble != IGNORE
    safe = torch.where(labelled, scribble, torch.zeros_like(scribble)).long()
    if bool((safe >= C).any()) or bool((safe < 0).any()):
        raise ConfigError(f"scribble holds a class outside 0..{C - 1} (and 255)")
    lab = labelled.to(torch.float32)
    onehot = torch.zeros(*scribble.shape[:-2], C, *scribble.shape[-2:], device=scribble.device)
    onehot.scatter_(-3, safe.unsqueeze(-3), lab.unsqueeze(-3))   # no int64 one-hot in between
    return onehot, lab


def tag_vector(tags: Optional[torch.Tensor], C: int) -> torch.Tensor:
    """[C] float: bool tags, or a list of class indices, as a vector."""
    out = torch.zeros(C)
    if tags is None:
        return out
    tags = torch.as_tensor(tags)
    if tags.dtype == torch.bool:
        out[: tags.numel()] = tags.float()
    else:
        out[tags.long()] = 1.0
    return out


# -------------------------------------------------------------- batched
def box_index(box_labels: torch.Tensor, valid: torch.Tensor, label: int) -> torch.Tensor:
    """LongTensor [B]: index of the first valid box with `label` (0 when none)."""
    hit = (box_labels == label) & valid
    n = hit.shape[1]
    idx = torch.where(hit, torch.arange(n, device=hit.device), n).amin(1)
    return torch.where(idx == n, torch.zeros_like(idx), idx)


FACT_NAMES = ("inbox", "rowin", "colin", "ellipse", "outside", "overlap", "scrib", "scrib_other",
              "boxclass", "classbox", "scribbled", "labelled", "pointed", "pointclass", "tagged",
              "untagged")


def build_facts(batch: Dict, num_classes: int, soft: bool = False,
                device: Optional[torch.device] = None,
                names: Optional[Iterable[str]] = None) -> Dict:
    """The fact tensors of a `collate` batch (layout in the module docstring).

    `names` restricts the work to the facts a theory needs (default: all of
    FACT_NAMES); "domains", "box_labels", "disc" and "cup" always come along.
    """
    want = set(FACT_NAMES if names is None else names)
    unknown = want - set(FACT_NAMES)
    if unknown:
        raise ConfigError(f"unknown fact(s) {sorted(unknown)}; known: {', '.join(FACT_NAMES)}")
    dev = device or batch["image"].device
    b, _, h, w = batch["image"].shape
    C = num_classes
    f32 = torch.float32
    boxes = batch["boxes"].to(dev)
    valid = batch["box_valid"].to(dev)
    labels = batch["box_labels"].to(dev)
    vf = valid.to(f32)
    n = boxes.shape[1]
    out: Dict = {}
    rows = row_masks(boxes, h, soft) * vf.unsqueeze(-1)            # [B, N, H]
    cols = col_masks(boxes, w, soft) * vf.unsqueeze(-1)            # [B, N, W]
    out["rowin"], out["colin"] = rows, cols
    if want & {"inbox", "classbox", "outside"}:
        out["inbox"] = rows.unsqueeze(-1) * cols.unsqueeze(-2)     # [B, N, H, W]
    if "boxclass" in want:
        out["boxclass"] = F.one_hot(labels.clamp(min=0), C).to(f32) * vf.unsqueeze(-1)
    if "classbox" in want:
        # classbox[b, c] = max over the boxes of class c (a loop over the classes present).
        classbox = torch.zeros(b, C, h, w, device=dev)
        for c in torch.unique(labels[valid]).tolist():
            sel = ((labels == c) & valid).to(f32)[..., None, None]
            classbox[:, c] = (out["inbox"] * sel).amax(1)
        out["classbox"] = classbox
    if "outside" in want:
        has_boxes = batch["has_boxes"].to(dev).to(f32).view(-1, 1, 1)
        out["outside"] = (1.0 - out["inbox"].amax(1)) * has_boxes if n else has_boxes.expand(b, h, w)
    if "overlap" in want:
        # Two boxes overlap when their row spans and column spans both intersect.
        r, c = (rows > 0).to(f32), (cols > 0).to(f32)
        hits = (torch.einsum("bnh,bmh->bnm", r, r) > 0) & (torch.einsum("bnw,bmw->bnm", c, c) > 0)
        out["overlap"] = (hits & ~torch.eye(n, dtype=torch.bool, device=dev)).to(f32)
    if "ellipse" in want:
        out["ellipse"] = ellipse_masks(boxes, h, w) * vf[..., None, None]
    if want & {"scrib", "scrib_other", "scribbled", "labelled"}:
        scribble = batch["scribble"].to(dev)
        lab = scribble != IGNORE
        out["labelled"] = lab.to(f32)
        if "scribbled" in want:
            out["scribbled"] = scribble_onehot(scribble, C)[0]
        if want & {"scrib", "scrib_other"}:
            # scrib[b, n]: the pixel is scribbled with box n's class (a comparison, no one-hot).
            same = (scribble.unsqueeze(1) == labels[..., None, None]) & lab.unsqueeze(1)
            same &= valid[..., None, None]
            out["scrib"] = same.to(f32)
            out["scrib_other"] = (lab.unsqueeze(1) & ~same & valid[..., None, None]).to(f32)
    pvalid = batch["point_valid"].to(dev)
    if "pointed" in want:
        out["pointed"] = point_masks(batch["points"].to(dev), h, w) * pvalid[..., None, None].to(f32)
    if "pointclass" in want:
        out["pointclass"] = F.one_hot(batch["point_labels"].to(dev).clamp(min=0), C).to(f32) * \
            pvalid.unsqueeze(-1).to(f32)
    if want & {"tagged", "untagged"}:
        tags = batch["tags"].to(dev)
        if tags.shape[1] < C:
            tags = F.pad(tags, (0, C - tags.shape[1]))
        has_tags = batch["has_tags"].to(dev).view(-1, 1)
        out["tagged"] = (tags[:, :C] & has_tags).to(f32)
        out["untagged"] = (~tags[:, :C] & has_tags).to(f32)
    sizes = [m.get("size", (h, w)) for m in batch.get("meta", [{}] * b)]
    row_ok = torch.stack([torch.arange(h, device=dev) < s[0] for s in sizes])
    col_ok = torch.stack([torch.arange(w, device=dev) < s[1] for s in sizes])
    facts = {k: v for k, v in out.items() if k in want}
    facts.update({
        "domains": {"region": valid, "row": row_ok, "col": col_ok, "point": pvalid},
        "box_labels": labels,
        "disc": box_index(labels, valid, 1), "cup": box_index(labels, valid, 2),
    })
    return facts
