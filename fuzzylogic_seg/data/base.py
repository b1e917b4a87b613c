"""What the VOC and REFUGE loaders share: file reading and the `Dataset`.

A sample is the dict of DESIGN.md. Where the weak labels come from:

- `weak_dir` given: the weak-label folder (`weak/store.py`) and nothing else;
  with `with_gt=False` the masks are never opened (training's guarantee);
- otherwise: the data set's real weak labels (VOC XML boxes and tags, real
  scribble PNGs) and, for kinds it lacks, the seeded simulation from the mask
  (`weak/simulate.py`), which opens the mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from ..weak.simulate import SimConfig, simulate_weak
from ..weak.store import WeakStore
from ..weak.types import KINDS, WeakLabels

PathLike = Union[str, Path]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------- reading
def _open(path: PathLike, what: str):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing {what}", path)
    try:
        img = Image.open(path)
        img.load()
        return img
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"cannot read {what}: {exc} (if the file is trusted, raise "
                           "PIL.Image.MAX_IMAGE_PIXELS)", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot read {what} ({exc})", path) from exc


def _eight_bit(img):
    """A 16-bit, 32-bit integer or float greyscale image as 8-bit grey: Pillow's
    convert("RGB") clips such values at 255 (a 16-bit PNG reads almost all white).
    16 bits scale by 257 (65535 -> 255); int32 and float by their own range
    (values within 0..255, or 0..1 for float, are kept as they are)."""
    from PIL import Image

    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = (arr.astype(np.float64) / 257.0).round()
    else:
        a = arr.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0 and hi <= 1:
            out = (a * 255).round()
        elif lo >= 0 and hi <= 255:
            out = a.round()
        else:
            out = ((a - lo) / max(hi - lo, 1e-12) * 255).round()
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), "L")


def read_image(path: PathLike, exif_transpose: bool = False) -> torch.Tensor:
    """An image file -> uint8 [3, H, W] RGB. EXIF orientation is ignored (as for
    masks, which are drawn on the stored pixels) unless ``exif_transpose``: then
    the image is turned as it is displayed (new photos, `fuzzyseg predict`)."""
    img = _open(path, "image")
    if exif_transpose:
        from PIL import ImageOps

        img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _eight_bit(img)
    arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def size_mismatch(mask_hw, image_path: PathLike, image_hw) -> str:
    """The message for a mask whose size is not its image's, with the likely cause
    when the sides are swapped and the image's EXIF tag says it is shown rotated
    (pixels are read as stored, EXIF ignored, for images and masks alike)."""
    image_path = Path(image_path)
    msg = (f"mask is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image_path.name} is "
           f"{image_hw[1]}x{image_hw[0]}")
    if tuple(mask_hw) == tuple(image_hw)[::-1]:
        try:
            from PIL import Image

            with Image.open(image_path) as img:
                orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
        except Exception:  # (no EXIF to read: the plain message)
            orientation = 1
        if orientation in (5, 6, 7, 8):
            msg += (f"; the image's EXIF orientation tag ({orientation}) rotates it by 90 degrees "
                    "when displayed, and the mask seems drawn on the displayed image: store the "
                    "image rotated (e.g. PIL.ImageOps.exif_transpose) or the mask unrotated")
    return msg


def image_size(path: PathLike) -> Tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError("missing image", path)
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image ({exc})", path) from exc
    return h, w


def read_index_png(path: PathLike, what: str = "mask") -> np.ndarray:
    """A palette or greyscale label PNG -> uint8 [H, W] of pixel indices."""
    img = _open(path, what)
    if img.mode in ("P", "L"):
        return np.array(img, dtype=np.uint8)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.array(img)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"{what} has label values outside 0..255", path)
        return arr.astype(np.uint8)
    raise DatasetError(f"{what} is a {img.mode} image; expected a palette or greyscale PNG of "
                       f"class indices (colour-coded masks are not class indices)", path)


def read_grey(path: PathLike, what: str = "mask") -> np.ndarray:
    """Any image as 8-bit grey levels [H, W] (REFUGE masks: BMP/PNG, grey or palette)."""
    img = _open(path, what)
    if img.mode != "L":
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


def find_file(folder: Path, stem: str, suffixes: Sequence[str]) -> Optional[Path]:
    for suf in suffixes:
        for s in (suf, suf.upper()):
            p = folder / f"{stem}{s}"
            if p.is_file():
                return p
    return None


def read_json(path: PathLike, what: str) -> Any:
    """A data set's JSON file (COCO instances, point clicks); a DatasetError naming the
    file, and the line and column of a syntax error."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {what} ({exc})", path) from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path) from exc


# ------------------------------------------------------------------ dataset
@dataclass
class Item:
    id: str
    image: Path
    mask: Optional[Path] = None
    annotation: Optional[Path] = None   # VOC XML
    scribble: Optional[Path] = None     # real scribble PNG


