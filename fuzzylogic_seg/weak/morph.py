"""Binary morphology on torch tensors (no per-pixel Python loops).

Square structuring elements, computed separably from shifted slices (a
3x3 `max_pool2d` on CPU is ~20x slower for one-channel maps). The image
border counts as outside a region for `erode(frame_outside=True)`, so
strokes and points also stay away from the image edge.
"""
from __future__ import annotations

from typing import Tuple

import torch


def _shift_reduce(x: torch.Tensor, r: int, dim: int, op) -> torch.Tensor:
    """op-reduce over offsets -r..r along `dim`; offsets past the edge are skipped."""
    out = x.clone()
    n = x.shape[dim]
    for k in range(1, min(r, n - 1) + 1):
        a = out.narrow(dim, 0, n - k)
        a.copy_(op(a, x.narrow(dim, k, n - k)))
        b = out.narrow(dim, k, n - k)
        b.copy_(op(b, x.narrow(dim, 0, n - k)))
    return out


def dilate(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Dilation by a (2r+1)-square; mask [..., H, W] -> bool."""
    m = mask.bool()
    if r <= 0:
        return m.clone()
    return _shift_reduce(_shift_reduce(m, r, -1, torch.logical_or), r, -2, torch.logical_or)


def erode(mask: torch.Tensor, r: int = 1, frame_outside: bool = True) -> torch.Tensor:
    """Erosion by a (2r+1)-square; the frame counts as outside when `frame_outside`."""
    m = mask.bool()
    if r <= 0:
        return m.clone()
    out = _shift_reduce(_shift_reduce(m, r, -1, torch.logical_and), r, -2, torch.logical_and)
    if frame_outside:
        out[..., :r, :] = False
        out[..., -r:, :] = False
        out[..., :, :r] = False
        out[..., :, -r:] = False
    return out


def max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of a numeric tensor [..., H, W] (edges: the valid neighbours)."""
    return _shift_reduce(_shift_reduce(x, 1, -1, torch.maximum), 1, -2, torch.maximum)


def depth_and_skeleton(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Erosion depth and Lantuejoul skeleton levels of a batch of regions.

    masks: [R, H, W] bool. Returns
      depth [R, H, W] long: how many 3x3 erosions a pixel survives, plus one
            (1 on a region's boundary, 0 outside; the chessboard distance to
            the outside, the frame counting as outside);
      level [R, H, W] long: k where the pixel lies on the k-th skeleton
            subset S_k = E^k X minus open(E^k X), -1 elsewhere. The skeleton
            of the eroded region E^m X is exactly {level >= m};
      max_depth [R] long.
    Each region is processed on its bounding box (exact: beyond it the region
    is empty, which erosion treats like the frame).
    """
    masks = masks.bool()
    r, h, w = masks.shape
    depth = torch.zeros(r, h, w, dtype=torch.long)
    level = torch.full((r, h, w), -1, dtype=torch.long)
    max_depth = torch.zeros(r, dtype=torch.long)
    rows_any = masks.any(2)
    cols_any = masks.any(1)
    for i in range(r):
        ys = torch.nonzero(rows_any[i]).flatten()
        if ys.numel() == 0:
            continue
        xs = torch.nonzero(cols_any[i]).flatten()
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        d, lv, k = _depth_and_skeleton_one(masks[i, y0:y1, x0:x1])
        depth[i, y0:y1, x0:x1] = d
        level[i, y0:y1, x0:x1] = lv
        max_depth[i] = k
    return depth, level, max_depth


def _depth_and_skeleton_one(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    cur = mask
    depth = torch.zeros(mask.shape, dtype=torch.int32)
    level = torch.full(mask.shape, -1, dtype=torch.int32)
    k = 0
    while bool(cur.any()):
        nxt = erode(cur, 1)
        level.masked_fill_(cur & ~dilate(nxt, 1), k)
        depth.masked_fill_(cur & ~nxt, k + 1)
        cur = nxt
        k += 1
    return depth.long(), level.long(), k


def connected_components(masks: torch.Tensor) -> torch.Tensor:
    """8-connected components of each mask in a batch [R, H, W] bool.

    Returns long labels [R, H, W]: 0 outside, 1..K_r inside. Label
    propagation (3x3 maximum restricted to the mask) until nothing changes.
    """
    masks = masks.bool()
    r, h, w = masks.shape
    idx = torch.arange(1, h * w + 1, dtype=torch.int64).reshape(1, h, w).expand(r, h, w)
    lab = torch.where(masks, idx, torch.zeros((), dtype=torch.int64))
    while True:
        prev = lab
        for _ in range(16):  # one convergence check (a host sync) every few steps
            lab = torch.where(masks, max3x3(lab), lab)
        if torch.equal(prev, lab):
            break
    out = torch.zeros_like(lab)
    for i in range(r):  # relabel per region (a loop over regions, not pixels)
        vals, inv = torch.unique(lab[i], return_inverse=True)
        offset = 0 if int(vals[0]) == 0 else 1   # vals[0] is 0 unless the mask fills the image
        out[i] = inv + offset
    return out
