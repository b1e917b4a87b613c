"""Pseudo-labels for the training split: weak-mask, zero-shot and logic.

API (stable; the pipeline calls it)::

    summary = make_pseudo_labels("logic", dataset, sam=sam, out_dir="out/pseudo",
                                 threshold=0.5, dataset_kind="voc", weak="boxes",
                                 rules=["examples/rules/voc_boxes.rules"], epochs=10,
                                 seed=0, device="cpu", evaluate=True)

``method``:

* ``weak-mask``: the weak label painted as a mask, the trivial baseline
  (boxes filled with their class, smaller boxes on top, background outside
  every box; scribbles / points: the marked pixels, 255 elsewhere; tags: the
  whole image in the tagged class when exactly one class is tagged, else 255);
* ``zero-shot``: SAM prompted from the weak labels (:mod:`.prompts`), no
  fine-tuning; tags: SAM's automatic proposals, classed by the tag when the
  image has one;
* ``logic``: SAM fine-tuned with the rule files (:mod:`.finetune`), then
  prompted the same way; tags: proposals classed by a head trained under the
  tag rules (:mod:`.tags`).

``dataset`` yields samples with weak labels only (``with_gt=False``); the
ground truth is read after every label is written, only for the summary's
evaluation (``dataset.read_gt(i)``), so it cannot leak into the labels.
Per-prompt masks become one label map by :func:`fuzzylogic_seg.compose.compose`
(overlaps resolved by score, pixels below ``threshold`` confidence 255).

Writes ``out_dir/ID.png`` per image (VOC: palette PNG of class indices,
255 = uncertain; REFUGE: grey PNG 0 cup / 128 rim / 255 background, and
where the threshold leaves uncertain pixels, ``out_dir/uncertain/ID.png``),
and ``out_dir/summary.json``: method, settings, coverage (share of pixels
with a label) and, when masks exist, mIoU and per-class IoU (VOC) or disc /
cup Dice and vCDR error (REFUGE), computed over every pixel with 255 counted
as a miss, plus the same over labelled pixels only (``*_labelled``).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .compose import IGNORE, box_union, compose, paint_boxes
from .errors import ConfigError

METHODS = ("weak-mask", "zero-shot", "logic")


# ------------------------------------------------------------ weak-mask
def labelled_otherwise(weak, kind: str) -> bool:
    """Whether an image lacks weak labels of ``kind`` but has others (a mixed
    weak-label folder, ``fuzzyseg data weak --mix``): then it says nothing about
    ``kind``, where an image with no label at all under boxes means "no object"."""
    have = weak.kinds()
    return kind not in have and bool(have)


def weak_mask(weak, size, kind: str, dataset_kind: str = "voc") -> torch.Tensor:
    """The weak label painted as a label map [H, W] (module doc). An image labelled
    with other kinds only (a mixed folder) is all uncertain (255)."""
    h, w = size
    if labelled_otherwise(weak, kind):
        return torch.full((h, w), IGNORE, dtype=torch.long)
    if kind == "boxes":
        return paint_boxes(weak.boxes, weak.box_labels, h, w)
    if kind == "scribbles":
        if weak.scribble is None:
            raise ConfigError("weak-mask with scribbles: this image has no scribble")
        return weak.scribble.long().clone()
    if kind == "points":
        out = torch.full((h, w), IGNORE, dtype=torch.long)
        if weak.points is not None:
            xy = weak.points.floor().long()
            x, y = xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)
            out[y, x] = weak.point_labels.long()
        return out
    if kind == "tags":
        out = torch.full((h, w), IGNORE, dtype=torch.long)
        tags = torch.nonzero(weak.tags).flatten() if weak.tags is not None else torch.zeros(0)
        if len(tags) == 1:
            out[:] = int(tags[0])
        return out
    raise ConfigError(f"unknown weak-label kind {kind!r}")


# ----------------------------------------------------- SAM-based methods
def compose_item(item, probs: torch.Tensor, iou: torch.Tensor, dataset_kind: str, weak_kind: str,
                 threshold: float, weak=None) -> torch.Tensor:
    """Paste one item's per-prompt probabilities [n, vh, vw] back into its image and
    compose the label map (see compose.py for the rule)."""
    h, w = item.size
    v = item.view
    canvas = torch.zeros(probs.shape[0], h, w)
    canvas[:, v.y0:v.y1, v.x0:v.x1] = probs
    labels = item.prompts.labels
    known_bg = torch.ones(h, w, dtype=torch.bool)
    known_bg[v.y0:v.y1, v.x0:v.x1] = False  # outside the view: nothing to segment
    known = None
    if dataset_kind == "refuge":
        scores = labels.float()  # nesting: the cup (2) lies on the disc (1)
    else:
        scores = iou.float()
    if weak_kind == "boxes" and weak is not None:
        known_bg |= ~box_union(weak.boxes, h, w)
    if weak_kind == "scribbles" and weak is not None and weak.scribble is not None:
        known = weak.scribble.long()
    if weak_kind == "points" and weak is not None and weak.points is not None:
        known = weak_mask(weak, (h, w), "points")
    return compose(canvas, labels, scores, threshold, known_background=known_bg, known=known)


def _write_label(labels: torch.Tensor, out_dir: Path, image_id: str, dataset_kind: str,
                 palette: Optional[list] = None) -> None:
    from .io import save_image, save_index_png

    if dataset_kind == "refuge":
        from .data.refuge import refuge_to_disk

        unsure = labels == IGNORE
        best = labels.clone()
        best[unsure] = 0  # the grey format has no "unknown": written as background...
        save_image(refuge_to_disk(best), out_dir / f"{image_id}.png")
        side = out_dir / "uncertain" / f"{image_id}.png"
        if bool(unsure.any()):  # ... and listed here
            save_image(unsure.to(torch.uint8).numpy() * 255, side)
        else:  # (a list from an earlier run into the same folder must not stay)
            side.unlink(missing_ok=True)
    else:
        save_index_png(labels, out_dir / f"{image_id}.png", palette=palette or True)


def read_label(path: Union[str, Path], dataset_kind: str) -> torch.Tensor:
    """A written pseudo-label back as internal labels (REFUGE: uncertain pixels 255)."""
    from .data.base import read_grey, read_index_png

    path = Path(path)
    if dataset_kind == "refuge":
        from .data.refuge import refuge_from_disk

        lab = refuge_from_disk(read_grey(path))
        unsure = path.parent / "uncertain" / path.name
        if unsure.is_file():
            lab[torch.from_numpy(read_grey(unsure) > 127)] = IGNORE
        return lab
    return torch.from_numpy(read_index_png(path).astype(np.int64))


# ---------------------------------------------------------------- driver
def make_pseudo_labels(method: str, dataset, sam=None, out_dir: Union[str, Path] = "pseudo",
                       threshold: float = 0.5, *, dataset_kind: Optional[str] = None,
                       weak: str = "boxes", rules: Optional[Sequence] = None,
                       epochs: Optional[int] = None,
                       seed: int = 0, device: str = "cpu", cache_dir=None, evaluate: bool = True,
                       progress: bool = True, tuner_options: Optional[Dict] = None) -> Dict:
    """Write one pseudo-label per image of ``dataset`` and return the summary (module doc)."""
    from .io import save_json

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.5 <= threshold < 1:
        raise ConfigError(f"threshold must lie in [0.5, 1), got {threshold}")
    dataset_kind = dataset_kind or _kind_of(dataset)
    if epochs is None:
        from .finetune import default_epochs

        epochs = default_epochs(dataset_kind, weak)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    summary: Dict = {"method": method, "dataset": dataset_kind, "weak": weak,
                     "threshold": threshold, "seed": seed, "n_images": len(dataset)}
    if method == "logic":
        summary["epochs"] = epochs
    class_list = getattr(dataset, "class_list", None)
    palette = None
    if class_list is not None and not class_list.is_voc:  # a data set's own classes
        summary["classes"] = list(class_list.names)
        palette = class_list.palette()
    if sam is not None:  # which SAM made the labels (a run of another SAM is another result)
        summary["sam"] = {"type": getattr(sam, "sam_type", None),
                          "weights": getattr(sam, "weights_path", None)}
    ids = []
    if method == "weak-mask":
        for i in _bar(range(len(dataset)), "weak-mask", progress):
            s = dataset[i]
            lab = weak_mask(s["weak"], tuple(s["image"].shape[-2:]), weak, dataset_kind)
            _write_label(lab, out_dir, s["id"], dataset_kind, palette)
            ids.append(s["id"])
    elif weak == "tags":
        from .tags import TAG_OPTIONS, tag_pseudo_labels

        opts = {k: v for k, v in (tuner_options or {}).items() if k in TAG_OPTIONS + ("amp",)}
        ids, extra = tag_pseudo_labels(method, dataset, sam, threshold=threshold,
                                       dataset_kind=dataset_kind, rules=rules, epochs=epochs,
                                       seed=seed, device=device, progress=progress,
                                       cache_dir=cache_dir,
                                       write=lambda lab, i: _write_label(lab, out_dir, i, dataset_kind, palette),
                                       **opts)
        summary.update(extra)
    else:
        if sam is None:
            raise ConfigError(f"method {method!r} needs a SAM model")
        from .finetune import LogicFineTuner

        opts = dict(tuner_options or {})
        tuner = LogicFineTuner(sam, rules=(rules if method == "logic" else []),
                               dataset_kind=dataset_kind, weak=weak, epochs=epochs, seed=seed,
                               device=device, cache_dir=cache_dir,
                               out_dir=opts.pop("out_dir", out_dir / "finetune"
                                                if method == "logic" else None),
                               progress=progress, **opts)
        items = tuner.prepare(dataset, zero_shot=(method == "logic"))
        if method == "logic":
            history = tuner.fit(dataset, items=items)
            summary["history"] = {"initial": history["initial"], "final": history["epochs"][-1]
                                  if history["epochs"] else None, "epochs": len(history["epochs"])}
            summary["rules"] = tuner.rule_paths
            summary["timing"] = history.get("timing")
        by_index = {it.index: it for it in items}
        done = set()
        for it, probs, iou in _bar(tuner.predict(items), "pseudo-labels", progress, total=len(items)):
            w = dataset[it.index]["weak"] if weak in ("boxes", "scribbles", "points") else None
            lab = compose_item(it, probs, iou, dataset_kind, weak, threshold, w)
            _write_label(lab, out_dir, it.id, dataset_kind, palette)
            ids.append(it.id)
            done.add(it.index)
        for i in range(len(dataset)):  # images without any prompt: background where known
            if i not in done and i not in by_index:
                s = dataset[i]
                lab = weak_mask(s["weak"], tuple(s["image"].shape[-2:]), weak, dataset_kind) \
                    if weak == "boxes" else torch.full(tuple(s["image"].shape[-2:]), IGNORE)
                _write_label(lab.long(), out_dir, s["id"], dataset_kind, palette)
                ids.append(s["id"])
    summary["seconds"] = time.perf_counter() - t0
    summary.update(evaluate_labels(dataset, out_dir, dataset_kind, ids, with_gt=evaluate))
    save_json(summary, out_dir / "summary.json")
    return summary


def evaluate_labels(dataset, out_dir: Path, dataset_kind: str, ids: Sequence[str],
                    with_gt: bool = True) -> Dict:
    """Coverage of the written labels and, where masks exist, their quality.

    Headline numbers count an uncertain (255) pixel as a miss (metrics.py's
    "unassigned" column; for REFUGE Dice it is neither disc nor cup);
    ``*_labelled`` ones leave uncertain pixels out."""
    from . import metrics
    from .io import VOC_CLASSES

    classes = ("background", "disc", "cup") if dataset_kind == "refuge" else \
        tuple(getattr(dataset, "classes", None) or VOC_CLASSES)
    covered = total = 0
    allpx = metrics.SegMetrics(dataset_kind, classes)
    labelled = metrics.SegMetrics(dataset_kind, classes)
    have_gt = with_gt and hasattr(dataset, "read_gt")
    missing: List[Path] = []
    scored = 0
    for image_id in ids:
        lab = read_label(Path(out_dir) / f"{image_id}.png", dataset_kind)
        covered += int((lab != IGNORE).sum())
        total += lab.numel()
        if not have_gt:
            continue
        i = dataset.index(image_id)
        mask = _mask_path(dataset, i)
        if mask is not None and not mask.is_file():
            missing.append(mask)  # (a split without masks: coverage only, see below)
            continue
        gt = dataset.read_gt(i)  # a mask that is there but broken: DatasetError naming it
        scored += 1
        allpx.update(lab, gt, image_id)
        unsure = lab == IGNORE
        zero = torch.zeros_like(lab)
        if dataset_kind == "refuge":  # both sides background where unsure: left out of Dice
            labelled.update(torch.where(unsure, zero, lab), torch.where(unsure, zero, gt), image_id)
        else:
            labelled.update(torch.where(unsure, zero, lab),
                            torch.where(unsure, torch.full_like(gt, IGNORE), gt), image_id)
    if scored and missing:
        # Some masks but not all: the scores cover those images only, and say so.
        warnings.warn(f"{missing[0]}: missing mask; pseudo-label scores cover {scored} of "
                      f"{scored + len(missing)} images ({len(missing)} without a mask)")
    have_gt = have_gt and scored > 0
    out: Dict = {"coverage": covered / max(total, 1)}
    if have_gt:
        out["scored_images"] = scored
        a, lab = allpx.as_dict(), labelled.as_dict()
        if dataset_kind == "refuge":
            out.update({"dice_disc": a["dice_disc"], "dice_cup": a["dice_cup"],
                        "dice_mean": (a["dice_disc"] + a["dice_cup"]) / 2,
                        "vcdr_mae": a["vcdr_mae"], "dice_disc_labelled": lab["dice_disc"],
                        "dice_cup_labelled": lab["dice_cup"], "miou": a["miou"]})
        else:
            out.update({"miou": a["miou"], "per_class_iou": a["per_class_iou"],
                        "miou_labelled": lab["miou"]})
    return out


def _mask_path(dataset, i: int) -> Optional[Path]:
    """Where item i's mask should be (None: the data set does not say; read_gt decides)."""
    items = getattr(dataset, "items", None)
    try:
        mask = items[i].mask if items is not None else None
    except (AttributeError, IndexError, TypeError):
        return None
    return None if mask is None else Path(mask)


def _kind_of(dataset) -> str:
    name = getattr(dataset, "name", "")
    if name in ("voc", "refuge"):
        return name
    raise ConfigError("cannot tell the data set kind; pass dataset_kind='voc' or 'refuge'")


def _bar(it, desc: str, enabled: bool, total: Optional[int] = None):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, dynamic_ncols=True)