class SegDataset(Dataset):
    """Base of `VOCSegmentation` and `REFUGE` (see the module docstring)."""

    name = "base"
    classes: Tuple[str, ...] = ()

    def __init__(self, items: List[Item], *, root: PathLike, split: str, with_gt: bool = False,
                 weak_dir: Optional[PathLike] = None, kinds: Optional[Sequence[str]] = None,
                 transform: Optional[Callable[[Dict], Dict]] = None,
                 sim_config: Optional[SimConfig] = None, seed: int = 0):
        self.items = items
        self.root = Path(root)
        self.split = split
        self.with_gt = with_gt
        self.transform = transform
        self.sim_config = sim_config or SimConfig()
        self.seed = int(seed)
        self.weak_dir = None if weak_dir is None else Path(weak_dir)
        self.store: Optional[WeakStore] = None
        if kinds is not None:
            kinds = tuple(kinds)
            unknown = set(kinds) - set(KINDS)
            if unknown:
                raise ConfigError(f"unknown weak-label kind(s) {sorted(unknown)}; "
                                 f"known: {', '.join(KINDS)}")
        if self.weak_dir is not None:
            self.store = WeakStore(self.weak_dir)
            if self.store.dataset not in (None, self.name):
                raise DatasetError(f"weak labels are for data set {self.store.dataset!r}, "
                                   f"not {self.name!r}", self.weak_dir / "weak.json")
            written = self.store.manifest.get("class_names")
            if written is not None and self.classes and list(written) != list(self.classes):
                # (class indices of one list read with another would be other classes)
                raise DatasetError(f"weak labels were written for the classes {', '.join(written)}, "
                                   f"but this data set's are {', '.join(self.classes)} (--classes, "
                                   "labelmap.txt): write them again with `fuzzyseg data weak`",
                                   self.weak_dir / "weak.json")
            missing = [it.id for it in items if it.id not in self.store]
            if missing:
                raise DatasetError(
                    f"{len(missing)} image(s) of split {split!r} have no weak labels here "
                    f"(first: {missing[0]!r}); write them with `fuzzyseg data weak`",
                    self.weak_dir / "weak.json")
        self.kinds = kinds if kinds is not None else (None if self.store else self.default_kinds())

    # --------------------------------------------------------- overridables
    def default_kinds(self) -> Tuple[str, ...]:
        return ("boxes",)

    def read_labels(self, item: Item) -> torch.Tensor:
        """The mask as internal labels, LongTensor [H, W]."""
        raise NotImplementedError

    def real_weak(self, item: Item, size: Tuple[int, int], kinds: Sequence[str]) -> Dict:
        """Real weak labels of `kinds` the data set has (keyword args of simulate_weak)."""
        return {}

    # ------------------------------------------------------------- access
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ids(self) -> List[str]:
        return [it.id for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def index(self, image_id: str) -> int:
        for i, it in enumerate(self.items):
            if it.id == image_id:
                return i
        raise KeyError(image_id)

    def read_gt(self, i: int, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Ground truth of item i (evaluation only), checked against the image size."""
        item = self.items[i]
        labels = self.read_labels(item)
        if size is None:
            size = image_size(item.image)
        if tuple(labels.shape) != tuple(size):
            raise DatasetError(size_mismatch(tuple(labels.shape), item.image, size), item.mask)
        return labels

    def weak_labels(self, i: int, size: Tuple[int, int], labels: Optional[torch.Tensor] = None,
                    kinds: Optional[Sequence[str]] = None) -> WeakLabels:
        """Weak labels of item i for an image of `size` (kinds: override `self.kinds`)."""
        item = self.items[i]
        if self.store is not None:
            weak = self.store.load(item.id)
            if weak.size is not None and tuple(weak.size) != tuple(size):
                from ..weak.store import label_path

                raise DatasetError(f"weak labels are for a {weak.size[1]}x{weak.size[0]} image but "
                                   f"{item.image.name} is {size[1]}x{size[0]}",
                                   label_path(self.store.root, item.id))
            weak.size = tuple(size)
            kinds = self.kinds if kinds is None else kinds
            return weak if kinds is None else weak.only(kinds)
        kinds = tuple((self.kinds if kinds is None else kinds) or ())
        if not kinds:
            return WeakLabels(size=size)
        real = self.real_weak(item, size, kinds)
        provided = set()
        if "boxes" in real:
            provided.add("boxes")
        if "tags" in real:
            provided.add("tags")
        if "scribble" in real:
            provided.add("scribbles")
        if "points" in real:
            provided.add("points")
        if labels is None and any(k not in provided for k in kinds):
            labels = self.read_gt(i, size)
        return simulate_weak(labels, kinds, dataset=self.name, num_classes=self.num_classes,
                             image_id=item.id, seed=self.seed, config=self.sim_config,
                             size=size, **real)

    def __getitem__(self, i: int) -> Dict:
        item = self.items[i]
        image = read_image(item.image)
        size = (int(image.shape[1]), int(image.shape[2]))
        gt = self.read_gt(i, size) if self.with_gt else None
        weak = self.weak_labels(i, size, gt)
        sample = {"id": item.id, "image": image, "weak": weak,
                  "meta": {"orig_size": size, "scale": 1.0, "size": size}}
        if gt is not None:
            sample["gt"] = gt
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        src = f"weak_dir={str(self.weak_dir)!r}" if self.store else f"kinds={self.kinds}"
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"{len(self)} images, with_gt={self.with_gt}, {src})")
