"""The fine-tuning rule files written out by hand in plain eager torch.

What a careful person would write without the rule language, for the facts
and domains that ``LogicFineTuner.facts`` builds: log-sigmoids of the mask
logits, ``log(1 - e^x)`` for the Reichenbach implications, weighted sums of
logs for the product ∀ (SBR's ``log_product`` semantics, loss ``-log t``
averaged over the batch). Two uses:

* ``bench_finetune.py --hand`` times it side by side with the compiled rule
  file inside the same training steps: how much the compiler costs over hand
  code, and which logic share plain eager torch reaches on the machine;
* ``tests/seg/test_hand_rules.py`` checks that the compiled rule files compute
  exactly this (per rule, values and gradients): an independent reference
  for what the shipped rules say.

Each function returns ``(loss, {rule name: weighted loss})`` as
``LogicFineTuner.evaluate_rules`` does. The rule weights are written here
again on purpose (the test compares them with the files).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

from fuzzylogic.operators import log1mexp

Tensor = torch.Tensor


def _log(p: Tensor) -> Tensor:
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def _implies(lp_a: Tensor, l1p_b: Tensor) -> Tensor:
    """log(1 - a (1 - b)): the log truth of Reichenbach's a -> b."""
    return log1mexp(lp_a + l1p_b)


def _grid(domains: Dict[str, Tensor], dtype) -> Tensor:
    """[B, H, W]: 1 on the grid cells inside the image."""
    return domains["row"].to(dtype)[:, :, None] * domains["col"].to(dtype)[:, None, :]


def _cells(domains: Dict[str, Tensor], dtype) -> Tensor:
    """[B, R, H, W]: 1 on the cells of valid regions inside the image."""
    return domains["region"].to(dtype)[:, :, None, None] * _grid(domains, dtype)[:, None]


def _box_rows_cols(p: Tensor, facts, domains, valid: Tensor) -> Tuple[Tensor, Tensor]:
    """Every row / column of a box holds some object pixel (∃ as a guarded max)."""
    rows = domains["row"].to(p.dtype)
    cols = domains["col"].to(p.dtype)
    rowin = facts["rowin"] * rows[:, None, :]  # [B, R, H]
    colin = facts["colin"] * cols[:, None, :]  # [B, R, W]
    best_in_row = torch.minimum(p, colin[:, :, None, :]).amax(3)  # [B, R, H]
    best_in_col = torch.minimum(p, rowin[:, :, :, None]).amax(2)  # [B, R, W]
    box_rows = (valid[:, :, None] * rowin * _log(best_in_row)).sum((1, 2))
    box_cols = (valid[:, :, None] * colin * _log(best_in_col)).sum((1, 2))
    return box_rows, box_cols


def _finish(rows: Dict[str, Tensor], weights: Dict[str, float]):
    per_rule = {k: -weights[k] * v.mean() for k, v in rows.items()}
    loss = torch.stack(list(per_rule.values())).sum()
    return loss, {k: v.detach() for k, v in per_rule.items()}


VOC_BOXES_WEIGHTS = {
    "outside_is_background": 0.02, "inside_box": 0.02, "box_rows": 1.0, "box_cols": 1.0,
    "exclusive": 0.02, "smooth_right": 0.3, "smooth_down": 0.3, "bg_colour": 0.02,
    "fg_colour": 0.02, "keep_fg": 0.1, "keep_bg": 0.1,
}


