"""`check_dataset(kind, root)`: every problem of a data set on disk, by file.

Images and masks are fully decoded (a truncated JPEG is found here, not in
epoch 3). Errors make `fuzzyseg data check` exit non-zero; warnings (e.g. a
REFUGE mask with grey levels other than 0/128/255, read as the nearest) do
not.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .base import Item, read_grey, read_image, read_index_png, size_mismatch


@dataclass
class Problem:
    path: str
    message: str
    severity: str = "error"   # "error" | "warning" | "hint" (what to do about errors listed)


@dataclass
class CheckReport:
    kind: str
    root: str
    problems: List[Problem] = field(default_factory=list)
    counts: Dict = field(default_factory=dict)

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, path, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(path), message, severity))

    def as_dict(self) -> Dict:
        return {"kind": self.kind, "root": self.root, "ok": self.ok,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "counts": self.counts, "problems": [asdict(p) for p in self.problems]}

    def format(self) -> str:
        lines = [f"{self.kind} data set at {self.root}"]
        for k, v in self.counts.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{kk} {vv}" for kk, vv in v.items())
                lines.append(f"  {k}: {inner or '-'}")
            else:
                lines.append(f"  {k}: {v}")
        by_file: Dict[str, List[Problem]] = {}
        for p in self.problems:
            by_file.setdefault(p.path, []).append(p)
        if by_file:
            lines.append(f"problems ({count_noun(len(self.errors), 'error')}, "
                         f"{count_noun(len(self.warnings), 'warning')}):")
            for path, ps in by_file.items():
                lines.append(f"  {path}")
                for p in ps:
                    lines.append(f"    {p.severity}: {p.message}")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _msg(exc: DatasetError, path) -> str:
    s = str(exc)
    prefix = f"{path}: "
    return s[len(prefix):] if s.startswith(prefix) else s


# ---------------------------------------------------------------------- VOC
def _voc_item(item: Item, scribbles: bool, classes=None):
    """(problems, counts, pixel histogram) of one VOC image; merged by the caller."""
    from .classes import VOC
    from .voc import bad_values, parse_annotation, read_class_png

    classes = classes or VOC
    NUM_CLASSES = len(classes)

    report = CheckReport("voc", "")
    counts: Counter = Counter()
    pixel_counts = np.zeros(256, dtype=np.int64)

    try:
        img = read_image(item.image)
        size = (int(img.shape[1]), int(img.shape[2]))
        counts["images"] += 1
    except DatasetError as exc:
        report.add(item.image, _msg(exc, item.image))
        size = None
    if item.mask is not None:
        try:
            arr = read_class_png(item.mask, classes)
            counts["masks"] += 1
            bad = bad_values(arr, NUM_CLASSES)
            if bad:
                report.add(item.mask, f"mask has values {bad} outside 0..{NUM_CLASSES - 1} and 255")
            else:
                pixel_counts += np.bincount(arr.ravel(), minlength=256)
            if size is not None and arr.shape != size:
                report.add(item.mask, size_mismatch(arr.shape, item.image, size))
        except DatasetError as exc:
            report.add(item.mask, _msg(exc, item.mask))
    problems: List[str] = []
    unknown: List[str] = []
    _, objs = parse_annotation(item.annotation, size, problems, classes=classes, unknown=unknown)
    counts.update(f"unknown:{n}" for n in unknown)
    if item.annotation.is_file():
        counts["annotations"] += 1
    for m in problems:
        report.add(item.annotation, m)
    for o in objs:
        counts[f"objects:{o.name}"] += 1
    if not objs and not problems:
        report.add(item.annotation, "annotation lists no objects", "warning")
    if scribbles and item.scribble is not None:
        try:
            arr = read_index_png(item.scribble, "scribble")
            counts["scribbles"] += 1
            if size is not None and arr.shape != size:
                report.add(item.scribble, f"scribble is {arr.shape[1]}x{arr.shape[0]} but the image "
                                          f"is {size[1]}x{size[0]}")
            bad = bad_values(arr, NUM_CLASSES)
            if bad:  # (as the loader refuses them)
                report.add(item.scribble, f"scribble has values {bad} outside 0..{NUM_CLASSES - 1} and 255")
        except DatasetError as exc:
            report.add(item.scribble, _msg(exc, item.scribble))
    return report.problems, counts, pixel_counts


def check_voc(root, splits: Optional[Sequence[str]] = None, scribble_dir=None,
              progress: bool = False, classes=None, points_file=None) -> CheckReport:
    """`classes`: the class list (names, a comma list or a file; default the VOC2012
    folder's labelmap.txt, else the VOC classes); a broken labelmap.txt is reported.
    `points_file`: real point clicks (data/points.py), checked against the images."""
    from .classes import resolve_classes
    from .voc import image_path, main_splits, mask_dirs, read_split_list, resolve_root, split_file

    report = CheckReport("voc", str(root))
    try:
        voc = resolve_root(root)
    except DatasetError as exc:
        report.add(root, _msg(exc, root))
        return report
    try:
        class_list = resolve_classes(voc, classes, warn=False)
    except DatasetError as exc:  # (a broken labelmap.txt; a bad --classes is the caller's)
        report.add(exc.path or voc / "labelmap.txt", _msg(exc, exc.path))
        return report
    if classes is not None:
        from .classes import labelmap_disagreement

        note = labelmap_disagreement(voc, class_list)
        if note:
            report.add(voc / "labelmap.txt", note, "warning")
    VOC_CLASSES = class_list.names
    explicit = splits is not None
    if splits is None:
        found = set()
        for sub in ("Segmentation", "SegmentationAug"):
            d = voc / "ImageSets" / sub
            if d.is_dir():
                found |= {p.stem for p in d.glob("*.txt")}
        found |= set(main_splits(voc, class_list.names))  # (a boxes-only export's lists)
        splits = sorted(found)
        if not splits:
            report.add(voc / "ImageSets" / "Segmentation",
                       "no split lists (*.txt here or in ImageSets/Main/): write one list per "
                       "split, one image id (file name without extension) a line, e.g. "
                       "ImageSets/Segmentation/train.txt for the images with boxes and val.txt "
                       "for those with masks (`fuzzyseg data split ROOT` writes these two)")
            return report
    items: Dict[str, Item] = {}
    split_counts = {}
    for split in splits:
        try:
            path = split_file(voc, split)
            ids = read_split_list(path)
        except DatasetError as exc:
            report.add(exc.path or voc, _msg(exc, exc.path))
            continue
        split_counts[split] = len(ids)
        dirs = mask_dirs(voc, split)
        found_masks = {i: next((d / f"{i}.png" for d in dirs if (d / f"{i}.png").is_file()), None)
                       for i in ids}
        # A split none of whose images has a mask is a test split (VOC2012's test.txt,
        # whose masks are not published) or a training split of weak labels: its
        # images and annotations are checked, missing masks are not errors.
        unlabelled = bool(ids) and not any(found_masks.values())
        if unlabelled:
            report.add(path, f"split {split!r} has no masks: its images and annotations are "
                             f"checked, not masks (a test split, or a training split of weak "
                             f"labels, needs none; a validation split does)", "warning")
        # Scribbles label the training images: over every split found, an image
        # without one (val, trainval's val half) is counted, not an error; a split
        # named with --split must have them all.
        have = set()
        if scribble_dir is not None:
            have = {i for i in ids if (Path(scribble_dir) / f"{i}.png").is_file()}
            if len(have) < len(ids) and not explicit:
                report.add(path, f"{len(ids) - len(have)} of {len(ids)} images of split {split!r} "
                                 f"have no scribble in {scribble_dir} (--split {split} makes each "
                                 f"an error)", "warning")
        for image_id in ids:
            if image_id in items:
                continue
            mask = None if unlabelled else (found_masks[image_id] or dirs[0] / f"{image_id}.png")
            items[image_id] = Item(
                id=image_id, image=image_path(voc, image_id), mask=mask,
                annotation=voc / "Annotations" / f"{image_id}.xml",
                scribble=Path(scribble_dir) / f"{image_id}.png"
                if scribble_dir is not None and (explicit or image_id in have) else None)
    counts: Counter = Counter()
    pixel_counts = np.zeros(256, dtype=np.int64)
    for probs, c, px in _run(list(items.values()),
                             lambda it: _voc_item(it, scribble_dir is not None, class_list),
                             progress, "check voc"):
        report.problems += probs
        counts.update(c)
        pixel_counts += px
    unknown = {k.split(":", 1)[1]: n for k, n in sorted(counts.items()) if k.startswith("unknown:")}
    if unknown:  # one line that says what to do, after the one error per object
        what = (f"{count_noun(sum(unknown.values()), 'object')} of classes not among the "
                f"{len(class_list)} classes of {class_list.source} ("
                + ", ".join(f"{k!r} {n}" for k, n in unknown.items()) + ")")
        lower = {n.lower(): n for n in VOC_CLASSES[1:]}
        near = [f"{k!r} is {lower[k.lower()]!r} in another case" for k in unknown if k.lower() in lower]
        if class_list.is_voc and class_list.source == "VOC":
            known = [c for c in VOC_CLASSES[1:] if counts[f"objects:{c}"]]
            todo = (f"if they are yours, name every class with --classes "
                    f"{','.join(known + sorted(unknown))} (or a labelmap.txt in {voc.name}/), "
                    "else correct the XML <name>s")
        else:
            todo = f"correct the XML <name>s, or add the classes to {class_list.source}"
        report.add(voc / "Annotations", f"{what}: " + "; ".join(near + [todo]), "hint")
    report.counts = ({} if class_list.is_voc and class_list.source == "VOC" else
                     {"classes": f"{len(class_list)} from {class_list.source}: "
                                 + ", ".join(class_list.names)}) | {
        "splits": split_counts,
        "images": counts["images"], "masks": counts["masks"], "annotations": counts["annotations"],
        "objects": {c: counts[f"objects:{c}"] for c in VOC_CLASSES[1:] if counts[f"objects:{c}"]},
        "pixels": {VOC_CLASSES[i]: int(pixel_counts[i]) for i in range(len(VOC_CLASSES))
                   if pixel_counts[i]} | ({"void": int(pixel_counts[255])} if pixel_counts[255] else {}),
    }
    if scribble_dir is not None:
        report.counts["scribbles"] = counts["scribbles"]
    if points_file is not None:
        report.counts["clicks"] = _check_points(report, Path(points_file), items, class_list, explicit)
    return report


def _check_points(report: CheckReport, path: Path, items: Dict[str, Item], class_list,
                  explicit: bool) -> int:
    """Every problem of a click file (read_points stops at its first format error):
    images of the splits without an entry (errors for a split named with --split, as
    scribbles), clicks outside their image. Returns the number of clicks checked."""
    from .base import image_size
    from .points import check_clicks, read_points
    from .voc import parse_annotation

    try:
        clicks = read_points(path, class_list.names)
    except DatasetError as exc:
        report.add(path, _msg(exc, path))
        return 0
    missing = [i for i in items if i not in clicks]
    if missing:
        report.add(path, f"{len(missing)} of {len(items)} images have no clicks here (first: "
                         f"{', '.join(missing[:3])})" + ("" if explicit else
                                                          "; --split NAME makes it an error for NAME"),
                   "error" if explicit else "warning")
    n = 0
    outside = []  # (image id, click k, its class, the classes of the boxes it lies in)
    boxed = 0  # foreground clicks of images with XML boxes
    for image_id, item in items.items():
        if image_id not in clicks:
            continue
        try:
            size = image_size(item.image)
            check_clicks(clicks[image_id], size, image_id, path)
        except DatasetError as exc:
            if exc.path == path:  # (an unreadable image is reported with the image)
                report.add(path, _msg(exc, path))
            continue
        n += len(clicks[image_id][1])
        # a click on an object lies in one of its class's boxes: one that does not may
        # hold a class index of another list (VOC's, COCO's category ids)
        if item.annotation is not None and item.annotation.is_file():
            _, objs = parse_annotation(item.annotation, size, [], classes=class_list)
            if objs:
                for k, ((x, y), c) in enumerate(zip(clicks[image_id][0].tolist(), clicks[image_id][1].tolist())):
                    if c == 0:
                        continue
                    boxed += 1
                    within = {o.label for o in objs if o.box[0] <= x < o.box[2] and o.box[1] <= y < o.box[3]}
                    if c not in within:
                        outside.append((image_id, k, c, within))
    if outside:
        names = class_list.names
        image_id, k, c, within = outside[0]
        where = (f"in a box of {', '.join(names[w] for w in sorted(within))}" if within else "in no box")
        report.add(path, f"{len(outside)} of {boxed} object clicks lie in no XML box of their class "
                         f"(first: image {image_id}, click {k}, cls {c} = {names[c]!r}, {where}); "
                         f"cls is the index in this data set's classes ({', '.join(names)}), not "
                         "another list's (VOC's, COCO's category ids), or name the class: "
                         '"class": NAME', "warning")
    return n


# ------------------------------------------------------------------- REFUGE
def _refuge_item(item: Item):
    """(problems, counts) of one REFUGE image."""
    report = CheckReport("refuge", "")
    counts: Counter = Counter()
    try:
        img = read_image(item.image)
        size = (int(img.shape[1]), int(img.shape[2]))
        counts["images"] += 1
    except DatasetError as exc:
        report.add(item.image, _msg(exc, item.image))
        size = None
    if item.mask is None:  # (a test split)
        return report.problems, counts
    try:
        arr = read_grey(item.mask)
    except DatasetError as exc:
        report.add(item.mask, _msg(exc, item.mask))
        return report.problems, counts
    counts["masks"] += 1
    if size is not None and arr.shape != size:
        report.add(item.mask, size_mismatch(arr.shape, item.image, size))
    from .refuge import coding_problem

    why = coding_problem(arr)
    if why is not None:
        report.add(item.mask, why)
        return report.problems, counts
    odd = ~np.isin(arr, (0, 128, 255))
    if odd.any():
        report.add(item.mask, f"{int(odd.sum())} pixels with grey levels other than 0/128/255 "
                              f"(read as the nearest)", "warning")
    if not (arr < 192).any():
        report.add(item.mask, "mask has no optic disc (no pixel below 255)", "warning")
    elif not (arr < 64).any():
        report.add(item.mask, "mask has no optic cup (no pixel at 0)", "warning")
    return report.problems, counts


def check_refuge(root, splits: Optional[Sequence[str]] = None, progress: bool = False) -> CheckReport:
    from .refuge import refuge_items

    report = CheckReport("refuge", str(root))
    root = Path(root)
    if not root.is_dir():
        report.add(root, "no such REFUGE folder")
        return report
    explicit = splits is not None
    splits = splits or ("train", "val", "test")
    items: List[Item] = []
    split_counts = {}
    for split in splits:
        try:
            its = refuge_items(root, split)
        except DatasetError as exc:
            if explicit or "has no images" in str(exc) or "no images/ folder" in str(exc):
                report.add(exc.path or root, _msg(exc, exc.path))
            continue
        split_counts[split] = len(its)
        # A split none of whose images has a mask is a test split (REFUGE's test
        # images without their GT folder): its images are checked, not masks.
        if its and not any(it.mask is not None and it.mask.is_file() for it in its):
            report.add(its[0].image.parent, f"split {split!r} has no masks (a test split): its "
                                            f"images are checked, not masks", "warning")
            its = [replace(it, mask=None) for it in its]
        items += its
    if not split_counts and not report.problems:
        report.add(root, "no REFUGE splits found (expected train/images, val/images, test/images "
                         "or the REFUGE-1 folders)")
    counts: Counter = Counter()
    for probs, c in _run(items, _refuge_item, progress, "check refuge"):
        report.problems += probs
        counts.update(c)
    report.counts = {"splits": split_counts, "images": counts["images"], "masks": counts["masks"]}
    return report


def _run(items, fn, progress: bool, desc: str) -> List:
    """fn over items in a few threads (decoding releases the GIL), results in item order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(fn, items)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(items), desc=desc, unit="img")
        return list(results)


def check_dataset(kind: str, root, splits: Optional[Sequence[str]] = None,
                  progress: bool = False, **kw) -> CheckReport:
    if kind == "voc":
        report = check_voc(root, splits, progress=progress, **kw)
    elif kind == "refuge":
        report = check_refuge(root, splits, progress=progress)
    else:
        raise ConfigError(f"unknown data set kind {kind!r} (voc or refuge)")
    report.problems.sort(key=lambda p: (p.path, p.severity != "error", p.message))
    return report


def count_noun(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
