"""Per-prompt masks -> one multi-class label map (the pseudo-label rule).

Rule (also in docs/FINETUNE.md), for one image with prompts ``k`` of class
``c_k``, probability maps ``P_k`` and scores ``s_k``, and a confidence
threshold ``t`` in [0.5, 1):

1. A pixel's *candidates* are the prompts with ``P_k > t``. If there are any,
   the pixel takes the class of the candidate with the highest score ``s_k``
   (ties: the higher ``P_k``); overlaps are resolved by score.
2. Else it is background if it is known background (REFUGE: outside the
   crop; VOC with boxes: covered by no box) or confidently background
   (``max_k P_k < 1 - t``).
3. Else it is uncertain: 255.
4. Pixels whose label the weak label gives outright (scribbled pixels) keep it.

Scores: for SAM, its own predicted IoU of the mask; for nested classes
(REFUGE cup inside disc) the nesting depth, so the inner class wins; for the
painted-box baseline, minus the box area, so smaller boxes lie on top.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .errors import ConfigError

IGNORE = 255


def compose(probs: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor,
            threshold: float = 0.5, known_background: Optional[torch.Tensor] = None,
            known: Optional[torch.Tensor] = None, background: int = 0) -> torch.Tensor:
    """Label map ``LongTensor [H, W]`` from ``probs [P, H, W]``, ``classes [P]``, ``scores [P]``.

    ``known_background``: bool [H, W]; ``known``: LongTensor [H, W] with 255
    where the weak label says nothing.
    """
    if not 0.5 <= threshold < 1.0:
        raise ConfigError(f"threshold must lie in [0.5, 1), got {threshold}")
    h, w = probs.shape[-2:]
    out = torch.full((h, w), IGNORE, dtype=torch.long, device=probs.device)
    if probs.shape[0]:
        probs = probs.float()
        # Dense rank of the scores (equal scores, equal rank): the score decides and
        # the probability only breaks ties.
        sc = scores.float().to(probs.device)
        rank = torch.searchsorted(torch.unique(sc), sc).float()
        cand = probs > threshold
        key = torch.where(cand, rank[:, None, None] * 2 + probs, torch.full_like(probs, -1.0))
        best = key.argmax(0)
        has = cand.any(0)
        out[has] = classes.to(probs.device)[best[has]]
        bg = ~has & (probs.max(0).values < 1 - threshold)
    else:
        bg = torch.ones(h, w, dtype=torch.bool, device=out.device)
    if known_background is not None:
        bg = bg | known_background.to(out.device).bool()
    out[bg & (out == IGNORE)] = background
    if known is not None:
        k = known.to(out.device)
        out = torch.where(k != IGNORE, k, out)
    return out


def paint_boxes(boxes: torch.Tensor, labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The painted-box baseline: each box filled with its class, smaller boxes on
    top, background outside every box. Boxes are half-open pixel boxes."""
    out = torch.zeros(height, width, dtype=torch.long)
    if len(boxes) == 0:
        return out
    b = boxes.float()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    for i in torch.argsort(area, descending=True, stable=True).tolist():
        x0, y0, x1, y1 = box_pixels(b[i], height, width)
        out[y0:y1, x0:x1] = int(labels[i])
    return out


def box_pixels(box, height: int, width: int) -> tuple:
    """Integer pixel ranges a half-open float box covers (pixel centre inside)."""
    x0, y0, x1, y1 = [float(v) for v in box]
    ix0, iy0 = max(0, math.ceil(x0 - 0.5)), max(0, math.ceil(y0 - 0.5))
    ix1, iy1 = min(width, math.ceil(x1 - 0.5)), min(height, math.ceil(y1 - 0.5))
    return ix0, iy0, max(ix0, ix1), max(iy0, iy1)


def box_union(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """bool [H, W]: pixels inside some box."""
    m = torch.zeros(height, width, dtype=torch.bool)
    for b in boxes:
        x0, y0, x1, y1 = box_pixels(b, height, width)
        m[y0:y1, x0:x1] = True
    return m
