"""Train/val lists for a VOC-layout folder that has none (`fuzzyseg data split`).

Annotation tools export one subset (CVAT's `default.txt`) or no list at all.
The method needs boxes (or tags) on the training images and masks on the
validation images only (the students are scored there), so by default the
images with a mask in `SegmentationClass/` are the validation split and the
others the training split. When every image has a mask, a seeded random
share of them is the validation split; ``val`` (a count, or a share below 1)
sets its size, drawn from the images with masks.
"""
from __future__ import annotations

import random
from typing import Dict, Optional

from ..errors import ConfigError, DatasetError
from ..io import atomic_path
from .base import IMAGE_SUFFIXES, PathLike

DEFAULT_VAL_SHARE = 0.2


def split_voc(root: PathLike, val: Optional[float] = None, seed: int = 0, force: bool = False) -> Dict:
    """Write ImageSets/Segmentation/{train,val}.txt under the VOC2012 folder of `root`."""
    from .voc import resolve_root

    voc = resolve_root(root)
    lists = voc / "ImageSets" / "Segmentation"
    existing = [lists / f"{s}.txt" for s in ("train", "val") if (lists / f"{s}.txt").is_file()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists: --force writes new lists over it")
    ids = sorted(p.stem for p in (voc / "JPEGImages").iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES and (voc / "Annotations" / f"{p.stem}.xml").is_file())
    if not ids:
        raise DatasetError("no image with an annotation (JPEGImages/ID.* with Annotations/ID.xml)", voc)
    masked = [i for i in ids if (voc / "SegmentationClass" / f"{i}.png").is_file()]
    if not masked:
        raise DatasetError("no image has a mask in SegmentationClass/: the validation split needs "
                           "masks (the students are scored on it); add masks for a few images",
                           voc / "SegmentationClass")
    rng = random.Random(seed)
    if val is None and len(masked) < len(ids):
        chosen = list(masked)  # the images with masks: exactly what validation needs
    else:
        share = DEFAULT_VAL_SHARE if val is None else val
        if share <= 0:
            raise ConfigError(f"--val must be > 0, got {share:g}")
        n = round(share * len(masked)) if share < 1 else int(share)
        if val is None and len(masked) > 1:  # (the default share: one image at least)
            n = max(n, 1)
        if n < 1 or n > len(masked) or (n == len(ids)):
            raise ConfigError(("" if val is None else f"--val {share:g}: ")
                              + f"{n} validation images, but {len(masked)} of the "
                              f"{len(ids)} images have a mask and training needs at least one image")
        chosen = rng.sample(masked, n)
    val_ids = sorted(chosen)
    train_ids = sorted(set(ids) - set(val_ids))
    for name, part in (("train", train_ids), ("val", val_ids)):
        with atomic_path(lists / f"{name}.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in part))
    return {"folder": str(lists), "train": len(train_ids), "val": len(val_ids),
            "images": len(ids), "with_masks": len(masked),
            "val_from": "the images with masks" if val is None and len(masked) < len(ids)
            else f"a random share of the images with masks (seed {seed})"}
