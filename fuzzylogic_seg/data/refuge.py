"""REFUGE2 (and REFUGE-1) optic disc/cup segmentation in the published layouts.

REFUGE2: `ROOT/{train,val,test}/images/NAME.jpg|png` and
`ROOT/{train,val,test}/mask/NAME.bmp|png` (folder names matched without
regard to case; `masks`, `Images`, `validation` accepted). Masks are 8-bit
grey: 0 = cup, 128 = disc rim, 255 = background. Internally: 0 background,
1 rim, 2 cup (`refuge_from_disk` / `refuge_to_disk`).

REFUGE-1: `Training400/{Glaucoma,Non-Glaucoma}/*.jpg` with masks found
anywhere under `Annotation-Training400/` (its `Disc_Cup_Masks/`),
`REFUGE-Validation400/` with `REFUGE-Validation400-GT/`, `REFUGE-Test400/` with
`REFUGE-Test-GT/` (or `REFUGE-Test400-GT/`). A mask is matched to its image
by file stem. Images of any size are read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from .base import IMAGE_SUFFIXES, Item, PathLike, SegDataset, find_file, read_grey

REFUGE_CLASSES = ("background", "disc", "cup")
NUM_CLASSES = 3
MASK_SUFFIXES = (".bmp", ".png", ".tif", ".tiff")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


def refuge_from_disk(mask) -> torch.Tensor:
    """Grey mask (0 cup, 128 rim, 255 background) -> internal labels (0 bg, 1 rim, 2 cup).

    Values in between (a resampled or JPEG-saved mask) go to the nearest of
    0/128/255: < 64 cup, < 192 rim, else background.
    """
    m = torch.as_tensor(np.asarray(mask)).to(torch.int64)
    out = torch.zeros_like(m)
    out[m < 192] = 1
    out[m < 64] = 2
    return out


def refuge_to_disk(labels, ignore_value: Optional[int] = None) -> np.ndarray:
    """Internal labels -> uint8 grey mask (255 background, 128 rim, 0 cup).

    Label 255 (ignore) has no REFUGE value: it is an error unless
    `ignore_value` says what to write for it.
    """
    lab = torch.as_tensor(labels).to(torch.int64)
    out = torch.full(lab.shape, 255, dtype=torch.uint8)
    out[lab == 1] = 128
    out[lab == 2] = 0
    ign = lab == 255
    if bool(ign.any()):
        if ignore_value is None:
            raise ConfigError("labels contain 255 (ignore), which REFUGE masks cannot hold; "
                             "pass ignore_value")
        out[ign] = int(ignore_value)
    bad = ~((lab == 0) | (lab == 1) | (lab == 2) | ign)
    if bool(bad.any()):
        raise ConfigError(f"REFUGE labels must be 0, 1, 2 or 255; got {sorted(set(lab[bad].tolist()))[:5]}")
    return out.numpy()


def _child(folder: Path, names: Sequence[str]) -> Optional[Path]:
    """A sub-folder whose name equals one of `names`, ignoring case."""
    if not folder.is_dir():
        return None
    wanted = {n.lower() for n in names}
    for p in sorted(folder.iterdir()):
        if p.is_dir() and p.name.lower() in wanted:
            return p
    return None


def _images_in(folder: Path, recursive: bool = False) -> List[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _unique_ids(images: List[Path], folder: Path) -> None:
    seen: Dict[str, Path] = {}
    for p in images:
        if p.stem in seen:
            raise DatasetError(f"two images named {p.stem!r} ({seen[p.stem]} and {p})", folder)
        seen[p.stem] = p


def refuge2_items(root: Path, split: str) -> Optional[List[Item]]:
    split_dir = _child(root, SPLIT_ALIASES.get(split, (split,)))
    if split_dir is None:
        return None
    img_dir = _child(split_dir, ("images", "image", "imgs", "img"))
    if img_dir is None:
        raise DatasetError("split folder has no images/ folder", split_dir)
    mask_dir = _child(split_dir, ("mask", "masks", "gt", "labels"))
    if mask_dir is None:
        mask_dir = split_dir / "mask"
    images = _images_in(img_dir)
    _unique_ids(images, img_dir)
    items = []
    for p in images:
        mask = find_file(mask_dir, p.stem, MASK_SUFFIXES) or mask_dir / f"{p.stem}.bmp"
        items.append(Item(id=p.stem, image=p, mask=mask))
    return items


REFUGE1 = {
    "train": (("training400", "refuge-training400"),
              ("annotation-training400", "refuge-annotation-training400")),
    "val": (("refuge-validation400", "validation400"),
            ("refuge-validation400-gt", "validation400-gt")),
    "test": (("refuge-test400", "test400"), ("refuge-test-gt", "refuge-test400-gt", "test400-gt")),
}


REFUGE1_GT_NAME = {"train": "Annotation-Training400", "val": "REFUGE-Validation400-GT",
                   "test": "REFUGE-Test-GT"}


def refuge1_items(root: Path, split: str) -> Optional[List[Item]]:
    if split not in REFUGE1:
        return None
    img_names, gt_names = REFUGE1[split]
    img_dir = _child(root, img_names)
    if img_dir is None:
        return None
    gt_dir = _child(root, gt_names)
    images = _images_in(img_dir, recursive=True)
    _unique_ids(images, img_dir)
    masks: Dict[str, Path] = {}
    if gt_dir is not None:
        for p in sorted(gt_dir.rglob("*")):
            if p.is_file() and p.suffix.lower() in MASK_SUFFIXES:
                # Prefer files under Disc_Cup_Masks when a stem appears twice.
                if p.stem not in masks or "disc_cup_masks" in str(p).lower():
                    masks[p.stem] = p
    # (where the masks would be, spelt as REFUGE-1 publishes the folder)
    missing_dir = (gt_dir or root / REFUGE1_GT_NAME[split]) / "Disc_Cup_Masks"
    return [Item(id=p.stem, image=p, mask=masks.get(p.stem, missing_dir / f"{p.stem}.bmp"))
            for p in images]


def refuge_items(root: PathLike, split: str) -> List[Item]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("no such REFUGE folder", root)
    items = refuge2_items(root, split)
    if items is None:
        items = refuge1_items(root, split)
    if items is None:
        raise DatasetError(f"no split {split!r}: expected {split}/images (REFUGE2) or the REFUGE-1 "
                           f"folders (Training400, REFUGE-Validation400, REFUGE-Test400)", root)
    if not items:
        raise DatasetError(f"split {split!r} has no images", root)
    return items


def coding_problem(arr: np.ndarray, ground_truth: bool = True) -> Optional[str]:
    """Why a grey mask is not in REFUGE's coding (0 cup, 128 rim, 255 background),
    or None. Masks converted to class indices (0/1/2, as some toolkits store them,
    with cup and disc in either order) would otherwise read as "all cup": caught
    here rather than guessed. A ground-truth mask of a fundus image also always
    has background."""
    hi = int(arr.max()) if arr.size else 255
    if 1 <= hi <= 2 or (ground_truth and hi < 192):
        return (f"values {sorted(int(v) for v in np.unique(arr)[:8])} look like class indices, "
                "not REFUGE's grey levels (0 cup, 128 disc rim, 255 background): convert the "
                "masks back to that coding")
    return None


def labels_from_mask(path: PathLike) -> torch.Tensor:
    arr = read_grey(path)
    why = coding_problem(arr)
    if why is not None:
        raise DatasetError(why, path)
    return refuge_from_disk(arr)


class REFUGE(SegDataset):
    """REFUGE2 / REFUGE-1 (see the module docstring). Weak labels are simulated
    from the masks (REFUGE has none of its own) or read from `weak_dir`."""

    name = "refuge"
    classes = REFUGE_CLASSES

    def __init__(self, root: PathLike, split: str = "train", **kw):
        super().__init__(refuge_items(root, split), root=root, split=split, **kw)

    def read_labels(self, item: Item) -> torch.Tensor:
        return labels_from_mask(item.mask)