def _next(t: Tensor, dim: int) -> Tensor:
    """t one step on along ``dim``, its last element repeated."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)


def voc_boxes(facts: Dict[str, Tensor], domains: Dict[str, Tensor]):
    """examples/rules/voc_boxes.rules."""
    z = facts["mask"]
    lp, l1p, p = F.logsigmoid(z), F.logsigmoid(-z), torch.sigmoid(z)
    # the neighbours `mask(a, r, c + 1)` / `mask(a, r + 1, c)`: the logs shifted, the
    # last column / row repeated (the rule language clamps offsets at the ends)
    lp_r, l1p_r, lp_d, l1p_d = _next(lp, -1), _next(l1p, -1), _next(lp, -2), _next(l1p, -2)
    cells = _cells(domains, z.dtype)  # [B, R, H, W]
    valid = domains["region"].to(z.dtype)
    grid = _grid(domains, z.dtype)
    inbox, bglike = facts["inbox"], facts["bglike"]
    s = (1, 2, 3)
    rows = {}
    rows["outside_is_background"] = (facts["outside"][:, None] * cells * l1p).sum(s)
    rows["inside_box"] = ((1 - inbox) * cells * l1p).sum(s)
    rows["box_rows"], rows["box_cols"] = _box_rows_cols(p, facts, domains, valid)
    pair = facts["overlap"] * valid[:, :, None] * valid[:, None, :]  # [B, R, R]
    both = log1mexp(lp[:, :, None] + lp[:, None])  # log(1 - a b) [B, R, R, H, W]
    rows["exclusive"] = (pair[..., None, None] * grid[:, None, None] * both).sum((1, 2, 3, 4))
    rows["smooth_right"] = (facts["similar_right"][:, None] * cells * (
        _implies(lp, l1p_r) + _implies(lp_r, l1p))).sum(s)
    rows["smooth_down"] = (facts["similar_down"][:, None] * cells * (
        _implies(lp, l1p_d) + _implies(lp_d, l1p))).sum(s)
    rows["bg_colour"] = (bglike * cells * l1p).sum(s)
    rows["fg_colour"] = (inbox * (1 - bglike) * cells * lp).sum(s)
    rows["keep_fg"] = (facts["zs_fg"] * cells * lp).sum(s)
    rows["keep_bg"] = (facts["zs_bg"] * cells * l1p).sum(s)
    return _finish(rows, VOC_BOXES_WEIGHTS)


REFUGE_WEIGHTS = {
    "cup_in_disc": 1.0, "inside_box": 1.0, "box_rows": 1.0, "box_cols": 1.0, "compact": 1.0,
    "ellipse_core": 1.0, "ellipse_corners": 1.0, "keep_fg": 0.5, "keep_bg": 0.5,
}


def refuge(facts: Dict[str, Tensor], domains: Dict[str, Tensor]):
    """examples/rules/refuge.rules (region 0: the disc, 1: the cup)."""
    z = facts["mask"]
    lp, l1p, p = F.logsigmoid(z), F.logsigmoid(-z), torch.sigmoid(z)
    cells = _cells(domains, z.dtype)
    valid = domains["region"].to(z.dtype)
    grid = _grid(domains, z.dtype)
    inbox, ellipse = facts["inbox"], facts["ellipse"]
    s = (1, 2, 3)
    rows = {}
    rows["cup_in_disc"] = (grid * _implies(lp[:, 1], l1p[:, 0])).sum((1, 2))
    rows["inside_box"] = ((1 - inbox) * cells * l1p).sum(s)
    rows["box_rows"], rows["box_cols"] = _box_rows_cols(p, facts, domains, valid)
    rows["compact"] = (cells * _implies(lp, F.logsigmoid(-facts["mask_inward"]))).sum(s)
    rows["ellipse_core"] = (ellipse * cells * lp).sum(s)
    rows["ellipse_corners"] = (inbox * (1 - ellipse) * cells * l1p).sum(s)
    rows["keep_fg"] = (facts["zs_fg"] * cells * lp).sum(s)
    rows["keep_bg"] = (facts["zs_bg"] * cells * l1p).sum(s)
    return _finish(rows, REFUGE_WEIGHTS)


# rule file name -> (hand-written loss, its rule weights)
HAND: Dict[str, Tuple[Callable, Dict[str, float]]] = {
    "voc_boxes.rules": (voc_boxes, VOC_BOXES_WEIGHTS),
    "refuge.rules": (refuge, REFUGE_WEIGHTS),
}
