"""`fuzzyseg evaluate`: score a folder of predicted label images against a split.

Predictions are named after the image ID (docs/DATA.md): VOC `ID.png`, a palette
or grey PNG of class indices (255 = uncertain: counted as a miss); REFUGE
`ID.png` (or .bmp), grey 0 cup / 128 rim / 255 background. Prints the metrics
of `fuzzylogic_seg.metrics` as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import DatasetError, PredictionError
from . import CLASSES_HELP, FIXED_CLASSES, voc_only

PRED_SUFFIXES = (".png", ".bmp")


def prediction_path(pred_dir: Path, image_id: str) -> Optional[Path]:
    for suf in PRED_SUFFIXES:
        p = pred_dir / f"{image_id}{suf}"
        if p.is_file():
            return p
    return None


def read_prediction(path: Path, dataset: str, num_classes: int) -> torch.Tensor:
    """A predicted label image -> internal labels LongTensor [H, W]."""
    from ..data.base import read_grey, read_index_png
    from ..data.refuge import coding_problem, refuge_from_disk
    from ..data.voc import bad_values

    try:
        if dataset == "refuge":
            arr = read_grey(path, "prediction")
            why = coding_problem(arr, ground_truth=False)
            if why is not None:
                raise DatasetError(why, path)
            return refuge_from_disk(arr)
        arr = read_index_png(path, "prediction")
    except DatasetError as exc:
        raise PredictionError(str(exc)) from exc
    bad = bad_values(arr, num_classes)
    if bad:
        raise PredictionError(f"{path}: prediction has values {bad} outside 0..{num_classes - 1} and 255")
    return torch.from_numpy(arr.astype(np.int64))


def evaluate_predictions(ds, pred_dir, progress: bool = False, per_image: bool = False) -> Dict:
    """Metrics of the predictions in `pred_dir` for every image of data set `ds`."""
    from ..metrics import SegMetrics

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"{pred_dir}: no such prediction folder")
    paths = {it.id: prediction_path(pred_dir, it.id) for it in ds.items}
    missing = [i for i, p in paths.items() if p is None]
    if missing:
        hint = ""
        if len(missing) == len(paths):  # none at all: predictions of another split?
            hint = "; no image of this split has one: are these predictions of another split (--split)?"
        raise PredictionError(
            f"{pred_dir / (missing[0] + '.png')}: missing prediction ({len(missing)} of "
            f"{len(paths)} images of split {ds.split!r} have none, e.g. {', '.join(missing[:3])})"
            + hint)
    metrics = SegMetrics(ds.name, ds.classes)
    idx = range(len(ds))
    if progress:
        from tqdm import tqdm

        idx = tqdm(idx, desc=f"evaluate {ds.split}", unit="img")
    for i in idx:
        item = ds.items[i]
        gt = ds.read_gt(i)
        pred = read_prediction(paths[item.id], ds.name, ds.num_classes)
        if pred.shape != gt.shape:
            raise PredictionError(f"{paths[item.id]}: prediction is {pred.shape[1]}x{pred.shape[0]} "
                                  f"but image {item.id} is {gt.shape[1]}x{gt.shape[0]} (WxH)")
        metrics.update(pred, gt, item.id)
    out = metrics.as_dict()
    out.update({"split": ds.split, "images": len(ds), "pred_dir": str(pred_dir)})
    if not per_image:
        out.pop("per_image", None)
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score predicted label images against a split",
                              description=__doc__)
    p.add_argument("--dataset", required=True, choices=("voc", "refuge"))
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="val",
                   help="the split whose images DIR holds predictions of (default val; pseudo-labels "
                        "are of train)")
    p.add_argument("--pred", required=True, metavar="DIR")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    p.add_argument("--per-image", action="store_true", help="REFUGE: include per-image rows")
    p.add_argument("--classes", default=None, metavar="LIST|FILE", help=CLASSES_HELP)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..data import build_dataset
    from ..io import save_json


    kw = {}
    if args.classes:
        voc_only(args.dataset, "--classes", args.classes, FIXED_CLASSES)
        kw["classes"] = args.classes
    ds = build_dataset(args.dataset, args.root, args.split, with_gt=True, kinds=(), **kw)
    if args.dataset == "voc":
        from ..data.classes import announce

        announce(ds.class_list, lambda m: print(m, file=sys.stderr))
    result = evaluate_predictions(ds, args.pred, progress=sys.stderr.isatty(),
                                  per_image=args.per_image)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        save_json(result, args.out)
    return 0
