"""A plain PyTorch training loop whose only supervision is a fuzzy-logic theory.

Toy fundus-like images: a bright disc (ellipse) with a brighter cup inside.
The weak labels are the two bounding boxes. A small CNN predicts cup and disc
logits and is trained with ``LogicLoss`` on rules that use the boxes only:

    the cup lies inside the disc;
    outside its box, a region is absent;
    every row and every column of a box holds some of its region.

No mask is used for training; the masks are only used to print the Dice at
the end (with the boxes painted as masks as the baseline to beat).

    .venv/bin/python examples/train_loop.py [--steps 300] [--size 48]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fuzzylogic as fl  # noqa: E402
from fuzzylogic.nn import LogicLoss  # noqa: E402

RULES = """
semantics log_product            # SBR: product ∀ in log space, probsum ∃, loss -log t
sort row
sort col
sort box
predicate cup(row, col) logits
predicate disc(row, col) logits
predicate rowin(row, box)        # [B, H, 2]: row r crosses box b
predicate colin(col, box)        # [B, W, 2]
constant disc_box: box = 0
constant cup_box: box = 1

rule cup_in_disc: forall r, c: cup(r, c) -> disc(r, c)
rule disc_outside [weight = 0.1]:
    forall r, c where not (rowin(r, disc_box) and colin(c, disc_box)): not disc(r, c)
rule cup_outside [weight = 0.1]:
    forall r, c where not (rowin(r, cup_box) and colin(c, cup_box)): not cup(r, c)
rule disc_rows: forall r in rowin(r, disc_box): exists c in colin(c, disc_box): disc(r, c)
rule disc_cols: forall c in colin(c, disc_box): exists r in rowin(r, disc_box): disc(r, c)
rule cup_rows: forall r in rowin(r, cup_box): exists c in colin(c, cup_box): cup(r, c)
rule cup_cols: forall c in colin(c, cup_box): exists r in rowin(r, cup_box): cup(r, c)
"""


def ellipse(h, w, cy, cx, ry, rx):
    y = torch.arange(h, dtype=torch.float32)[:, None]
    x = torch.arange(w, dtype=torch.float32)[None, :]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def toy_batch(n, size, g):
    """Images [n, 1, S, S], weak labels (row / column masks of the boxes), true masks."""
    imgs, rows, cols, discs, cups = [], [], [], [], []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * 0.3 + 0.35) * size
        ry, rx = (torch.rand(2, generator=g) * 0.12 + 0.18) * size
        disc = ellipse(size, size, cy, cx, ry, rx)
        cup = ellipse(size, size, cy, cx, ry * 0.5, rx * 0.5)
        img = 0.2 + 0.4 * disc.float() + 0.3 * cup.float() + 0.15 * torch.randn(size, size, generator=g)
        r = torch.stack([disc.any(1), cup.any(1)], -1).float()  # the tight boxes' rows
        c = torch.stack([disc.any(0), cup.any(0)], -1).float()
        imgs.append(img[None])
        rows.append(r)
        cols.append(c)
        discs.append(disc)
        cups.append(cup)
    return torch.stack(imgs), torch.stack(rows), torch.stack(cols), torch.stack(discs), torch.stack(cups)


def dice(pred, gt):
    inter = (pred & gt).sum((1, 2)).float()
    return (2 * inter / (pred.sum((1, 2)) + gt.sum((1, 2))).clamp_min(1)).mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(16, 2, 3, padding=1),
    ).to(device)
    theory = fl.compile(RULES)
    criterion = LogicLoss(theory, validate=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    t0 = time.time()
    for step in range(args.steps):
        x, rows, cols, _, _ = (t.to(device) for t in toy_batch(args.batch, args.size, g))
        logits = net(x)
        loss = criterion(cup=logits[:, 0], disc=logits[:, 1], rowin=rows, colin=cols)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            criterion.validate = False  # shapes and ranges checked once; no host sync after
        if step % 50 == 0 or step == args.steps - 1:
            sat = {k: f"{v.mean().item():.2f}" for k, v in criterion.last_truth.items()}
            print(f"step {step:4d}  loss {loss.item():9.3f}  truth {sat}")

    x, rows, cols, disc, cup = (t.to(device) for t in toy_batch(32, args.size, g))
    with torch.no_grad():
        logits = net(x)
        print(theory.report(cup=logits[:, 0], disc=logits[:, 1], rowin=rows, colin=cols))
    box_disc = (rows[..., 0, None] * cols[..., None, :, 0]) > 0.5
    box_cup = (rows[..., 1, None] * cols[..., None, :, 1]) > 0.5
    print(f"Dice disc {dice(logits[:, 1] > 0, disc):.3f} (box painted as mask: {dice(box_disc, disc):.3f}); "
          f"cup {dice(logits[:, 0] > 0, cup):.3f} (box: {dice(box_cup, cup):.3f}); "
          f"{time.time() - t0:.1f} s on {device}")


if __name__ == "__main__":
    main()
