"""Binary morphology on torch tensors (no per-pixel Python loops).

Square structuring elements via max-pooling; the image border counts as
outside a region, so erosion also eats regions from the frame (strokes and
points stay away from the image edge as well as from object borders).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def _as_batch(x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    shape = x.shape
    return x.reshape(-1, 1, shape[-2], shape[-1]).to(torch.float32), shape


def dilate(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Dilation by a (2r+1)-square; mask [..., H, W] bool -> bool."""
    if r <= 0:
        return mask.clone().bool()
    x, shape = _as_batch(mask)
    y = F.max_pool2d(x, 2 * r + 1, stride=1, padding=r)
    return (y > 0.5).reshape(shape)


def erode(mask: torch.Tensor, r: int = 1, frame_outside: bool = True) -> torch.Tensor:
    """Erosion by a (2r+1)-square; the frame counts as outside when `frame_outside`."""
    if r <= 0:
        return mask.clone().bool()
    x, shape = _as_batch(mask)
    comp = 1.0 - x
    if frame_outside:
        comp = F.pad(comp, (r, r, r, r), value=1.0)
        y = F.max_pool2d(comp, 2 * r + 1, stride=1)
    else:
        y = F.max_pool2d(comp, 2 * r + 1, stride=1, padding=r)
    return (y < 0.5).reshape(shape)


def depth_and_skeleton(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Erosion depth and Lantuejoul skeleton levels of a batch of regions.

    masks: [R, H, W] bool. Returns
      depth [R, H, W] long: how many 3x3 erosions a pixel survives, plus one
            (1 on a region's boundary, 0 outside; the chessboard distance to
            the outside);
      level [R, H, W] long: k where the pixel lies on the k-th skeleton
            subset S_k = E^k X minus open(E^k X), -1 elsewhere. The skeleton
            of the eroded region E^m X is exactly {level >= m};
      max_depth [R] long.
    """
    cur = masks.bool()
    depth = torch.zeros(cur.shape, dtype=torch.long)
    level = torch.full(cur.shape, -1, dtype=torch.long)
    k = 0
    while bool(cur.any()):
        nxt = erode(cur, 1)
        skel = cur & ~dilate(nxt, 1)
        level = torch.where(skel, torch.full_like(level, k), level)
        depth += cur.long()
        cur = nxt
        k += 1
    max_depth = depth.flatten(1).amax(1) if depth.numel() else torch.zeros(cur.shape[0], dtype=torch.long)
    return depth, level, max_depth


def connected_components(masks: torch.Tensor) -> torch.Tensor:
    """8-connected components of each mask in a batch [R, H, W] bool.

    Returns long labels [R, H, W]: 0 outside, 1..K_r inside (numbered in
    raster order of each component's last pixel). Label propagation by
    max-pooling restricted to the mask, until nothing changes.
    """
    masks = masks.bool()
    r, h, w = masks.shape
    dtype = torch.float32 if h * w < 2 ** 24 else torch.float64  # exact integers
    idx = torch.arange(1, h * w + 1, dtype=dtype).reshape(1, h, w).expand(r, h, w)
    lab = torch.where(masks, idx, torch.zeros((), dtype=dtype)).unsqueeze(1)
    m = masks.unsqueeze(1)
    while True:
        for _ in range(8):  # check for convergence every few steps (one host sync)
            lab = torch.where(m, F.max_pool2d(lab, 3, stride=1, padding=1), lab)
        nxt = torch.where(m, F.max_pool2d(lab, 3, stride=1, padding=1), lab)
        if torch.equal(nxt, lab):
            break
        lab = nxt
    lab = lab[:, 0].long()
    out = torch.zeros_like(lab)
    for i in range(r):  # relabel per region (a loop over regions, not pixels)
        vals, inv = torch.unique(lab[i], return_inverse=True)
        # vals[0] is 0 when the region does not fill the image
        offset = 0 if int(vals[0]) == 0 else 1
        out[i] = inv + offset
    return out
