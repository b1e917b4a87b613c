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

Batched, from a `collate` batch: `build_facts(batch, C)` returns a dict laid
out as predicates whose arguments are (pixel, box), (row, box), (col, box),
(class, pixel), (box, class), ... with the batch axis first:

  inbox      [B, H, W, N]  pixel inside box n            (pixel, box)
  rowin      [B, H, N]     row r crosses box n           (row, box)
  colin      [B, W, N]     column x crosses box n        (col, box)
  inellipse  [B, H, W, N]  pixel inside the ellipse inscribed in box n
  boxclass   [B, N, C]     box n has class c (one-hot)    (box, class)
  classbox   [B, C, H, W]  pixel inside some box of class c   (class, pixel)
  outside    [B, H, W]     pixel known to lie outside every box: 0 for an
                           image without box labels (no claim is made)
  scribbled  [B, C, H, W]  pixel scribbled with class c; labelled [B, H, W]
  pointed    [B, H, W, K]  pixel holds point k; pointclass [B, K, C]
  tagged     [B, C]        class known present; untagged [B, C] known absent
                           (both 0 for an image without tags)
  domains    {"box": box_valid [B, N], "point": point_valid [B, K]}
  disc_box / cup_box LongTensor [B]: index of the REFUGE disc / cup box
                           (label 1 / 2; 0 where absent: check box_valid)
`movedim` gives other argument orders.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

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
    return out.index_reduce_(0, labels.long(), box_masks(boxes, H, W, soft), "amax")


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
        raise ValueError(f"scribble holds a class outside 0..{C - 1} (and 255)")
    onehot = torch.nn.functional.one_hot(safe, C).movedim(-1, -3).to(torch.float32)
    onehot = onehot * labelled.unsqueeze(-3)
    return onehot, labelled.to(torch.float32)


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


def build_facts(batch: Dict, num_classes: int, soft: bool = False,
                device: Optional[torch.device] = None) -> Dict:
    """The fact tensors of a `collate` batch (layout in the module docstring)."""
    dev = device or batch["image"].device
    b, _, h, w = batch["image"].shape
    C = num_classes
    boxes = batch["boxes"].to(dev)
    valid = batch["box_valid"].to(dev)
    labels = batch["box_labels"].to(dev)
    vf = valid.to(torch.float32)
    rows = row_masks(boxes, h, soft) * vf.unsqueeze(-1)            # [B, N, H]
    cols = col_masks(boxes, w, soft) * vf.unsqueeze(-1)            # [B, N, W]
    per_box = rows.unsqueeze(-1) * cols.unsqueeze(-2)               # [B, N, H, W]
    inbox = per_box.permute(0, 2, 3, 1)
    boxclass = torch.nn.functional.one_hot(labels.clamp(min=0), C).to(torch.float32) * vf.unsqueeze(-1)
    # classbox[b, c] = max over the boxes of class c: one scatter-max over (b, c) slots
    # (padding boxes go to a spare slot), never a [B, H, W, N, C] product.
    n = boxes.shape[1]
    slot = torch.where(valid, torch.arange(b, device=dev).view(-1, 1) * C + labels.clamp(min=0),
                       torch.full_like(labels, b * C))
    classbox = torch.zeros(b * C + 1, h, w, device=dev).index_reduce_(
        0, slot.reshape(-1), per_box.reshape(b * n, h, w), "amax")[: b * C].reshape(b, C, h, w)
    has_boxes = batch["has_boxes"].to(dev)
    outside = (1.0 - per_box.amax(1)) * has_boxes.view(-1, 1, 1).to(torch.float32)
    inellipse = ellipse_masks(boxes, h, w).permute(0, 2, 3, 1) * vf[:, None, None]
    scribbled, labelled = scribble_onehot(batch["scribble"].to(dev), C)
    pvalid = batch["point_valid"].to(dev)
    pointed = point_masks(batch["points"].to(dev), h, w).permute(0, 2, 3, 1) * \
        pvalid[:, None, None].to(torch.float32)
    pointclass = torch.nn.functional.one_hot(batch["point_labels"].to(dev).clamp(min=0), C) \
        .to(torch.float32) * pvalid.unsqueeze(-1).to(torch.float32)
    tags = batch["tags"].to(dev)
    if tags.shape[1] < C:
        tags = torch.nn.functional.pad(tags, (0, C - tags.shape[1]))
    has_tags = batch["has_tags"].to(dev).view(-1, 1)
    return {
        "inbox": inbox, "rowin": rows.transpose(1, 2), "colin": cols.transpose(1, 2),
        "inellipse": inellipse, "boxclass": boxclass, "classbox": classbox, "outside": outside,
        "scribbled": scribbled, "labelled": labelled, "pointed": pointed,
        "pointclass": pointclass,
        "tagged": (tags[:, :C] & has_tags).to(torch.float32),
        "untagged": (~tags[:, :C] & has_tags).to(torch.float32),
        "domains": {"box": valid, "point": pvalid},
        "box_labels": labels,
        "disc_box": box_index(labels, valid, 1), "cup_box": box_index(labels, valid, 2),
    }
