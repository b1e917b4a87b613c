"""Batching samples whose weak labels vary in number and kind.

`collate(samples)` -> dict:
  id [B] list, meta [B] list, weak [B] list of WeakLabels (as given),
  image uint8 [B, 3, H, W], gt long [B, H, W] (when every sample has it),
  boxes float [B, N, 4], box_labels long [B, N] (-1 on padding),
  box_valid bool [B, N]  (the `domains=` mask of sort box),
  points float [B, K, 2], point_labels long [B, K] (-1), point_valid bool [B, K],
  scribble long [B, H, W] (255 where none), tags bool [B, C],
  has_boxes / has_scribble / has_points / has_tags bool [B]: which kinds each
  image carries (heterogeneous supervision).
N and K are the largest counts in the batch (at least 1, so shapes never have
a zero axis). Images must share a size: use `ResizePad`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ..errors import ConfigError
from ..weak.types import IGNORE, WeakLabels


def pad_boxes(weaks: Sequence[WeakLabels]):
    n = max([1] + [w.boxes.shape[0] for w in weaks])
    b = len(weaks)
    boxes = torch.zeros(b, n, 4)
    labels = torch.full((b, n), -1, dtype=torch.long)
    valid = torch.zeros(b, n, dtype=torch.bool)
    for i, w in enumerate(weaks):
        k = w.boxes.shape[0]
        boxes[i, :k] = w.boxes
        labels[i, :k] = w.box_labels
        valid[i, :k] = True
    return boxes, labels, valid


def pad_points(weaks: Sequence[WeakLabels]):
    n = max([1] + [0 if w.points is None else w.points.shape[0] for w in weaks])
    b = len(weaks)
    points = torch.zeros(b, n, 2)
    labels = torch.full((b, n), -1, dtype=torch.long)
    valid = torch.zeros(b, n, dtype=torch.bool)
    for i, w in enumerate(weaks):
        if w.points is None:
            continue
        k = w.points.shape[0]
        points[i, :k] = w.points
        labels[i, :k] = w.point_labels
        valid[i, :k] = True
    return points, labels, valid


def collate(samples: List[Dict], num_classes: Optional[int] = None) -> Dict:
    if not samples:
        raise ConfigError("collate: empty batch")
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        raise ConfigError(f"collate: images of different sizes {sorted(sizes)}; "
                          f"use data.transforms.ResizePad(size) so a batch can be stacked")
    h, w = samples[0]["image"].shape[-2:]
    weaks = [s["weak"] for s in samples]
    out: Dict = {
        "id": [s["id"] for s in samples],
        "meta": [s.get("meta", {}) for s in samples],
        "weak": weaks,
        "image": torch.stack([s["image"] for s in samples]),
    }
    if all(s.get("gt") is not None for s in samples):
        out["gt"] = torch.stack([s["gt"] for s in samples])
    out["boxes"], out["box_labels"], out["box_valid"] = pad_boxes(weaks)
    out["points"], out["point_labels"], out["point_valid"] = pad_points(weaks)
    scrib = torch.full((len(samples), h, w), IGNORE, dtype=torch.long)
    for i, wk in enumerate(weaks):
        if wk.scribble is not None:
            if tuple(wk.scribble.shape) != (h, w):
                raise ConfigError(f"collate: scribble of {samples[i]['id']!r} is "
                                  f"{tuple(wk.scribble.shape)}, image is {(h, w)}")
            scrib[i] = wk.scribble
    out["scribble"] = scrib
    c = num_classes or max([0] + [wk.tags.numel() for wk in weaks if wk.tags is not None])
    tags = torch.zeros(len(samples), c, dtype=torch.bool)
    for i, wk in enumerate(weaks):
        if wk.tags is not None:
            tags[i, : wk.tags.numel()] = wk.tags
    out["tags"] = tags
    out["has_boxes"] = torch.tensor([wk.boxes.shape[0] > 0 for wk in weaks])
    out["has_scribble"] = torch.tensor([wk.scribble is not None for wk in weaks])
    out["has_points"] = torch.tensor([wk.points is not None for wk in weaks])
    out["has_tags"] = torch.tensor([wk.tags is not None for wk in weaks])
    return out


class Collate:
    """A picklable `collate` with a fixed class count (for DataLoader workers)."""

    def __init__(self, num_classes: Optional[int] = None):
        self.num_classes = num_classes

    def __call__(self, samples: List[Dict]) -> Dict:
        return collate(samples, self.num_classes)
