"""Data sets in their published layouts, transforms, batching and the embedded synthetic sets."""
from .base import Item, SegDataset, read_image
from .collate import Collate, collate
from .refuge import REFUGE, REFUGE_CLASSES, refuge_from_disk, refuge_to_disk
from .transforms import ResizePad, unpad_resize
from .voc import VOC_CLASSES, VOCSegmentation

DATASETS = {"voc": VOCSegmentation, "refuge": REFUGE}


def build_dataset(name: str, root, split: str = "train", **kw) -> SegDataset:
    """`build_dataset("voc"|"refuge", root, split, with_gt=..., weak_dir=..., transform=...)`."""
    from ..errors import ConfigError

    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](root, split, **kw)


__all__ = [
    "DATASETS", "build_dataset", "VOCSegmentation", "REFUGE", "VOC_CLASSES", "REFUGE_CLASSES",
    "refuge_from_disk", "refuge_to_disk", "ResizePad", "unpad_resize", "collate", "Collate",
    "SegDataset", "Item", "read_image",
]
