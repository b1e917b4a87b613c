"""Segmentation metrics with the conventions everyone reports.

- Confusion matrix over a whole split (rows: ground truth, columns:
  prediction), accumulated with one `bincount` per image; ground-truth 255 is
  ignored. A prediction of 255 ("uncertain", e.g. a pseudo-label) on a
  labelled pixel lands in an extra "unassigned" column: it counts as a miss
  (false negative) of the true class and as nobody's false positive.
  IoU_c = TP / (TP + FP + FN); a class absent from both ground truth and
  prediction has IoU NaN (JSON null) and is left out of the mean: mIoU is the
  mean over the classes with a non-empty union.
- REFUGE: Dice per image for the disc (label 1 or 2) and the cup (label 2),
  averaged over images; Dice of two empty masks is 1 (nothing to find,
  nothing found), of one empty mask 0. vCDR = vertical cup diameter /
  vertical disc diameter, a diameter being the number of rows from the
  region's first to its last row (rows spanned); vCDR = 0 when the disc is
  empty. Reported as the mean absolute error against the ground truth's vCDR.
- Coverage: share of pixels whose label is not 255.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from .errors import DatasetError, PredictionError

IGNORE = 255


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> "ConfusionMatrix":
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise PredictionError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(target.shape)}")
        C = self.num_classes
        t = target.reshape(-1).long().cpu()
        p = pred.reshape(-1).long().cpu()
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= C):
            raise DatasetError(f"ground truth holds labels outside 0..{C - 1} (and {self.ignore_index})")
        unassigned = p == self.ignore_index
        bad = ~unassigned & ((p < 0) | (p >= C))
        if bool(bad.any()):
            raise PredictionError(f"prediction holds labels outside 0..{C - 1} (and {self.ignore_index}): "
                             f"{sorted(set(p[bad].tolist()))[:5]}")
        p = torch.where(unassigned, torch.full_like(p, C), p)
        self.mat += torch.bincount(t * (C + 1) + p, minlength=C * (C + 1)).view(C, C + 1)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.mat += other.mat
        return self

    def iou(self) -> torch.Tensor:
        m = self.mat.double()
        tp = m.diagonal()
        fp = m[:, : self.num_classes].sum(0) - tp
        fn = m.sum(1) - tp
        union = tp + fp + fn
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        iou = self.iou()
        ok = ~torch.isnan(iou)
        return float(iou[ok].mean()) if bool(ok.any()) else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.mat.sum())
        return float(self.mat.diagonal().sum()) / total if total else float("nan")

    def as_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict:
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "miou": _num(self.miou()),
            "per_class_iou": {n: _num(v) for n, v in zip(names, self.iou().tolist())},
            "pixel_accuracy": _num(self.pixel_accuracy()),
            "labelled_pixels": int(self.mat.sum()),
            "unassigned_pixels": int(self.mat[:, -1].sum()),
        }


def _num(x: float) -> Optional[float]:
    return None if x is None or math.isnan(x) else float(x)


def dice(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    p = torch.as_tensor(pred).bool()
    g = torch.as_tensor(gt).bool()
    if p.shape != g.shape:
        raise PredictionError(f"dice: shapes differ {tuple(p.shape)} vs {tuple(g.shape)}")
    s = int(p.sum()) + int(g.sum())
    if s == 0:
        return 1.0
    return 2.0 * int((p & g).sum()) / s


def vertical_diameter(mask: torch.Tensor) -> int:
    """Rows spanned by a binary mask [H, W] (last row - first row + 1; 0 if empty)."""
    rows = torch.nonzero(torch.as_tensor(mask).bool().any(1)).flatten()
    return 0 if rows.numel() == 0 else int(rows[-1] - rows[0] + 1)


def vcdr(labels: torch.Tensor) -> float:
    """Vertical cup-to-disc ratio of internal REFUGE labels (disc = 1|2, cup = 2)."""
    labels = torch.as_tensor(labels)
    d = vertical_diameter((labels == 1) | (labels == 2))
    return 0.0 if d == 0 else vertical_diameter(labels == 2) / d


def coverage(labels: torch.Tensor, ignore_index: int = IGNORE) -> float:
    """Share of pixels with a label (not `ignore_index`)."""
    labels = torch.as_tensor(labels)
    return float((labels != ignore_index).float().mean()) if labels.numel() else float("nan")


class RefugeMetrics:
    """Per-image disc/cup Dice and vCDR, averaged over a split."""

    def __init__(self):
        self.rows: List[Dict] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor, image_id: str = "") -> Dict:
        pred = torch.as_tensor(pred)
        gt = torch.as_tensor(gt)
        if pred.shape != gt.shape:
            raise PredictionError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
        row = {
            "id": image_id,
            "dice_disc": dice((pred == 1) | (pred == 2), (gt == 1) | (gt == 2)),
            "dice_cup": dice(pred == 2, gt == 2),
            "vcdr_pred": vcdr(pred),
            "vcdr_gt": vcdr(gt),
        }
        row["vcdr_abs_error"] = abs(row["vcdr_pred"] - row["vcdr_gt"])
        self.rows.append(row)
        return row

    def as_dict(self) -> Dict:
        n = len(self.rows)

        def mean(k):
            return sum(r[k] for r in self.rows) / n if n else None

        return {"dice_disc": mean("dice_disc"), "dice_cup": mean("dice_cup"),
                "vcdr_mae": mean("vcdr_abs_error"), "images": n, "per_image": list(self.rows)}


class SegMetrics:
    """Everything reported for a split: VOC mIoU; REFUGE Dice/vCDR plus mIoU; coverage."""

    def __init__(self, dataset: str, class_names: Sequence[str]):
        self.dataset = dataset
        self.class_names = list(class_names)
        if dataset == "refuge" and len(self.class_names) == 3:
            # Label 1 holds the rim only (grey 128; the disc is rim + cup): its IoU is
            # the rim's, named so. The disc's own overlap is dice_disc.
            self.class_names = ["background", "rim", "cup"]
        self.cm = ConfusionMatrix(len(class_names))
        self.refuge = RefugeMetrics() if dataset == "refuge" else None
        self.covered = 0
        self.pixels = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, image_id: str = "") -> None:
        pred = torch.as_tensor(pred)
        self.cm.update(pred, gt)
        if self.refuge is not None:
            self.refuge.update(pred, gt, image_id)
        self.covered += int((pred != IGNORE).sum())
        self.pixels += pred.numel()

    def as_dict(self) -> Dict:
        out = {"dataset": self.dataset, **self.cm.as_dict(self.class_names),
               "coverage": self.covered / self.pixels if self.pixels else None}
        if self.refuge is not None:
            out.update(self.refuge.as_dict())
        return out
