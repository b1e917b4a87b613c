"""`fuzzyseg data synth|check|weak|split|coco|yolo|voc-xml|labelme|cvat|scribblesup`: write,
check, weakly label and split data sets, convert COCO instances, YOLO labels, folders of VOC
XML files, LabelMe and CVAT files and ScribbleSup scribbles."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Tuple

from ..errors import ConfigError
from . import CLASSES_HELP, FIXED_CLASSES, voc_only


def _range(text: str, cast=int) -> Tuple:
    """'160-240' -> (160, 240); '256' -> (256, 256)."""
    try:
        if "-" in text.strip("-"):
            lo, hi = text.split("-", 1)
            return cast(lo), cast(hi)
        v = cast(text)
        return v, v
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a range LO-HI, got {text!r}") from None


def _frange(text: str) -> Tuple[float, float]:
    return _range(text, float)


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="write, check and weakly label data sets",
                              description=__doc__)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    # ------------------------------------------------------------ synth
    s = sub.add_parser("synth", help="write an embedded synthetic data set in the real layout")
    ss = s.add_subparsers(dest="synth_kind", metavar="{voc,refuge}")
    v = ss.add_parser("voc", help="VOC-like set (VOCdevkit/VOC2012 layout)")
    v.add_argument("out", metavar="OUT", nargs="?", help="folder to write (OUT/VOCdevkit/VOC2012/...)")
    v.add_argument("--out", dest="out_flag", metavar="OUT", help="the same, as the other commands take it")
    v.add_argument("--seed", type=int, default=0, help="seed of the images and masks (default 0)")
    v.add_argument("--n-train", type=int, default=48, help="training images (default 48)")
    v.add_argument("--n-val", type=int, default=24, help="validation images (default 24)")
    v.add_argument("--size", type=_range, default=(160, 240),
                   help="longest image side, a range LO-HI (default 160-240)")
    v.add_argument("--classes", default=None,
                   help="comma list of VOC class names to draw (default: aeroplane,bird,boat,"
                        "bottle,car,cat,person)")
    v.add_argument("--max-objects", type=int, default=3, help="objects per image, at most (default 3)")
    v.set_defaults(func=_synth_voc)
    r = ss.add_parser("refuge", help="REFUGE-like fundus set (REFUGE2 layout)")
    r.add_argument("out", metavar="OUT", nargs="?", help="folder to write (OUT/train, OUT/val, ...)")
    r.add_argument("--out", dest="out_flag", metavar="OUT", help="the same, as the other commands take it")
    r.add_argument("--seed", type=int, default=0, help="seed of the images and masks (default 0)")
    r.add_argument("--n-train", type=int, default=40, help="training images (default 40)")
    r.add_argument("--n-val", type=int, default=20, help="validation images (default 20)")
    r.add_argument("--n-test", type=int, default=0, help="test images, without masks (default 0)")
    r.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    r.add_argument("--cdr", type=_frange, default=(0.3, 0.8),
                   help="range of vertical cup-to-disc ratios (default 0.3-0.8)")
    r.set_defaults(func=_synth_refuge)
    s.set_defaults(func=lambda a: (s.print_help(), 2)[1])

    # ------------------------------------------------------------ check
    c = sub.add_parser("check", help="list every problem of a data set and its counts")
    c.add_argument("kind", choices=("voc", "refuge"))
    c.add_argument("root", metavar="ROOT")
    c.add_argument("--split", action="append", default=None,
                   help="check only this split (repeatable; default: every split found)")
    c.add_argument("--scribbles", default=None, metavar="DIR", help="VOC: also check scribble PNGs")
    c.add_argument("--points", default=None, metavar="FILE",
                   help="VOC layout: also check a file of real point clicks (data weak --points)")
    c.add_argument("--classes", default=None, metavar="LIST|FILE", help=CLASSES_HELP)
    c.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    c.set_defaults(func=_check)

    # ------------------------------------------------------------- split
    t = sub.add_parser("split", help="write train/val lists for a VOC-layout folder that has none "
                                     "(default: the images with masks are val)")
    t.add_argument("root", metavar="ROOT")
    t.add_argument("--val", type=float, default=None, metavar="N",
                   help="validation size drawn from the images with masks: a count, or a share "
                        "below 1 (default: every image with a mask, or 0.2 when all have one)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true", help="write over existing train/val lists")
    t.set_defaults(func=_split)

    def converter(name, help, source, source_help, split_help="the split's name in ROOT "
                  "(train, val, ...)", out_help="writes ROOT/VOC2012", func=None):
        """A converter's parser: its source (name, metavar), --split, --out, --copy,
        --skip-empty."""
        p = sub.add_parser(name, help=help)
        p.add_argument(source[0], metavar=source[1], help=source_help)
        p.add_argument("--split", required=True, help=split_help)
        p.add_argument("--out", required=True, metavar="ROOT", help=out_help)
        p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
        p.add_argument("--skip-empty", action="store_true", help="leave out images without an object")
        p.set_defaults(func=func)
        return p

    def shape_options(p, classes_default, strokes):
        """The options of the converters of LabelMe-form shapes (labelme, cvat)."""
        p.add_argument("--classes", default=None, metavar="LIST|FILE",
                       help=f"the class list (default: {classes_default})")
        p.add_argument("--no-masks", action="store_true", help="no SegmentationClass PNGs from outlines")
        p.add_argument("--scribble-width", type=int, default=3, help=f"{strokes} width in pixels")

    # ------------------------------------------------------------- coco
    k = converter("coco", "convert COCO instances (JSON + images) into the Pascal VOC layout that "
                  "--dataset voc reads", ("instances", "INSTANCES.json"), "the COCO instances file",
                  func=_coco)
    k.add_argument("--images", required=True, metavar="DIR", help="the folder of the split's images")
    k.add_argument("--no-masks", action="store_true",
                   help="no SegmentationClass PNGs (weak labels only: boxes and tags)")

    # ------------------------------------------------------------- yolo
    y = converter("yolo", "convert a YOLO data set (Ultralytics, Roboflow, CVAT... text labels) "
                  "into the Pascal VOC layout that --dataset voc reads", ("source", "DATA.yaml|OBJ.data|IMAGES"),
                  "the data set's YAML (names, train/val/test), darknet's obj.data (CVAT's "
                  "YOLO 1.1 export), or a folder of images",
                  split_help="the YAML's split to convert (train, val, test), and its name in ROOT",
                  func=_yolo)
    y.add_argument("--names", default=None, metavar="FILE",
                   help="class names, one a line (classes.txt, obj.names): for a folder of images, "
                        "or instead of the YAML's names")
    y.add_argument("--root", default=None, metavar="DIR",
                   help="the folder the YAML's split paths are relative to (default: its path:, "
                        "else the YAML's folder)")
    y.add_argument("--no-masks", action="store_true",
                   help="no SegmentationClass PNGs from polygon labels (weak labels only)")
    y.add_argument("--obb", default="auto", choices=("auto", "yes", "no"),
                   help="four-corner polygons are Ultralytics' oriented boxes (boxes, no masks): "
                        "auto (when every polygon of the split has four corners), yes, no")

    # ---------------------------------------------------------- voc-xml
    v = converter("voc-xml", "convert a folder of images and Pascal VOC XML files (LabelImg, "
                  "Roboflow, makesense.ai) into the VOC layout", ("folder", "FOLDER"),
                  "the images (and, by default, their XML files)", func=_voc_xml)
    v.add_argument("--annotations", default=None, metavar="DIR",
                   help="where the XML files are, when not beside the images")
    v.add_argument("--classes", default=None, metavar="LIST|FILE",
                   help="the class list (default: predefined_classes.txt or classes.txt in the "
                        "folder, else the object names found, sorted)")

    # ---------------------------------------------------------- labelme
    m = converter("labelme", "convert a folder of LabelMe JSON files (polygons, boxes, lines as "
                  "scribbles, points as clicks) into the VOC layout", ("folder", "FOLDER"),
                  "the LabelMe files (*.json) and their images",
                  out_help="writes ROOT/VOC2012, ROOT/scribbles/ and ROOT/points_SPLIT.json",
                  func=_labelme)
    shape_options(m, "labels.txt in the folder, else the labels found, sorted", "line shapes'")

    # ------------------------------------------------------------- cvat
    cv = converter("cvat", "convert CVAT's own XML (CVAT for images 1.1: boxes, polygons, "
                   "ellipses, masks; polylines as scribbles, points as clicks) into the VOC layout",
                   ("annotations", "ANNOTATIONS.xml"), "the export's annotations.xml",
                   out_help="writes ROOT/VOC2012, ROOT/scribbles/ and ROOT/points_SPLIT.json",
                   func=_cvat)
    cv.add_argument("--images", required=True, metavar="DIR",
                    help="the folder the images' names are relative to")
    cv.add_argument("--subset", default=None, help="only the images of this subset (Train, ...)")
    shape_options(cv, "the labels of the file's <meta>", "polylines'")

    # ------------------------------------------------------ scribblesup
    x = sub.add_parser("scribblesup", help="convert ScribbleSup XML scribbles to the scribble "
                                           "PNGs that --scribbles reads")
    x.add_argument("xml_dir", metavar="XML_DIR",
                   help="a folder of ScribbleSup files ID.xml (e.g. scribble_annotation/pascal_2012)")
    x.add_argument("--out", required=True, metavar="DIR", help="where ID.png are written")
    x.add_argument("--root", default=None,
                   help="VOC root: convert the split's images only and check each <size> "
                        "against the image")
    x.add_argument("--split", default="train")
    x.add_argument("--width", type=int, default=1,
                   help="stroke width in pixels (a square brush; default 1, as drawn)")
    x.add_argument("--unknown", default="error", choices=("error", "background", "skip"),
                   help="a tag that names no VOC class: stop (default), label it background, "
                        "or leave its strokes out")
    x.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    x.set_defaults(func=_scribblesup)

    # ------------------------------------------------------------- weak
    w = sub.add_parser("weak", help="write a split's weak labels into a folder (the only "
                                    "supervision training reads)")
    w.add_argument("--dataset", required=True, choices=("voc", "refuge"))
    w.add_argument("--root", required=True)
    w.add_argument("--split", default="train")
    w.add_argument("--kinds", default="boxes",
                   help="comma list of boxes, scribbles, points, tags that every image gets")
    w.add_argument("--mix", default=None,
                   help="heterogeneous supervision: each image draws one combination, e.g. "
                        "'boxes:0.5,scribbles+tags:0.3,points:0.2' (overrides --kinds)")
    w.add_argument("--out", required=True, metavar="DIR")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--scribbles", default=None, metavar="DIR",
                   help="VOC: real scribble PNGs (ScribbleSup converted) instead of simulated ones")
    w.add_argument("--points", default=None, metavar="FILE",
                   help="VOC layout: real point clicks instead of simulated ones, a JSON file in "
                        "the format of What's the Point (image id -> [{x, y, cls, rank}]; "
                        "docs/DATA.md)")
    w.add_argument("--point-max-rank", type=int, default=None, metavar="N",
                   help="with --points: keep each annotator's first N clicks (default: all)")
    w.add_argument("--classes", default=None, metavar="LIST|FILE", help=CLASSES_HELP)
    w.add_argument("--box-jitter", type=float, default=0.0)
    w.add_argument("--scribble-width", type=int, default=3)
    w.add_argument("--scribble-margin", type=float, default=0.3)
    w.add_argument("--scribble-keep", type=float, default=1.0)
    w.add_argument("--no-background-scribbles", action="store_true")
    w.add_argument("--points-per-region", type=int, default=1)
    w.add_argument("--point-background", type=int, default=1)
    w.add_argument("--workers", type=int, default=0, help="worker processes (default 0: in-process)")
    w.set_defaults(func=_weak)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _out(args) -> str:
    """The folder to write: OUT, or --out as `data weak` and `pseudo-label` take it."""
    if args.out and args.out_flag and args.out != args.out_flag:
        raise ConfigError(f"two folders to write: {args.out} and --out {args.out_flag}")
    out = args.out or args.out_flag
    if not out:
        raise ConfigError("give the folder to write: OUT (or --out OUT)")
    return out


def _synth_voc(args) -> int:
    from ..data.synth_voc import DEFAULT_CLASSES, generate_voc

    classes = DEFAULT_CLASSES if not args.classes else tuple(
        c.strip() for c in args.classes.split(",") if c.strip())
    voc = generate_voc(_out(args), seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                       size=args.size, classes=classes, max_objects=args.max_objects)
    print(f"wrote {args.n_train} train + {args.n_val} val images to {voc}")
    return 0


def _synth_refuge(args) -> int:
    from ..data.synth_refuge import generate_refuge

    out = generate_refuge(_out(args), seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                          n_test=args.n_test, size=args.size, cdr=args.cdr)
    print(f"wrote {args.n_train} train + {args.n_val} val + {args.n_test} test images to {out}")
    return 0


def _check(args) -> int:
    from ..data.check import check_dataset, count_noun
    from ..io import save_json

    voc_only(args.kind, "--classes", args.classes, FIXED_CLASSES)
    kw = {"scribble_dir": args.scribbles, "classes": args.classes} if args.kind == "voc" else {}
    if args.points:
        voc_only(args.kind, "--points", args.points)
        kw["points_file"] = args.points
    report = check_dataset(args.kind, args.root, args.split, progress=sys.stderr.isatty(), **kw)
    print(report.format())
    if args.json:
        save_json(report.as_dict(), args.json)
    print(f"{count_noun(len(report.errors), 'error')}, {count_noun(len(report.warnings), 'warning')}")
    return 0 if report.ok else 1


def _split(args) -> int:
    from ..data.split import split_voc

    print(json.dumps(split_voc(args.root, args.val, seed=args.seed, force=args.force), indent=2))
    return 0


def _coco(args) -> int:
    from ..data.coco import convert_coco

    summary = convert_coco(args.instances, args.images, args.out, args.split, masks=not args.no_masks,
                           copy=args.copy, skip_empty=args.skip_empty)
    print(json.dumps(summary, indent=2))
    return 0


def _yolo(args) -> int:
    from ..data.yolo import convert_yolo

    summary = convert_yolo(args.source, args.out, args.split, names=args.names, root=args.root,
                           masks=not args.no_masks, copy=args.copy, skip_empty=args.skip_empty,
                           obb=args.obb)
    print(json.dumps(summary, indent=2))
    return 0


def _voc_xml(args) -> int:
    from ..data.vocxml import convert_voc_xml

    summary = convert_voc_xml(args.folder, args.out, args.split, annotations=args.annotations,
                              classes=args.classes, copy=args.copy, skip_empty=args.skip_empty)
    print(json.dumps(summary, indent=2))
    return 0


def _labelme(args) -> int:
    from ..data.labelme import convert_labelme

    summary = convert_labelme(args.folder, args.out, args.split, classes=args.classes,
                              masks=not args.no_masks, copy=args.copy, skip_empty=args.skip_empty,
                              scribble_width=args.scribble_width)
    print(json.dumps(summary, indent=2))
    return 0


def _cvat(args) -> int:
    from ..data.cvat import convert_cvat

    summary = convert_cvat(args.annotations, args.images, args.out, args.split, classes=args.classes,
                           masks=not args.no_masks, copy=args.copy, skip_empty=args.skip_empty,
                           scribble_width=args.scribble_width, subset=args.subset)
    print(json.dumps(summary, indent=2))
    return 0


def _scribblesup(args) -> int:
    from ..data.base import image_size
    from ..data.scribblesup import convert_folder
    from ..io import save_json

    if args.width < 1:
        raise ConfigError(f"--width must be at least 1, got {args.width}")
    ids = sizes = None
    if args.root:
        from ..data.voc import VOCSegmentation

        ds = VOCSegmentation(args.root, args.split, with_gt=False, kinds=("boxes",))
        if not ds.class_list.is_voc:  # (the conversion writes VOC's class indices)
            raise ConfigError(f"{args.root}: ScribbleSup's scribbles name Pascal VOC classes, but this "
                              f"data set has {ds.class_list.describe()}")
        ids = [it.id for it in ds.items]
        sizes = {it.id: image_size(it.image) for it in ds.items}
    summary = convert_folder(args.xml_dir, args.out, width=args.width, unknown=args.unknown,
                             ids=ids, image_sizes=sizes, progress=sys.stderr.isatty())
    shown = dict(summary, missing=len(summary["missing"]))
    print(json.dumps(shown, indent=2))
    if summary["missing"]:
        print(f"{len(summary['missing'])} image(s) of split {args.split!r} have no XML file "
              f"(first: {', '.join(summary['missing'][:5])}): `fuzzyseg data weak --scribbles` "
              f"needs a PNG for every image of the split", file=sys.stderr)
    if args.json:
        save_json(summary, args.json)
    return 0


class _WeakJob:
    """Picklable per-image job for DataLoader workers: (id, weak labels)."""

    def __init__(self, ds, mix, seed):
        self.ds, self.mix, self.seed = ds, mix, seed

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        from ..data.base import image_size
        from ..weak.simulate import choose_kinds

        item = self.ds.items[i]
        kinds = choose_kinds(self.mix, self.seed, item.id)
        return item.id, self.ds.weak_labels(i, image_size(item.image), kinds=kinds)


def _weak(args) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..data import build_dataset
    from ..weak.simulate import SimConfig, parse_kinds, parse_mix
    from ..weak.store import save_split

    try:
        mix = parse_mix(args.mix) if args.mix else [(parse_kinds(args.kinds), 1.0)]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cfg = SimConfig(box_jitter=args.box_jitter, scribble_width=args.scribble_width,
                    scribble_margin=args.scribble_margin, scribble_keep=args.scribble_keep,
                    scribble_background=not args.no_background_scribbles,
                    points_per_region=args.points_per_region, point_background=args.point_background)
    voc_only(args.dataset, "--classes", args.classes, FIXED_CLASSES)
    extra = {"scribble_dir": args.scribbles} if args.dataset == "voc" and args.scribbles else {}
    if args.dataset == "voc" and args.classes:
        extra["classes"] = args.classes
    if args.points or args.point_max_rank is not None:
        voc_only(args.dataset, "--points", True)
        if not args.points:
            raise ConfigError("--point-max-rank N goes with --points FILE")
        if args.point_max_rank is not None and args.point_max_rank < 1:
            raise ConfigError(f"--point-max-rank must be >= 1, got {args.point_max_rank}")
        extra.update(points_file=args.points, point_max_rank=args.point_max_rank)
    all_kinds = tuple(sorted({k for ks, _ in mix for k in ks}))
    ds = build_dataset(args.dataset, args.root, args.split, with_gt=False, kinds=all_kinds,
                       sim_config=cfg, seed=args.seed, **extra)
    if args.dataset == "voc":
        from ..data.classes import announce

        announce(ds.class_list, lambda m: print(m, file=sys.stderr))
    torch.set_num_threads(1)
    loader = DataLoader(_WeakJob(ds, mix, args.seed), batch_size=None, shuffle=False,
                        num_workers=max(0, args.workers))
    items = tqdm(loader, total=len(ds), desc=f"weak labels {args.split}", unit="img",
                 disable=not sys.stderr.isatty())
    info = {"seed": args.seed, "mix": [[list(k), p] for k, p in mix], "simulation": cfg.to_json(),
            "root": str(args.root), "real_scribbles": args.scribbles,
            "protocol": "fuzzylogic_seg.weak.simulate (docs/DATA.md)"}
    if args.points:
        info.update(real_points=str(args.points), point_max_rank=args.point_max_rank)
    path = save_split(args.out, items, dataset=args.dataset, split=args.split,
                      class_names=ds.classes, info=info)
    with open(path) as f:
        manifest = json.load(f)
    summary = {k: manifest[k] for k in ("dataset", "split", "images_with_kind", "totals")}
    summary["images"] = len(manifest["ids"])
    summary["out"] = str(args.out)
    print(json.dumps(summary, indent=2))
    return 0
